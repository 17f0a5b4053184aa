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
use super::selector::{reserved_universe, Peer, SelectorCache};
use super::table::{endpoint_named_ports, Context};
use super::{capacity, ipcache, ResolveConfig, ResolveError};
use crate::ir::{DirectionTable, EndpointPolicy, Identity, IdentityInfo, Resolved};
use crate::sema::model::{EndpointDef, Inventory, Labels, PeerMatch, Policy, PolicySet, Rule};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Resolution state for one node's policy set and inventory. Equal
/// resolvers hold the same state, so any later update gives both the same
/// result.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolver {
    config: ResolveConfig,
    set: PolicySet,
    lock: IdentityLock,
    /// Shared with the next update when the inventory and prefixes stay.
    inputs: Arc<Inputs>,
    cache: SelectorCache,
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

/// What one [`Resolver::update_undoable`] replaced or added: given to
/// [`Resolver::undo`], it puts the resolver back as it was before that
/// update (its tables, set, lock, and the selector cache and impact graph
/// the next update starts from); dropped, it frees the previous state.
/// Unlike a copy of the resolver kept in case, it holds only what the
/// update moved out, so a policy edit makes no copy of the whole state.
#[must_use = "dropping it keeps the update; `Resolver::undo` takes it back"]
#[derive(Debug)]
pub struct Undo {
    set: PolicySet,
    inputs: Arc<Inputs>,
    /// The lock before, when the update replaced it.
    lock: Option<IdentityLock>,
    endpoints: EndpointsUndo,
    /// The identities and ipcache before, when the update replaced them.
    tables: Option<NodeTables>,
    cache: CacheUndo,
    graph: GraphUndo,
}

/// The identities in use and the ipcache ([`Resolved`]'s node-wide part).
type NodeTables = (Vec<IdentityInfo>, Vec<(IpNet, Identity)>);

#[derive(Debug)]
enum EndpointsUndo {
    /// The same endpoint names: the tables replaced, by index.
    Replaced(Vec<(usize, EndpointPolicy)>),
    /// The names changed: the whole list before.
    All(Vec<EndpointPolicy>),
}

#[derive(Debug)]
enum CacheUndo {
    /// The same identities: the selectors added, and those removed with their identities.
    Edits { added: Vec<PeerMatch>, removed: Vec<(PeerMatch, BTreeSet<Identity>)> },
    /// Identities came or went: the cache before.
    Whole(SelectorCache),
}

#[derive(Debug)]
enum GraphUndo {
    /// The same inventory and prefixes, so the same identities and
    /// endpoints: the graph moved by the policies that changed (added,
    /// removed or edited), the selectors added and those removed.
    Edits { policies: BTreeSet<String>, added: Vec<PeerMatch>, removed: Vec<(PeerMatch, BTreeSet<Identity>)> },
    /// The graph before.
    Whole(ImpactGraph),
    /// Not kept ([`Resolver::update`] cannot be undone).
    None,
}

/// What an endpoint contributes to resolution besides its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EndpointShape {
    identity: Identity,
    named: NamedPorts,
}

/// Identities and per-endpoint inputs of a policy set: everything that
/// depends only on the inventory and the policy prefixes.
#[derive(Debug, PartialEq, Eq)]
struct Inputs {
    allocation: Allocation,
    prefixes: BTreeSet<IpNet>,
    /// Per inventory endpoint, in order.
    shapes: Vec<EndpointShape>,
    /// Endpoint identity -> the union of its endpoints' named ports.
    named_by_identity: BTreeMap<Identity, NamedPorts>,
}

