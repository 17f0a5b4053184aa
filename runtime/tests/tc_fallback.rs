//! tc clsact, the fallback for kernels without tcx, forced on this kernel
//! (which has tcx): an example enforced with tc filters gives the live
//! matrix the evaluator gives; 100 swaps replace the filters' programs in
//! place under a 12 kpps flow without losing an allowed packet or passing
//! a denied one; `polcd run --attach tc` enforces, swaps on a policy
//! change, is adopted after `kill -9`, and `polcd reset` removes the
//! filters. Needs root (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use polc_runtime::attach::{link_pin, tc, AttachMode};
use polc_runtime::datapath::Direction;
use polc_runtime::netlab::require_kernel;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;
use support::matrix::{live_matrix, Probes, REACH_TIMEOUT, TIMEOUT};
use support::{
    all_enforcing, copy_example, example_dir, polcd_cli, resolve_dir, status, wait_for, Flow, Flows, Node, Polcd,
    ONLY_APP3,
};

/// The BPF filters `tc` lists on `iface` in namespace `ns` (both directions).
fn tc_filters(ns: &str, iface: &str) -> String {
    let mut out = String::new();
    for direction in ["ingress", "egress"] {
        let shown = Command::new("nsenter")
            .args([&format!("--net=/run/netns/{ns}"), "tc", "filter", "show", "dev", iface, direction])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        out.push_str(&String::from_utf8_lossy(&shown.stdout));
    }
    out
}

