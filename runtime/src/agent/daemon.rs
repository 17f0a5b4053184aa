//! The agent's state and its one event loop.
//!
//! Everything that touches BPF runs on the loop's thread; the socket server
//! and the file watcher are threads that send it [`Event`]s. A change (policy
//! files, an endpoint added or removed) goes through
//! [`Resolver::update_undoable`], whose impact graph names the endpoints to regenerate; the others are not
//! touched. A change is applied all or nothing: every affected endpoint is
//! built and loaded first (new generations, maps filled), then the node
//! ipcache is brought up to date, then the links switch. If anything fails
//! before the switch, the loaded generations are discarded, the resolver
//! goes back to its previous state (`Resolver::undo`) and the running programs keep enforcing.

use super::api::{AgentStatus, EndpointSpec, ReloadStatus, Request, Response};
use super::build::{ipcache_entries, NodeBuilder};
use super::catalog::{Catalog, RuleInfo};
use super::counter_slots::{keep_slots, RuleNames};
use super::monitor::Observe;
use super::node::NodeMaps;
use super::pins::PinRoot;
use super::read::PolicyReader;
use super::slot::{endpoint_error, Constants, Described, Slot, SwapKind};
use super::stats::{Counters, Runs, Stats, COUNTERS_FILE};
use crate::attach::{AttachMode, Device};
use crate::loader::{all_cpus, LoadError, Running};
use crate::parallel::map_on_threads;
use crate::swap::{load_generation, Artifact, Enforced, Generation, StagedTables, SwapError};
use polc::codegen::header::{BuildOptions, NodeConfig};
use polc::resolve::{IdentityLock, ResolveConfig, Resolver};
use polc::sema::model::{EndpointDef, Inventory, PolicySet};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How `polcd run` was started.
#[derive(Debug, Clone)]
pub struct Config {
    pub policies: PathBuf,
    pub state: PathBuf,
    /// The namespace holding the endpoints' host-side devices (`None`: polcd's own).
    pub netns: Option<String>,
    /// Where everything is pinned (`node/`, `endpoints/<name>/`).
    pub pin_root: PathBuf,
    /// Quiet time after a file change before reloading.
    pub debounce: Duration,
    /// Events and metrics (see [`super::monitor`]).
    pub observe: Observe,
    /// tcx, tc clsact, or tcx where the kernel has it (`polcd run --attach`).
    pub attach: AttachMode,
}

/// What the loop reacts to.
pub enum Event {
    Request(Request, mpsc::Sender<Response>),
    /// Something under the policy directory changed.
    FilesChanged,
}

/// Threads that install policy tables at once (an install is one selector
/// flip per direction: microseconds; the threads only spread the syscalls).
const INSTALL_THREADS: usize = 2;

/// The state file: what `reset` and a restarted agent need to know.
pub const STATE_FILE: &str = "agent.json";
/// Endpoints added through the API, kept across restarts.
pub const API_ENDPOINTS_FILE: &str = "endpoints.json";
/// The identity numbers polcd gave out (the policy set's lock and the
/// numbers it allocated on top of it), so a restarted polcd gives every
/// label set its number again.
pub const IDENTITIES_FILE: &str = "identities.lock";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Policy(String),
    #[error("cannot write `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Codegen(#[from] polc::codegen::CodegenError),
    #[error(transparent)]
    Load(#[from] crate::loader::LoadError),
}

pub struct Agent {
    config: Config,
    reader: PolicyReader,
    builder: NodeBuilder,
    node: NodeMaps,
    /// Resolution of the last good policy set: the files' set, the API's
    /// endpoints added to its inventory (see [`Agent::file_set`]).
    resolver: Resolver,
    api: BTreeMap<String, EndpointSpec>,
    slots: BTreeMap<String, Slot>,
    ids: BTreeMap<String, u32>,
    policy_version: u64,
    last_reload: Option<ReloadStatus>,
    last_error: Option<String>,
    /// Whether the node ipcache holds the resolver's entries: then a change
    /// that leaves the ipcache as it was does not rewrite it.
    ipcache_synced: bool,
    /// The rules of the files' set, located in their files.
    rules: Vec<RuleInfo>,
    counters: Counters,
    /// The lock as last written to `STATE/identities.lock` (compared, not
    /// rendered, on every change: it seldom changes).
    saved_lock: Option<IdentityLock>,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// At most ten names, then how many more.
fn abbreviate(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", and {} more", names.len() - SHOWN));
    }
    text
}