impl Inputs {
    fn of(
        set: &PolicySet,
        lock: &IdentityLock,
        config: &ResolveConfig,
    ) -> Result<(Inputs, IdentityLock), ResolveError> {
        let labels: Vec<Labels> =
            set.inventory.endpoints.iter().map(|e| security_labels(&e.labels, &config.ignored_label_keys)).collect();
        let prefixes = policy_prefixes(set);
        let (allocation, lock) = allocate(lock, &labels.iter().cloned().collect(), &prefixes)?;
        let shapes: Vec<EndpointShape> = set
            .inventory
            .endpoints
            .iter()
            .zip(&labels)
            .map(|(e, l)| EndpointShape {
                identity: allocation.by_labels.get(l).copied().unwrap_or(Identity::UNKNOWN),
                named: endpoint_named_ports(&e.named_ports),
            })
            .collect();
        let mut named_by_identity: BTreeMap<Identity, NamedPorts> = BTreeMap::new();
        for shape in shapes.iter().filter(|s| !s.named.is_empty()) {
            let union = named_by_identity.entry(shape.identity).or_default();
            for (name, ports) in &shape.named {
                union.entry(name.clone()).or_default().extend(ports);
            }
        }
        Ok((Inputs { allocation, prefixes, shapes, named_by_identity }, lock))
    }

    fn universe(&self) -> BTreeMap<Identity, Peer> {
        let reserved = reserved_universe();
        let endpoints = self.allocation.by_labels.iter().map(|(l, id)| (*id, Peer::Endpoint(l.clone())));
        let cidrs = self.allocation.by_prefix.iter().map(|(p, id)| (*id, Peer::Cidr(*p)));
        reserved.chain(endpoints).chain(cidrs).collect()
    }

    fn identity_by_name<'a>(&self, inventory: &'a Inventory) -> HashMap<&'a str, Identity> {
        inventory.endpoints.iter().map(|e| e.name.as_str()).zip(self.shapes.iter().map(|s| s.identity)).collect()
    }
}

/// Every prefix written in a CIDR peer, `/0` excepted (that is `world`).
fn policy_prefixes(set: &PolicySet) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for peer in set.rules().flat_map(|r| &r.peers) {
        if let PeerMatch::Cidr { net, except } = peer {
            out.extend(std::iter::once(net).chain(except).filter(|p| p.prefix_len() != 0));
        }
    }
    out
}

/// Every selector the cache must answer: policy selectors and rule peers.
fn selectors(set: &PolicySet) -> HashSet<PeerMatch> {
    let subjects = set.policies.iter().map(|p| PeerMatch::Endpoints(p.selector.clone()));
    subjects.chain(set.rules().flat_map(|r| r.peers.iter().cloned())).collect()
}

/// The selectors of `set` the cache does not have yet, and those it has that `set` no longer uses.
fn selector_changes(set: &PolicySet, cache: &SelectorCache) -> (Vec<PeerMatch>, HashSet<PeerMatch>) {
    let subjects: Vec<PeerMatch> = set.policies.iter().map(|p| PeerMatch::Endpoints(p.selector.clone())).collect();
    let wanted: HashSet<&PeerMatch> = subjects.iter().chain(set.rules().flat_map(|r| &r.peers)).collect();
    let unused = cache.selectors().map(|(p, _)| p).filter(|p| !wanted.contains(p)).cloned().collect();
    let mut new: Vec<PeerMatch> = wanted.into_iter().filter(|p| !cache.contains(p)).cloned().collect();
    new.sort();
    (new, unused)
}

/// Whether two inventories resolve the same (spans aside).
fn same_inventory(a: &Inventory, b: &Inventory) -> bool {
    let same_endpoint = |x: &EndpointDef, y: &EndpointDef| {
        (&x.name, &x.labels, x.ipv4, x.ipv6, &x.named_ports) == (&y.name, &y.labels, y.ipv4, y.ipv6, &y.named_ports)
    };
    a.node == b.node
        && a.endpoints.len() == b.endpoints.len()
        && a.endpoints.iter().zip(&b.endpoints).all(|(x, y)| same_endpoint(x, y))
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
    let mut shared: HashMap<&EndpointShape, (DirectionTable, DirectionTable)> = HashMap::new();
    let mut out = Vec::new();
    for index in indexes {
        let (Some(shape), Some(def)) = (shapes.get(index), set.inventory.endpoints.get(index)) else { continue };
        let (ingress, egress) =
            shared.entry(shape).or_insert_with(|| cx.endpoint_tables(shape.identity, &shape.named)).clone();
        let policy = EndpointPolicy { name: def.name.clone(), identity: shape.identity, ingress, egress };
        capacity::check(&policy, set, config.max_entries_per_endpoint)?;
        out.push((index, policy));
    }
    Ok(out)
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

/// Names of the policies that differ between two sets (added, removed or edited).
fn changed_policies<'a>(old: &'a PolicySet, new: &'a PolicySet) -> BTreeSet<&'a str> {
    let by_name = |set: &'a PolicySet| {
        let mut out: HashMap<&'a str, Vec<&'a Policy>> = HashMap::new();
        for p in &set.policies {
            out.entry(p.name.as_str()).or_default().push(p);
        }
        out
    };
    let (old, new) = (by_name(old), by_name(new));
    old.keys()
        .chain(new.keys())
        .filter(|name| match (old.get(*name), new.get(*name)) {
            (Some(a), Some(b)) => !(a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_policy(x, y))),
            _ => true,
        })
        .copied()
        .collect()
}

