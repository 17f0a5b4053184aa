//! The reference evaluator: what a checked policy set means for one flow,
//! computed directly from [`crate::sema::model`] as `lang-spec/SEMANTICS.md`
//! states it. It shares no code with resolution (`ir`) on purpose: the
//! resolved tables are checked against it.
//!
//! - [`peer`]: who the two ends of a flow are, and which rule peers name them.
//! - [`l4`]: protocols, ports, ICMP types and named ports.
//! - [`explain`]: verdicts as sentences a person reads, and as JSON.
//! - [`flowspec`]: flows written as text (`app2`, `10.0.0.1`, `80/tcp`), for
//!   `polc trace` and `polc test`.
//! - [`testfile`]: the `.poltest` format of `polc test` (lang-spec/TESTING.md).

pub mod explain;
pub mod flowspec;
pub mod l4;
pub mod peer;
pub mod testfile;

pub use l4::IpProto;
pub use peer::{FlowPeer, Peer, PeerError, Reserved};

use crate::ir::TableVerdict;
use crate::sema::model::{EndpointDef, PolicySet, Rule, RuleId};
use crate::syntax::ast::{Action, Direction};
use crate::syntax::Span;
use serde::Serialize;

/// The first packet of a flow: who sends it, to whom, and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub src: FlowPeer,
    pub dst: FlowPeer,
    pub proto: IpProto,
    /// The destination port; the message type for ICMP; ignored (0) for
    /// protocols without ports.
    pub port: u16,
}

/// A rule that decided something, with what is needed to point at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub id: RuleId,
    pub name: String,
    pub policy: String,
    pub action: Action,
    #[serde(skip)]
    pub span: Span,
}

impl RuleRef {
    fn of(rule: &Rule) -> RuleRef {
        RuleRef {
            id: rule.id,
            name: rule.name.clone(),
            policy: rule.policy.clone(),
            action: rule.action,
            span: rule.span,
        }
    }
}

/// A policy that put an endpoint's direction in default-deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
}

/// What one endpoint's policy says, in one direction, about one packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum SideVerdict {
    /// No policy selecting the endpoint has a section for this direction.
    NotEnforced,
    /// The matching allow with the lowest rule id (no deny matched).
    Allowed { rule: RuleRef },
    /// The matching deny with the lowest rule id.
    Denied { rule: RuleRef },
    /// Enforced, and no rule matched; these policies enforce the direction.
    DefaultDeny { enforced_by: Vec<PolicyRef> },
}

impl SideVerdict {
    pub fn allows(&self) -> bool {
        matches!(self, SideVerdict::NotEnforced | SideVerdict::Allowed { .. })
    }

    /// The rule that decided, if a rule did.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            SideVerdict::Allowed { rule } | SideVerdict::Denied { rule } => Some(rule),
            SideVerdict::NotEnforced | SideVerdict::DefaultDeny { .. } => None,
        }
    }

    /// The same answer in the form the resolved tables give it, so the two
    /// can be compared flow by flow.
    pub fn to_table_verdict(&self) -> TableVerdict {
        match self {
            SideVerdict::NotEnforced => TableVerdict::NotEnforced,
            SideVerdict::Allowed { rule } | SideVerdict::Denied { rule } => {
                TableVerdict::Decided { action: rule.action, rule: rule.id }
            }
            SideVerdict::DefaultDeny { .. } => TableVerdict::DefaultDeny,
        }
    }
}

/// One policed side of a flow: the sender's egress or the receiver's ingress.
#[derive(Debug, Clone, PartialEq)]
pub struct Side<'a> {
    pub endpoint: &'a EndpointDef,
    pub direction: Direction,
    pub verdict: SideVerdict,
}

/// The answer for one flow.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<'a> {
    pub flow: Flow,
    /// What the two ends resolved to.
    pub src: Peer<'a>,
    pub dst: Peer<'a>,
    /// The sender's egress, when the sender is an endpoint of this node.
    pub egress: Option<Side<'a>>,
    /// The receiver's ingress, when the receiver is an endpoint of this node.
    pub ingress: Option<Side<'a>>,
}

impl<'a> Evaluation<'a> {
    /// Allowed when every policed side allows it.
    pub fn verdict(&self) -> Action {
        if self.sides().all(|s| s.verdict.allows()) {
            Action::Allow
        } else {
            Action::Deny
        }
    }

