//! One flow answered from a built bundle (`polc trace --from-bundle OUT`):
//! what the kernel will do, read from `OUT/manifest.json` (ipcache,
//! endpoints, and each direction's encoded policy entries) and decided by
//! [`lookup_encoded`], the model of the datapath's lookup. No policy
//! source is needed; with the sources, the answer is cross-checked with the
//! reference evaluator ([`crate::eval`]) and a difference is a bug.
//!
//! - [`BuiltBundle`]: the manifest as read (only what a trace needs; the
//!   entries are kept whole and only [`lookup_encoded`] reads their fields).
//! - [`BuiltBundle::answer`]: the flow's peers as the datapath sees them
//!   (identities from the ipcache) and each policed side's verdict.
//! - [`BundleAnswer::to_evaluation`]: the same answer in the evaluator's
//!   terms (rule names and locations), when the sources are at hand, so it
//!   prints exactly as `polc trace` does; [`BundleAnswer::disagreements`]
//!   compares the two side by side.
//! - [`BuiltBundle::built_from`]: whether the bundle is what these sources
//!   build (otherwise a difference is staleness, not a bug).

use super::bundle::{plan_endpoints, BundleOptions, IpcacheEntry};
use super::entries::{EntryAction, PolicyEntry};
use super::lookup_model::lookup_encoded;
use crate::eval::peer::{closest, PeerError, Reserved};
use crate::eval::{Evaluation, Flow, FlowPeer, PolicyRef, RuleRef, Side, SideVerdict};
use crate::ir::{Identity, Resolved, TableVerdict};
use crate::sema::model::{EndpointDef, PolicySet, RuleId};
use crate::syntax::ast::{Action, Direction};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleTraceError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A manifest.json that is not JSON, or lacks the endpoints' entries.
    #[error("`{path}` is not a polc manifest: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    /// Built without an inventory: there is no endpoint to police a flow.
    #[error("`{0}` is a policy-only bundle: it has no endpoints, so no tables to trace")]
    PolicyOnly(PathBuf),
    #[error(transparent)]
    Format(#[from] super::bundle::FormatMismatch),
}

/// `OUT/manifest.json`, the parts a trace reads.
#[derive(Debug, Deserialize)]
pub struct BuiltBundle {
    pub ipcache: Vec<IpcacheEntry>,
    pub endpoints: Vec<BuiltEndpoint>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BuiltEndpoint {
    pub name: String,
    pub constants: BuiltConstants,
    pub ingress: BuiltDirection,
    pub egress: BuiltDirection,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BuiltConstants {
    pub identity: u32,
    pub addresses: BuiltAddresses,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct BuiltAddresses {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BuiltDirection {
    pub enforced: bool,
    pub enforced_by: Vec<String>,
    pub entries: Vec<PolicyEntry>,
}

impl BuiltDirection {
    pub fn verdict(&self, peer: u32, proto: u8, port: u16) -> TableVerdict {
        encoded_verdict(self.enforced, &self.entries, peer, proto, port)
    }
}

/// What the datapath decides for a direction built as `entries` (empty and
/// not `enforced`: no map, everything passes), in the IR's terms.
pub fn encoded_verdict(enforced: bool, entries: &[PolicyEntry], peer: u32, proto: u8, port: u16) -> TableVerdict {
    if !enforced {
        return TableVerdict::NotEnforced;
    }
    match lookup_encoded(entries, peer, proto, port) {
        Some((EntryAction::Allow, rule)) => TableVerdict::Decided { action: Action::Allow, rule: RuleId(rule) },
        Some((EntryAction::Deny, rule)) => TableVerdict::Decided { action: Action::Deny, rule: RuleId(rule) },
        _ => TableVerdict::DefaultDeny,
    }
}

/// One end of the flow as the datapath sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlePeer {
    pub kind: BundlePeerKind,
    /// The identity the ipcache gives its address (or the endpoint's own).
    pub identity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundlePeerKind {
    Endpoint(String),
    Reserved(Reserved),
    /// An address outside the cluster.
    Outside(IpAddr),
}

impl std::fmt::Display for BundlePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            BundlePeerKind::Endpoint(name) => f.write_str(name),
            BundlePeerKind::Reserved(r) => f.write_str(r.keyword()),
            BundlePeerKind::Outside(addr) => write!(f, "{addr}"),
        }
    }
}

/// One policed side: the sender's egress or the receiver's ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSide {
    pub endpoint: String,
    pub direction: Direction,
    pub verdict: TableVerdict,
    /// The policies that enforce the direction (names, as the manifest has them).
    pub enforced_by: Vec<String>,
}

