//! An [`Evaluation`] as sentences a person reads and as JSON: the verdict,
//! the deciding rules with `file:line`, and why.

use super::{Evaluation, FlowPeer, Peer, PolicyRef, Reserved, RuleRef, Side, SideVerdict};
use crate::syntax::ast::Action;
use crate::syntax::{SourceMap, Span};
use serde_json::{json, Value};

/// `path:line` of the start of a span.
pub fn location(sources: &SourceMap, span: Span) -> String {
    let file = sources.file(span.file);
    format!("{}:{}", file.path.display(), file.line_col(span.start as usize).line)
}

/// An evaluation in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// One line: "ALLOWED by rule `web` (app.pol:12)", "DENIED: ...".
    pub headline: String,
    /// One line per end of the flow: what its policy said, or why it is not policed.
    pub details: Vec<String>,
    /// The whole answer as one sentence (the JSON `reason`).
    pub reason: String,
}

impl Explanation {
    /// The headline and the details, indented, one per line.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.headline);
        for line in &self.details {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

pub fn explain(eval: &Evaluation<'_>, sources: &SourceMap) -> Explanation {
    let words = Words { sources };
    Explanation { headline: words.headline(eval), details: words.details(eval), reason: words.reason(eval) }
}

/// The evaluation as JSON: at least `verdict`, `rule` and `reason`, plus each side.
pub fn to_json(eval: &Evaluation<'_>, sources: &SourceMap) -> Value {
    let words = Words { sources };
    let explanation = explain(eval, sources);
    let rules: Vec<Value> = eval.deciding_rules().into_iter().map(|r| words.rule_json(r)).collect();
    json!({
        "verdict": eval.verdict().keyword(),
        "rule": eval.rule().map(|r| words.rule_json(r)),
        "rules": rules,
        "reason": explanation.reason,
        "summary": explanation.headline,
        "flow": {
            "from": peer_json(&eval.flow.src, &eval.src),
            "to": peer_json(&eval.flow.dst, &eval.dst),
            "protocol": eval.flow.proto.to_string(),
            "protocol_number": eval.flow.proto.0,
            "port": eval.flow.port,
        },
        "egress": eval.egress.as_ref().map(|s| words.side_json(s)),
        "ingress": eval.ingress.as_ref().map(|s| words.side_json(s)),
    })
}

fn peer_json(written: &FlowPeer, peer: &Peer<'_>) -> Value {
    let (kind, name) = match peer {
        Peer::Endpoint(e) => ("endpoint", e.name.clone()),
        Peer::Reserved(r) => ("reserved", r.keyword().to_string()),
        Peer::Outside(_) => ("world", "world".to_string()),
    };
    json!({ "given": written.to_string(), "kind": kind, "name": name })
}

struct Words<'s> {
    sources: &'s SourceMap,
}

impl Words<'_> {
    fn at(&self, span: Span) -> String {
        location(self.sources, span)
    }

    fn headline(&self, eval: &Evaluation<'_>) -> String {
        if let Some(side) = eval.denying_sides().next() {
            return match &side.verdict {
                SideVerdict::Denied { rule } => format!("DENIED by deny rule `{}` ({})", rule.name, self.at(rule.span)),
                SideVerdict::DefaultDeny { enforced_by } => format!(
                    "DENIED: {} {} is default-deny since {} {}",
                    side.endpoint.name,
                    side.direction.keyword(),
                    self.policies(enforced_by),
                    if enforced_by.len() == 1 { "selects it" } else { "select it" }
                ),
                SideVerdict::NotEnforced | SideVerdict::Allowed { .. } => String::from("DENIED"),
            };
        }
        let rules = eval.deciding_rules();
        match rules.as_slice() {
            [] => "ALLOWED: no policy enforces this flow".to_string(),
            [rule] => format!("ALLOWED by rule `{}` ({})", rule.name, self.at(rule.span)),
            rules => {
                let list: Vec<_> = rules.iter().map(|r| format!("`{}` ({})", r.name, self.at(r.span))).collect();
                format!("ALLOWED by rules {}", list.join(" and "))
            }
        }
    }

    /// "policy `p` (file:line)" or "policies `a` (...) and `b` (...)".
    fn policies(&self, policies: &[PolicyRef]) -> String {
        let list: Vec<_> = policies.iter().map(|p| format!("`{}` ({})", p.name, self.at(p.span))).collect();
        let word = if policies.len() == 1 { "policy" } else { "policies" };
        format!("{word} {}", join_and(&list))
    }

    fn rule_phrase(&self, rule: &RuleRef) -> String {
        let kind = match rule.action {
            Action::Allow => "rule",
            Action::Deny => "deny rule",
        };
        format!("{kind} `{}` of policy `{}` ({})", rule.name, rule.policy, self.at(rule.span))
    }

