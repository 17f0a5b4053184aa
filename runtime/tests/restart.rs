//! polcd under traffic: a flow app1's policy allows and one it denies run at
//! 12,000 packets/s each while polcd is killed with SIGKILL, restarted (it
//! adopts the pinned links and swaps in a fresh generation), and an endpoint
//! is added and removed. Not one allowed packet is lost, not one denied
//! packet is delivered. Needs root (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use polc_runtime::netlab::require_kernel;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    add_app4_via_api, all_enforcing, count, example_dir, polcd_cli, receiver, resolve_dir, send, wait_for, Node, Polcd,
};

const POLICY: &str =
    "policy flows {\n  select {id=app1}\n  ingress {\n    allow flow: from {id=app2} on udp/5000\n  }\n}\n";

#[test]
fn kill_restart_and_endpoint_churn_lose_nothing() {
    if !require_kernel("kill_restart_and_endpoint_churn_lose_nothing") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (policies, state) = (work.path().join("policies"), work.path().join("state"));
    std::fs::create_dir_all(&policies).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(example_dir("l3-l4-rule").join("endpoints.pol"), policies.join("endpoints.pol"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(policies.join("policy.pol"), POLICY).unwrap_or_else(|e| panic!("{e}"));
    let (set, _) = resolve_dir(&policies);
    let mut node = Node::new("restart", &set);
    let pins = node.pins.path().to_path_buf();
    let mut polcd = Polcd::start(&policies, &state, node.lab.node_ns(), &pins);
    wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);

    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let ns = |name: &str| node.lab.endpoint(name).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let (stop_rx, stop_tx) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let allowed_rx = count(receiver(&ns("app1"), app1, 5000), stop_rx.clone());
    let denied_rx = count(receiver(&ns("app1"), app1, 5001), stop_rx.clone());
    let allowed_tx = send(&ns("app2"), SocketAddr::new(app1, 5000), stop_tx.clone());
    let denied_tx = send(&ns("app3"), SocketAddr::new(app1, 5001), stop_tx.clone());
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(200));

    polcd.kill();
    std::thread::sleep(Duration::from_millis(300));
    let polcd = Polcd::start(&policies, &state, node.lab.node_ns(), &pins);
    let adopted =
        wait_for(&state, &polcd, "adoption", |s| all_enforcing(s) && s.endpoints.iter().all(|e| e.generation == 2));
    assert!(polcd.log().contains("adopted `app1`"), "log:\n{}", polcd.log());
    assert_eq!(adopted.policy_version, 1);

    add_app4_via_api(&mut node, &state, "id=app4");
    wait_for(&state, &polcd, "app4 enforcing", |s| all_enforcing(s) && s.endpoints.len() == 4);
    let deleted = polcd_cli(&state, &["endpoint", "del", "app4"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    std::thread::sleep(Duration::from_millis(200));

    stop_tx.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let (allowed_sent, denied_sent) = (allowed_tx.join().unwrap_or(0), denied_tx.join().unwrap_or(0));
    std::thread::sleep(Duration::from_millis(200));
    stop_rx.store(true, Ordering::SeqCst);
    let (allowed_received, denied_received) = (allowed_rx.join().unwrap_or(0), denied_rx.join().unwrap_or(0));
    println!(
        "kill -9, restart, endpoint add+del over {elapsed:?}: allowed flow {allowed_sent} sent, {allowed_received} received, \
         {} lost; denied flow {denied_sent} sent, {denied_received} delivered",
        allowed_sent - allowed_received.min(allowed_sent)
    );
    assert!(allowed_sent > 5000 && denied_sent > 5000, "the flows ran");
    assert_eq!(allowed_received, allowed_sent, "no allowed packet lost");
    assert_eq!(denied_received, 0, "no denied packet delivered");
    drop(polcd);
    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
}