/// The bundle's answer for one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleAnswer {
    pub flow: Flow,
    pub src: BundlePeer,
    pub dst: BundlePeer,
    pub egress: Option<BundleSide>,
    pub ingress: Option<BundleSide>,
}

impl BuiltBundle {
    /// Reads `OUT/manifest.json`.
    pub fn open(dir: &Path) -> Result<BuiltBundle, BundleTraceError> {
        let path = dir.join("manifest.json");
        let text =
            std::fs::read_to_string(&path).map_err(|source| BundleTraceError::Read { path: path.clone(), source })?;
        let bundle = BuiltBundle::from_json(&text).map_err(|e| match e {
            None => BundleTraceError::PolicyOnly(dir.to_path_buf()),
            Some(source) => BundleTraceError::Parse { path: path.clone(), source },
        })?;
        super::bundle::check_format(&text, &path)?;
        Ok(bundle)
    }

    /// A manifest's text; `Err(None)` for a policy-only bundle's.
    pub fn from_json(text: &str) -> Result<BuiltBundle, Option<serde_json::Error>> {
        #[derive(Deserialize)]
        struct Kind {
            kind: Option<String>,
        }
        if let Ok(Kind { kind: Some(kind) }) = serde_json::from_str(text) {
            if kind == "policy-only" {
                return Err(None);
            }
        }
        serde_json::from_str(text).map_err(Some)
    }