    /// One end of the flow, for the detail lines.
    fn side_line(&self, side: &Side<'_>, written: &FlowPeer) -> String {
        let who = format!("{} {}", endpoint_label(written, &side.endpoint.name), side.direction.keyword());
        match &side.verdict {
            SideVerdict::NotEnforced => {
                format!("{who}: not enforced (no policy selecting it has an {} section)", side.direction.keyword())
            }
            SideVerdict::Allowed { rule } => format!("{who}: allowed by {}", self.rule_phrase(rule)),
            SideVerdict::Denied { rule } => format!("{who}: denied by {}", self.rule_phrase(rule)),
            SideVerdict::DefaultDeny { enforced_by } => {
                format!("{who}: default deny, no rule matches; enforced by {}", self.policies(enforced_by))
            }
        }
    }

    fn details(&self, eval: &Evaluation<'_>) -> Vec<String> {
        let src = match &eval.egress {
            Some(side) => self.side_line(side, &eval.flow.src),
            None => unpoliced(&eval.flow.src, &eval.src),
        };
        let dst = match &eval.ingress {
            Some(side) => self.side_line(side, &eval.flow.dst),
            None => unpoliced(&eval.flow.dst, &eval.dst),
        };
        vec![src, dst]
    }

    fn side_phrase(&self, side: &Side<'_>) -> String {
        let who = format!("{} {}", side.endpoint.name, side.direction.keyword());
        match &side.verdict {
            SideVerdict::NotEnforced => format!("{who} is not enforced"),
            SideVerdict::Allowed { rule } => format!("{who} allows it by {}", self.rule_phrase(rule)),
            SideVerdict::Denied { rule } => format!("{who} denies it by {}", self.rule_phrase(rule)),
            SideVerdict::DefaultDeny { enforced_by } => format!(
                "{who} is default-deny since {} {} and no rule matches",
                self.policies(enforced_by),
                if enforced_by.len() == 1 { "selects it" } else { "select it" }
            ),
        }
    }

    fn reason(&self, eval: &Evaluation<'_>) -> String {
        let sides: Vec<_> = eval.sides().map(|s| self.side_phrase(s)).collect();
        if sides.is_empty() {
            return format!(
                "neither {} nor {} is an endpoint of this node, so nothing polices the flow",
                eval.src, eval.dst
            );
        }
        sides.join("; ")
    }

    fn rule_json(&self, rule: &RuleRef) -> Value {
        json!({
            "id": rule.id.0,
            "name": rule.name,
            "policy": rule.policy,
            "action": rule.action.keyword(),
            "location": self.at(rule.span),
        })
    }

    fn side_json(&self, side: &Side<'_>) -> Value {
        let enforced_by: Vec<Value> = match &side.verdict {
            SideVerdict::DefaultDeny { enforced_by } => {
                enforced_by.iter().map(|p| json!({ "policy": p.name, "location": self.at(p.span) })).collect()
            }
            _ => Vec::new(),
        };
        let decision = match &side.verdict {
            SideVerdict::NotEnforced => "not_enforced",
            SideVerdict::Allowed { .. } => "allowed",
            SideVerdict::Denied { .. } => "denied",
            SideVerdict::DefaultDeny { .. } => "default_deny",
        };
        json!({
            "endpoint": side.endpoint.name,
            "verdict": if side.verdict.allows() { "allow" } else { "deny" },
            "decision": decision,
            "rule": side.verdict.rule().map(|r| self.rule_json(r)),
            "enforced_by": enforced_by,
        })
    }
}

/// `app2`, or `app2 (10.200.1.12)` when the flow named it by address.
fn endpoint_label(written: &FlowPeer, name: &str) -> String {
    match written {
        FlowPeer::Address(addr) => format!("{name} ({addr})"),
        FlowPeer::Endpoint(_) | FlowPeer::Entity(_) => name.to_string(),
    }
}

/// The detail line for an end that is not an endpoint of this node.
fn unpoliced(written: &FlowPeer, peer: &Peer<'_>) -> String {
    let who = match written {
        FlowPeer::Address(addr) if !matches!(peer, Peer::Outside(_)) => format!("{peer} ({addr})"),
        _ => peer.to_string(),
    };
    let what = match peer {
        Peer::Reserved(Reserved::Host) => "the node itself",
        Peer::Reserved(Reserved::World) | Peer::Outside(_) => "outside the cluster",
        Peer::Reserved(_) => "a reserved identity",
        Peer::Endpoint(_) => "an endpoint",
    };
    format!("{who}: {what}, not policed here")
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
