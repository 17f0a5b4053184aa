//! The binary interface of the BPF datapath in `templates/bpf/`: map and
//! program names, key and value layouts, verdict reasons, the event record.
//! Every layout here mirrors a C struct named in its doc comment; keep both
//! in step.

use polc::codegen::entries::{PolicyEntry, INLINE_INTERVALS};
use polc::codegen::policy_index::INDEX_SLOTS;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Node-wide maps (pinned once per node) start with this prefix; every other
/// pinned map belongs to one endpoint.
pub const NODE_MAP_PREFIX: &str = "node_";
/// Prefixes shorter than a host address.
pub const IPCACHE_MAP: &str = "node_ipcache";
/// Host addresses (/32, /128), one map per family: looked up before the trie.
pub const IPCACHE_HOST4_MAP: &str = "node_ipc_host4";
pub const IPCACHE_HOST6_MAP: &str = "node_ipc_host6";
/// Conntrack, one map per address family (IPv4 has a 16-byte key).
pub const CONNTRACK4_MAP: &str = "node_ct4";
pub const CONNTRACK6_MAP: &str = "node_ct6";
pub const EVENTS_MAP: &str = "node_events";
pub const METRICS_MAP: &str = "ep_metrics";

/// A policy direction, as seen from the endpoint (`DIR_*` in common.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// To the endpoint: tcx egress of the host-side veth.
    Ingress = 0,
    /// From the endpoint: tcx ingress of the host-side veth.
    Egress = 1,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The entry program for this direction.
    pub fn entry_program(self) -> &'static str {
        match self {
            Direction::Ingress => "to_ep",
            Direction::Egress => "from_ep",
        }
    }

    /// The endpoint's policy map for this direction (absent when the
    /// direction is not enforced): the selector, one u32 saying which of
    /// the two [`Direction::policy_tables`] the program reads.
    pub fn policy_map(self) -> &'static str {
        match self {
            Direction::Ingress => "ep_pol_in",
            Direction::Egress => "ep_pol_eg",
        }
    }

    /// The prog array of this direction's tail calls.
    pub fn prog_array(self) -> &'static str {
        match self {
            Direction::Ingress => "ep_calls_in",
            Direction::Egress => "ep_calls_eg",
        }
    }

    /// Every program of this direction: its entry program, then the targets
    /// of its tail calls (whether or not an object has them).
    pub fn programs(self) -> Vec<&'static str> {
        let targets = TAIL_CALLS.iter().filter(|(array, _, _)| *array == self.prog_array()).map(|(_, _, p)| *p);
        std::iter::once(self.entry_program()).chain(targets).collect()
    }

    /// The direction a program of the datapath belongs to.
    pub fn of_program(program: &str) -> Option<Direction> {
        Direction::BOTH.into_iter().find(|d| d.programs().contains(&program))
    }

    /// `ingress` or `egress` (as events, stats and metrics label it).
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The direction's two policy tables (selector value 0, 1).
    pub fn policy_tables(self) -> [&'static str; 2] {
        match self {
            Direction::Ingress => ["ep_pol_in_a", "ep_pol_in_b"],
            Direction::Egress => ["ep_pol_eg_a", "ep_pol_eg_b"],
        }
    }

    /// The array index of each of [`Direction::policy_tables`]: by
    /// identity, the rows of its `protocol` entries.
    pub fn policy_indexes(self) -> [&'static str; 2] {
        match self {
            Direction::Ingress => ["ep_pol_in_a_idx", "ep_pol_in_b_idx"],
            Direction::Egress => ["ep_pol_eg_a_idx", "ep_pol_eg_b_idx"],
        }
    }

    /// The rows (an array of policy values) of each of [`Direction::policy_tables`].
    pub fn policy_rows(self) -> [&'static str; 2] {
        match self {
            Direction::Ingress => ["ep_pol_in_a_row", "ep_pol_in_b_row"],
            Direction::Egress => ["ep_pol_eg_a_row", "ep_pol_eg_b_row"],
        }
    }

    fn from_u8(value: u8) -> Option<Direction> {
        match value {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }
}

