//! The live connectivity matrix of a lab, probe by probe, against polc's
//! reference evaluator.

use polc::eval::{evaluate, Flow, FlowPeer, IpProto};
use polc::sema::model::{EndpointDef, PolicySet};
use polc_runtime::netlab::Lab;
use std::net::IpAddr;
use std::time::Duration;

/// How long a probe expected to be dropped waits for an answer (each such
/// probe waits it out: short).
pub const TIMEOUT: Duration = Duration::from_millis(400);
/// How long a probe expected to arrive may take (it returns as soon as it
/// does): more than twice [`TIMEOUT`], since a loaded machine can run the
/// softirqs that carry packets across the veths late, but under TCP's first
/// retransmission (1 s): a TCP reach still means the first SYN passed, so a
/// policy enforced only a moment after polcd said so does not pass for one
/// enforced at once.
pub const REACH_TIMEOUT: Duration = Duration::from_millis(900);

/// The timeout of a probe whose expected outcome is `reaches`.
pub fn timeout(reaches: bool) -> Duration {
    if reaches {
        REACH_TIMEOUT
    } else {
        TIMEOUT
    }
}
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

pub fn expected(set: &PolicySet, from: IpAddr, to: IpAddr, proto: u8, port: u16) -> bool {
    let flow = Flow { src: FlowPeer::Address(from), dst: FlowPeer::Address(to), proto: IpProto(proto), port };
    evaluate(set, &flow).unwrap_or_else(|e| panic!("{e:?}")).allowed()
}

/// What to probe in an example: TCP ports (all over IPv4, the first also
/// over IPv6), UDP ports (IPv4), and ping over both.
pub struct Probes {
    pub tcp: &'static [u16],
    pub udp: &'static [u16],
}

/// Probes every ordered pair; returns (probes, mismatches as text). One
/// thread per destination (listeners bind in the destination's namespace,
/// so threads never collide); sources take turns.
pub fn live_matrix(set: &PolicySet, lab: &Lab, probes: &Probes) -> (usize, Vec<String>) {
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
                let want = expected(set, src, dst, TCP, port);
                let live = lab.tcp_reaches(&from.name, dst, port, timeout(want)).unwrap_or_else(|e| panic!("{e}"));
                check(format!("tcp/{port} {dst}"), live, want);
            }
            let udp = if dst.is_ipv4() { probes.udp } else { &[] };
            for &port in udp {
                let want = expected(set, src, dst, UDP, port);
                let live = lab.udp_reaches(&from.name, dst, port, timeout(want)).unwrap_or_else(|e| panic!("{e}"));
                check(format!("udp/{port} {dst}"), live, want);
            }
            let (proto, echo) = if dst.is_ipv4() { (1, 8) } else { (58, 128) };
            let want = expected(set, src, dst, proto, echo);
            // ping waits whole seconds.
            let wait = timeout(want).max(Duration::from_secs(1));
            let live = lab.ping_reaches(&from.name, dst, wait).unwrap_or_else(|e| panic!("{e}"));
            check(format!("ping {dst}"), live, want);
        }
    }
    (count, mismatches)
}
