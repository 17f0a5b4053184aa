//! A load whose programs are verified on several threads: one object per
//! thread, each loading some of the programs, all of them using the maps
//! the first one created. Every program must see the endpoint's `.rodata`
//! constants (written into the first object only), every tail-call target
//! must be reachable from its entry program, and the verdicts must be those
//! of the same object loaded whole. Real kernel (BPF_PROG_TEST_RUN); needs
//! root (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use polc::codegen::header::BuildOptions;
use polc_runtime::agent::build::{ipcache_entries, NodeBuilder};
use polc_runtime::datapath::{Direction, Reason, VerdictEvent};
use polc_runtime::loader::{EventReader, LoadSpec, LoadedEndpoint, PinDir, TableRecords};
use polc_runtime::netlab::require_kernel;
use polc_runtime::seam;
use std::net::IpAddr;
use support::{node_config, policy_dir, resolve_dir};

/// app1 enforces both directions: app2 may reach it on tcp/80, it may reach
/// app2 on tcp/80; nothing else.
const POLICY: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n  }\n  egress {\n    allow out: to {id=app2} on tcp/80\n  }\n}\n";

/// A TCP SYN from `from`:`sport` to `to`:80 in an Ethernet frame.
fn syn(from: IpAddr, to: IpAddr, sport: u16) -> Vec<u8> {
    let mut frame = vec![0u8; 14];
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    match (from, to) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&from.octets());
            ip[16..20].copy_from_slice(&to.octets());
            frame.extend(ip);
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&from.octets());
            ip[24..40].copy_from_slice(&to.octets());
            frame.extend(ip);
        }
        _ => panic!("one address family"),
    }
    frame.extend(tcp);
    frame
}

/// Runs `frame` through `direction`'s entry program of `loaded`: the tc
/// action and the one verdict event it sent.
fn verdict(loaded: &LoadedEndpoint, events: &EventReader, direction: Direction, frame: &[u8]) -> (u32, VerdictEvent) {
    let action = loaded.run(direction.entry_program(), frame).unwrap_or_else(|e| panic!("{e}"));
    let sent = events.drain().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sent.len(), 1, "one event per packet: {sent:?}");
    (action, sent[0])
}

#[test]
fn programs_verified_on_separate_threads_decide_as_one_load() {
    if !require_kernel("programs_verified_on_separate_threads_decide_as_one_load") {
        return;
    }
    let policies = policy_dir(POLICY);
    let (set, resolved) = resolve_dir(policies.path());
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let options = BuildOptions { events: true, trace_level: 2 };
    let builder = NodeBuilder::new(cache.path(), node_config(), options).unwrap_or_else(|e| panic!("{e}"));
    let index = set.inventory.endpoints.iter().position(|e| e.name == "app1").unwrap_or_else(|| panic!("app1"));
    let policy = resolved.endpoint("app1").unwrap_or_else(|| panic!("app1 resolved"));
    let id = 7;
    let artifact = builder.endpoint(policy, &set.inventory.endpoints[index], id).unwrap_or_else(|e| panic!("{e}"));
    assert!(!artifact.constants.is_empty(), "a shared object: the endpoint's constants are in .rodata");
    let records: Vec<(Direction, TableRecords)> =
        [(Direction::Ingress, &artifact.ingress), (Direction::Egress, &artifact.egress)]
            .into_iter()
            .map(|(d, entries)| {
                (d, seam::policy_records(entries.as_deref().unwrap_or_else(|| panic!("{d:?} enforced"))))
            })
            .collect();
    let tables: Vec<(Direction, &TableRecords)> = records.iter().map(|(d, r)| (*d, r)).collect();

    let pins = PinDir::create(&format!("test-{}-split-load", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let spec = |generation: u32, program_threads: usize| LoadSpec {
        endpoint: "app1",
        object: &artifact.object,
        constants: &artifact.constants,
        map_sizes: &artifact.map_sizes,
        node_pins: pins.node_maps(),
        endpoint_pins: pins.endpoint_maps(generation),
        program_threads,
    };
    // The first load on the node creates the node maps: loaded whole.
    let whole = LoadedEndpoint::load_with_tables(&spec(1, 1), &tables).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(whole.program_loads(), 1);
    seam::fill_ipcache(&whole, &ipcache_entries(&resolved)).unwrap_or_else(|e| panic!("{e}"));
    // Each of the four programs (both directions' entry and IPv6 tail
    // programs) verified on a thread of its own.
    let split = LoadedEndpoint::load_with_tables(&spec(2, 4), &tables).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(split.program_loads(), 4, "one object per program");
    // Dealt two by two, each direction's entry program and its tail program
    // are in different objects.
    let halves = LoadedEndpoint::load_with_tables(&spec(3, 2), &tables).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(halves.program_loads(), 2);

    let events = whole.events().unwrap_or_else(|e| panic!("{e}"));
    let address = |name: &str, v6: bool| -> IpAddr {
        let def = set.inventory.endpoint(name).unwrap_or_else(|| panic!("{name}"));
        let address = if v6 { def.ipv6.map(IpAddr::V6) } else { def.ipv4.map(IpAddr::V4) };
        address.unwrap_or_else(|| panic!("{name} has both address families"))
    };
    let identity = |name: &str| resolved.endpoint(name).unwrap_or_else(|| panic!("{name}")).identity.0;
    let (own, app2, app3) = (identity("app1"), identity("app2"), identity("app3"));
    let mut sport = 40000;
    for v6 in [false, true] {
        let cases = [
            (Direction::Ingress, "app2", Reason::PolicyAllow),
            (Direction::Ingress, "app3", Reason::DefaultDeny),
            (Direction::Egress, "app2", Reason::PolicyAllow),
            (Direction::Egress, "app3", Reason::DefaultDeny),
        ];
        for (direction, peer, reason) in cases {
            let mut seen = Vec::new();
            for loaded in [&whole, &split, &halves] {
                // A new source port each time: an allowed SYN leaves a
                // conntrack entry (node-wide) the next one would match.
                sport += 1;
                let (from, to) = match direction {
                    Direction::Ingress => (address(peer, v6), address("app1", v6)),
                    Direction::Egress => (address("app1", v6), address(peer, v6)),
                };
                let (action, event) = verdict(loaded, &events, direction, &syn(from, to, sport));
                let what = format!("{direction:?} {peer} (IPv6: {v6}) on {} object(s)", loaded.program_loads());
                assert_eq!(event.reason, reason, "{what}");
                assert_eq!((event.direction, event.proto, event.sport), (direction, 6, sport), "{what}");
                // `lxc_id` and `seclabel` are .rodata constants.
                assert_eq!(event.endpoint, id, "{what}: the endpoint id constant");
                let peer_identity = if peer == "app2" { app2 } else { app3 };
                let expected =
                    if direction == Direction::Ingress { (peer_identity, own) } else { (own, peer_identity) };
                assert_eq!((event.src_identity, event.dst_identity), expected, "{what}: identities");
                seen.push((action, event.reason, event.rule));
            }
            assert!(seen.windows(2).all(|w| w[0] == w[1]), "{direction:?} {peer}: the same verdicts {seen:?}");
        }
    }
}
