//! The kernel seam: everything that makes BPF syscalls for an endpoint
//! object goes through here (libbpf-rs). Callers hand in built artifacts:
//! an object file, `.rodata` constants by name, where to pin; they get back
//! a [`LoadedEndpoint`] whose maps they fill and whose programs they run.

use crate::datapath::{self, Counter, Direction, MetricsKey, VerdictEvent, NODE_MAP_PREFIX};
use crate::seam::{EndpointMaps, PolicyTables};
use crate::shape::{self, DirectionShape};
use libbpf_rs::btf::types::DataSec;
use libbpf_rs::btf::BtfType;
use libbpf_rs::{
    AsRawLibbpf, Btf, MapCore, MapFlags, MapHandle, Object, ObjectBuilder, PrintLevel, ProgramInput, RingBuffer,
    RingBufferBuilder,
};
use polc::codegen::policy_index::INDEX_IDENTITIES;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Once, OnceLock};

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
    /// Installing policy tables failed; the previous tables were put back.
    #[error("{0}")]
    Install(String),
    /// A direction already has a staged table that is not installed yet: a
    /// second staging would refill the idle table under the first.
    #[error("`{0}` already has a staged table not yet installed")]
    AlreadyStaged(&'static str),
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
    /// On how many threads the kernel verifies the programs this load
    /// loads (see [`LoadedEndpoint::load_over`]): 1 verifies them one after
    /// the other, in one `bpf_object__load`.
    pub program_threads: usize,
}

/// [`LoadSpec::program_threads`] for a load that runs alone: one thread per
/// CPU. Loads that already run side by side (one per CPU) gain nothing from
/// it: give those 1.
/// Asked once per process: std reads the cgroup's CPU quota on every call
/// (~0.1 ms, on every change otherwise).
pub fn all_cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

thread_local! {
    /// libbpf's log of the current load on this thread, so a rejection can
    /// show the verifier's reasons instead of a bare errno. libbpf prints on
    /// the loading thread: loads on several threads keep their logs apart.
    static LIBBPF_LOG: RefCell<String> = const { RefCell::new(String::new()) };
}

fn capture_libbpf_log(_level: PrintLevel, line: String) {
    LIBBPF_LOG.with(|log| log.borrow_mut().push_str(&line));
}

/// Routes libbpf's messages to [`capture_libbpf_log`] (once per process).
fn capture_libbpf_messages() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Info, capture_libbpf_log)));
    });
}

