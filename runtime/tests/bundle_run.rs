//! `polcd run --bundle DIR` on real veths: a bundle built from an inventory
//! whose devices have names unique to this test is enforced (endpoints,
//! objects and tables from its manifest; the live matrix equals the
//! evaluator); a new bundle written to the directory is applied, touching
//! only the endpoint whose entry changed; a bundle that cannot load is not
//! applied at all; endpoints cannot be added through the API. Needs root
//! (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use polc::codegen::bundle::{build_bundle, BundleOptions};
use polc::ir::Resolved;
use polc::sema::model::PolicySet;
use polc_runtime::netlab::require_kernel;
use std::net::IpAddr;
use std::path::Path;
use support::matrix::{live_matrix, Probes, REACH_TIMEOUT, TIMEOUT};
use support::{
    all_enforcing, example_dir, node_config, polcd_cli, resolve_dir, status, wait_for, Node, Polcd, ONLY_APP3,
};

/// Writes the l3-l4-rule example to `dir` with device names of this test
/// (`pb<pid>-appN`) and `policy` as its policy file; resolves it.
fn inventory(dir: &Path, policy: &str) -> (PolicySet, Resolved) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let example = example_dir("l3-l4-rule");
    let endpoints = std::fs::read_to_string(example.join("endpoints.pol")).unwrap_or_else(|e| panic!("{e}"));
    let unique = format!("pb{}-", std::process::id() % 100_000);
    std::fs::write(dir.join("endpoints.pol"), endpoints.replace("iface polc-", &format!("iface {unique}")))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(example.join("identities.lock"), dir.join("identities.lock")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("policy.pol"), policy).unwrap_or_else(|e| panic!("{e}"));
    resolve_dir(dir)
}

fn build(set: &PolicySet, resolved: &Resolved, out: &Path, cache: &Path) {
    let options = BundleOptions { node: node_config(), cache: Some(cache.to_path_buf()), ..BundleOptions::default() };
    build_bundle(resolved, &set.inventory.endpoints, out, &options).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn polcd_runs_a_built_bundle_and_applies_new_ones_all_or_nothing() {
    if !require_kernel("polcd_runs_a_built_bundle_and_applies_new_ones_all_or_nothing") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (policies, out, cache, state) = (
        work.path().join("policies"),
        work.path().join("bundle"),
        work.path().join("cache"),
        work.path().join("state"),
    );
    let original =
        std::fs::read_to_string(example_dir("l3-l4-rule").join("policy.pol")).unwrap_or_else(|e| panic!("{e}"));
    let (set, resolved) = inventory(&policies, &original);
    build(&set, &resolved, &out, &cache);
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap_or_else(|e| panic!("{e}"));
    let app1_iface = set.inventory.endpoint("app1").and_then(|e| e.iface.clone()).unwrap_or_else(|| panic!("app1"));
    assert!(app1_iface.starts_with("pb") && manifest.contains(&format!("\"iface\": \"{app1_iface}\"")), "{manifest}");

    let node = Node::new("bundle", &set);
    let pins = node.pins.path().to_path_buf();
    let polcd = Polcd::start_bundle(&out, &state, node.lab.node_ns(), &pins);
    let first = wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);
    assert_eq!(first.endpoints.len(), 3);
    assert!(first.endpoints.iter().all(|e| e.source == "bundle"), "{first:#?}");
    let (count, mismatches) = live_matrix(&set, &node.lab, &Probes { tcp: &[80, 81, 8080], udp: &[53] });
    println!("polcd --bundle: {count} probes, {} mismatches", mismatches.len());
    assert!(mismatches.is_empty(), "live verdicts differ from the evaluator:\n{}", mismatches.join("\n"));
    // Counters are served in bundle mode: the matrix's probes were counted.
    let stats = polc_runtime::agent::api::request(&state, &polc_runtime::agent::api::Request::Stats)
        .unwrap_or_else(|e| panic!("{e}"));
    let stats = stats.stats.unwrap_or_else(|| panic!("stats refused: {:?}", stats.error));
    let app1 = stats.endpoints.iter().find(|e| e.name == "app1").unwrap_or_else(|| panic!("{stats:#?}"));
    assert!(app1.ingress.allowed.packets > 0 && app1.ingress.dropped.packets > 0, "{app1:#?}");

    // A new bundle in the same directory: only app1's entry changed.
    let (set2, resolved2) = inventory(&policies, ONLY_APP3);
    build(&set2, &resolved2, &out, &cache);
    let second = wait_for(&state, &polcd, "the new bundle", |s| s.policy_version == 2);
    let reload = second.last_reload.clone().unwrap_or_else(|| panic!("no reload"));
    assert_eq!(reload.regenerated_endpoints, vec!["app1".to_string()], "{second:#?}");
    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let reaches = |from: &str| node.lab.tcp_reaches(from, app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let dropped = |from: &str| !node.lab.tcp_reaches(from, app1, 80, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(reaches("app3") && dropped("app2"), "the new bundle enforces");
    let (count, mismatches) = live_matrix(&set2, &node.lab, &Probes { tcp: &[80], udp: &[] });
    assert!(mismatches.is_empty(), "after the change ({count} probes):\n{}", mismatches.join("\n"));

    // A bundle that cannot load (app1's object is missing; app2's entry
    // changes too): nothing is applied, the previous bundle enforces.
    let text = std::fs::read_to_string(out.join("manifest.json")).unwrap_or_else(|e| panic!("{e}"));
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let endpoints = value["endpoints"].as_array_mut().unwrap_or_else(|| panic!("no endpoints"));
    for endpoint in endpoints.iter_mut() {
        match endpoint["name"].as_str() {
            Some("app1") => endpoint["object"] = "no-such-object".into(),
            Some("app2") => endpoint["rule_slots"] = serde_json::json!([]),
            _ => {}
        }
    }
    std::fs::write(out.join("manifest.json"), value.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let refused = wait_for(&state, &polcd, "the refusal", |s| s.last_error.is_some());
    println!("refused: {}", refused.last_error.as_deref().unwrap_or("").lines().next().unwrap_or(""));
    assert!(refused.last_error.as_deref().is_some_and(|e| e.contains("no-such-object")), "{refused:#?}");
    assert_eq!(refused.policy_version, 2);
    let generations =
        |s: &polc_runtime::agent::api::AgentStatus| -> Vec<u64> { s.endpoints.iter().map(|e| e.generation).collect() };
    assert_eq!(generations(&refused), generations(&second), "no endpoint was switched");
    assert!(reaches("app3") && dropped("app2"), "the previous bundle enforces");

    let add = polcd_cli(&state, &["endpoint", "add", "app4", "--iface", "x", "--ipv4", "10.200.1.14"]);
    assert_eq!(add.status.code(), Some(1), "endpoints come from the bundle");
    drop(polcd);
    assert!(status(&state).is_none());
    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert!(reaches("app2"), "nothing enforces after reset");
}