    pub fn endpoint(&self, name: &str) -> Option<&BuiltEndpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The identity the ipcache gives `addr` (longest prefix; the world of
    /// its family when no prefix holds it).
    pub fn identity_of(&self, addr: IpAddr) -> u32 {
        let ipcache = self.ipcache.iter().map(|e| (e.prefix, Identity(e.identity))).collect();
        Resolved { ipcache, ..Resolved::default() }.identity_of(addr).0
    }

    /// One end of a flow: an endpoint of the bundle (by name or address),
    /// the node (an address the ipcache gives `host`), a reserved entity, or
    /// an address outside.
    pub fn peer(&self, written: &FlowPeer) -> Result<BundlePeer, PeerError> {
        match written {
            FlowPeer::Endpoint(name) => match self.endpoint(name) {
                Some(e) => {
                    Ok(BundlePeer { kind: BundlePeerKind::Endpoint(e.name.clone()), identity: e.constants.identity })
                }
                None => Err(PeerError::UnknownEndpoint {
                    name: name.clone(),
                    suggestion: closest(self.endpoints.iter().map(|e| e.name.as_str()), name),
                }),
            },
            FlowPeer::Entity(entity) => {
                let reserved = Reserved::from_entity(*entity).ok_or(PeerError::NotAFlowPeer(*entity))?;
                Ok(BundlePeer { kind: BundlePeerKind::Reserved(reserved), identity: reserved_identity(reserved).0 })
            }
            FlowPeer::Address(addr) => {
                let owner = self.endpoints.iter().find(|e| {
                    let a = e.constants.addresses;
                    match addr {
                        IpAddr::V4(v4) => a.ipv4 == Some(*v4),
                        IpAddr::V6(v6) => a.ipv6 == Some(*v6),
                    }
                });
                let identity = self.identity_of(*addr);
                let kind = match owner {
                    Some(e) => BundlePeerKind::Endpoint(e.name.clone()),
                    None if identity == Identity::HOST.0 => BundlePeerKind::Reserved(Reserved::Host),
                    None => BundlePeerKind::Outside(*addr),
                };
                Ok(BundlePeer { kind, identity })
            }
        }
    }

    /// The flow as the datapath decides it: the sender's egress and the
    /// receiver's ingress (those that are endpoints of the bundle), each
    /// looked up with the other end's identity.
    pub fn answer(&self, flow: &Flow) -> Result<BundleAnswer, PeerError> {
        let src = self.peer(&flow.src)?;
        let dst = self.peer(&flow.dst)?;
        let side = |me: &BundlePeer, other: &BundlePeer, direction: Direction| {
            let BundlePeerKind::Endpoint(name) = &me.kind else { return None };
            let endpoint = self.endpoint(name)?;
            let table = match direction {
                Direction::Ingress => &endpoint.ingress,
                Direction::Egress => &endpoint.egress,
            };
            Some(BundleSide {
                endpoint: name.clone(),
                direction,
                verdict: table.verdict(other.identity, flow.proto.0, flow.port),
                enforced_by: table.enforced_by.clone(),
            })
        };
        let egress = side(&src, &dst, Direction::Egress);
        let ingress = side(&dst, &src, Direction::Ingress);
        Ok(BundleAnswer { flow: flow.clone(), src, dst, egress, ingress })
    }

    /// Whether this bundle is what `resolved` (the sources, resolved with
    /// the bundle's identities.lock) builds: the same ipcache, endpoints,
    /// identities and policy entries. The first difference otherwise.
    pub fn built_from(&self, resolved: &Resolved, inventory: &[EndpointDef]) -> Result<(), String> {
        let ipcache: Vec<(ipnet::IpNet, u32)> = self.ipcache.iter().map(|e| (e.prefix, e.identity)).collect();
        let expected: Vec<(ipnet::IpNet, u32)> = resolved.ipcache.iter().map(|(p, id)| (p.trunc(), id.0)).collect();
        if ipcache != expected {
            return Err("its ipcache differs".into());
        }
        let planned = plan_endpoints(resolved, inventory, &BundleOptions::default()).map_err(|e| e.to_string())?;
        let names = |it: &mut dyn Iterator<Item = &String>| it.cloned().collect::<Vec<_>>();
        if names(&mut self.endpoints.iter().map(|e| &e.name)) != names(&mut planned.iter().map(|p| &p.manifest.name)) {
            return Err("its endpoints differ".into());
        }
        for (built, planned) in self.endpoints.iter().zip(&planned) {
            let planned = &planned.manifest;
            let same = built.constants.identity == planned.constants.identity
                && [(&built.ingress, &planned.ingress), (&built.egress, &planned.egress)]
                    .iter()
                    .all(|(b, p)| b.enforced == p.enforced && b.enforced_by == p.enforced_by && b.entries == p.entries);
            if !same {
                return Err(format!("endpoint `{}` has other tables", built.name));
            }
        }
        Ok(())
    }
}

/// The identity number of a reserved entity (as `polc::resolve` assigns them).
pub fn reserved_identity(reserved: Reserved) -> Identity {
    match reserved {
        Reserved::Host => Identity::HOST,
        Reserved::World => Identity::WORLD,
        Reserved::Unmanaged => Identity::UNMANAGED,
        Reserved::Health => Identity::HEALTH,
        Reserved::Init => Identity::INIT,
    }
}

impl BundleAnswer {
    pub fn sides(&self) -> impl Iterator<Item = &BundleSide> {
        self.egress.iter().chain(self.ingress.iter())
    }

    /// Allowed when every policed side allows it.
    pub fn verdict(&self) -> Action {
        if self.sides().all(|s| s.verdict.allows()) {
            Action::Allow
        } else {
            Action::Deny
        }
    }

