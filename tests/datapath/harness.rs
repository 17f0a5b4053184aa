//! Building and loading one random endpoint, and the reference verdict
//! model (IR lookup + ipcache + a conntrack model) it is compared with.

use crate::packets::{Parsed, Summary, TCP, TCP_FIN, TCP_RST};
use polc::codegen::bundle::{build_bundle, BundleOptions};
use polc::codegen::header::{BuildOptions, EndpointAddresses, EndpointConstants, NodeConfig};
use polc::ir::{EndpointPolicy, Resolved, TableVerdict};
use polc::sema::model::EndpointDef;
use polc::syntax::ast::Action;
use polc::syntax::Span;
use polc_runtime::bundle::Bundle;
use polc_runtime::datapath::{self, Direction, Reason};
use polc_runtime::loader::{LoadedEndpoint, PinDir};
use polc_runtime::seam::EndpointMaps;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

/// Whether this process may load BPF programs; the reason if not.
pub fn bpf_unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_BPF: u64 = 1 << 39;
    if caps & (CAP_SYS_ADMIN | CAP_BPF) == 0 {
        return Some("this process has neither CAP_BPF nor CAP_SYS_ADMIN (run as root)".into());
    }
    if std::process::Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("clang is not installed".into());
    }
    None
}

/// Skips a kernel test where BPF is unavailable, except in CI where that is a failure.
pub fn require_bpf(test: &str) -> bool {
    match bpf_unavailable() {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: CI=true but the BPF datapath test cannot run: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Which object an endpoint runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compile {
    /// The shared object of its code shape, constants in `.rodata`.
    Shape,
    /// Its own object, constants as #defines (`--per-endpoint-compile`).
    PerEndpoint,
}

pub struct Case {
    pub resolved: Resolved,
    pub policy: EndpointPolicy,
    pub constants: EndpointConstants,
}

pub fn node_config() -> NodeConfig {
    let mut node = NodeConfig::default();
    // Verdicts must not depend on how long the test takes: a closed TCP
    // connection stays usable for the whole run (expiry is tested apart).
    node.conntrack.close = 3600;
    node.conntrack.non_tcp = 3600;
    node.sizes.ipcache = 1024;
    node.sizes.conntrack = 65536;
    node.sizes.policy = 8192;
    node.sizes.metrics = 1024;
    node
}

pub struct Loaded {
    pub endpoint: LoadedEndpoint,
    /// None when the shape has no events.
    pub events: Option<polc_runtime::loader::EventReader>,
    // Dropped last: removes every pin of the case.
    _pins: PinDir,
}

impl Loaded {
    /// The verdict events since the last call (the shape must have events).
    pub fn drain_events(&self) -> Vec<polc_runtime::datapath::VerdictEvent> {
        let reader = self.events.as_ref().unwrap_or_else(|| panic!("built without events"));
        reader.drain().unwrap_or_else(|e| panic!("{e}"))
    }
}

pub fn load_case(cache: &Path, case: &Case, compile: Compile, pin_name: &str, options: &BuildOptions) -> Loaded {
    load_case_on(cache, &node_config(), case, compile, pin_name, options)
}

/// Builds the case as `polc build` would (a bundle: manifest, headers,
/// objects; clang's cache shared through `cache`), then loads it the way the
/// runtime does: object, `.rodata` constants and map entries from the bundle.
pub fn load_case_on(
    cache: &Path,
    node: &NodeConfig,
    case: &Case,
    compile: Compile,
    pin_name: &str,
    options: &BuildOptions,
) -> Loaded {
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let resolved = Resolved { endpoints: vec![case.policy.clone()], ..case.resolved.clone() };
    let a = case.constants.addresses;
    let def = EndpointDef {
        name: case.policy.name.clone(),
        labels: BTreeMap::new(),
        ipv4: a.ipv4,
        ipv6: a.ipv6,
        mac: a.mac,
        iface: None,
        netns: None,
        named_ports: BTreeMap::new(),
        span: Span::default(),
    };
    let bundle_options = BundleOptions {
        build: *options,
        node: *node,
        per_endpoint_compile: compile == Compile::PerEndpoint,
        jobs: 1,
        cache: Some(cache.to_path_buf()),
        progress: false,
    };
    let report = build_bundle(&resolved, &[def], out.path(), &bundle_options).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.warnings.is_empty(), "clang warnings:\n{:?}", report.warnings);

    let bundle = Bundle::open(out.path()).unwrap_or_else(|e| panic!("{e}"));
    let pins = PinDir::create(pin_name).unwrap_or_else(|e| panic!("{e}"));
    let endpoint = bundle.load_endpoint(&case.policy.name, &pins).unwrap_or_else(|e| panic!("load: {e}"));
    for direction in Direction::BOTH {
        let enforced = table(&case.policy, direction).enforced;
        assert_eq!(endpoint.has_map(direction.policy_map()), enforced, "{direction:?}");
    }
    let events = endpoint.has_map(datapath::EVENTS_MAP).then(|| endpoint.events().unwrap_or_else(|e| panic!("{e}")));
    Loaded { endpoint, events, _pins: pins }
}

pub fn table(policy: &EndpointPolicy, direction: Direction) -> &polc::ir::DirectionTable {
    match direction {
        Direction::Ingress => &policy.ingress,
        Direction::Egress => &policy.egress,
    }
}

/// What the datapath must say about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub reason: Reason,
    pub rule: u32,
    /// The peer's identity (0 when decided before the ipcache lookup).
    pub peer: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    direction: Direction,
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    rule: u32,
    fin_forward: bool,
    fin_reply: bool,
    closed: bool,
}

