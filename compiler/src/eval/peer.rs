//! The ends of a flow, and which rule peers name them (SEMANTICS.md,
//! "Identities" and "Which peers a rule names").

use crate::sema::model::{EndpointDef, Inventory, PeerMatch};
use crate::syntax::ast::Entity;
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// One end of a flow as a person names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FlowPeer {
    /// An endpoint of the inventory, by name.
    Endpoint(String),
    /// An address: an endpoint's, the node's, or one outside the cluster.
    Address(IpAddr),
    /// A reserved identity without an address (`world`, `host`, `health`,
    /// `init`, `unmanaged`). `cluster` and `all` name sets, not peers.
    Entity(Entity),
}

impl fmt::Display for FlowPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowPeer::Endpoint(name) => f.write_str(name),
            FlowPeer::Address(addr) => write!(f, "{addr}"),
            FlowPeer::Entity(entity) => f.write_str(entity.keyword()),
        }
    }
}

/// The reserved identities a flow can come from or go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reserved {
    Host,
    /// Outside the cluster, with no particular address.
    World,
    Unmanaged,
    Health,
    Init,
}

impl Reserved {
    pub fn from_entity(entity: Entity) -> Option<Reserved> {
        match entity {
            Entity::Host => Some(Reserved::Host),
            Entity::World => Some(Reserved::World),
            Entity::Unmanaged => Some(Reserved::Unmanaged),
            Entity::Health => Some(Reserved::Health),
            Entity::Init => Some(Reserved::Init),
            Entity::Cluster | Entity::All => None,
        }
    }

    pub fn keyword(self) -> &'static str {
        match self {
            Reserved::Host => "host",
            Reserved::World => "world",
            Reserved::Unmanaged => "unmanaged",
            Reserved::Health => "health",
            Reserved::Init => "init",
        }
    }
}

/// One end of a flow, resolved against the inventory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Peer<'a> {
    Endpoint(&'a EndpointDef),
    Reserved(Reserved),
    /// An address outside the cluster (neither an endpoint's nor the node's).
    Outside(IpAddr),
}

impl<'a> Peer<'a> {
    pub fn endpoint(&self) -> Option<&'a EndpointDef> {
        match self {
            Peer::Endpoint(e) => Some(e),
            Peer::Reserved(_) | Peer::Outside(_) => None,
        }
    }
}

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Endpoint(e) => f.write_str(&e.name),
            Peer::Reserved(r) => f.write_str(r.keyword()),
            Peer::Outside(addr) => write!(f, "{addr}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// `--from ap1` when the inventory has `app1`.
    #[error("no endpoint `{name}` in the inventory")]
    UnknownEndpoint { name: String, suggestion: Option<String> },
    /// `--to cluster`: a set of peers, not one.
    #[error("`{}` names a set of peers, not one peer of a flow", .0.keyword())]
    NotAFlowPeer(Entity),
}

impl PeerError {
    /// A hint for the help line.
    pub fn help(&self) -> String {
        match self {
            PeerError::UnknownEndpoint { suggestion: Some(close), .. } => format!("did you mean `{close}`?"),
            PeerError::UnknownEndpoint { .. } => {
                "name an endpoint of the inventory, an IP address, or `world`, `host`, `health`, `init`, `unmanaged`"
                    .into()
            }
            PeerError::NotAFlowPeer(_) => {
                "name one endpoint, an address, or `world`, `host`, `health`, `init`, `unmanaged`".into()
            }
        }
    }
}

/// Resolves a flow's end: endpoint addresses give the endpoint, node
/// addresses give `host`, any other address is outside the cluster.
pub fn resolve<'a>(inventory: &'a Inventory, peer: &FlowPeer) -> Result<Peer<'a>, PeerError> {
    match peer {
        FlowPeer::Endpoint(name) => {
            inventory.endpoint(name).map(Peer::Endpoint).ok_or_else(|| PeerError::UnknownEndpoint {
                name: name.clone(),
                suggestion: closest(inventory.endpoints.iter().map(|e| e.name.as_str()), name),
            })
        }
        FlowPeer::Entity(entity) => {
            Reserved::from_entity(*entity).map(Peer::Reserved).ok_or(PeerError::NotAFlowPeer(*entity))
        }
        FlowPeer::Address(addr) => Ok(resolve_address(inventory, *addr)),
    }
}

pub fn resolve_address(inventory: &Inventory, addr: IpAddr) -> Peer<'_> {
    let owner = inventory.endpoints.iter().find(|e| match addr {
        IpAddr::V4(a) => e.ipv4 == Some(a),
        IpAddr::V6(a) => e.ipv6 == Some(a),
    });
    if let Some(endpoint) = owner {
        return Peer::Endpoint(endpoint);
    }
    let is_node = match addr {
        IpAddr::V4(a) => inventory.node.ipv4.contains(&a),
        IpAddr::V6(a) => inventory.node.ipv6.contains(&a),
    };
    if is_node {
        Peer::Reserved(Reserved::Host)
    } else {
        Peer::Outside(addr)
    }
}

/// The closest name within a small edit distance, for "did you mean".
pub fn closest<'n>(names: impl Iterator<Item = &'n str>, wanted: &str) -> Option<String> {
    names
        .map(|n| (crate::sema::lower::edit_distance(n, wanted), n))
        .filter(|(d, _)| *d <= 2.max(wanted.len() / 3))
        .min()
        .map(|(_, n)| n.to_string())
}

/// Whether one peer of a rule names `peer`.
pub fn matches(m: &PeerMatch, peer: &Peer<'_>) -> bool {
    match m {
        PeerMatch::Endpoints(selector) => peer.endpoint().is_some_and(|e| selector.matches(&e.labels)),
        PeerMatch::Cidr { net, except } => match peer {
            // Endpoint and node addresses resolve to their own identities,
            // never to a CIDR.
            Peer::Outside(addr) => net.contains(addr) && !except.iter().any(|e| e.contains(addr)),
            // The world with no address has no family, so no prefix holds it:
            // `0.0.0.0/0` is world-ipv4 and `::/0` world-ipv6 (SEMANTICS.md).
            Peer::Reserved(_) | Peer::Endpoint(_) => false,
        },
        PeerMatch::Entity(entity) => entity_matches(*entity, peer),
    }
}

fn entity_matches(entity: Entity, peer: &Peer<'_>) -> bool {
    match entity {
        Entity::All => true,
        Entity::Cluster => !matches!(peer, Peer::Outside(_) | Peer::Reserved(Reserved::World)),
        Entity::World => matches!(peer, Peer::Outside(_) | Peer::Reserved(Reserved::World)),
        Entity::Host => *peer == Peer::Reserved(Reserved::Host),
        Entity::Health => *peer == Peer::Reserved(Reserved::Health),
        Entity::Init => *peer == Peer::Reserved(Reserved::Init),
        Entity::Unmanaged => *peer == Peer::Reserved(Reserved::Unmanaged),
    }
}

/// The endpoints sharing `peer`'s identity (its label set): tables are per
/// identity, so an egress named port means the port on any of them.
pub fn same_identity<'a>(inventory: &'a Inventory, peer: &Peer<'_>) -> Vec<&'a EndpointDef> {
    match peer {
        Peer::Endpoint(e) => inventory.endpoints.iter().filter(|o| o.labels == e.labels).collect(),
        Peer::Reserved(_) | Peer::Outside(_) => Vec::new(),
    }
}
