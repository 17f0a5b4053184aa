//! The ipcache (prefix -> identity, longest prefix wins) and the identity list.

use super::identity::Allocation;
use super::selector::RESERVED;
use crate::ir::{Identity, IdentityInfo, IdentityKind};
use crate::sema::model::Inventory;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Later insertions win for the same prefix: an endpoint or node address
/// written as a policy prefix still resolves to the endpoint or the host
/// ("endpoint and node addresses never match a CIDR peer").
pub fn build(allocation: &Allocation, inventory: &Inventory, endpoint_ids: &[Identity]) -> Vec<(IpNet, Identity)> {
    let mut map: BTreeMap<IpNet, Identity> = BTreeMap::new();
    map.insert(IpNet::V4(Ipv4Net::default()), Identity::WORLD_IPV4);
    map.insert(IpNet::V6(Ipv6Net::default()), Identity::WORLD_IPV6);
    for (prefix, id) in &allocation.by_prefix {
        map.insert(*prefix, *id);
    }
    let node =
        inventory.node.ipv4.iter().map(|a| IpAddr::V4(*a)).chain(inventory.node.ipv6.iter().map(|a| IpAddr::V6(*a)));
    for addr in node {
        map.insert(IpNet::from(addr), Identity::HOST);
    }
    for (endpoint, id) in inventory.endpoints.iter().zip(endpoint_ids) {
        let addrs = endpoint.ipv4.map(IpAddr::V4).into_iter().chain(endpoint.ipv6.map(IpAddr::V6));
        for addr in addrs {
            map.insert(IpNet::from(addr), *id);
        }
    }
    map.into_iter().collect()
}

/// Every identity in use, sorted by number.
pub fn identities(allocation: &Allocation) -> Vec<IdentityInfo> {
    let reserved = RESERVED
        .iter()
        .map(|(id, name)| IdentityInfo { id: *id, kind: IdentityKind::Reserved { name: name.to_string() } });
    let endpoints = allocation
        .by_labels
        .iter()
        .map(|(labels, id)| IdentityInfo { id: *id, kind: IdentityKind::Endpoint { labels: labels.clone() } });
    let cidrs = allocation
        .by_prefix
        .iter()
        .map(|(prefix, id)| IdentityInfo { id: *id, kind: IdentityKind::Cidr { prefix: *prefix } });
    let mut all: Vec<IdentityInfo> = reserved.chain(endpoints).chain(cidrs).collect();
    all.sort_by_key(|info| info.id);
    all
}
