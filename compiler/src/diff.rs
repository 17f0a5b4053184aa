//! `polc diff`: the flows whose verdict differs between two policy sets,
//! computed with the reference evaluator over every peer and every packet
//! that can tell the two apart.
//!
//! - Peers: every endpoint of either inventory (the union: an endpoint only
//!   one side has is evaluated on both sides with its one definition, so a
//!   new workload shows up as the access it gets), the node, the reserved
//!   identities, and one outside address for every region the CIDR peers of
//!   either side cut the address space into.
//! - Packets: per protocol, the port (or ICMP type) line is cut at every
//!   bound of a range, port or named port of either side; the verdict is
//!   constant between two cuts, so one evaluation per segment is exact and
//!   ranges are reported whole, never sampled.

use crate::eval::{self, Evaluation, Flow, FlowPeer, IpProto};
use crate::sema::model::{PeerMatch, PolicySet, PortMatch, Proto};
use crate::syntax::ast::{Direction, Entity};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A protocol that is neither TCP, UDP, SCTP nor ICMP (GRE): it stands for
/// every other protocol, which only rules without ports match.
const OTHER_PROTOCOL: u8 = 47;

/// What one side says about a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    /// The deciding rules, `policy.rule`, egress first.
    pub rules: Vec<String>,
    /// `default-deny` or `not-enforced` when no rule decided.
    pub reason: Option<String>,
}

impl Verdict {
    fn of(eval: &Evaluation<'_>) -> Verdict {
        let rules: Vec<String> = eval.deciding_rules().iter().map(|r| format!("{}.{}", r.policy, r.name)).collect();
        let allowed = eval.allowed();
        let reason = match (rules.is_empty(), allowed) {
            (false, _) => None,
            (true, true) => Some("not-enforced".to_string()),
            (true, false) => Some("default-deny".to_string()),
        };
        Verdict { allowed, rules, reason }
    }

    fn describe(&self) -> String {
        let word = if self.allowed { "allowed" } else { "denied" };
        match &self.reason {
            Some(reason) => format!("{word} ({reason})"),
            None => format!("{word} by {}", self.rules.join(", ")),
        }
    }
}

/// One changed flow: a peer pair, a protocol, a port (or type) range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub from: String,
    pub to: String,
    /// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, `other` (any other protocol),
    /// or `any` when every packet of every protocol changes the same way.
    pub proto: String,
    /// Destination ports (or ICMP types), inclusive; absent for `other` and `any`.
    pub low: Option<u16>,
    pub high: Option<u16>,
    pub before: Verdict,
    pub after: Verdict,
}

impl Change {
    pub fn packet(&self) -> String {
        match (self.low, self.high) {
            (Some(l), Some(h)) if l == h => format!("{}/{l}", self.proto),
            (Some(l), Some(h)) => format!("{}/{l}-{h}", self.proto),
            _ => self.proto.clone(),
        }
    }

    pub fn to_text(&self) -> String {
        format!(
            "{} -> {} {}: {} -> {}",
            self.from,
            self.to,
            self.packet(),
            self.before.describe(),
            self.after.describe()
        )
    }
}

/// Everything `polc diff` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub changes: Vec<Change>,
    /// Endpoints only the old (new) inventory has.
    pub only_old: Vec<String>,
    pub only_new: Vec<String>,
    /// How many flows (peer pairs x protocol segments) were compared.
    pub compared: usize,
}

impl Report {
    pub fn widened(&self) -> usize {
        self.changes.iter().filter(|c| c.after.allowed && !c.before.allowed).count()
    }

    pub fn narrowed(&self) -> usize {
        self.changes.iter().filter(|c| !c.after.allowed && c.before.allowed).count()
    }
}

/// Compares two checked policy sets (both without errors).
///
/// When both sides have the same inventory, a pair is evaluated only if
/// the sender's egress rules or the receiver's ingress rules differ between
/// the sides (everything else gives equal verdicts). Endpoints whose labels and named ports are equal on both sides get equal
/// verdicts from both (selectors see labels, named ports resolve on the
/// destination, endpoints are never CIDR peers), so each such class is
/// evaluated once and its changes are reported for every member.
pub fn diff(old: &PolicySet, new: &PolicySet) -> Report {
    compare(old, new, true)
}

/// [`diff`] without skipping the endpoints whose rules did not change:
/// every pair is evaluated. The reference the shortcut is tested against.
pub fn diff_exhaustive(old: &PolicySet, new: &PolicySet) -> Report {
    compare(old, new, false)
}

