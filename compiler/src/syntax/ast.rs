//! The abstract syntax tree. Every node carries the [`Span`] it was parsed
//! from. Tokens the checker validates (addresses, label keys and values,
//! numbers) are kept as written, so diagnostics can point at them.

use super::Span;
use serde::Serialize;

/// A name as written: policy, rule, definition or endpoint names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Ident {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
}

/// A token kept as written (label key or value, address, device name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Text {
    /// The value, unquoted.
    pub value: String,
    /// Whether it was written in double quotes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub quoted: bool,
    #[serde(skip)]
    pub span: Span,
}

/// One parsed `.pol` file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Module {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    Policy(Policy),
    Endpoint(Endpoint),
    Node(Node),
    Ports(PortsDef),
    Selector(SelectorDef),
    Peers(PeersDef),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Policy(p) => p.span,
            Item::Endpoint(e) => e.span,
            Item::Node(n) => n.span,
            Item::Ports(d) => d.span,
            Item::Selector(d) => d.span,
            Item::Peers(d) => d.span,
        }
    }
}

/// `ports web = tcp/80, tcp/443`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortsDef {
    pub name: Ident,
    pub ports: Vec<PortItem>,
    #[serde(skip)]
    pub span: Span,
}

/// `selector frontend = {app=frontend}`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelectorDef {
    pub name: Ident,
    pub selector: LabelSelector,
    #[serde(skip)]
    pub span: Span,
}

/// `peers outside = 0.0.0.0/0 except (10.0.0.0/8), world`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeersDef {
    pub name: Ident,
    pub peers: Vec<Peer>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub name: Ident,
    pub select: EndpointSelector,
    pub sections: Vec<Section>,
    #[serde(skip)]
    pub span: Span,
}

/// What a policy's `select` names: an inline selector or a `selector` definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSelector {
    Inline(LabelSelector),
    Named(Ident),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn keyword(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The peer keyword that belongs in this direction's rules.
    pub fn peer_keyword(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Section {
    pub direction: Direction,
    pub rules: Vec<Rule>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn keyword(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// `from` or `to`, as written (the checker compares it with the section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKeyword {
    From,
    To,
}

/// `allow web: from {app=frontend} on tcp/80`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub action: Action,
    pub name: Ident,
    pub peer_keyword: PeerKeyword,
    #[serde(skip)]
    pub peer_keyword_span: Span,
    pub peers: Vec<Peer>,
    /// Empty: every protocol and port.
    pub ports: Vec<PortItem>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    Selector(LabelSelector),
    Cidr(CidrPeer),
    Entity(EntityRef),
    Ref(Ident),
}

impl Peer {
    pub fn span(&self) -> Span {
        match self {
            Peer::Selector(s) => s.span,
            Peer::Cidr(c) => c.span,
            Peer::Entity(e) => e.span,
            Peer::Ref(r) => r.span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    World,
    Host,
    Cluster,
    All,
    Health,
    Init,
    Unmanaged,
}

impl Entity {
    pub const ALL: [Entity; 7] =
        [Entity::World, Entity::Host, Entity::Cluster, Entity::All, Entity::Health, Entity::Init, Entity::Unmanaged];

    pub fn keyword(self) -> &'static str {
        match self {
            Entity::World => "world",
            Entity::Host => "host",
            Entity::Cluster => "cluster",
            Entity::All => "all",
            Entity::Health => "health",
            Entity::Init => "init",
            Entity::Unmanaged => "unmanaged",
        }
    }

    pub fn from_keyword(word: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.keyword() == word)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityRef {
    pub entity: Entity,
    #[serde(skip)]
    pub span: Span,
}

/// `10.0.0.0/8 except (10.1.0.0/16)`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CidrPeer {
    pub cidr: Text,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Text>,
    #[serde(skip)]
    pub span: Span,
}

/// `{app=web, tier in (a, b), !legacy}`: all terms must hold. `{}` selects every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelSelector {
    pub terms: Vec<LabelTerm>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelTerm {
    pub key: Text,
    pub op: LabelOp,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelOp {
    Equals(Text),
    NotEquals(Text),
    In(Vec<Text>),
    NotIn(Vec<Text>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortItem {
    Spec(PortSpec),
    Ref(Ident),
}

impl PortItem {
    pub fn span(&self) -> Span {
        match self {
            PortItem::Spec(s) => s.span,
            PortItem::Ref(r) => r.span,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    Any,
}

impl Protocol {
    pub fn keyword(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::Any => "any",
        }
    }

    pub fn from_keyword(word: &str) -> Option<Protocol> {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp, Protocol::Icmpv6, Protocol::Any]
            .into_iter()
            .find(|p| p.keyword() == word)
    }

    /// ICMP and ICMPv6 have message types where the others have ports.
    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::Icmp | Protocol::Icmpv6)
    }
}

/// `tcp`, `tcp/80`, `tcp/8080-8090`, `tcp/http`, `icmp/echo-request`, `icmp/8`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub port: Option<PortSel>,
    #[serde(skip)]
    pub span: Span,
}

/// Numbers are kept as `u64` so the checker can report `70000` rather than overflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSel {
    Number {
        value: u64,
        #[serde(skip)]
        span: Span,
    },
    Range {
        low: u64,
        high: u64,
        #[serde(skip)]
        span: Span,
    },
    /// A named port (`http`) or, with ICMP, a type name (`echo-request`).
    Name(Ident),
}

impl PortSel {
    pub fn span(&self) -> Span {
        match self {
            PortSel::Number { span, .. } | PortSel::Range { span, .. } => *span,
            PortSel::Name(name) => name.span,
        }
    }
}

/// An endpoint of the inventory: `endpoint app1 { labels {id=app1} ipv4 10.200.1.1 }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub name: Ident,
    pub fields: Vec<EndpointField>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointField {
    Labels {
        labels: Vec<(Text, Text)>,
        #[serde(skip)]
        span: Span,
    },
    Ipv4(Text),
    Ipv6(Text),
    Mac(Text),
    Iface(Text),
    Netns(Text),
    Port {
        name: Ident,
        spec: PortSpec,
        #[serde(skip)]
        span: Span,
    },
}

impl EndpointField {
    pub fn keyword(&self) -> &'static str {
        match self {
            EndpointField::Labels { .. } => "labels",
            EndpointField::Ipv4(_) => "ipv4",
            EndpointField::Ipv6(_) => "ipv6",
            EndpointField::Mac(_) => "mac",
            EndpointField::Iface(_) => "iface",
            EndpointField::Netns(_) => "netns",
            EndpointField::Port { .. } => "port",
        }
    }

    pub fn span(&self) -> Span {
        match self {
            EndpointField::Labels { span, .. } | EndpointField::Port { span, .. } => *span,
            EndpointField::Ipv4(t)
            | EndpointField::Ipv6(t)
            | EndpointField::Mac(t)
            | EndpointField::Iface(t)
            | EndpointField::Netns(t) => t.span,
        }
    }
}

/// `node { ipv4 10.200.0.1 }`: this node's own addresses (the `host` entity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub addresses: Vec<EndpointField>,
    #[serde(skip)]
    pub span: Span,
}
