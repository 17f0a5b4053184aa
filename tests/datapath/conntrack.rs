//! Conntrack and tail calls on the kernel, step by step: a connection's
//! lifetime, TCP close, expiry, and a missing tail call.

use crate::harness::{endpoint_addresses, load_case_on, node_config, require_bpf, Case, Compile, Loaded};
use crate::packets::{build, PacketSpec, TCP, TCP_ACK, TCP_FIN, TCP_SYN};
use polc::codegen::header::{BuildOptions, EndpointConstants};
use polc::ir::{Decision, DirectionTable, EndpointPolicy, Identity, L4Table, PeerKey, PortEntry, Resolved};
use polc::sema::model::RuleId;
use polc::syntax::ast::Action;
use polc_runtime::datapath::{Direction, Reason, CONNTRACK4_MAP};
use polc_runtime::loader::LoadedEndpoint;
use polc_runtime::seam::EndpointMaps;
use std::collections::BTreeMap;
use std::net::IpAddr;

const RULE: u32 = 7;

/// Egress may open TCP to port 80; ingress denies everything.
fn web_client() -> Case {
    let mut any = L4Table::default();
    let allow = Decision { action: Action::Allow, rule: RuleId(RULE) };
    any.protocols.insert(TCP, vec![PortEntry { low: 80, high: 80, decision: allow }]);
    let egress = DirectionTable { enforced: true, enforced_by: vec![], tables: BTreeMap::from([(PeerKey::Any, any)]) };
    let ingress = DirectionTable { enforced: true, ..DirectionTable::default() };
    let policy = EndpointPolicy { name: "client".into(), identity: Identity(300), ingress, egress };
    let constants = EndpointConstants {
        name: "client".into(),
        identity: 300,
        id: 1,
        trace_level: 2,
        addresses: endpoint_addresses(),
    };
    Case { resolved: Resolved::default(), policy, constants }
}

fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> PacketSpec {
    PacketSpec {
        src,
        dst,
        proto: TCP,
        sport,
        dport,
        icmp_type: 0,
        icmp_id: 0,
        tcp_flags: flags,
        ipv4_options: 0,
        ipv4_frag: 0,
        ipv6_ext: Vec::new(),
        payload: 0,
    }
}

fn reason_of(loaded: &Loaded, direction: Direction, spec: &PacketSpec) -> (Reason, u32) {
    loaded.endpoint.run(direction.entry_program(), &build(spec)).unwrap_or_else(|e| panic!("{e}"));
    let got = loaded.drain_events();
    assert_eq!(got.len(), 1);
    (got[0].reason, got[0].rule)
}

/// `struct ct_key4` of conntrack.h for an IPv4 TCP connection opened by
/// egress, whose source end sorts first (so the key is in its orientation).
fn ct_key(spec: &PacketSpec) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (spec.src, spec.dst) else { panic!("ct_key: IPv4 only") };
    assert!((src, spec.sport) < (dst, spec.dport), "the test's tuple is in canonical orientation");
    let mut key = vec![0u8; 16];
    key[0..4].copy_from_slice(&src.octets());
    key[4..8].copy_from_slice(&dst.octets());
    key[8..10].copy_from_slice(&spec.sport.to_be_bytes());
    key[10..12].copy_from_slice(&spec.dport.to_be_bytes());
    key[12] = TCP;
    key[13] = Direction::Egress as u8;
    key
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// (seconds until expiry, flags) of the entry.
fn ct_entry(endpoint: &LoadedEndpoint, key: &[u8]) -> Option<(i64, u8)> {
    let value = endpoint.lookup(CONNTRACK4_MAP, key).unwrap_or_else(|e| panic!("{e}"))?;
    let expires = u64::from_ne_bytes(value[0..8].try_into().unwrap_or([0; 8]));
    Some(((expires as i64 - monotonic_ns() as i64) / 1_000_000_000, value[12]))
}

