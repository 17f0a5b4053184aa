//! Attaching and swapping fail half way without leaving half an endpoint:
//! a link that cannot be pinned undoes the links attached before it, and a
//! swap whose second direction cannot switch puts the first one back. Real
//! kernel, real veths. Needs root (skipped with a reason otherwise).

#![allow(clippy::panic)]
mod support;

use support::matrix::REACH_TIMEOUT;

use polc_runtime::attach::{link_pin, Attachment};
use polc_runtime::datapath::Direction;
use polc_runtime::loader::all_cpus;
use polc_runtime::netlab::require_kernel;
use polc_runtime::swap::{load_generation, Enforced};
use std::net::IpAddr;
use std::time::Duration;
use support::{example_dir, resolve_dir, Node};

const T: Duration = Duration::from_millis(400);

/// Path length Linux accepts (PATH_MAX less the terminating NUL).
const PATH_MAX: usize = 4095;

#[test]
fn a_link_that_cannot_be_pinned_leaves_nothing_attached() {
    if !require_kernel("a_link_that_cannot_be_pinned_leaves_nothing_attached") {
        return;
    }
    let (set, resolved) = resolve_dir(&example_dir("l3-l4-rule"));
    let node = Node::new("pinfail", &set);
    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let artifact = node.artifact(&set, &resolved, "app1");
    let generation =
        load_generation(&artifact, &node.pins.node_maps(), &node.endpoint_dir("app1"), 1, None, all_cpus())
            .unwrap_or_else(|e| panic!("{e}"));
    // A pin directory so deep that `link_to_ep` (pinned first) fits in
    // PATH_MAX and `link_from_ep` (two bytes longer) does not.
    let mut deep = node.pins.path().join("deep");
    let target = PATH_MAX - "/link_to_ep".len();
    while deep.as_os_str().len() < target - 1 {
        let room = target - deep.as_os_str().len() - 1;
        deep.push("d".repeat(room.clamp(1, 200)));
    }
    assert!((target - 1..=target).contains(&deep.as_os_str().len()));
    std::fs::create_dir_all(&deep).unwrap_or_else(|e| panic!("{e}"));

    let result = Attachment::attach(&generation.loaded, &node.device("app1"), &deep);
    let error = result.err().unwrap_or_else(|| panic!("a pin path over PATH_MAX was accepted"));
    println!("refused: {}", error.to_string().rsplit(": ").next().unwrap_or_default());
    assert!(!link_pin(&deep, Direction::Ingress).exists(), "the first link is unpinned");
    // app1's policy allows only app2 on tcp/80: had the ingress link stayed,
    // app3 would be dropped. Nothing is attached, so it passes.
    assert!(
        node.lab.tcp_reaches("app3", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")),
        "no program is attached"
    );
    generation.discard();
}

#[test]
fn a_swap_that_fails_half_way_keeps_both_directions_on_the_old_programs() {
    if !require_kernel("a_swap_that_fails_half_way_keeps_both_directions_on_the_old_programs") {
        return;
    }
    let (set, resolved) = resolve_dir(&example_dir("l3-l4-rule"));
    let mut node = Node::new("halfswap", &set);
    node.enforce_all(&set, &resolved);
    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let dir = node.endpoint_dir("app1");
    let program_of = |direction| {
        libbpf_rs::Link::open(link_pin(&dir, direction))
            .and_then(|l| l.info())
            .map(|i| i.prog_id)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let before = program_of(Direction::Ingress);
    // The egress link (switched second) is detached behind polc's back:
    // updating it fails with ENOLINK after the ingress link has switched.
    libbpf_rs::Link::open(link_pin(&dir, Direction::Egress)).and_then(|l| l.detach()).unwrap_or_else(|e| panic!("{e}"));

    let artifact = node.artifact(&set, &resolved, "app1");
    let node_pins = node.pins.node_maps();
    let enforced: &mut Enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1"));
    // A generation of both directions (the same artifact over the running
    // one would keep both and switch no link).
    let next = load_generation(&artifact, &node_pins, &dir, enforced.next_generation(), None, all_cpus())
        .unwrap_or_else(|e| panic!("{e}"));
    let error = enforced.switch_to(next).err().unwrap_or_else(|| panic!("a swap into a detached link succeeded"));
    println!("refused: {error}");
    assert_eq!(enforced.generation(), 1);
    assert_eq!(program_of(Direction::Ingress), before, "the ingress link runs generation 1 again");
    assert!(
        node.lab.tcp_reaches("app2", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")),
        "generation 1 enforces"
    );
    assert!(!node.lab.tcp_reaches("app3", app1, 80, T).unwrap_or_else(|e| panic!("{e}")), "generation 1 enforces");
}
