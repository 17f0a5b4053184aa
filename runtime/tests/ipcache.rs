//! The node ipcache as polcd keeps it: a sync that fails half way (a full
//! map) leaves every entry as it was, and a polcd restarted after an
//! endpoint went away while it was down removes that endpoint's entry (its
//! address then serves a new endpoint with the new identity). Real kernel.
//! Needs root (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use polc::codegen::header::BuildOptions;
use polc_runtime::agent::build::NodeBuilder;
use polc_runtime::agent::node::{IpcacheEntry, NodeMaps};
use polc_runtime::datapath;
use polc_runtime::loader::all_cpus;
use polc_runtime::netlab::require_kernel;
use polc_runtime::swap::load_generation;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use support::{example_dir, resolve_dir, Node};

/// The IPv4 host entries of the pinned ipcache: address -> identity.
fn host4_entries(node_pins: &Path) -> BTreeMap<Ipv4Addr, u32> {
    use libbpf_rs::MapCore;
    let map = libbpf_rs::MapHandle::from_pinned_path(node_pins.join(datapath::IPCACHE_HOST4_MAP))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = BTreeMap::new();
    for key in map.keys() {
        let value = map.lookup(&key, libbpf_rs::MapFlags::ANY).unwrap_or_else(|e| panic!("{e}")).unwrap_or_default();
        let addr: [u8; 4] = key.as_slice().try_into().unwrap_or_else(|_| panic!("key {key:?}"));
        let identity: [u8; 4] = value.as_slice().try_into().unwrap_or_else(|_| panic!("value {value:?}"));
        out.insert(Ipv4Addr::from(addr), u32::from_ne_bytes(identity));
    }
    out
}

fn host(last: u8, identity: u32) -> IpcacheEntry {
    (IpAddr::V4(Ipv4Addr::new(10, 9, 0, last)), 32, identity)
}

#[test]
fn an_ipcache_sync_that_overflows_changes_nothing() {
    if !require_kernel("an_ipcache_sync_that_overflows_changes_nothing") {
        return;
    }
    const CAPACITY: u32 = 8;
    let (set, resolved) = resolve_dir(&example_dir("l3-l4-rule"));
    let node = Node::new("ipcfull", &set);
    // An object whose ipcache holds 8 hosts creates the node maps.
    let mut config = support::node_config();
    config.sizes.ipcache = CAPACITY;
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let builder = NodeBuilder::new(cache.path(), config, BuildOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let def = set.inventory.endpoint("app1").unwrap_or_else(|| panic!("app1"));
    let policy = resolved.endpoint("app1").unwrap_or_else(|| panic!("app1"));
    let artifact = builder.endpoint(policy, def, 1).unwrap_or_else(|e| panic!("{e}"));
    let generation =
        load_generation(&artifact, &node.pins.node_maps(), &node.endpoint_dir("app1"), 1, None, all_cpus())
            .unwrap_or_else(|e| panic!("{e}"));
    let maps = NodeMaps::new(&node.pins.node_maps());

    maps.sync_ipcache(&[host(1, 100), host(2, 101)]).unwrap_or_else(|e| panic!("{e}"));
    let before = host4_entries(&node.pins.node_maps());
    assert_eq!(before.len(), 2);
    // 10.9.0.1 changes identity, then 20 new hosts overflow the map.
    let mut overflowing = vec![host(1, 200)];
    overflowing.extend((10..30).map(|i| host(i, 300 + u32::from(i))));
    let error = maps.sync_ipcache(&overflowing).err().unwrap_or_else(|| panic!("22 hosts fit in {CAPACITY}"));
    println!("refused: {error}");
    assert_eq!(host4_entries(&node.pins.node_maps()), before, "the ipcache is as it was");

    // A sync that fits still goes through, and prunes what it lacks.
    maps.sync_ipcache(&[host(1, 200), host(3, 102)]).unwrap_or_else(|e| panic!("{e}"));
    let after = host4_entries(&node.pins.node_maps());
    assert_eq!(after.into_iter().collect::<Vec<_>>(), vec![([10, 9, 0, 1].into(), 200), ([10, 9, 0, 3].into(), 102)]);
    generation.discard();
}
