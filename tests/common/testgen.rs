//! Random policy sets, inventories and flows for property tests.
//!
//! A [`Scenario`] is plain data (endpoints, policies, flows) that prints as
//! `.pol` source ([`Scenario::source`]) and goes through the real front end
//! ([`Scenario::check`]), so spans, rule ids and names are what `polc`
//! itself produces. Tests can edit a scenario (add a catch-all policy, drop
//! rules) and check again.
//!
//! The pools are small on purpose so that generated rules and flows meet:
//! three label keys with three values, addresses in and around
//! `10.0.0.0/24` and `fd00::/64` (endpoints, the node, and outside
//! addresses inside the policy CIDRs), ports and named ports that rules
//! name, every entity, every protocol, and ICMP types.
//!
//! Comparing the evaluator with resolved tables: [`direction_queries`]
//! lists, for every endpoint and direction, every generated peer and packet
//! with the evaluator's [`SideVerdict`]; `expected.to_table_verdict()` must
//! equal the endpoint's `DirectionTable::lookup(identity of the peer,
//! proto, port)`, the peer's identity given by [`identity_of`]. Whole
//! flows come from [`Scenario::flows`].
//!
//! Shared without copying: the workspace's test library (`polc_suite::testgen`,
//! for the kernel tests) and the compiler's tests (`common::testgen`, by path).

use polc::codegen::bundle_trace::reserved_identity;
use polc::driver::{self, Frontend};
use polc::eval::flowspec::parse_peer;
use polc::eval::{evaluate_direction, peer, Flow, IpProto, Peer, SideVerdict};
use polc::ir::{Identity, Resolved};
use polc::sema::model::{EndpointDef, PolicySet};
use polc::syntax::ast::{Action, Direction};
use proptest::prelude::*;
use proptest::sample::select;
use std::fmt::Write;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub endpoints: Vec<GenEndpoint>,
    /// Whether the inventory has a `node { }` with 10.0.0.254 and fd00::fe.
    pub node: bool,
    pub policies: Vec<GenPolicy>,
    pub flows: Vec<GenFlow>,
}

#[derive(Debug, Clone)]
pub struct GenEndpoint {
    pub name: String,
    /// (key, value) pairs, keys distinct.
    pub labels: Vec<(String, String)>,
    /// Last byte of 10.0.0.N, and of fd00::N when `ipv6`.
    pub host_byte: u8,
    pub ipv6: bool,
    /// `port NAME = SPEC`, names distinct.
    pub named_ports: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct GenPolicy {
    pub name: String,
    /// Selector source, e.g. `{app=a, !tier}`.
    pub selector: String,
    pub ingress: Option<Vec<GenRule>>,
    pub egress: Option<Vec<GenRule>>,
}

#[derive(Debug, Clone)]
pub struct GenRule {
    pub action: Action,
    /// Unique within its policy.
    pub name: String,
    /// Peer sources, e.g. `{app=a}`, `world`, `10.0.0.0/8 except (10.0.0.128/25)`.
    pub peers: Vec<String>,
    /// Port item sources, e.g. `tcp/80`, `any/http`; empty: no `on` clause.
    pub ports: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GenFlow {
    /// Peer text as `polc trace` takes it: a name, an address or an entity.
    pub src: String,
    pub dst: String,
    pub proto: u8,
    pub port: u16,
}

impl Scenario {
    /// The whole scenario (inventory and policies) as one `.pol` file.
    pub fn source(&self) -> String {
        let mut out = String::new();
        if self.node {
            out.push_str("node { ipv4 10.0.0.254 ipv6 fd00::fe }\n");
        }
        for e in &self.endpoints {
            let labels: Vec<_> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(
                out,
                "endpoint {} {{\n  labels {{{}}}\n  ipv4 10.0.0.{}\n",
                e.name,
                labels.join(", "),
                e.host_byte
            );
            if e.ipv6 {
                let _ = writeln!(out, "  ipv6 fd00::{:x}", e.host_byte);
            }
            for (name, spec) in &e.named_ports {
                let _ = writeln!(out, "  port {name} = {spec}");
            }
            out.push_str("}\n");
        }
        for p in &self.policies {
            let _ = writeln!(out, "policy {} {{\n  select {}", p.name, p.selector);
            for (keyword, section, peer_word) in [("ingress", &p.ingress, "from"), ("egress", &p.egress, "to")] {
                let Some(rules) = section else { continue };
                let _ = writeln!(out, "  {keyword} {{");
                for r in rules {
                    let on = if r.ports.is_empty() { String::new() } else { format!(" on {}", r.ports.join(", ")) };
                    let _ =
                        writeln!(out, "    {} {}: {peer_word} {}{on}", r.action.keyword(), r.name, r.peers.join(", "));
                }
                out.push_str("  }\n");
            }
            out.push_str("}\n");
        }
        out
    }

