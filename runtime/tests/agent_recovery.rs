//! polcd when part of the node is broken: an endpoint that cannot be loaded
//! does not hold the others back; a change whose load fails for an enforced
//! endpoint leaves the last good state, and the same change is seen (and
//! applied) again once the load can work; links a previous polcd left half pinned
//! keep enforcing until their replacement is attached; an endpoint removed
//! while polcd was down loses its ipcache entry at restart. Real kernel,
//! real veths. Needs root (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use polc_runtime::agent::daemon::Agent;
use polc_runtime::attach::link_pin;
use polc_runtime::datapath::{self, Direction};
use polc_runtime::netlab::{require_kernel, EndpointSpec};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;
use support::matrix::REACH_TIMEOUT;
use support::{
    add_app4_via_api, all_enforcing, copy_example, example_dir, polcd_cli, resolve_dir, status, wait_for, Flow, Flows,
    Node, Polcd,
};

const T: Duration = Duration::from_millis(400);

/// A policy directory: the l3-l4-rule endpoints, `policy` and `extra`.
fn policies(work: &Path, policy: &str, extra: &str) -> std::path::PathBuf {
    let dir = work.join("policies");
    copy_example("l3-l4-rule", &["endpoints.pol"], &dir);
    std::fs::write(dir.join("policy.pol"), policy).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("extra.pol"), extra).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn v4(set: &polc::sema::model::PolicySet, name: &str) -> IpAddr {
    set.inventory.endpoint(name).and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("{name}"))
}

const INGRESS_APP2_80: &str =
    "policy web {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n  }\n}\n";
const INGRESS_APP3_80: &str =
    "policy web {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app3} on tcp/80\n  }\n}\n";

