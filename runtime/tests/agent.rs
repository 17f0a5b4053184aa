//! polcd end to end on real veths: it enforces the l3-l4-rule example, keeps
//! the old policy enforcing when a broken file or a policy over capacity is
//! pushed (and says so in status), applies a good change touching only the
//! endpoints the impact graph names, adds and removes endpoints through its
//! socket, attaches afresh when an endpoint's veth is deleted and made again,
//! leaves enforcement running when killed, adopts it on restart, and `reset`
//! removes everything. Needs root (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use support::matrix::REACH_TIMEOUT;

use polc_runtime::agent::api;
use polc_runtime::netlab::{require_kernel, EndpointSpec};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use support::{
    add_app4_via_api, all_enforcing, example_dir, polcd_cli, resolve_dir, status, wait_for, Node, Polcd, ONLY_APP3,
};

const T: Duration = Duration::from_millis(400);

#[test]
fn polcd_enforces_reloads_survives_and_resets() {
    if !require_kernel("polcd_enforces_reloads_survives_and_resets") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policies = work.path().join("policies");
    let state = work.path().join("state");
    std::fs::create_dir_all(&policies).unwrap_or_else(|e| panic!("{e}"));
    for file in ["endpoints.pol", "policy.pol", "identities.lock"] {
        std::fs::copy(example_dir("l3-l4-rule").join(file), policies.join(file)).unwrap_or_else(|e| panic!("{e}"));
    }
    let (set, _) = resolve_dir(&policies);
    let mut node = Node::new("agent", &set);
    let pins = node.pins.path().to_path_buf();
    let addr = |name: &str| -> IpAddr {
        set.inventory.endpoint(name).and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("{name}"))
    };
    let app1 = addr("app1");
    let reaches = |node: &Node, from: &str, port: u16| {
        node.lab.tcp_reaches(from, app1, port, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    };
    let dropped = |node: &Node, from: &str, port: u16| {
        !node.lab.tcp_reaches(from, app1, port, T).unwrap_or_else(|e| panic!("{e}"))
    };

    let mut polcd = Polcd::start(&policies, &state, node.lab.node_ns(), &pins);
    let first = wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);
    assert_eq!(first.policy_version, 1);
    let mode = std::fs::metadata(api::socket_path(&state)).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    assert_eq!(mode, 0o600, "the socket is root's only");
    assert!(
        reaches(&node, "app2", 80) && dropped(&node, "app3", 80) && dropped(&node, "app2", 81),
        "the example enforces"
    );

    // A broken policy file: the old policy keeps enforcing, status says why.
    std::fs::write(policies.join("policy.pol"), "policy broken {\n  select {id=app1\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let broken = wait_for(&state, &polcd, "the broken file to be reported", |s| s.last_error.is_some());
    let error = broken.last_error.clone().unwrap_or_default();
    println!("broken policy reported: {}", error.lines().next().unwrap_or(""));
    assert!(error.contains("policy.pol"), "the error names the file: {error}");
    assert_eq!(broken.policy_version, 1);
    assert!(reaches(&node, "app2", 80) && dropped(&node, "app3", 80), "version 1 still enforces");
    let cli = polcd_cli(&state, &["status"]);
    assert!(String::from_utf8_lossy(&cli.stdout).contains("NOT applied"), "polcd status shows the failure");

    // A policy over capacity (20,000 entries for app1, the limit is 16,384):
    // refused at resolution, the error names the rule, version 1 enforces.
    let ports: Vec<String> = (2..40_002).step_by(2).map(|p| format!("tcp/{p}")).collect();
    let big = format!(
        "policy big {{\n  select {{id=app1}}\n  ingress {{\n    allow many: from {{id=app2}} on {}\n  }}\n}}\n",
        ports.join(", ")
    );
    std::fs::write(policies.join("policy.pol"), big).unwrap_or_else(|e| panic!("{e}"));
    let over = wait_for(&state, &polcd, "the capacity error", |s| {
        s.last_error.as_deref().is_some_and(|e| e.contains("policy entries"))
    });
    println!("over capacity: {}", over.last_error.as_deref().and_then(|e| e.lines().next()).unwrap_or(""));
    assert!(over.last_error.as_deref().is_some_and(|e| e.contains("`many`")), "the error names the rule: {over:?}");
    assert_eq!(over.policy_version, 1);
    assert!(reaches(&node, "app2", 80) && dropped(&node, "app2", 82), "version 1 still enforces");

    // A good change touches app1 only: app2 and app3 are skipped.
    std::fs::write(policies.join("policy.pol"), ONLY_APP3).unwrap_or_else(|e| panic!("{e}"));
    let second = wait_for(&state, &polcd, "version 2", |s| s.policy_version == 2 && s.last_error.is_none());
    let reload = second.last_reload.clone().unwrap_or_else(|| panic!("no reload recorded"));
    println!("reload: {reload:?}");
    assert_eq!((reload.regenerated, reload.skipped), (1, 2), "only app1 regenerated");
    assert!(polcd.log().contains("skipped 2"), "the log says how many were skipped:\n{}", polcd.log());
    let (app3_in, app2_in) = (reaches(&node, "app3", 80), !dropped(&node, "app2", 80));
    assert!(
        app3_in && !app2_in,
        "version 2 enforces: app3 {app3_in}, app2 {app2_in}; {:#?}\nlog:\n{}",
        status(&state),
        polcd.log()
    );
    let app1_status = second.endpoints.iter().find(|e| e.name == "app1").unwrap_or_else(|| panic!("app1"));
    // Same code shape: the running programs got new policy tables.
    assert_eq!((app1_status.generation, app1_status.policy_version), (1, 2));
    assert_eq!(app1_status.last_swap.as_deref(), Some("tables"));
    assert_eq!(reload.tables_swapped, ["app1"]);
    assert!(app1_status.program.as_deref().is_some_and(|p| p.len() >= 8), "status names the object: {app1_status:?}");
    println!("{}", String::from_utf8_lossy(&polcd_cli(&state, &["status"]).stdout));

    // An endpoint added through the socket, with app3's labels.
    add_app4_via_api(&mut node, &state, "id=app3");
    let with_app4 = wait_for(&state, &polcd, "app4 enforcing", |s| all_enforcing(s) && s.endpoints.len() == 4);
    let app4 = with_app4.endpoints.iter().find(|e| e.name == "app4").unwrap_or_else(|| panic!("app4"));
    let app3 = with_app4.endpoints.iter().find(|e| e.name == "app3").unwrap_or_else(|| panic!("app3"));
    assert_eq!((app4.source.as_str(), app4.identity), ("api", app3.identity), "same labels, same identity");
    assert!(reaches(&node, "app4", 80), "app4 is app3 to app1's policy");
    let listed = polcd_cli(&state, &["endpoint", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("app4"));
    let duplicate = polcd_cli(&state, &["endpoint", "add", "app1", "--iface", "x", "--ipv4", "10.200.1.99"]);
    assert_eq!(duplicate.status.code(), Some(1), "an existing name is refused");
    let same_address = polcd_cli(&state, &["endpoint", "add", "app5", "--iface", "x", "--ipv4", "10.200.1.12"]);
    let refusal = String::from_utf8_lossy(&same_address.stderr);
    assert!(
        same_address.status.code() == Some(1) && refusal.contains("`app2`"),
        "an address in use is refused: {refusal}"
    );

    // The socket speaks JSON lines: several requests on one connection, and
    // a request it does not know is answered with an error.
    let mut socket = UnixStream::connect(api::socket_path(&state)).unwrap_or_else(|e| panic!("{e}"));
    socket.write_all(b"{\"cmd\":\"endpoint_list\"}\n{\"cmd\":\"reboot\"}\n").unwrap_or_else(|e| panic!("{e}"));
    let mut lines = BufReader::new(socket).lines();
    let mut answer = || -> serde_json::Value {
        let line = lines.next().and_then(|l| l.ok()).unwrap_or_else(|| panic!("no answer"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let (listed, unknown) = (answer(), answer());
    assert_eq!(listed["ok"], true);
    assert_eq!(listed["endpoints"].as_array().map(Vec::len), Some(4));
    assert_eq!(unknown["ok"], false);
    assert!(unknown["error"].as_str().is_some_and(|e| e.contains("bad request")), "{unknown}");
    let deleted = polcd_cli(&state, &["endpoint", "del", "app4"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    assert!(!pins.join("endpoints").join("app4").exists(), "app4's links and pins are gone");
    assert_eq!(status(&state).map(|s| s.endpoints.len()), Some(3));

    // app1's veth deleted and made again (a container restart): its links
    // went with the old device; polcd attaches a fresh generation.
    let regenerated_at = |s: &polc_runtime::agent::api::AgentStatus| {
        s.endpoints.iter().find(|e| e.name == "app1").and_then(|e| e.last_regeneration_ms)
    };
    let before = status(&state).and_then(|s| regenerated_at(&s));
    node.lab.remove_endpoint("app1").unwrap_or_else(|e| panic!("{e}"));
    let spec = EndpointSpec {
        name: "app1".into(),
        host_iface: "polc-app1".into(),
        ipv4: Some([10, 200, 1, 11].into()),
        ipv6: None,
    };
    node.lab.add_endpoint(spec).unwrap_or_else(|e| panic!("{e}"));
    let generation_of_app1 = |s: &polc_runtime::agent::api::AgentStatus| {
        s.endpoints.iter().find(|e| e.name == "app1").map_or(0, |e| e.generation)
    };
    // (The table swap above kept generation 1: wait for a new regeneration.)
    wait_for(&state, &polcd, "app1 attached afresh", |s| {
        all_enforcing(s) && generation_of_app1(s) == 1 && regenerated_at(s) > before
    });
    let after = status(&state);
    assert!(
        polcd.log().contains("the device of `app1` is gone or was made again"),
        "status {after:#?}\nlog:\n{}",
        polcd.log()
    );
    assert!(reaches(&node, "app3", 80) && dropped(&node, "app2", 80), "the new device is enforced");

    // kill -9: enforcement goes on; a new polcd adopts the links.
    polcd.kill();
    assert!(reaches(&node, "app3", 80) && dropped(&node, "app2", 80), "enforcement outlives polcd");
    let mut polcd = Polcd::start(&policies, &state, node.lab.node_ns(), &pins);
    let adopted = wait_for(&state, &polcd, "adoption", all_enforcing);
    assert!(polcd.log().contains("adopted `app1`"), "log:\n{}", polcd.log());
    let app1_status = adopted.endpoints.iter().find(|e| e.name == "app1").unwrap_or_else(|| panic!("app1"));
    assert_eq!(app1_status.generation, 2, "the adopted links were swapped to a fresh generation");
    assert!(reaches(&node, "app3", 80) && dropped(&node, "app2", 80), "still enforcing after adoption");

    // reset: refused while running; afterwards nothing is left.
    assert_eq!(polcd_cli(&state, &["reset"]).status.code(), Some(2), "reset refuses while polcd runs");
    polcd.kill();
    println!("polcd log:\n{}", polcd.log());
    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    println!("reset: {}", String::from_utf8_lossy(&reset.stdout).trim());
    assert!(!pins.exists(), "every pin is removed");
    assert!(reaches(&node, "app2", 80) && reaches(&node, "app2", 81), "no program is left attached");
    node.enforced.clear();
}
