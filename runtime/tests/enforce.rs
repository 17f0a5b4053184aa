//! Every example enforced with tcx on real veths: the live connectivity
//! matrix (TCP, UDP, ICMP; IPv4 and IPv6) equals polc's reference evaluator
//! for every pair and several ports; in l3-l4-rule, replies pass where the
//! reverse direction is denied. Needs root (skipped with a reason
//! otherwise, a failure under CI=true).

#![allow(clippy::panic)]
mod support;

use polc::eval::{evaluate, Flow, FlowPeer, IpProto};
use polc::sema::model::{EndpointDef, PolicySet};
use polc_runtime::netlab::{in_netns, require_kernel, Lab};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use support::{example_dir, resolve_dir, Node};

const TIMEOUT: Duration = Duration::from_millis(400);
const TCP: u8 = 6;
const UDP: u8 = 17;

fn expected(set: &PolicySet, from: IpAddr, to: IpAddr, proto: u8, port: u16) -> bool {
    let flow = Flow { src: FlowPeer::Address(from), dst: FlowPeer::Address(to), proto: IpProto(proto), port };
    evaluate(set, &flow).unwrap_or_else(|e| panic!("{e:?}")).allowed()
}

/// What to probe in an example: TCP ports (all over IPv4, the first also
/// over IPv6), UDP ports (IPv4), and ping over both.
struct Probes {
    tcp: &'static [u16],
    udp: &'static [u16],
}

/// Probes every ordered pair; returns (probes, mismatches as text). One
/// thread per destination (listeners bind in the destination's namespace,
/// so threads never collide); sources take turns.
fn live_matrix(set: &PolicySet, lab: &Lab, probes: &Probes) -> (usize, Vec<String>) {
    let endpoints = &set.inventory.endpoints;
    let per_destination: Vec<(usize, Vec<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> =
            endpoints.iter().map(|to| scope.spawn(move || probe_destination(set, lab, probes, to))).collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| panic!("a probe thread panicked"))).collect()
    });
    let count = per_destination.iter().map(|(n, _)| n).sum();
    (count, per_destination.into_iter().flat_map(|(_, m)| m).collect())
}

fn probe_destination(set: &PolicySet, lab: &Lab, probes: &Probes, to: &EndpointDef) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut mismatches = Vec::new();
    for from in set.inventory.endpoints.iter().filter(|f| f.name != to.name) {
        let v4 = (from.ipv4.map(IpAddr::V4), to.ipv4.map(IpAddr::V4));
        let v6 = (from.ipv6.map(IpAddr::V6), to.ipv6.map(IpAddr::V6));
        for (src, dst) in [v4, v6] {
            let (Some(src), Some(dst)) = (src, dst) else { continue };
            let mut check = |what: String, live: bool, want: bool| {
                count += 1;
                if live != want {
                    mismatches.push(format!("{} -> {} {what}: live {live}, evaluator {want}", from.name, to.name));
                }
            };
            let tcp = if dst.is_ipv4() { probes.tcp } else { &probes.tcp[..1] };
            for &port in tcp {
                let live = lab.tcp_reaches(&from.name, dst, port, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
                check(format!("tcp/{port} {dst}"), live, expected(set, src, dst, TCP, port));
            }
            let udp = if dst.is_ipv4() { probes.udp } else { &[] };
            for &port in udp {
                let live = lab.udp_reaches(&from.name, dst, port, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
                check(format!("udp/{port} {dst}"), live, expected(set, src, dst, UDP, port));
            }
            let (proto, echo) = if dst.is_ipv4() { (1, 8) } else { (58, 128) };
            let live = lab.ping_reaches(&from.name, dst, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
            check(format!("ping {dst}"), live, expected(set, src, dst, proto, echo));
        }
    }
    (count, mismatches)
}

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
/// answers; true when both messages arrive.
fn tcp_exchange(lab: &Lab, from: &str, to: &str, to_addr: IpAddr, port: u16) -> bool {
    let from_ns = lab.endpoint(from).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let to_ns = lab.endpoint(to).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let listener = in_netns(&to_ns, move || TcpListener::bind(SocketAddr::new(to_addr, port)))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf)?;
        stream.write_all(if &buf == b"ping" { b"pong" } else { b"what" })
    });
    let client = in_netns(&from_ns, move || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&SocketAddr::new(to_addr, port), TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf)?;
        Ok(&buf == b"pong")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let exchanged = matches!(client, Ok(true));
    if !exchanged {
        // Unblock the server's accept if the connection never came.
        let _ = in_netns(&from_ns, move || TcpStream::connect_timeout(&SocketAddr::new(to_addr, port), TIMEOUT));
    }
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
    assert!(
        node.lab.ping_reaches("app1", app2, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}")),
        "echo replies pass"
    );
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