    /// Parses and checks the source; panics (failing the test) on errors,
    /// which would be a generator bug.
    pub fn check(&self) -> Frontend {
        let frontend = driver::check_text("generated.pol", &self.source());
        assert!(
            !frontend.has_errors(),
            "generated source has errors: {:?}\n{}",
            frontend.diagnostics.iter().map(|d| &d.message).collect::<Vec<_>>(),
            self.source()
        );
        frontend
    }

    pub fn flows(&self) -> Vec<Flow> {
        self.flows.iter().map(GenFlow::to_flow).collect()
    }

    /// A policy appended after all others (so its rules have the highest ids).
    pub fn with_policy(&self, policy: GenPolicy) -> Scenario {
        let mut s = self.clone();
        s.policies.push(policy);
        s
    }
}

impl GenFlow {
    pub fn to_flow(&self) -> Flow {
        Flow {
            src: parse_peer(&self.src).expect("generated peers parse"),
            dst: parse_peer(&self.dst).expect("generated peers parse"),
            proto: IpProto(self.proto),
            port: self.port,
        }
    }
}

impl GenRule {
    pub fn new(action: Action, name: &str, peers: &[&str], ports: &[&str]) -> GenRule {
        GenRule {
            action,
            name: name.into(),
            peers: peers.iter().map(|p| p.to_string()).collect(),
            ports: ports.iter().map(|p| p.to_string()).collect(),
        }
    }
}

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const MAX_ENDPOINTS: usize = 5;

fn labels() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(prop::option::of(select(VALUES.to_vec())), KEYS.len()).prop_map(|values| {
        KEYS.iter().zip(values).filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string()))).collect()
    })
}

fn named_ports() -> impl Strategy<Value = Vec<(String, String)>> {
    let http = prop::option::of(select(vec!["tcp/80", "tcp/8080", "udp/80"]));
    let dns = prop::option::of(select(vec!["udp/53", "tcp/53"]));
    let metrics = prop::option::of(select(vec!["tcp/9100", "sctp/9100"]));
    (http, dns, metrics).prop_map(|(http, dns, metrics)| {
        [("http", http), ("dns", dns), ("metrics", metrics)]
            .into_iter()
            .filter_map(|(name, spec)| spec.map(|s| (name.to_string(), s.to_string())))
            .collect()
    })
}

fn endpoints() -> impl Strategy<Value = Vec<GenEndpoint>> {
    // A `twin` takes the labels of the endpoint before it: two endpoints of
    // one identity, whose named ports may differ.
    let spec = (labels(), prop::bool::weighted(0.25), any::<bool>(), named_ports());
    prop::collection::vec(spec, 1..=MAX_ENDPOINTS).prop_map(|specs| {
        let mut endpoints: Vec<GenEndpoint> = Vec::new();
        for (i, (labels, twin, ipv6, named_ports)) in specs.into_iter().enumerate() {
            let labels = match endpoints.last() {
                Some(previous) if twin => previous.labels.clone(),
                _ => labels,
            };
            endpoints.push(GenEndpoint { name: format!("e{i}"), labels, host_byte: i as u8 + 1, ipv6, named_ports });
        }
        endpoints
    })
}