/// Tail calls: (prog array, slot, target program). One prog array per
/// direction; IPv4 is decided in the entry program, IPv6 in slot 1 (slot 0
/// is unused).
pub const TAIL_CALLS: [(&str, u32, &str); 2] = [("ep_calls_eg", 1, "from_ep_v6"), ("ep_calls_in", 1, "to_ep_v6")];

/// Why a packet got its verdict (`enum reason` in common.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    PolicyAllow = 1,
    NotEnforced = 2,
    Established = 3,
    Reply = 4,
    Arp = 5,
    Neighbour = 6,
    PolicyDeny = 64,
    DefaultDeny = 65,
    Truncated = 66,
    Invalid = 67,
    Fragment = 68,
    UnknownL3 = 69,
    NoTailCall = 70,
}

impl Reason {
    pub fn from_u8(value: u8) -> Option<Reason> {
        use Reason::*;
        [
            PolicyAllow,
            NotEnforced,
            Established,
            Reply,
            Arp,
            Neighbour,
            PolicyDeny,
            DefaultDeny,
            Truncated,
            Invalid,
            Fragment,
            UnknownL3,
            NoTailCall,
        ]
        .into_iter()
        .find(|r| *r as u8 == value)
    }

    /// The name DATAPATH.md uses (`policy-deny`, `default-deny`, ...): the
    /// `reason` of events, stats and metrics.
    pub fn name(self) -> &'static str {
        use Reason::*;
        match self {
            PolicyAllow => "policy-allow",
            NotEnforced => "not-enforced",
            Established => "established",
            Reply => "reply",
            Arp => "arp",
            Neighbour => "neighbour",
            PolicyDeny => "policy-deny",
            DefaultDeny => "default-deny",
            Truncated => "truncated",
            Invalid => "invalid",
            Fragment => "fragment",
            UnknownL3 => "unknown-l3",
            NoTailCall => "no-tail-call",
        }
    }

    /// Every reason, in their dense order.
    pub fn all() -> [Reason; 13] {
        REASONS_DENSE
    }

    pub fn is_drop(self) -> bool {
        self as u8 >= 64
    }

    /// The tc action the program returns for this reason.
    pub fn tc_action(self) -> u32 {
        const TC_ACT_OK: u32 = 0;
        const TC_ACT_SHOT: u32 = 2;
        if self.is_drop() {
            TC_ACT_SHOT
        } else {
            TC_ACT_OK
        }
    }
}

/// `struct policy_key` (8 bytes): {identity, proto, kind, bucket}, host order.
pub fn policy_key(entry: &PolicyEntry) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[0..4].copy_from_slice(&entry.identity.to_ne_bytes());
    key[4] = entry.proto;
    key[5] = entry.kind as u8;
    key[6..8].copy_from_slice(&entry.bucket.to_ne_bytes());
    key
}

/// `POLICY_SPLIT` in policy.h.
const POLICY_SPLIT: u8 = 0x01;
const POLICY_VALUE_SIZE: usize = 4 + INLINE_INTERVALS * (2 + 2 + 8);

/// `struct policy_value` (196 bytes): count, flags, then the intervals'
/// low bounds, high bounds and decisions {rule, slot, action}. Intervals
/// past [`INLINE_INTERVALS`] are not written (the build never makes any).
pub fn policy_value(entry: &PolicyEntry) -> Vec<u8> {
    let mut value = vec![0u8; POLICY_VALUE_SIZE];
    let intervals = &entry.intervals[..entry.intervals.len().min(INLINE_INTERVALS)];
    value[0] = intervals.len() as u8;
    value[1] = if entry.split { POLICY_SPLIT } else { 0 };
    let (lows, highs, decisions) = (4, 4 + 2 * INLINE_INTERVALS, 4 + 4 * INLINE_INTERVALS);
    for (i, interval) in intervals.iter().enumerate() {
        value[lows + 2 * i..lows + 2 * i + 2].copy_from_slice(&interval.low.to_ne_bytes());
        value[highs + 2 * i..highs + 2 * i + 2].copy_from_slice(&interval.high.to_ne_bytes());
        let at = decisions + 8 * i;
        value[at..at + 4].copy_from_slice(&interval.rule.to_ne_bytes());
        value[at + 4..at + 6].copy_from_slice(&interval.slot.to_ne_bytes());
        value[at + 6] = interval.action as u8;
    }
    value
}