/// The reference: parse rules, `Resolved::identity_of`, `DirectionTable::lookup`
/// and a model of connection tracking.
#[derive(Default)]
pub struct Model {
    flows: HashMap<FlowKey, Flow>,
}

impl Model {
    pub fn expect(&mut self, case: &Case, direction: Direction, parsed: Parsed) -> Expected {
        let identity_of = |addr: IpAddr| case.resolved.identity_of(addr).0;
        self.expect_with(direction, parsed, identity_of, |_, peer, p| {
            match table(&case.policy, direction).lookup(polc::ir::Identity(peer), p.proto, p.policy_port) {
                TableVerdict::NotEnforced => (Reason::NotEnforced, 0),
                TableVerdict::Decided { action: Action::Allow, rule } => (Reason::PolicyAllow, rule.0),
                TableVerdict::Decided { action: Action::Deny, rule } => (Reason::PolicyDeny, rule.0),
                TableVerdict::DefaultDeny => (Reason::DefaultDeny, 0),
            }
        })
    }

    /// The verdict of a packet with the policy decision of a new connection
    /// taken by `decide(peer address, peer identity, packet)` (the reason and
    /// rule) and the peer's identity by `identity_of`; parsing and
    /// connection tracking as the datapath does them. One model may serve
    /// several endpoints: the conntrack is node-wide.
    pub fn expect_with(
        &mut self,
        direction: Direction,
        parsed: Parsed,
        identity_of: impl Fn(IpAddr) -> u32,
        decide: impl FnOnce(IpAddr, u32, &Summary) -> (Reason, u32),
    ) -> Expected {
        let p = match parsed {
            Parsed::Early(reason) => return Expected { reason, rule: 0, peer: 0 },
            Parsed::Packet(p) => p,
        };
        let peer_addr = if direction == Direction::Egress { p.dst } else { p.src };
        let peer = identity_of(peer_addr);
        let forward = FlowKey { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, proto: p.proto, direction };
        let reverse = FlowKey {
            src: p.dst,
            dst: p.src,
            sport: p.dport,
            dport: p.sport,
            proto: p.proto,
            direction: match direction {
                Direction::Ingress => Direction::Egress,
                Direction::Egress => Direction::Ingress,
            },
        };
        if p.tracked {
            for (key, reply, reason) in [(forward, false, Reason::Established), (reverse, true, Reason::Reply)] {
                if let Some(flow) = self.flows.get_mut(&key) {
                    observe(flow, &p, reply);
                    return Expected { reason, rule: flow.rule, peer };
                }
            }
        }
        let (reason, rule) = decide(peer_addr, peer, &p);
        if !reason.is_drop() && p.tracked {
            let mut flow = Flow { rule, fin_forward: false, fin_reply: false, closed: false };
            observe(&mut flow, &p, false);
            self.flows.insert(forward, flow);
        }
        Expected { reason, rule, peer }
    }
}

/// conntrack.h's ct_observe, without the clock.
fn observe(flow: &mut Flow, p: &Summary, reply: bool) {
    if flow.closed || p.proto != TCP {
        return;
    }
    if p.tcp_flags & TCP_FIN != 0 {
        if reply {
            flow.fin_reply = true;
        } else {
            flow.fin_forward = true;
        }
    }
    if p.tcp_flags & TCP_RST != 0 || (flow.fin_forward && flow.fin_reply) {
        flow.closed = true;
    }
}

pub fn endpoint_addresses() -> EndpointAddresses {
    EndpointAddresses {
        ipv4: Some(std::net::Ipv4Addr::new(10, 0, 0, 1)),
        ipv6: Some("fd00::1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST)),
        mac: Some([0x02, 0, 0, 0, 0, 0x01]),
    }
}
