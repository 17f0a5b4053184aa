//! Every example enforced with tcx on real veths: the live connectivity
//! matrix (TCP, UDP, ICMP; IPv4 and IPv6) equals polc's reference evaluator
//! for every pair and several ports; in l3-l4-rule, replies pass where the
//! reverse direction is denied. Needs root (skipped with a reason
//! otherwise, a failure under CI=true).

#![allow(clippy::panic)]
mod support;

use polc::sema::model::PolicySet;
use polc_runtime::netlab::{bind_retrying, in_netns, require_kernel, Lab};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::matrix::{expected, live_matrix, Probes, REACH_TIMEOUT, TCP, TIMEOUT};
use support::{example_dir, resolve_dir, Node};

/// Enforces an example on a lab of its inventory and compares the live
/// matrix with the evaluator; returns the node for further checks.
fn example_matches_the_evaluator(example: &str, probes: &Probes) -> (PolicySet, Node) {
    let (set, resolved) = resolve_dir(&example_dir(example));
    let mut node = Node::new(example, &set);
    node.enforce_all(&set, &resolved);
    let (count, mismatches) = live_matrix(&set, &node.lab, probes);
    println!("{example} live matrix: {count} probes, {} mismatches", mismatches.len());
    assert!(mismatches.is_empty(), "{example}: live verdicts differ from the evaluator:\n{}", mismatches.join("\n"));
    (set, node)
}

/// A TCP exchange from `from` to `to:port`: the client sends, the server
/// answers; true when both messages arrive (expected to: given time, see
/// [`REACH_TIMEOUT`]).
fn tcp_exchange(lab: &Lab, from: &str, to: &str, to_addr: IpAddr, port: u16) -> bool {
    let from_ns = lab.endpoint(from).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let to_ns = lab.endpoint(to).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let listener = in_netns(&to_ns, move || bind_retrying(|| TcpListener::bind(SocketAddr::new(to_addr, port))))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The server gives up on its own (a connection that never comes fails
    // the exchange instead of blocking the test).
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + 5 * REACH_TIMEOUT;
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(REACH_TIMEOUT))?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf)?;
        stream.write_all(if &buf == b"ping" { b"pong" } else { b"what" })
    });
    let client = in_netns(&from_ns, move || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::new(to_addr, port), REACH_TIMEOUT)?;
        stream.set_read_timeout(Some(REACH_TIMEOUT))?;
        stream.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf)?;
        Ok(&buf == b"pong")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let exchanged = matches!(client, Ok(true));
    let served = server.join().map(|r| r.is_ok()).unwrap_or(false);
    exchanged && served
}

#[test]
fn l3_l4_rule_on_real_veths_matches_the_evaluator() {
    if !require_kernel("l3_l4_rule_on_real_veths_matches_the_evaluator") {
        return;
    }
    let (set, node) = example_matches_the_evaluator("l3-l4-rule", &Probes { tcp: &[80, 81, 8080], udp: &[53, 80] });
    // The matrix is not trivial: some probes are denied, so the programs enforce.
    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    assert!(!node.lab.tcp_reaches("app3", app1, 80, TIMEOUT).unwrap_or_else(|e| panic!("{e}")));

    // Replies past a denying direction: app1's ingress allows app2 only on
    // tcp/80, yet app1's own connection to app2:8080 carries data both ways.
    let app2 = set.inventory.endpoint("app2").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app2"));
    assert!(!expected(&set, app2, app1, TCP, 8080), "the reverse direction is denied");
    assert!(!node.lab.tcp_reaches("app2", app1, 8080, TIMEOUT).unwrap_or_else(|e| panic!("{e}")));
    assert!(tcp_exchange(&node.lab, "app1", "app2", app2, 8080), "app1 -> app2:8080 exchanges data both ways");
    assert!(node.lab.ping_reaches("app1", app2, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")), "echo replies pass");
}

#[test]
fn deny_demo_on_real_veths_matches_the_evaluator() {
    if !require_kernel("deny_demo_on_real_veths_matches_the_evaluator") {
        return;
    }
    example_matches_the_evaluator("deny-demo", &Probes { tcp: &[80, 443], udp: &[53] });
}

#[test]
fn three_tier_on_real_veths_matches_the_evaluator() {
    if !require_kernel("three_tier_on_real_veths_matches_the_evaluator") {
        return;
    }
    example_matches_the_evaluator("three-tier", &Probes { tcp: &[9000, 8080, 5432, 5433, 9100, 9187], udp: &[53] });
}
