//! The array index in front of a direction's policy hash (see
//! templates/bpf/policy.h): where the `protocol` entry of a peer identity
//! below [`INDEX_IDENTITIES`] and a known protocol is, found with two array
//! lookups (inlined by the verifier) instead of a hash lookup (a call into
//! the kernel's hash table: ~20 ns per packet on the project's machines).
//!
//! The hash keeps every entry; the index only points into it or copies:
//! - `index[identity].row[p]`, `p` the protocol's position in
//!   [`KNOWN_PROTOCOLS`]: [`ROW_NONE`] there is no such entry (what a hash
//!   miss says), [`ROW_HASH`] look in the hash, `r` the entry's value is
//!   `rows[r - 1]`.
//! - Rows go to the `protocol` entries in the order of the entries (the
//!   `any` table first, then identities ascending) until the rows run out;
//!   later ones are [`ROW_HASH`]. Identities from [`INDEX_IDENTITIES`] on,
//!   and unknown protocols, are looked up in the hash only.
//!
//! Memory per table: 1,024 index values of 16 bytes and 128 rows of 200
//! bytes (a `struct policy_value` rounded to 8): 41.6 KiB; an endpoint with
//! both directions enforced has four tables, 166 KiB.
//!
//! [`super::lookup_model::lookup_encoded`] reads the entries through this
//! index, as the datapath does.

use super::entries::{EntryKind, PolicyEntry, KNOWN_PROTOCOLS};
use std::collections::BTreeMap;

/// Identities `0..INDEX_IDENTITIES` have an index value
/// (`POLICY_INDEX_IDENTITIES` in policy.h).
pub const INDEX_IDENTITIES: u32 = 1024;

/// Rows of a table (`POLICY_INDEX_ROWS` in policy.h).
pub const INDEX_ROWS: u16 = 128;

/// Row numbers in one index value (5 used: one per known protocol).
pub const INDEX_SLOTS: usize = 8;

/// No entry for this identity and protocol.
pub const ROW_NONE: u16 = 0;

/// The entry is in the hash only (the rows ran out).
pub const ROW_HASH: u16 = u16::MAX;

/// A table's index: the values that are not all [`ROW_NONE`], and the rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PolicyIndex<'a> {
    /// Row numbers by identity, by protocol position.
    pub identities: BTreeMap<u32, [u16; INDEX_SLOTS]>,
    /// `rows[r - 1]` is the entry of row `r`.
    pub rows: Vec<&'a PolicyEntry>,
}

/// The protocol's position in [`KNOWN_PROTOCOLS`] (its slot in an index
/// value); `None` for other protocols.
pub fn protocol_slot(proto: u8) -> Option<usize> {
    KNOWN_PROTOCOLS.iter().position(|&p| p == proto)
}

/// The index of a table holding `entries`, with at most `rows` rows
/// ([`INDEX_ROWS`] in the datapath; fewer in tests, to reach [`ROW_HASH`]).
pub fn policy_index(entries: &[PolicyEntry], rows: u16) -> PolicyIndex<'_> {
    let mut index = PolicyIndex::default();
    for entry in entries.iter().filter(|e| e.kind == EntryKind::Protocol && e.identity < INDEX_IDENTITIES) {
        let Some(slot) = protocol_slot(entry.proto) else { continue };
        let row = if index.rows.len() < usize::from(rows.min(ROW_HASH - 1)) {
            index.rows.push(entry);
            index.rows.len() as u16
        } else {
            ROW_HASH
        };
        index.identities.entry(entry.identity).or_insert([ROW_NONE; INDEX_SLOTS])[slot] = row;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::entries::{EntryAction, EntryInterval};

    fn entry(identity: u32, proto: u8, kind: EntryKind) -> PolicyEntry {
        let interval = EntryInterval { low: 80, high: 80, action: EntryAction::Allow, rule: 1, slot: 1 };
        PolicyEntry { identity, proto, kind, bucket: 0, split: false, intervals: vec![interval] }
    }

    #[test]
    fn rows_go_in_entry_order_then_the_hash() {
        let entries = [
            entry(0, 6, EntryKind::Protocol),
            entry(300, 17, EntryKind::Protocol),
            entry(300, 6, EntryKind::Protocol),
            entry(301, 1, EntryKind::Protocol),
        ];
        let index = policy_index(&entries, 2);
        assert_eq!(index.rows, vec![&entries[0], &entries[1]]);
        let tcp = protocol_slot(6).unwrap_or(usize::MAX);
        let udp = protocol_slot(17).unwrap_or(usize::MAX);
        let icmp = protocol_slot(1).unwrap_or(usize::MAX);
        assert_eq!(index.identities[&0][tcp], 1);
        assert_eq!(index.identities[&300][udp], 2);
        assert_eq!(index.identities[&300][tcp], ROW_HASH);
        assert_eq!(index.identities[&300][icmp], ROW_NONE);
        assert_eq!(index.identities[&301][icmp], ROW_HASH);
    }

    #[test]
    fn only_protocol_entries_of_known_protocols_and_low_identities() {
        let entries = [
            entry(300, 47, EntryKind::Protocol),
            entry(300, 0, EntryKind::Other),
            entry(300, 6, EntryKind::Bucket256),
            entry(INDEX_IDENTITIES, 6, EntryKind::Protocol),
            entry(1 << 24, 6, EntryKind::Protocol),
        ];
        assert_eq!(policy_index(&entries, INDEX_ROWS), PolicyIndex::default());
        assert_eq!(protocol_slot(132), Some(4));
        assert_eq!(protocol_slot(47), None);
    }
}
