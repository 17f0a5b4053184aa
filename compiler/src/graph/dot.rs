//! The graph as Graphviz DOT: one cluster per identity, outside peers as
//! ellipses, allowed edges black, open edges grey, denied edges red and
//! dashed; each edge's `tooltip` names the deciding rules.

use super::edges::{edges, EdgeKind};
use super::model::{Graph, Node, NodeKind};
use std::fmt::Write as _;

pub fn render(graph: &Graph) -> String {
    let mut out = String::from("digraph polc {\n");
    out.push_str("  graph [rankdir=LR, fontname=\"Helvetica\", nodesep=0.4, ranksep=1.2];\n");
    out.push_str("  node [fontname=\"Helvetica\", fontsize=11, shape=box, style=rounded];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    for group in &graph.groups {
        let _ = writeln!(out, "\n  subgraph cluster_identity_{} {{", group.identity.0);
        let _ = writeln!(out, "    label={};", quote(&format!("identity {}\n{}", group.identity.0, group.labels)));
        out.push_str("    style=\"rounded,filled\"; fillcolor=\"#f4f6fb\"; color=\"#8a94a6\"; fontsize=10;\n");
        for &member in &group.members {
            let _ = writeln!(out, "    {}", node_line(&graph.nodes[member]));
        }
        out.push_str("  }\n");
    }
    out.push('\n');
    for node in graph.nodes.iter().filter(|n| !n.is_endpoint()) {
        let _ = writeln!(out, "  {}", node_line(node));
    }
    out.push('\n');
    for edge in edges(graph) {
        let style = match edge.kind {
            EdgeKind::Allowed => "color=\"#1f2937\"",
            EdgeKind::Open => "color=\"#9ca3af\", fontcolor=\"#6b7280\"",
            EdgeKind::Denied(_) => "color=\"#dc2626\", fontcolor=\"#dc2626\", style=dashed",
        };
        let both = if edge.both_ways { ", dir=both" } else { "" };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}, tooltip={}, {style}{both}];",
            quote(&graph.nodes[edge.from].key),
            quote(&graph.nodes[edge.to].key),
            quote(&edge.label),
            quote(&edge.detail),
        );
    }
    out.push_str("}\n");
    out
}

fn node_line(node: &Node) -> String {
    let (label, attributes) = match &node.kind {
        NodeKind::Endpoint { .. } => match node.enforcement_note() {
            Some(note) => (format!("{}\n({note})", node.label), "style=\"rounded,dashed,filled\", fillcolor=white"),
            None => (node.label.clone(), "style=\"rounded,filled\", fillcolor=white"),
        },
        NodeKind::Host => (node.label.clone(), "shape=ellipse, style=filled, fillcolor=\"#fef3c7\""),
        NodeKind::World { .. } => (node.label.clone(), "shape=ellipse, style=filled, fillcolor=\"#dbeafe\""),
        NodeKind::Cidr { .. } => {
            (format!("{}\n(cidr)", node.label), "shape=ellipse, style=filled, fillcolor=\"#e0f2fe\"")
        }
    };
    format!("{} [label={}, {attributes}];", quote(&node.key), quote(&label))
}

/// A DOT string literal; newlines become DOT's centred line breaks.
fn quote(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!("\"{escaped}\"")
}
