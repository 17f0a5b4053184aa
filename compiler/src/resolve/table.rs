//! One endpoint's [`DirectionTable`]s, from the policies that select it.
//!
//! For a direction: the rules of the matching sections, each naming a set
//! of peer identities (from the selector cache) or every peer (`all`). An
//! identity some rule names gets its own table with every rule that applies
//! to it, including the `all` rules; `PeerKey::Any` gets the `all` rules
//! alone. Named ports resolve against the destination: on ingress the
//! endpoint itself, on egress each peer identity's endpoints.

use super::l4::{L4Builder, NamedPorts};
use super::selector::SelectorCache;
use crate::ir::{DirectionTable, Identity, L4Table, PeerKey};
use crate::sema::model::{PeerMatch, Policy, PortMatch, Rule};
use crate::syntax::ast::{Direction, Entity};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What every endpoint's tables are computed from.
pub struct Context<'a> {
    pub policies: &'a [Policy],
    pub cache: &'a SelectorCache,
    /// Endpoint identity -> the union of its endpoints' named ports.
    pub named_by_identity: &'a BTreeMap<Identity, NamedPorts>,
    /// Endpoint identity -> indexes of the policies that select it.
    policies_of: HashMap<Identity, Vec<usize>>,
}

impl<'a> Context<'a> {
    /// The cache must already hold every policy selector and rule peer.
    pub fn new(
        policies: &'a [Policy],
        cache: &'a SelectorCache,
        named_by_identity: &'a BTreeMap<Identity, NamedPorts>,
    ) -> Context<'a> {
        let mut policies_of: HashMap<Identity, Vec<usize>> = HashMap::new();
        for (index, policy) in policies.iter().enumerate() {
            for id in cache.get(&PeerMatch::Endpoints(policy.selector.clone())) {
                policies_of.entry(*id).or_default().push(index);
            }
        }
        Context { policies, cache, named_by_identity, policies_of }
    }

    /// The policies selecting endpoints of `identity`, in source order.
    pub fn policies_selecting(&self, identity: Identity) -> impl Iterator<Item = &'a Policy> + '_ {
        self.policies_of.get(&identity).into_iter().flatten().map(|i| &self.policies[*i])
    }

    /// Ingress and egress tables of an endpoint with this identity and named ports.
    pub fn endpoint_tables(&self, identity: Identity, own_named: &NamedPorts) -> (DirectionTable, DirectionTable) {
        (
            self.direction_table(identity, own_named, Direction::Ingress),
            self.direction_table(identity, own_named, Direction::Egress),
        )
    }

    fn direction_table(&self, identity: Identity, own_named: &NamedPorts, direction: Direction) -> DirectionTable {
        let mut enforced_by: Vec<String> = Vec::new();
        let mut rules: Vec<&Rule> = Vec::new();
        for policy in self.policies_selecting(identity) {
            if let Some(section) = policy.section(direction) {
                if !enforced_by.contains(&policy.name) {
                    enforced_by.push(policy.name.clone());
                }
                rules.extend(section);
            }
        }
        if enforced_by.is_empty() {
            return DirectionTable::default();
        }
        let is_any = |rule: &Rule| rule.peers.contains(&PeerMatch::Entity(Entity::All));
        let uses_names = |rule: &Rule| rule.l4.iter().any(|l| matches!(l.ports, PortMatch::Named(_)));

        // Identity -> indexes (into `rules`) of the rules naming it specifically.
        let mut named_peers: BTreeMap<Identity, Vec<usize>> = BTreeMap::new();
        let mut any_rules: Vec<usize> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if is_any(rule) {
                any_rules.push(index);
                continue;
            }
            for peer in &rule.peers {
                for id in self.cache.get(peer) {
                    let list = named_peers.entry(*id).or_default();
                    if list.last() != Some(&index) {
                        list.push(index);
                    }
                }
            }
        }
        // An egress `all` rule with a named port means a port per peer identity:
        // those identities need tables of their own.
        if direction == Direction::Egress && any_rules.iter().any(|i| uses_names(rules[*i])) {
            for id in self.named_by_identity.keys() {
                named_peers.entry(*id).or_default();
            }
        }

        let no_names = NamedPorts::new();
        // Egress: the destination is the peer; outside peers have no named ports.
        let names_for = |peer: Option<Identity>| -> &NamedPorts {
            match (direction, peer) {
                (Direction::Ingress, _) => own_named,
                (Direction::Egress, Some(id)) => self.named_by_identity.get(&id).unwrap_or(&no_names),
                (Direction::Egress, None) => &no_names,
            }
        };
        let build = |indexes: &[usize], named: &NamedPorts| -> L4Table {
            let mut builder = L4Builder::default();
            for i in indexes {
                builder.add_rule(rules[*i], named);
            }
            builder.build()
        };

        let any_table = build(&any_rules, names_for(None));
        let mut tables = BTreeMap::new();
        // Peers named by the same rules (and, with named ports on egress, the same
        // identity's names) get the same table: build it once.
        let mut memo: HashMap<(Vec<usize>, Option<Identity>), L4Table> = HashMap::new();
        for (id, mut indexes) in named_peers {
            indexes.extend(&any_rules);
            indexes.sort_unstable();
            indexes.dedup();
            let peer_specific_names = direction == Direction::Egress
                && indexes.iter().any(|i| uses_names(rules[*i]))
                && self.named_by_identity.contains_key(&id);
            let key = (indexes, peer_specific_names.then_some(id));
            let table = memo.entry(key).or_insert_with_key(|(indexes, _)| build(indexes, names_for(Some(id))));
            // A table equal to the `Any` one (or empty with no `Any`) says nothing new.
            if *table != any_table {
                tables.insert(PeerKey::Identity(id), table.clone());
            }
        }
        if any_table != L4Table::default() {
            tables.insert(PeerKey::Any, any_table);
        }
        DirectionTable { enforced: true, enforced_by, tables }
    }
}

/// Named ports of one endpoint, in the shape [`L4Builder`] reads.
pub fn endpoint_named_ports(named: &BTreeMap<String, (crate::sema::model::Proto, u16)>) -> NamedPorts {
    named.iter().map(|(name, pp)| (name.clone(), BTreeSet::from([*pp]))).collect()
}
