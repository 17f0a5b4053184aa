//! Per-packet verdict cost of the datapath, BPF_PROG_TEST_RUN with 1e6
//! repeats, for an endpoint with 10 rules and one with 10,000, loaded side
//! by side and measured alternately in one run. Needs root; run with
//! `cargo bench --bench datapath` (see BENCHMARKS.md).
//!
//! The headline packet is a new TCP connection the policy denies by default: every
//! repeat parses, misses conntrack, resolves the peer in the ipcache and
//! looks up the policy table (an allowed packet would be "established" from
//! the second repeat on). The ipcache is the same for both endpoints.

// The test support is shared with tests/datapath; the benchmark uses part of it.
#![allow(dead_code)]
#![allow(clippy::panic)] // tests report failures by panicking
#[path = "../tests/datapath/harness.rs"]
mod harness;
#[path = "../tests/datapath/packets.rs"]
mod packets;

use harness::{endpoint_addresses, load_case_on, node_config, require_bpf, Case, Compile};
use packets::{build, PacketSpec, TCP, UDP};
use polc::codegen::header::{BuildOptions, EndpointConstants};
use polc::ir::{Decision, DirectionTable, EndpointPolicy, Identity, L4Table, PeerKey, PortEntry, Resolved};
use polc::sema::model::RuleId;
use polc::syntax::ast::Action;
use polc_runtime::datapath::Direction;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

const PEERS: u32 = 1000;
const PORTS_PER_PEER: u16 = 10;
const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 7;

fn peer_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i)
}

/// `rules` allow rules: 10 TCP ports for each of `rules / 10` peer identities.
fn endpoint_with_rules(rules: u32, n: u32) -> Case {
    let mut tables = BTreeMap::new();
    for peer in 0..rules / u32::from(PORTS_PER_PEER) {
        let mut l4 = L4Table::default();
        let entries = (0..PORTS_PER_PEER)
            .map(|i| {
                let port = 1000 + i * 100;
                let rule = RuleId(1 + peer * u32::from(PORTS_PER_PEER) + u32::from(i));
                PortEntry { low: port, high: port + 9, decision: Decision { action: Action::Allow, rule } }
            })
            .collect();
        l4.protocols.insert(TCP, entries);
        tables.insert(PeerKey::Identity(Identity(Identity::FIRST_ENDPOINT + peer)), l4);
    }
    let egress = DirectionTable { enforced: true, enforced_by: vec![], tables };
    let policy = EndpointPolicy {
        name: format!("bench{rules}"),
        identity: Identity(5000 + n),
        ingress: DirectionTable::default(),
        egress,
    };
    let ipcache = (0..PEERS)
        .map(|i| (ipnet::IpNet::from(IpAddr::V4(peer_addr(i))), Identity(Identity::FIRST_ENDPOINT + i)))
        .collect();
    let constants = EndpointConstants {
        name: policy.name.clone(),
        identity: policy.identity.0,
        id: 100 + n,
        trace_level: 0,
        addresses: endpoint_addresses(),
    };
    Case { resolved: Resolved { ipcache, ..Resolved::default() }, policy, constants }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    if !require_bpf("datapath benchmark") {
        return;
    }
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let options = BuildOptions { events: false, trace_level: 0 };
    let mut node = node_config();
    node.sizes.policy = 65536;
    let sizes = [10u32, 10_000];
    let loaded: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(n, &rules)| {
            let case = endpoint_with_rules(rules, n as u32);
            let pins = format!("bench-{}-{rules}", std::process::id());
            load_case_on(cache.path(), &node, &case, Compile::Shape, &pins, &options)
        })
        .collect();
    let to_peer = |peer, proto, dport| {
        let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        build(&PacketSpec::opening(src, IpAddr::V4(peer_addr(peer)), proto, 40000, dport))
    };
    let mut arp = packets::ethernet(0x0806);
    arp.extend([0u8; 28]);
    // Peer 0 has a table in both endpoints: port 80 is in none of its
    // intervals (the headline figure), port 1000 is allowed and tracked.
    // Peer 999 (identity 1255) is past the policy tables' array index (see
    // templates/bpf/policy.h): its table is found in the hash.
    let workloads = [
        ("new connection, denied", to_peer(0, TCP, 80), 2),
        ("established (conntrack hit)", to_peer(0, TCP, 1000), 0),
        ("new UDP flow, denied", to_peer(0, UDP, 80), 2),
        ("new conn., denied, peer in hash", to_peer(PEERS - 1, TCP, 80), 2),
        ("ARP (entry program + counter)", arp, 0),
    ];
    for (label, packet, expected) in &workloads {
        measure(&loaded, &sizes, label, packet, *expected);
    }
}

fn measure(loaded: &[harness::Loaded], sizes: &[u32], label: &str, packet: &[u8], expected: u32) {
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for _ in 0..ROUNDS {
        for (i, l) in loaded.iter().enumerate() {
            let (action, per_run) = l
                .endpoint
                .run_repeated(Direction::Egress.entry_program(), packet, REPEAT)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(action, expected, "{label}: tc action");
            samples[i].push(per_run.as_nanos() as f64);
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    for (rules, ns) in sizes.iter().zip(&medians) {
        println!("{label:<32} {rules:>6} rules: {ns:6.1} ns/packet (median of {ROUNDS} x {REPEAT} repeats)");
    }
    println!("{label:<32} ratio 10,000 / 10 rules: {:.2}", medians[1] / medians[0]);
}
