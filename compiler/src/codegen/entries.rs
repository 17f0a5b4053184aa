//! A direction's table as policy map entries (see templates/bpf/policy.h).
//!
//! The map is a hash keyed by {identity, protocol, kind, bucket}; a value
//! holds up to [`INLINE_INTERVALS`] sorted, disjoint port intervals with
//! their decisions, which the datapath scans in a bounded loop. One lookup
//! decides a packet in the common case, whatever the size of the table.
//! Per peer key (identity, or 0 for `any`):
//! - kind `protocol`, {identity, proto}: the intervals of a protocol the
//!   table lists. An identity with a table of its own has an entry for every
//!   known protocol that could otherwise fall back to `any` (empty when its
//!   table has nothing for it), so a miss on a known protocol means "no
//!   table of its own" and the datapath falls back to identity 0.
//! - kind `other`, {identity, 0}: for protocols outside the five known ones
//!   that the table does not list: one interval over every port with the
//!   `other` decision, or none. Written where a fallback to `any` could
//!   otherwise answer differently.
//! - More than [`INLINE_INTERVALS`] intervals: the `protocol` entry is
//!   `split` and holds none; the intervals, clipped to 256-port buckets, are
//!   in `bucket256` entries {identity, proto, port >> 8}, and a bucket with
//!   still too many in `bucket16` entries {identity, proto, port >> 4} (16
//!   ports never hold more than 16 intervals). A missing bucket: no match.
//!
//! [`super::lookup_model::lookup_encoded`] is the datapath's lookup over
//! these entries, in Rust.

use super::CodegenError;
use crate::ir::{is_known_protocol, DirectionTable, Identity, L4Table, PeerKey, PortEntry};
use crate::syntax::ast::Action;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The protocols `ir::is_known_protocol` names.
pub const KNOWN_PROTOCOLS: [u8; 5] = [1, 6, 17, 58, 132];

/// Intervals one map value holds (`POLICY_INLINE` in policy.h).
pub const INLINE_INTERVALS: usize = 16;

/// What an interval decides (`POLICY_*` in policy.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryAction {
    /// The C value 0. Never in an interval: a port no interval covers
    /// decides nothing (default deny).
    NoMatch = 0,
    Allow = 1,
    Deny = 2,
}

/// Which part of a table an entry holds (`POLICY_KIND_*` in policy.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Protocol = 0,
    Bucket256 = 1,
    Bucket16 = 2,
    Other = 3,
}

/// An inclusive port (or ICMP type) interval and what it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInterval {
    pub low: u16,
    pub high: u16,
    pub action: EntryAction,
    pub rule: u32,
    /// The rule's counter slot in this endpoint (see [`assign_slots`]).
    pub slot: u16,
}

/// One policy map entry: its key and its intervals (sorted, disjoint, at
/// most [`INLINE_INTERVALS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub identity: u32,
    /// 0 for [`EntryKind::Other`].
    pub proto: u8,
    pub kind: EntryKind,
    /// `port >> 8` for [`EntryKind::Bucket256`], `port >> 4` for
    /// [`EntryKind::Bucket16`], else 0.
    pub bucket: u16,
    /// The intervals are in the next kind's entries (no intervals here).
    pub split: bool,
    pub intervals: Vec<EntryInterval>,
}

/// The identity that keys the `any` table in the map.
pub const ANY_IDENTITY: u32 = 0;

/// The entries for one direction; empty when it is not enforced (the
/// datapath is then built without the map).
pub fn direction_entries(endpoint: &str, table: &DirectionTable) -> Result<Vec<PolicyEntry>, CodegenError> {
    let mut out = Vec::new();
    if !table.enforced {
        return Ok(out);
    }
    let any = table.tables.get(&PeerKey::Any);
    let fallback = Fallback {
        known: KNOWN_PROTOCOLS
            .into_iter()
            .filter(|p| any.and_then(|t| t.protocols.get(p)).is_some_and(|v| !v.is_empty()))
            .collect(),
        unknown: any.is_some_and(|t| t.other.is_some() || t.protocols.keys().any(|p| !is_known_protocol(*p))),
    };
    for (key, l4) in &table.tables {
        let identity = match key {
            PeerKey::Any => ANY_IDENTITY,
            PeerKey::Identity(Identity(ANY_IDENTITY)) => {
                return Err(CodegenError::ReservedIdentity { endpoint: endpoint.to_string() })
            }
            PeerKey::Identity(id) => id.0,
        };
        table_entries(identity, l4, &fallback, &mut out);
    }
    Ok(out)
}

/// What the `any` table could answer for a peer whose own table is silent:
/// an own table must write an entry wherever this differs from its answer.
struct Fallback {
    /// Known protocols with intervals in `any`.
    known: Vec<u8>,
    /// Whether `any` decides anything for some unknown protocol.
    unknown: bool,
}

