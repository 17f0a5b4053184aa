//! The checked policy set: names resolved (no `$references`), addresses and
//! ports validated and numeric, endpoints collected into an inventory.
//! Spans are kept so that later stages can point at the rule that decided.

use crate::syntax::ast::{Action, Direction, Entity};
use crate::syntax::Span;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
    pub inventory: Inventory,
}

impl PolicySet {
    /// All rules of all policies, in source order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.policies.iter().flat_map(|p| p.ingress.iter().flatten().chain(p.egress.iter().flatten()))
    }

    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.rules().find(|r| r.id == id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub name: String,
    pub selector: Selector,
    /// `None`: the policy has no `ingress` section and does not enforce ingress.
    /// `Some(vec![])`: an empty section: selected endpoints deny all ingress.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    #[serde(skip)]
    pub span: Span,
}

impl Policy {
    pub fn section(&self, direction: Direction) -> Option<&Vec<Rule>> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }
}

/// A rule's number, unique in the policy set: assigned in source order
/// (files sorted by path), starting at 1 (0 means "no rule": default deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RuleId(pub u32);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub id: RuleId,
    pub name: String,
    /// The policy it belongs to.
    pub policy: String,
    pub action: Action,
    pub direction: Direction,
    /// The rule matches a peer if any of these matches.
    pub peers: Vec<PeerMatch>,
    /// Where each of `peers` was written in the rule, index for index (a
    /// `$name` that expands to several peers gives each the reference's span).
    #[serde(skip)]
    pub peer_spans: Vec<Span>,
    /// The rule matches a packet if any of these matches; never empty
    /// (a rule without `on` gets [`L4Match::ANY`]).
    pub l4: Vec<L4Match>,
    /// Where each of `l4` was written, index for index: the port spec itself,
    /// also inside a `ports` definition (a rule without `on`: the rule's span).
    #[serde(skip)]
    pub l4_spans: Vec<Span>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerMatch {
    /// Endpoints (of the inventory) whose labels match.
    Endpoints(Selector),
    /// Addresses outside the cluster in `net` but in none of `except`.
    Cidr {
        net: IpNet,
        except: Vec<IpNet>,
    },
    Entity(Entity),
}

/// A label selector: all requirements must hold; no requirement selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// `key=v` or `key in (v, ...)`
    In {
        key: String,
        values: BTreeSet<String>,
    },
    /// `key!=v` or `key not in (v, ...)`: also true when the key is absent (as in Kubernetes)
    NotIn {
        key: String,
        values: BTreeSet<String>,
    },
    Exists {
        key: String,
    },
    DoesNotExist {
        key: String,
    },
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn { key, values } => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists { key } => labels.contains_key(key),
            Requirement::DoesNotExist { key } => !labels.contains_key(key),
        }
    }
}

pub type Labels = BTreeMap<String, String>;

/// IP protocols polc knows; the numbers are the IP protocol numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
    Icmpv6 = 58,
    Sctp = 132,
}

impl Proto {
    pub const ALL: [Proto; 5] = [Proto::Tcp, Proto::Udp, Proto::Sctp, Proto::Icmp, Proto::Icmpv6];
    pub const WITH_PORTS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmpv6 => "icmpv6",
            Proto::Sctp => "sctp",
        }
    }

    pub fn from_name(name: &str) -> Option<Proto> {
        Proto::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn is_icmp(self) -> bool {
        matches!(self, Proto::Icmp | Proto::Icmpv6)
    }
}

/// What a rule's `on` clause matches. For ICMP the "port" is the message type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct L4Match {
    /// `None`: any protocol.
    pub proto: Option<Proto>,
    pub ports: PortMatch,
}

impl L4Match {
    /// Everything: what a rule without `on` matches.
    pub const ANY: L4Match = L4Match { proto: None, ports: PortMatch::All };
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortMatch {
    All,
    /// Inclusive; a single port is `low == high`. With `proto: None` it
    /// applies to TCP, UDP and SCTP only.
    Range {
        low: u16,
        high: u16,
    },
    /// Resolved against the destination endpoint's named ports.
    Named(String),
}

/// The endpoints this node knows, and the node's own addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Inventory {
    pub endpoints: Vec<EndpointDef>,
    pub node: NodeDef,
}

impl Inventory {
    pub fn endpoint(&self, name: &str) -> Option<&EndpointDef> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeDef {
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointDef {
    pub name: String,
    pub labels: Labels,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mac: Option<[u8; 6]>,
    /// The host-side device the runtime attaches to.
    pub iface: Option<String>,
    /// The endpoint's network namespace, if the runtime should know it.
    pub netns: Option<String>,
    /// `port http = tcp/80`
    pub named_ports: BTreeMap<String, (Proto, u16)>,
    #[serde(skip)]
    pub span: Span,
}
