//! The resolved policy: numeric identities and, per endpoint and direction,
//! the exact table the datapath consults. No AST, no names to resolve:
//! templates and the runtime read only this.
//!
//! Table semantics (the contract between resolution, codegen and the BPF
//! datapath, and what [`DirectionTable::lookup`] implements):
//! 1. A direction that is not `enforced` allows everything.
//! 2. Otherwise, the peer's identity selects one [`L4Table`]: the one keyed
//!    by that identity if there is one, else the one keyed [`PeerKey::Any`],
//!    else none (default deny). An identity's own table is complete: it
//!    already includes what `Any` rules say about that identity.
//! 3. In the chosen table, the packet's protocol selects a list of disjoint,
//!    sorted port intervals (the ICMP type stands in for the port); the
//!    interval containing the port gives the decision. Protocols other than
//!    the five known ones use `other`. No interval: default deny.
//!
//! Deny precedence is resolved when the table is built: a decision is the
//! final verdict and the rule that decided it (the matching deny with the
//! lowest rule id, else the matching allow with the lowest rule id).

use crate::sema::model::RuleId;
use crate::syntax::ast::Action;
use serde::Serialize;
use std::collections::BTreeMap;

/// A numeric security identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Identity(pub u32);

impl Identity {
    /// Reserved numbers, as in Cilium. 1-255 are reserved.
    pub const UNKNOWN: Identity = Identity(0);
    pub const HOST: Identity = Identity(1);
    pub const WORLD: Identity = Identity(2);
    pub const UNMANAGED: Identity = Identity(3);
    pub const HEALTH: Identity = Identity(4);
    pub const INIT: Identity = Identity(5);
    /// The outside world by address family (what `0.0.0.0/0` and `::/0`
    /// resolve to); `WORLD` itself is the world of unknown family.
    pub const WORLD_IPV4: Identity = Identity(9);
    pub const WORLD_IPV6: Identity = Identity(10);
    /// Endpoint identities are numbered from here.
    pub const FIRST_ENDPOINT: u32 = 256;
    /// Node-local CIDR identities are numbered from here (2^24).
    pub const FIRST_CIDR: u32 = 1 << 24;

    pub fn is_reserved(self) -> bool {
        self.0 < Identity::FIRST_ENDPOINT
    }

    pub fn is_cidr(self) -> bool {
        self.0 >= Identity::FIRST_CIDR
    }
}

/// Which peers an [`L4Table`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerKey {
    /// Every peer identity without a table of its own.
    Any,
    Identity(Identity),
}

/// The final verdict for a set of packets and the rule that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Decision {
    pub action: Action,
    pub rule: RuleId,
}

/// Inclusive port (or ICMP type) interval with its decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortEntry {
    pub low: u16,
    pub high: u16,
    pub decision: Decision,
}

/// Decisions by protocol and port for one peer key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct L4Table {
    /// IP protocol number -> disjoint intervals sorted by `low`.
    pub protocols: BTreeMap<u8, Vec<PortEntry>>,
    /// Protocols other than TCP, UDP, SCTP, ICMP and ICMPv6.
    pub other: Option<Decision>,
}

impl L4Table {
    pub fn lookup(&self, proto: u8, port: u16) -> Option<Decision> {
        match self.protocols.get(&proto) {
            Some(entries) => {
                let i = entries.partition_point(|e| e.high < port);
                entries.get(i).filter(|e| e.low <= port).map(|e| e.decision)
            }
            None if is_known_protocol(proto) => None,
            None => self.other,
        }
    }

    /// How many entries this table costs (intervals, plus one for `other`).
    pub fn entry_count(&self) -> usize {
        self.protocols.values().map(Vec::len).sum::<usize>() + usize::from(self.other.is_some())
    }
}

/// The five protocols a table lists by number.
pub fn is_known_protocol(proto: u8) -> bool {
    matches!(proto, 1 | 6 | 17 | 58 | 132)
}

/// One endpoint's policy in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirectionTable {
    /// Whether any policy with a section for this direction selects the endpoint.
    pub enforced: bool,
    /// The policies that put it in default-deny (for "why" answers).
    pub enforced_by: Vec<String>,
    pub tables: BTreeMap<PeerKey, L4Table>,
}