    pub fn allowed(&self) -> bool {
        self.verdict() == Action::Allow
    }

    /// The policed sides, in the order the packet meets them (egress first).
    pub fn sides(&self) -> impl Iterator<Item = &Side<'a>> {
        self.egress.iter().chain(self.ingress.iter())
    }

    /// The rules that decided the verdict: for an allowed flow, the allow
    /// rules of the enforcing sides; for a denied flow, the deny rules of
    /// the sides that deny by rule (a default-deny side contributes none).
    /// Egress first.
    pub fn deciding_rules(&self) -> Vec<&RuleRef> {
        let allowed = self.allowed();
        self.sides().filter(|s| s.verdict.allows() == allowed).filter_map(|s| s.verdict.rule()).collect()
    }

    /// The one rule to name for the verdict: for a denied flow, the rule of
    /// the first side that denies it (none when that side is default-deny,
    /// as the datapath drops the packet there); for an allowed flow, the
    /// first deciding rule.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self.denying_sides().next() {
            Some(side) => side.verdict.rule(),
            None => self.deciding_rules().first().copied(),
        }
    }

    /// The sides that deny the flow, egress first (empty when allowed).
    pub fn denying_sides(&self) -> impl Iterator<Item = &Side<'a>> {
        self.sides().filter(|s| !s.verdict.allows())
    }
}

/// Evaluates one flow: resolves its ends, then asks the sender's egress and
/// the receiver's ingress (those that are endpoints of this node).
pub fn evaluate<'a>(set: &'a PolicySet, flow: &Flow) -> Result<Evaluation<'a>, PeerError> {
    let src = peer::resolve(&set.inventory, &flow.src)?;
    let dst = peer::resolve(&set.inventory, &flow.dst)?;
    let egress = src.endpoint().map(|endpoint| Side {
        endpoint,
        direction: Direction::Egress,
        verdict: evaluate_direction(set, endpoint, Direction::Egress, &dst, flow.proto, flow.port),
    });
    let ingress = dst.endpoint().map(|endpoint| Side {
        endpoint,
        direction: Direction::Ingress,
        verdict: evaluate_direction(set, endpoint, Direction::Ingress, &src, flow.proto, flow.port),
    });
    Ok(Evaluation { flow: flow.clone(), src, dst, egress, ingress })
}

/// What `endpoint`'s policy in `direction` says about a packet exchanged
/// with `peer` (the source for ingress, the destination for egress).
/// SEMANTICS.md, "Verdicts".
pub fn evaluate_direction(
    set: &PolicySet,
    endpoint: &EndpointDef,
    direction: Direction,
    peer: &Peer<'_>,
    proto: IpProto,
    port: u16,
) -> SideVerdict {
    let enforcing: Vec<_> = set
        .policies
        .iter()
        .filter(|p| p.selector.matches(&endpoint.labels))
        .filter_map(|p| p.section(direction).map(|rules| (p, rules)))
        .collect();
    if enforcing.is_empty() {
        return SideVerdict::NotEnforced;
    }
    // Named ports name ports of the packet's destination: the endpoint
    // itself for ingress, every endpoint with the peer's identity for egress.
    let destinations: Vec<&EndpointDef> = match direction {
        Direction::Ingress => vec![endpoint],
        Direction::Egress => peer::same_identity(&set.inventory, peer),
    };
    let matching: Vec<&Rule> = enforcing
        .iter()
        .flat_map(|(_, rules)| rules.iter())
        .filter(|r| r.peers.iter().any(|m| peer::matches(m, peer)))
        .filter(|r| r.l4.iter().any(|m| l4::matches(m, proto, port, &destinations)))
        .collect();
    let lowest = |action: Action| matching.iter().filter(|r| r.action == action).min_by_key(|r| r.id).copied();
    if let Some(rule) = lowest(Action::Deny) {
        SideVerdict::Denied { rule: RuleRef::of(rule) }
    } else if let Some(rule) = lowest(Action::Allow) {
        SideVerdict::Allowed { rule: RuleRef::of(rule) }
    } else {
        let enforced_by = enforcing.iter().map(|(p, _)| PolicyRef { name: p.name.clone(), span: p.span }).collect();
        SideVerdict::DefaultDeny { enforced_by }
    }
}

#[cfg(test)]
mod tests;
