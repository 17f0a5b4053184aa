//! The graph model: nodes (endpoints grouped by identity, and the outside
//! peers that matter) and, for every ordered pair where at least one end is
//! an endpoint of this node, what the pair may exchange and which rule
//! decides it, computed from the resolved tables.
//!
//! A flow from S to T passes S's egress (if S is an endpoint) and then T's
//! ingress (if T is one); the first side that does not allow it decides
//! (SEMANTICS.md, "Verdicts"). The protocol and port space is cut at every
//! interval boundary of both tables, so each segment has one verdict and the
//! result is exact.

use crate::ir::{DirectionTable, Identity, IdentityKind, PeerKey, Resolved, TableVerdict};
use crate::resolve::identity::render_labels;
use crate::sema::model::{PolicySet, Proto, RuleId};
use crate::syntax::ast::Action;
use crate::syntax::SourceMap;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A protocol as the tables see it: one of the five they list, or any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Proto {
    Known(Proto),
    /// Every protocol other than the five (one verdict for all of them).
    Other,
}

impl L4Proto {
    /// In the order labels list them.
    pub const ALL: [L4Proto; 6] = [
        L4Proto::Known(Proto::Tcp),
        L4Proto::Known(Proto::Udp),
        L4Proto::Known(Proto::Sctp),
        L4Proto::Known(Proto::Icmp),
        L4Proto::Known(Proto::Icmpv6),
        L4Proto::Other,
    ];

    /// The highest port (ICMP type) of the protocol's space; 0 for `Other`.
    pub fn max_port(self) -> u16 {
        match self {
            L4Proto::Known(p) if p.is_icmp() => u16::from(u8::MAX),
            L4Proto::Known(_) => u16::MAX,
            L4Proto::Other => 0,
        }
    }

    /// A protocol number to look the tables up with. For `Other`, GRE
    /// stands in for every unknown protocol (the tables treat them alike).
    fn number(self) -> u8 {
        const GRE: u8 = 47;
        match self {
            L4Proto::Known(p) => p.number(),
            L4Proto::Other => GRE,
        }
    }
}

/// What happens to the first packet of a flow in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed; by these allow rules (egress first), none when no side
    /// through which the flow passes is enforced.
    Allowed { rules: Vec<RuleId> },
    /// Denied by an explicit deny rule.
    Denied { rule: RuleId },
    /// Denied because an enforced side has no rule for it.
    DefaultDeny,
}

/// A protocol and an inclusive port (or ICMP type) range with one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub proto: L4Proto,
    pub low: u16,
    pub high: u16,
    pub outcome: Outcome,
}

/// What `from` may send to `to`: the whole protocol and port space, cut
/// into segments, adjacent segments with equal outcomes merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub from: usize,
    pub to: usize,
    pub segments: Vec<Segment>,
}

impl Connection {
    pub fn allowed(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| matches!(s.outcome, Outcome::Allowed { .. }))
    }

    /// Everything passes and no rule had a say: neither side is enforced.
    pub fn is_open(&self) -> bool {
        self.segments.iter().all(|s| matches!(&s.outcome, Outcome::Allowed { rules } if rules.is_empty()))
    }

    /// The segments each deny rule decides, by rule id.
    pub fn denials(&self) -> BTreeMap<RuleId, Vec<&Segment>> {
        let mut by_rule: BTreeMap<RuleId, Vec<&Segment>> = BTreeMap::new();
        for segment in &self.segments {
            if let Outcome::Denied { rule } = segment.outcome {
                by_rule.entry(rule).or_default().push(segment);
            }
        }
        by_rule
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Endpoint {
        identity: Identity,
        ingress_enforced: bool,
        egress_enforced: bool,
    },
    Host,
    /// The outside world (one or both families), with the prefixes the
    /// policy treats alike.
    World {
        identities: Vec<Identity>,
    },
    /// Prefixes written in the policy, treated alike.
    Cidr {
        identities: Vec<Identity>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique and stable: the endpoint name, `host`, `world`, or the
    /// prefixes, comma-separated.
    pub key: String,
    /// What a person reads: the name, or the outside peers one a line.
    pub label: String,
    pub kind: NodeKind,
}

impl Node {
    /// The label on one line (`10.0.0.0/8, fc00::/7`).
    pub fn one_line(&self) -> String {
        self.label.replace('\n', ", ")
    }

    pub fn is_endpoint(&self) -> bool {
        matches!(self.kind, NodeKind::Endpoint { .. })
    }

    /// `ingress`, `egress` or both: the directions no policy enforces.
    pub fn open_directions(&self) -> Vec<&'static str> {
        match self.kind {
            NodeKind::Endpoint { ingress_enforced, egress_enforced, .. } => {
                let mut open = Vec::new();
                if !ingress_enforced {
                    open.push("ingress");
                }
                if !egress_enforced {
                    open.push("egress");
                }
                open
            }
            _ => Vec::new(),
        }
    }

    /// "ingress not enforced", "not enforced" (both), or nothing.
    pub fn enforcement_note(&self) -> Option<String> {
        match self.open_directions().as_slice() {
            [] => None,
            [one] => Some(format!("{one} not enforced")),
            _ => Some("not enforced".to_string()),
        }
    }
}