fn term() -> impl Strategy<Value = String> {
    let key = select(KEYS.to_vec());
    let value = select(VALUES.to_vec());
    let two = (select(VALUES.to_vec()), select(VALUES.to_vec()));
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| format!("{k}={v}")),
        (key.clone(), value).prop_map(|(k, v)| format!("{k}!={v}")),
        (key.clone(), two.clone()).prop_map(|(k, (a, b))| format!("{k} in ({a}, {b})")),
        (key.clone(), two).prop_map(|(k, (a, b))| format!("{k} not in ({a}, {b})")),
        key.clone().prop_map(|k| k.to_string()),
        key.prop_map(|k| format!("!{k}")),
    ]
}

fn selector() -> impl Strategy<Value = String> {
    prop::collection::vec(term(), 0..=2).prop_map(|terms| format!("{{{}}}", terms.join(", ")))
}

const CIDRS: [&str; 12] = [
    "10.0.0.0/8",
    "10.0.0.0/24 except (10.0.0.128/25)",
    "10.0.0.3/32",
    "0.0.0.0/0",
    "0.0.0.0/0 except (10.0.0.0/8, 192.0.2.0/24)",
    "0.0.0.0/0 except (0.0.0.0/0)",
    "192.0.2.0/24",
    "8.0.0.0/7",
    "fd00::/8",
    "::/0",
    "::/0 except (fd00::/8)",
    "2001:db8::/32",
];

const ENTITIES: [&str; 7] = ["world", "host", "cluster", "all", "health", "init", "unmanaged"];

fn rule_peer() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => selector(),
        2 => select(ENTITIES.to_vec()).prop_map(String::from),
        2 => select(CIDRS.to_vec()).prop_map(String::from),
    ]
}

const PORT_ITEMS: [&str; 20] = [
    "tcp",
    "udp",
    "tcp/80",
    "tcp/80-90",
    "tcp/8080",
    "udp/53",
    "sctp/80",
    "tcp/http",
    "udp/http",
    "any/http",
    "tcp/dns",
    "any/dns",
    "any/metrics",
    "any/53",
    "any/80-8080",
    "icmp",
    "icmp/echo-request",
    "icmp/0",
    "icmpv6/echo-request",
    "any",
];

fn rules(prefix: &'static str) -> impl Strategy<Value = Vec<GenRule>> {
    let rule = (
        prop::bool::weighted(0.3),
        prop::collection::vec(rule_peer(), 1..=2),
        prop::collection::vec(select(PORT_ITEMS.to_vec()), 0..=2),
    );
    prop::collection::vec(rule, 0..=4).prop_map(move |rules| {
        rules
            .into_iter()
            .enumerate()
            .map(|(i, (deny, peers, ports))| GenRule {
                action: if deny { Action::Deny } else { Action::Allow },
                name: format!("{prefix}{i}"),
                peers,
                ports: ports.into_iter().map(String::from).collect(),
            })
            .collect()
    })
}

fn policies() -> impl Strategy<Value = Vec<GenPolicy>> {
    let policy = (selector(), prop::option::of(rules("in")), prop::option::of(rules("out")));
    prop::collection::vec(policy, 0..=4).prop_map(|policies| {
        policies
            .into_iter()
            .enumerate()
            .map(|(i, (selector, ingress, egress))| GenPolicy { name: format!("p{i}"), selector, ingress, egress })
            .collect()
    })
}

/// Flow peers: endpoint names (`eN` stands for endpoint N modulo their
/// number), endpoint addresses (some of endpoints that may not exist, which
/// makes them outside addresses), the node's, outside addresses inside and
/// outside the policy CIDRs, and entities.
const NAMES: [&str; 5] = ["e0", "e1", "e2", "e3", "e4"];
pub const ENDPOINT_ADDRESSES: [&str; 6] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "fd00::1", "fd00::2"];
pub const OTHER_PEERS: [&str; 14] = [
    "10.0.0.254",
    "fd00::fe",
    "10.0.0.200",
    "10.0.0.130",
    "192.0.2.7",
    "8.8.8.8",
    "2001:db8::1",
    "fd00::99",
    "10.9.9.9",
    "world",
    "host",
    "health",
    "init",
    "unmanaged",
];

