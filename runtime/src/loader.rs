//! The kernel seam: everything that makes BPF syscalls for an endpoint
//! object goes through here (libbpf-rs). Callers hand in built artifacts:
//! an object file, `.rodata` constants by name, where to pin; they get back
//! a [`LoadedEndpoint`] whose maps they fill and whose programs they run.

use crate::datapath::{self, Counter, Direction, MetricsKey, VerdictEvent, NODE_MAP_PREFIX};
use crate::seam::{EndpointMaps, PolicyTables};
use libbpf_rs::btf::types::DataSec;
use libbpf_rs::btf::BtfType;
use libbpf_rs::{
    AsRawLibbpf, Btf, MapCore, MapFlags, MapHandle, Object, ObjectBuilder, PrintLevel, ProgramInput, RingBuffer,
    RingBufferBuilder,
};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

/// Where polc pins: one directory per node, a `node/` directory for
/// node-wide maps and one `endpoints/<id>/` directory per endpoint.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const PIN_ROOT: &str = "/sys/fs/bpf/polc";

/// Whether `path` is a directory strictly under [`PIN_ROOT`], written
/// without `.`/`..` components. polcd pins (and `polcd reset` deletes) only
/// there, so a bad `--pin-root` or state file cannot reach other tools' pins.
pub fn is_confined_pin_root(path: &Path) -> bool {
    use std::path::Component;
    let plain = path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    plain && path.is_absolute() && path.starts_with(PIN_ROOT) && path != Path::new(PIN_ROOT)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bpffs is not mounted at `{BPFFS}` and mounting it failed: {0}")]
    Bpffs(std::io::Error),
    #[error("cannot create pin directory `{path}`: {source}")]
    PinDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open BPF object `{path}`: {source}")]
    Open { path: PathBuf, source: libbpf_rs::Error },
    #[error("object `{path}` has no `.rodata` constant `{name}` of {size} bytes")]
    Constant { path: PathBuf, name: String, size: usize },
    /// The verifier (or map creation) refused the object; `log` is the end
    /// of libbpf's log, with the verifier's reasons.
    #[error("endpoint `{endpoint}`: the kernel rejected `{path}`: {source}\n{log}")]
    Load { endpoint: String, path: PathBuf, source: libbpf_rs::Error, log: String },
    #[error("object has no map `{0}`")]
    NoMap(String),
    #[error("object has no program `{0}`")]
    NoProgram(String),
    #[error("BPF operation `{what}` failed: {source}")]
    Bpf { what: String, source: libbpf_rs::Error },
}

fn bpf_error(what: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Bpf { what, source }
}