    /// The same answer in the evaluator's terms, naming rules and policies
    /// from `set` (the sources the bundle was built from) and the flow's ends
    /// as `reference` resolved them. None if the set lacks a rule, policy or
    /// endpoint the bundle names.
    pub fn to_evaluation<'a>(&self, set: &'a PolicySet, reference: &Evaluation<'a>) -> Option<Evaluation<'a>> {
        let side = |side: &Option<BundleSide>| -> Option<Option<Side<'a>>> {
            let Some(side) = side else { return Some(None) };
            let endpoint = set.inventory.endpoint(&side.endpoint)?;
            let rule = |id: RuleId| {
                set.rule(id).map(|r| RuleRef {
                    id: r.id,
                    name: r.name.clone(),
                    policy: r.policy.clone(),
                    action: r.action,
                    span: r.span,
                })
            };
            let verdict = match side.verdict {
                TableVerdict::NotEnforced => SideVerdict::NotEnforced,
                TableVerdict::Decided { action: Action::Allow, rule: id } => SideVerdict::Allowed { rule: rule(id)? },
                TableVerdict::Decided { action: Action::Deny, rule: id } => SideVerdict::Denied { rule: rule(id)? },
                TableVerdict::DefaultDeny => {
                    let policies = side.enforced_by.iter().map(|name| {
                        let policy = set.policies.iter().find(|p| &p.name == name)?;
                        Some(PolicyRef { name: policy.name.clone(), span: policy.span })
                    });
                    SideVerdict::DefaultDeny { enforced_by: policies.collect::<Option<_>>()? }
                }
            };
            Some(Some(Side { endpoint, direction: side.direction, verdict }))
        };
        Some(Evaluation {
            flow: self.flow.clone(),
            src: reference.src,
            dst: reference.dst,
            egress: side(&self.egress)?,
            ingress: side(&self.ingress)?,
        })
    }

    /// Where the built tables and the reference evaluator differ, one line
    /// per side (empty: they agree).
    pub fn disagreements(&self, reference: &Evaluation<'_>) -> Vec<String> {
        let mut out = Vec::new();
        let pairs = [
            (Direction::Egress, &self.egress, &reference.egress),
            (Direction::Ingress, &self.ingress, &reference.ingress),
        ];
        for (direction, built, evaluated) in pairs {
            let built_says = built.as_ref().map(|s| (s.endpoint.as_str(), s.verdict));
            let reference_says = evaluated.as_ref().map(|s| (s.endpoint.name.as_str(), s.verdict.to_table_verdict()));
            if built_says != reference_says {
                out.push(format!(
                    "{}: the built tables say {}, the reference evaluator says {}",
                    direction.keyword(),
                    describe_side(built_says),
                    describe_side(reference_says)
                ));
            }
        }
        out
    }

