//! How the agent applies a policy change on real veths: a change that keeps
//! an endpoint's code shape swaps its policy tables only (the links keep the
//! same programs, the generation stays), a change of code shape loads a new
//! generation and switches the links; either way real TCP connections see
//! the new verdicts, and the status says which kind of swap happened. Runs
//! the agent in this process (`Agent::reload`, what polcd calls after the
//! debounce). Needs root (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use support::matrix::REACH_TIMEOUT;

use polc_runtime::agent::api::{AgentStatus, EndpointStatus};
use polc_runtime::agent::daemon::Agent;
use polc_runtime::netlab::require_kernel;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use support::{policy_dir, program_ids, resolve_dir, Node};

/// V1 and V2 have one code shape (allow rules only); V3 adds a deny rule,
/// another code shape.
const V1: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n  }\n}\n";
const V2: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow alt: from {id=app2} on tcp/8080\n  }\n}\n";
/// V2 and a second allow rule: more rules, the same code shape.
const V2B: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow alt: from {id=app2} on tcp/8080\n    allow web3: from {id=app3} on tcp/80\n  }\n}\n";
const V3: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n    deny no3: from {id=app3} on tcp/80\n  }\n}\n";

fn app1(status: &AgentStatus) -> EndpointStatus {
    status.endpoints.iter().find(|e| e.name == "app1").cloned().unwrap_or_else(|| panic!("app1 in {status:?}"))
}

/// Writes `policy` and has the agent reload; the change must apply.
fn change(agent: &mut Agent, policies: &Path, policy: &str) -> AgentStatus {
    std::fs::write(policies.join("policy.pol"), policy).unwrap_or_else(|e| panic!("{e}"));
    agent.reload();
    let status = agent.status();
    assert!(status.last_error.is_none(), "the change applies: {:?}", status.last_error);
    status
}

#[test]
fn table_only_changes_keep_the_programs_and_shape_changes_load_new_ones() {
    if !require_kernel("table_only_changes_keep_the_programs_and_shape_changes_load_new_ones") {
        return;
    }
    let work = policy_dir(V1);
    let policies = work.path();
    let (set, _) = resolve_dir(policies);
    let node = Node::new("agentswap", &set);
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = support::agent_config(policies, state.path(), node.lab.node_ns(), node.pins.path());
    let mut agent = Agent::start(config).unwrap_or_else(|e| panic!("{e}"));
    let target = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let t = Duration::from_millis(400);
    let reaches =
        |from: &str, port| node.lab.tcp_reaches(from, target, port, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let dropped = |from: &str, port| !node.lab.tcp_reaches(from, target, port, t).unwrap_or_else(|e| panic!("{e}"));
    let dir = node.endpoint_dir("app1");
    let first = app1(&agent.status());
    let programs = program_ids(&dir);
    assert_eq!((first.generation, first.last_swap.as_deref()), (1, Some("program")), "{first:?}");
    assert!(reaches("app2", 80) && dropped("app2", 8080), "V1 enforces");

    // Same code shape: new tables under the same programs.
    let second = change(&mut agent, policies, V2);
    let reload = second.last_reload.clone().unwrap_or_else(|| panic!("no reload recorded"));
    assert_eq!((reload.regenerated_endpoints, reload.tables_swapped), (vec!["app1".into()], vec!["app1".into()]));
    let app1_now = app1(&second);
    assert_eq!((app1_now.generation, app1_now.last_swap.as_deref()), (1, Some("tables")), "{app1_now:?}");
    assert_eq!(app1_now.program, first.program, "same object");
    assert_eq!(program_ids(&dir), programs, "the links run the same programs");
    assert!(dropped("app2", 80) && reaches("app2", 8080), "V2 enforces");

    // A rule added: still a table swap (the counter array has room for it).
    let more = change(&mut agent, policies, V2B);
    let app1_now = app1(&more);
    assert_eq!((app1_now.generation, app1_now.last_swap.as_deref()), (1, Some("tables")), "{app1_now:?}");
    assert_eq!(program_ids(&dir), programs, "the links run the same programs");
    assert!(reaches("app3", 80) && reaches("app2", 8080) && dropped("app2", 80), "V2B enforces");

    // A deny rule: another code shape, a new generation with new programs.
    let third = change(&mut agent, policies, V3);
    let reload = third.last_reload.clone().unwrap_or_else(|| panic!("no reload recorded"));
    assert!(reload.tables_swapped.is_empty(), "{reload:?}");
    let app1_now = app1(&third);
    assert_eq!((app1_now.generation, app1_now.last_swap.as_deref()), (2, Some("program")), "{app1_now:?}");
    assert_ne!(app1_now.program, first.program, "another object");
    let new_programs = program_ids(&dir);
    // The ingress programs are new; the egress ones (not enforced) are the
    // same code, and the counter array has room for the second rule: kept.
    assert_ne!(new_programs[0], programs[0], "new ingress programs: {programs:?} -> {new_programs:?}");
    assert_eq!(new_programs[1], programs[1], "egress kept: {programs:?} -> {new_programs:?}");
    assert_eq!(app1_now.loaded_directions, Some(vec!["ingress".to_string()]), "{app1_now:?}");
    assert!(reaches("app2", 80) && dropped("app2", 8080) && dropped("app3", 80), "V3 enforces");

    // Back to V2's shape: the shape changes again, so does the program.
    let fourth = change(&mut agent, policies, V2);
    assert_eq!(app1(&fourth).generation, 3);
    assert_eq!(app1(&fourth).last_swap.as_deref(), Some("program"));
    assert!(reaches("app2", 8080) && dropped("app2", 80), "V2 enforces again");
    drop(agent);
}
