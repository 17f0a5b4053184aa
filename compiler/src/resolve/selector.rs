//! The selector cache: each distinct peer (and policy selector) -> the
//! identities it names, as SEMANTICS.md "Which peers a rule names" says.
//! Computed once per selector, then updated as identities come and go.

use crate::ir::Identity;
use crate::sema::model::{Labels, PeerMatch};
use crate::syntax::ast::Entity;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What an identity in use stands for, as far as selectors care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// `host`, `world`, `unmanaged`, `health`, `init`.
    Reserved,
    /// An endpoint identity and its security labels.
    Endpoint(Labels),
    /// A node-local CIDR identity.
    Cidr(IpNet),
}

/// The reserved identities every policy set has.
pub const RESERVED: [(Identity, &str); 7] = [
    (Identity::HOST, "host"),
    (Identity::WORLD, "world"),
    (Identity::UNMANAGED, "unmanaged"),
    (Identity::HEALTH, "health"),
    (Identity::INIT, "init"),
    (Identity::WORLD_IPV4, "world-ipv4"),
    (Identity::WORLD_IPV6, "world-ipv6"),
];

/// What a reserved identity stands for. The per-family worlds are the `/0`
/// prefixes, so CIDR peers select them like any other prefix.
pub fn reserved_peer(id: Identity) -> Peer {
    match id {
        Identity::WORLD_IPV4 => Peer::Cidr(IpNet::V4(ipnet::Ipv4Net::default())),
        Identity::WORLD_IPV6 => Peer::Cidr(IpNet::V6(ipnet::Ipv6Net::default())),
        _ => Peer::Reserved,
    }
}

/// The reserved identities as selector universe entries.
pub fn reserved_universe() -> impl Iterator<Item = (Identity, Peer)> {
    RESERVED.iter().map(|(id, _)| (*id, reserved_peer(*id)))
}

/// Whether `peer` names identity `id` (which stands for `what`).
pub fn selects(peer: &PeerMatch, id: Identity, what: &Peer) -> bool {
    match peer {
        PeerMatch::Endpoints(selector) => {
            matches!(what, Peer::Endpoint(labels) if selector.matches(labels))
        }
        PeerMatch::Cidr { net, except } => match what {
            // Outside addresses with a policy prefix: inside the net and no exception.
            Peer::Cidr(prefix) => net.contains(prefix) && !except.iter().any(|e| e.contains(prefix)),
            // `world` of unknown family is under no prefix; the per-family
            // worlds are `Peer::Cidr` of the `/0` prefixes.
            Peer::Reserved | Peer::Endpoint(_) => false,
        },
        PeerMatch::Entity(entity) => match entity {
            Entity::All => true,
            Entity::World => id == Identity::WORLD || matches!(what, Peer::Cidr(_)),
            Entity::Host => id == Identity::HOST,
            Entity::Health => id == Identity::HEALTH,
            Entity::Init => id == Identity::INIT,
            Entity::Unmanaged => id == Identity::UNMANAGED,
            Entity::Cluster => {
                matches!(what, Peer::Endpoint(_))
                    || [Identity::HOST, Identity::HEALTH, Identity::INIT, Identity::UNMANAGED].contains(&id)
            }
        },
    }
}

/// Selector -> selected identities, over a universe of identities in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorCache {
    universe: BTreeMap<Identity, Peer>,
    sets: HashMap<PeerMatch, BTreeSet<Identity>>,
}

impl SelectorCache {
    pub fn new(universe: BTreeMap<Identity, Peer>) -> SelectorCache {
        SelectorCache { universe, sets: HashMap::new() }
    }

    pub fn universe(&self) -> &BTreeMap<Identity, Peer> {
        &self.universe
    }

    /// The identities `peer` selects, computing them the first time.
    pub fn insert(&mut self, peer: &PeerMatch) -> &BTreeSet<Identity> {
        if !self.sets.contains_key(peer) {
            let set = self.universe.iter().filter(|(id, what)| selects(peer, **id, what)).map(|(id, _)| *id).collect();
            self.sets.insert(peer.clone(), set);
        }
        &self.sets[peer]
    }

    /// The identities `peer` selects; empty if it was never inserted.
    pub fn get(&self, peer: &PeerMatch) -> &BTreeSet<Identity> {
        static EMPTY: BTreeSet<Identity> = BTreeSet::new();
        self.sets.get(peer).unwrap_or(&EMPTY)
    }

    pub fn contains(&self, peer: &PeerMatch) -> bool {
        self.sets.contains_key(peer)
    }