#[test]
fn connections_close_expire_and_replies_pass() {
    if !require_bpf("connections_close_expire_and_replies_pass") {
        return;
    }
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let node = polc::codegen::header::NodeConfig {
        conntrack: polc::codegen::header::ConntrackLifetimes { tcp: 3000, non_tcp: 60, close: 10 },
        ..node_config()
    };
    let case = web_client();
    let options = BuildOptions { events: true, trace_level: 2 };
    let pins = format!("test-{}-conntrack", std::process::id());
    let loaded = load_case_on(cache.path(), &node, &case, Compile::Shape, &pins, &options);
    let ep = &loaded.endpoint;
    let (me, peer): (IpAddr, IpAddr) =
        ("10.0.0.1".parse().unwrap_or(IpAddr::from([0; 4])), "192.0.2.9".parse().unwrap_or(IpAddr::from([0; 4])));

    let syn = tcp(me, peer, 40000, 80, TCP_SYN);
    let syn_ack = tcp(peer, me, 80, 40000, TCP_SYN | TCP_ACK);
    // Ingress denies everything: only as a reply does the SYN-ACK pass.
    assert_eq!(reason_of(&loaded, Direction::Ingress, &syn_ack), (Reason::DefaultDeny, 0));
    assert_eq!(reason_of(&loaded, Direction::Egress, &syn), (Reason::PolicyAllow, RULE));
    assert_eq!(reason_of(&loaded, Direction::Ingress, &syn_ack), (Reason::Reply, RULE));
    assert_eq!(reason_of(&loaded, Direction::Egress, &tcp(me, peer, 40000, 80, TCP_ACK)), (Reason::Established, RULE));
    let key = ct_key(&syn);
    let (lifetime, flags) = ct_entry(ep, &key).unwrap_or_else(|| panic!("no conntrack entry"));
    assert!((2990..=3000).contains(&lifetime) && flags == 0, "open: {lifetime}s, flags {flags}");

    // FIN from both sides closes: the entry lives the close timeout, no more.
    assert_eq!(
        reason_of(&loaded, Direction::Egress, &tcp(me, peer, 40000, 80, TCP_FIN | TCP_ACK)),
        (Reason::Established, RULE)
    );
    assert!(ct_entry(ep, &key).is_some_and(|(l, f)| l > 2990 && f == 0x01), "half closed");
    assert_eq!(
        reason_of(&loaded, Direction::Ingress, &tcp(peer, me, 80, 40000, TCP_FIN | TCP_ACK)),
        (Reason::Reply, RULE)
    );
    let (lifetime, flags) = ct_entry(ep, &key).unwrap_or_else(|| panic!("entry gone too early"));
    assert!(lifetime <= 10 && flags & 0x04 != 0, "closed: {lifetime}s, flags {flags}");
    // The last ACK still passes within the close timeout.
    assert_eq!(reason_of(&loaded, Direction::Ingress, &tcp(peer, me, 80, 40000, TCP_ACK)), (Reason::Reply, RULE));

    // Expired: the entry is deleted when found and the packet is new again.
    let mut value = ep.lookup(CONNTRACK4_MAP, &key).ok().flatten().unwrap_or_default();
    value[0..8].copy_from_slice(&1u64.to_ne_bytes());
    ep.update(CONNTRACK4_MAP, &key, &value).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reason_of(&loaded, Direction::Ingress, &tcp(peer, me, 80, 40000, TCP_ACK)), (Reason::DefaultDeny, 0));
    assert_eq!(ct_entry(ep, &key), None);

    // Without its tail call target (IPv6, slot 1; IPv4 is decided in the
    // entry program) the packet is dropped, never passed.
    let (me6, peer6): (IpAddr, IpAddr) =
        ("fd00::1".parse().unwrap_or(IpAddr::from([0; 4])), "2001:db8::9".parse().unwrap_or(IpAddr::from([0; 4])));
    let syn6 = tcp(me6, peer6, 40000, 80, TCP_SYN);
    assert_eq!(reason_of(&loaded, Direction::Egress, &syn6), (Reason::PolicyAllow, RULE));
    ep.delete("ep_calls_eg", &1u32.to_ne_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reason_of(&loaded, Direction::Egress, &tcp(me6, peer6, 40001, 80, TCP_SYN)), (Reason::NoTailCall, 0));
    assert_eq!(reason_of(&loaded, Direction::Egress, &tcp(me, peer, 40001, 80, TCP_SYN)), (Reason::PolicyAllow, RULE));
}

/// A tuple that reads the same both ways (the endpoint to itself, port 80 at
/// both ends) has no canonical orientation: its reply is still found.
#[test]
fn a_symmetric_tuple_still_has_replies() {
    if !require_bpf("a_symmetric_tuple_still_has_replies") {
        return;
    }
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let case = web_client();
    let options = BuildOptions { events: true, trace_level: 2 };
    let pins = format!("test-{}-ct-symmetric", std::process::id());
    let loaded = load_case_on(cache.path(), &node_config(), &case, Compile::Shape, &pins, &options);
    let me: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]));
    let packet = |flags| tcp(me, me, 80, 80, flags);

    // Ingress denies everything, so only the connection makes this pass.
    assert_eq!(reason_of(&loaded, Direction::Ingress, &packet(TCP_SYN)), (Reason::DefaultDeny, 0));
    assert_eq!(reason_of(&loaded, Direction::Egress, &packet(TCP_SYN)), (Reason::PolicyAllow, RULE));
    assert_eq!(reason_of(&loaded, Direction::Ingress, &packet(TCP_SYN | TCP_ACK)), (Reason::Reply, RULE));
    assert_eq!(reason_of(&loaded, Direction::Egress, &packet(TCP_ACK)), (Reason::Established, RULE));
}
