//! The array index in front of the policy hash (templates/bpf/policy.h,
//! `polc::codegen::policy_index`) on the kernel: more own tables than the
//! index has rows (the rest are read from the hash), identities past the
//! index, and tables refilled by swaps, which must leave no index value of
//! their previous contents behind. Every verdict is compared with the IR's
//! `DirectionTable::lookup`.

use crate::harness::{endpoint_addresses, load_case, node_config, require_bpf, Case, Compile};
use crate::packets::{build, PacketSpec, TCP};
use polc::codegen::entries::direction_entries;
use polc::codegen::header::{BuildOptions, EndpointConstants};
use polc::codegen::policy_index::{INDEX_IDENTITIES, INDEX_ROWS};
use polc::ir::{
    Decision, DirectionTable, EndpointPolicy, Identity, L4Table, PeerKey, PortEntry, Resolved, TableVerdict,
};
use polc::sema::model::RuleId;
use polc::syntax::ast::Action;
use polc_runtime::datapath::Direction;
use polc_runtime::seam::fill_policy;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// Peers with an own table: more than the index has rows, and one past
/// the index.
fn own_peers() -> Vec<u32> {
    let endpoints = (0..u32::from(INDEX_ROWS) + 40).map(|i| Identity::FIRST_ENDPOINT + i);
    endpoints.chain([INDEX_IDENTITIES + 5]).collect()
}

/// tc actions.
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

/// A peer in the ipcache without an own table.
const PLAIN_PEER: u32 = 900;

fn peer_addr(identity: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 2, 0, 0)) + identity)
}

fn allow(low: u16, high: u16, rule: u32) -> Vec<PortEntry> {
    vec![PortEntry { low, high, decision: Decision { action: Action::Allow, rule: RuleId(rule) } }]
}

/// `any` allows tcp/22; with `own`, each of [`own_peers`] has a table of
/// its own allowing tcp/80 (so tcp/22 is not allowed to it).
fn egress(own: bool) -> DirectionTable {
    let mut tables = BTreeMap::new();
    let mut any = L4Table::default();
    any.protocols.insert(TCP, allow(22, 22, 1));
    tables.insert(PeerKey::Any, any);
    if own {
        for (n, identity) in own_peers().into_iter().enumerate() {
            let mut l4 = L4Table::default();
            l4.protocols.insert(TCP, allow(80, 80, 2 + n as u32));
            tables.insert(PeerKey::Identity(Identity(identity)), l4);
        }
    }
    DirectionTable { enforced: true, enforced_by: vec![], tables }
}

#[test]
fn the_policy_index_agrees_with_the_hash_across_rows_and_swaps() {
    if !require_bpf("the_policy_index_agrees_with_the_hash_across_rows_and_swaps") {
        return;
    }
    let policy = EndpointPolicy {
        name: "indexed".to_string(),
        identity: Identity(Identity::FIRST_ENDPOINT + 700),
        ingress: DirectionTable::default(),
        egress: egress(true),
    };
    let peers: Vec<u32> = own_peers().into_iter().chain([PLAIN_PEER]).collect();
    let ipcache = peers.iter().map(|&i| (ipnet::IpNet::from(IpAddr::V4(peer_addr(i))), Identity(i))).collect();
    let constants = EndpointConstants {
        name: policy.name.clone(),
        identity: policy.identity.0,
        id: 1,
        trace_level: 0,
        addresses: endpoint_addresses(),
    };
    let case = Case { resolved: Resolved { ipcache, ..Resolved::default() }, policy, constants };
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let options = BuildOptions { events: false, trace_level: 0 };
    let pins = format!("index-{}", std::process::id());
    assert!(node_config().sizes.policy as usize > own_peers().len());
    let loaded = load_case(cache.path(), &case, Compile::Shape, &pins, &options);

    // Every packet opens a new connection (a fresh source port).
    let sport = Cell::new(20000u16);
    let check = |table: &DirectionTable, what: &str| {
        for &peer in &peers {
            for dport in [22, 80] {
                sport.set(sport.get() + 1);
                let src = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
                let packet = build(&PacketSpec::opening(src, IpAddr::V4(peer_addr(peer)), TCP, sport.get(), dport));
                let expected = match table.lookup(Identity(peer), TCP, dport) {
                    TableVerdict::Decided { action: Action::Allow, .. } => TC_ACT_OK,
                    _ => TC_ACT_SHOT,
                };
                let got =
                    loaded.endpoint.run(Direction::Egress.entry_program(), &packet).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(got, expected, "{what}: peer {peer} tcp/{dport}");
            }
        }
    };
    check(&egress(true), "as built");
    // Each fill goes to the table the program does not read: the second
    // and third refill tables that held the other contents.
    for (n, own) in [false, false, true, true, false].into_iter().enumerate() {
        let table = egress(own);
        let entries = direction_entries("indexed", &table).unwrap_or_else(|e| panic!("{e}"));
        fill_policy(&loaded.endpoint, Direction::Egress, &entries).unwrap_or_else(|e| panic!("{e}"));
        check(&table, &format!("after swap {n} (own tables: {own})"));
    }
}