fn compare(old: &PolicySet, new: &PolicySet, skip_unchanged: bool) -> Report {
    let (old, only_new) = with_endpoints_of(old, new);
    let (new, only_old) = with_endpoints_of(new, &old);
    let peers = peers(&old, &new);
    let classes = classes(&old, &new, &peers);
    let mut report = Report { only_old, only_new, ..Report::default() };
    let protocols = [Proto::Tcp, Proto::Udp, Proto::Sctp, Proto::Icmp, Proto::Icmpv6];
    let segments: Vec<(Proto, Vec<(u16, u16)>)> = protocols.iter().map(|&p| (p, segments(&old, &new, p))).collect();
    let per_pair = segments.iter().map(|(_, s)| s.len()).sum::<usize>() + 1;
    let unchanged = unchanged_sides(&old, &new, &peers);
    // (source index, destination index, change), sorted at the end.
    let mut found: Vec<(usize, usize, Change)> = Vec::new();
    for src_class in &classes {
        for dst_class in &classes {
            let (src, dst) = (&peers[src_class[0]], &peers[dst_class[0]]);
            if !is_endpoint(src) && !is_endpoint(dst) {
                continue;
            }
            report.compared += per_pair * src_class.len() * dst_class.len();
            let (src_same, dst_same) = (unchanged[src_class[0]].0, unchanged[dst_class[0]].1);
            if skip_unchanged && src_same && dst_same {
                continue;
            }
            let changes = pair_changes(&old, &new, src, dst, &segments);
            for &s in src_class {
                for &d in dst_class {
                    for change in &changes {
                        let (from, to) = (peers[s].to_string(), peers[d].to_string());
                        found.push((s, d, Change { from, to, ..change.clone() }));
                    }
                }
            }
        }
    }
    // Stable: the changes of one pair keep their protocol and port order.
    found.sort_by_key(|(s, d, _)| (*s, *d));
    report.changes = found.into_iter().map(|(_, _, c)| c).collect();
    report
}

/// For each peer, whether its egress and its ingress are sure to give the
/// same verdicts on both sides, without evaluating: true for peers that are
/// not endpoints (nothing polices them), and for an endpoint whose policies
/// in that direction hold the same rules on both sides, when both sides
/// have the same inventory (rule ids only choose which rule is named).
fn unchanged_sides(old: &PolicySet, new: &PolicySet, peers: &[FlowPeer]) -> Vec<(bool, bool)> {
    let same_inventory = matches!((inventory_key(old), inventory_key(new)), (Some(a), Some(b)) if a == b);
    peers
        .iter()
        .map(|peer| match peer {
            FlowPeer::Endpoint(name) if same_inventory => {
                let same = |direction| rules_for(old, name, direction) == rules_for(new, name, direction);
                (same(Direction::Egress), same(Direction::Ingress))
            }
            FlowPeer::Endpoint(_) => (false, false),
            _ => (true, true),
        })
        .collect()
}

/// The inventory as far as verdicts see it (not spans, devices or MACs).
fn inventory_key(set: &PolicySet) -> Option<String> {
    let mut endpoints: Vec<_> =
        set.inventory.endpoints.iter().map(|e| (&e.name, &e.labels, e.ipv4, e.ipv6, &e.named_ports)).collect();
    endpoints.sort_by_key(|e| e.0);
    serde_json::to_string(&(endpoints, &set.inventory.node)).ok()
}

/// What decides an endpoint's verdicts in one direction: whether it is
/// enforced, and its rules (action, peers, ports), in a canonical order.
fn rules_for(set: &PolicySet, endpoint: &str, direction: Direction) -> Option<Vec<String>> {
    let labels = &set.inventory.endpoint(endpoint)?.labels;
    let sections: Vec<_> =
        set.policies.iter().filter(|p| p.selector.matches(labels)).filter_map(|p| p.section(direction)).collect();
    if sections.is_empty() {
        return None;
    }
    let mut rules: Vec<String> = sections
        .iter()
        .flat_map(|rules| rules.iter())
        .filter_map(|r| serde_json::to_string(&(&r.name, &r.policy, r.action, &r.peers, &r.l4)).ok())
        .collect();
    rules.sort();
    Some(rules)
}

fn is_endpoint(p: &FlowPeer) -> bool {
    matches!(p, FlowPeer::Endpoint(_))
}