fn table_entries(identity: u32, table: &L4Table, fallback: &Fallback, out: &mut Vec<PolicyEntry>) {
    let own = identity != ANY_IDENTITY;
    for (&proto, intervals) in &table.protocols {
        // A known protocol with no intervals and nothing to fall back on
        // decides nothing either way: no entry needed.
        if is_known_protocol(proto) && intervals.is_empty() && !(own && fallback.known.contains(&proto)) {
            continue;
        }
        protocol_entries(identity, proto, intervals, out);
    }
    if own {
        for &proto in fallback.known.iter().filter(|p| !table.protocols.contains_key(p)) {
            protocol_entries(identity, proto, &[], out);
        }
    }
    if table.other.is_some() || (own && fallback.unknown) {
        let every_port = table.other.map(|d| PortEntry { low: 0, high: u16::MAX, decision: d });
        out.push(PolicyEntry {
            identity,
            proto: 0,
            kind: EntryKind::Other,
            bucket: 0,
            split: false,
            intervals: every_port.iter().map(interval).collect(),
        });
    }
}

fn interval(entry: &PortEntry) -> EntryInterval {
    EntryInterval {
        low: entry.low,
        high: entry.high,
        action: match entry.decision.action {
            Action::Allow => EntryAction::Allow,
            Action::Deny => EntryAction::Deny,
        },
        rule: entry.decision.rule.0,
        slot: 0,
    }
}

/// One protocol's intervals: inline, or split into buckets.
fn protocol_entries(identity: u32, proto: u8, intervals: &[PortEntry], out: &mut Vec<PolicyEntry>) {
    let entry = |kind, bucket, split, intervals: Vec<EntryInterval>| PolicyEntry {
        identity,
        proto,
        kind,
        bucket,
        split,
        intervals,
    };
    let all: Vec<EntryInterval> = intervals.iter().map(interval).collect();
    if all.len() <= INLINE_INTERVALS {
        out.push(entry(EntryKind::Protocol, 0, false, all));
        return;
    }
    out.push(entry(EntryKind::Protocol, 0, true, Vec::new()));
    for (bucket, clipped) in buckets(&all, 8) {
        if clipped.len() <= INLINE_INTERVALS {
            out.push(entry(EntryKind::Bucket256, bucket, false, clipped));
            continue;
        }
        out.push(entry(EntryKind::Bucket256, bucket, true, Vec::new()));
        for (bucket, clipped) in buckets(&clipped, 4) {
            out.push(entry(EntryKind::Bucket16, bucket, false, clipped));
        }
    }
}

/// The intervals clipped to each bucket of `1 << shift` ports they touch,
/// by bucket number (`port >> shift`).
fn buckets(intervals: &[EntryInterval], shift: u32) -> BTreeMap<u16, Vec<EntryInterval>> {
    let mut out: BTreeMap<u16, Vec<EntryInterval>> = BTreeMap::new();
    for i in intervals {
        for bucket in (i.low >> shift)..=(i.high >> shift) {
            let first = u32::from(bucket) << shift;
            let last = first + (1 << shift) - 1;
            let low = u32::from(i.low).max(first) as u16;
            let high = u32::from(i.high).min(last) as u16;
            out.entry(bucket).or_default().push(EntryInterval { low, high, ..*i });
        }
    }
    out
}

/// Numbers the rules an endpoint's entries name densely from 1 (its
/// counter slots: the datapath counts in an array, not a hash) and writes
/// each interval's slot. Returns the rule id of each slot (index 0: slot 1).
pub fn assign_slots(endpoint: &str, directions: [&mut Vec<PolicyEntry>; 2]) -> Result<Vec<u32>, CodegenError> {
    let mut rules: Vec<u32> = directions
        .iter()
        .flat_map(|d| d.iter())
        .flat_map(|e| e.intervals.iter())
        .map(|i| i.rule)
        .filter(|&r| r != 0)
        .collect();
    rules.sort_unstable();
    rules.dedup();
    if rules.len() >= usize::from(u16::MAX) {
        return Err(CodegenError::TooManyRules { endpoint: endpoint.to_string(), rules: rules.len() });
    }
    for interval in directions.into_iter().flatten().flat_map(|e| e.intervals.iter_mut()) {
        interval.slot = match rules.binary_search(&interval.rule) {
            Ok(i) if interval.rule != 0 => i as u16 + 1,
            _ => 0,
        };
    }
    Ok(rules)
}

/// Fails when a direction needs more entries than the policy map holds:
/// a build error naming the endpoint, never a runtime drop.
pub fn check_capacity(
    endpoint: &str,
    direction: &'static str,
    entries: &[PolicyEntry],
    capacity: u32,
) -> Result<(), CodegenError> {
    if entries.len() > capacity as usize {
        return Err(CodegenError::Capacity {
            endpoint: endpoint.to_string(),
            direction,
            needed: entries.len(),
            capacity,
        });
    }
    Ok(())
}

