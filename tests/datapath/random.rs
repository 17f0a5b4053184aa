//! Seeded random inputs: identities, an ipcache, IR direction tables and
//! packets (well-formed, replies, repeats, malformed).

use crate::packets::{Ext, PacketSpec, ICMP, ICMPV6, SCTP, TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, UDP};
use polc::ir::{Decision, DirectionTable, Identity, L4Table, PeerKey, PortEntry};
use polc::sema::model::RuleId;
use polc::syntax::ast::Action;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// splitmix64: small, seeded, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// The identities a case draws from: reserved, endpoint and CIDR ones.
pub fn identity_pool(rng: &mut Rng) -> Vec<Identity> {
    let mut pool = vec![Identity::HOST, Identity::WORLD, Identity::WORLD_IPV4, Identity::WORLD_IPV6, Identity::HEALTH];
    for _ in 0..(2 + rng.below(6)) {
        pool.push(Identity(Identity::FIRST_ENDPOINT + rng.below(40) as u32));
    }
    for _ in 0..rng.below(3) {
        pool.push(Identity(Identity::FIRST_CIDR + rng.below(10) as u32));
    }
    pool.sort();
    pool.dedup();
    pool
}

/// Peers live in 10.0.0.0/16 and fd00::/112 so prefixes overlap often.
fn random_addr(rng: &mut Rng, v6: bool) -> IpAddr {
    let host = rng.below(1 << 16) as u16;
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, rng.pick(&[0, 0, 0, 1]), host))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, rng.pick(&[0, 0, 0, 1]), (host >> 8) as u8, host as u8))
    }
}

pub fn random_ipcache(rng: &mut Rng, pool: &[Identity]) -> Vec<(ipnet::IpNet, Identity)> {
    let mut out: Vec<(ipnet::IpNet, Identity)> = Vec::new();
    for _ in 0..(1 + rng.below(12)) {
        let v6 = rng.chance(50);
        let addr = random_addr(rng, v6);
        let len = if v6 {
            rng.pick(&[0, 96, 104, 112, 120, 124, 127, 128])
        } else {
            rng.pick(&[0, 8, 16, 20, 24, 28, 31, 32])
        };
        let Ok(net) = ipnet::IpNet::new(addr, len) else { continue };
        let net = net.trunc();
        if out.iter().any(|(n, _)| *n == net) {
            continue;
        }
        out.push((net, rng.pick(pool)));
    }
    out
}

/// An address for a peer: mostly inside some ipcache prefix.
pub fn peer_addr(rng: &mut Rng, ipcache: &[(ipnet::IpNet, Identity)], v6: bool) -> IpAddr {
    let inside: Vec<&ipnet::IpNet> =
        ipcache.iter().map(|(n, _)| n).filter(|n| matches!(n, ipnet::IpNet::V6(_)) == v6).collect();
    if inside.is_empty() || rng.chance(20) {
        return random_addr(rng, v6);
    }
    let net = inside[rng.below(inside.len())];
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len()).min(16);
    let offset = rng.next() & ((1u64 << host_bits) - 1);
    match net {
        ipnet::IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | offset as u32)),
        ipnet::IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | u128::from(offset))),
    }
}

/// Ports and ICMP types the tables and packets share, so both hit edges.
const EDGE_PORTS: [u16; 16] = [0, 1, 2, 7, 8, 53, 79, 80, 81, 128, 129, 443, 1024, 8080, 65534, 65535];

fn random_port(rng: &mut Rng) -> u16 {
    if rng.chance(70) {
        rng.pick(&EDGE_PORTS)
    } else {
        rng.below(1 << 16) as u16
    }
}

fn random_decision(rng: &mut Rng) -> Decision {
    let action = if rng.chance(35) { Action::Deny } else { Action::Allow };
    Decision { action, rule: RuleId(1 + rng.below(60) as u32) }
}

fn random_intervals(rng: &mut Rng) -> Vec<PortEntry> {
    if rng.chance(6) {
        return dense_intervals(rng);
    }
    let mut cuts: Vec<u16> = (0..rng.below(7) * 2).map(|_| random_port(rng)).collect();
    if rng.chance(15) {
        cuts = vec![0, 65535];
    }
    cuts.sort();
    cuts.dedup();
    let mut out = Vec::new();
    for pair in cuts.chunks(2) {
        let (low, high) = (pair[0], *pair.get(1).unwrap_or(&pair[0]));
        out.push(PortEntry { low, high, decision: random_decision(rng) });
    }
    out
}

/// More intervals than one policy map value holds (16), packed closely, so
/// the datapath looks them up through its 256- and 16-port buckets.
fn dense_intervals(rng: &mut Rng) -> Vec<PortEntry> {
    let mut out = Vec::new();
    let mut low = u32::from(random_port(rng)).min(60_000);
    for _ in 0..17 + rng.below(300) {
        let high = low + rng.below(3) as u32;
        if high > 65535 {
            break;
        }
        out.push(PortEntry { low: low as u16, high: high as u16, decision: random_decision(rng) });
        low = high + 1 + rng.below(3) as u32;
    }
    out
}