/// What moved between the current state and the new set.
struct Delta<'a> {
    changed_policies: BTreeSet<&'a str>,
    /// Selectors whose identities changed (identities came or went).
    changed_selectors: HashSet<PeerMatch>,
    /// Selectors the cache did not have.
    new_selectors: Vec<PeerMatch>,
    old_ids: BTreeSet<Identity>,
    new_ids: BTreeSet<Identity>,
    old_identity: HashMap<&'a str, Identity>,
    new_identity: HashMap<&'a str, Identity>,
}

impl Resolver {
    /// A full resolution of `set` against `lock`.
    pub fn new(set: PolicySet, lock: &IdentityLock, config: ResolveConfig) -> Result<Resolver, ResolveError> {
        let (inputs, lock) = Inputs::of(&set, lock, &config)?;
        let mut cache = SelectorCache::new(inputs.universe());
        for peer in selectors(&set) {
            cache.insert(&peer);
        }
        let cx = Context::new(&set.policies, &cache, &inputs.named_by_identity);
        let endpoints = compute_endpoints(&cx, &set, &inputs.shapes, 0..inputs.shapes.len(), &config)?;
        let ids: Vec<Identity> = inputs.shapes.iter().map(|s| s.identity).collect();
        let resolved = Resolved {
            identities: ipcache::identities(&inputs.allocation),
            ipcache: ipcache::build(&inputs.allocation, &set.inventory, &ids),
            endpoints: endpoints.into_iter().map(|(_, e)| e).collect(),
        };
        let names = set.inventory.endpoints.iter().map(|e| e.name.as_str()).zip(ids.iter().copied());
        let graph = ImpactGraph::build(&set.policies, &cache, names);
        Ok(Resolver { config, lock, inputs: Arc::new(inputs), cache, graph, resolved, set })
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
        self.update_keeping(new_set, false).map(|(changes, _)| changes)
    }

    /// [`Resolver::update`], and what [`Resolver::undo`] needs to take it
    /// back (when what the change set names cannot be applied, say).
    pub fn update_undoable(&mut self, new_set: PolicySet) -> Result<(ChangeSet, Undo), ResolveError> {
        self.update_keeping(new_set, true)
    }

    /// Puts back the state before the update that gave `undo` (the last
    /// update: undos apply in the reverse order of their updates).
    pub fn undo(&mut self, undo: Undo) {
        let Undo { set, inputs, lock, endpoints, tables, cache, graph } = undo;
        match endpoints {
            EndpointsUndo::Replaced(replaced) => {
                for (index, policy) in replaced {
                    if let Some(slot) = self.resolved.endpoints.get_mut(index) {
                        *slot = policy;
                    }
                }
            }
            EndpointsUndo::All(all) => self.resolved.endpoints = all,
        }
        if let Some((identities, ipcache)) = tables {
            self.resolved.identities = identities;
            self.resolved.ipcache = ipcache;
        }
        match cache {
            CacheUndo::Edits { added, removed } => {
                let added: HashSet<&PeerMatch> = added.iter().collect();
                self.cache.retain(|p| !added.contains(p));
                for (peer, ids) in removed {
                    self.cache.put_back(peer, ids);
                }
            }
            CacheUndo::Whole(cache) => self.cache = cache,
        }
        match graph {
            GraphUndo::Edits { policies, added, removed } => {
                for name in &policies {
                    self.graph.remove_policy(name);
                }
                for peer in &added {
                    self.graph.remove_selector(peer);
                }
                for (peer, ids) in &removed {
                    self.graph.set_selection(peer, ids);
                }
                for policy in set.policies.iter().filter(|p| policies.contains(&p.name)) {
                    self.graph.add_policy(policy);
                }
            }
            GraphUndo::Whole(graph) => self.graph = graph,
            GraphUndo::None => {}
        }
        self.set = set;
        self.inputs = inputs;
        if let Some(lock) = lock {
            self.lock = lock;
        }
    }

