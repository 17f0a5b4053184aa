//! A direction's table as policy map entries (see templates/bpf/policy.h).
//!
//! The map is an LPM trie over 64 data bits {identity, proto, 0, port}. Per
//! peer key (identity, or 0 for `any`), the longest matching prefix must be
//! `L4Table::lookup`'s answer:
//! - len 32: every packet of that identity. Its value is `other` (protocols
//!   the table does not list), or "no match". Its presence also tells the
//!   datapath that the identity has its own table (no fallback to `any`).
//! - len 40: a listed protocol, or a known one absent from the table, where
//!   `other` would otherwise leak in: "no match" (the gaps).
//! - len 48..=64: a port interval split into aligned prefixes: its decision.

use super::CodegenError;
use crate::ir::{Decision, DirectionTable, Identity, L4Table, PeerKey};
use crate::syntax::ast::Action;
use serde::{Deserialize, Serialize};

/// The protocols `ir::is_known_protocol` names.
const KNOWN_PROTOCOLS: [u8; 5] = [1, 6, 17, 58, 132];

/// What an entry decides (`POLICY_*` in policy.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryAction {
    /// Default deny: the identity or protocol has a table, no rule matches.
    NoMatch = 0,
    Allow = 1,
    Deny = 2,
}

/// One policy map entry; `rule` is 0 for [`EntryAction::NoMatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEntry {
    pub prefix_len: u32,
    pub identity: u32,
    pub proto: u8,
    pub port: u16,
    pub action: EntryAction,
    pub rule: u32,
    /// The rule's counter slot in this endpoint (see [`assign_slots`]); 0: no rule.
    pub slot: u16,
}

/// The identity that keys the `any` table in the map.
pub const ANY_IDENTITY: u32 = 0;

const IDENTITY_BITS: u32 = 32;
const PROTO_BITS: u32 = IDENTITY_BITS + 16; // proto and its padding byte

/// The entries for one direction; empty when it is not enforced (the
/// datapath is then built without the map).
pub fn direction_entries(endpoint: &str, table: &DirectionTable) -> Result<Vec<PolicyEntry>, CodegenError> {
    let mut out = Vec::new();
    if !table.enforced {
        return Ok(out);
    }
    for (key, l4) in &table.tables {
        let identity = match key {
            PeerKey::Any => ANY_IDENTITY,
            PeerKey::Identity(Identity(ANY_IDENTITY)) => {
                return Err(CodegenError::ReservedIdentity { endpoint: endpoint.to_string() })
            }
            PeerKey::Identity(id) => id.0,
        };
        table_entries(identity, l4, &mut out);
    }
    Ok(out)
}

