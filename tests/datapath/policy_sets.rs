//! Random policy sets on the kernel, against the reference evaluator.
//!
//! The differential test in main.rs draws random IR tables; this one starts
//! from policy: random policy sets and inventories (`polc_suite::testgen`,
//! the generator of the compiler's property tests), then every example, go
//! through the whole
//! pipeline, check -> resolve -> `build_bundle` (clang, manifest) -> the
//! runtime's `Bundle::load_endpoint` for every endpoint of the set (one pin
//! directory, so the ipcache, conntrack and events are shared as on a node),
//! then random packets through BPF_PROG_TEST_RUN. Each verdict is compared
//! with `polc::eval` (the evaluator reads the checked policy, not the IR),
//! with parsing and connection tracking modelled by the harness; at the end
//! of a set, each endpoint's per-rule counters with the packets it decided.

use crate::harness::{node_config, require_bpf, Expected, Model};
use crate::packets::{build, model_parse, PacketSpec, Parsed};
use crate::random::{self, Rng};
use polc::codegen::bundle::{build_bundle, BundleOptions};
use polc::eval::{evaluate_direction, peer, IpProto, SideVerdict};
use polc::resolve::{resolve, IdentityLock, ResolveConfig};
use polc::sema::model::{EndpointDef, PolicySet};
use polc::syntax::ast;
use polc_runtime::bundle::Bundle;
use polc_runtime::datapath::{Counter, Direction, MetricsKey, Reason};
use polc_runtime::loader::{EventReader, LoadedEndpoint, PinDir};
use polc_suite::testgen::{self, Scenario};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

const PACKETS: usize = 100_000;
const PACKETS_PER_SET: usize = 1000;
/// Per example policy set (all its endpoints loaded together).
const EXAMPLE_PACKETS: usize = 3000;

/// One policy set built and loaded: its endpoints' programs, in inventory order.
struct LoadedSet {
    endpoints: Vec<LoadedEndpoint>,
    events: EventReader,
    // Dropped last: removes every pin of the set.
    _pins: PinDir,
}

fn load_set(cache: &Path, set: &PolicySet, resolved: &polc::ir::Resolved, pins: &str) -> LoadedSet {
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let options = BundleOptions {
        build: crate::options(),
        node: node_config(),
        per_endpoint_compile: false,
        jobs: 1,
        cache: Some(cache.to_path_buf()),
        progress: false,
    };
    let report =
        build_bundle(resolved, &set.inventory.endpoints, out.path(), &options).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.warnings.is_empty(), "clang warnings:\n{:?}", report.warnings);
    let bundle = Bundle::open(out.path()).unwrap_or_else(|e| panic!("{e}"));
    let pins = PinDir::create(pins).unwrap_or_else(|e| panic!("{e}"));
    let endpoints: Vec<LoadedEndpoint> = set
        .inventory
        .endpoints
        .iter()
        .map(|e| bundle.load_endpoint(&e.name, &pins).unwrap_or_else(|err| panic!("load `{}`: {err}", e.name)))
        .collect();
    // The ring buffer is node-wide: one reader sees every endpoint's events.
    let events = endpoints[0].events().unwrap_or_else(|e| panic!("{e}"));
    LoadedSet { endpoints, events, _pins: pins }
}

/// A packet sent to one endpoint's program.
#[derive(Clone)]
struct Sent {
    spec: PacketSpec,
    endpoint: usize,
    direction: Direction,
}

