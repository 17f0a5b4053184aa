//! The BPF datapath against the IR, on the running kernel: random tables,
//! ipcache and packets through BPF_PROG_TEST_RUN, every verdict (action,
//! reason, deciding rule, identities) compared with the reference; then the
//! per-rule counters. Needs root (CAP_BPF) and clang: skipped with a message
//! without them, a failure with CI=true.

#![allow(clippy::panic)] // tests report failures by panicking
mod conntrack;
mod harness;
mod packets;
mod policy_index;
mod policy_sets;
mod random;
mod verifier;

use harness::{endpoint_addresses, load_case, require_bpf, Case, Compile, Expected, Model};
use packets::{build, model_parse, PacketSpec, Parsed};
use polc::codegen::header::{BuildOptions, EndpointConstants};
use polc::ir::{EndpointPolicy, Identity, Resolved};
use polc_runtime::datapath::{Counter, Direction, MetricsKey, Reason};
use random::Rng;
use std::collections::BTreeMap;

const PACKETS: usize = 100_000;
const PACKETS_PER_CASE: usize = 500;
/// Per example endpoint and compile.
const EXAMPLE_PACKETS: usize = 1000;
/// Every how many cases the endpoint runs its own per-endpoint compile.
const PER_ENDPOINT_EVERY: usize = 4;

fn options() -> BuildOptions {
    BuildOptions { events: true, trace_level: 2 }
}

fn random_case(rng: &mut Rng, n: usize) -> Case {
    let pool = random::identity_pool(rng);
    let ipcache = random::random_ipcache(rng, &pool);
    let identity = Identity(Identity::FIRST_ENDPOINT + 100 + n as u32);
    let policy = EndpointPolicy {
        name: format!("ep{n}"),
        identity,
        ingress: random::random_direction(rng, &pool),
        egress: random::random_direction(rng, &pool),
    };
    // Some endpoints have one address family only: the other is not built in.
    let mut addresses = endpoint_addresses();
    match rng.below(10) {
        0 => addresses.ipv4 = None,
        1 => addresses.ipv6 = None,
        _ => {}
    }
    let constants = EndpointConstants {
        name: policy.name.clone(),
        identity: identity.0,
        id: 1, // the only endpoint of its bundle
        trace_level: options().trace_level,
        addresses,
    };
    Case { resolved: Resolved { ipcache, ..Resolved::default() }, policy, constants }
}

/// The next packet of a case: fresh, a repeat, a reply to an earlier one,
/// or malformed.
fn next_packet(
    rng: &mut Rng,
    case: &Case,
    hot_ports: &[u16],
    sent: &[(PacketSpec, Direction)],
) -> (Vec<u8>, Direction) {
    let (mut spec, direction) = match rng.below(10) {
        0..=2 if !sent.is_empty() => {
            let (spec, direction) = &sent[rng.below(sent.len())];
            let flipped = if *direction == Direction::Egress { Direction::Ingress } else { Direction::Egress };
            (spec.reply(), flipped)
        }
        3 if !sent.is_empty() => sent[rng.below(sent.len())].clone(),
        _ => {
            let from_endpoint = rng.chance(50);
            let v6 = rng.chance(50);
            let peer = random::peer_addr(rng, &case.resolved.ipcache, v6);
            let a = case.constants.addresses;
            let own = (a.ipv4.map(Into::into), a.ipv6.map(Into::into));
            let own = (own.0.unwrap_or(peer), own.1.unwrap_or(peer));
            let spec = random::random_packet(rng, own, peer, from_endpoint, hot_ports);
            (spec, if from_endpoint { Direction::Egress } else { Direction::Ingress })
        }
    };
    let mut bytes = build(&spec);
    if rng.chance(8) {
        random::malform(rng, &mut spec, &mut bytes);
    }
    (bytes, direction)
}

#[derive(Default)]
struct Tally {
    packets: usize,
    by_reason: BTreeMap<Reason, usize>,
    per_endpoint_compile: usize,
    cases: usize,
}

fn run_case(cache: &std::path::Path, rng: &mut Rng, n: usize, tally: &mut Tally) {
    let case = random_case(rng, n);
    let compile = match n % PER_ENDPOINT_EVERY {
        0 => Compile::PerEndpoint,
        _ => Compile::Shape,
    };
    run_packets(cache, &case, compile, &format!("case {n}"), PACKETS_PER_CASE, rng, tally);
}