/// Numbers the rules an endpoint's entries name densely from 1 (its
/// counter slots: the datapath counts in an array, not a hash) and writes
/// each entry's slot. Returns the rule id of each slot (index 0: slot 1).
pub fn assign_slots(endpoint: &str, directions: [&mut Vec<PolicyEntry>; 2]) -> Result<Vec<u32>, CodegenError> {
    let mut rules: Vec<u32> = directions.iter().flat_map(|d| d.iter()).map(|e| e.rule).filter(|&r| r != 0).collect();
    rules.sort_unstable();
    rules.dedup();
    if rules.len() >= usize::from(u16::MAX) {
        return Err(CodegenError::TooManyRules { endpoint: endpoint.to_string(), rules: rules.len() });
    }
    for entry in directions.into_iter().flatten() {
        entry.slot = match rules.binary_search(&entry.rule) {
            Ok(i) if entry.rule != 0 => i as u16 + 1,
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

fn table_entries(identity: u32, table: &L4Table, out: &mut Vec<PolicyEntry>) {
    let entry = |prefix_len, proto, port, decision: Option<Decision>| PolicyEntry {
        prefix_len,
        identity,
        proto,
        port,
        action: match decision.map(|d| d.action) {
            None => EntryAction::NoMatch,
            Some(Action::Allow) => EntryAction::Allow,
            Some(Action::Deny) => EntryAction::Deny,
        },
        rule: decision.map_or(0, |d| d.rule.0),
        slot: 0,
    };
    out.push(entry(IDENTITY_BITS, 0, 0, table.other));
    if table.other.is_some() {
        // Where `other` must not apply: every listed protocol's gaps, and the
        // known protocols the table leaves out.
        let unlisted_known = KNOWN_PROTOCOLS.into_iter().filter(|p| !table.protocols.contains_key(p));
        for proto in table.protocols.keys().copied().chain(unlisted_known) {
            out.push(entry(IDENTITY_BITS + 8, proto, 0, None));
        }
    }
    for (&proto, intervals) in &table.protocols {
        for interval in intervals {
            for (port, bits) in split_range(interval.low, interval.high) {
                out.push(entry(PROTO_BITS + bits, proto, port, Some(interval.decision)));
            }
        }
    }
}

/// The aligned prefixes (start, prefix bits out of 16) that cover exactly
/// `low..=high`.
pub fn split_range(low: u16, high: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut start, end) = (u32::from(low), u32::from(high));
    while start <= end {
        // The largest block aligned at `start` that stays inside the range.
        let mut size_bits = start.trailing_zeros().min(16);
        while start + (1 << size_bits) - 1 > end {
            size_bits -= 1;
        }
        out.push((start as u16, 16 - size_bits));
        start += 1 << size_bits;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{PortEntry, TableVerdict};
    use crate::sema::model::RuleId;
    use std::collections::BTreeMap;

    /// The LPM lookup the kernel does, over the entries, as the datapath
    /// calls it (own identity first, then `any`).
    fn lpm(entries: &[PolicyEntry], peer: u32, proto: u8, port: u16) -> Option<PolicyEntry> {
        let key = (u64::from(peer) << 32) | (u64::from(proto) << 24) | u64::from(port);
        let find = |id: u32| {
            let key = (key & 0xffff_ffff) | (u64::from(id) << 32);
            entries
                .iter()
                .filter(|e| {
                    let value = (u64::from(e.identity) << 32) | (u64::from(e.proto) << 24) | u64::from(e.port);
                    let mask = u64::MAX.checked_shl(64 - e.prefix_len).unwrap_or(0);
                    (value ^ key) & mask == 0
                })
                .max_by_key(|e| e.prefix_len)
                .copied()
        };
        find(peer).or_else(|| if peer == ANY_IDENTITY { None } else { find(ANY_IDENTITY) })
    }

    #[test]
    fn split_range_covers_exactly() {
        for (low, high) in [(0, 65535), (80, 80), (1, 65534), (1000, 2000), (0, 0), (65535, 65535), (3, 17)] {
            let parts = split_range(low, high);
            let mut covered = 0u32;
            for (start, bits) in &parts {
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(*start) % size, 0, "aligned");
                covered += size;
            }
            assert_eq!(covered, u32::from(high) - u32::from(low) + 1);
            assert_eq!(parts.first().map(|p| p.0), Some(low));
        }
        assert_eq!(split_range(0, 65535), vec![(0, 0)]);
        assert_eq!(split_range(1, 65534).len(), 30);
    }

    #[test]
    fn longest_match_equals_the_table_lookup() {
        let d = |action, rule| Decision { action, rule: RuleId(rule) };
        let mut own = L4Table::default();
        own.protocols.insert(6, vec![PortEntry { low: 10, high: 20, decision: d(Action::Deny, 2) }]);
        own.protocols.insert(47, vec![PortEntry { low: 0, high: 0, decision: d(Action::Allow, 4) }]);
        own.other = Some(d(Action::Allow, 3));
        let mut any = L4Table::default();
        any.protocols.insert(17, vec![PortEntry { low: 53, high: 53, decision: d(Action::Allow, 1) }]);
        let table = DirectionTable {
            enforced: true,
            enforced_by: vec![],
            tables: BTreeMap::from([(PeerKey::Identity(Identity(300)), own), (PeerKey::Any, any)]),
        };
        let entries = direction_entries("ep", &table).unwrap_or_default();
        for peer in [0, 2, 300, 301] {
            for proto in [1, 6, 17, 47, 50, 58, 132] {
                for port in [0, 9, 10, 15, 20, 21, 53, 65535] {
                    let expected = table.lookup(Identity(peer), proto, port);
                    let got = match lpm(&entries, peer, proto, port) {
                        Some(e) if e.action == EntryAction::Allow => {
                            TableVerdict::Decided { action: Action::Allow, rule: RuleId(e.rule) }
                        }
                        Some(e) if e.action == EntryAction::Deny => {
                            TableVerdict::Decided { action: Action::Deny, rule: RuleId(e.rule) }
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
        let entries = split_range(1, 65534).into_iter().map(|(port, bits)| PolicyEntry {
            prefix_len: 48 + bits,
            identity: 0,
            proto: 6,
            port,
            action: EntryAction::Allow,
            rule: 1,
            slot: 0,
        });
        let entries: Vec<PolicyEntry> = entries.collect();
        assert!(check_capacity("web", "ingress", &entries, 30).is_ok());
        let err = check_capacity("web", "ingress", &entries, 29).map_err(|e| e.to_string());
        assert_eq!(err, Err("endpoint `web`: ingress policy needs 30 map entries, the map holds 29".to_string()));
    }

    #[test]
    fn slots_are_dense_per_endpoint() {
        let entry = |rule| PolicyEntry {
            prefix_len: 64,
            identity: 1,
            proto: 6,
            port: 1,
            action: EntryAction::Allow,
            rule,
            slot: 9,
        };
        let mut ingress = vec![entry(40), entry(0), entry(7)];
        let mut egress = vec![entry(7), entry(12)];
        let slots = assign_slots("web", [&mut ingress, &mut egress]).unwrap_or_default();
        assert_eq!(slots, vec![7, 12, 40]);
        let got: Vec<u16> = ingress.iter().chain(&egress).map(|e| e.slot).collect();
        assert_eq!(got, vec![3, 0, 1, 1, 2]);
    }

    #[test]
    fn identity_zero_is_refused() {
        let table = DirectionTable {
            enforced: true,
            enforced_by: vec![],
            tables: BTreeMap::from([(PeerKey::Identity(Identity(0)), L4Table::default())]),
        };
        assert!(matches!(direction_entries("web", &table), Err(CodegenError::ReservedIdentity { .. })));
        assert_eq!(direction_entries("web", &DirectionTable::default()).map(|e| e.len()).ok(), Some(0));
    }
}