/// Endpoints sharing one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub identity: Identity,
    /// `{app=shop, tier=api}`
    pub labels: String,
    /// Node indexes.
    pub members: Vec<usize>,
}

/// A rule a connection names, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: RuleId,
    pub name: String,
    pub policy: String,
    pub action: Action,
    /// `path:line:col`
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub groups: Vec<Group>,
    /// Every ordered pair of distinct nodes with at least one endpoint, in
    /// node order (outside peers talk to each other unpoliced: not listed).
    pub connections: Vec<Connection>,
    /// (from, to) -> position in `connections`.
    index: HashMap<(usize, usize), usize>,
    /// The rules the connections name.
    pub rules: BTreeMap<RuleId, RuleInfo>,
}

impl Graph {
    pub fn connection(&self, from: usize, to: usize) -> Option<&Connection> {
        self.index.get(&(from, to)).and_then(|&i| self.connections.get(i))
    }

    pub fn rule(&self, id: RuleId) -> Option<&RuleInfo> {
        self.rules.get(&id)
    }
}

/// One end of a flow as the tables see it.
#[derive(Clone, Copy)]
struct End<'a> {
    identity: Identity,
    /// The endpoint's tables; `None` for an outside peer (not policed here).
    tables: Option<(&'a DirectionTable, &'a DirectionTable)>,
}

/// Builds the graph of a resolved policy set. `sources` locates rules.
pub fn build(resolved: &Resolved, set: &PolicySet, sources: &SourceMap) -> Graph {
    let mut graph = Graph::default();
    // One per node: what the tables know of it.
    let mut ends: Vec<End<'_>> = Vec::new();

    // Endpoints, grouped by identity (groups in identity order).
    let by_identity: BTreeMap<Identity, Vec<usize>> =
        resolved.endpoints.iter().enumerate().fold(BTreeMap::new(), |mut map, (i, e)| {
            map.entry(e.identity).or_insert_with(Vec::new).push(i);
            map
        });
    for (identity, members) in &by_identity {
        let labels = resolved.identities.iter().find(|info| info.id == *identity).map_or_else(String::new, |info| {
            match &info.kind {
                IdentityKind::Endpoint { labels } => render_labels(labels),
                _ => String::new(),
            }
        });
        let mut group = Group { identity: *identity, labels, members: Vec::new() };
        for &i in members {
            let endpoint = &resolved.endpoints[i];
            group.members.push(graph.nodes.len());
            graph.nodes.push(Node {
                key: endpoint.name.clone(),
                label: endpoint.name.clone(),
                kind: NodeKind::Endpoint {
                    identity: *identity,
                    ingress_enforced: endpoint.ingress.enforced,
                    egress_enforced: endpoint.egress.enforced,
                },
            });
            ends.push(End { identity: *identity, tables: Some((&endpoint.ingress, &endpoint.egress)) });
        }
        graph.groups.push(group);
    }
    let endpoint_ends = ends.clone();

    // The outside peers: the node, then the world by family and every
    // prefix the policy names, where peers the policy treats alike (the
    // same segments to and from every endpoint) share one node.
    let outside = |identity| End { identity, tables: None };
    graph.nodes.push(Node { key: "host".into(), label: "host".into(), kind: NodeKind::Host });
    ends.push(outside(Identity::HOST));
    let mut candidates: Vec<(Identity, String)> =
        vec![(Identity::WORLD_IPV4, "world-ipv4".into()), (Identity::WORLD_IPV6, "world-ipv6".into())];
    for info in &resolved.identities {
        if let IdentityKind::Cidr { prefix } = &info.kind {
            candidates.push((info.id, prefix.to_string()));
        }
    }
    // (what every endpoint exchanges with them, the peers)
    let mut alike: Vec<(Vec<BothWays>, Peers)> = Vec::new();
    for (identity, name) in candidates {
        let signature: Vec<_> = endpoint_ends.iter().map(|e| both_ways(*e, outside(identity))).collect();
        match alike.iter_mut().find(|(s, _)| *s == signature) {
            Some((_, members)) => members.push((identity, name)),
            None => alike.push((signature, vec![(identity, name)])),
        }
    }
    for (_, members) in alike {
        let identities: Vec<Identity> = members.iter().map(|(id, _)| *id).collect();
        let mut names: Vec<String> = members.into_iter().map(|(_, name)| name).collect();
        if names.starts_with(&["world-ipv4".to_string(), "world-ipv6".to_string()]) {
            names.splice(0..2, ["world".to_string()]);
        }
        let first = identities[0];
        let is_world = identities.iter().any(|id| [Identity::WORLD_IPV4, Identity::WORLD_IPV6].contains(id));
        let kind = if is_world { NodeKind::World { identities } } else { NodeKind::Cidr { identities } };
        graph.nodes.push(Node { key: names.join(","), label: names.join("\n"), kind });
        // Alike: the first stands for all.
        ends.push(outside(first));
    }

    for (from, src) in ends.iter().enumerate() {
        for (to, dst) in ends.iter().enumerate() {
            let policed = src.tables.is_some() || dst.tables.is_some();
            if from == to || !policed {
                continue;
            }
            let segments = segments(*src, *dst);
            graph.index.insert((from, to), graph.connections.len());
            graph.connections.push(Connection { from, to, segments });
        }
    }

    let named: BTreeSet<RuleId> = graph
        .connections
        .iter()
        .flat_map(|c| c.segments.iter())
        .flat_map(|s| match &s.outcome {
            Outcome::Allowed { rules } => rules.clone(),
            Outcome::Denied { rule } => vec![*rule],
            Outcome::DefaultDeny => Vec::new(),
        })
        .collect();
    for id in named {
        if let Some(rule) = set.rule(id) {
            let info = RuleInfo {
                id,
                name: rule.name.clone(),
                policy: rule.policy.clone(),
                action: rule.action,
                location: sources.locate(rule.span),
            };
            graph.rules.insert(id, info);
        }
    }
    graph
}