/// Builds and loads `case`, sends it `packets` random packets and compares
/// every verdict, then the counters.
fn run_packets(
    cache: &std::path::Path,
    case: &Case,
    compile: Compile,
    label: &str,
    packets: usize,
    rng: &mut Rng,
    tally: &mut Tally,
) {
    // Unique in the process: tests run in parallel and must not share pins.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pins = format!("test-{}-differential-{n}", std::process::id());
    let loaded = load_case(cache, case, compile, &pins, &options());
    let mut model = Model::default();
    let hot_ports = random::hot_ports(&case.policy);
    let mut sent: Vec<(PacketSpec, Direction)> = Vec::new();
    let mut counters: BTreeMap<MetricsKey, Counter> = BTreeMap::new();

    for i in 0..packets {
        let (bytes, direction) = next_packet(rng, case, &hot_ports, &sent);
        let parsed = match (bytes[12], bytes[13]) {
            (0x08, 0x00) if case.constants.addresses.ipv4.is_none() => Parsed::Early(Reason::UnknownL3),
            (0x86, 0xdd) if case.constants.addresses.ipv6.is_none() => Parsed::Early(Reason::UnknownL3),
            _ => model_parse(&bytes),
        };
        let expected = model.expect(case, direction, parsed);
        let action = loaded
            .endpoint
            .run(direction.entry_program(), &bytes)
            .unwrap_or_else(|e| panic!("{e} len {} {bytes:02x?}", bytes.len()));
        let events = loaded.drain_events();
        let context = || {
            format!(
                "{label} ({compile:?}) packet {i} {direction:?} {parsed:?}\n{case:#?}\nbytes {bytes:02x?}",
                case = case.policy
            )
        };
        assert_eq!(action, expected.reason.tc_action(), "tc action, expected {expected:?}; {}", context());
        assert_eq!(events.len(), 1, "one event per packet; {}", context());
        let event = events[0];
        let (own, peer) = (case.constants.identity, expected.peer);
        let identities = if direction == Direction::Egress { (own, peer) } else { (peer, own) };
        let got = Expected {
            reason: event.reason,
            rule: event.rule,
            peer: if direction == Direction::Egress { event.dst_identity } else { event.src_identity },
        };
        assert_eq!(got, expected, "{}", context());
        assert_eq!((event.src_identity, event.dst_identity), identities, "{}", context());
        assert_eq!((event.direction, event.endpoint), (direction, case.constants.id), "{}", context());
        if let Parsed::Packet(p) = parsed {
            assert_eq!((event.saddr, event.daddr, event.proto), (p.src, p.dst, p.proto), "{}", context());
            assert_eq!((event.sport, event.dport), (p.sport, p.dport), "{}", context());
            if !expected.reason.is_drop() {
                let spec = spec_of(&bytes, &p);
                sent.push((spec, direction));
            }
        }
        let counter =
            counters.entry(MetricsKey { rule: expected.rule, reason: expected.reason, direction }).or_default();
        counter.packets += 1;
        counter.bytes += bytes.len() as u64;
        *tally.by_reason.entry(expected.reason).or_default() += 1;
        tally.packets += 1;
    }
    let kernel: BTreeMap<MetricsKey, Counter> =
        loaded.endpoint.metrics().unwrap_or_else(|e| panic!("{e}")).into_iter().collect();
    assert_eq!(kernel, counters, "per-rule counters of {label}");
    tally.cases += 1;
    if compile == Compile::PerEndpoint {
        tally.per_endpoint_compile += packets;
    }
}

/// A well-formed spec for a packet that passed (to send its reply or repeat it).
fn spec_of(bytes: &[u8], p: &packets::Summary) -> PacketSpec {
    let icmp = matches!(p.proto, packets::ICMP | packets::ICMPV6);
    PacketSpec {
        src: p.src,
        dst: p.dst,
        proto: p.proto,
        sport: if icmp { 0 } else { p.sport },
        dport: if icmp { 0 } else { p.dport },
        icmp_type: p.policy_port as u8,
        icmp_id: p.sport,
        tcp_flags: p.tcp_flags,
        ipv4_options: 0,
        ipv4_frag: 0,
        ipv6_ext: Vec::new(),
        payload: bytes.len() % 7,
    }
}

#[test]
fn datapath_agrees_with_the_ir_on_random_policies_and_packets() {
    if !require_bpf("datapath_agrees_with_the_ir_on_random_policies_and_packets") {
        return;
    }
    let seed = std::env::var("POLC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x706f_6c63);
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut n = 0;
    while tally.packets < PACKETS {
        run_case(cache.path(), &mut rng, n, &mut tally);
        n += 1;
    }
    println!(
        "datapath differential (seed {seed}): {} packets in {} random endpoints, 0 mismatches \
         ({} on per-endpoint compiles); by reason: {:?}",
        tally.packets, tally.cases, tally.per_endpoint_compile, tally.by_reason
    );
    assert!(tally.by_reason.len() >= 12, "every reason but a missing tail call occurs: {:?}", tally.by_reason);
}

#[test]
fn datapath_agrees_with_the_ir_on_every_example() {
    if !require_bpf("datapath_agrees_with_the_ir_on_every_example") {
        return;
    }
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(0x6578_616d);
    let mut tally = Tally::default();
    for dir in polc_suite::example_dirs() {
        let (set, resolved) = polc_suite::resolve_example(&dir).unwrap_or_else(|e| panic!("{e}"));
        for policy in &resolved.endpoints {
            let def = set
                .inventory
                .endpoint(&policy.name)
                .unwrap_or_else(|| panic!("{} has no inventory entry", policy.name));
            let constants = EndpointConstants {
                name: policy.name.clone(),
                identity: policy.identity.0,
                id: 1,
                trace_level: options().trace_level,
                addresses: polc::codegen::header::EndpointAddresses::of(def),
            };
            let case = Case { resolved: resolved.clone(), policy: policy.clone(), constants };
            for compile in [Compile::Shape, Compile::PerEndpoint] {
                let label = format!("{}/{}", dir.display(), policy.name);
                run_packets(cache.path(), &case, compile, &label, EXAMPLE_PACKETS, &mut rng, &mut tally);
            }
        }
    }
    println!(
        "datapath on the examples: {} packets over {} endpoint builds, 0 mismatches ({} on per-endpoint compiles); by reason: {:?}",
        tally.packets, tally.cases, tally.per_endpoint_compile, tally.by_reason
    );
    assert!(tally.cases >= 18, "every example endpoint, both compiles");
}
