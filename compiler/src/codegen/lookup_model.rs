//! The datapath's policy lookup (`policy_table_lookup` in templates/bpf/policy.h)
//! over encoded entries, in Rust: what the kernel decides from a bundle's
//! entries, without a kernel. It must agree with `DirectionTable::lookup`
//! on the table the entries were built from (tested below).

use super::entries::{EntryAction, EntryKind, PolicyEntry, ANY_IDENTITY, INLINE_INTERVALS};
use super::policy_index::{policy_index, protocol_slot, PolicyIndex, INDEX_IDENTITIES, INDEX_ROWS, ROW_HASH, ROW_NONE};
use crate::ir::is_known_protocol;

/// The decision and rule id for a packet of `proto` to `port` (destination
/// port, ICMP type, or 0) from or to `peer`; `None`: no entry decides
/// (default deny).
pub fn lookup_encoded(entries: &[PolicyEntry], peer: u32, proto: u8, port: u16) -> Option<(EntryAction, u32)> {
    lookup_indexed(entries, &policy_index(entries, INDEX_ROWS), peer, proto, port)
}

/// [`lookup_encoded`] with the table's array index given (built with any
/// number of rows: the answer must not depend on it).
pub fn lookup_indexed(
    entries: &[PolicyEntry],
    index: &PolicyIndex<'_>,
    peer: u32,
    proto: u8,
    port: u16,
) -> Option<(EntryAction, u32)> {
    let find = |identity: u32, proto: u8, kind: EntryKind, bucket: u16| {
        entries.iter().find(|e| e.identity == identity && e.proto == proto && e.kind == kind && e.bucket == bucket)
    };
    // A `protocol` entry: through the index where it covers the identity
    // and protocol, else from the hash.
    let protocol_entry = |identity: u32| match protocol_slot(proto) {
        Some(slot) if identity < INDEX_IDENTITIES => {
            match index.identities.get(&identity).map_or(ROW_NONE, |rows| rows[slot]) {
                ROW_NONE => None,
                ROW_HASH => find(identity, proto, EntryKind::Protocol, 0),
                row => index.rows.get(usize::from(row) - 1).copied(),
            }
        }
        _ => find(identity, proto, EntryKind::Protocol, 0),
    };
    // The peer's own entries, or (no entry at all) those of `any`. An
    // unknown protocol the table does not list has the table's `other`.
    let first = |identity: u32| {
        protocol_entry(identity).or_else(|| {
            if is_known_protocol(proto) {
                None
            } else {
                find(identity, 0, EntryKind::Other, 0)
            }
        })
    };
    let mut entry = match first(peer) {
        Some(entry) => entry,
        None if peer != ANY_IDENTITY => first(ANY_IDENTITY)?,
        None => return None,
    };
    if entry.split {
        entry = find(entry.identity, entry.proto, EntryKind::Bucket256, port >> 8)?;
        if entry.split {
            entry = find(entry.identity, entry.proto, EntryKind::Bucket16, port >> 4)?;
        }
    }
    // The datapath's bounded scan: the first interval that ends at or above
    // the port (sorted, disjoint intervals: the only one that can hold it)
    // decides if it starts at or below the port.
    entry
        .intervals
        .iter()
        .take(INLINE_INTERVALS)
        .find(|i| port <= i.high)
        .filter(|i| i.low <= port)
        .map(|i| (i.action, i.rule))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::entries::{direction_entries, enforced_table, KNOWN_PROTOCOLS};
    use crate::codegen::policy_index::policy_index;
    use crate::ir::{Decision, DirectionTable, Identity, L4Table, PeerKey, PortEntry, TableVerdict};
    use crate::sema::model::RuleId;
    use crate::syntax::ast::Action;
    use proptest::prelude::*;

    const PROTOCOLS: [u8; 8] = [1, 6, 17, 58, 132, 47, 50, 0];

    fn verdict(found: Option<(EntryAction, u32)>) -> TableVerdict {
        match found {
            Some((EntryAction::Allow, rule)) => TableVerdict::Decided { action: Action::Allow, rule: RuleId(rule) },
            Some((EntryAction::Deny, rule)) => TableVerdict::Decided { action: Action::Deny, rule: RuleId(rule) },
            _ => TableVerdict::DefaultDeny,
        }
    }

    fn decision() -> impl Strategy<Value = Decision> {
        (any::<bool>(), 1u32..50).prop_map(|(allow, rule)| Decision {
            action: if allow { Action::Allow } else { Action::Deny },
            rule: RuleId(rule),
        })
    }

    /// Sorted disjoint intervals: from sorted distinct bounds, paired up.
    /// Some lists are dense in a narrow range, to reach both bucket levels.
    fn intervals() -> impl Strategy<Value = Vec<PortEntry>> {
        let bounds = prop_oneof![
            proptest::collection::btree_set(any::<u16>(), 0..12),
            proptest::collection::btree_set(any::<u16>(), 30..80),
            proptest::collection::btree_set(1000u16..1300, 40..300),
            proptest::collection::btree_set(5000u16..5040, 30..40),
        ];
        (bounds, proptest::collection::vec(decision(), 160)).prop_map(|(bounds, decisions)| {
            let bounds: Vec<u16> = bounds.into_iter().collect();
            bounds
                .chunks(2)
                .zip(decisions.into_iter().cycle())
                .map(|(pair, decision)| PortEntry { low: pair[0], high: *pair.last().unwrap_or(&pair[0]), decision })
                .collect()
        })
    }

    fn l4_table() -> impl Strategy<Value = L4Table> {
        let protocols =
            proptest::collection::btree_map(proptest::sample::select(PROTOCOLS.to_vec()), intervals(), 0..4);
        (protocols, proptest::option::of(decision())).prop_map(|(protocols, other)| L4Table { protocols, other })
    }

    fn direction_table() -> impl Strategy<Value = DirectionTable> {
        // Identities below and above the array index's range.
        let identity = prop_oneof![256u32..260, INDEX_IDENTITIES..INDEX_IDENTITIES + 2];
        let key = prop_oneof![Just(PeerKey::Any), identity.prop_map(|i| PeerKey::Identity(Identity(i)))];
        proptest::collection::btree_map(key, l4_table(), 0..4).prop_map(|tables| DirectionTable {
            enforced: true,
            enforced_by: vec![],
            tables,
        })
    }

    /// Ports worth probing: every interval's edges and their neighbours.
    fn probe_ports(table: &DirectionTable) -> Vec<u16> {
        let mut ports = vec![0, 1, 80, 255, 256, 1000, 4999, 65535];
        for l4 in table.tables.values() {
            for e in l4.protocols.values().flatten() {
                ports.extend([e.low.saturating_sub(1), e.low, e.high, e.high.saturating_add(1)]);
            }
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    fn check(table: &DirectionTable) -> Result<(), TestCaseError> {
        let entries = direction_entries("ep", table).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for e in &entries {
            prop_assert!(e.intervals.len() <= INLINE_INTERVALS, "{e:?}");
            prop_assert!(e.intervals.windows(2).all(|w| w[0].high < w[1].low), "sorted, disjoint: {e:?}");
        }
        let ports = probe_ports(table);
        // No rows (every indexed entry in the hash), some, and all.
        for rows in [0, 1, 3, INDEX_ROWS] {
            let index = policy_index(&entries, rows);
            for peer in [0, 2, 256, 257, 258, 259, 300, INDEX_IDENTITIES, INDEX_IDENTITIES + 1] {
                for proto in PROTOCOLS {
                    for &port in &ports {
                        let expected = table.lookup(Identity(peer), proto, port);
                        let got = verdict(lookup_indexed(&entries, &index, peer, proto, port));
                        prop_assert_eq!(got, expected, "rows {} peer {} proto {} port {}", rows, peer, proto, port);
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn the_encoded_lookup_equals_the_table_lookup(table in direction_table()) {
            check(&table)?;
        }
    }

    #[test]
    fn long_lists_split_into_both_bucket_levels() {
        let d = |rule| Decision { action: Action::Allow, rule: RuleId(rule) };
        // 400 single ports, every other one from 2000: 256-port buckets with
        // 128 intervals each, so 16-port buckets too.
        let singles =
            (0..400).map(|i| PortEntry { low: 2000 + 2 * i, high: 2000 + 2 * i, decision: d(1 + u32::from(i)) });
        let mut own = L4Table::default();
        own.protocols.insert(6, singles.collect());
        let table = enforced_table([(PeerKey::Identity(Identity(300)), own)]);
        let entries = direction_entries("ep", &table).unwrap_or_default();
        let kinds = |kind| entries.iter().filter(|e| e.kind == kind).count();
        assert_eq!(kinds(EntryKind::Protocol), 1);
        assert!(kinds(EntryKind::Bucket256) >= 3 && kinds(EntryKind::Bucket16) >= 40, "{entries:?}");
        assert_eq!(lookup_encoded(&entries, 300, 6, 2000), Some((EntryAction::Allow, 1)));
        assert_eq!(lookup_encoded(&entries, 300, 6, 2001), None);
        assert_eq!(lookup_encoded(&entries, 300, 6, 2798), Some((EntryAction::Allow, 400)));
        assert_eq!(lookup_encoded(&entries, 300, 6, 80), None);
        assert!(check(&table).is_ok());
    }

    #[test]
    fn an_own_table_shadows_any_for_every_protocol() {
        let d = |action, rule| Decision { action, rule: RuleId(rule) };
        let mut any = L4Table::default();
        for proto in KNOWN_PROTOCOLS {
            any.protocols.insert(proto, vec![PortEntry { low: 0, high: 65535, decision: d(Action::Allow, 1) }]);
        }
        any.other = Some(d(Action::Allow, 2));
        let mut own = L4Table::default();
        own.protocols.insert(6, vec![PortEntry { low: 22, high: 22, decision: d(Action::Deny, 3) }]);
        let table = enforced_table([(PeerKey::Any, any), (PeerKey::Identity(Identity(300)), own)]);
        let entries = direction_entries("ep", &table).unwrap_or_default();
        assert_eq!(lookup_encoded(&entries, 300, 6, 22), Some((EntryAction::Deny, 3)));
        for (proto, port) in [(6, 80), (17, 53), (1, 8), (47, 0)] {
            assert_eq!(lookup_encoded(&entries, 300, proto, port), None, "proto {proto}");
            assert!(lookup_encoded(&entries, 301, proto, port).is_some(), "proto {proto}");
        }
        assert!(check(&table).is_ok());
    }
}
