//! A code-shape change that changes one direction's programs only reloads
//! that direction: the other direction's link keeps its program, its maps
//! are carried into the new generation (pinned again under it), and its
//! new entries are installed in its running tables. Real kernel, real
//! veths; needs root (skipped with a reason otherwise).
//!
//! app1's policy has two versions: VA allows app3 on tcp/8080, VB denies it
//! (a deny rule: another code shape). Both enforce ingress only: the egress
//! programs (not enforced) are the same code in both objects, the ingress
//! ones are not.

#![allow(clippy::panic)]
mod support;

use support::matrix::REACH_TIMEOUT;

use polc_runtime::agent::api::{AgentStatus, EndpointStatus};
use polc_runtime::datapath::Direction;
use polc_runtime::netlab::require_kernel;
use polc_runtime::swap::Artifact;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use support::{all_enforcing, policy_dir, resolve_dir, two_versions, wait_for, Flow, Flows, Node, Polcd, TwoVersions};

const T: Duration = Duration::from_millis(400);
const FLOW_PORT: u16 = 5000;
const DENIED_PORT: u16 = 5001;

const VA: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n    allow alt: from {id=app3} on tcp/8080\n  }\n}\n";
const VB: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n    deny alt: from {id=app3} on tcp/8080\n  }\n}\n";
/// VA's code shape, other entries (app3 on tcp/9090).
const VA2: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n    allow alt: from {id=app3} on tcp/9090\n  }\n}\n";

/// Both directions enforced: VC enforces ingress (app2 on tcp/80) and
/// egress (to app2 on tcp/80); VD enforces egress only (to app2 and app3 on
/// tcp/80). The egress features do not change, its code layout does.
const VC: &str = "policy t {\n  select {id=app1}\n  ingress {\n    allow web: from {id=app2} on tcp/80\n  }\n  egress {\n    allow out: to {id=app2} on tcp/80\n  }\n}\n";
const VD: &str = "policy t {\n  select {id=app1}\n  egress {\n    allow out: to {id=app2} on tcp/80\n    allow out3: to {id=app3} on tcp/80\n  }\n}\n";

fn address(set: &polc::sema::model::PolicySet, name: &str) -> IpAddr {
    set.inventory.endpoint(name).and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("{name}"))
}

/// The program id of each direction's link, from the pins.
fn ids(dir: &Path) -> [u32; 2] {
    let ids = support::program_ids(dir);
    [ids[0], ids[1]]
}

