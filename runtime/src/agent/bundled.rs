//! `polcd run --bundle DIR`: enforcing a built bundle (`polc build PATH -o
//! DIR`) instead of a policy directory. Nothing is ever compiled on the
//! node. With a full bundle (built with an inventory) nothing is resolved
//! either: the endpoints (those with an `iface`), their objects
//! (`DIR/objects/`), `.rodata` constants and policy tables, and the node
//! ipcache all come from `DIR/manifest.json`.
//!
//! A new bundle written to `DIR` is applied when its manifest changes, all
//! or nothing, as a policy change is: every enforced endpoint whose
//! manifest entry changed is loaded as a new generation and filled, the
//! ipcache is synced, then the links switch; a failure before the switch
//! (an unreadable manifest, a missing object, a load the kernel refuses)
//! discards what was loaded and the previous bundle keeps enforcing.
//! Endpoints not enforced yet are best effort, as in [`super::daemon`].
//! `polc build` writes the manifest last, so a bundle being written is not
//! read half way (an incomplete manifest does not parse: not applied).
//!
//! A policy-only bundle (`polc build` without an inventory) has no
//! endpoints: they are added through the API (`polcd endpoint add`, the
//! same checks as with `--policies`, kept in `endpoints.json`), and the
//! bundle is specialized to them ([`PolicyOnly::specialize`]: resolution
//! and tables on the node, objects picked among the bundle's by code shape,
//! never clang). The specialization is a full manifest, applied as a new
//! full bundle is; an add or del that cannot be applied (e.g. an endpoint
//! needing a code shape the bundle lacks) is refused and changes nothing.
//! Endpoint numbers are kept across changes, so an add or del touches only
//! the endpoints whose tables change.

use super::api::{AgentStatus, EndpointSpec, ReloadStatus, Request, Response};
use super::catalog::Catalog;
use super::counter_slots::{keep_slots, RuleNames};
use super::daemon::{
    check_new_endpoint, log, now_ms, prepare, read_api_endpoints, read_saved_lock, save_identity_lock,
    with_api_endpoints, write_json, AgentError, Config, API_ENDPOINTS_FILE,
};
use super::node::NodeMaps;
use super::pins::PinRoot;
use super::slot::{endpoint_error, Described, Slot};
use super::stats::{Counters, Runs, Stats, COUNTERS_FILE};
use crate::attach::Device;
use crate::bundle::{Bundle, EndpointEntry};
use crate::loader::all_cpus;
use crate::swap::{load_generation, Enforced, Generation};
use polc::codegen::policy_only::{self, PolicyOnly};
use polc::resolve::IdentityLock;
use polc::sema::model::{Inventory, PolicySet};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

pub struct BundleAgent {
    config: Config,
    node: NodeMaps,
    /// The bundle applied last, and its manifest's text.
    bundle: Bundle,
    text: String,
    /// Each endpoint's manifest entry as applied (what a new bundle is compared with).
    applied: BTreeMap<String, serde_json::Value>,
    slots: BTreeMap<String, Slot>,
    policy_version: u64,
    last_reload: Option<ReloadStatus>,
    last_error: Option<String>,
    /// The bundle in the directory is policy-only: its endpoints come from `api`.
    policy_only: bool,
    /// Endpoints added through the API (used with a policy-only bundle).
    api: BTreeMap<String, EndpointSpec>,
    /// Endpoint numbers on the node (LXC_ID) given to API endpoints, kept
    /// across changes.
    ids: BTreeMap<String, u32>,
    /// The identity numbers given out with a policy-only bundle (its lock
    /// plus the label sets of the API's endpoints), kept across changes and
    /// saved in `STATE/identities.lock`, and the text last saved.
    lock: IdentityLock,
    saved_lock: String,
    counters: Counters,
}

/// A bundle to apply: the (full) manifest's text and the bundle it
/// describes; for a policy-only bundle, its specialization and the
/// endpoint numbers it used.
struct Read {
    bundle: Bundle,
    text: String,
    policy_only: bool,
    ids: BTreeMap<String, u32>,
    /// The identity numbers of the specialization (policy-only).
    lock: Option<IdentityLock>,
}

