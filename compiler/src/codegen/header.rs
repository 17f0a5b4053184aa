//! What a header says: the code-shaping features (ENABLE_*), the node-wide
//! configuration, and one endpoint's constants; rendered with minijinja from
//! `templates/*.h.j2`.

use super::entries::PolicyEntry;
use super::CodegenError;
use crate::ir::{DirectionTable, EndpointPolicy, Identity};
use crate::sema::model::EndpointDef;
use crate::syntax::ast::Action;
use minijinja::{context, Environment};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const NODE_TEMPLATE: &str = include_str!("../../../templates/node_config.h.j2");
pub const ENDPOINT_TEMPLATE: &str = include_str!("../../../templates/ep_config.h.j2");

/// A compile-time switch of the datapath; the set of them is the code shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Feature {
    Ipv4,
    Ipv6,
    /// Only when the direction is enforced: otherwise no map, no lookup.
    IngressPolicy,
    EgressPolicy,
    /// Some entry denies: the datapath checks for the deny action.
    DenyRules,
    /// Some interval is neither one port nor every port. Informational:
    /// the LPM lookup is the same, so it is not part of the code shape.
    PortRanges,
    /// Some entry is for ICMP or ICMPv6. Informational, as `PortRanges`.
    IcmpRules,
    /// Verdicts are reported on the ring buffer.
    Events,
}

impl Feature {
    /// Whether the datapath C tests it: only these make objects differ.
    pub fn shapes_code(self) -> bool {
        !matches!(self, Feature::PortRanges | Feature::IcmpRules)
    }

    pub fn define(self) -> &'static str {
        match self {
            Feature::Ipv4 => "IPV4",
            Feature::Ipv6 => "IPV6",
            Feature::IngressPolicy => "INGRESS_POLICY",
            Feature::EgressPolicy => "EGRESS_POLICY",
            Feature::DenyRules => "DENY_RULES",
            Feature::PortRanges => "PORT_RANGES",
            Feature::IcmpRules => "ICMP_RULES",
            Feature::Events => "EVENTS",
        }
    }
}

/// The features, sorted: equal sets give the same object.
pub type Features = BTreeSet<Feature>;

/// Choices the build makes for every endpoint.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct BuildOptions {
    pub events: bool,
    /// 0: drops; 1: drops and new connections; 2: every verdict.
    pub trace_level: u32,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { events: true, trace_level: 0 }
    }
}

/// An endpoint's addresses, from its inventory entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EndpointAddresses {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mac: Option<[u8; 6]>,
}

impl EndpointAddresses {
    pub fn of(def: &EndpointDef) -> EndpointAddresses {
        EndpointAddresses { ipv4: def.ipv4, ipv6: def.ipv6, mac: def.mac }
    }
}

pub fn features_of(policy: &EndpointPolicy, addresses: &EndpointAddresses, options: &BuildOptions) -> Features {
    let mut features = Features::new();
    let enforced: Vec<&DirectionTable> = [&policy.ingress, &policy.egress].into_iter().filter(|t| t.enforced).collect();
    let intervals = || {
        enforced
            .iter()
            .flat_map(|t| t.tables.values())
            .flat_map(|l4| l4.protocols.iter())
            .flat_map(|(p, v)| v.iter().map(move |e| (*p, e)))
    };
    let decisions = || {
        enforced
            .iter()
            .flat_map(|t| t.tables.values())
            .flat_map(|l4| l4.other.iter().copied().chain(l4.protocols.values().flatten().map(|e| e.decision)))
    };
    let switches = [
        (Feature::Ipv4, addresses.ipv4.is_some()),
        (Feature::Ipv6, addresses.ipv6.is_some()),
        (Feature::IngressPolicy, policy.ingress.enforced),
        (Feature::EgressPolicy, policy.egress.enforced),
        (Feature::DenyRules, decisions().any(|d| d.action == Action::Deny)),
        (Feature::PortRanges, intervals().any(|(_, e)| e.low != e.high && (e.low, e.high) != (0, u16::MAX))),
        (Feature::IcmpRules, intervals().any(|(p, _)| p == 1 || p == 58)),
        (Feature::Events, options.events),
    ];
    features.extend(switches.into_iter().filter(|(_, on)| *on).map(|(f, _)| f));
    features
}