fn flip(direction: Direction) -> Direction {
    match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

/// Addresses a set's packets come from or go to: the endpoints', the
/// node's, the generator's (inside and outside the CIDRs its rules name)
/// and the cloud metadata address; plus, when drawing, any address in an
/// ipcache prefix.
fn peer_pool(set: &PolicySet) -> Vec<IpAddr> {
    let inventory = &set.inventory;
    let endpoints = inventory.endpoints.iter().flat_map(|e| [e.ipv4.map(IpAddr::V4), e.ipv6.map(IpAddr::V6)]);
    let node =
        inventory.node.ipv4.iter().map(|a| IpAddr::V4(*a)).chain(inventory.node.ipv6.iter().map(|a| IpAddr::V6(*a)));
    let generated = testgen::ENDPOINT_ADDRESSES.iter().chain(&testgen::OTHER_PEERS).chain(&["169.254.169.254"]);
    let mut pool: Vec<IpAddr> =
        endpoints.flatten().chain(node).chain(generated.filter_map(|a| a.parse().ok())).collect();
    pool.sort();
    pool.dedup();
    pool
}

struct Generator<'a> {
    set: &'a PolicySet,
    resolved: &'a polc::ir::Resolved,
    pool: Vec<IpAddr>,
    /// Ports and ICMP types the rules name, per endpoint (from its tables) and the generator's.
    hot_ports: Vec<Vec<u16>>,
}

impl Generator<'_> {
    fn own(&self, endpoint: usize) -> (Option<IpAddr>, Option<IpAddr>) {
        let def = &self.set.inventory.endpoints[endpoint];
        (def.ipv4.map(IpAddr::V4), def.ipv6.map(IpAddr::V6))
    }

    /// The endpoint that owns `addr`, if one does.
    fn owner(&self, addr: IpAddr) -> Option<usize> {
        (0..self.set.inventory.endpoints.len()).find(|&i| {
            let (v4, v6) = self.own(i);
            v4 == Some(addr) || v6 == Some(addr)
        })
    }

    fn fresh(&self, rng: &mut Rng) -> Sent {
        let endpoint = rng.below(self.set.inventory.endpoints.len());
        let (v4_own, v6_own) = self.own(endpoint);
        // Mostly a family the endpoint has (a packet of the other one is
        // dropped before any lookup, which the other tests cover).
        let v6 = if v6_own.is_some() { rng.chance(50) } else { rng.chance(5) };
        let peer = if rng.chance(65) {
            let family: Vec<IpAddr> = self.pool.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
            rng.pick(&family)
        } else {
            random::peer_addr(rng, &self.resolved.ipcache, v6)
        };
        let own = (v4_own.unwrap_or(peer), v6_own.unwrap_or(peer));
        let from_endpoint = rng.chance(50);
        let spec = random::random_packet(rng, own, peer, from_endpoint, &self.hot_ports[endpoint]);
        Sent { spec, endpoint, direction: if from_endpoint { Direction::Egress } else { Direction::Ingress } }
    }

    /// Fresh, a repeat, a reply on the same endpoint, or the same packet at
    /// the endpoint on the other end (its other side of the flow).
    fn next(&self, rng: &mut Rng, sent: &[Sent]) -> Sent {
        if sent.is_empty() {
            return self.fresh(rng);
        }
        let earlier = &sent[rng.below(sent.len())];
        match rng.below(10) {
            0..=2 => {
                Sent { spec: earlier.spec.reply(), direction: flip(earlier.direction), endpoint: earlier.endpoint }
            }
            3 => earlier.clone(),
            4 => {
                let other_end = match earlier.direction {
                    Direction::Egress => earlier.spec.dst,
                    Direction::Ingress => earlier.spec.src,
                };
                match self.owner(other_end) {
                    Some(endpoint) => Sent { endpoint, direction: flip(earlier.direction), ..earlier.clone() },
                    None => self.fresh(rng),
                }
            }
            _ => self.fresh(rng),
        }
    }
}