    pub fn selectors(&self) -> impl Iterator<Item = (&PeerMatch, &BTreeSet<Identity>)> {
        self.sets.iter()
    }

    /// A new identity: added to every selector that names it; returns those selectors.
    pub fn add_identity(&mut self, id: Identity, what: Peer) -> Vec<PeerMatch> {
        let mut changed = Vec::new();
        for (peer, set) in &mut self.sets {
            if selects(peer, id, &what) && set.insert(id) {
                changed.push(peer.clone());
            }
        }
        self.universe.insert(id, what);
        changed
    }

    /// An identity gone: removed everywhere; returns the selectors that had it.
    pub fn remove_identity(&mut self, id: Identity) -> Vec<PeerMatch> {
        self.universe.remove(&id);
        let mut changed = Vec::new();
        for (peer, set) in &mut self.sets {
            if set.remove(&id) {
                changed.push(peer.clone());
            }
        }
        changed
    }

    /// Puts back a selector [`Self::retain`] dropped, with the identities it selected.
    pub fn put_back(&mut self, peer: PeerMatch, ids: BTreeSet<Identity>) {
        self.sets.insert(peer, ids);
    }

    /// Forget selectors no policy uses any more.
    pub fn retain(&mut self, keep: impl Fn(&PeerMatch) -> bool) {
        self.sets.retain(|peer, _| keep(peer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sema::model::{Requirement, Selector};

    fn universe() -> BTreeMap<Identity, Peer> {
        let mut u: BTreeMap<Identity, Peer> = reserved_universe().collect();
        u.insert(Identity(256), Peer::Endpoint([("app".to_string(), "a".to_string())].into()));
        u.insert(Identity(257), Peer::Endpoint(Labels::new()));
        u.insert(Identity(1 << 24), Peer::Cidr("10.0.0.0/8".parse().expect("net")));
        u.insert(Identity((1 << 24) + 1), Peer::Cidr("10.1.0.0/16".parse().expect("net")));
        u.insert(Identity((1 << 24) + 2), Peer::Cidr("fc00::/7".parse().expect("net")));
        u
    }

    fn ids(cache: &mut SelectorCache, peer: PeerMatch) -> Vec<u32> {
        cache.insert(&peer).iter().map(|i| i.0).collect()
    }

    #[test]
    fn peers_select_per_the_semantics() {
        let mut cache = SelectorCache::new(universe());
        let not_a = PeerMatch::Endpoints(Selector {
            requirements: vec![Requirement::NotIn { key: "app".into(), values: ["a".to_string()].into() }],
        });
        assert_eq!(ids(&mut cache, not_a), vec![257], "`!=` holds when the key is absent");
        assert_eq!(ids(&mut cache, PeerMatch::Endpoints(Selector::default())), vec![256, 257]);
        assert_eq!(ids(&mut cache, PeerMatch::Entity(Entity::Cluster)), vec![1, 3, 4, 5, 256, 257]);
        assert_eq!(
            ids(&mut cache, PeerMatch::Entity(Entity::World)),
            vec![2, 9, 10, 1 << 24, (1 << 24) + 1, (1 << 24) + 2]
        );
        let ten = PeerMatch::Cidr {
            net: "10.0.0.0/8".parse().expect("net"),
            except: vec!["10.1.0.0/16".parse().expect("net")],
        };
        assert_eq!(ids(&mut cache, ten), vec![1 << 24]);
        let v4 = PeerMatch::Cidr { net: "0.0.0.0/0".parse().expect("net"), except: vec![] };
        assert_eq!(ids(&mut cache, v4), vec![9, 1 << 24, (1 << 24) + 1], "a /0 names world-ipv4, not the other family");
    }

    #[test]
    fn identities_come_and_go() {
        let mut cache = SelectorCache::new(universe());
        let all_endpoints = PeerMatch::Endpoints(Selector::default());
        let host = PeerMatch::Entity(Entity::Host);
        cache.insert(&all_endpoints);
        cache.insert(&host);
        let changed = cache.add_identity(Identity(300), Peer::Endpoint(Labels::new()));
        assert_eq!(changed, vec![all_endpoints.clone()]);
        assert!(cache.get(&all_endpoints).contains(&Identity(300)));
        let changed = cache.remove_identity(Identity(256));
        assert_eq!(changed, vec![all_endpoints.clone()]);
        assert_eq!(cache.get(&all_endpoints).iter().map(|i| i.0).collect::<Vec<_>>(), vec![257, 300]);
    }
}