/// `struct policy_index_value` (16 bytes): a row number per protocol slot.
pub fn policy_index_value(rows: &[u16; INDEX_SLOTS]) -> [u8; 2 * INDEX_SLOTS] {
    let mut value = [0u8; 2 * INDEX_SLOTS];
    for (bytes, row) in value.chunks_exact_mut(2).zip(rows) {
        bytes.copy_from_slice(&row.to_ne_bytes());
    }
    value
}

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// `struct ipcache_key` (24 bytes) for a prefix.
pub fn ipcache_key(addr: IpAddr, prefix_len: u8) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[0..4].copy_from_slice(&(32 + u32::from(prefix_len)).to_ne_bytes());
    match addr {
        IpAddr::V4(a) => {
            key[4] = AF_INET;
            key[8..12].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            key[4] = AF_INET6;
            key[8..24].copy_from_slice(&a.octets());
        }
    }
    key
}

/// The host map for `addr`'s family.
pub fn ipcache_host_map(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => IPCACHE_HOST4_MAP,
        IpAddr::V6(_) => IPCACHE_HOST6_MAP,
    }
}

/// The host map's key: the bare address in network order (4 or 16 bytes,
/// `__be32` and `struct ipcache_host6_key` in ipcache.h).
pub fn ipcache_host_key(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `struct ipcache_value`.
pub fn ipcache_value(identity: u32) -> [u8; 4] {
    identity.to_ne_bytes()
}

/// `struct verdict_event` as read from the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictEvent {
    pub endpoint: u32,
    pub rule: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub reason: Reason,
    pub direction: Direction,
    pub proto: u8,
}

impl VerdictEvent {
    pub const SIZE: usize = 56;

    /// `None` for a record that is not a verdict event of this layout.
    pub fn parse(raw: &[u8]) -> Option<VerdictEvent> {
        if raw.len() < Self::SIZE {
            return None;
        }
        let u32_at = |at: usize| u32::from_ne_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let family = raw[54];
        let addr = |at: usize| -> Option<IpAddr> {
            let bytes: [u8; 16] = raw[at..at + 16].try_into().ok()?;
            match family {
                AF_INET => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
                AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
                // Dropped before the IP header was read.
                _ => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            }
        };
        Some(VerdictEvent {
            endpoint: u32_at(0),
            rule: u32_at(4),
            src_identity: u32_at(8),
            dst_identity: u32_at(12),
            saddr: addr(16)?,
            daddr: addr(32)?,
            sport: u16::from_be_bytes([raw[48], raw[49]]),
            dport: u16::from_be_bytes([raw[50], raw[51]]),
            reason: Reason::from_u8(raw[52])?,
            direction: Direction::from_u8(raw[53])?,
            proto: raw[55],
        })
    }
}

/// One counter: per rule, reason and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricsKey {
    pub rule: u32,
    pub reason: Reason,
    pub direction: Direction,
}

/// Reasons in their dense order (`reason_index` in common.h).
const REASONS_DENSE: [Reason; 13] = [
    Reason::PolicyAllow,
    Reason::NotEnforced,
    Reason::Established,
    Reason::Reply,
    Reason::Arp,
    Reason::Neighbour,
    Reason::PolicyDeny,
    Reason::DefaultDeny,
    Reason::Truncated,
    Reason::Invalid,
    Reason::Fragment,
    Reason::UnknownL3,
    Reason::NoTailCall,
];