    /// The update; with `undoable`, everything [`Resolver::undo`] needs.
    fn update_keeping(&mut self, new_set: PolicySet, undoable: bool) -> Result<(ChangeSet, Undo), ResolveError> {
        // Same inventory and prefixes: same identities, shapes and ipcache.
        let unchanged_inputs = same_inventory(&self.set.inventory, &new_set.inventory)
            && policy_prefixes(&new_set) == self.inputs.prefixes;
        let (inputs, lock) = if unchanged_inputs {
            (Arc::clone(&self.inputs), None)
        } else {
            let (inputs, lock) = Inputs::of(&new_set, &self.lock, &self.config)?;
            (Arc::new(inputs), Some(lock))
        };

        // The selector cache for the new set. Identities coming or going change
        // selections: then work on a copy, so that an error leaves `self` as it was.
        let old_ids: BTreeSet<Identity> = self.inputs.allocation.in_use().collect();
        let new_ids: BTreeSet<Identity> = inputs.allocation.in_use().collect();
        let mut changed_selectors: HashSet<PeerMatch> = HashSet::new();
        let mut cache = if old_ids == new_ids {
            std::mem::take(&mut self.cache)
        } else {
            // `self.cache` stays as it was until the commit.
            let mut cache = self.cache.clone();
            let universe = inputs.universe();
            for id in old_ids.difference(&new_ids) {
                changed_selectors.extend(cache.remove_identity(*id));
            }
            for id in new_ids.difference(&old_ids) {
                if let Some(peer) = universe.get(id) {
                    changed_selectors.extend(cache.add_identity(*id, peer.clone()));
                }
            }
            cache
        };
        let (new_selectors, previous_selectors) = selector_changes(&new_set, &cache);
        for peer in &new_selectors {
            cache.insert(peer);
        }

        let old_set = std::mem::take(&mut self.set);
        let delta = Delta {
            changed_policies: changed_policies(&old_set, &new_set),
            changed_selectors,
            new_selectors,
            old_ids,
            new_ids,
            old_identity: self.inputs.identity_by_name(&old_set.inventory),
            new_identity: inputs.identity_by_name(&new_set.inventory),
        };
        let dirty = self.dirty_endpoints(&old_set, &new_set, &inputs, &cache, &delta);
        let cx = Context::new(&new_set.policies, &cache, &inputs.named_by_identity);
        let dirty_indexes = new_set
            .inventory
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| dirty.contains(e.name.as_str()))
            .map(|(i, _)| i);
        let recomputed = match compute_endpoints(&cx, &new_set, &inputs.shapes, dirty_indexes, &self.config) {
            Ok(r) => r,
            Err(e) => {
                if delta.old_ids == delta.new_ids {
                    cache.retain(|p| !delta.new_selectors.contains(p));
                    self.cache = cache;
                }
                self.set = old_set;
                return Err(e);
            }
        };

        // Nothing can fail from here on: commit.
        let mut changes = ChangeSet { recomputed: recomputed.len(), ..ChangeSet::default() };
        let same_names = old_set.inventory.endpoints.len() == new_set.inventory.endpoints.len()
            && old_set.inventory.endpoints.iter().zip(&new_set.inventory.endpoints).all(|(a, b)| a.name == b.name);
        let endpoints_undo = if same_names {
            // In place: the common case of a policy edit (`recomputed` is in inventory order).
            let mut replaced = Vec::new();
            for (index, policy) in recomputed {
                if self.resolved.endpoints[index] != policy {
                    changes.changed_endpoints.push(policy.name.clone());
                    let before = std::mem::replace(&mut self.resolved.endpoints[index], policy);
                    if undoable {
                        replaced.push((index, before));
                    }
                }
            }
            EndpointsUndo::Replaced(replaced)
        } else {
            let before = if undoable { self.resolved.endpoints.clone() } else { Vec::new() };
            self.reassemble(&old_set, &new_set, recomputed, &mut changes);
            EndpointsUndo::All(before)
        };
        changes.skipped = self.resolved.endpoints.len() - changes.recomputed;