/// An enforced direction with these tables (for tests).
#[cfg(test)]
pub(crate) fn enforced_table<const N: usize>(tables: [(PeerKey, L4Table); N]) -> DirectionTable {
    DirectionTable { enforced: true, enforced_by: vec![], tables: BTreeMap::from(tables) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::lookup_model::lookup_encoded;
    use crate::ir::{Decision, TableVerdict};
    use crate::sema::model::RuleId;

    fn d(action: Action, rule: u32) -> Decision {
        Decision { action, rule: RuleId(rule) }
    }

    #[test]
    fn entries_decide_what_the_table_decides() {
        let mut own = L4Table::default();
        own.protocols.insert(6, vec![PortEntry { low: 10, high: 20, decision: d(Action::Deny, 2) }]);
        own.protocols.insert(47, vec![PortEntry { low: 0, high: 0, decision: d(Action::Allow, 4) }]);
        own.other = Some(d(Action::Allow, 3));
        let mut any = L4Table::default();
        any.protocols.insert(17, vec![PortEntry { low: 53, high: 53, decision: d(Action::Allow, 1) }]);
        let table = enforced_table([(PeerKey::Identity(Identity(300)), own), (PeerKey::Any, any)]);
        let entries = direction_entries("ep", &table).unwrap_or_default();
        // any: udp; own: tcp, gre, udp (empty: shadows any's), other.
        assert_eq!(entries.len(), 5, "{entries:?}");
        for peer in [0, 2, 300, 301] {
            for proto in [1, 6, 17, 47, 50, 58, 132] {
                for port in [0, 9, 10, 15, 20, 21, 53, 65535] {
                    let expected = table.lookup(Identity(peer), proto, port);
                    let got = match lookup_encoded(&entries, peer, proto, port) {
                        Some((EntryAction::Allow, rule)) => {
                            TableVerdict::Decided { action: Action::Allow, rule: RuleId(rule) }
                        }
                        Some((EntryAction::Deny, rule)) => {
                            TableVerdict::Decided { action: Action::Deny, rule: RuleId(rule) }
                        }
                        _ => TableVerdict::DefaultDeny,
                    };
                    assert_eq!(got, expected, "peer {peer} proto {proto} port {port}");
                }
            }
        }
    }

    #[test]
    fn capacity_is_checked_at_build_time() {
        // 400 single ports: one split protocol entry and its buckets.
        let singles = (0..400).map(|i| PortEntry { low: 2 * i, high: 2 * i, decision: d(Action::Allow, 1) });
        let mut own = L4Table::default();
        own.protocols.insert(6, singles.collect());
        let table = enforced_table([(PeerKey::Identity(Identity(300)), own)]);
        let entries = direction_entries("web", &table).unwrap_or_default();
        let needed = entries.len();
        assert!(needed > 1 && entries.iter().all(|e| e.intervals.len() <= INLINE_INTERVALS));
        assert!(check_capacity("web", "ingress", &entries, needed as u32).is_ok());
        let err = check_capacity("web", "ingress", &entries, needed as u32 - 1).map_err(|e| e.to_string());
        let message =
            format!("endpoint `web`: ingress policy needs {needed} map entries, the map holds {}", needed - 1);
        assert_eq!(err, Err(message));
    }

    #[test]
    fn slots_are_dense_per_endpoint() {
        let entry = |rules: &[u32]| PolicyEntry {
            identity: 1,
            proto: 6,
            kind: EntryKind::Protocol,
            bucket: 0,
            split: false,
            intervals: rules
                .iter()
                .map(|&rule| EntryInterval { low: 1, high: 1, action: EntryAction::Allow, rule, slot: 9 })
                .collect(),
        };
        let mut ingress = vec![entry(&[40, 0]), entry(&[7])];
        let mut egress = vec![entry(&[7, 12])];
        let slots = assign_slots("web", [&mut ingress, &mut egress]).unwrap_or_default();
        assert_eq!(slots, vec![7, 12, 40]);
        let got: Vec<u16> = ingress.iter().chain(&egress).flat_map(|e| e.intervals.iter().map(|i| i.slot)).collect();
        assert_eq!(got, vec![3, 0, 1, 1, 2]);
    }

    #[test]
    fn identity_zero_is_refused() {
        let table = enforced_table([(PeerKey::Identity(Identity(0)), L4Table::default())]);
        assert!(matches!(direction_entries("web", &table), Err(CodegenError::ReservedIdentity { .. })));
        assert_eq!(direction_entries("web", &DirectionTable::default()).map(|e| e.len()).ok(), Some(0));
    }

    #[test]
    fn entries_round_trip_through_json() {
        let mut own = L4Table::default();
        own.protocols.insert(6, vec![PortEntry { low: 80, high: 80, decision: d(Action::Allow, 1) }]);
        own.other = Some(d(Action::Deny, 2));
        let table = enforced_table([(PeerKey::Identity(Identity(300)), own)]);
        let entries = direction_entries("web", &table).unwrap_or_default();
        let json = serde_json::to_string(&entries).unwrap_or_default();
        let back: Vec<PolicyEntry> = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, entries);
        assert_eq!(entries.len(), 2);
    }
}
