//! Hot swap under load on real veths: while a UDP flow of at least 10,000
//! packets/s runs from app2 to app1, app1's programs are swapped between two
//! policy versions (different code shapes) that both allow that flow and
//! both deny a second flow from app3. Every allowed packet arrives, no
//! denied packet does, and each swap takes effect. A swap that fails (an
//! object that does not load) leaves the running programs enforcing.

#![allow(clippy::panic)]
mod support;

use support::matrix::REACH_TIMEOUT;

use polc_runtime::datapath::Direction;
use polc_runtime::netlab::require_kernel;
use polc_runtime::swap::Artifact;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{count, receiver, send, two_versions, TwoVersions};

const SWAPS: usize = 200;
const ALLOWED_PORT: u16 = 5000;
const DENIED_PORT: u16 = 5001;

/// Both versions allow app2 -> app1 udp/5000 and deny app3 (default deny);
/// they differ in another rule, and v2 has a deny rule (another code shape).
const V1: &str = "policy hot {\n  select {id=app1}\n  ingress {\n    allow flow: from {id=app2} on udp/5000\n    allow web: from {id=app2} on tcp/80\n  }\n}\n";
const V2: &str = "policy hot {\n  select {id=app1}\n  ingress {\n    allow flow: from {id=app2} on udp/5000\n    deny web: from {id=app2} on tcp/80\n  }\n}\n";

#[test]
fn swaps_under_load_lose_nothing_allowed_and_pass_nothing_denied() {
    if !require_kernel("swaps_under_load_lose_nothing_allowed_and_pass_nothing_denied") {
        return;
    }
    let TwoVersions { mut node, set: set1, versions } = two_versions("hotswap", V1, V2);
    assert_ne!(versions[0].object, versions[1].object, "the versions have different code shapes");

    let app1 = set1.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let t = Duration::from_millis(400);
    assert!(
        node.lab.tcp_reaches("app2", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")),
        "v1 allows tcp/80"
    );

    let ns = |name: &str| node.lab.endpoint(name).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let stop_receivers = Arc::new(AtomicBool::new(false));
    let stop_senders = Arc::new(AtomicBool::new(false));
    let allowed_rx = count(receiver(&ns("app1"), app1, ALLOWED_PORT), stop_receivers.clone());
    let denied_rx = count(receiver(&ns("app1"), app1, DENIED_PORT), stop_receivers.clone());
    let allowed_tx = send(&ns("app2"), SocketAddr::new(app1, ALLOWED_PORT), stop_senders.clone());
    let denied_tx = send(&ns("app3"), SocketAddr::new(app1, DENIED_PORT), stop_senders.clone());

    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut swap_times = Vec::with_capacity(SWAPS);
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1 enforced"));
    for i in 0..SWAPS {
        let t0 = Instant::now();
        enforced.swap(&versions[(i + 1) % 2]).unwrap_or_else(|e| panic!("swap {i}: {e}"));
        swap_times.push(t0.elapsed());
        // The versions differ in ingress only: egress keeps its programs.
        let loaded = enforced.current().map(|c| c.loaded().to_vec());
        assert_eq!(loaded, Some(vec![Direction::Ingress]), "swap {i} loads the ingress programs only");
    }
    let swapping = started.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    stop_senders.store(true, Ordering::SeqCst);
    let (allowed_sent, denied_sent) = (allowed_tx.join().unwrap_or(0), denied_tx.join().unwrap_or(0));
    std::thread::sleep(Duration::from_millis(200));
    stop_receivers.store(true, Ordering::SeqCst);
    let (allowed_received, denied_received) = (allowed_rx.join().unwrap_or(0), denied_rx.join().unwrap_or(0));

    swap_times.sort();
    let rate = allowed_sent as f64 / (swapping + Duration::from_millis(200)).as_secs_f64();
    println!(
        "hot swap: {SWAPS} swaps in {swapping:?} (per swap: median {:?}, max {:?}); allowed flow {allowed_sent} sent, \
         {allowed_received} received, {} lost (~{rate:.0} packets/s); denied flow {denied_sent} sent, {denied_received} delivered",
        swap_times[SWAPS / 2],
        swap_times[SWAPS - 1],
        allowed_sent - allowed_received.min(allowed_sent),
    );
    assert!(rate >= 10_000.0, "the flow ran at {rate:.0} packets/s");
    assert_eq!(allowed_received, allowed_sent, "no allowed packet lost");
    assert!(denied_sent > 1000, "the denied flow ran");
    assert_eq!(denied_received, 0, "no denied packet delivered");
    assert_eq!(enforced.generation(), SWAPS as u64 + 1);

    // The links run the last version: an even count ends on v1 (tcp/80
    // allowed); one more swap to v2 denies it.
    assert!(node.lab.tcp_reaches("app2", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")), "v1 again");
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1 enforced"));
    enforced.swap(&versions[1]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!node.lab.tcp_reaches("app2", app1, 80, t).unwrap_or_else(|e| panic!("{e}")), "v2 denies tcp/80");

    // All or nothing: an object that does not load, and constants the
    // object lacks, are errors; v2 keeps enforcing and nothing new stays pinned.
    let garbage = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(garbage.path(), b"not an ELF object").unwrap_or_else(|e| panic!("{e}"));
    let broken = Artifact { object: garbage.path().to_path_buf(), ..versions[0].clone() };
    let enforced = node.enforced.get_mut("app1").unwrap_or_else(|| panic!("app1 enforced"));
    let before = enforced.generation();
    assert!(enforced.swap(&broken).is_err(), "a broken object is refused");
    let mut bad_constants = versions[0].clone();
    bad_constants.constants.push(("no_such_constant".into(), vec![0; 4]));
    let error = enforced.swap(&bad_constants).err().unwrap_or_else(|| panic!("unknown constant accepted"));
    println!("refused swaps: {error}");
    assert_eq!(enforced.generation(), before);
    let generations: Vec<_> = std::fs::read_dir(enforced.dir())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("gen-"))
        .collect();
    assert_eq!(generations, vec![format!("gen-{before}")], "only the running generation is pinned");
    assert!(!node.lab.tcp_reaches("app2", app1, 80, t).unwrap_or_else(|e| panic!("{e}")), "v2 still enforces");
    assert!(
        node.lab.udp_reaches("app2", app1, ALLOWED_PORT, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")),
        "and still allows the flow"
    );
}