pub fn log(message: &str) {
    use std::io::Write;
    // One write: stderr is unbuffered, and `eprintln!` writes each piece
    // of its format on its own.
    let line = format!("polcd: {message}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The policy set's lock, extended with the numbers a previous polcd gave
/// out (`STATE/identities.lock`; where the two disagree the policy set's
/// lock wins). An unreadable saved lock is logged and ignored: numbers are
/// then allocated afresh, as before polcd kept them.
fn read_lock(config: &Config) -> Result<IdentityLock, String> {
    let set_lock = match std::fs::read_to_string(config.policies.join(polc::resolve::LOCK_FILE)) {
        Ok(text) => IdentityLock::parse(&text).map_err(|e| format!("`{}`: {e}", polc::resolve::LOCK_FILE))?,
        Err(_) => IdentityLock::default(),
    };
    Ok(set_lock.extended_with(&read_saved_lock(&config.state)))
}

/// The identity numbers a previous polcd saved in `STATE/identities.lock`
/// (none when it is missing; an unreadable one is logged and ignored).
pub(super) fn read_saved_lock(state: &Path) -> IdentityLock {
    let saved_path = state.join(IDENTITIES_FILE);
    match std::fs::read_to_string(&saved_path) {
        Ok(text) => IdentityLock::parse(&text).unwrap_or_else(|e| {
            log(&format!("ignoring `{}`: {e}", saved_path.display()));
            IdentityLock::default()
        }),
        Err(_) => IdentityLock::default(),
    }
}

/// Writes `text` (a rendered lock) to `STATE/identities.lock`, whole or not
/// at all (a new file renamed over the old). A failure is logged and says
/// `false`: enforcement does not depend on it, only the numbers a restarted
/// polcd would give.
pub(super) fn save_identity_lock(state: &Path, text: &str) -> bool {
    let path = state.join(IDENTITIES_FILE);
    let partial = path.with_extension("lock.new");
    match std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, &path)) {
        Ok(()) => true,
        Err(e) => {
            log(&format!("cannot save the identity numbers to `{}`: {e}", path.display()));
            false
        }
    }
}

/// The file set with the API's endpoints added to its inventory.
pub(super) fn with_api_endpoints(
    mut set: PolicySet,
    api: &BTreeMap<String, EndpointSpec>,
) -> Result<PolicySet, String> {
    for spec in api.values() {
        if set.inventory.endpoint(&spec.name).is_some() {
            return Err(format!("endpoint `{}` is declared in the policy files and added through the API", spec.name));
        }
        set.inventory.endpoints.push(EndpointDef {
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            ipv4: spec.ipv4,
            ipv6: spec.ipv6,
            mac: None,
            iface: Some(spec.iface.clone()),
            netns: spec.netns.clone(),
            named_ports: BTreeMap::new(),
            span: Default::default(),
        });
    }
    Ok(set)
}

/// What `endpoint add` refuses: a name or an address already in use in
/// `inventory`, a name that is not an identifier, an endpoint without any
/// address.
pub(super) fn check_new_endpoint(inventory: &Inventory, new: &EndpointSpec) -> Result<(), String> {
    if inventory.endpoint(&new.name).is_some() {
        return Err(format!("endpoint `{}` exists", new.name));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if new.name.is_empty() || !new.name.chars().all(valid) {
        return Err(format!("`{}` is not a valid endpoint name (letters, digits, `-`, `_`)", new.name));
    }
    if new.ipv4.is_none() && new.ipv6.is_none() {
        return Err(format!("endpoint `{}` needs an address (--ipv4 or --ipv6)", new.name));
    }
    for other in &inventory.endpoints {
        let same_v4 = new.ipv4.is_some() && other.ipv4 == new.ipv4;
        let same_v6 = new.ipv6.is_some() && other.ipv6 == new.ipv6;
        if same_v4 || same_v6 {
            return Err(format!("endpoint `{}` already has that address", other.name));
        }
    }
    Ok(())
}

pub(super) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), AgentError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    std::fs::write(path, text).map_err(|source| AgentError::Io { path: path.to_path_buf(), source })
}