/// Reads the bundle in `config.policies`; a policy-only one is specialized
/// to the `api` endpoints, numbered as `ids` says (new ones get free
/// numbers), their label sets keeping the identities `given` has (where the
/// bundle's lock does not say otherwise).
fn read_bundle(
    config: &Config,
    api: &BTreeMap<String, EndpointSpec>,
    ids: &BTreeMap<String, u32>,
    given: &IdentityLock,
) -> Result<Read, String> {
    let dir = &config.policies;
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    match Bundle::from_text(dir, &text) {
        Ok(bundle) => Ok(Read { bundle, text, policy_only: false, ids: BTreeMap::new(), lock: None }),
        Err(crate::bundle::BundleError::PolicyOnly(_)) => {
            let inventory = api_inventory(api)?;
            let ids = numbers(&inventory, ids);
            let number = |_: usize, name: &str| ids.get(name).copied().unwrap_or(u32::MAX);
            let specialized = PolicyOnly::open(dir)
                .and_then(|bundle| {
                    let lock = bundle.lock().clone().extended_with(given);
                    bundle.specialize_with_lock(&inventory, &lock, number)
                })
                .map_err(|e| specialize_error(&e))?;
            let text = specialized.manifest().to_json();
            let bundle = Bundle::from_text(dir, &text).map_err(|e| e.to_string())?;
            Ok(Read { bundle, text, policy_only: true, ids, lock: Some(specialized.lock) })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Why a policy-only bundle could not be specialized, with what to do
/// about a missing code shape (the node has no clang to make one).
fn specialize_error(e: &policy_only::SpecializeError) -> String {
    match e {
        policy_only::SpecializeError::MissingShape { .. } => {
            format!("{e} (polcd does not compile on the node: rebuild the bundle with a polc that includes the shape)")
        }
        _ => e.to_string(),
    }
}

/// The inventory of the API's endpoints.
fn api_inventory(api: &BTreeMap<String, EndpointSpec>) -> Result<Inventory, String> {
    Ok(with_api_endpoints(PolicySet::default(), api)?.inventory)
}

/// Numbers for `inventory`'s endpoints: those in `ids` keep theirs, the
/// others get the lowest free ones.
fn numbers(inventory: &Inventory, ids: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
    let mut numbered: BTreeMap<String, u32> =
        ids.iter().filter(|(name, _)| inventory.endpoint(name).is_some()).map(|(n, id)| (n.clone(), *id)).collect();
    for def in &inventory.endpoints {
        if !numbered.contains_key(&def.name) {
            let used: BTreeSet<u32> = numbered.values().copied().collect();
            let id = (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX);
            numbered.insert(def.name.clone(), id);
        }
    }
    numbered
}

/// The endpoints of `bundle` polcd attaches: those with an `iface`.
fn attached_names(bundle: &Bundle) -> Vec<String> {
    bundle.manifest.endpoints.iter().filter(|e| e.iface.is_some()).map(|e| e.name.clone()).collect()
}

/// Each endpoint's manifest entry, by name, as JSON.
fn entries_by_name(text: &str) -> BTreeMap<String, serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let endpoints = value.get("endpoints").and_then(|e| e.as_array()).cloned().unwrap_or_default();
    endpoints
        .into_iter()
        .filter_map(|e| e.get("name").and_then(|n| n.as_str()).map(str::to_string).map(|name| (name, e.clone())))
        .collect()
}

impl BundleAgent {
    /// Reads the bundle (`config.policies` is its directory), adopts what a
    /// previous agent pinned and enforces every endpoint whose device exists.
    pub fn start(config: Config) -> Result<BundleAgent, AgentError> {
        prepare(&config)?;
        let api = read_api_endpoints(&config.state);
        let lock = read_saved_lock(&config.state);
        let read = read_bundle(&config, &api, &BTreeMap::new(), &lock).map_err(AgentError::Policy)?;
        let node = NodeMaps::new(&config.pin_root.join("node"));
        let counters = Counters::persisted(&config.state.join(COUNTERS_FILE));
        let mut agent = BundleAgent {
            config,
            node,
            bundle: read.bundle.clone(),
            text: String::new(),
            applied: BTreeMap::new(),
            slots: BTreeMap::new(),
            policy_version: 0,
            last_reload: None,
            last_error: None,
            policy_only: read.policy_only,
            api,
            ids: BTreeMap::new(),
            saved_lock: lock.render(),
            lock,
            counters,
        };
        let known: BTreeSet<String> = attached_names(&read.bundle).into_iter().collect();
        for (name, enforced) in agent.pins().adopt(&known) {
            agent.slots.entry(name).or_default().enforced = Some(enforced);
        }
        agent.apply(read).map_err(AgentError::Policy)?;
        Ok(agent)
    }

    fn pins(&self) -> PinRoot<'_> {
        PinRoot::new(&self.config.pin_root, self.config.netns.as_deref())
    }

    fn device(&self, entry: &EndpointEntry) -> Option<Device> {
        entry.iface.as_ref().map(|iface| Device {
            iface: iface.clone(),
            netns: self.config.netns.clone(),
            mode: self.config.attach,
        })
    }

    /// Moves to `bundle`: loads what changed (and pending endpoints whose
    /// device exists), syncs the ipcache, switches; removes endpoints the
    /// bundle no longer has. All or nothing up to the switch.
    fn apply(&mut self, read: Read) -> Result<(), String> {
        let Read { bundle, text, policy_only, ids, lock } = read;
        let started = Instant::now();
        let entries = entries_by_name(&text);
        let version = self.policy_version + 1;
        let rule_names =
            RuleNames::new(bundle.manifest.rules.iter().map(|r| (r.id, r.policy.as_str(), r.name.as_str())));
        let mut prepared: Vec<(String, Generation, Device)> = Vec::new();
        let discard =
            |prepared: Vec<(String, Generation, Device)>| prepared.into_iter().for_each(|(_, g, _)| g.discard());
        for entry in &bundle.manifest.endpoints {
            let Some(device) = self.device(entry) else { continue };
            let name = &entry.name;
            let enforced = self.slots.get(name).and_then(|s| s.enforced.as_ref());
            let changed = self.applied.get(name) != entries.get(name);
            // An adopted endpoint runs programs this process did not load:
            // it gets a fresh generation too.
            if enforced.is_some_and(|e| e.current().is_some()) && !changed {
                continue;
            }
            if enforced.is_none() && !device.exists() {
                continue;
            }
            let pending = enforced.is_none();
            let number = enforced.map_or(1, Enforced::next_generation);
            let running = enforced.and_then(Enforced::running);
            if pending {
                self.pins().set_aside(name);
            }
            let loaded = bundle.artifact(name).map_err(|e| e.to_string()).and_then(|mut artifact| {
                keep_slots(&mut artifact, &self.counters.running_slots(name), |id| rule_names.name(id));
                let (node, dir) = (self.pins().node(), self.pins().endpoint(name));
                // One endpoint at a time: each load has every CPU.
                load_generation(&artifact, &node, &dir, number, running.as_ref(), all_cpus()).map_err(|e| e.to_string())
            });
            match loaded {
                Ok(generation) => prepared.push((name.clone(), generation, device)),
                Err(e) => {
                    let message = endpoint_error(name, &e);
                    self.slots.entry(name.clone()).or_default().last_error = Some(message.clone());
                    if pending {
                        log(&format!("{message} (not enforced; retried with the next bundle)"));
                        continue;
                    }
                    discard(prepared);
                    return Err(message);
                }
            }
        }
        if self.node.exist() {
            if let Err(e) = self.node.sync_ipcache(&bundle.manifest.ipcache_entries()) {
                discard(prepared);
                return Err(format!("ipcache: {e}"));
            }
        }
        // Switch. Past this point a failure concerns one endpoint only.
        let regenerated: Vec<String> = prepared.iter().map(|(name, _, _)| name.clone()).collect();
        for (name, generation, device) in prepared {
            let pins = PinRoot::new(&self.config.pin_root, self.config.netns.as_deref());
            self.slots.entry(name.clone()).or_default().switch(&name, generation, &device, &pins, version);
        }
        let keep: BTreeSet<String> = attached_names(&bundle).into_iter().collect();
        let removed: Vec<String> = self.slots.keys().filter(|n| !keep.contains(*n)).cloned().collect();
        for name in &removed {
            if let Some(enforced) = self.slots.remove(name).and_then(|s| s.enforced) {
                if let Err(e) = enforced.remove() {
                    log(&format!("detaching `{name}`: {e}"));
                }
            }
            self.pins().drop_stale(name);
        }
        let first = self.text.is_empty();
        if first || text != self.text {
            self.policy_version = version;
        }
        let skipped = keep.len().saturating_sub(regenerated.len());
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        log(&format!(
            "bundle version {}: regenerated {} endpoint(s), skipped {skipped} (unchanged), removed {} in {took_ms:.1} ms",
            self.policy_version,
            regenerated.len(),
            removed.len()
        ));
        self.last_reload = Some(ReloadStatus {
            at_ms: now_ms(),
            took_ms,
            regenerated: regenerated.len(),
            regenerated_endpoints: regenerated,
            tables_swapped: Vec::new(),
            skipped,
            recomputed: 0,
            removed: removed.len(),
        });
        self.bundle = bundle;
        self.text = text;
        self.applied = entries;
        self.policy_only = policy_only;
        self.ids = ids;
        if let Some(lock) = lock {
            let text = lock.render();
            if text != self.saved_lock && save_identity_lock(&self.config.state, &text) {
                self.saved_lock = text;
            }
            self.lock = lock;
        }
        Ok(())
    }

    /// Something in the bundle directory changed: apply the manifest if it did.
    pub fn reload(&mut self) {
        let result = read_bundle(&self.config, &self.api, &self.ids, &self.lock).and_then(|read| {
            if read.text == self.text {
                return Ok(());
            }
            self.apply(read)
        });
        match result {
            Ok(()) => self.last_error = None,
            Err(e) => {
                log(&format!("the new bundle was not applied; version {} keeps enforcing:\n{e}", self.policy_version));
                self.last_error = Some(e);
            }
        }
    }

    /// Endpoints whose device went away lose their defunct links; those
    /// waiting for a device (not failed) get it.
    pub fn tick(&mut self) {
        let devices: BTreeMap<String, Device> =
            self.bundle.manifest.endpoints.iter().filter_map(|e| self.device(e).map(|d| (e.name.clone(), d))).collect();
        for (name, slot) in &mut self.slots {
            let dead = slot.enforced.as_ref().zip(devices.get(name)).is_some_and(|(e, d)| !e.is_live_on(d));
            if let Some(enforced) = slot.enforced.take_if(|_| dead) {
                log(&format!("the device of `{name}` is gone or was made again: waiting for it to attach afresh"));
                if let Err(e) = enforced.remove() {
                    log(&format!("removing the links of `{name}`: {e}"));
                }
            }
        }
        let ready = devices.iter().any(|(name, device)| {
            self.slots.get(name).is_none_or(|s| s.enforced.is_none() && s.last_error.is_none()) && device.exists()
        });
        if ready {
            let read = Read {
                bundle: self.bundle.clone(),
                text: self.text.clone(),
                policy_only: self.policy_only,
                ids: self.ids.clone(),
                lock: None,
            };
            if let Err(e) = self.apply(read) {
                log(&e);
            }
        }
    }

    pub fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response { status: Some(self.status()), ..Response::ok() },
            Request::EndpointList => Response { endpoints: Some(self.status().endpoints), ..Response::ok() },
            Request::Stats => Response { stats: Some(self.stats()), ..Response::ok() },
            Request::Monitor(_) => Response::error("`monitor` streams: the socket server answers it"),
            Request::EndpointAdd { .. } | Request::EndpointDel { .. } if !self.policy_only => Response::error(
                "polcd runs a bundle: its endpoints come from the manifest (add them to the inventory and rebuild it)",
            ),
            Request::EndpointAdd { endpoint } => {
                let inventory = match api_inventory(&self.api) {
                    Ok(inventory) => inventory,
                    Err(e) => return Response::error(e),
                };
                if let Err(e) = check_new_endpoint(&inventory, &endpoint) {
                    return Response::error(e);
                }
                let mut api = self.api.clone();
                api.insert(endpoint.name.clone(), endpoint);
                self.api_change(api)
            }
            Request::EndpointDel { name } => {
                if !self.api.contains_key(&name) {
                    return Response::error(format!("no endpoint `{name}`"));
                }
                let mut api = self.api.clone();
                api.remove(&name);
                self.api_change(api)
            }
        }
    }

    /// Specializes the policy-only bundle to `api` and applies it, all or
    /// nothing; on success `api` is kept (and written to `endpoints.json`).
    fn api_change(&mut self, api: BTreeMap<String, EndpointSpec>) -> Response {
        let applied = read_bundle(&self.config, &api, &self.ids, &self.lock).and_then(|read| {
            if !read.policy_only {
                return Err("the bundle directory now holds a full bundle: its endpoints come from the manifest".into());
            }
            self.apply(read)
        });
        if let Err(e) = applied {
            log(&format!("the endpoint change was not applied; version {} keeps enforcing:\n{e}", self.policy_version));
            return Response::error(e);
        }
        self.api = api;
        match write_json(&self.config.state.join(API_ENDPOINTS_FILE), &self.api) {
            Ok(()) => Response::ok(),
            Err(e) => Response::error(e.to_string()),
        }
    }

    /// Names for what the kernel reports, from the manifest applied.
    pub fn catalog(&self) -> Catalog {
        Catalog::of_manifest(&self.bundle.manifest)
    }

    /// Follows the counters to the generations running now.
    pub fn follow_counters(&mut self, catalog: &Catalog) {
        let running = self.slots.iter().map(|(name, slot)| (name.as_str(), Runs::of(slot.enforced.as_ref())));
        self.counters.follow(running, catalog);
    }

    pub fn stats(&self) -> Stats {
        self.counters.read(&self.catalog())
    }

    pub fn status(&self) -> AgentStatus {
        let endpoints = self
            .bundle
            .manifest
            .endpoints
            .iter()
            .map(|entry| {
                let described = Described {
                    name: &entry.name,
                    source: if self.policy_only { "api" } else { "bundle" },
                    identity: entry.constants.identity,
                    iface: entry.iface.as_ref(),
                    netns: entry.netns.as_ref(),
                };
                described.status(self.slots.get(&entry.name))
            })
            .collect();
        AgentStatus {
            policies: self.config.policies.clone(),
            pin_root: self.config.pin_root.clone(),
            policy_version: self.policy_version,
            last_reload: self.last_reload.clone(),
            last_error: self.last_error.clone(),
            endpoints,
        }
    }
}