fn random_l4(rng: &mut Rng) -> L4Table {
    let mut table = L4Table::default();
    for proto in [TCP, UDP, SCTP, ICMP, ICMPV6, 47, 50] {
        if rng.chance(45) {
            table.protocols.insert(proto, random_intervals(rng));
        }
    }
    if rng.chance(40) {
        table.other = Some(random_decision(rng));
    }
    table
}

pub fn random_direction(rng: &mut Rng, pool: &[Identity]) -> DirectionTable {
    let mut table = DirectionTable { enforced: rng.chance(85), ..DirectionTable::default() };
    if !table.enforced {
        return table;
    }
    table.enforced_by.push("random".to_string());
    if rng.chance(65) {
        table.tables.insert(PeerKey::Any, random_l4(rng));
    }
    for _ in 0..rng.below(5) {
        table.tables.insert(PeerKey::Identity(rng.pick(pool)), random_l4(rng));
    }
    table
}

/// A fresh packet between the endpoint and a peer, in one direction.
/// `hot_ports`: interval bounds of the endpoint's tables, so packets hit its rules' edges.
pub fn random_packet(
    rng: &mut Rng,
    endpoint: (IpAddr, IpAddr),
    peer: IpAddr,
    from_endpoint: bool,
    hot_ports: &[u16],
) -> PacketSpec {
    let v6 = peer.is_ipv6();
    let own = if v6 { endpoint.1 } else { endpoint.0 };
    let proto = match rng.below(10) {
        0..=2 => TCP,
        3..=4 => UDP,
        5 => SCTP,
        6..=7 => {
            if v6 {
                ICMPV6
            } else {
                ICMP
            }
        }
        _ => rng.pick(&[47, 50, 0x11 + 100, 255]),
    };
    let (src, dst) = if from_endpoint { (own, peer) } else { (peer, own) };
    let icmp_types: &[u8] = if v6 { &[128, 129, 1, 2, 133, 135, 137, 138, 200] } else { &[8, 0, 3, 11, 5, 128] };
    let mut ipv6_ext = Vec::new();
    if v6 && rng.chance(15) {
        for _ in 0..(1 + rng.below(3)) {
            ipv6_ext.push(if rng.chance(25) {
                Ext::Fragment(0)
            } else {
                Ext::Options(rng.pick(&[0, 43, 60]), rng.below(3) as u8)
            });
        }
    }
    let dport = if !hot_ports.is_empty() && rng.chance(50) { rng.pick(hot_ports) } else { random_port(rng) };
    PacketSpec {
        src,
        dst,
        proto,
        sport: random_port(rng),
        dport,
        icmp_type: if !hot_ports.is_empty() && rng.chance(30) {
            rng.pick(hot_ports) as u8
        } else {
            rng.pick(icmp_types)
        },
        icmp_id: rng.below(4) as u16,
        tcp_flags: rng.pick(&[TCP_SYN, TCP_SYN, TCP_ACK, TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST]),
        ipv4_options: if rng.chance(10) { 1 + rng.below(3) as u8 } else { 0 },
        ipv4_frag: if rng.chance(5) { 0x2000 } else { 0 }, // a first fragment parses normally
        ipv6_ext,
        payload: rng.below(24),
    }
}

/// Breaks a packet in one of the ways the datapath must survive.
pub fn malform(rng: &mut Rng, spec: &mut PacketSpec, bytes: &mut Vec<u8>) {
    match rng.below(9) {
        0 | 1 => {
            // BPF_PROG_TEST_RUN refuses IP packets shorter than the base IP
            // header, so truncation starts after it (the program checks anyway).
            let min = if spec.dst.is_ipv6() { 54 } else { 34 };
            let len = min + rng.below(bytes.len() - min);
            bytes.truncate(len);
        }
        2 => bytes[14] = (bytes[14] & 0x0f) | 0x50, // wrong IP version
        3 if spec.dst.is_ipv4() => bytes[14] = 0x40 | rng.below(5) as u8, // IHL below 5
        3 | 4 if spec.dst.is_ipv6() => {
            spec.ipv6_ext = if rng.chance(50) {
                vec![Ext::Options(0, 0); 5] // one more than the parser follows
            } else {
                vec![Ext::Options(60, 1), Ext::Fragment(1 + rng.below(100) as u16)]
            };
            *bytes = crate::packets::build(spec);
        }
        4 => {
            spec.ipv4_frag = 1 + rng.below(0x1fff) as u16; // a later fragment
            *bytes = crate::packets::build(spec);
        }
        5 => bytes[12..14].copy_from_slice(&[0x88, 0xcc]), // LLDP: unknown L3
        6 => {
            *bytes = crate::packets::ethernet(0x0806);
            bytes.extend([0u8; 28]);
        }
        _ => {
            let at = 14 + rng.below(bytes.len() - 14);
            bytes[at] = rng.next() as u8;
        }
    }
}

/// Every interval bound (and its neighbours) in an endpoint's tables.
pub fn hot_ports(policy: &polc::ir::EndpointPolicy) -> Vec<u16> {
    let mut ports: Vec<u16> = [&policy.ingress, &policy.egress]
        .iter()
        .flat_map(|t| t.tables.values())
        .flat_map(|l4| l4.protocols.values().flatten())
        .flat_map(|e| [e.low.saturating_sub(1), e.low, e.high, e.high.saturating_add(1)])
        .collect();
    ports.sort();
    ports.dedup();
    ports
}