/// What `agent.json` records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StateFile {
    pub pin_root: PathBuf,
    pub netns: Option<String>,
    pub policies: PathBuf,
}

/// The endpoints added through the API that a previous agent saved (none
/// when the file is missing or unreadable).
pub(super) fn read_api_endpoints(state: &Path) -> BTreeMap<String, EndpointSpec> {
    std::fs::read_to_string(state.join(API_ENDPOINTS_FILE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// What every agent does first: check the pin root, mount bpffs, write
/// the state file (what `reset` needs).
pub(super) fn prepare(config: &Config) -> Result<(), AgentError> {
    if !crate::loader::is_confined_pin_root(&config.pin_root) {
        return Err(AgentError::Policy(format!(
            "pin root `{}` must be a directory under {}/",
            config.pin_root.display(),
            crate::loader::PIN_ROOT
        )));
    }
    crate::loader::ensure_bpffs()?;
    std::fs::create_dir_all(&config.state).map_err(|source| AgentError::Io { path: config.state.clone(), source })?;
    let state =
        StateFile { pin_root: config.pin_root.clone(), netns: config.netns.clone(), policies: config.policies.clone() };
    write_json(&config.state.join(STATE_FILE), &state)
}

/// One endpoint to regenerate: its new artifact and its device.
struct Built {
    name: String,
    artifact: Artifact,
    device: Device,
    /// Not enforced yet: best effort (see [`Agent::apply`]).
    pending: bool,
}

/// One endpoint ready to switch: nothing of it runs yet.
struct Prepared {
    name: String,
    device: Device,
    constants: Constants,
    next: Next,
}

enum Next {
    /// New policy tables for the running programs.
    Tables(StagedTables),
    /// A new generation (maps filled) for the links to switch to.
    Program(Box<Generation>),
}

/// The outcome of applying one change: the endpoints regenerated, and how.
struct Applied {
    regenerated: Vec<(String, SwapKind)>,
}

impl Applied {
    fn names(&self) -> Vec<String> {
        self.regenerated.iter().map(|(name, _)| name.clone()).collect()
    }

    fn by(&self, kind: SwapKind) -> Vec<String> {
        self.regenerated.iter().filter(|(_, k)| *k == kind).map(|(name, _)| name.clone()).collect()
    }
}

impl Agent {
    /// Reads the policy set, adopts what a previous agent left pinned and
    /// enforces every endpoint whose device exists.
    pub fn start(config: Config) -> Result<Agent, AgentError> {
        prepare(&config)?;
        let api = read_api_endpoints(&config.state);

        let mut reader = PolicyReader::new(&config.policies);
        let (file_set, rules) = reader.read().map_err(AgentError::Policy)?;
        let set = with_api_endpoints(file_set, &api).map_err(AgentError::Policy)?;
        let lock = read_lock(&config).map_err(AgentError::Policy)?;
        let resolver =
            Resolver::new(set, &lock, ResolveConfig::default()).map_err(|e| AgentError::Policy(e.to_string()))?;
        let options = BuildOptions { trace_level: config.observe.trace_level, ..BuildOptions::default() };
        let builder = NodeBuilder::new(&config.state.join("cache"), NodeConfig::default(), options)?;
        let node = NodeMaps::new(&config.pin_root.join("node"));
        let counters = Counters::persisted(&config.state.join(COUNTERS_FILE));
        let mut agent = Agent {
            config,
            reader,
            builder,
            node,
            resolver,
            api,
            slots: BTreeMap::new(),
            ids: BTreeMap::new(),
            policy_version: 0,
            last_reload: None,
            last_error: None,
            ipcache_synced: false,
            rules,
            counters,
            saved_lock: None,
        };
        agent.adopt();
        let started = Instant::now();
        let names: Vec<String> = agent.inventory_names();
        match agent.apply(&names, &[], true) {
            Ok(applied) => {
                agent.policy_version = 1;
                let all = agent.inventory_names().len();
                agent.record_reload(started, &applied, 0, all, 0);
                agent.save_lock();
            }
            Err(e) => return Err(AgentError::Policy(e)),
        }
        Ok(agent)
    }

    fn inventory_names(&self) -> Vec<String> {
        self.resolver.set().inventory.endpoints.iter().map(|e| e.name.clone()).collect()
    }

    fn endpoints_dir(&self) -> PathBuf {
        self.config.pin_root.join("endpoints")
    }

    fn endpoint_dir(&self, name: &str) -> PathBuf {
        self.endpoints_dir().join(name)
    }

    /// Takes over the links a previous agent pinned; endpoints no longer in
    /// the inventory are detached, and pins without links removed.
    fn adopt(&mut self) {
        let known: BTreeSet<String> = self.inventory_names().into_iter().collect();
        for (name, enforced) in self.pins().adopt(&known) {
            self.slots.entry(name).or_default().enforced = Some(enforced);
        }
    }

    fn pins(&self) -> PinRoot<'_> {
        PinRoot::new(&self.config.pin_root, self.config.netns.as_deref())
    }

    fn id_of(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let used: BTreeSet<u32> = self.ids.values().copied().collect();
        let id = (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX);
        self.ids.insert(name.to_string(), id);
        id
    }

    fn device(&self, def: &EndpointDef) -> Option<Device> {
        def.iface.as_ref().map(|iface| Device {
            iface: iface.clone(),
            netns: self.config.netns.clone(),
            mode: self.config.attach,
        })
    }

    /// Endpoints with an iface that are not enforced yet but whose device
    /// now exists; with `retry_failed`, also those whose last attempt failed.
    fn ready_pending(&self, retry_failed: bool) -> Vec<String> {
        let set = self.resolver.set();
        set.inventory
            .endpoints
            .iter()
            .filter(|def| {
                self.slots
                    .get(&def.name)
                    .is_none_or(|s| s.enforced.is_none() && (retry_failed || s.last_error.is_none()))
            })
            .filter(|def| self.device(def).is_some_and(|d| d.exists()))
            .map(|def| def.name.clone())
            .collect()
    }

    /// Regenerates `changed` (and pending endpoints whose device appeared),
    /// removes `removed`: all or nothing up to the switch for the enforced
    /// endpoints. An endpoint not enforced yet is best effort: if it cannot
    /// be built or loaded, it records the error (state `failed`, retried at
    /// the next change) and the others go on. `ipcache_changed`: the change
    /// moved addresses or identities.
    fn apply(&mut self, changed: &[String], removed: &[String], ipcache_changed: bool) -> Result<Applied, String> {
        let mut todo: Vec<String> = changed.to_vec();
        for name in self.ready_pending(true) {
            if !todo.contains(&name) {
                todo.push(name);
            }
        }
        // 1. Build every affected endpoint (objects from the cache).
        let built = self.build(&todo)?;
        // 2. Prepare them: new tables staged, new generations loaded and
        //    filled; nothing runs yet.
        let prepared = self.stage_or_load(built)?;
        // 3. The node-wide ipcache (the maps exist once any object loaded).
        if !self.ipcache_synced || ipcache_changed {
            self.ipcache_synced = false;
            if self.node.exist() {
                let ipcache = ipcache_entries(self.resolver.resolved());
                if let Err(e) = self.node.sync_ipcache(&ipcache) {
                    discard(prepared);
                    return Err(format!("ipcache: {e}"));
                }
                self.ipcache_synced = true;
            }
        }
        // 4. Switch: the table installs all at once, then the links. Past
        //    this point a failure concerns one endpoint only.
        let (tables, programs): (Vec<Prepared>, Vec<Prepared>) =
            prepared.into_iter().partition(|p| matches!(p.next, Next::Tables(_)));
        let mut outcomes: Vec<(String, Option<Constants>, Result<SwapKind, SwapError>)> = self
            .install_all(tables)
            .into_iter()
            .map(|(name, result)| (name, None, result.map(|()| SwapKind::Tables)))
            .collect();
        let node_pins = self.config.pin_root.join("node");
        for Prepared { name, device, constants, next } in programs {
            let dir = self.endpoint_dir(&name);
            let slot = self.slots.entry(name.clone()).or_default();
            let result = match (next, slot.enforced.as_mut()) {
                (Next::Program(generation), Some(enforced)) => enforced.switch_to(*generation),
                (Next::Program(generation), None) => {
                    Enforced::attach(*generation, &device, &node_pins, &dir).map(|e| slot.enforced = Some(e))
                }
                (Next::Tables(_), _) => continue,
            };
            if result.is_ok() {
                self.pins().drop_stale(&name);
            }
            outcomes.push((name, Some(constants), result.map(|()| SwapKind::Program)));
        }
        let version = self.policy_version + 1;
        let mut regenerated = Vec::new();
        for (name, constants, result) in outcomes {
            let slot = self.slots.entry(name.clone()).or_default();
            match result {
                Ok(kind) => {
                    if constants.is_some() {
                        slot.constants = constants;
                    }
                    slot.policy_version = version;
                    slot.last_regeneration_ms = Some(now_ms());
                    slot.last_swap = Some(kind);
                    slot.last_error = None;
                    regenerated.push((name, kind));
                }
                Err(e) => {
                    log(&endpoint_error(&name, &e.to_string()));
                    slot.last_error = Some(e.to_string());
                }
            }
        }
        for name in removed {
            if let Some(slot) = self.slots.remove(name) {
                if let Some(enforced) = slot.enforced {
                    if let Err(e) = enforced.remove() {
                        log(&format!("detaching `{name}`: {e}"));
                    }
                }
            }
            self.ids.remove(name);
            self.pins().drop_stale(name);
        }
        Ok(Applied { regenerated })
    }

    /// The artifacts of `names` (those with a device to enforce on); the
    /// first failure is the change's error.
    fn build(&mut self, names: &[String]) -> Result<Vec<Built>, String> {
        let mut built = Vec::new();
        for name in names {
            let Some(def) = self.resolver.set().inventory.endpoint(name).cloned() else { continue };
            let Some(device) = self.device(&def) else { continue };
            let pending = self.slots.get(name).is_none_or(|s| s.enforced.is_none());
            if pending && !device.exists() {
                continue;
            }
            let Some(policy) = self.resolver.resolved().endpoint(name).cloned() else { continue };
            let id = self.id_of(name);
            match self.builder.endpoint(&policy, &def, id) {
                Ok(artifact) => built.push(Built { name: name.clone(), artifact, device, pending }),
                Err(e) if pending => self.pending_failed(name, &e.to_string()),
                Err(e) => return Err(self.endpoint_failed(name, &e.to_string())),
            }
        }
        // Each rule keeps the counter slot it counts in now.
        let running: Vec<_> = built.iter().map(|b| self.counters.running_slots(&b.name)).collect();
        if running.iter().any(|slots| !slots.is_empty()) {
            let rules = self.resolver.set().rules().map(|r| (r.id.0, r.policy.as_str(), r.name.as_str()));
            let names = RuleNames::new(rules);
            for (built, running) in built.iter_mut().zip(&running) {
                keep_slots(&mut built.artifact, running, |id| names.name(id));
            }
        }
        Ok(built)
    }

    /// Stages new tables for the endpoints whose programs stay (same object,
    /// same constants) and loads new generations for the others, all or
    /// nothing for the enforced endpoints: on any failure what was prepared
    /// is dropped. A pending endpoint that fails to load is left out.
    fn stage_or_load(&mut self, built: Vec<Built>) -> Result<Vec<Prepared>, String> {
        let mut prepared = Vec::new();
        let mut loads = Vec::new();
        for Built { name, artifact, device, pending } in built {
            match self.stage_tables(&name, &artifact) {
                Ok(Some(staged)) => {
                    let constants = artifact.constants;
                    prepared.push(Prepared { name, device, constants, next: Next::Tables(staged) });
                }
                Ok(None) => {
                    let enforced = self.slots.get(&name).and_then(|s| s.enforced.as_ref());
                    let number = enforced.map_or(1, Enforced::next_generation);
                    let running = enforced.and_then(Enforced::running);
                    if enforced.is_none() {
                        // Leftovers of an endpoint this agent does not enforce.
                        self.pins().set_aside(&name);
                    }
                    let dir = self.endpoint_dir(&name);
                    let job = LoadJob { dir, number, running, built: Built { name, artifact, device, pending } };
                    loads.push(job);
                }
                Err(e) => {
                    discard(prepared);
                    return Err(self.endpoint_failed(&name, &e.to_string()));
                }
            }
        }
        let mut loaded = Vec::new();
        let mut failed = None;
        for (built, result) in load_all(loads, &self.config.pin_root.join("node")) {
            match result {
                Ok(generation) => loaded.push((built, generation)),
                Err(e) if built.pending => self.pending_failed(&built.name, &e.to_string()),
                Err(e) => {
                    failed.get_or_insert((built.name, e));
                }
            }
        }
        if let Some((name, e)) = failed {
            loaded.into_iter().for_each(|(_, generation)| generation.discard());
            discard(prepared);
            return Err(self.endpoint_failed(&name, &e.to_string()));
        }
        for (Built { name, artifact, device, .. }, generation) in loaded {
            let next = Next::Program(Box::new(generation));
            prepared.push(Prepared { name, device, constants: artifact.constants, next });
        }
        Ok(prepared)
    }

    /// New tables for `name` when its running programs can take `artifact`
    /// as they are; `None` when it needs a new generation.
    fn stage_tables(&self, name: &str, artifact: &Artifact) -> Result<Option<StagedTables>, SwapError> {
        let Some(slot) = self.slots.get(name) else { return Ok(None) };
        let Some(enforced) = slot.enforced.as_ref() else { return Ok(None) };
        let same_object = enforced.object() == Some(artifact.object.as_path());
        if !same_object || slot.constants.as_ref() != Some(&artifact.constants) {
            return Ok(None);
        }
        match enforced.stage_tables(artifact) {
            Ok(staged) => Ok(Some(staged)),
            // More counters than the running array holds, say.
            Err(SwapError::NeedsProgramSwap { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Installs the staged tables of several endpoints (one selector flip
    /// per enforced direction each; no grace-period wait: see
    /// `loader::quiescence`).
    fn install_all(&mut self, tables: Vec<Prepared>) -> Vec<(String, Result<(), SwapError>)> {
        let mut staged: BTreeMap<String, StagedTables> = tables
            .into_iter()
            .filter_map(|p| match p.next {
                Next::Tables(staged) => Some((p.name, staged)),
                Next::Program(_) => None,
            })
            .collect();
        let mut work = Vec::new();
        for (name, slot) in &mut self.slots {
            if let (Some(enforced), Some(tables)) = (slot.enforced.as_mut(), staged.remove(name)) {
                work.push((name.clone(), enforced, tables));
            }
        }
        let names: Vec<String> = work.iter().map(|(name, _, _)| name.clone()).collect();
        let results = map_on_threads(work, INSTALL_THREADS, |(_, enforced, tables)| enforced.install_tables(tables));
        let mut out: Vec<(String, Result<(), SwapError>)> = names
            .into_iter()
            .zip(results)
            .map(|(name, result)| {
                let panicked = || Err(SwapError::Load(LoadError::Install("the table install panicked".to_string())));
                let result = result.unwrap_or_else(panicked);
                (name, result)
            })
            .collect();
        // Endpoints that stopped running programs since their tables were staged.
        for name in staged.into_keys() {
            let why = "it no longer runs programs".to_string();
            out.push((name.clone(), Err(SwapError::NeedsProgramSwap { endpoint: name, why })));
        }
        out
    }

    /// A pending endpoint that could not be built or loaded: it says why in
    /// status, the change goes on without it.
    fn pending_failed(&mut self, name: &str, error: &str) {
        let message = self.endpoint_failed(name, error);
        log(&format!("{message} (not enforced; retried at the next change)"));
    }

    /// Records a build or load failure on the endpoint; the change's error.
    fn endpoint_failed(&mut self, name: &str, error: &str) -> String {
        let message = endpoint_error(name, error);
        self.slots.entry(name.to_string()).or_default().last_error = Some(message.clone());
        message
    }

    fn record_reload(
        &mut self,
        started: Instant,
        applied: &Applied,
        skipped: usize,
        recomputed: usize,
        removed: usize,
    ) {
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        let names = applied.names();
        let (tables, programs) = (applied.by(SwapKind::Tables), applied.by(SwapKind::Program));
        log(&format!(
            "policy version {}: regenerated {} endpoint(s) (tables swapped: {} [{}]; new programs: {} [{}]), \
             skipped {skipped} (untouched by the change; the impact graph had {recomputed} recomputed), removed \
             {removed} in {took_ms:.1} ms",
            self.policy_version,
            names.len(),
            tables.len(),
            abbreviate(&tables),
            programs.len(),
            abbreviate(&programs),
        ));
        self.last_reload = Some(ReloadStatus {
            at_ms: now_ms(),
            took_ms,
            regenerated: names.len(),
            regenerated_endpoints: names,
            tables_swapped: tables,
            skipped,
            recomputed,
            removed,
        });
    }

    /// The policy set of the files (the resolver's, without the API's endpoints).
    fn file_set(&self) -> PolicySet {
        let mut set = self.resolver.set().clone();
        set.inventory.endpoints.retain(|e| !self.api.contains_key(&e.name));
        set
    }

    /// Moves to `file_set` + `api`: resolution, then [`Agent::apply`]; on any
    /// error everything stays as it was (the resolver takes back what its
    /// update replaced).
    fn change(&mut self, file_set: PolicySet, api: BTreeMap<String, EndpointSpec>) -> Result<(), String> {
        let started = Instant::now();
        let set = with_api_endpoints(file_set, &api)?;
        let (changes, undo) = self.resolver.update_undoable(set).map_err(|e| e.to_string())?;
        let total = self.resolver.set().inventory.endpoints.len();
        match self.apply(&changes.changed_endpoints, &changes.removed_endpoints, changes.ipcache_changed) {
            Ok(applied) => {
                self.api = api;
                self.policy_version += 1;
                let skipped = total.saturating_sub(changes.changed_endpoints.len());
                self.record_reload(started, &applied, skipped, changes.recomputed, changes.removed_endpoints.len());
                self.save_lock();
                Ok(())
            }
            Err(e) => {
                self.resolver.undo(undo);
                Err(e)
            }
        }
    }

    /// Writes the resolver's lock to `STATE/identities.lock` when it changed
    /// (see [`save_identity_lock`]).
    fn save_lock(&mut self) {
        let lock = self.resolver.lock();
        if self.saved_lock.as_ref() != Some(lock) && save_identity_lock(&self.config.state, &lock.render()) {
            self.saved_lock = Some(lock.clone());
        }
    }

    /// The policy files changed: reload them.
    pub fn reload(&mut self) {
        let result =
            self.reader.read().and_then(|(set, rules)| self.change(set, self.api.clone()).map(|()| self.rules = rules));
        match result {
            Ok(()) => self.last_error = None,
            Err(e) => {
                log(&format!(
                    "the change was not applied; policy version {} keeps enforcing:\n{e}",
                    self.policy_version
                ));
                self.last_error = Some(e);
            }
        }
    }

    /// Endpoints whose device went away (or was deleted and made again)
    /// lose their defunct links; endpoints waiting for a device get it.
    pub fn tick(&mut self) {
        self.drop_dead_links();
        if self.ready_pending(false).is_empty() {
            return;
        }
        if let Err(e) = self.apply(&[], &[], false) {
            log(&e);
        }
    }

    /// A veth deleted with its container takes its tcx links with it; one
    /// made again under the same name has none. Either way the endpoint
    /// waits for its device again and is attached afresh when it is there.
    fn drop_dead_links(&mut self) {
        let devices: BTreeMap<String, Device> = self
            .resolver
            .set()
            .inventory
            .endpoints
            .iter()
            .filter_map(|def| self.device(def).map(|d| (def.name.clone(), d)))
            .collect();
        for (name, slot) in &mut self.slots {
            let dead = match (slot.enforced.as_ref(), devices.get(name)) {
                (Some(enforced), Some(device)) => !enforced.is_live_on(device),
                _ => false,
            };
            if !dead {
                continue;
            }
            if let Some(enforced) = slot.enforced.take() {
                log(&format!("the device of `{name}` is gone or was made again: waiting for it to attach afresh"));
                if let Err(e) = enforced.remove() {
                    log(&format!("removing the links of `{name}`: {e}"));
                }
            }
        }
    }

    pub fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response { status: Some(self.status()), ..Response::ok() },
            Request::Stats => Response { stats: Some(self.stats()), ..Response::ok() },
            Request::Monitor(_) => Response::error("`monitor` streams: the socket server answers it"),
            Request::EndpointList => Response { endpoints: Some(self.status().endpoints), ..Response::ok() },
            Request::EndpointAdd { endpoint } => {
                if let Err(e) = self.check_new_endpoint(&endpoint) {
                    return Response::error(e);
                }
                let mut api = self.api.clone();
                api.insert(endpoint.name.clone(), endpoint);
                self.api_change(api)
            }
            Request::EndpointDel { name } => {
                if !self.api.contains_key(&name) {
                    // Not the API's: from the files, if the set has it.
                    return match self.resolver.set().inventory.endpoint(&name) {
                        Some(_) => Response::error(format!(
                            "endpoint `{name}` is declared in the policy files: remove it there"
                        )),
                        None => Response::error(format!("no endpoint `{name}`")),
                    };
                }
                let mut api = self.api.clone();
                api.remove(&name);
                self.api_change(api)
            }
        }
    }

    fn check_new_endpoint(&self, new: &EndpointSpec) -> Result<(), String> {
        check_new_endpoint(&self.resolver.set().inventory, new)
    }

    fn api_change(&mut self, api: BTreeMap<String, EndpointSpec>) -> Response {
        match self.change(self.file_set(), api) {
            Ok(()) => match write_json(&self.config.state.join(API_ENDPOINTS_FILE), &self.api) {
                Ok(()) => Response::ok(),
                Err(e) => Response::error(e.to_string()),
            },
            Err(e) => Response::error(e),
        }
    }

    pub fn status(&self) -> AgentStatus {
        let set = self.resolver.set();
        let endpoints = set
            .inventory
            .endpoints
            .iter()
            .map(|def| {
                let described = Described {
                    name: &def.name,
                    source: if self.api.contains_key(&def.name) { "api" } else { "file" },
                    identity: self.resolver.resolved().endpoint(&def.name).map_or(0, |p| p.identity.0),
                    iface: def.iface.as_ref(),
                    netns: def.netns.as_ref(),
                };
                described.status(self.slots.get(&def.name))
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

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Names for what the kernel reports, as of now.
    pub fn catalog(&self) -> Catalog {
        Catalog::build(self.resolver.resolved(), self.resolver.set(), &self.ids, &self.rules)
    }

    /// Follows the counters to the generations running now (after every
    /// event the agent handled: see [`Counters::follow`]).
    pub fn follow_counters(&mut self, catalog: &Catalog) {
        let running = self.slots.iter().map(|(name, slot)| (name.as_str(), Runs::of(slot.enforced.as_ref())));
        self.counters.follow(running, catalog);
    }

    pub fn stats(&self) -> Stats {
        self.counters.read(&self.catalog())
    }
}

/// One generation to load for an endpoint.
struct LoadJob {
    built: Built,
    dir: PathBuf,
    number: u64,
    /// The generation it runs, whose unchanged directions the load keeps.
    running: Option<Running>,
}

/// Drops what was prepared for a change that will not be applied: staged
/// tables were never installed, loaded generations lose their pins.
fn discard(prepared: Vec<Prepared>) {
    for p in prepared {
        if let Next::Program(generation) = p.next {
            generation.discard();
        }
    }
}

/// Loads the generations of `jobs`, on as many threads as there are CPUs
/// (the verifier, most of a load, runs on the loading thread); each job's
/// outcome, in `jobs` order (the caller decides what a failure undoes).
/// Fewer jobs than CPUs share the CPUs left: each load's programs are
/// verified on several threads (one job alone: on every CPU). With a job
/// per CPU or more, each load runs on one thread: splitting it would add
/// work (an object opened per thread) and no idle CPU to do it on.
fn load_all(jobs: Vec<LoadJob>, node_pins: &Path) -> Vec<(Built, Result<Generation, SwapError>)> {
    let threads = all_cpus();
    let program_threads = (threads / jobs.len().max(1)).max(1);
    let results = map_on_threads(jobs.iter().collect(), threads, |job: &LoadJob| {
        let running = job.running.as_ref();
        load_generation(&job.built.artifact, node_pins, &job.dir, job.number, running, program_threads)
    });
    jobs.into_iter()
        .zip(results)
        .map(|(job, result)| {
            let result = result.unwrap_or_else(|| {
                Err(SwapError::Io {
                    path: job.dir.clone(),
                    source: std::io::Error::other("the loading thread panicked"),
                })
            });
            (job.built, result)
        })
        .collect()
}