/// Segments to a peer and from it.
type BothWays = (Vec<Segment>, Vec<Segment>);

/// Outside peers by identity, with their names.
type Peers = Vec<(Identity, String)>;

/// The segments both ways between an endpoint and an outside peer.
fn both_ways(endpoint: End<'_>, peer: End<'_>) -> BothWays {
    (segments(endpoint, peer), segments(peer, endpoint))
}

/// The whole protocol and port space from `src` to `dst`, cut where either
/// side's tables change, adjacent equal outcomes merged.
fn segments(src: End<'_>, dst: End<'_>) -> Vec<Segment> {
    // The sender's egress about the receiver, the receiver's ingress about the sender.
    let egress = src.tables.map(|(_, egress)| (egress, dst.identity));
    let ingress = dst.tables.map(|(ingress, _)| (ingress, src.identity));
    let sides: Vec<(&DirectionTable, Identity)> = egress.into_iter().chain(ingress).collect();
    let mut out: Vec<Segment> = Vec::new();
    for proto in L4Proto::ALL {
        let max = proto.max_port();
        let mut starts = BTreeSet::from([0u32]);
        for (table, peer) in &sides {
            starts.extend(boundaries(table, *peer, proto));
        }
        let starts: Vec<u32> = starts.into_iter().filter(|s| *s <= u32::from(max)).collect();
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(u32::from(max), |next| next - 1);
            let (low, high) = (clamp(start), clamp(end));
            let outcome = decide(sides.iter().map(|(table, peer)| table.lookup(*peer, proto.number(), low)));
            match out.last_mut() {
                Some(last) if last.proto == proto && last.outcome == outcome && u32::from(last.high) + 1 == start => {
                    last.high = high;
                }
                _ => out.push(Segment { proto, low, high, outcome }),
            }
        }
    }
    out
}

fn clamp(port: u32) -> u16 {
    u16::try_from(port).unwrap_or(u16::MAX)
}

/// Where the decision may change for `proto` in the tables a peer can
/// select (its own and the `Any` one): each interval's start and the port
/// after its end.
fn boundaries(table: &DirectionTable, peer: Identity, proto: L4Proto) -> Vec<u32> {
    let L4Proto::Known(p) = proto else {
        return Vec::new();
    };
    [PeerKey::Identity(peer), PeerKey::Any]
        .iter()
        .filter_map(|key| table.tables.get(key))
        .filter_map(|l4| l4.protocols.get(&p.number()))
        .flatten()
        .flat_map(|entry| [u32::from(entry.low), u32::from(entry.high) + 1])
        .collect()
}

/// The first side that does not allow decides; else allowed by the allow
/// rules that matched.
fn decide(verdicts: impl Iterator<Item = TableVerdict>) -> Outcome {
    let mut rules = Vec::new();
    for verdict in verdicts {
        match verdict {
            TableVerdict::NotEnforced => {}
            TableVerdict::Decided { action: Action::Allow, rule } => rules.push(rule),
            TableVerdict::Decided { action: Action::Deny, rule } => return Outcome::Denied { rule },
            TableVerdict::DefaultDeny => return Outcome::DefaultDeny,
        }
    }
    Outcome::Allowed { rules }
}
