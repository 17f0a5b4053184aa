//! The edges a picture draws, shared by the DOT and SVG renderers: one
//! edge for what a pair may exchange, one per deny rule that decides some
//! of it, and open pairs (nothing enforced either way) merged into one
//! two-headed grey edge.

use super::model::{Connection, Graph, Outcome, Segment};
use super::services::describe;
use crate::sema::model::RuleId;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// Allowed by rules (some side is enforced).
    Allowed,
    /// Everything passes and no side through which it passes is enforced.
    Open,
    /// Decided by this deny rule.
    Denied(RuleId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub kind: EdgeKind,
    /// `tcp/80, tcp/8000-8080`, or `deny no-demo2: tcp/22`.
    pub label: String,
    /// Also stands for the reverse edge (open both ways).
    pub both_ways: bool,
    /// The deciding rules and where they are written, one line each.
    pub detail: String,
}

pub fn edges(graph: &Graph) -> Vec<Edge> {
    let mut out = Vec::new();
    for connection in &graph.connections {
        let (from, to) = (connection.from, connection.to);
        if connection.is_open() {
            let reverse_open = graph.connection(to, from).is_some_and(Connection::is_open);
            if reverse_open && to < from {
                continue; // drawn with the reverse edge
            }
            let detail = "any traffic: neither side enforces this direction".to_string();
            out.push(Edge { from, to, kind: EdgeKind::Open, label: "any".into(), both_ways: reverse_open, detail });
            continue;
        }
        let allowed: Vec<&Segment> = connection.allowed().collect();
        if !allowed.is_empty() {
            let label = describe(allowed.iter().copied());
            let detail = allow_detail(graph, &allowed);
            out.push(Edge { from, to, kind: EdgeKind::Allowed, label, both_ways: false, detail });
        }
        for (rule, segments) in connection.denials() {
            let (label, detail) = deny_text(graph, rule, &segments);
            out.push(Edge { from, to, kind: EdgeKind::Denied(rule), label, both_ways: false, detail });
        }
    }
    out
}

/// `tcp/9000: allowed by rule `to-api` (policy `frontend`, tiers.pol:11:5)
/// and ...`, one line per set of deciding rules.
pub fn allow_detail(graph: &Graph, allowed: &[&Segment]) -> String {
    let mut by_rules: BTreeMap<Vec<RuleId>, Vec<&Segment>> = BTreeMap::new();
    for segment in allowed {
        if let Outcome::Allowed { rules } = &segment.outcome {
            by_rules.entry(rules.clone()).or_default().push(segment);
        }
    }
    let lines: Vec<String> = by_rules
        .iter()
        .map(|(rules, segments)| {
            let what = describe(segments.iter().copied());
            if rules.is_empty() {
                format!("{what}: allowed, no side enforced")
            } else {
                let by: Vec<String> = rules.iter().map(|r| rule_text(graph, *r)).collect();
                format!("{what}: allowed by {}", by.join(" and "))
            }
        })
        .collect();
    lines.join("\n")
}

/// `deny no-ssh: tcp/22` (just `deny no-demo2` when it denies everything),
/// and the hover line naming the rule and where it is written.
pub fn deny_text(graph: &Graph, rule: RuleId, segments: &[&Segment]) -> (String, String) {
    let what = describe(segments.iter().copied());
    let name = graph.rule(rule).map_or_else(|| format!("rule {}", rule.0), |r| r.name.clone());
    let label = if what == "any" { format!("deny {name}") } else { format!("deny {name}: {what}") };
    (label, format!("{what}: denied by {}", rule_text(graph, rule)))
}

/// `rule `to-api` (policy `frontend`, examples/three-tier/tiers.pol:11:5)`
pub fn rule_text(graph: &Graph, id: RuleId) -> String {
    match graph.rule(id) {
        Some(rule) => format!("rule `{}` (policy `{}`, {})", rule.name, rule.policy, rule.location),
        None => format!("rule {}", id.0),
    }
}