fn take_log_tail(lines: usize) -> String {
    let log = LIBBPF_LOG.with(|log| std::mem::take(&mut *log.borrow_mut()));
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An endpoint object in the kernel: its programs loaded, its maps pinned
/// and its prog arrays filled.
///
/// A load over a running one ([`LoadedEndpoint::load_over`]) may keep some
/// directions: their programs are not loaded again (they keep running from
/// the links), and the maps they use are the running ones, pinned again
/// under the new pin directory, so the object still has every map.
///
/// Its programs may be verified on several threads at once: the kernel
/// verifies one `bpf_object__load`'s programs one after the other, so the
/// load is split over several objects opened from the same file, each with
/// some of the programs and every map the first one's ([`load_split`]).
pub struct LoadedEndpoint {
    /// The object with the maps (and some or all of the loaded programs).
    object: Object,
    /// The objects that loaded the other programs, on other threads, using
    /// `object`'s maps.
    program_objects: Vec<Object>,
    /// The directions whose programs this object loaded.
    loaded: Vec<Direction>,
    /// What each direction's programs are made of ([`Direction::BOTH`] order).
    shapes: [Option<DirectionShape>; 2],
    /// The rule id of each counter slot (slot 1 first), from the build.
    rule_slots: Vec<u32>,
}

/// A running load whose directions the next load of the endpoint may keep:
/// where its per-endpoint maps are pinned, and its directions' shapes.
#[derive(Debug, Clone)]
pub struct Running {
    pub pins: PathBuf,
    pub shapes: [Option<DirectionShape>; 2],
}

impl LoadedEndpoint {
    pub fn load(spec: &LoadSpec<'_>) -> Result<LoadedEndpoint, LoadError> {
        LoadedEndpoint::load_with_tables(spec, &[])
    }

    /// Loads the object and fills the policy table of each direction in
    /// `tables` (the selector of a fresh object points at its first table,
    /// so no grace period is waited for). A direction in `tables` without
    /// a policy map in the object is an error.
    pub fn load_with_tables(
        spec: &LoadSpec<'_>,
        tables: &[(Direction, &TableRecords)],
    ) -> Result<LoadedEndpoint, LoadError> {
        LoadedEndpoint::load_over(spec, tables, None, None)
    }

    /// [`LoadedEndpoint::load_with_tables`], keeping each direction of
    /// `running` whose shape (see [`crate::shape`]) the object gives again:
    /// its programs are not loaded (no verifier run) and its maps are
    /// `running`'s, which this object uses and pins under its own pin
    /// directory. The tables of a kept direction are not filled (they are
    /// the running ones: stage them, see [`LoadedEndpoint::kept`]). An
    /// object whose programs are all the running ones (the same code under
    /// another file name, say) loads no program at all. `declared`: the
    /// features each direction's programs are compiled from, when the
    /// builder says (see [`crate::swap::Artifact::direction_shapes`]).
    pub fn load_over(
        spec: &LoadSpec<'_>,
        tables: &[(Direction, &TableRecords)],
        running: Option<&Running>,
        declared: Option<&[String; 2]>,
    ) -> Result<LoadedEndpoint, LoadError> {
        capture_libbpf_messages();
        let _ = take_log_tail(0);
        let mut open = open_object(spec, true)?;
        let mut shapes = shapes_of_open(spec, &open);
        if let Some(declared) = declared {
            for (shape, features) in shapes.iter_mut().zip(declared) {
                if let Some(shape) = shape {
                    shape.declare_features(features);
                }
            }
        }
        let mut kept: Vec<Direction> = Vec::new();
        if let Some(running) = running {
            for (direction, (old, new)) in Direction::BOTH.into_iter().zip(running.shapes.iter().zip(&shapes)) {
                let same = old.as_ref().zip(new.as_ref()).is_some_and(|(old, new)| old.keeps(new));
                if same && keep_direction(&mut open, direction, &shapes, &running.pins)? {
                    kept.push(direction);
                }
            }
        }

        let programs: Vec<String> =
            open.progs().filter(|p| p.autoload()).map(|p| p.name().to_string_lossy().into_owned()).collect();
        let groups = program_groups(programs, spec.program_threads);
        let (object, program_objects) = if groups.len() > 1 && node_maps_pinned(spec, &open) {
            load_split(spec, open, &groups)?
        } else {
            (load_object(spec, open)?, Vec::new())
        };
        let loaded_directions = Direction::BOTH.into_iter().filter(|d| !kept.contains(d)).collect();
        let mut loaded =
            LoadedEndpoint { object, program_objects, loaded: loaded_directions, shapes, rule_slots: Vec::new() };
        if let Ok(counters) = loaded.map(datapath::METRICS_MAP) {
            let entries = counters.max_entries();
            loaded.shapes.iter_mut().flatten().for_each(|shape| shape.set_counter_entries(entries));
        }
        loaded.fill_tail_calls()?;
        for (direction, records) in tables.iter().filter(|(d, _)| loaded.loaded.contains(d)) {
            let slot =
                loaded.policy_slot(*direction)?.ok_or_else(|| LoadError::NoMap(direction.policy_map().to_string()))?;
            replace_tables(vec![(slot, records)])?;
        }
        Ok(loaded)
    }

    /// How many objects loaded this load's programs, each on a thread of
    /// its own (1 unless [`LoadSpec::program_threads`] split the load).
    pub fn program_loads(&self) -> usize {
        1 + self.program_objects.len()
    }

    /// The directions whose programs this object loaded.
    pub fn loaded(&self) -> &[Direction] {
        &self.loaded
    }

    /// The directions kept from the running load (their programs run from
    /// the links; their maps are the running ones).
    pub fn kept(&self) -> Vec<Direction> {
        Direction::BOTH.into_iter().filter(|d| !self.loaded.contains(d)).collect()
    }

    /// This load as the running one, for the next load over it.
    pub fn running(&self, pins: &Path) -> Running {
        Running { pins: pins.to_path_buf(), shapes: self.shapes.clone() }
    }

    /// Fills the prog arrays of the loaded directions (a kept direction's
    /// array is the running one, already filled).
    fn fill_tail_calls(&self) -> Result<(), LoadError> {
        for (array, slot, target) in datapath::TAIL_CALLS {
            let Some(prog) = self.loaded_program(target) else {
                // The address family is not enabled in this code shape, or
                // the direction was kept.
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

    /// One of the programs this object loaded, e.g. to attach it (not one
    /// of a kept direction: that one runs from the links).
    pub fn program(&self, name: &str) -> Result<libbpf_rs::Program<'_>, LoadError> {
        self.objects()
            .flat_map(Object::progs)
            .find(|p| p.name() == name && p.autoload())
            .ok_or_else(|| LoadError::NoProgram(name.to_string()))
    }

    /// The objects of this load: the one with the maps first. Each has every
    /// program, and loaded some of them (those it autoloads).
    fn objects(&self) -> impl Iterator<Item = &Object> {
        std::iter::once(&self.object).chain(&self.program_objects)
    }

    /// `name` in the object that loaded it.
    fn loaded_program(&self, name: &str) -> Option<libbpf_rs::ProgramMut<'_>> {
        self.objects().flat_map(Object::progs_mut).find(|p| p.name() == name && p.autoload())
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
        let prog = self.loaded_program(program).ok_or_else(|| LoadError::NoProgram(program.to_string()))?;
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
        Ok(Some(PolicySlot {
            name: direction.policy_map(),
            selector: self.map(direction.policy_map())?,
            tables: table_maps(direction, |name| self.map(name))?,
        }))
    }

    pub fn set_rule_slots(&mut self, rule_slots: Vec<u32>) {
        self.rule_slots = rule_slots;
    }

    /// The rule id of each counter slot (slot 1 first).
    pub fn rule_slots(&self) -> &[u32] {
        &self.rule_slots
    }

    /// The per-rule counters that counted something, summed over CPUs.
    pub fn metrics(&self) -> Result<Vec<(MetricsKey, Counter)>, LoadError> {
        read_metrics(&self.map(datapath::METRICS_MAP)?, &self.rule_slots)
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

/// The counters of an `ep_metrics` map that counted something, summed over
/// CPUs; `rule_slots` as [`LoadedEndpoint::rule_slots`]. A handle keeps the
/// map readable after its generation is unpinned (its final counts).
pub fn read_metrics(map: &MapHandle, rule_slots: &[u32]) -> Result<Vec<(MetricsKey, Counter)>, LoadError> {
    let mut out = Vec::new();
    for (index, total) in read_percpu_counters(map)? {
        if let Some(key) = MetricsKey::from_index(index, rule_slots) {
            out.push((key, total));
        }
    }
    out.sort_by_key(|(k, _)| *k);
    Ok(out)
}

/// Every non-zero counter of a per-CPU array of `struct metrics_value`, by
/// index, summed over CPUs. One `BPF_MAP_LOOKUP_BATCH` per 1024 entries
/// (libbpf-rs 0.27 refuses batches on per-CPU maps; one lookup per entry
/// would be one syscall per counter, 26 per rule slot per endpoint, on every
/// `polcd stats` and scrape).
fn read_percpu_counters(map: &MapHandle) -> Result<Vec<(u32, Counter)>, LoadError> {
    use libbpf_rs::libbpf_sys;
    const BATCH: usize = 1024;
    let cpus = libbpf_rs::num_possible_cpus().map_err(bpf_error("count possible CPUs"))?;
    // The kernel lays each entry out as one value per possible CPU, each
    // rounded up to 8 bytes.
    let stride = (map.value_size() as usize).next_multiple_of(8);
    let entry = stride * cpus;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(map));
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    let mut keys = vec![0u32; BATCH];
    let mut values = vec![0u8; BATCH * entry];
    let mut out = Vec::new();
    // Where the next batch starts: none for the first call, then what the
    // previous call returned.
    let mut position: Option<u32> = None;
    loop {
        let mut count = BATCH as u32;
        let mut next = 0u32;
        let mut start = position.unwrap_or(0);
        let in_batch = if position.is_some() { (&mut start as *mut u32).cast() } else { std::ptr::null_mut() };
        // SAFETY: `keys` holds BATCH 4-byte keys and `values` BATCH entries of
        // `entry` bytes, as `count` tells the kernel; the batch positions are
        // u32 like the array's key; all outlive the call.
        let rc = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                fd,
                in_batch,
                (&mut next as *mut u32).cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        // -ENOENT: the end of the map was reached (`count` entries are valid).
        if rc < 0 && rc != -libc::ENOENT {
            let source = libbpf_rs::Error::from_raw_os_error(-rc);
            return Err(LoadError::Bpf { what: "read metrics (lookup batch)".into(), source });
        }
        for (i, key) in keys.iter().take(count as usize).enumerate() {
            let mut total = Counter::default();
            for cpu in 0..cpus {
                let at = i * entry + cpu * stride;
                let c = values.get(at..at + stride).and_then(Counter::parse).unwrap_or_default();
                total.packets += c.packets;
                total.bytes += c.bytes;
            }
            if total.packets > 0 {
                out.push((*key, total));
            }
        }
        if rc < 0 || count == 0 {
            return Ok(out);
        }
        position = Some(next);
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
    fn replace_table(&self, direction: Direction, records: &TableRecords) -> Result<(), LoadError> {
        let slot = self.policy_slot(direction)?.ok_or_else(|| LoadError::NoMap(direction.policy_map().to_string()))?;
        replace_tables(vec![(slot, records)])
    }
}

/// A map entry as bytes: (key, value) in the map's C layout.
pub type TableRecord = (Vec<u8>, Vec<u8>);

/// A policy table's entries in the C layout (`seam::policy_records`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRecords {
    /// The hash: every entry.
    pub hash: Vec<TableRecord>,
    /// The array index: identity -> row numbers, for the identities whose
    /// value is not all `ROW_NONE` (the others are left zero).
    pub index: Vec<TableRecord>,
    /// The rows the index names: row number - 1 -> policy value.
    pub rows: Vec<TableRecord>,
}

/// The maps of one policy table: the hash and the array index in front of
/// it (see templates/bpf/policy.h).
struct TableMaps {
    hash: MapHandle,
    index: MapHandle,
    rows: MapHandle,
}

/// One enforced direction's policy: its selector (`ep_pol_in` or
/// `ep_pol_eg`, one u32) and the two tables it chooses between.
pub struct PolicySlot {
    name: &'static str,
    selector: MapHandle,
    tables: [TableMaps; 2],
}

/// The two tables of `direction`, each map opened by `open`.
fn table_maps(
    direction: Direction,
    open: impl Fn(&str) -> Result<MapHandle, LoadError>,
) -> Result<[TableMaps; 2], LoadError> {
    let table = |i: usize| -> Result<TableMaps, LoadError> {
        Ok(TableMaps {
            hash: open(direction.policy_tables()[i])?,
            index: open(direction.policy_indexes()[i])?,
            rows: open(direction.policy_rows()[i])?,
        })
    };
    Ok([table(0)?, table(1)?])
}

impl PolicySlot {
    /// The slot of a direction pinned under `pins` (a generation directory,
    /// e.g. left by a previous polcd).
    pub fn open_pinned(direction: Direction, pins: &Path) -> Result<PolicySlot, LoadError> {
        let open = |name: &str| {
            let path = pins.join(name);
            MapHandle::from_pinned_path(&path).map_err(bpf_error(format!("open `{}`", path.display())))
        };
        let slot = PolicySlot {
            name: direction.policy_map(),
            selector: open(direction.policy_map())?,
            tables: table_maps(direction, open)?,
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
        self.tables[0].hash.max_entries()
    }

    /// Fills the table the program does not read with exactly `records`
    /// (after waiting until no packet can still be reading it); returns
    /// its index, for [`PolicySlot::install`].
    pub fn stage(&self, records: &TableRecords) -> Result<usize, LoadError> {
        let idle = 1 - self.active()?;
        quiescence::wait(&self.selector);
        let table = &self.tables[idle];
        let what = || format!("fill the idle table of `{}` ({} entries)", self.name, records.hash.len());
        let old: Vec<Vec<u8>> = table.hash.keys().collect();
        // Index values were written only for identities with entries: the
        // old keys' identities (those the index covers) may be stale.
        let mut stale: BTreeSet<Vec<u8>> = old
            .iter()
            .filter_map(|key| key.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes))
            .filter(|&identity| identity < INDEX_IDENTITIES)
            .map(|identity| identity.to_ne_bytes().to_vec())
            .collect();
        for key in old {
            table.hash.delete(&key).map_err(bpf_error(what()))?;
        }
        for (key, value) in &records.hash {
            table.hash.update(key, value, MapFlags::ANY).map_err(bpf_error(what()))?;
        }
        for (key, value) in &records.rows {
            table.rows.update(key, value, MapFlags::ANY).map_err(bpf_error(what()))?;
        }
        for (key, value) in &records.index {
            stale.remove(key);
            table.index.update(key, value, MapFlags::ANY).map_err(bpf_error(what()))?;
        }
        let none = vec![0u8; table.index.value_size() as usize];
        for key in stale {
            table.index.update(&key, &none, MapFlags::ANY).map_err(bpf_error(what()))?;
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

/// A direction's idle table filled with new entries, not yet read by the
/// programs: [`install_tables`] flips the selector to it. While it lives,
/// the direction cannot be staged again ([`LoadError::AlreadyStaged`]).
pub struct StagedTable {
    slot: PolicySlot,
    idle: usize,
    previous: usize,
}

/// Selector map ids with a [`StagedTable`] alive in this process.
static STAGED: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn selector_id(selector: &MapHandle) -> u32 {
    selector.info().map(|i| i.info.id).unwrap_or(0)
}

impl StagedTable {
    /// Stages `records` in `slot`'s idle table (see [`PolicySlot::stage`]).
    pub fn new(slot: PolicySlot, records: &TableRecords) -> Result<StagedTable, LoadError> {
        let id = selector_id(&slot.selector);
        let claimed = STAGED.lock().map(|mut staged| staged.insert(id)).unwrap_or(true);
        if !claimed {
            return Err(LoadError::AlreadyStaged(slot.name));
        }
        let staged = (|| {
            let previous = slot.active()?;
            let idle = slot.stage(records)?;
            Ok((previous, idle))
        })();
        match staged {
            Ok((previous, idle)) => Ok(StagedTable { slot, idle, previous }),
            Err(e) => {
                release_staged(id);
                Err(e)
            }
        }
    }
}

fn release_staged(id: u32) {
    if let Ok(mut staged) = STAGED.lock() {
        staged.remove(&id);
    }
}

impl Drop for StagedTable {
    fn drop(&mut self) {
        release_staged(selector_id(&self.slot.selector));
    }
}

/// Flips the selectors of staged tables, all or nothing: if a flip fails,
/// the ones flipped before it are put back. A flip is one array update (no
/// grace-period wait: see [`quiescence`]).
pub fn install_tables(staged: &[StagedTable]) -> Result<(), LoadError> {
    for (i, table) in staged.iter().enumerate() {
        if let Err(e) = table.slot.install(table.idle) {
            let unrolled = staged[..i].iter().filter(|done| done.slot.install(done.previous).is_err()).count();
            if unrolled > 0 {
                return Err(LoadError::Install(format!(
                    "{e}; and {unrolled} selector(s) already flipped could not be flipped back"
                )));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Flips the selectors of staged tables back to the tables they chose
/// before [`install_tables`] (a change undone after its install).
pub fn restore_tables(staged: &[StagedTable]) -> Result<(), LoadError> {
    for table in staged {
        table.slot.install(table.previous)?;
    }
    Ok(())
}

/// Replaces the tables of several directions all or nothing: every idle
/// table is filled first (invisible to the programs), then the selectors are
/// flipped ([`install_tables`]).
pub fn replace_tables(changes: Vec<(PolicySlot, &TableRecords)>) -> Result<(), LoadError> {
    let staged: Vec<StagedTable> =
        changes.into_iter().map(|(slot, records)| StagedTable::new(slot, records)).collect::<Result<_, _>>()?;
    install_tables(&staged)
}

/// When a table left by a flip may be refilled: after an RCU grace period,
/// since BPF programs run under RCU and a packet that read the selector
/// before the flip may still be reading the old table. A flip starts a
/// grace-period wait in the background (`membarrier(MEMBARRIER_CMD_GLOBAL)`
/// is `synchronize_rcu()`); refilling joins it, so single changes never wait
/// and back-to-back changes wait for the rest of one grace period.
mod quiescence {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::thread::JoinHandle;

    /// Per selector map id this process knows: the grace-period wait started
    /// by its last flip, `None` once it is over. A finished entry is kept
    /// (a selector opened again must not wait as an unknown one), until its
    /// map is gone: see [`forget_removed`].
    static PENDING: Mutex<BTreeMap<u32, Option<JoinHandle<()>>>> = Mutex::new(BTreeMap::new());

    /// Size of PENDING after the last [`forget_removed`]: the next runs when
    /// it has doubled, so the check costs O(1) per flip amortized.
    static CHECKED_AT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    const FIRST_CHECK: usize = 256;

    use super::selector_id as id;

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
            forget_removed(&mut pending);
        }
    }

    /// Drops the finished entries of selectors whose map no longer exists
    /// (endpoints removed, generations replaced), so a long-running polcd
    /// keeps one entry per live selector, not one per selector ever flipped.
    fn forget_removed(pending: &mut BTreeMap<u32, Option<JoinHandle<()>>>) {
        use std::sync::atomic::Ordering;
        if pending.len() < FIRST_CHECK.max(2 * CHECKED_AT.load(Ordering::Relaxed)) {
            return;
        }
        pending.retain(|id, wait| wait.is_some() || libbpf_rs::MapHandle::from_map_id(*id).is_ok());
        CHECKED_AT.store(pending.len(), Ordering::Relaxed);
    }

    /// How many selectors are remembered (for tests).
    #[cfg(test)]
    pub fn remembered() -> usize {
        PENDING.lock().map(|p| p.len()).unwrap_or(0)
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

/// Opens `spec`'s object and prepares it for loading: constants written,
/// map sizes overridden and, with `pin`, pin paths set (their directories
/// made).
fn open_object(spec: &LoadSpec<'_>, pin: bool) -> Result<libbpf_rs::OpenObject, LoadError> {
    let path = spec.object.to_path_buf();
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
        let mut map = map;
        if let Some((_, size)) = spec.map_sizes.iter().find(|(n, _)| *n == name) {
            map.set_max_entries(*size).map_err(bpf_error(format!("size of `{name}`")))?;
        }
        if pin {
            let dir = if name.starts_with(NODE_MAP_PREFIX) { &spec.node_pins } else { &spec.endpoint_pins };
            std::fs::create_dir_all(dir).map_err(|source| LoadError::PinDir { path: dir.clone(), source })?;
            map.set_pin_path(dir.join(&name)).map_err(bpf_error(format!("pin path of `{name}`")))?;
        }
    }
    Ok(open)
}

/// `programs` dealt round-robin into `threads` groups (fewer when there are
/// fewer programs; one group, maybe empty, at least). The object has each
/// direction's entry program and its IPv6 tail program next to each other
/// (one section per attach point), so they land in different groups: the
/// two halves of a direction's verifier work, about the same size.
fn program_groups(programs: Vec<String>, threads: usize) -> Vec<Vec<String>> {
    let count = threads.clamp(1, programs.len().max(1));
    let mut groups: Vec<Vec<String>> = (0..count).map(|_| Vec::new()).collect();
    for (i, program) in programs.into_iter().enumerate() {
        groups[i % count].push(program);
    }
    groups
}

/// Whether every node-wide map of `open` is pinned already, so a load
/// creates per-endpoint maps only. [`load_split`] undoes a failed load by
/// unpinning the maps it created, but a node map it created may meanwhile
/// be in use by another endpoint's load: the first load on a node is not
/// split (libbpf then undoes a failure itself, as for any unsplit load).
fn node_maps_pinned(spec: &LoadSpec<'_>, open: &libbpf_rs::OpenObject) -> bool {
    open.maps()
        .map(|m| m.name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(NODE_MAP_PREFIX))
        .all(|name| spec.node_pins.join(name).exists())
}

/// A load of `spec` the kernel refused, with the end of libbpf's log on
/// this thread.
fn load_error<'s>(spec: &'s LoadSpec<'_>) -> impl FnOnce(libbpf_rs::Error) -> LoadError + 's {
    |source| LoadError::Load {
        endpoint: spec.endpoint.to_string(),
        path: spec.object.to_path_buf(),
        source,
        log: take_log_tail(40),
    }
}

/// Loads `open` on this thread: creates (or reuses) its maps, then verifies
/// its autoloaded programs one after the other. On failure libbpf unpins
/// the maps it pinned.
fn load_object(spec: &LoadSpec<'_>, open: libbpf_rs::OpenObject) -> Result<Object, LoadError> {
    open.load().map_err(load_error(spec))
}

/// Loads `open` with the programs of `groups[0]` and, at the same time on
/// other threads, one more object per other group with that group's
/// programs. The maps are created (and pinned, `.rodata` written and
/// frozen) first, by `open` alone (`bpf_object__prepare`), while the other
/// threads open their objects; these then reuse every one of the maps, the
/// internal ones (`.rodata`, `.bss`) included: libbpf neither creates nor
/// fills a reused map, so every program sees the constants `open` was
/// given. On failure every object is closed and the per-endpoint pins this
/// load made are removed (the node maps were pinned before: see
/// [`node_maps_pinned`]).
fn load_split(
    spec: &LoadSpec<'_>,
    mut open: libbpf_rs::OpenObject,
    groups: &[Vec<String>],
) -> Result<(Object, Vec<Object>), LoadError> {
    let others: Vec<&String> = groups[1..].iter().flatten().collect();
    for mut program in open.progs_mut() {
        if others.iter().any(|name| program.name().to_string_lossy() == name.as_str()) {
            program.set_autoload(false);
        }
    }
    let new_pins: Vec<PathBuf> = open
        .maps()
        .map(|m| m.name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with(NODE_MAP_PREFIX) && !name.contains('.'))
        .map(|name| spec.endpoint_pins.join(name))
        .filter(|pin| !pin.exists())
        .collect();
    // The maps, as our own descriptors (`open`'s are closed if its load
    // fails while other threads still reuse them); unset if they could not
    // be made.
    let maps: OnceLock<Vec<Option<OwnedFd>>> = OnceLock::new();
    let (first, rest) = std::thread::scope(|scope| {
        let (ready, threads): (Vec<_>, Vec<_>) = groups[1..]
            .iter()
            .map(|group| {
                let (ready, made) = std::sync::mpsc::channel::<()>();
                let maps = &maps;
                let wait = move || made.recv().ok().and_then(|()| maps.get().map(Vec::as_slice));
                (ready, scope.spawn(move || load_programs(spec, group, wait)))
            })
            .unzip();
        let first = prepare(spec, &mut open).and_then(|()| {
            let _ = maps.set(map_descriptors(&open)?);
            for ready in &ready {
                // A thread that could not open its object is gone: it failed already.
                let _ = ready.send(());
            }
            load_object(spec, open)
        });
        // Threads still waiting learn that no map was made.
        drop(ready);
        let rest: Vec<Option<Result<Object, LoadError>>> = threads
            .into_iter()
            .map(|thread| {
                thread.join().unwrap_or_else(|_| {
                    let panicked = std::io::Error::other("the loading thread panicked");
                    Some(Err(load_error(spec)(panicked.into())))
                })
            })
            .collect();
        (first, rest)
    });
    let loaded = first.and_then(|first| {
        // With the maps made, every thread loaded (or tried to).
        let rest: Result<Vec<Object>, LoadError> = rest.into_iter().flatten().collect();
        Ok((first, rest?))
    });
    if loaded.is_err() {
        // Every object is closed by now: the pins are the maps' last users.
        for pin in new_pins {
            let _ = std::fs::remove_file(pin);
        }
    }
    loaded
}

/// Creates (or reuses) `open`'s maps, pins them, writes and freezes
/// `.rodata`: everything of a load but the programs.
fn prepare(spec: &LoadSpec<'_>, open: &mut libbpf_rs::OpenObject) -> Result<(), LoadError> {
    // SAFETY: `open` is an opened, not yet loaded object; prepare leaves it
    // ready for `bpf_object__load` (which then loads its programs only).
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_object__prepare(open.as_libbpf_object().as_ptr()) };
    match rc {
        0 => Ok(()),
        _ => Err(load_error(spec)(libbpf_rs::Error::from_raw_os_error(-rc))),
    }
}

/// A descriptor of each of `open`'s maps, in the object's order, after
/// `bpf_object__prepare` (`None`: a map libbpf did not create).
fn map_descriptors(open: &libbpf_rs::OpenObject) -> Result<Vec<Option<OwnedFd>>, LoadError> {
    open.maps()
        .map(|map| {
            // SAFETY: a map of a live object; libbpf returns its fd or < 0.
            let fd = unsafe { libbpf_rs::libbpf_sys::bpf_map__fd(map.as_libbpf_object().as_ptr()) };
            if fd < 0 {
                return Ok(None);
            }
            // SAFETY: the fd is open while `open` lives; we duplicate it.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let name = map.name().to_string_lossy().into_owned();
            fd.try_clone_to_owned().map(Some).map_err(|e| bpf_error(format!("duplicate `{name}`"))(e.into()))
        })
        .collect()
}

/// Opens `spec`'s object again and loads the programs of `group` from it
/// (on the calling thread) with the maps `wait` gives as its maps, map for
/// map; `None` (not loaded) when `wait` gives none.
fn load_programs<'m>(
    spec: &LoadSpec<'_>,
    group: &[String],
    wait: impl FnOnce() -> Option<&'m [Option<OwnedFd>]>,
) -> Option<Result<Object, LoadError>> {
    let _ = take_log_tail(0);
    let opened = ObjectBuilder::default()
        .open_file(spec.object)
        .map_err(|source| LoadError::Open { path: spec.object.to_path_buf(), source });
    let mut open = match opened {
        Ok(open) => open,
        Err(e) => return Some(Err(e)),
    };
    for mut program in open.progs_mut() {
        let wanted = group.iter().any(|name| program.name().to_string_lossy() == name.as_str());
        program.set_autoload(wanted);
    }
    let maps = wait()?;
    Some(reuse_maps(&mut open, maps).and_then(|()| load_object(spec, open)))
}

/// Makes `open` use `maps`, map for map, unpinned (the first object pinned
/// them).
fn reuse_maps(open: &mut libbpf_rs::OpenObject, maps: &[Option<OwnedFd>]) -> Result<(), LoadError> {
    for (mut map, fd) in open.maps_mut().zip(maps) {
        let name = map.name().to_string_lossy().into_owned();
        // SAFETY: a map of an opened object; a null path clears its pin path.
        let rc =
            unsafe { libbpf_rs::libbpf_sys::bpf_map__set_pin_path(map.as_libbpf_object().as_ptr(), std::ptr::null()) };
        if rc != 0 {
            return Err(bpf_error(format!("clear the pin path of `{name}`"))(libbpf_rs::Error::from_raw_os_error(-rc)));
        }
        match fd {
            Some(fd) => map.reuse_fd(fd.as_fd()).map_err(bpf_error(format!("reuse `{name}`")))?,
            None => map.set_autocreate(false).map_err(bpf_error(format!("skip `{name}`")))?,
        }
    }
    Ok(())
}

/// What each direction's programs would be made of if `spec` were loaded
/// ([`Direction::BOTH`] order; see [`crate::shape`]). Opens the object
/// only: no syscalls.
pub fn shapes_of(spec: &LoadSpec<'_>) -> Result<[Option<DirectionShape>; 2], LoadError> {
    let open = open_object(spec, false)?;
    Ok(shapes_of_open(spec, &open))
}

fn shapes_of_open(spec: &LoadSpec<'_>, open: &libbpf_rs::OpenObject) -> [Option<DirectionShape>; 2] {
    shape::direction_shapes(&std::fs::read(spec.object).unwrap_or_default(), &open_maps(open))
}

/// The definitions of an opened object's maps (with the load's overrides)
/// and the initial values of its internal maps, for [`shape::direction_shapes`].
fn open_maps(open: &libbpf_rs::OpenObject) -> shape::OpenMaps {
    let mut defs = Vec::new();
    let mut internal = Vec::new();
    for map in open.maps() {
        let name = map.name().to_string_lossy().into_owned();
        // libbpf names an internal map after the object (its first bytes)
        // and the section: `<object>.rodata`. Objects differ by name.
        if let Some(at) = name.find('.') {
            internal.push((name[at..].to_string(), map.initial_value().map(<[u8]>::to_vec).unwrap_or_default()));
        }
        defs.push(shape::MapDef {
            name,
            map_type: map.map_type() as u32,
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
        });
    }
    shape::OpenMaps { defs, internal }
}

/// Makes `open` keep `direction` of a running load pinned under `pins`: its
/// programs are not loaded, and the per-endpoint maps they use are the
/// running ones (libbpf pins them again at the object's own pin paths).
/// Changes nothing and says `false` when a running map cannot be opened
/// (the direction is then loaded).
fn keep_direction(
    open: &mut libbpf_rs::OpenObject,
    direction: Direction,
    shapes: &[Option<DirectionShape>; 2],
    pins: &Path,
) -> Result<bool, LoadError> {
    let index = Direction::BOTH.iter().position(|d| *d == direction).unwrap_or(0);
    let Some(shape) = &shapes[index] else { return Ok(false) };
    let running: Option<Vec<(&str, MapHandle)>> = shape
        .map_names()
        .filter(|name| !name.starts_with(NODE_MAP_PREFIX))
        .map(|name| MapHandle::from_pinned_path(pins.join(name)).ok().map(|handle| (name, handle)))
        .collect();
    let Some(running) = running else { return Ok(false) };
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        let Some((_, handle)) = running.iter().find(|(n, _)| *n == name) else { continue };
        // A failure here leaves the object half pointed at the running
        // maps: the load fails rather than loading into them.
        map.reuse_fd(handle.as_fd()).map_err(bpf_error(format!("reuse the running `{name}`")))?;
    }
    for mut program in open.progs_mut() {
        if Direction::of_program(&program.name().to_string_lossy()) == Some(direction) {
            program.set_autoload(false);
        }
    }
    Ok(true)
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

#[cfg(test)]
#[allow(clippy::panic)]
mod counter_tests {
    use super::*;
    use libbpf_rs::MapType;

    /// A map of this process only (freed with its handle).
    fn create_map(kind: MapType, name: &str, value_size: u32, entries: u32) -> MapHandle {
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        MapHandle::create(kind, Some(name), 4, value_size, entries, &opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A per-CPU array larger than one batch, with counts on every CPU at
    /// both ends and across the batch boundary: all read, summed per index.
    #[test]
    fn batched_reads_cover_every_entry_and_cpu() {
        if !crate::netlab::require_kernel("batched_reads_cover_every_entry_and_cpu") {
            return;
        }
        let map = create_map(MapType::PercpuArray, "polc_test_ctr", 16, 2600);
        let cpus = libbpf_rs::num_possible_cpus().unwrap_or_else(|e| panic!("{e}"));
        let counted = [0u32, 1023, 1024, 1025, 2047, 2048, 2599];
        for index in counted {
            let values: Vec<Vec<u8>> = (0..cpus as u64)
                .map(|cpu| [(cpu + 1).to_ne_bytes(), (100 * (cpu + 1)).to_ne_bytes()].concat())
                .collect();
            map.update_percpu(&index.to_ne_bytes(), &values, MapFlags::ANY).unwrap_or_else(|e| panic!("{e}"));
        }
        let read = read_percpu_counters(&map).unwrap_or_else(|e| panic!("{e}"));
        let n = cpus as u64;
        let expected = Counter { packets: n * (n + 1) / 2, bytes: 100 * n * (n + 1) / 2 };
        assert_eq!(read, counted.iter().map(|i| (*i, expected)).collect::<Vec<_>>());
    }

    /// A long-running polcd flips selectors of endpoints that come and go:
    /// the grace-period bookkeeping forgets the ones whose map is gone.
    #[test]
    fn grace_period_bookkeeping_forgets_removed_selectors() {
        if !crate::netlab::require_kernel("grace_period_bookkeeping_forgets_removed_selectors") {
            return;
        }
        let kept = create_map(MapType::Array, "polc_test_sel", 4, 1);
        quiescence::flipped(&kept);
        let flips = 300;
        for _ in 0..flips {
            let selector = create_map(MapType::Array, "polc_test_sel", 4, 1);
            quiescence::flipped(&selector);
            quiescence::wait(&selector);
        } // each selector's map is freed here
        assert!(quiescence::remembered() < flips / 2, "{} remembered after {flips} flips", quiescence::remembered());
        // A live selector is still known: opening it again does not wait as an unknown one.
        let before = quiescence::remembered();
        quiescence::note_unknown(&kept);
        assert_eq!(quiescence::remembered(), before);
    }

    /// Two stagings of one direction before an install would share its idle
    /// table: the second is refused until the first is installed or dropped.
    #[test]
    fn a_direction_is_staged_once_at_a_time() {
        if !crate::netlab::require_kernel("a_direction_is_staged_once_at_a_time") {
            return;
        }
        let table = |name: &str| TableMaps {
            hash: create_map(MapType::Hash, name, 4, 8),
            index: create_map(MapType::Array, name, 4, 8),
            rows: create_map(MapType::Array, name, 4, 8),
        };
        let slot = || PolicySlot {
            name: "ep_pol_in",
            selector: create_map(MapType::Array, "polc_test_sel", 4, 1),
            tables: [table("polc_test_a"), table("polc_test_b")],
        };
        let one = slot();
        // Another handle on the same maps (as a later change opens them from the pins).
        let reopen = |map: &MapHandle| {
            let id = map.info().map(|i| i.info.id).unwrap_or_else(|e| panic!("{e}"));
            MapHandle::from_map_id(id).unwrap_or_else(|e| panic!("{e}"))
        };
        let again = |slot: &PolicySlot| PolicySlot {
            name: slot.name,
            selector: reopen(&slot.selector),
            tables: [0, 1].map(|i| TableMaps {
                hash: reopen(&slot.tables[i].hash),
                index: reopen(&slot.tables[i].index),
                rows: reopen(&slot.tables[i].rows),
            }),
        };
        let records = TableRecords {
            hash: vec![(1u32.to_ne_bytes().to_vec(), 7u32.to_ne_bytes().to_vec())],
            index: Vec::new(),
            rows: Vec::new(),
        };
        let first = StagedTable::new(again(&one), &records).unwrap_or_else(|e| panic!("{e}"));
        match StagedTable::new(again(&one), &records) {
            Err(LoadError::AlreadyStaged("ep_pol_in")) => {}
            other => panic!("expected AlreadyStaged, got {:?}", other.map(|s| s.idle)),
        }
        // Another direction (another selector) stages meanwhile.
        let other = slot();
        assert!(StagedTable::new(again(&other), &records).is_ok());
        install_tables(std::slice::from_ref(&first)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(one.active().unwrap_or_else(|e| panic!("{e}")), first.idle);
        drop(first);
        let next = StagedTable::new(again(&one), &records).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(next.idle, 1 - one.active().unwrap_or_else(|e| panic!("{e}")), "the table left by the flip");
    }
}