    /// The answer in words, without the sources: rules by number, policies
    /// by name (`polc trace`'s layout: the answer, then one line per end).
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.headline());
        for (side, written, peer) in
            [(&self.egress, &self.flow.src, &self.src), (&self.ingress, &self.flow.dst, &self.dst)]
        {
            let line = match side {
                Some(side) => {
                    let who = match written {
                        FlowPeer::Address(addr) => format!("{} ({addr})", side.endpoint),
                        _ => side.endpoint.clone(),
                    };
                    format!("{who} {}: {}", side.direction.keyword(), side_words(side))
                }
                None => {
                    let who = match written {
                        FlowPeer::Address(addr) if !matches!(peer.kind, BundlePeerKind::Outside(_)) => {
                            format!("{peer} ({addr})")
                        }
                        _ => peer.to_string(),
                    };
                    format!("{who}: {}, not policed here", unpoliced_words(peer))
                }
            };
            out.push_str(&format!("  {line}\n"));
        }
        out
    }

    fn headline(&self) -> String {
        if let Some(side) = self.sides().find(|s| !s.verdict.allows()) {
            return match side.verdict {
                TableVerdict::Decided { rule, .. } => format!("DENIED by deny rule {}", rule.0),
                _ => format!(
                    "DENIED: {} {} is default-deny since {}",
                    side.endpoint,
                    side.direction.keyword(),
                    policies_select(&side.enforced_by)
                ),
            };
        }
        let rules: Vec<String> = self.deciding_rules().iter().map(|r| r.0.to_string()).collect();
        match rules.as_slice() {
            [] => "ALLOWED: no policy enforces this flow".to_string(),
            [rule] => format!("ALLOWED by rule {rule}"),
            rules => format!("ALLOWED by rules {}", rules.join(" and ")),
        }
    }

    /// The rules that decided (see `Evaluation::deciding_rules`), egress first.
    pub fn deciding_rules(&self) -> Vec<RuleId> {
        let allowed = self.verdict() == Action::Allow;
        self.sides()
            .filter(|s| s.verdict.allows() == allowed)
            .filter_map(|s| match s.verdict {
                TableVerdict::Decided { rule, .. } => Some(rule),
                _ => None,
            })
            .collect()
    }

    /// The one rule to name (see `Evaluation::rule`).
    pub fn rule(&self) -> Option<(Action, RuleId)> {
        let decided = |s: &BundleSide| match s.verdict {
            TableVerdict::Decided { action, rule } => Some((action, rule)),
            _ => None,
        };
        match self.sides().find(|s| !s.verdict.allows()) {
            Some(side) => decided(side),
            None => self.sides().find_map(decided),
        }
    }

    /// The answer as JSON, in `polc trace`'s shape (rules by number only).
    pub fn to_json(&self) -> Value {
        let rule_json = |(action, id): (Action, RuleId)| json!({ "id": id.0, "action": action.keyword() });
        let side_json = |s: &BundleSide| {
            let (decision, rule) = match s.verdict {
                TableVerdict::NotEnforced => ("not_enforced", None),
                TableVerdict::Decided { action: Action::Allow, rule } => ("allowed", Some((Action::Allow, rule))),
                TableVerdict::Decided { action: Action::Deny, rule } => ("denied", Some((Action::Deny, rule))),
                TableVerdict::DefaultDeny => ("default_deny", None),
            };
            let enforced_by: Vec<Value> = match s.verdict {
                TableVerdict::DefaultDeny => s.enforced_by.iter().map(|p| json!({ "policy": p })).collect(),
                _ => Vec::new(),
            };
            json!({
                "endpoint": s.endpoint,
                "verdict": if s.verdict.allows() { "allow" } else { "deny" },
                "decision": decision,
                "rule": rule.map(rule_json),
                "enforced_by": enforced_by,
            })
        };
        let rules: Vec<Value> = self
            .sides()
            .filter(|s| s.verdict.allows() == (self.verdict() == Action::Allow))
            .filter_map(|s| match s.verdict {
                TableVerdict::Decided { action, rule } => Some(rule_json((action, rule))),
                _ => None,
            })
            .collect();
        let text = self.to_text();
        json!({
            "verdict": self.verdict().keyword(),
            "rule": self.rule().map(rule_json),
            "rules": rules,
            "summary": text.lines().next().unwrap_or_default(),
            "flow": {
                "from": peer_json(&self.flow.src, &self.src),
                "to": peer_json(&self.flow.dst, &self.dst),
                "protocol": self.flow.proto.to_string(),
                "protocol_number": self.flow.proto.0,
                "port": self.flow.port,
            },
            "egress": self.egress.as_ref().map(side_json),
            "ingress": self.ingress.as_ref().map(side_json),
        })
    }

    /// `app2: identity 257, app1: identity 256`: who the datapath takes
    /// the two ends for.
    pub fn identities(&self) -> String {
        format!("{}: identity {}, {}: identity {}", self.src, self.src.identity, self.dst, self.dst.identity)
    }
}

