//! What the datapath's policy lookup (templates/bpf/policy.h,
//! `policy_lookup`) answers over a direction's encoded entries, in Rust:
//! the kernel's verdict without a kernel, for `polc trace --from-bundle` and
//! for tests that check the encoding against the reference evaluator.
//!
//! The model: an LPM trie over 64 data bits {identity, proto, pad, port},
//! looked up with the full key of the peer; if no entry of the peer's
//! identity matches, once more with identity 0 (the `any` table). The
//! longest match decides; a "no match" entry is default deny.

use super::entries::{EntryAction, PolicyEntry, ANY_IDENTITY};

/// The decision for a packet to or from `peer` (its identity), or None when
/// nothing matches (default deny). The u32 is the deciding rule id.
pub fn lookup_encoded(entries: &[PolicyEntry], peer: u32, proto: u8, port: u16) -> Option<(EntryAction, u32)> {
    let found = longest_match(entries, peer, proto, port).or_else(|| {
        if peer == ANY_IDENTITY {
            None
        } else {
            longest_match(entries, ANY_IDENTITY, proto, port)
        }
    })?;
    match found.action {
        EntryAction::NoMatch => None,
        action => Some((action, found.rule)),
    }
}

/// The entry an LPM trie lookup of {identity, proto, 0, port} finds.
fn longest_match(entries: &[PolicyEntry], identity: u32, proto: u8, port: u16) -> Option<&PolicyEntry> {
    let key = bits(identity, proto, port);
    entries
        .iter()
        .filter(|e| {
            let mask = u64::MAX.checked_shl(64u32.saturating_sub(e.prefix_len)).unwrap_or(0);
            (bits(e.identity, e.proto, e.port) ^ key) & mask == 0
        })
        .max_by_key(|e| e.prefix_len)
}

/// The key's data bits in the order the trie compares them (network order).
fn bits(identity: u32, proto: u8, port: u16) -> u64 {
    (u64::from(identity) << 32) | (u64::from(proto) << 24) | u64::from(port)
}