/// What the datapath decides for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum TableVerdict {
    /// The direction is not enforced.
    NotEnforced,
    Decided {
        action: Action,
        rule: RuleId,
    },
    /// Enforced and no entry matched.
    DefaultDeny,
}

impl TableVerdict {
    pub fn allows(self) -> bool {
        matches!(self, TableVerdict::NotEnforced | TableVerdict::Decided { action: Action::Allow, .. })
    }
}

impl DirectionTable {
    pub fn lookup(&self, peer: Identity, proto: u8, port: u16) -> TableVerdict {
        if !self.enforced {
            return TableVerdict::NotEnforced;
        }
        let table = self.tables.get(&PeerKey::Identity(peer)).or_else(|| self.tables.get(&PeerKey::Any));
        match table.and_then(|t| t.lookup(proto, port)) {
            Some(d) => TableVerdict::Decided { action: d.action, rule: d.rule },
            None => TableVerdict::DefaultDeny,
        }
    }

    pub fn entry_count(&self) -> usize {
        self.tables.values().map(L4Table::entry_count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(action: Action, rule: u32) -> Decision {
        Decision { action, rule: RuleId(rule) }
    }

    #[test]
    fn lookup_follows_the_contract() {
        let mut any = L4Table::default();
        any.protocols.insert(6, vec![PortEntry { low: 80, high: 80, decision: decision(Action::Allow, 1) }]);
        let mut own = L4Table::default();
        own.protocols.insert(
            6,
            vec![
                PortEntry { low: 1, high: 79, decision: decision(Action::Deny, 2) },
                PortEntry { low: 80, high: 80, decision: decision(Action::Allow, 1) },
            ],
        );
        own.other = Some(decision(Action::Allow, 3));
        let table = DirectionTable {
            enforced: true,
            enforced_by: vec!["p".into()],
            tables: BTreeMap::from([(PeerKey::Any, any), (PeerKey::Identity(Identity(256)), own)]),
        };
        let allow1 = TableVerdict::Decided { action: Action::Allow, rule: RuleId(1) };
        assert_eq!(table.lookup(Identity(300), 6, 80), allow1);
        assert_eq!(table.lookup(Identity(300), 6, 81), TableVerdict::DefaultDeny);
        assert_eq!(table.lookup(Identity(256), 6, 80), allow1);
        assert_eq!(table.lookup(Identity(256), 6, 5), TableVerdict::Decided { action: Action::Deny, rule: RuleId(2) });
        assert_eq!(table.lookup(Identity(256), 6, 81), TableVerdict::DefaultDeny);
        assert_eq!(table.lookup(Identity(256), 17, 53), TableVerdict::DefaultDeny);
        assert_eq!(
            table.lookup(Identity(256), 47, 0),
            TableVerdict::Decided { action: Action::Allow, rule: RuleId(3) }
        );
        assert_eq!(table.entry_count(), 1 + 3);
        let open = DirectionTable::default();
        assert_eq!(open.lookup(Identity(2), 6, 22), TableVerdict::NotEnforced);
    }
}

/// What resolution produces for a whole policy set and inventory.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resolved {
    /// Every identity in use, sorted by number.
    pub identities: Vec<IdentityInfo>,
    /// Prefix -> identity, longest prefix wins (what the node-wide ipcache holds).
    pub ipcache: Vec<(ipnet::IpNet, Identity)>,
    /// Per endpoint of the inventory, in inventory order.
    pub endpoints: Vec<EndpointPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityInfo {
    pub id: Identity,
    pub kind: IdentityKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    Reserved { name: String },
    Endpoint { labels: BTreeMap<String, String> },
    Cidr { prefix: ipnet::IpNet },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointPolicy {
    pub name: String,
    pub identity: Identity,
    pub ingress: DirectionTable,
    pub egress: DirectionTable,
}

impl Resolved {
    pub fn endpoint(&self, name: &str) -> Option<&EndpointPolicy> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The identity an address resolves to (longest prefix match over the ipcache).
    pub fn identity_of(&self, addr: std::net::IpAddr) -> Identity {
        self.ipcache
            .iter()
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .map_or(if addr.is_ipv4() { Identity::WORLD_IPV4 } else { Identity::WORLD_IPV6 }, |(_, id)| *id)
    }
}
