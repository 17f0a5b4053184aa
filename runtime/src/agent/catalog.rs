//! What polcd needs to name what the kernel reports: the endpoint behind an
//! endpoint number, the endpoint or identity behind an address, and the rule
//! behind a rule id with the file and line it is written on.
//!
//! The kernel's records carry numbers only (`struct verdict_event`, the
//! counter indexes of `ep_metrics`). The agent builds a [`Catalog`] from its
//! checked policy set and resolution after every change; the monitor and the
//! counters read numbers through it.

use crate::bundle::{self, Manifest};
use polc::codegen::bundle::located_rules;
use polc::ir::{IdentityKind, Resolved};
use polc::resolve::selector::RESERVED;
use polc::sema::model::PolicySet;
use polc::syntax::source::SourceMap;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A rule as a person finds it: its name, its policy, where it is written
/// (the same record a bundle's manifest carries in `rules`).
pub use polc::codegen::bundle::ManifestRule as RuleInfo;

/// Every rule of a checked policy set, located through its sources.
pub fn rules_of(set: &PolicySet, sources: &SourceMap) -> Vec<RuleInfo> {
    located_rules(set, sources)
}

/// Names for the numbers of one policy version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Endpoint number on the node (`EP_ID`, the agent's LXC id) -> name.
    pub endpoints: BTreeMap<u32, String>,
    /// Endpoint addresses -> endpoint name.
    pub addresses: BTreeMap<IpAddr, String>,
    /// Identity -> how to call it when no endpoint address matches:
    /// reserved names (`world-ipv4`), prefixes, endpoint names.
    pub identities: BTreeMap<u32, String>,
    pub rules: BTreeMap<u32, RuleInfo>,
    /// Endpoint name -> its identity.
    pub endpoint_identities: BTreeMap<String, u32>,
}

impl Catalog {
    /// `ids`: the agent's endpoint numbers by name; `rules`: [`rules_of`]
    /// the set `resolved` was resolved from.
    pub fn build(resolved: &Resolved, set: &PolicySet, ids: &BTreeMap<String, u32>, rules: &[RuleInfo]) -> Catalog {
        let mut catalog = Catalog {
            endpoints: ids.iter().map(|(name, id)| (*id, name.clone())).collect(),
            rules: rules.iter().map(|r| (r.id, r.clone())).collect(),
            identities: RESERVED.iter().map(|(id, name)| (id.0, name.to_string())).collect(),
            ..Catalog::default()
        };
        for def in &set.inventory.endpoints {
            for addr in def.ipv4.map(IpAddr::V4).into_iter().chain(def.ipv6.map(IpAddr::V6)) {
                catalog.addresses.insert(addr, def.name.clone());
            }
        }
        for policy in &resolved.endpoints {
            catalog.endpoint_identities.insert(policy.name.clone(), policy.identity.0);
        }
        for info in &resolved.identities {
            let name = match &info.kind {
                IdentityKind::Reserved { name } => name.clone(),
                IdentityKind::Cidr { prefix } => prefix.to_string(),
                IdentityKind::Endpoint { .. } => {
                    let members: Vec<&str> =
                        resolved.endpoints.iter().filter(|e| e.identity == info.id).map(|e| e.name.as_str()).collect();
                    if members.is_empty() {
                        continue;
                    }
                    members.join(",")
                }
            };
            catalog.identities.insert(info.id.0, name);
        }
        catalog
    }

    /// Names from a bundle's manifest (`polcd run --bundle`): endpoints,
    /// addresses and identities as the build wrote them, rules from its
    /// `rules` (a manifest without them: rules by number).
    pub fn of_manifest(manifest: &Manifest) -> Catalog {
        let mut catalog = Catalog {
            rules: manifest.rules.iter().map(|r| (r.id, r.clone())).collect(),
            identities: RESERVED.iter().map(|(id, name)| (id.0, name.to_string())).collect(),
            ..Catalog::default()
        };
        for entry in &manifest.endpoints {
            catalog.endpoints.insert(entry.constants.id, entry.name.clone());
            catalog.endpoint_identities.insert(entry.name.clone(), entry.constants.identity);
            let addresses = entry.constants.addresses;
            for addr in addresses.ipv4.map(IpAddr::V4).into_iter().chain(addresses.ipv6.map(IpAddr::V6)) {
                catalog.addresses.insert(addr, entry.name.clone());
            }
        }
        for info in &manifest.identities {
            let name = match &info.kind {
                bundle::IdentityKind::Reserved { name } => name.clone(),
                bundle::IdentityKind::Cidr { prefix } => prefix.to_string(),
                bundle::IdentityKind::Endpoint { .. } => {
                    let members: Vec<&str> = manifest
                        .endpoints
                        .iter()
                        .filter(|e| e.constants.identity == info.id)
                        .map(|e| e.name.as_str())
                        .collect();
                    if members.is_empty() {
                        continue;
                    }
                    members.join(",")
                }
            };
            catalog.identities.insert(info.id, name);
        }
        catalog
    }

    /// The endpoint with number `id`, or `#id` when unknown (an endpoint
    /// removed since, or a generation of a previous polcd).
    pub fn endpoint(&self, id: u32) -> String {
        self.endpoints.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    }

    /// The name of one end of a packet: the endpoint owning the address,
    /// else the identity's name, else the address.
    pub fn peer(&self, addr: IpAddr, identity: u32) -> String {
        if let Some(name) = self.addresses.get(&addr) {
            return name.clone();
        }
        if addr.is_unspecified() && identity == 0 {
            return "?".to_string();
        }
        self.identities.get(&identity).cloned().unwrap_or_else(|| addr.to_string())
    }

    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(&id)
    }
}