/// The flow's end in JSON: as written, what it is, and its identity.
pub fn peer_json(written: &FlowPeer, peer: &BundlePeer) -> Value {
    let (kind, name) = match &peer.kind {
        BundlePeerKind::Endpoint(name) => ("endpoint", name.clone()),
        BundlePeerKind::Reserved(r) => ("reserved", r.keyword().to_string()),
        BundlePeerKind::Outside(_) => ("world", "world".to_string()),
    };
    json!({ "given": written.to_string(), "kind": kind, "name": name, "identity": peer.identity })
}

fn side_words(side: &BundleSide) -> String {
    match side.verdict {
        TableVerdict::NotEnforced => {
            format!("not enforced (no policy selecting it has an {} section)", side.direction.keyword())
        }
        TableVerdict::Decided { action: Action::Allow, rule } => format!("allowed by rule {}", rule.0),
        TableVerdict::Decided { action: Action::Deny, rule } => format!("denied by deny rule {}", rule.0),
        TableVerdict::DefaultDeny => {
            format!("default deny, no rule matches; enforced by {}", policies(&side.enforced_by))
        }
    }
}

/// "policy `p`" / "policies `a`, `b` and `c`".
fn policies(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|p| format!("`{p}`")).collect();
    match quoted.as_slice() {
        [one] => format!("policy {one}"),
        [init @ .., last] => format!("policies {} and {last}", init.join(", ")),
        [] => "no policy".to_string(),
    }
}

/// "policy `p` selects it" / "policies `a` and `b` select it".
fn policies_select(names: &[String]) -> String {
    let verb = if names.len() == 1 { "selects" } else { "select" };
    format!("{} {verb} it", policies(names))
}

fn unpoliced_words(peer: &BundlePeer) -> &'static str {
    match peer.kind {
        BundlePeerKind::Reserved(Reserved::Host) => "the node itself",
        BundlePeerKind::Reserved(Reserved::World) | BundlePeerKind::Outside(_) => "outside the cluster",
        BundlePeerKind::Reserved(_) => "a reserved identity",
        BundlePeerKind::Endpoint(_) => "an endpoint",
    }
}