#[test]
fn tc_filters_enforce_an_example_and_swap_in_place_under_load() {
    if !require_kernel("tc_filters_enforce_an_example_and_swap_in_place_under_load") {
        return;
    }
    let (set, resolved) = resolve_dir(&example_dir("l3-l4-rule"));
    let mut node = Node::new("tcswap", &set);
    node.attach = AttachMode::Tc;
    node.enforce_all(&set, &resolved);
    for (name, enforced) in &node.enforced {
        assert_eq!(enforced.hook(), "tc", "{name}");
        assert!(!link_pin(enforced.dir(), Direction::Ingress).exists(), "no tcx link for {name}");
        assert!(tc::marker(enforced.dir(), &node.device(name).iface).exists(), "the tc marker of {name}");
    }
    let filters = tc_filters(node.lab.node_ns(), "polc-app1");
    assert_eq!(filters.matches("direct-action").count(), 2, "one filter per direction:\n{filters}");

    let (count_probes, mismatches) = live_matrix(&set, &node.lab, &Probes { tcp: &[80, 81], udp: &[53] });
    println!("l3-l4-rule with tc: {count_probes} probes, {} mismatches", mismatches.len());
    assert!(mismatches.is_empty(), "live verdicts differ from the evaluator:\n{}", mismatches.join("\n"));

    // Swaps under load: each swap loads a new generation of app1 and
    // replaces both filters' programs with it.
    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let artifact = node.artifact(&set, &resolved, "app1");
    let ns = |name: &str| node.lab.endpoint(name).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    // app1's ingress allows app2 on tcp/80 only: a udp flow is denied;
    // app1's egress is not enforced: its flow to app2 is allowed.
    let app2 = set.inventory.endpoint("app2").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app2"));
    let (app1_ns, app2_ns) = (ns("app1"), ns("app2"));
    let flows = Flows::start(
        Flow { from_ns: &app1_ns, to_ns: &app2_ns, to: app2, port: 5000 },
        Flow { from_ns: &app2_ns, to_ns: &app1_ns, to: app1, port: 5001 },
    );
    std::thread::sleep(Duration::from_millis(100));
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
    for i in 0..100 {
        enforced.swap(&artifact).unwrap_or_else(|e| panic!("swap {i}: {e}"));
    }
    std::thread::sleep(Duration::from_millis(100));
    let counts = flows.stop();
    println!("100 tc swaps: {counts}");
    assert_eq!(enforced.generation(), 101);
    assert!(counts.allowed_sent > 1000 && counts.denied_sent > 1000, "the flows ran");
    assert_eq!(counts.allowed_received, counts.allowed_sent, "no allowed packet lost");
    assert_eq!(counts.denied_received, 0, "no denied packet delivered");
    let filters = tc_filters(node.lab.node_ns(), "polc-app1");
    assert_eq!(filters.matches("direct-action").count(), 2, "still one filter per direction:\n{filters}");

    // Detaching deletes the filters: nothing polices app1 any more.
    let enforced = node.enforced.remove("app1").unwrap_or_else(|| panic!("app1"));
    enforced.remove().unwrap_or_else(|e| panic!("{e}"));
    assert!(!tc_filters(node.lab.node_ns(), "polc-app1").contains("direct-action"));
    assert!(node.lab.tcp_reaches("app3", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")));
}

#[test]
fn polcd_attach_tc_enforces_swaps_adopts_and_resets() {
    if !require_kernel("polcd_attach_tc_enforces_swaps_adopts_and_resets") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (policies, state) = (work.path().join("policies"), work.path().join("state"));
    copy_example("l3-l4-rule", &["endpoints.pol", "policy.pol", "identities.lock"], &policies);
    let (set, _) = resolve_dir(&policies);
    let node = Node::new("polcdtc", &set);
    let pins = node.pins.path().to_path_buf();
    let start = || Polcd::start_with(&policies, &state, node.lab.node_ns(), &pins, &["--attach", "tc"]);
    let mut polcd = start();
    let first = wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);
    assert!(first.endpoints.iter().all(|e| e.hook.as_deref() == Some("tc")), "{first:#?}");
    let (count_probes, mismatches) = live_matrix(&set, &node.lab, &Probes { tcp: &[80, 8080], udp: &[53] });
    println!("polcd --attach tc: {count_probes} probes, {} mismatches", mismatches.len());
    assert!(mismatches.is_empty(), "live verdicts differ from the evaluator:\n{}", mismatches.join("\n"));

    // A policy change swaps app1's filters in place.
    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let reaches = |from: &str| node.lab.tcp_reaches(from, app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let dropped = |from: &str| !node.lab.tcp_reaches(from, app1, 80, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(reaches("app2") && dropped("app3"));
    std::fs::write(policies.join("policy.pol"), ONLY_APP3).unwrap_or_else(|e| panic!("{e}"));
    let changed = wait_for(&state, &polcd, "the change", |s| s.policy_version == 2 && s.last_error.is_none());
    let before: std::collections::BTreeMap<String, u64> =
        changed.endpoints.iter().map(|e| (e.name.clone(), e.generation)).collect();
    assert!(reaches("app3") && dropped("app2"), "the new policy enforces");
    let filters = tc_filters(node.lab.node_ns(), "polc-app1");
    assert_eq!(filters.matches("direct-action").count(), 2, "the filters were replaced, not added:\n{filters}");

    // kill -9: the filters keep enforcing; a new polcd adopts them.
    polcd.kill();
    assert!(reaches("app3") && dropped("app2"), "enforcement outlives polcd");
    let polcd = start();
    let adopted = wait_for(&state, &polcd, "adoption", |s| all_enforcing(s) && s.policy_version == 1);
    assert!(polcd.log().contains("adopted `app1`"), "log:\n{}", polcd.log());
    // Each adopted endpoint is swapped, in place, to a fresh generation.
    let fresh = |e: &polc_runtime::agent::api::EndpointStatus| Some(&(e.generation - 1)) == before.get(&e.name);
    assert!(adopted.endpoints.iter().all(|e| e.hook.as_deref() == Some("tc") && fresh(e)), "{adopted:#?}");
    assert!(reaches("app3") && dropped("app2"), "still enforcing after adoption");
    drop(polcd);
    assert!(status(&state).is_none());

    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    println!("reset: {}", String::from_utf8_lossy(&reset.stdout).trim());
    assert!(!tc_filters(node.lab.node_ns(), "polc-app1").contains("direct-action"), "the filters are deleted");
    assert!(reaches("app2") && reaches("app3"), "nothing polices app1 any more");
}