#[test]
fn an_endpoint_that_cannot_load_does_not_hold_back_the_others() {
    if !require_kernel("an_endpoint_that_cannot_load_does_not_hold_back_the_others") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A name longer than a bpffs file name (255 bytes): its pin directory
    // cannot be made, so its load fails; its device exists.
    let long = format!("x{}", "y".repeat(299));
    let extra = format!("endpoint {long} {{\n  labels {{id=long}}\n  ipv4 10.200.1.15\n  iface polc-long\n}}\n");
    let dir = policies(work.path(), INGRESS_APP2_80, &extra);
    let (example, _) = resolve_dir(&example_dir("l3-l4-rule"));
    let mut node = Node::new("pendfail", &example);
    let spec = EndpointSpec {
        name: "long".into(),
        host_iface: "polc-long".into(),
        ipv4: Some([10, 200, 1, 15].into()),
        ipv6: None,
    };
    node.lab.add_endpoint(spec).unwrap_or_else(|e| panic!("{e}"));
    let state = work.path().join("state");
    let polcd = Polcd::start(&dir, &state, node.lab.node_ns(), node.pins.path());
    let others_enforcing = |s: &polc_runtime::agent::api::AgentStatus| {
        s.endpoints.iter().filter(|e| e.name != long).all(|e| e.state == "enforcing") && s.endpoints.len() == 4
    };
    let started = wait_for(&state, &polcd, "the other endpoints enforcing", others_enforcing);
    let failed = started.endpoints.iter().find(|e| e.name == long).unwrap_or_else(|| panic!("no long endpoint"));
    println!(
        "failed endpoint: {}, {}",
        failed.state,
        failed.last_error.as_deref().and_then(|e| e.rsplit(": ").next()).unwrap_or("")
    );
    assert_eq!(failed.state, "failed");
    assert!(failed.last_error.as_deref().is_some_and(|e| e.contains("File name too long")), "{failed:?}");
    let app1 = v4(&example, "app1");
    assert!(node.lab.tcp_reaches("app2", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")));
    assert!(!node.lab.tcp_reaches("app3", app1, 80, T).unwrap_or_else(|e| panic!("{e}")));

    // A later change is applied; the failing endpoint is retried and still says why.
    std::fs::write(dir.join("policy.pol"), INGRESS_APP3_80).unwrap_or_else(|e| panic!("{e}"));
    let changed = wait_for(&state, &polcd, "the change", |s| s.policy_version == 2);
    assert_eq!(changed.last_error, None, "the change is applied");
    let still = changed.endpoints.iter().find(|e| e.name == long).unwrap_or_else(|| panic!("no long endpoint"));
    assert_eq!(still.state, "failed");
    assert!(
        node.lab.tcp_reaches("app3", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")),
        "the new policy enforces"
    );
    assert!(!node.lab.tcp_reaches("app2", app1, 80, T).unwrap_or_else(|e| panic!("{e}")), "the new policy enforces");
    drop(polcd);
    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
}

/// app2 denied and app3 allowed on tcp/80: a deny rule, so another code
/// shape than [`INGRESS_APP2_80`] (a new generation is loaded).
const DENY_APP2_ALLOW_APP3_80: &str = "policy web {\n  select {id=app1}\n  ingress {\n    \
    deny no2: from {id=app2} on tcp/80\n    allow web: from {id=app3} on tcp/80\n  }\n}\n";

#[test]
fn a_change_whose_load_fails_leaves_the_last_good_state_and_is_applied_when_it_can_be() {
    if !require_kernel("a_change_whose_load_fails_leaves_the_last_good_state_and_is_applied_when_it_can_be") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = policies(work.path(), INGRESS_APP2_80, "");
    let (set, _) = resolve_dir(&dir);
    let node = Node::new("undo", &set);
    let config = support::agent_config(&dir, &work.path().join("state"), node.lab.node_ns(), node.pins.path());
    let mut agent = Agent::start(config).unwrap_or_else(|e| panic!("{e}"));
    let app1 = v4(&set, "app1");
    let reaches = |from: &str| node.lab.tcp_reaches(from, app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let dropped = |from: &str| !node.lab.tcp_reaches(from, app1, 80, T).unwrap_or_else(|e| panic!("{e}"));
    assert!(reaches("app2") && dropped("app3"), "version 1 enforces");

    // The next load cannot reuse the node's pinned conntrack map: another
    // map (an array of one entry) is pinned in its place. The running
    // programs keep theirs.
    let ct_pin = node.pins.node_maps().join(datapath::CONNTRACK4_MAP);
    let mut ct = libbpf_rs::MapHandle::from_pinned_path(&ct_pin).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&ct_pin).unwrap_or_else(|e| panic!("{e}"));
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut wrong = libbpf_rs::MapHandle::create(libbpf_rs::MapType::Array, Some("wrong"), 4, 4, 1, &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    wrong.pin(&ct_pin).unwrap_or_else(|e| panic!("{e}"));

    // A change of code shape for app1: resolution succeeds, its load fails.
    std::fs::write(dir.join("policy.pol"), DENY_APP2_ALLOW_APP3_80).unwrap_or_else(|e| panic!("{e}"));
    agent.reload();
    let failed = agent.status();
    println!("failed change: {}", failed.last_error.as_deref().unwrap_or("").lines().next().unwrap_or(""));
    assert!(failed.last_error.as_deref().is_some_and(|e| e.starts_with("endpoint `app1`: ")), "{failed:?}");
    assert!(!failed.last_error.as_deref().unwrap_or("").contains("`app1`: endpoint `app1`"), "named once: {failed:?}");
    assert_eq!(failed.policy_version, 1);
    assert!(reaches("app2") && dropped("app3"), "version 1 still enforces");

    // The map back: the same files again are a change from version 1 (the
    // resolver took its update back), so app1 is regenerated now.
    wrong.unpin(&ct_pin).unwrap_or_else(|e| panic!("{e}"));
    ct.pin(&ct_pin).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("policy.pol"), DENY_APP2_ALLOW_APP3_80).unwrap_or_else(|e| panic!("{e}"));
    agent.reload();
    let applied = agent.status();
    assert_eq!(applied.last_error, None);
    assert_eq!(applied.policy_version, 2);
    let reload = applied.last_reload.unwrap_or_else(|| panic!("no reload"));
    assert_eq!(reload.regenerated_endpoints, vec!["app1".to_string()], "{reload:?}");
    assert!(dropped("app2") && reaches("app3"), "version 2 enforces");
}

const EGRESS_FLOW: &str =
    "policy flows {\n  select {id=app1}\n  egress {\n    allow flow: to {id=app2} on udp/5000\n  }\n}\n";

#[test]
fn half_pinned_links_enforce_until_their_replacement_is_attached() {
    if !require_kernel("half_pinned_links_enforce_until_their_replacement_is_attached") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = policies(work.path(), EGRESS_FLOW, "");
    let (set, _) = resolve_dir(&dir);
    let node = Node::new("halfpin", &set);
    let pins = node.pins.path().to_path_buf();
    let state = work.path().join("state");
    let mut polcd = Polcd::start(&dir, &state, node.lab.node_ns(), &pins);
    wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);

    // app1's egress policy runs on its veth's ingress (`link_from_ep`).
    let ns = |name: &str| node.lab.endpoint(name).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let (app2, app3) = (v4(&set, "app2"), v4(&set, "app3"));
    let (app1_ns, app2_ns, app3_ns) = (ns("app1"), ns("app2"), ns("app3"));
    let flows = Flows::start(
        Flow { from_ns: &app1_ns, to_ns: &app2_ns, to: app2, port: 5000 },
        Flow { from_ns: &app1_ns, to_ns: &app3_ns, to: app3, port: 5001 },
    );
    std::thread::sleep(Duration::from_millis(200));

    // polcd dies; app1 is left half pinned (as by a crash between its two
    // pins): `link_to_ep` is unpinned, held open here so it stays attached.
    polcd.kill();
    let app1_dir = pins.join("endpoints").join("app1");
    let held = libbpf_rs::Link::open(link_pin(&app1_dir, Direction::Ingress)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(link_pin(&app1_dir, Direction::Ingress)).unwrap_or_else(|e| panic!("{e}"));
    let polcd = Polcd::start(&dir, &state, node.lab.node_ns(), &pins);
    wait_for(&state, &polcd, "all endpoints enforcing again", all_enforcing);
    std::thread::sleep(Duration::from_millis(200));

    let counts = flows.stop();
    println!("half-pinned restart: {counts}");
    assert!(counts.allowed_sent > 3000 && counts.denied_sent > 3000, "the flows ran");
    assert_eq!(counts.denied_received, 0, "no denied packet delivered while app1 was regenerated");
    assert_eq!(counts.allowed_received, counts.allowed_sent, "no allowed packet lost");
    assert!(!pins.join("stale").join("app1").exists(), "the old links are gone once the new ones run");
    assert!(link_pin(&app1_dir, Direction::Egress).exists() && link_pin(&app1_dir, Direction::Ingress).exists());
    drop(held);
    drop(polcd);
    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
}

/// The identity the pinned ipcache gives a host address (`None`: no entry).
fn ipcache_identity(pins: &Path, addr: Ipv4Addr) -> Option<u32> {
    use libbpf_rs::MapCore;
    let map = libbpf_rs::MapHandle::from_pinned_path(pins.join("node").join(datapath::IPCACHE_HOST4_MAP))
        .unwrap_or_else(|e| panic!("{e}"));
    let value = map.lookup(&addr.octets(), libbpf_rs::MapFlags::ANY).unwrap_or_else(|e| panic!("{e}"))?;
    Some(u32::from_ne_bytes(value.as_slice().try_into().unwrap_or_else(|_| panic!("value {value:?}"))))
}

/// polcd on the l3-l4-rule endpoints (app1 allows app2 on tcp/80), with
/// app4 added over the API with `app4_labels` and enforcing.
struct WithApp4 {
    work: tempfile::TempDir,
    dir: std::path::PathBuf,
    set: polc::sema::model::PolicySet,
    node: Node,
    pins: std::path::PathBuf,
    state: std::path::PathBuf,
    polcd: Polcd,
    status: polc_runtime::agent::api::AgentStatus,
}

fn start_with_app4(test: &str, app4_labels: &str) -> WithApp4 {
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = policies(work.path(), INGRESS_APP2_80, "");
    let (set, _) = resolve_dir(&dir);
    let mut node = Node::new(test, &set);
    let pins = node.pins.path().to_path_buf();
    let state = work.path().join("state");
    let polcd = Polcd::start(&dir, &state, node.lab.node_ns(), &pins);
    wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);
    add_app4_via_api(&mut node, &state, app4_labels);
    let status = wait_for(&state, &polcd, "app4 enforcing", |s| all_enforcing(s) && s.endpoints.len() == 4);
    WithApp4 { work, dir, set, node, pins, state, polcd, status }
}

#[test]
fn a_restarted_polcd_prunes_the_ipcache_entry_of_an_endpoint_removed_while_down() {
    if !require_kernel("a_restarted_polcd_prunes_the_ipcache_entry_of_an_endpoint_removed_while_down") {
        return;
    }
    let WithApp4 { work: _work, dir, set, mut node, pins, state, mut polcd, .. } =
        start_with_app4("ipcprune", "id=app4");
    let app4: Ipv4Addr = [10, 200, 1, 14].into();
    let app4_identity = ipcache_identity(&pins, app4).unwrap_or_else(|| panic!("app4 is in the ipcache"));

    // polcd dies; app4 goes while it is down (its API record with it).
    polcd.kill();
    node.lab.remove_endpoint("app4").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(state.join(polc_runtime::agent::daemon::API_ENDPOINTS_FILE), "{}").unwrap_or_else(|e| panic!("{e}"));
    let polcd = Polcd::start(&dir, &state, node.lab.node_ns(), &pins);
    wait_for(&state, &polcd, "restart", |s| all_enforcing(s) && s.endpoints.len() == 3);
    assert_eq!(ipcache_identity(&pins, app4), None, "the entry of the removed endpoint is pruned");
    assert!(!pins.join("endpoints").join("app4").exists(), "its links are detached");

    // The address is reused by an endpoint with other labels: the ipcache
    // gives it the new identity, and app1's policy (app2 only) drops it.
    let spec = EndpointSpec { name: "app5".into(), host_iface: "polc-app5".into(), ipv4: Some(app4), ipv6: None };
    node.lab.add_endpoint(spec).unwrap_or_else(|e| panic!("{e}"));
    let added = polcd_cli(
        &state,
        &["endpoint", "add", "app5", "--iface", "polc-app5", "--ipv4", "10.200.1.14", "--labels", "id=app2x"],
    );
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let now = wait_for(&state, &polcd, "app5 enforcing", |s| all_enforcing(s) && s.endpoints.len() == 4);
    let app5_identity = now.endpoints.iter().find(|e| e.name == "app5").map_or(0, |e| e.identity);
    assert_eq!(ipcache_identity(&pins, app4), Some(app5_identity));
    println!("10.200.1.14: identity {app4_identity} (app4), pruned at restart, then {app5_identity} (app5)");
    let app1 = v4(&set, "app1");
    assert!(!node.lab.tcp_reaches("app5", app1, 80, T).unwrap_or_else(|e| panic!("{e}")), "app5 is not app2");
    assert!(node.lab.tcp_reaches("app2", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")));
    drop(polcd);
    assert!(status(&state).is_none());
    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
}

/// Identity numbers polcd allocated on top of the policy set survive a
/// restart: `{id=app0}`, added over the API after app1..app3 had 256..258,
/// would sort first and take 256 if a restarted polcd allocated afresh.
#[test]
fn a_restarted_polcd_gives_every_label_set_its_number_again() {
    if !require_kernel("a_restarted_polcd_gives_every_label_set_its_number_again") {
        return;
    }
    let WithApp4 { work: _work, dir, set, node, pins, state, mut polcd, status: before } =
        start_with_app4("idkeep", "id=app0");
    let identities = |s: &polc_runtime::agent::api::AgentStatus| {
        s.endpoints.iter().map(|e| (e.name.clone(), e.identity)).collect::<Vec<_>>()
    };
    let app4: Ipv4Addr = [10, 200, 1, 14].into();
    let app4_identity = ipcache_identity(&pins, app4);

    polcd.kill();
    let polcd = Polcd::start(&dir, &state, node.lab.node_ns(), &pins);
    let after = wait_for(&state, &polcd, "restart", |s| all_enforcing(s) && s.endpoints.len() == 4);
    println!("before: {:?}\nafter:  {:?}", identities(&before), identities(&after));
    assert_eq!(identities(&after), identities(&before));
    assert_eq!(ipcache_identity(&pins, app4), app4_identity);
    let app1 = v4(&set, "app1");
    assert!(!node.lab.tcp_reaches("app4", app1, 80, T).unwrap_or_else(|e| panic!("{e}")), "app4 is not app2");
    assert!(node.lab.tcp_reaches("app2", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")));
    drop(polcd);
    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert!(!state.join(polc_runtime::agent::daemon::IDENTITIES_FILE).exists(), "reset removes the saved numbers");
}