fn describe_side(side: Option<(&str, TableVerdict)>) -> String {
    let Some((endpoint, verdict)) = side else { return "nothing (not an endpoint here)".into() };
    let what = match verdict {
        TableVerdict::NotEnforced => "not enforced".to_string(),
        TableVerdict::Decided { action: Action::Allow, rule } => format!("allowed by rule {}", rule.0),
        TableVerdict::Decided { action: Action::Deny, rule } => format!("denied by rule {}", rule.0),
        TableVerdict::DefaultDeny => "default deny".to_string(),
    };
    format!("`{endpoint}` {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::bundle::Manifest;
    use crate::eval::{evaluate, IpProto};
    use crate::resolve::{resolve, IdentityLock, ResolveConfig};
    use std::collections::BTreeMap;

    const SOURCE: &str = "node { ipv4 10.0.0.254 }
endpoint web { labels {app=web} ipv4 10.0.0.1 }
endpoint db { labels {app=db} ipv4 10.0.0.2 ipv6 fd00::2 }
policy db { select {app=db} ingress { allow web: from {app=web} on tcp/5432 deny nope: from 192.0.2.0/24 } }
";

    fn built(source: &str) -> (crate::driver::Frontend, BuiltBundle) {
        let frontend = crate::driver::check_text("p.pol", source);
        assert!(!frontend.has_errors(), "{:?}", frontend.diagnostics);
        let set = &frontend.checked;
        let (resolved, _) = resolve(set, &IdentityLock::default(), &ResolveConfig::default()).expect("resolves");
        let planned = plan_endpoints(&resolved, &set.inventory.endpoints, &BundleOptions::default()).expect("plans");
        let endpoints = planned.into_iter().map(|p| p.manifest).collect();
        let json = Manifest::new(&resolved, false, BTreeMap::new(), endpoints).to_json();
        let bundle = BuiltBundle::from_json(&json).expect("reads back");
        (frontend, bundle)
    }

    fn flow(src: &str, dst: &str, port: u16) -> Flow {
        let peer = |t: &str| crate::eval::flowspec::parse_peer(t).expect("a peer");
        Flow { src: peer(src), dst: peer(dst), proto: IpProto(6), port }
    }

    #[test]
    fn peers_are_what_the_datapath_sees() {
        let (_, bundle) = built(SOURCE);
        let peer = |t: &str| bundle.peer(&crate::eval::flowspec::parse_peer(t).expect("a peer"));
        let db = peer("fd00::2").expect("an endpoint address");
        assert_eq!(db.kind, BundlePeerKind::Endpoint("db".into()));
        assert_eq!(Some(db.identity), bundle.endpoint("db").map(|e| e.constants.identity));
        assert_eq!(peer("10.0.0.254").map(|p| (p.kind, p.identity)), Ok((BundlePeerKind::Reserved(Reserved::Host), 1)));
        let outside = peer("192.0.2.9").expect("an address");
        assert!(outside.identity >= Identity::FIRST_CIDR, "the rule's CIDR identity: {outside:?}");
        assert_eq!(peer("8.8.8.8").map(|p| p.identity), Ok(Identity::WORLD_IPV4.0));
        assert_eq!(peer("world").map(|p| p.identity), Ok(Identity::WORLD.0));
        assert!(matches!(peer("wev"), Err(PeerError::UnknownEndpoint { suggestion: Some(s), .. }) if s == "web"));
        assert!(matches!(peer("cluster"), Err(PeerError::NotAFlowPeer(_))));
    }

    #[test]
    fn answers_and_agreement() {
        let (frontend, bundle) = built(SOURCE);
        let set = &frontend.checked;
        for (f, allowed) in
            [(flow("web", "db", 5432), true), (flow("web", "db", 22), false), (flow("192.0.2.1", "db", 5432), false)]
        {
            let answer = bundle.answer(&f).expect("answers");
            let reference = evaluate(set, &f).expect("evaluates");
            assert_eq!(answer.verdict() == Action::Allow, allowed, "{f:?}");
            assert_eq!(answer.disagreements(&reference), Vec::<String>::new());
            assert_eq!(answer.to_evaluation(set, &reference), Some(reference));
        }
        let answer = bundle.answer(&flow("192.0.2.1", "db", 5432)).expect("answers");
        assert!(answer.to_text().starts_with("DENIED by deny rule 2\n"), "{}", answer.to_text());
    }

    #[test]
    fn a_different_answer_is_reported_side_by_side() {
        let (frontend, bundle) = built(SOURCE);
        let f = flow("web", "db", 5432);
        let reference = evaluate(&frontend.checked, &f).expect("evaluates");
        let mut answer = bundle.answer(&f).expect("answers");
        answer.ingress = answer.ingress.map(|side| BundleSide { verdict: TableVerdict::DefaultDeny, ..side });
        assert_eq!(
            answer.disagreements(&reference),
            vec![
                "ingress: the built tables say `db` default deny, the reference evaluator says `db` allowed by rule 1"
            ]
        );
        answer.egress = None;
        assert_eq!(answer.disagreements(&reference).len(), 2, "web's egress is missing too");
    }

    #[test]
    fn other_sources_are_not_what_it_was_built_from() {
        let (frontend, bundle) = built(SOURCE);
        let set = &frontend.checked;
        let (resolved, _) = resolve(set, &IdentityLock::default(), &ResolveConfig::default()).expect("resolves");
        assert_eq!(bundle.built_from(&resolved, &set.inventory.endpoints), Ok(()));
        let edited = crate::driver::check_text("p.pol", &SOURCE.replace("tcp/5432", "tcp/5433"));
        let (resolved, _) =
            resolve(&edited.checked, &IdentityLock::default(), &ResolveConfig::default()).expect("resolves");
        assert_eq!(
            bundle.built_from(&resolved, &edited.checked.inventory.endpoints),
            Err("endpoint `db` has other tables".to_string())
        );
    }
}
