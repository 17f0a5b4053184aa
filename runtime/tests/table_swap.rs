//! Table-only swaps on real veths: `Enforced::swap_tables` replaces app1's
//! ingress policy table between two versions of the same code shape. Each
//! swap changes what real TCP connections do while the links keep running
//! the same programs (same program ids, same generation); a swap that fails
//! (a table over the map's capacity) leaves the old table enforcing; an
//! adopted endpoint (a process that did not load it) swaps tables too.

#![allow(clippy::panic)]
mod support;

use support::matrix::REACH_TIMEOUT;

use polc::codegen::entries::{EntryAction, EntryInterval, EntryKind};
use polc_runtime::netlab::require_kernel;
use polc_runtime::seam::PolicyEntry;
use polc_runtime::swap::{Artifact, Enforced, SwapError};
use std::net::IpAddr;
use std::time::Duration;
use support::{program_ids, two_versions, Node, TwoVersions};

/// Both versions have the same code shape (allow rules only); v1 allows
/// tcp/80 from app2, v2 tcp/8080 instead.
const V1: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n  }\n}\n";
const V2: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow alt: from {id=app2} on tcp/8080\n  }\n}\n";

#[test]
fn table_swaps_change_verdicts_without_a_program_swap() {
    if !require_kernel("table_swaps_change_verdicts_without_a_program_swap") {
        return;
    }
    let TwoVersions { mut node, set: set1, versions } = two_versions("tableswap", V1, V2);
    assert_eq!(versions[0].object, versions[1].object, "one code shape");

    let app1 = set1.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let t = Duration::from_millis(400);
    let reaches =
        |node: &Node, port| node.lab.tcp_reaches("app2", app1, port, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let dropped = |node: &Node, port| !node.lab.tcp_reaches("app2", app1, port, t).unwrap_or_else(|e| panic!("{e}"));
    let dir = node.endpoint_dir("app1");
    let programs = program_ids(&dir);
    assert!(reaches(&node, 80) && dropped(&node, 8080), "v1 enforces");

    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1 enforced"));
    let generation = enforced.generation();
    enforced.swap_tables(&versions[1]).unwrap_or_else(|e| panic!("{e}"));
    assert!(dropped(&node, 80) && reaches(&node, 8080), "v2 enforces after a table swap");
    assert_eq!(program_ids(&dir), programs, "the links run the same programs");

    // Over capacity (the node's policy map holds 4096 entries): the fill
    // fails before anything is installed, v2 keeps enforcing.
    let entry = |identity| PolicyEntry {
        identity,
        proto: 6,
        kind: EntryKind::Protocol,
        bucket: 0,
        split: false,
        intervals: vec![EntryInterval { low: 80, high: 80, action: EntryAction::Allow, rule: 1, slot: 1 }],
    };
    let too_big = Artifact { ingress: Some((1000..6000).map(entry).collect()), ..versions[0].clone() };
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1 enforced"));
    let error = enforced.swap_tables(&too_big).err().unwrap_or_else(|| panic!("5000 entries accepted"));
    println!("refused table swap: {error}");
    // A direction the running programs do not enforce is refused too.
    let egress = Artifact { egress: Some(vec![entry(1000)]), ..versions[0].clone() };
    assert!(matches!(enforced.swap_tables(&egress), Err(SwapError::NeedsProgramSwap { .. })));
    assert!(dropped(&node, 80) && reaches(&node, 8080), "v2 still enforces");

    // A second process adopts the pinned endpoint and swaps its tables back.
    let mut adopted =
        Enforced::adopt(&node.pins.node_maps(), &dir, Some(node.lab.node_ns())).unwrap_or_else(|e| panic!("{e}"));
    assert!(adopted.current().is_none());
    adopted.swap_tables(&versions[0]).unwrap_or_else(|e| panic!("{e}"));
    assert!(reaches(&node, 80) && dropped(&node, 8080), "v1 enforces again");
    assert_eq!(program_ids(&dir), programs, "still the same programs");
    assert_eq!(adopted.generation(), generation);
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1 enforced"));
    assert_eq!(enforced.generation(), generation, "no new generation was loaded");
}