/// The evaluator's answer as the datapath reports it (reason, rule).
fn reference(
    set: &PolicySet,
    endpoint: &EndpointDef,
    direction: Direction,
    peer: IpAddr,
    proto: u8,
    port: u16,
) -> (Reason, u32) {
    let direction = match direction {
        Direction::Ingress => ast::Direction::Ingress,
        Direction::Egress => ast::Direction::Egress,
    };
    let peer = peer::resolve_address(&set.inventory, peer);
    match evaluate_direction(set, endpoint, direction, &peer, IpProto(proto), port) {
        SideVerdict::NotEnforced => (Reason::NotEnforced, 0),
        SideVerdict::Allowed { rule } => (Reason::PolicyAllow, rule.id.0),
        SideVerdict::Denied { rule } => (Reason::PolicyDeny, rule.id.0),
        SideVerdict::DefaultDeny { .. } => (Reason::DefaultDeny, 0),
    }
}

#[derive(Default)]
struct Tally {
    sets: usize,
    examples: usize,
    endpoints: usize,
    packets: usize,
    ipv6: usize,
    by_reason: BTreeMap<Reason, usize>,
    by_proto: BTreeMap<&'static str, usize>,
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        1 => "icmp",
        58 => "icmpv6",
        _ => "other",
    }
}

/// One policy set on the kernel: `packets` packets compared with the
/// evaluator. `label` and `source` say which set failed.
struct SetRun<'a> {
    set: &'a PolicySet,
    resolved: &'a polc::ir::Resolved,
    label: String,
    source: &'a dyn Fn() -> String,
    packets: usize,
}

fn run_scenario(cache: &Path, s: &Scenario, n: usize, rng: &mut Rng, tally: &mut Tally) {
    let frontend = s.check();
    let set = &frontend.checked;
    let (resolved, _) = resolve(set, &IdentityLock::default(), &ResolveConfig::default())
        .unwrap_or_else(|e| panic!("set {n}: resolution failed: {e}\n{}", s.source()));
    let source = || s.source();
    let run = SetRun { set, resolved: &resolved, label: format!("set {n}"), source: &source, packets: PACKETS_PER_SET };
    run_set(cache, &run, rng, tally);
}

fn run_set(cache: &Path, run: &SetRun<'_>, rng: &mut Rng, tally: &mut Tally) {
    let (set, resolved) = (run.set, run.resolved);
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pins = format!("test-{}-policy-sets-{n}", std::process::id());
    let loaded = load_set(cache, set, resolved, &pins);
    let mut hot_ports: Vec<Vec<u16>> = resolved.endpoints.iter().map(random::hot_ports).collect();
    for ports in &mut hot_ports {
        ports.extend(testgen::PACKETS.iter().map(|(_, port)| *port));
    }
    let generator = Generator { set, resolved, pool: peer_pool(set), hot_ports };
    let mut model = Model::default();
    let mut sent: Vec<Sent> = Vec::new();
    // Per endpoint, what its per-rule counters must hold at the end.
    let mut counters: Vec<BTreeMap<MetricsKey, Counter>> = vec![BTreeMap::new(); set.inventory.endpoints.len()];
    for i in 0..run.packets {
        let packet = generator.next(rng, &sent);
        let mut spec = packet.spec.clone();
        let mut bytes = build(&spec);
        if rng.chance(8) {
            random::malform(rng, &mut spec, &mut bytes);
        }
        let def = &set.inventory.endpoints[packet.endpoint];
        let parsed = match (bytes[12], bytes[13]) {
            (0x08, 0x00) if def.ipv4.is_none() => Parsed::Early(Reason::UnknownL3),
            (0x86, 0xdd) if def.ipv6.is_none() => Parsed::Early(Reason::UnknownL3),
            _ => model_parse(&bytes),
        };
        let direction = packet.direction;
        let expected = model.expect_with(
            direction,
            parsed,
            |addr| resolved.identity_of(addr).0,
            |peer, _, p| reference(set, def, direction, peer, p.proto, p.policy_port),
        );
        let action = loaded.endpoints[packet.endpoint]
            .run(direction.entry_program(), &bytes)
            .unwrap_or_else(|e| panic!("{e} len {} {bytes:02x?}", bytes.len()));
        let events = loaded.events.drain().unwrap_or_else(|e| panic!("{e}"));
        let context = || {
            format!(
                "{} packet {i}: endpoint `{}` {direction:?} {parsed:?}\nbytes {bytes:02x?}\n{}",
                run.label,
                def.name,
                (run.source)()
            )
        };
        assert_eq!(action, expected.reason.tc_action(), "tc action, expected {expected:?}; {}", context());
        assert_eq!(events.len(), 1, "one event per packet; {}", context());
        let event = events[0];
        let got = Expected {
            reason: event.reason,
            rule: event.rule,
            peer: if direction == Direction::Egress { event.dst_identity } else { event.src_identity },
        };
        assert_eq!(got, expected, "{}", context());
        if let Parsed::Packet(p) = parsed {
            if !expected.reason.is_drop() {
                sent.push(Sent { spec: crate::spec_of(&bytes, &p), ..packet });
            }
            tally.ipv6 += usize::from(p.src.is_ipv6());
            *tally.by_proto.entry(proto_name(p.proto)).or_default() += 1;
        }
        *tally.by_reason.entry(expected.reason).or_default() += 1;
        let key = MetricsKey { rule: expected.rule, reason: expected.reason, direction };
        let counter = counters[packet.endpoint].entry(key).or_default();
        counter.packets += 1;
        counter.bytes += bytes.len() as u64;
        tally.packets += 1;
    }
    tally.sets += 1;
    for ((endpoint, def), expected) in loaded.endpoints.iter().zip(&set.inventory.endpoints).zip(&counters) {
        let kernel: BTreeMap<MetricsKey, Counter> =
            endpoint.metrics().unwrap_or_else(|e| panic!("{e}")).into_iter().collect();
        assert_eq!(&kernel, expected, "per-rule counters of `{}` in {}", def.name, run.label);
    }
    tally.endpoints += loaded.endpoints.len();
}

