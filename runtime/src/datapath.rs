//! The binary interface of the BPF datapath in `templates/bpf/`: map and
//! program names, key and value layouts, verdict reasons, the event record.
//! Every layout here mirrors a C struct named in its doc comment; keep both
//! in step.

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
    /// direction is not enforced): an outer map whose slot
    /// [`POLICY_TABLE_SLOT`] holds the table the program reads.
    pub fn policy_map(self) -> &'static str {
        match self {
            Direction::Ingress => "ep_pol_in",
            Direction::Egress => "ep_pol_eg",
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

/// The one slot of a policy map (`POLICY_TABLE_SLOT` in policy.h).
pub const POLICY_TABLE_SLOT: u32 = 0;

/// Tail calls: (prog array, slot, target program). One prog array per
/// direction, one slot per address family.
pub const TAIL_CALLS: [(&str, u32, &str); 4] = [
    ("ep_calls_eg", 0, "from_ep_v4"),
    ("ep_calls_eg", 1, "from_ep_v6"),
    ("ep_calls_in", 0, "to_ep_v4"),
    ("ep_calls_in", 1, "to_ep_v6"),
];

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

/// Policy entry action (`POLICY_*` in policy.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    /// The entry exists to say "this identity or protocol has a table; no
    /// rule matches here" (default deny).
    NoMatch = 0,
    Allow = 1,
    Deny = 2,
}

/// `struct policy_key` (12 bytes): prefix length over 64 data bits
/// {identity BE, proto, 0, port BE}.
pub fn policy_key(prefix_len: u32, identity: u32, proto: u8, port: u16) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[0..4].copy_from_slice(&prefix_len.to_ne_bytes());
    key[4..8].copy_from_slice(&identity.to_be_bytes());
    key[8] = proto;
    key[10..12].copy_from_slice(&port.to_be_bytes());
    key
}

/// `struct policy_value` (8 bytes): rule id, action, the rule's counter slot.
pub fn policy_value(action: PolicyAction, rule: u32, slot: u16) -> [u8; 8] {
    let mut value = [0u8; 8];
    value[0..4].copy_from_slice(&rule.to_ne_bytes());
    value[4] = action as u8;
    value[6..8].copy_from_slice(&slot.to_ne_bytes());
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
    /// direction; `rule_slots[s - 1]` is the rule of slot `s`.
    pub fn from_index(index: u32, rule_slots: &[u32]) -> Option<MetricsKey> {
        let direction = Direction::from_u8((index % 2) as u8)?;
        let reason = *REASONS_DENSE.get(((index / 2) % 13) as usize)?;
        let slot = (index / 26) as usize;
        let rule = if slot == 0 { 0 } else { *rule_slots.get(slot - 1)? };
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
        let key = policy_key(56, 0x0102_0304, 6, 0x1f90);
        assert_eq!(&key[4..12], &[1, 2, 3, 4, 6, 0, 0x1f, 0x90]);
        assert_eq!(u32::from_ne_bytes([key[0], key[1], key[2], key[3]]), 56);
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
        assert_eq!(MetricsKey::from_index(3 * 26, &slots), None, "no slot 3");
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