        let policy_only = Arc::ptr_eq(&inputs, &self.inputs);
        let mut tables_undo = None;
        if !policy_only {
            let ids: Vec<Identity> = inputs.shapes.iter().map(|s| s.identity).collect();
            let identities = ipcache::identities(&inputs.allocation);
            let ipcache = ipcache::build(&inputs.allocation, &new_set.inventory, &ids);
            changes.identities_changed = identities != self.resolved.identities;
            changes.ipcache_changed = ipcache != self.resolved.ipcache;
            let identities = std::mem::replace(&mut self.resolved.identities, identities);
            let ipcache = std::mem::replace(&mut self.resolved.ipcache, ipcache);
            tables_undo = Some((identities, ipcache));
        }
        // What the cache and graph lose and gain, for the undo.
        let (added, removed): (Vec<PeerMatch>, Vec<(PeerMatch, BTreeSet<Identity>)>) = if undoable {
            (
                delta.new_selectors.clone(),
                previous_selectors.iter().map(|p| (p.clone(), cache.get(p).clone())).collect(),
            )
        } else {
            Default::default()
        };
        let graph_undo = match (undoable, policy_only) {
            (false, _) => GraphUndo::None,
            (true, false) => GraphUndo::Whole(self.graph.clone()),
            (true, true) => GraphUndo::Edits {
                policies: delta.changed_policies.iter().map(|name| name.to_string()).collect(),
                added: added.clone(),
                removed: removed.clone(),
            },
        };
        let same_ids = delta.old_ids == delta.new_ids;
        for peer in &previous_selectors {
            self.graph.remove_selector(peer);
        }
        cache.retain(|p| !previous_selectors.contains(p));
        self.update_graph(&new_set, &cache, &delta);
        drop(delta);
        self.set = new_set;
        let old_cache = std::mem::replace(&mut self.cache, cache);
        // With other identities `self.cache` was not worked on: it is the cache before.
        let cache_undo = if same_ids { CacheUndo::Edits { added, removed } } else { CacheUndo::Whole(old_cache) };
        let old_inputs = std::mem::replace(&mut self.inputs, inputs);
        let old_lock = lock.map(|lock| std::mem::replace(&mut self.lock, lock));
        let undo = Undo {
            set: old_set,
            inputs: old_inputs,
            lock: old_lock,
            endpoints: endpoints_undo,
            tables: tables_undo,
            cache: cache_undo,
            graph: graph_undo,
        };
        Ok((changes, undo))
    }

    /// Builds the endpoint list when the inventory's names changed.
    fn reassemble(
        &mut self,
        old_set: &PolicySet,
        new_set: &PolicySet,
        recomputed: Vec<(usize, EndpointPolicy)>,
        changes: &mut ChangeSet,
    ) {
        let mut old: HashMap<String, EndpointPolicy> =
            std::mem::take(&mut self.resolved.endpoints).into_iter().map(|e| (e.name.clone(), e)).collect();
        let mut fresh: HashMap<usize, EndpointPolicy> = recomputed.into_iter().collect();
        let mut endpoints = Vec::with_capacity(new_set.inventory.endpoints.len());
        for (index, def) in new_set.inventory.endpoints.iter().enumerate() {
            let before = old.remove(&def.name);
            match (fresh.remove(&index), before) {
                (Some(new), before) => {
                    if before.as_ref() != Some(&new) {
                        changes.changed_endpoints.push(def.name.clone());
                    }
                    endpoints.push(new);
                }
                (None, Some(kept)) => endpoints.push(kept),
                // Cannot happen: an endpoint without old tables is new, hence recomputed.
                (None, None) => {}
            }
        }
        changes.removed_endpoints =
            old_set.inventory.endpoints.iter().filter(|e| old.contains_key(&e.name)).map(|e| e.name.clone()).collect();
        self.resolved.endpoints = endpoints;
    }

    /// The names of the endpoints (of the new inventory) to recompute.
    fn dirty_endpoints<'a>(
        &self,
        old_set: &PolicySet,
        new_set: &'a PolicySet,
        inputs: &Inputs,
        new_cache: &SelectorCache,
        delta: &Delta<'_>,
    ) -> BTreeSet<&'a str> {
        let mut dirty: BTreeSet<&str> = BTreeSet::new();
        let mut by_identity: HashMap<Identity, Vec<&str>> = HashMap::new();
        for (def, shape) in new_set.inventory.endpoints.iter().zip(&inputs.shapes) {
            by_identity.entry(shape.identity).or_default().push(&def.name);
        }
        let mut old_endpoints: BTreeSet<String> = BTreeSet::new();

        // Changed policies: their endpoints after (new cache) and before (graph).
        for policy in new_set.policies.iter().filter(|p| delta.changed_policies.contains(p.name.as_str())) {
            for id in new_cache.get(&PeerMatch::Endpoints(policy.selector.clone())) {
                dirty.extend(by_identity.get(id).into_iter().flatten());
            }
        }
        let mut policies_to_redo: BTreeSet<String> = delta.changed_policies.iter().map(|s| s.to_string()).collect();

        // Peers whose identities changed, and identities whose named ports changed:
        // the policies naming them (unchanged ones: the old graph knows them).
        let (old_named, new_named) = (&self.inputs.named_by_identity, &inputs.named_by_identity);
        let named_changed =
            old_named.keys().chain(new_named.keys()).filter(|id| old_named.get(id) != new_named.get(id));
        let via_named: Vec<PeerMatch> = named_changed.flat_map(|id| self.graph.selectors_of(*id)).collect();
        for peer in delta.changed_selectors.iter().chain(&via_named) {
            policies_to_redo.extend(self.graph.policies_using(peer));
        }
        for name in &policies_to_redo {
            old_endpoints.extend(self.graph.endpoints_of_policy(name));
        }
        let new_names: HashMap<&str, &'a str> =
            new_set.inventory.endpoints.iter().map(|e| (e.name.as_str(), e.name.as_str())).collect();
        dirty.extend(old_endpoints.iter().filter_map(|n| new_names.get(n.as_str()).copied()));

        // New endpoints, and endpoints whose identity or named ports changed.
        if !std::ptr::eq(inputs, &*self.inputs) {
            let old_named: HashMap<&str, &NamedPorts> = old_set
                .inventory
                .endpoints
                .iter()
                .map(|e| e.name.as_str())
                .zip(self.inputs.shapes.iter().map(|s| &s.named))
                .collect();
            for (def, shape) in new_set.inventory.endpoints.iter().zip(&inputs.shapes) {
                let name = def.name.as_str();
                let same =
                    delta.old_identity.get(name) == Some(&shape.identity) && old_named.get(name) == Some(&&shape.named);
                if !same {
                    dirty.insert(name);
                }
            }
        }
        dirty
    }

    fn update_graph(&mut self, new_set: &PolicySet, new_cache: &SelectorCache, delta: &Delta<'_>) {
        let graph = &mut self.graph;
        for id in delta.old_ids.difference(&delta.new_ids) {
            graph.remove_identity(*id);
        }
        for id in delta.new_ids.difference(&delta.old_ids) {
            graph.add_identity(*id);
        }
        for name in &delta.changed_policies {
            graph.remove_policy(name);
        }
        for policy in new_set.policies.iter().filter(|p| delta.changed_policies.contains(p.name.as_str())) {
            graph.add_policy(policy);
        }
        for peer in delta.new_selectors.iter().chain(&delta.changed_selectors) {
            if new_cache.contains(peer) {
                graph.set_selection(peer, new_cache.get(peer));
            }
        }
        // Endpoints that left or whose identity moved are re-linked.
        for (name, id) in &delta.old_identity {
            if delta.new_identity.get(name) != Some(id) {
                graph.remove_endpoint(name);
            }
        }
        for (name, id) in &delta.new_identity {
            if delta.old_identity.get(name) != Some(id) {
                graph.add_endpoint(name, *id);
            }
        }
    }
}