/// Peer indexes grouped so that members of a group are interchangeable:
/// endpoints by their definitions on both sides; any other peer alone.
fn classes(old: &PolicySet, new: &PolicySet, peers: &[FlowPeer]) -> Vec<Vec<usize>> {
    let mut classes: Vec<Vec<usize>> = Vec::new();
    let mut by_key: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, peer) in peers.iter().enumerate() {
        let key = match peer {
            FlowPeer::Endpoint(name) => {
                let def =
                    |set: &PolicySet| set.inventory.endpoint(name).map(|e| (e.labels.clone(), e.named_ports.clone()));
                serde_json::to_string(&(def(old), def(new))).ok()
            }
            _ => None,
        };
        match key {
            Some(key) => match by_key.get(&key) {
                Some(&class) => classes[class].push(i),
                None => {
                    by_key.insert(key, classes.len());
                    classes.push(vec![i]);
                }
            },
            None => classes.push(vec![i]),
        }
    }
    classes
}

/// The changes between one source and one destination, ranges merged.
fn pair_changes(
    old: &PolicySet,
    new: &PolicySet,
    src: &FlowPeer,
    dst: &FlowPeer,
    segments: &[(Proto, Vec<(u16, u16)>)],
) -> Vec<Change> {
    let (from, to) = (src.to_string(), dst.to_string());
    let mut changes = Vec::new();
    for (proto, segs) in segments {
        let mut run: Option<Change> = None;
        for &(low, high) in segs {
            let (before, after) = verdicts(old, new, src, dst, IpProto::from(*proto), low);
            if let Some(c) = run.as_mut().filter(|c| c.before == before && c.after == after) {
                c.high = Some(high);
                continue;
            }
            changes.extend(run.take());
            if before.allowed != after.allowed {
                let proto = proto.name().to_string();
                let (from, to) = (from.clone(), to.clone());
                run = Some(Change { from, to, proto, low: Some(low), high: Some(high), before, after });
            }
        }
        changes.extend(run);
    }
    let (before, after) = verdicts(old, new, src, dst, IpProto(OTHER_PROTOCOL), 0);
    if before.allowed != after.allowed {
        changes.push(Change { from, to, proto: "other".to_string(), low: None, high: None, before, after });
    }
    collapse_whole(changes, segments.len() + 1)
}

/// One `any` change instead of one per protocol when every packet changes
/// the same way: `protocols` full-range changes with equal verdicts.
fn collapse_whole(changes: Vec<Change>, protocols: usize) -> Vec<Change> {
    let full = |c: &Change| match (c.low, c.high) {
        (Some(0), Some(high)) => high == if matches!(c.proto.as_str(), "icmp" | "icmpv6") { 255 } else { 65535 },
        (None, None) => true,
        _ => false,
    };
    let Some(first) = changes.first() else { return changes };
    let same = changes.iter().all(|c| full(c) && c.before == first.before && c.after == first.after);
    if changes.len() != protocols || !same {
        return changes;
    }
    vec![Change { proto: "any".to_string(), low: None, high: None, ..first.clone() }]
}

fn verdicts(
    old: &PolicySet,
    new: &PolicySet,
    src: &FlowPeer,
    dst: &FlowPeer,
    proto: IpProto,
    port: u16,
) -> (Verdict, Verdict) {
    let flow = Flow { src: src.clone(), dst: dst.clone(), proto, port };
    let of = |set: &PolicySet| match eval::evaluate(set, &flow) {
        Ok(e) => Verdict::of(&e),
        // Peers come from the union inventory, which both sides hold.
        Err(e) => Verdict { allowed: false, rules: Vec::new(), reason: Some(format!("unresolved: {e}")) },
    };
    (of(old), of(new))
}

/// `set` with the endpoints (and, if it has none, the node) of `other` that
/// it lacks; and the names of those endpoints.
fn with_endpoints_of(set: &PolicySet, other: &PolicySet) -> (PolicySet, Vec<String>) {
    let mut out = set.clone();
    let mut added = Vec::new();
    for endpoint in &other.inventory.endpoints {
        if set.inventory.endpoint(&endpoint.name).is_none() {
            out.inventory.endpoints.push(endpoint.clone());
            added.push(endpoint.name.clone());
        }
    }
    if out.inventory.node.ipv4.is_empty() && out.inventory.node.ipv6.is_empty() {
        out.inventory.node = other.inventory.node.clone();
    }
    (out, added)
}