/// The scenarios of a seed, drawn as the property tests draw them.
fn scenarios(seed: u64) -> impl Iterator<Item = Scenario> {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed ^ i as u64).to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let strategy = testgen::scenario();
    std::iter::from_fn(move || strategy.new_tree(&mut runner).ok().map(|tree| tree.current()))
}

#[test]
fn datapath_agrees_with_the_evaluator_on_random_policy_sets_and_examples() {
    if !require_bpf("datapath_agrees_with_the_evaluator_on_random_policy_sets_and_examples") {
        return;
    }
    let seed = std::env::var("POLC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7365_7473);
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    for (n, scenario) in scenarios(seed).enumerate() {
        if tally.packets >= PACKETS {
            break;
        }
        run_scenario(cache.path(), &scenario, n, &mut rng, &mut tally);
    }
    // And every example, with its committed identities.lock.
    for dir in polc_suite::example_dirs() {
        let (set, resolved) = polc_suite::resolve_example(&dir).unwrap_or_else(|e| panic!("{e}"));
        let label = dir.display().to_string();
        let source = || label.clone();
        let run =
            SetRun { set: &set, resolved: &resolved, label: label.clone(), source: &source, packets: EXAMPLE_PACKETS };
        run_set(cache.path(), &run, &mut rng, &mut tally);
        tally.examples += 1;
    }
    println!(
        "datapath vs the reference evaluator (seed {seed}): {} packets ({} IPv6) over {} policy sets \
         ({} random, {} examples; {} endpoints), 0 mismatches; by reason: {:?}; by protocol: {:?}",
        tally.packets,
        tally.ipv6,
        tally.sets,
        tally.sets - tally.examples,
        tally.examples,
        tally.endpoints,
        tally.by_reason,
        tally.by_proto
    );
    assert_eq!(tally.examples, 3, "every example");
    assert!(tally.packets >= PACKETS);
    for reason in [Reason::PolicyAllow, Reason::PolicyDeny, Reason::DefaultDeny, Reason::NotEnforced, Reason::Reply] {
        assert!(tally.by_reason.contains_key(&reason), "no packet decided `{reason:?}`: {:?}", tally.by_reason);
    }
}