fn flow_peer() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => select(NAMES.to_vec()),
        2 => select(ENDPOINT_ADDRESSES.to_vec()),
        2 => select(OTHER_PEERS.to_vec()),
    ]
}

pub const PACKETS: [(u8, u16); 16] = [
    (6, 80),
    (6, 85),
    (6, 8080),
    (6, 443),
    (6, 53),
    (6, 9100),
    (6, 1),
    (17, 53),
    (17, 80),
    (132, 80),
    (132, 9100),
    (1, 8),
    (1, 0),
    (58, 128),
    (58, 8),
    (47, 0),
];

fn flows() -> impl Strategy<Value = Vec<GenFlow>> {
    let flow = (flow_peer(), flow_peer(), select(PACKETS.to_vec()));
    prop::collection::vec(flow, 1..=16).prop_map(|flows| {
        flows
            .into_iter()
            .map(|(src, dst, (proto, port))| GenFlow { src: src.into(), dst: dst.into(), proto, port })
            .collect()
    })
}

/// A random scenario whose flows name only endpoints that exist.
pub fn scenario() -> impl Strategy<Value = Scenario> {
    (endpoints(), any::<bool>(), policies(), flows()).prop_map(|(endpoints, node, policies, flows)| {
        let existing = |peer: String| match peer.strip_prefix('e').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => format!("e{}", n % endpoints.len()),
            None => peer,
        };
        let flows = flows.into_iter().map(|f| GenFlow { src: existing(f.src), dst: existing(f.dst), ..f }).collect();
        Scenario { endpoints, node, policies, flows }
    })
}

/// One question to one endpoint's policy in one direction, and the
/// evaluator's answer.
#[derive(Debug, Clone)]
pub struct DirectionQuery<'a> {
    pub endpoint: &'a EndpointDef,
    pub direction: Direction,
    pub peer: Peer<'a>,
    pub proto: IpProto,
    pub port: u16,
    pub expected: SideVerdict,
}

/// Every endpoint x direction x peer (each endpoint, every address and
/// entity of the pools) x packet of the pool, answered by the evaluator.
pub fn direction_queries(set: &PolicySet) -> Vec<DirectionQuery<'_>> {
    let mut peers: Vec<Peer<'_>> = set.inventory.endpoints.iter().map(Peer::Endpoint).collect();
    for text in ENDPOINT_ADDRESSES.iter().chain(&OTHER_PEERS) {
        let written = parse_peer(text).expect("pool peers parse");
        peers.push(peer::resolve(&set.inventory, &written).expect("pool peers resolve"));
    }
    let mut queries = Vec::new();
    for endpoint in &set.inventory.endpoints {
        for direction in [Direction::Ingress, Direction::Egress] {
            for peer in &peers {
                for (proto, port) in PACKETS {
                    let proto = IpProto(proto);
                    let expected = evaluate_direction(set, endpoint, direction, peer, proto, port);
                    queries.push(DirectionQuery { endpoint, direction, peer: *peer, proto, port, expected });
                }
            }
        }
    }
    queries
}

/// The identity the datapath sees for `peer`: an endpoint's own, an
/// address's from the ipcache (longest prefix), a reserved entity's number.
pub fn identity_of(resolved: &Resolved, peer: &Peer<'_>) -> Identity {
    match peer {
        Peer::Endpoint(e) => resolved.endpoint(&e.name).expect("every endpoint is resolved").identity,
        Peer::Outside(addr) => resolved.identity_of(*addr),
        Peer::Reserved(r) => reserved_identity(*r),
    }
}