/// A short, stable name for a code shape (used in generated comments).
pub fn shape_name(features: &Features) -> String {
    let names: Vec<&str> = features.iter().map(|f| f.define()).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join("+")
    }
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct MapSizes {
    pub ipcache: u32,
    pub conntrack: u32,
    pub events_ringbuf: u32,
    pub policy: u32,
    pub metrics: u32,
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct ConntrackLifetimes {
    pub tcp: u32,
    pub non_tcp: u32,
    pub close: u32,
}

/// The node header's inputs; part of every object's code shape.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct NodeConfig {
    pub sizes: MapSizes,
    pub conntrack: ConntrackLifetimes,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            sizes: MapSizes {
                ipcache: 65536,
                conntrack: 262144,
                events_ringbuf: 1 << 20,
                policy: 65536,
                metrics: 16384,
            },
            conntrack: ConntrackLifetimes { tcp: 21600, non_tcp: 60, close: 10 },
        }
    }
}

/// One endpoint's constants: `#define`s in its header, `.rodata` values for
/// the shared object.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointConstants {
    pub name: String,
    pub identity: u32,
    /// The endpoint's number on the node (LXC_ID), from 1.
    pub id: u32,
    pub trace_level: u32,
    pub addresses: EndpointAddresses,
}

impl EndpointConstants {
    /// (variable name, bytes) for `.rodata`, as templates/bpf/common.h declares them.
    pub fn rodata(&self) -> Vec<(String, Vec<u8>)> {
        let addresses = &self.addresses;
        vec![
            ("seclabel".into(), self.identity.to_ne_bytes().to_vec()),
            ("lxc_id".into(), self.id.to_ne_bytes().to_vec()),
            ("trace_level".into(), self.trace_level.to_ne_bytes().to_vec()),
            ("lxc_ipv4".into(), addresses.ipv4.map_or([0; 4], |a| a.octets()).to_vec()),
            ("lxc_ipv6".into(), addresses.ipv6.map_or([0; 16], |a| a.octets()).to_vec()),
            ("lxc_mac".into(), addresses.mac.unwrap_or([0; 6]).to_vec()),
        ]
    }
}

/// How many entries each enforced direction's map gets (for the header).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyMapSummary {
    pub name: &'static str,
    pub entries: usize,
    pub tables: usize,
}

pub fn policy_map_summary(name: &'static str, table: &DirectionTable, entries: &[PolicyEntry]) -> PolicyMapSummary {
    PolicyMapSummary { name, entries: entries.len(), tables: table.tables.len() }
}

fn render(name: &str, source: &str, ctx: minijinja::Value) -> Result<String, CodegenError> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    let template_error = |source| CodegenError::Template { name: name.to_string(), source };
    env.add_template(name, source).map_err(template_error)?;
    env.get_template(name).and_then(|t| t.render(ctx)).map_err(template_error)
}

pub fn render_node(node: &NodeConfig) -> Result<String, CodegenError> {
    let reserved = [
        ("unknown", Identity::UNKNOWN),
        ("host", Identity::HOST),
        ("world", Identity::WORLD),
        ("unmanaged", Identity::UNMANAGED),
        ("health", Identity::HEALTH),
        ("init", Identity::INIT),
        ("world_ipv4", Identity::WORLD_IPV4),
        ("world_ipv6", Identity::WORLD_IPV6),
    ];
    let reserved: Vec<_> = reserved.iter().map(|(name, id)| context! { name => name, id => id.0 }).collect();
    render("node_config.h.j2", NODE_TEMPLATE, context! { reserved, sizes => node.sizes, conntrack => node.conntrack })
}