/// Every peer worth asking about: endpoints, reserved identities, and one
/// outside address per CIDR region.
fn peers(old: &PolicySet, new: &PolicySet) -> Vec<FlowPeer> {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    names.extend(old.inventory.endpoints.iter().map(|e| e.name.as_str()));
    let mut peers: Vec<FlowPeer> = names.into_iter().map(|n| FlowPeer::Endpoint(n.to_string())).collect();
    for entity in [Entity::Host, Entity::World, Entity::Health, Entity::Init, Entity::Unmanaged] {
        peers.push(FlowPeer::Entity(entity));
    }
    let inside: BTreeSet<IpAddr> = old
        .inventory
        .endpoints
        .iter()
        .flat_map(|e| e.ipv4.map(IpAddr::V4).into_iter().chain(e.ipv6.map(IpAddr::V6)))
        .chain(old.inventory.node.ipv4.iter().map(|a| IpAddr::V4(*a)))
        .chain(old.inventory.node.ipv6.iter().map(|a| IpAddr::V6(*a)))
        .collect();
    peers.extend(cidr_representatives(old, new, &inside).into_iter().map(FlowPeer::Address));
    peers
}

/// One address of every non-empty region "inside prefix P and no longer
/// prefix" of the prefixes both sides write (plus `/0` of each family),
/// skipping the cluster's own addresses.
fn cidr_representatives(old: &PolicySet, new: &PolicySet, inside: &BTreeSet<IpAddr>) -> BTreeSet<IpAddr> {
    let mut prefixes: BTreeSet<IpNet> = BTreeSet::new();
    prefixes.insert("0.0.0.0/0".parse().expect("a prefix"));
    prefixes.insert("::/0".parse().expect("a prefix"));
    for rule in old.rules().chain(new.rules()) {
        for peer in &rule.peers {
            if let PeerMatch::Cidr { net, except } = peer {
                prefixes.insert(*net);
                prefixes.extend(except.iter().copied());
            }
        }
    }
    // The uncovered part of a prefix is a set of intervals, each bounded by
    // the prefix's own ends or by an address next to a longer prefix.
    let mut candidates: BTreeSet<IpAddr> = BTreeSet::new();
    for p in &prefixes {
        candidates.insert(p.network());
        candidates.insert(p.broadcast());
        for q in prefixes.iter().filter(|q| q.prefix_len() > p.prefix_len() && p.contains(*q)) {
            candidates.extend(step(q.network(), -1).filter(|a| p.contains(a)));
            candidates.extend(step(q.broadcast(), 1).filter(|a| p.contains(a)));
        }
    }
    let longest = |a: &IpAddr| prefixes.iter().filter(|p| p.contains(a)).max_by_key(|p| p.prefix_len()).copied();
    let mut seen: BTreeSet<IpNet> = BTreeSet::new();
    let mut out = BTreeSet::new();
    for a in candidates {
        if inside.contains(&a) {
            continue;
        }
        if let Some(region) = longest(&a) {
            if seen.insert(region) {
                out.insert(a);
            }
        }
    }
    out
}

fn step(addr: IpAddr, by: i8) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => {
            let n = u32::from(a);
            let n = if by < 0 { n.checked_sub(1)? } else { n.checked_add(1)? };
            Some(IpAddr::V4(n.into()))
        }
        IpAddr::V6(a) => {
            let n = u128::from(a);
            let n = if by < 0 { n.checked_sub(1)? } else { n.checked_add(1)? };
            Some(IpAddr::V6(n.into()))
        }
    }
}

/// The segments `[low, high]` of 0..=65535 (ICMP: 0..=255) on which no
/// rule of either side, and no named port of the inventory, changes.
fn segments(old: &PolicySet, new: &PolicySet, proto: Proto) -> Vec<(u16, u16)> {
    let max: u32 = if proto.is_icmp() { 255 } else { 65535 };
    let mut cuts: BTreeSet<u32> = BTreeSet::from([0]);
    let mut cut = |low: u32, high: u32| {
        cuts.insert(low);
        if high < max {
            cuts.insert(high + 1);
        }
    };
    for set in [old, new] {
        for rule in set.rules() {
            for l4 in &rule.l4 {
                match &l4.ports {
                    PortMatch::Range { low, high } => cut(u32::from(*low), u32::from(*high)),
                    PortMatch::Named(name) => {
                        for e in &set.inventory.endpoints {
                            if let Some((_, n)) = e.named_ports.get(name) {
                                cut(u32::from(*n), u32::from(*n));
                            }
                        }
                    }
                    PortMatch::All => {}
                }
            }
        }
    }
    let starts: Vec<u32> = cuts.into_iter().filter(|c| *c <= max).collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &low)| {
            let high = starts.get(i + 1).map_or(max, |next| next - 1);
            (low as u16, high as u16)
        })
        .collect()
}

#[cfg(test)]
mod tests;