impl MetricsKey {
    /// The counter at `index` of `ep_metrics`: (slot * 13 + reason) * 2 +
    /// direction; `rule_slots[s - 1]` is the rule of slot `s`. A slot no
    /// rule has (0 in `rule_slots`, or past its end: a removed rule's
    /// connections still count there) counts for no rule.
    pub fn from_index(index: u32, rule_slots: &[u32]) -> Option<MetricsKey> {
        let direction = Direction::from_u8((index % 2) as u8)?;
        let reason = *REASONS_DENSE.get(((index / 2) % 13) as usize)?;
        let slot = (index / 26) as usize;
        let rule = if slot == 0 { 0 } else { rule_slots.get(slot - 1).copied().unwrap_or(0) };
        Some(MetricsKey { rule, reason, direction })
    }
}

/// `struct metrics_value`, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    pub fn parse(raw: &[u8]) -> Option<Counter> {
        let u64_at = |at: usize| -> Option<u64> { Some(u64::from_ne_bytes(raw.get(at..at + 8)?.try_into().ok()?)) };
        Some(Counter { packets: u64_at(0)?, bytes: u64_at(8)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_c_layout() {
        use polc::codegen::entries::{EntryAction, EntryInterval, EntryKind};
        let interval = EntryInterval { low: 80, high: 90, action: EntryAction::Deny, rule: 7, slot: 3 };
        let entry = PolicyEntry {
            identity: 0x0102_0304,
            proto: 6,
            kind: EntryKind::Bucket16,
            bucket: 0x1f9,
            split: true,
            intervals: vec![interval; 2],
        };
        let key = policy_key(&entry);
        assert_eq!(&key[..4], &0x0102_0304u32.to_ne_bytes());
        assert_eq!(&key[4..], &[6, 2, 0x1f9u16.to_ne_bytes()[0], 0x1f9u16.to_ne_bytes()[1]]);
        let value = policy_value(&entry);
        assert_eq!((value.len(), value[0], value[1]), (196, 2, 1));
        assert_eq!(&value[4..8], &[80u16.to_ne_bytes(), 80u16.to_ne_bytes()].concat()[..]);
        assert_eq!(&value[36..38], &90u16.to_ne_bytes());
        assert_eq!(&value[68..76], &[&7u32.to_ne_bytes()[..], &3u16.to_ne_bytes()[..], &[2, 0]].concat()[..]);
        assert_eq!(&value[76..84], &value[68..76]);
        assert!(value[84..].iter().all(|b| *b == 0));
        let key = ipcache_key("10.1.2.3".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 24);
        assert_eq!(u32::from_ne_bytes([key[0], key[1], key[2], key[3]]), 56);
        assert_eq!(&key[4..12], &[AF_INET, 0, 0, 0, 10, 1, 2, 3]);
    }

    #[test]
    fn counter_indexes_decode() {
        let slots = [7, 40];
        let key = |rule, reason, direction| Some(MetricsKey { rule, reason, direction });
        assert_eq!(MetricsKey::from_index(0, &slots), key(0, Reason::PolicyAllow, Direction::Ingress));
        assert_eq!(
            MetricsKey::from_index((2 * 13 + 6) * 2 + 1, &slots),
            key(40, Reason::PolicyDeny, Direction::Egress)
        );
        assert_eq!(
            MetricsKey::from_index(3 * 26, &slots),
            key(0, Reason::PolicyAllow, Direction::Ingress),
            "no slot 3"
        );
    }

    #[test]
    fn reasons_round_trip_and_split_at_drop() {
        for value in 0..=255u8 {
            if let Some(reason) = Reason::from_u8(value) {
                assert_eq!(reason as u8, value);
                assert_eq!(reason.is_drop(), value >= 64);
            }
        }
        assert_eq!(Reason::from_u8(7), None);
    }
}
