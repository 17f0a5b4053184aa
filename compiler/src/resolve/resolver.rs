//! The resolver: a full resolution that keeps its state, so that a new
//! policy set or inventory is absorbed by recomputing only the endpoints
//! the change can touch (found with the [`ImpactGraph`]).
//!
//! An endpoint's tables depend on: its identity and named ports, the
//! policies selecting it (their rules and ids), the identities its rules'
//! peers select, and (egress named ports) its peers' named ports. So after
//! a change, the endpoints to recompute are: new or changed endpoints; the
//! endpoints of every changed policy, before and after; the endpoints of
//! policies with a peer whose identities changed; the endpoints of policies
//! naming an identity whose named ports changed. Everything else is kept.

use super::identity::{allocate, security_labels, Allocation, IdentityLock};
use super::impact::ImpactGraph;
use super::l4::NamedPorts;
use super::selector::{Peer, SelectorCache, RESERVED};
use super::table::{endpoint_named_ports, Context};
use super::{capacity, ipcache, ResolveConfig, ResolveError};
use crate::ir::{EndpointPolicy, Identity, Resolved};
use crate::sema::model::{Labels, PeerMatch, Policy, PolicySet, Rule};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Resolution state for one node's policy set and inventory.
#[derive(Debug, Clone)]
pub struct Resolver {
    config: ResolveConfig,
    set: PolicySet,
    lock: IdentityLock,
    allocation: Allocation,
    cache: SelectorCache,
    named_by_identity: BTreeMap<Identity, NamedPorts>,
    graph: ImpactGraph,
    resolved: Resolved,
}

/// What an [`Resolver::update`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChangeSet {
    /// Endpoints whose resolved policy (identity or tables) changed, new
    /// ones included, in inventory order.
    pub changed_endpoints: Vec<String>,
    /// Endpoints no longer in the inventory.
    pub removed_endpoints: Vec<String>,
    /// Endpoints recomputed because the change could touch them.
    pub recomputed: usize,
    /// Endpoints kept as they were, without recomputation.
    pub skipped: usize,
    pub identities_changed: bool,
    pub ipcache_changed: bool,
}

/// What an endpoint contributes to resolution besides its name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EndpointShape {
    identity: Identity,
    named: NamedPorts,
}

/// Identities and per-endpoint inputs of a policy set.
struct Inputs {
    allocation: Allocation,
    lock: IdentityLock,
    /// Per inventory endpoint, in order.
    shapes: Vec<EndpointShape>,
}

impl Inputs {
    fn of(
        set: &PolicySet,
        lock: &IdentityLock,
        config: &ResolveConfig,
    ) -> Result<Inputs, ResolveError> {
        let labels: Vec<Labels> = set
            .inventory
            .endpoints
            .iter()
            .map(|e| security_labels(&e.labels, &config.ignored_label_keys))
            .collect();
        let (allocation, lock) = allocate(
            lock,
            &labels.iter().cloned().collect(),
            &policy_prefixes(set),
        )?;
        let shapes = set
            .inventory
            .endpoints
            .iter()
            .zip(&labels)
            .map(|(e, l)| EndpointShape {
                identity: allocation
                    .by_labels
                    .get(l)
                    .copied()
                    .unwrap_or(Identity::UNKNOWN),
                named: endpoint_named_ports(&e.named_ports),
            })
            .collect();
        Ok(Inputs {
            allocation,
            lock,
            shapes,
        })
    }

    fn universe(&self) -> BTreeMap<Identity, Peer> {
        let reserved = RESERVED.iter().map(|(id, _)| (*id, Peer::Reserved));
        let endpoints = self
            .allocation
            .by_labels
            .iter()
            .map(|(l, id)| (*id, Peer::Endpoint(l.clone())));
        let cidrs = self
            .allocation
            .by_prefix
            .iter()
            .map(|(p, id)| (*id, Peer::Cidr(*p)));
        reserved.chain(endpoints).chain(cidrs).collect()
    }

    fn named_by_identity(&self) -> BTreeMap<Identity, NamedPorts> {
        let mut out: BTreeMap<Identity, NamedPorts> = BTreeMap::new();
        for shape in self.shapes.iter().filter(|s| !s.named.is_empty()) {
            let union = out.entry(shape.identity).or_default();
            for (name, ports) in &shape.named {
                union.entry(name.clone()).or_default().extend(ports);
            }
        }
        out
    }
}

/// Every prefix written in a CIDR peer, `/0` excepted (that is `world`).
fn policy_prefixes(set: &PolicySet) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for peer in set.rules().flat_map(|r| &r.peers) {
        if let PeerMatch::Cidr { net, except } = peer {
            out.extend(
                std::iter::once(net)
                    .chain(except)
                    .filter(|p| p.prefix_len() != 0),
            );
        }
    }
    out
}