/// Mounts bpffs at /sys/fs/bpf unless it already is.
pub fn ensure_bpffs() -> Result<(), LoadError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = c"/sys/fs/bpf";
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } == 0 && stat.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).map_err(LoadError::Bpffs)?;
    // SAFETY: all arguments are NUL-terminated strings or null data.
    let rc = unsafe { libc::mount(c"bpf".as_ptr(), path.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(LoadError::Bpffs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A pin directory that is removed, with every pin in it, when dropped.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// Creates `PIN_ROOT/<name>` (mounting bpffs if needed).
    pub fn create(name: &str) -> Result<PinDir, LoadError> {
        ensure_bpffs()?;
        let path = Path::new(PIN_ROOT).join(name);
        std::fs::create_dir_all(&path).map_err(|source| LoadError::PinDir { path: path.clone(), source })?;
        Ok(PinDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn node_maps(&self) -> PathBuf {
        self.path.join("node")
    }

    pub fn endpoint_maps(&self, endpoint: u32) -> PathBuf {
        self.path.join("endpoints").join(endpoint.to_string())
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Unlinking a pin drops the kernel's reference; the directory tree
        // on bpffs goes like any other.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What to load for one endpoint.
#[derive(Debug, Clone)]
pub struct LoadSpec<'a> {
    /// For error messages.
    pub endpoint: &'a str,
    pub object: &'a Path,
    /// Written into `.rodata` by variable name before load (empty for a
    /// per-endpoint compile, whose constants are #defines).
    pub constants: &'a [(String, Vec<u8>)],
    /// Map name -> max entries, overriding the object's (e.g. the counter
    /// array, sized by the endpoint's rules).
    pub map_sizes: &'a [(String, u32)],
    pub node_pins: PathBuf,
    pub endpoint_pins: PathBuf,
}

/// libbpf's log of the current load, so a rejection can show the verifier's
/// reasons instead of a bare errno.
static LIBBPF_LOG: Mutex<String> = Mutex::new(String::new());

fn capture_libbpf_log(_level: PrintLevel, line: String) {
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        log.push_str(&line);
    }
}

fn take_log_tail(lines: usize) -> String {
    let log = LIBBPF_LOG.lock().map(|mut log| std::mem::take(&mut *log)).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An endpoint object in the kernel: its programs loaded, its maps pinned
/// and its prog arrays filled.
pub struct LoadedEndpoint {
    object: Object,
    /// The rule id of each counter slot (slot 1 first), from the build.
    rule_slots: Vec<u32>,
}

impl LoadedEndpoint {
    pub fn load(spec: &LoadSpec<'_>) -> Result<LoadedEndpoint, LoadError> {
        let path = spec.object.to_path_buf();
        libbpf_rs::set_print(Some((PrintLevel::Info, capture_libbpf_log)));
        let _ = take_log_tail(0);
        let mut open = ObjectBuilder::default()
            .open_file(spec.object)
            .map_err(|source| LoadError::Open { path: path.clone(), source })?;

        let offsets = rodata_offsets(&open)?;
        for map in open.maps_mut() {
            let name = map.name().to_string_lossy().into_owned();
            if name.ends_with(".rodata") {
                write_constants(map, &offsets, spec, &path)?;
                continue;
            }
            if name.starts_with('.') {
                continue;
            }
            let dir = if name.starts_with(NODE_MAP_PREFIX) { &spec.node_pins } else { &spec.endpoint_pins };
            std::fs::create_dir_all(dir).map_err(|source| LoadError::PinDir { path: dir.clone(), source })?;
            let mut map = map;
            if let Some((_, size)) = spec.map_sizes.iter().find(|(n, _)| *n == name) {
                map.set_max_entries(*size).map_err(bpf_error(format!("size of `{name}`")))?;
            }
            map.set_pin_path(dir.join(&name)).map_err(bpf_error(format!("pin path of `{name}`")))?;
        }

        let object = open.load().map_err(|source| LoadError::Load {
            endpoint: spec.endpoint.to_string(),
            path: path.clone(),
            source,
            log: take_log_tail(40),
        })?;
        let loaded = LoadedEndpoint { object, rule_slots: Vec::new() };
        loaded.fill_tail_calls()?;
        Ok(loaded)
    }

    fn fill_tail_calls(&self) -> Result<(), LoadError> {
        for (array, slot, target) in datapath::TAIL_CALLS {
            let Some(prog) = self.object.progs().find(|p| p.name() == target) else {
                // The address family is not enabled in this code shape.
                continue;
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&prog));
            self.map(array)?
                .update(&slot.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
                .map_err(bpf_error(format!("tail call {array}[{slot}]")))?;
        }
        Ok(())
    }

    /// A handle on one of the object's maps (usable independently of `self`).
    pub fn map(&self, name: &str) -> Result<MapHandle, LoadError> {
        let map = self.object.maps().find(|m| m.name() == name).ok_or_else(|| LoadError::NoMap(name.to_string()))?;
        MapHandle::try_from(&map).map_err(bpf_error(format!("handle of `{name}`")))
    }

    /// One of the object's programs, e.g. to attach it.
    pub fn program(&self, name: &str) -> Result<libbpf_rs::Program<'_>, LoadError> {
        self.object.progs().find(|p| p.name() == name).ok_or_else(|| LoadError::NoProgram(name.to_string()))
    }

    /// Runs `program` once on `packet` (BPF_PROG_TEST_RUN); the tc action.
    pub fn run(&self, program: &str, packet: &[u8]) -> Result<u32, LoadError> {
        Ok(self.run_repeated(program, packet, 1)?.0)
    }

    /// Runs `program` `repeat` times on `packet`: the tc action and the
    /// kernel's mean time per run.
    pub fn run_repeated(
        &self,
        program: &str,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), LoadError> {
        let prog = self
            .object
            .progs_mut()
            .find(|p| p.name() == program)
            .ok_or_else(|| LoadError::NoProgram(program.to_string()))?;
        let input = ProgramInput { data_in: Some(packet), repeat, ..Default::default() };
        let output = prog.test_run(input).map_err(bpf_error(format!("test run of `{program}`")))?;
        Ok((output.return_value, output.duration))
    }

    /// The policy slot of `direction`; `None` when the direction is not
    /// enforced in this object's code shape.
    pub fn policy_slot(&self, direction: Direction) -> Result<Option<PolicySlot>, LoadError> {
        if !self.has_map(direction.policy_map()) {
            return Ok(None);
        }
        let [a, b] = direction.policy_tables();
        Ok(Some(PolicySlot {
            name: direction.policy_map(),
            selector: self.map(direction.policy_map())?,
            tables: [self.map(a)?, self.map(b)?],
        }))
    }

    pub fn set_rule_slots(&mut self, rule_slots: Vec<u32>) {
        self.rule_slots = rule_slots;
    }

    /// The per-rule counters that counted something, summed over CPUs.
    pub fn metrics(&self) -> Result<Vec<(MetricsKey, Counter)>, LoadError> {
        let map = self.map(datapath::METRICS_MAP)?;
        let mut out = Vec::new();
        for key in map.keys() {
            let Some(index) = key.get(..4).and_then(|k| k.try_into().ok()).map(u32::from_ne_bytes) else { continue };
            let Some(parsed) = MetricsKey::from_index(index, &self.rule_slots) else { continue };
            let per_cpu =
                map.lookup_percpu(&key, MapFlags::ANY).map_err(bpf_error("read metrics"))?.unwrap_or_default();
            let mut total = Counter::default();
            for raw in per_cpu {
                let c = Counter::parse(&raw).unwrap_or_default();
                total.packets += c.packets;
                total.bytes += c.bytes;
            }
            if total.packets > 0 {
                out.push((parsed, total));
            }
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// A reader of the node-wide verdict events.
    pub fn events(&self) -> Result<EventReader, LoadError> {
        let map = self.map(datapath::EVENTS_MAP)?;
        let received = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&received);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&map, move |raw: &[u8]| {
                if let Some(event) = VerdictEvent::parse(raw) {
                    sink.borrow_mut().push(event);
                }
                0
            })
            .map_err(bpf_error("ring buffer"))?;
        let ring = builder.build().map_err(bpf_error("ring buffer"))?;
        Ok(EventReader { ring, received })
    }
}

impl EndpointMaps for LoadedEndpoint {
    fn update(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), LoadError> {
        self.map(map)?.update(key, value, MapFlags::ANY).map_err(bpf_error(format!("update `{map}`")))
    }

    fn lookup(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, LoadError> {
        self.map(map)?.lookup(key, MapFlags::ANY).map_err(bpf_error(format!("lookup in `{map}`")))
    }

    fn delete(&self, map: &str, key: &[u8]) -> Result<(), LoadError> {
        self.map(map)?.delete(key).map_err(bpf_error(format!("delete from `{map}`")))
    }

    fn has_map(&self, name: &str) -> bool {
        self.object.maps().any(|m| m.name() == name)
    }
}

impl PolicyTables for LoadedEndpoint {
    fn replace_table(&self, direction: Direction, records: &[TableRecord]) -> Result<(), LoadError> {
        let slot = self.policy_slot(direction)?.ok_or_else(|| LoadError::NoMap(direction.policy_map().to_string()))?;
        replace_tables(&[(&slot, records)])
    }
}

/// A policy table entry as bytes: (key, value) in the table's C layout.
pub type TableRecord = (Vec<u8>, Vec<u8>);

/// One enforced direction's policy: its selector (`ep_pol_in` or
/// `ep_pol_eg`, one u32) and the two tables it chooses between.
pub struct PolicySlot {
    name: &'static str,
    selector: MapHandle,
    tables: [MapHandle; 2],
}

impl PolicySlot {
    /// The slot of a direction pinned under `pins` (a generation directory,
    /// e.g. left by a previous polcd).
    pub fn open_pinned(direction: Direction, pins: &Path) -> Result<PolicySlot, LoadError> {
        let open = |name: &str| {
            let path = pins.join(name);
            MapHandle::from_pinned_path(&path).map_err(bpf_error(format!("open `{}`", path.display())))
        };
        let [a, b] = direction.policy_tables();
        let slot = PolicySlot {
            name: direction.policy_map(),
            selector: open(direction.policy_map())?,
            tables: [open(a)?, open(b)?],
        };
        // Another process may have flipped it a moment ago.
        quiescence::note_unknown(&slot.selector);
        Ok(slot)
    }

    /// Which table (0 or 1) the program reads now.
    pub fn active(&self) -> Result<usize, LoadError> {
        let value = self
            .selector
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_error(format!("lookup in `{}`", self.name)))?;
        let which = value.and_then(|v| v.get(..4).and_then(|b| b.try_into().ok())).map(u32::from_ne_bytes);
        Ok(usize::from(which.unwrap_or(0) != 0))
    }

    /// How many entries a table of this direction holds.
    pub fn capacity(&self) -> u32 {
        self.tables[0].max_entries()
    }

    /// Fills the table the program does not read with exactly `records`
    /// (after waiting until no packet can still be reading it); returns
    /// its index, for [`PolicySlot::install`].
    pub fn stage(&self, records: &[TableRecord]) -> Result<usize, LoadError> {
        let idle = 1 - self.active()?;
        quiescence::wait(&self.selector);
        let table = &self.tables[idle];
        let what = || format!("fill the idle table of `{}` ({} entries)", self.name, records.len());
        let old: Vec<Vec<u8>> = table.keys().collect();
        for key in old {
            table.delete(&key).map_err(bpf_error(what()))?;
        }
        for (key, value) in records {
            table.update(key, value, MapFlags::ANY).map_err(bpf_error(what()))?;
        }
        Ok(idle)
    }

    /// Makes table `which` the one the program reads, in one map update;
    /// packets already past the selector finish with the table they saw.
    pub fn install(&self, which: usize) -> Result<(), LoadError> {
        self.selector
            .update(&0u32.to_ne_bytes(), &(which as u32).to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_error(format!("flip `{}`", self.name)))?;
        quiescence::flipped(&self.selector);
        Ok(())
    }
}

/// Replaces the tables of several directions all or nothing: every idle
/// table is filled first (invisible to the programs), then the selectors are
/// flipped one by one; if a flip fails, the ones flipped before it are put
/// back.
pub fn replace_tables(changes: &[(&PolicySlot, &[TableRecord])]) -> Result<(), LoadError> {
    let mut staged = Vec::with_capacity(changes.len());
    for (slot, records) in changes {
        staged.push((*slot, slot.active()?, slot.stage(records)?));
    }
    for (i, (slot, _, idle)) in staged.iter().enumerate() {
        if let Err(e) = slot.install(*idle) {
            for (slot, previous, _) in &staged[..i] {
                let _ = slot.install(*previous);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// When a table left by a flip may be refilled: after an RCU grace period,
/// since BPF programs run under RCU and a packet that read the selector
/// before the flip may still be reading the old table. A flip starts a
/// grace-period wait in the background (`membarrier(MEMBARRIER_CMD_GLOBAL)`
/// is `synchronize_rcu()`); refilling joins it, so single changes never wait
/// and back-to-back changes wait for the rest of one grace period.
mod quiescence {
    use libbpf_rs::MapCore;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::thread::JoinHandle;

    /// Per selector map id this process knows: the grace-period wait started
    /// by its last flip, `None` once it is over.
    static PENDING: Mutex<BTreeMap<u32, Option<JoinHandle<()>>>> = Mutex::new(BTreeMap::new());

    fn id(selector: &libbpf_rs::MapHandle) -> u32 {
        selector.info().map(|i| i.info.id).unwrap_or(0)
    }

    fn grace_period() {
        const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
        // SAFETY: a syscall with integer arguments only.
        let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
        if rc != 0 {
            // No membarrier: a program run lasts microseconds; wait far longer.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn start(selector: &libbpf_rs::MapHandle) {
        let handle = std::thread::spawn(grace_period);
        if let Ok(mut pending) = PENDING.lock() {
            if let Some(Some(old)) = pending.insert(id(selector), Some(handle)) {
                let _ = old.join();
            }
            // Reap finished waits (their threads hold resources until joined).
            for wait in pending.values_mut() {
                if wait.as_ref().is_some_and(|h| h.is_finished()) {
                    if let Some(h) = wait.take() {
                        let _ = h.join();
                    }
                }
            }
        }
    }

    pub fn flipped(selector: &libbpf_rs::MapHandle) {
        start(selector);
    }

    /// A selector this process did not flip: someone else may have, just
    /// now, so its idle table waits for a grace period too.
    pub fn note_unknown(selector: &libbpf_rs::MapHandle) {
        let known = PENDING.lock().map(|p| p.contains_key(&id(selector))).unwrap_or(false);
        if !known {
            start(selector);
        }
    }

    pub fn wait(selector: &libbpf_rs::MapHandle) {
        let handle = PENDING.lock().ok().and_then(|mut p| p.get_mut(&id(selector)).and_then(Option::take));
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// Verdict events read from the ring buffer without blocking.
pub struct EventReader {
    ring: RingBuffer<'static>,
    received: Rc<RefCell<Vec<VerdictEvent>>>,
}

impl EventReader {
    /// Every event submitted since the last call.
    pub fn drain(&self) -> Result<Vec<VerdictEvent>, LoadError> {
        self.ring.consume().map_err(bpf_error("consume ring buffer"))?;
        Ok(std::mem::take(&mut *self.received.borrow_mut()))
    }
}

/// Variable name -> (offset, size) in `.rodata`, read after open (the
/// object file's BTF says 0 until libbpf has laid the section out).
fn rodata_offsets(open: &libbpf_rs::OpenObject) -> Result<Vec<(String, u32, usize)>, LoadError> {
    let btf = Btf::from_bpf_object(unsafe { open.as_libbpf_object().as_ref() }).map_err(bpf_error("read BTF"))?;
    let Some(btf) = btf else { return Ok(Vec::new()) };
    let Some(section) = btf.type_by_name::<DataSec>(".rodata") else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for var in section.iter() {
        if let Some(name) =
            btf.type_by_id::<BtfType>(var.ty).and_then(|t| t.name().map(|n| n.to_string_lossy().into_owned()))
        {
            out.push((name, var.offset, var.size));
        }
    }
    Ok(out)
}

fn write_constants(
    mut map: libbpf_rs::OpenMapMut<'_>,
    offsets: &[(String, u32, usize)],
    spec: &LoadSpec<'_>,
    path: &Path,
) -> Result<(), LoadError> {
    let Some(data) = map.initial_value_mut() else { return Ok(()) };
    for (name, value) in spec.constants {
        let slot = offsets.iter().find(|(n, _, size)| n == name && *size == value.len());
        let range = slot.and_then(|(_, offset, size)| {
            let start = *offset as usize;
            data.get_mut(start..start + size)
        });
        let Some(range) = range else {
            return Err(LoadError::Constant { path: path.to_path_buf(), name: name.clone(), size: value.len() });
        };
        range.copy_from_slice(value);
    }
    Ok(())
}

#[cfg(test)]
mod pin_root_tests {
    use super::is_confined_pin_root;
    use std::path::Path;

    #[test]
    fn only_directories_strictly_under_the_polc_root() {
        assert!(is_confined_pin_root(Path::new("/sys/fs/bpf/polc/node")));
        assert!(is_confined_pin_root(Path::new("/sys/fs/bpf/polc/test-1/agent")));
        assert!(!is_confined_pin_root(Path::new("/sys/fs/bpf/polc")));
        assert!(!is_confined_pin_root(Path::new("/sys/fs/bpf")));
        assert!(!is_confined_pin_root(Path::new("/sys/fs/bpf/polc/../other")));
        assert!(!is_confined_pin_root(Path::new("/sys/fs/bpf/polcx/node")));
        assert!(!is_confined_pin_root(Path::new("sys/fs/bpf/polc/node")));
    }
}