/// The features that make objects differ (see [`Feature::shapes_code`]).
pub fn code_shape(features: &Features) -> Features {
    features.iter().copied().filter(|f| f.shapes_code()).collect()
}

/// The features one direction's programs depend on: the code shape without
/// the other direction's policy feature. templates/bpf tests
/// `ENABLE_INGRESS_POLICY` only on the ingress path (`to_ep`, `to_ep_v6`) and
/// `ENABLE_EGRESS_POLICY` only on the egress path; every other feature may
/// shape both. Objects whose shapes agree on a direction's set (built from
/// the same templates, node header and clang) have programs for that
/// direction that decide alike, though clang may lay them out differently:
/// the runtime keeps such a direction's running programs on a code-shape
/// change instead of loading the new ones.
pub fn direction_code_shape(features: &Features, ingress: bool) -> Features {
    let other = if ingress { Feature::EgressPolicy } else { Feature::IngressPolicy };
    code_shape(features).into_iter().filter(|f| *f != other).collect()
}

/// The header of a code shape: the code-shaping features only (the shared
/// object's build), so endpoints that differ only in informational
/// features share an object.
pub fn render_shape(features: &Features) -> Result<String, CodegenError> {
    let shape = code_shape(features);
    let defines: Vec<&str> = shape.iter().map(|f| f.define()).collect();
    render("ep_config.h.j2", ENDPOINT_TEMPLATE, context! { features => defines, shape => shape_name(&shape) })
}

/// The endpoint's header: features and constants (the auditable artifact,
/// and the input of a per-endpoint compile).
pub fn render_endpoint(
    constants: &EndpointConstants,
    features: &Features,
    policy_maps: &[PolicyMapSummary],
) -> Result<String, CodegenError> {
    let defines: Vec<&str> = features.iter().map(|f| f.define()).collect();
    let addresses = &constants.addresses;
    let endpoint = context! {
        name => constants.name,
        identity => constants.identity,
        id => constants.id,
        trace_level => constants.trace_level,
        ipv4 => addresses.ipv4.map(|a| format!("0x{:08x}", u32::from_ne_bytes(a.octets()))),
        ipv6 => addresses.ipv6.map(|a| a.octets().iter().map(|b| format!("0x{b:02x}")).collect::<Vec<_>>()),
        mac => addresses.mac.map(|m| m.iter().map(|b| format!("0x{b:02x}")).collect::<Vec<_>>()),
        policy_maps => policy_maps,
    };
    render("ep_config.h.j2", ENDPOINT_TEMPLATE, context! { features => defines, endpoint })
}

#[cfg(test)]
mod direction_shape_tests {
    use super::{direction_code_shape, Feature, Features};

    #[test]
    fn a_direction_drops_the_other_directions_policy_and_informational_features() {
        let all: Features = [
            Feature::Ipv4,
            Feature::Ipv6,
            Feature::IngressPolicy,
            Feature::EgressPolicy,
            Feature::DenyRules,
            Feature::PortRanges,
            Feature::IcmpRules,
            Feature::Events,
        ]
        .into_iter()
        .collect();
        let common = [Feature::Ipv4, Feature::Ipv6, Feature::DenyRules, Feature::Events];
        let ingress: Features = common.into_iter().chain([Feature::IngressPolicy]).collect();
        let egress: Features = common.into_iter().chain([Feature::EgressPolicy]).collect();
        assert_eq!(direction_code_shape(&all, true), ingress);
        assert_eq!(direction_code_shape(&all, false), egress);
        // Ingress enforced or not: the egress programs' features are the same.
        let without_ingress: Features = all.iter().copied().filter(|f| *f != Feature::IngressPolicy).collect();
        assert_eq!(direction_code_shape(&without_ingress, false), egress);
        assert_ne!(direction_code_shape(&without_ingress, true), ingress);
    }
}