/// Every selector the cache must answer: policy selectors and rule peers.
fn selectors(set: &PolicySet) -> HashSet<PeerMatch> {
    let subjects = set
        .policies
        .iter()
        .map(|p| PeerMatch::Endpoints(p.selector.clone()));
    subjects
        .chain(set.rules().flat_map(|r| r.peers.iter().cloned()))
        .collect()
}

/// Tables for the endpoints at `indexes`; endpoints with the same identity
/// and named ports share one computation.
fn compute_endpoints(
    cx: &Context<'_>,
    set: &PolicySet,
    shapes: &[EndpointShape],
    indexes: impl IntoIterator<Item = usize>,
    config: &ResolveConfig,
) -> Result<Vec<(usize, EndpointPolicy)>, ResolveError> {
    let mut shared: HashMap<
        &EndpointShape,
        (crate::ir::DirectionTable, crate::ir::DirectionTable),
    > = HashMap::new();
    let mut out = Vec::new();
    for index in indexes {
        let (Some(shape), Some(def)) = (shapes.get(index), set.inventory.endpoints.get(index))
        else {
            continue;
        };
        let (ingress, egress) = shared
            .entry(shape)
            .or_insert_with(|| cx.endpoint_tables(shape.identity, &shape.named))
            .clone();
        let policy = EndpointPolicy {
            name: def.name.clone(),
            identity: shape.identity,
            ingress,
            egress,
        };
        capacity::check(&policy, set, config.max_entries_per_endpoint)?;
        out.push((index, policy));
    }
    Ok(out)
}

impl std::hash::Hash for EndpointShape {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity.hash(state);
        self.named.hash(state);
    }
}

/// Whether two versions of a policy resolve the same (spans aside).
fn same_policy(a: &Policy, b: &Policy) -> bool {
    let same_rule = |x: &Rule, y: &Rule| {
        (x.id, &x.name, x.action, x.direction, &x.peers, &x.l4)
            == (y.id, &y.name, y.action, y.direction, &y.peers, &y.l4)
    };
    let same_section = |x: Option<&Vec<Rule>>, y: Option<&Vec<Rule>>| match (x, y) {
        (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(r, s)| same_rule(r, s)),
        (None, None) => true,
        _ => false,
    };
    a.name == b.name
        && a.selector == b.selector
        && same_section(a.ingress.as_ref(), b.ingress.as_ref())
        && same_section(a.egress.as_ref(), b.egress.as_ref())
}

/// Policy name -> its versions (one, unless the set has duplicate names).
fn policies_by_name(set: &PolicySet) -> HashMap<&str, Vec<&Policy>> {
    let mut out: HashMap<&str, Vec<&Policy>> = HashMap::new();
    for p in &set.policies {
        out.entry(p.name.as_str()).or_default().push(p);
    }
    out
}

impl Resolver {
    /// A full resolution of `set` against `lock`.
    pub fn new(
        set: PolicySet,
        lock: &IdentityLock,
        config: ResolveConfig,
    ) -> Result<Resolver, ResolveError> {
        let inputs = Inputs::of(&set, lock, &config)?;
        let mut cache = SelectorCache::new(inputs.universe());
        for peer in selectors(&set) {
            cache.insert(&peer);
        }
        let named_by_identity = inputs.named_by_identity();
        let cx = Context::new(&set.policies, &cache, &named_by_identity);
        let endpoints =
            compute_endpoints(&cx, &set, &inputs.shapes, 0..inputs.shapes.len(), &config)?;
        let ids: Vec<Identity> = inputs.shapes.iter().map(|s| s.identity).collect();
        let resolved = Resolved {
            identities: ipcache::identities(&inputs.allocation),
            ipcache: ipcache::build(&inputs.allocation, &set.inventory, &ids),
            endpoints: endpoints.into_iter().map(|(_, e)| e).collect(),
        };
        let names = set
            .inventory
            .endpoints
            .iter()
            .map(|e| e.name.as_str())
            .zip(ids.iter().copied());
        let graph = ImpactGraph::build(&set.policies, &cache, names);
        Ok(Resolver {
            config,
            lock: inputs.lock,
            allocation: inputs.allocation,
            cache,
            named_by_identity,
            graph,
            resolved,
            set,
        })
    }

    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// The lock after the latest build.
    pub fn lock(&self) -> &IdentityLock {
        &self.lock
    }

    pub fn set(&self) -> &PolicySet {
        &self.set
    }

    pub fn graph(&self) -> &ImpactGraph {
        &self.graph
    }

