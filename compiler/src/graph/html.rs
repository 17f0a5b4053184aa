//! A standalone HTML page (inline CSS, no external resources): the
//! connectivity matrix (rows send, columns receive; each cell lists what is
//! allowed and what a deny rule denies, hovering shows the deciding rules
//! with `file:line:col`) and the SVG picture below it.

use super::edges::{allow_detail, deny_text};
use super::model::{Connection, Graph, Node, NodeKind, Segment};
use super::services::describe;
use super::svg::{self, escape};
use crate::ir::Identity;
use std::fmt::Write as _;

const STYLE: &str = "
body { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; margin: 24px; color: #111827; background: #ffffff; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
h2 { font-size: 16px; margin: 28px 0 8px 0; }
p.note { color: #4b5563; font-size: 13px; margin: 4px 0 12px 0; max-width: 70em; }
table.matrix { border-collapse: collapse; font-size: 12px; }
table.matrix th, table.matrix td { border: 1px solid #d1d5db; padding: 5px 7px; vertical-align: top; }
table.matrix thead th { background: #f3f4f6; text-align: center; }
table.matrix th.corner { font-weight: normal; color: #6b7280; font-size: 11px; }
table.matrix tbody th { background: #f3f4f6; text-align: left; white-space: nowrap; }
.sub { display: block; font-weight: normal; color: #6b7280; font-size: 10px; }
.open-note { display: block; font-weight: normal; color: #b45309; font-style: italic; font-size: 10px; }
td.allow { background: #ecfdf5; }
td.open { background: #f9fafb; color: #6b7280; }
td.none { color: #9ca3af; text-align: center; }
td.self, td.unpoliced { background: repeating-linear-gradient(45deg, #f9fafb, #f9fafb 4px, #f3f4f6 4px, #f3f4f6 8px); color: #9ca3af; text-align: center; }
td .allowed { color: #065f46; display: block; }
td .denied { color: #b91c1c; display: block; font-weight: bold; }
td .item { white-space: nowrap; }
td[title] { cursor: help; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 8px; border: 1px solid #d1d5db; font-size: 12px; }
.figure { border: 1px solid #e5e7eb; display: inline-block; }
";

/// The page; `title` names the policy set (e.g. its path).
pub fn render(graph: &Graph, title: &str) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(out, "<title>polc graph: {}</title>", escape(title));
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(out, "<h1>Who may talk to whom: {}</h1>", escape(title));
    out.push_str(
        "<p class=\"note\">Rows send, columns receive: a cell is what the first packet of a new connection from the \
         row to the column may carry (replies to an allowed connection always pass). Green: allowed, with the protocols \
         and ports; red: denied by the deny rule named; grey <em>any</em>: no side enforces that direction; \
         <em>&mdash;</em>: denied by default. Hover a cell for the deciding rules and where they are written.</p>\n",
    );
    out.push_str("<div class=\"legend\"><span style=\"background:#ecfdf5\">allowed</span><span style=\"color:#b91c1c;font-weight:bold\">deny rule</span><span style=\"background:#f9fafb;color:#6b7280\">open (not enforced)</span><span>&mdash; default deny</span></div>\n");
    out.push_str("<h2>Connectivity matrix</h2>\n");
    out.push_str(&matrix(graph));
    out.push_str("<h2>Picture</h2>\n<div class=\"figure\">\n");
    out.push_str(&svg::render(graph, title));
    out.push_str("</div>\n</body>\n</html>\n");
    out
}

fn matrix(graph: &Graph) -> String {
    let mut out =
        String::from("<table class=\"matrix\">\n<thead><tr><th class=\"corner\">from &darr; &nbsp; to &rarr;</th>");
    for node in &graph.nodes {
        let _ = write!(out, "<th>{}</th>", header(graph, node));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (from, node) in graph.nodes.iter().enumerate() {
        let _ = write!(out, "<tr><th>{}</th>", header(graph, node));
        for to in 0..graph.nodes.len() {
            out.push_str(&cell(graph, from, to));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn header(graph: &Graph, node: &Node) -> String {
    let sub = match &node.kind {
        NodeKind::Endpoint { identity, .. } => {
            let labels = graph.groups.iter().find(|g| g.identity == *identity).map_or("", |g| g.labels.as_str());
            format!("identity {} {}", identity.0, labels)
        }
        NodeKind::Host => "the node, identity 1".to_string(),
        NodeKind::World { identities } => format!("outside, {}", identity_list(identities)),
        NodeKind::Cidr { identities } => format!("cidr, {}", identity_list(identities)),
    };
    let note = node
        .enforcement_note()
        .map_or_else(String::new, |n| format!("<span class=\"open-note\">{}</span>", escape(&n)));
    format!("{}<span class=\"sub\">{}</span>{note}", escape(&node.label).replace('\n', "<br>"), escape(&sub))
}

fn identity_list(identities: &[Identity]) -> String {
    let numbers: Vec<String> = identities.iter().map(|id| id.0.to_string()).collect();
    let word = if numbers.len() == 1 { "identity" } else { "identities" };
    format!("{word} {}", numbers.join(", "))
}

fn cell(graph: &Graph, from: usize, to: usize) -> String {
    if from == to {
        return "<td class=\"self\">&middot;</td>".to_string();
    }
    let Some(connection) = graph.connection(from, to) else {
        return "<td class=\"unpoliced\" title=\"neither end is an endpoint of this node: not policed here\">n/a</td>"
            .to_string();
    };
    let route = format!("{} → {}", graph.nodes[from].one_line(), graph.nodes[to].one_line());
    if connection.is_open() {
        let title = format!("{route}\nany traffic: neither side enforces this direction");
        return format!("<td class=\"open\" title=\"{}\">any</td>", escape(&title));
    }
    let (items, details) = cell_items(graph, connection);
    if items.is_empty() {
        let title = format!("{route}\nnothing allowed: denied by default");
        return format!("<td class=\"none\" title=\"{}\">&mdash;</td>", escape(&title));
    }
    let class = if connection.allowed().next().is_some() { " class=\"allow\"" } else { "" };
    let title = format!("{route}\n{}", details.join("\n"));
    format!("<td{class} title=\"{}\">{}</td>", escape(&title), items.join(""))
}

/// The cell's lines (allowed, then each deny rule) and its hover text.
fn cell_items(graph: &Graph, connection: &Connection) -> (Vec<String>, Vec<String>) {
    let mut items = Vec::new();
    let mut details = Vec::new();
    let allowed: Vec<&Segment> = connection.allowed().collect();
    if !allowed.is_empty() {
        items.push(format!("<span class=\"allowed\">{}</span>", unbroken(&describe(allowed.iter().copied()))));
        details.push(allow_detail(graph, &allowed));
    }
    for (rule, segments) in connection.denials() {
        let (text, detail) = deny_text(graph, rule, &segments);
        items.push(format!("<span class=\"denied\">{}</span>", unbroken(&text)));
        details.push(detail);
    }
    (items, details)
}

/// Each comma-separated item kept on one line, so a cell wraps between
/// items, never inside `echo-request`.
fn unbroken(text: &str) -> String {
    let items: Vec<String> =
        text.split(", ").map(|item| format!("<span class=\"item\">{}</span>", escape(item))).collect();
    items.join(", ")
}