/// Whether `from` reaches `to` on tcp/`port` (real connections; expected
/// to, so given time: see [`REACH_TIMEOUT`]).
fn reaches(node: &Node, set: &polc::sema::model::PolicySet, from: &str, to: &str, port: u16) -> bool {
    node.lab.tcp_reaches(from, address(set, to), port, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `from`'s connection to `to` on tcp/`port` goes unanswered for [`T`].
fn dropped(node: &Node, set: &polc::sema::model::PolicySet, from: &str, to: &str, port: u16) -> bool {
    !node.lab.tcp_reaches(from, address(set, to), port, T).unwrap_or_else(|e| panic!("{e}"))
}

/// What each version enforces, in both directions (egress: not enforced).
fn check_va(node: &Node, set: &polc::sema::model::PolicySet) {
    assert!(reaches(node, set, "app2", "app1", 80) && dropped(node, set, "app3", "app1", 80), "VA: app2 on 80");
    assert!(reaches(node, set, "app3", "app1", 8080), "VA: app3 on 8080");
    assert!(reaches(node, set, "app1", "app3", 8080), "egress not enforced");
}

fn check_vb(node: &Node, set: &polc::sema::model::PolicySet) {
    assert!(reaches(node, set, "app2", "app1", 80) && dropped(node, set, "app3", "app1", 8080), "VB: app3 denied");
    assert!(reaches(node, set, "app1", "app3", 8080), "egress not enforced");
}

fn gen_dirs(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("gen-"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_change_of_one_direction_reloads_that_direction_only() {
    if !require_kernel("a_change_of_one_direction_reloads_that_direction_only") {
        return;
    }
    let (dir_a, dir_b, dir_a2) = (policy_dir(VA), policy_dir(VB), policy_dir(VA2));
    let (set_a, resolved_a) = resolve_dir(dir_a.path());
    let (set_b, resolved_b) = resolve_dir(dir_b.path());
    let (set_a2, resolved_a2) = resolve_dir(dir_a2.path());
    let mut node = Node::new("partial", &set_a);
    node.enforce_all(&set_a, &resolved_a);
    let versions: [Artifact; 2] =
        [node.artifact(&set_a, &resolved_a, "app1"), node.artifact(&set_b, &resolved_b, "app1")];
    assert_ne!(versions[0].object, versions[1].object, "two code shapes");
    let dir = node.endpoint_dir("app1");
    check_va(&node, &set_a);
    let [ingress_1, egress_1] = ids(&dir);

    // VA -> VB: the ingress programs change, the egress ones do not.
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
    enforced.swap(&versions[1]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded(&node), vec![Direction::Ingress], "only the ingress programs are loaded");
    let [ingress_2, egress_2] = ids(&dir);
    assert_ne!(ingress_2, ingress_1, "the ingress link runs a new program");
    assert_eq!(egress_2, egress_1, "the egress link keeps its program");
    // The new generation holds every map the running programs read: the
    // kept egress maps pinned again, the ingress ones its own.
    assert_eq!(gen_dirs(&dir), vec!["gen-2".to_string()]);
    for map in ["ep_calls_eg", "ep_metrics", "ep_calls_in", "ep_pol_in", "ep_pol_in_a", "ep_pol_in_b"] {
        assert!(dir.join("gen-2").join(map).exists(), "gen-2/{map} is pinned");
    }
    check_vb(&node, &set_b);

    // Swaps back and forth under a flow through the kept direction (app1 ->
    // app2) and one the ingress policy denies in both versions (app3 ->
    // app1 udp/5001): nothing allowed is lost, nothing denied passes.
    let ns = |name: &str| node.lab.endpoint(name).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let (ns1, ns2, ns3) = (ns("app1"), ns("app2"), ns("app3"));
    let flows = Flows::start(
        Flow { from_ns: &ns1, to_ns: &ns2, to: address(&set_a, "app2"), port: FLOW_PORT },
        Flow { from_ns: &ns3, to_ns: &ns1, to: address(&set_a, "app1"), port: DENIED_PORT },
    );
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..41 {
        let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
        enforced.swap(&versions[i % 2]).unwrap_or_else(|e| panic!("swap {i}: {e}"));
        assert_eq!(loaded(&node), vec![Direction::Ingress], "swap {i}");
    }
    std::thread::sleep(Duration::from_millis(100));
    let counts = flows.stop();
    println!("41 one-direction swaps: {counts}");
    assert!(counts.allowed_sent > 1000 && counts.denied_sent > 1000, "the flows ran: {counts}");
    assert_eq!(counts.allowed_received, counts.allowed_sent, "no allowed packet lost");
    assert_eq!(counts.denied_received, 0, "no denied packet delivered");
    assert_eq!(ids(&dir)[1], egress_1, "the egress link still runs generation 1's program");
    check_va(&node, &set_a);

    // The same code under another file name, other entries: no program is
    // loaded; the running ingress tables get the new entries.
    let copy = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut renamed = node.artifact(&set_a2, &resolved_a2, "app1");
    assert_eq!(renamed.object, versions[0].object, "VA2 has VA's code shape");
    let object = copy.path().join("renamed.o");
    std::fs::copy(&renamed.object, &object).unwrap_or_else(|e| panic!("{e}"));
    renamed.object = object;
    let before = ids(&dir);
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
    enforced.swap(&renamed).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded(&node), Vec::<Direction>::new(), "no program loaded");
    assert_eq!(ids(&dir), before, "both links keep their programs");
    assert!(reaches(&node, &set_a2, "app3", "app1", 9090), "VA2's entries enforce");
    assert!(dropped(&node, &set_a2, "app3", "app1", 8080), "VA2's entries enforce");
}

/// The directions app1's running generation loaded.
fn loaded(node: &Node) -> Vec<Direction> {
    let enforced = node.enforced.get("app1").unwrap_or_else(|| panic!("app1"));
    enforced.current().map(|c| c.loaded().to_vec()).unwrap_or_else(|| panic!("app1 loaded by this process"))
}

#[test]
fn a_one_direction_swap_whose_link_update_fails_changes_nothing() {
    if !require_kernel("a_one_direction_swap_whose_link_update_fails_changes_nothing") {
        return;
    }
    let TwoVersions { mut node, set: set_a, versions: [_, vb] } = two_versions("partfail", VA, VB);
    let dir = node.endpoint_dir("app1");
    let [_, egress] = ids(&dir);
    // The ingress link (the only one the swap updates) is detached behind
    // polc's back: its update fails.
    libbpf_rs::Link::open(polc_runtime::attach::link_pin(&dir, Direction::Ingress))
        .and_then(|l| l.detach())
        .unwrap_or_else(|e| panic!("{e}"));
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
    let error = enforced.swap(&vb).err().unwrap_or_else(|| panic!("a swap into a detached link succeeded"));
    println!("refused: {error}");
    assert_eq!(enforced.generation(), 1);
    assert_eq!(loaded(&node), Direction::BOTH.to_vec(), "generation 1 still current");
    assert_eq!(gen_dirs(&dir), vec!["gen-1".to_string()], "the new generation's pins are gone");
    for map in ["ep_calls_eg", "ep_metrics"] {
        assert!(dir.join("gen-1").join(map).exists(), "the running gen-1/{map} stays pinned");
    }
    let link = libbpf_rs::Link::open(polc_runtime::attach::link_pin(&dir, Direction::Egress))
        .and_then(|l| l.info())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(link.prog_id, egress, "the egress link runs generation 1");
    assert!(reaches(&node, &set_a, "app1", "app3", 8080), "egress still passes");
}

/// A process killed between loading a generation (ingress only, egress
/// kept) and switching to it leaves that generation pinned, not running:
/// adoption finds the generation the links run (by the maps their programs
/// use), and a table swap of the adopted endpoint changes what is enforced.
#[test]
fn adoption_finds_the_running_generation_past_one_loaded_and_not_switched_to() {
    if !require_kernel("adoption_finds_the_running_generation_past_one_loaded_and_not_switched_to") {
        return;
    }
    let TwoVersions { node, set, versions: [_, vb] } = two_versions("partcrash", VA, VB);
    let dir = node.endpoint_dir("app1");
    let node_pins = node.pins.node_maps();
    let enforced = node.enforced.get("app1").unwrap_or_else(|| panic!("app1"));
    let running = enforced.running();
    let next = polc_runtime::swap::load_generation(&vb, &node_pins, &dir, 2, running.as_ref(), 1)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.loaded.loaded(), [Direction::Ingress], "ingress loaded, egress kept");
    drop(next);
    assert_eq!(gen_dirs(&dir), vec!["gen-1".to_string(), "gen-2".to_string()]);

    let mut adopted = polc_runtime::swap::Enforced::adopt(&node_pins, &dir, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(adopted.generation(), 1, "the links run generation 1, not the newest pinned");
    let va2_dir = policy_dir(VA2);
    let (set2, resolved2) = resolve_dir(va2_dir.path());
    let va2 = node.artifact(&set2, &resolved2, "app1");
    adopted.swap_tables(&va2).unwrap_or_else(|e| panic!("{e}"));
    assert!(reaches(&node, &set, "app3", "app1", 9090), "VA2 enforces: app3 on 9090");
    assert!(dropped(&node, &set, "app3", "app1", 8080), "VA2 enforces: not on 8080");
}

/// With both directions enforced, a change of the ingress code shape keeps
/// the egress programs (same features, same maps: the builder's word, since
/// clang lays them out differently) and installs the egress table change
/// with the switch; a swap whose link update fails puts that table back.
#[test]
fn with_both_directions_enforced_a_change_of_one_keeps_the_other() {
    if !require_kernel("with_both_directions_enforced_a_change_of_one_keeps_the_other") {
        return;
    }
    let TwoVersions { mut node, set: set_c, versions: [vc, vd] } = two_versions("partboth", VC, VD);
    let dir = node.endpoint_dir("app1");
    let check_vc = |node: &Node| {
        assert!(reaches(node, &set_c, "app2", "app1", 80) && dropped(node, &set_c, "app3", "app1", 80), "VC in");
        assert!(reaches(node, &set_c, "app1", "app2", 80) && dropped(node, &set_c, "app1", "app3", 80), "VC out");
    };
    let check_vd = |node: &Node| {
        assert!(reaches(node, &set_c, "app3", "app1", 80), "VD: ingress not enforced");
        assert!(reaches(node, &set_c, "app1", "app2", 80) && reaches(node, &set_c, "app1", "app3", 80), "VD out");
    };
    check_vc(&node);
    let [ingress_1, egress_1] = ids(&dir);

    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
    enforced.swap(&vd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded(&node), vec![Direction::Ingress], "the egress programs are kept");
    let [ingress_2, egress_2] = ids(&dir);
    assert!(ingress_2 != ingress_1 && egress_2 == egress_1, "{ingress_1}->{ingress_2} {egress_1}->{egress_2}");
    for map in ["ep_pol_eg", "ep_pol_eg_a", "ep_pol_eg_b", "ep_calls_eg", "ep_metrics", "ep_calls_in"] {
        assert!(dir.join("gen-2").join(map).exists(), "gen-2/{map} is pinned");
    }
    check_vd(&node);

    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
    enforced.swap(&vc).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded(&node), vec![Direction::Ingress]);
    assert_eq!(ids(&dir)[1], egress_1, "still generation 1's egress program");
    check_vc(&node);

    // The ingress link is detached behind polc's back: VD's swap installs
    // the egress table, fails to update the ingress link, puts it back.
    libbpf_rs::Link::open(polc_runtime::attach::link_pin(&dir, Direction::Ingress))
        .and_then(|l| l.detach())
        .unwrap_or_else(|e| panic!("{e}"));
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
    let error = enforced.swap(&vd).err().unwrap_or_else(|| panic!("a swap into a detached link succeeded"));
    println!("refused: {error}");
    assert_eq!(enforced.generation(), 3);
    assert_eq!(gen_dirs(&dir), vec!["gen-3".to_string()]);
    assert!(dropped(&node, &set_c, "app1", "app3", 80), "VC's egress table is back");
    assert!(reaches(&node, &set_c, "app1", "app2", 80), "VC's egress table is back");
}

fn app1(status: &AgentStatus) -> EndpointStatus {
    status.endpoints.iter().find(|e| e.name == "app1").cloned().unwrap_or_else(|| panic!("app1 in {status:?}"))
}

/// polcd applies VA -> VB by loading the ingress programs only (status says
/// so); killed with SIGKILL, enforcement goes on; a new polcd adopts the
/// mixed generation (egress programs from generation 1, ingress from 2,
/// every map pinned under gen-2), and its changes apply.
#[test]
fn polcd_adopts_an_endpoint_after_a_one_direction_swap() {
    if !require_kernel("polcd_adopts_an_endpoint_after_a_one_direction_swap") {
        return;
    }
    let work = policy_dir(VA);
    let policies = work.path();
    let (set, _) = resolve_dir(policies);
    let node = Node::new("partadopt", &set);
    let pins = node.pins.path().to_path_buf();
    let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = state.path().join("state");
    let dir = node.endpoint_dir("app1");
    let mut polcd = Polcd::start(policies, &state, node.lab.node_ns(), &pins);
    wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);
    let [_, egress_1] = ids(&dir);
    let first = wait_for(&state, &polcd, "app1 loaded both directions", |s| {
        app1(s).loaded_directions == Some(vec!["ingress".to_string(), "egress".to_string()])
    });
    assert_eq!(app1(&first).generation, 1);

    std::fs::write(policies.join("policy.pol"), VB).unwrap_or_else(|e| panic!("{e}"));
    let after = wait_for(&state, &polcd, "VB applied", |s| app1(s).generation == 2);
    let app1_now = app1(&after);
    assert_eq!(app1_now.loaded_directions, Some(vec!["ingress".to_string()]), "{app1_now:?}");
    assert_eq!(app1_now.last_swap.as_deref(), Some("program"));
    assert_eq!(ids(&dir)[1], egress_1, "egress kept");
    let text = String::from_utf8_lossy(&support::polcd_cli(&state, &["status"]).stdout).into_owned();
    let app1_line = text.lines().find(|l| l.starts_with("app1 ")).unwrap_or_default();
    assert!(app1_line.contains("program (ingress)"), "polcd status names the loaded direction:\n{text}");
    check_vb(&node, &set);

    polcd.kill();
    check_vb(&node, &set);
    let polcd = Polcd::start(policies, &state, node.lab.node_ns(), &pins);
    // It adopts generation 2 (egress programs of generation 1, ingress of
    // 2, every map under gen-2), then loads its own generation 3 of both
    // directions (it does not know what the adopted programs are made of).
    let restarted = wait_for(&state, &polcd, "restart", |s| all_enforcing(s) && app1(s).generation == 3);
    assert!(polcd.log().contains("adopted `app1` (generation 2)"), "{}", polcd.log());
    assert_eq!(app1(&restarted).loaded_directions, Some(vec!["ingress".to_string(), "egress".to_string()]));
    assert_eq!(gen_dirs(&dir), vec!["gen-3".to_string()]);
    check_vb(&node, &set);

    // Its next change of one direction keeps the other again.
    let [_, egress_3] = ids(&dir);
    std::fs::write(policies.join("policy.pol"), VA).unwrap_or_else(|e| panic!("{e}"));
    let after = wait_for(&state, &polcd, "VA applied", |s| app1(s).generation == 4);
    assert_eq!(app1(&after).loaded_directions, Some(vec!["ingress".to_string()]));
    assert_eq!(ids(&dir)[1], egress_3, "egress kept");
    assert_eq!(gen_dirs(&dir), vec!["gen-4".to_string()]);
    check_va(&node, &set);
    drop(polcd);
    let reset = support::polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert!(!dir.exists(), "reset removes the endpoint's pins");
}