    /// Moves to `new_set` (policies and inventory), recomputing only the
    /// endpoints the change can touch. Identity numbers continue from the
    /// current lock. On error nothing changes.
    pub fn update(&mut self, new_set: PolicySet) -> Result<ChangeSet, ResolveError> {
        let inputs = Inputs::of(&new_set, &self.lock, &self.config)?;

        // Identities that came or went, and the selectors that saw it.
        let old_ids: BTreeSet<Identity> = self.allocation.in_use().collect();
        let new_ids: BTreeSet<Identity> = inputs.allocation.in_use().collect();
        let universe = inputs.universe();
        let mut cache = self.cache.clone();
        let mut changed_selectors: HashSet<PeerMatch> = HashSet::new();
        for id in old_ids.difference(&new_ids) {
            changed_selectors.extend(cache.remove_identity(*id));
        }
        for id in new_ids.difference(&old_ids) {
            if let Some(peer) = universe.get(id) {
                changed_selectors.extend(cache.add_identity(*id, peer.clone()));
            }
        }
        let wanted = selectors(&new_set);
        cache.retain(|p| wanted.contains(p));
        for peer in &wanted {
            cache.insert(peer);
        }
        let named_by_identity = inputs.named_by_identity();

        let old_identity: HashMap<String, Identity> = self
            .resolved
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.identity))
            .collect();
        let dirty = self.dirty_endpoints(
            &new_set,
            &inputs,
            &cache,
            &changed_selectors,
            &named_by_identity,
            &old_identity,
        );
        let cx = Context::new(&new_set.policies, &cache, &named_by_identity);
        let dirty_indexes: Vec<usize> = new_set
            .inventory
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| dirty.contains(&e.name))
            .map(|(i, _)| i)
            .collect();
        let recomputed =
            compute_endpoints(&cx, &new_set, &inputs.shapes, dirty_indexes, &self.config)?;

        // Nothing can fail from here on: commit.
        let mut old: HashMap<String, EndpointPolicy> = std::mem::take(&mut self.resolved.endpoints)
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let mut fresh: HashMap<usize, EndpointPolicy> = recomputed.into_iter().collect();
        let mut changes = ChangeSet {
            recomputed: fresh.len(),
            ..ChangeSet::default()
        };
        let mut endpoints = Vec::with_capacity(new_set.inventory.endpoints.len());
        for (index, def) in new_set.inventory.endpoints.iter().enumerate() {
            let before = old.remove(&def.name);
            let policy = match (fresh.remove(&index), before) {
                (Some(new), before) => {
                    if before.as_ref() != Some(&new) {
                        changes.changed_endpoints.push(def.name.clone());
                    }
                    new
                }
                (None, Some(kept)) => kept,
                // Unreachable: an endpoint with no old tables is new, hence dirty.
                (None, None) => continue,
            };
            endpoints.push(policy);
        }
        changes.skipped = endpoints.len() - changes.recomputed;
        let gone: BTreeSet<&str> = old.keys().map(String::as_str).collect();
        changes.removed_endpoints = self
            .set
            .inventory
            .endpoints
            .iter()
            .filter(|e| gone.contains(e.name.as_str()))
            .map(|e| e.name.clone())
            .collect();

        let ids: Vec<Identity> = inputs.shapes.iter().map(|s| s.identity).collect();
        let identities = ipcache::identities(&inputs.allocation);
        let ipcache = ipcache::build(&inputs.allocation, &new_set.inventory, &ids);
        changes.identities_changed = identities != self.resolved.identities;
        changes.ipcache_changed = ipcache != self.resolved.ipcache;

        let moved = GraphChange {
            changed_selectors: &changed_selectors,
            old_ids: &old_ids,
            new_ids: &new_ids,
            old_identity: &old_identity,
        };
        self.update_graph(&new_set, &inputs, &cache, moved);
        self.resolved = Resolved {
            identities,
            ipcache,
            endpoints,
        };
        self.set = new_set;
        self.lock = inputs.lock;
        self.allocation = inputs.allocation;
        self.cache = cache;
        self.named_by_identity = named_by_identity;
        Ok(changes)
    }

    /// The names of the endpoints (of the new inventory) to recompute.
    fn dirty_endpoints(
        &self,
        new_set: &PolicySet,
        inputs: &Inputs,
        new_cache: &SelectorCache,
        changed_selectors: &HashSet<PeerMatch>,
        new_named: &BTreeMap<Identity, NamedPorts>,
        old_identity: &HashMap<String, Identity>,
    ) -> BTreeSet<String> {
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut by_identity: HashMap<Identity, Vec<&str>> = HashMap::new();
        for (def, shape) in new_set.inventory.endpoints.iter().zip(&inputs.shapes) {
            by_identity
                .entry(shape.identity)
                .or_default()
                .push(&def.name);
        }

        // Changed policies: their endpoints before (graph) and after (new cache).
        let old_policies = policies_by_name(&self.set);
        let new_policies = policies_by_name(new_set);
        let mut policies_to_redo: BTreeSet<&str> = BTreeSet::new();
        for name in old_policies.keys().chain(new_policies.keys()) {
            let same = match (old_policies.get(name), new_policies.get(name)) {
                (Some(a), Some(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_policy(x, y))
                }
                _ => false,
            };
            if !same {
                policies_to_redo.insert(name);
                for policy in new_policies.get(name).into_iter().flatten() {
                    for id in new_cache.get(&PeerMatch::Endpoints(policy.selector.clone())) {
                        dirty.extend(
                            by_identity
                                .get(id)
                                .into_iter()
                                .flatten()
                                .map(|n| n.to_string()),
                        );
                    }
                }
            }
        }

        // Peers whose identities changed, and identities whose named ports changed:
        // the policies naming them (unchanged ones: the old graph knows them).
        let named_changed = self
            .named_by_identity
            .keys()
            .chain(new_named.keys())
            .filter(|id| self.named_by_identity.get(id) != new_named.get(id));
        let via_named: Vec<PeerMatch> = named_changed
            .flat_map(|id| self.graph.selectors_of(*id))
            .collect();
        let mut policies_to_redo: BTreeSet<String> =
            policies_to_redo.into_iter().map(str::to_string).collect();
        for peer in changed_selectors.iter().chain(&via_named) {
            policies_to_redo.extend(self.graph.policies_using(peer));
        }
        for name in &policies_to_redo {
            dirty.extend(self.graph.endpoints_of_policy(name));
        }

        // New endpoints, and endpoints whose identity or named ports changed.
        let old_named: HashMap<&str, NamedPorts> = self
            .set
            .inventory
            .endpoints
            .iter()
            .map(|def| (def.name.as_str(), endpoint_named_ports(&def.named_ports)))
            .collect();
        for (def, shape) in new_set.inventory.endpoints.iter().zip(&inputs.shapes) {
            let name = def.name.as_str();
            let same = old_identity.get(name) == Some(&shape.identity)
                && old_named.get(name) == Some(&shape.named);
            if !same {
                dirty.insert(def.name.clone());
            }
        }
        dirty
    }

    fn update_graph(
        &mut self,
        new_set: &PolicySet,
        inputs: &Inputs,
        new_cache: &SelectorCache,
        change: GraphChange<'_>,
    ) {
        let graph = &mut self.graph;
        for id in change.old_ids.difference(change.new_ids) {
            graph.remove_identity(*id);
        }
        for id in change.new_ids.difference(change.old_ids) {
            graph.add_identity(*id);
        }
        let old_policies = policies_by_name(&self.set);
        let new_policies = policies_by_name(new_set);
        let changed: Vec<&str> = old_policies
            .keys()
            .chain(new_policies.keys())
            .filter(
                |name| match (old_policies.get(*name), new_policies.get(*name)) {
                    (Some(a), Some(b)) => {
                        !(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_policy(x, y)))
                    }
                    _ => true,
                },
            )
            .copied()
            .collect();
        for name in &changed {
            graph.remove_policy(name);
        }
        for name in &changed {
            for policy in new_policies.get(name).into_iter().flatten() {
                graph.add_policy(policy);
            }
        }
        for (peer, _) in self.cache.selectors() {
            if !new_cache.contains(peer) {
                graph.remove_selector(peer);
            }
        }
        for (peer, ids) in new_cache.selectors() {
            if !self.cache.contains(peer) || change.changed_selectors.contains(peer) {
                graph.set_selection(peer, ids);
            }
        }
        // Endpoints that left or whose identity moved are re-linked.
        let new_identity: HashMap<&str, Identity> = new_set
            .inventory
            .endpoints
            .iter()
            .map(|e| e.name.as_str())
            .zip(inputs.shapes.iter().map(|s| s.identity))
            .collect();
        for (name, id) in change.old_identity {
            if new_identity.get(name.as_str()) != Some(id) {
                graph.remove_endpoint(name);
            }
        }
        for (name, id) in &new_identity {
            if change.old_identity.get(*name) != Some(id) {
                graph.add_endpoint(name, *id);
            }
        }
    }
}

/// What moved in an update, for [`Resolver::update_graph`].
struct GraphChange<'a> {
    changed_selectors: &'a HashSet<PeerMatch>,
    old_ids: &'a BTreeSet<Identity>,
    new_ids: &'a BTreeSet<Identity>,
    old_identity: &'a HashMap<String, Identity>,
}
