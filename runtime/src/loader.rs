//! The kernel seam: everything that makes BPF syscalls for an endpoint
//! object goes through here (libbpf-rs). Callers hand in built artifacts:
//! an object file, `.rodata` constants by name, where to pin; they get back
//! a [`LoadedEndpoint`] whose maps they fill and whose programs they run.

use crate::datapath::{self, Counter, Direction, MetricsKey, VerdictEvent, NODE_MAP_PREFIX};
use crate::parallel::map_on_threads;
use crate::seam::{EndpointMaps, PolicyTables};
use libbpf_rs::btf::types::DataSec;
use libbpf_rs::btf::BtfType;
use libbpf_rs::{
    AsRawLibbpf, Btf, MapCore, MapFlags, MapHandle, MapType, Object, ObjectBuilder, PrintLevel, ProgramInput,
    RingBuffer, RingBufferBuilder,
};
use std::cell::RefCell;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Once;

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
pub struct LoadedEndpoint {
    object: Object,
    /// The rule id of each counter slot (slot 1 first), from the build.
    rule_slots: Vec<u32>,
    /// Per policy map (outer map name), how to create its tables: read from
    /// the object before load (libbpf drops the inner map template then).
    table_specs: Vec<(String, TableSpec)>,
}

impl LoadedEndpoint {
    pub fn load(spec: &LoadSpec<'_>) -> Result<LoadedEndpoint, LoadError> {
        LoadedEndpoint::load_with_tables(spec, &[])
    }

    /// Loads the object with its policy tables in place: for each direction
    /// in `tables`, its table is created and filled and its policy map made
    /// before libbpf loads the object (which then uses that map). Installing
    /// the table in the map waits for an RCU grace period; it runs while the
    /// verifier checks the programs instead of after. A direction in
    /// `tables` without a policy map in the object is an error.
    pub fn load_with_tables(
        spec: &LoadSpec<'_>,
        tables: &[(Direction, &[TableRecord])],
    ) -> Result<LoadedEndpoint, LoadError> {
        let path = spec.object.to_path_buf();
        capture_libbpf_messages();
        let _ = take_log_tail(0);
        let mut open = ObjectBuilder::default()
            .open_file(spec.object)
            .map_err(|source| LoadError::Open { path: path.clone(), source })?;

        let offsets = rodata_offsets(&open)?;
        let mut table_specs = Vec::new();
        let mut preset: Vec<(PolicySlot, MapHandle)> = Vec::new();
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
            if let Some(table_spec) = TableSpec::of_outer(&map) {
                table_specs.push((name.clone(), table_spec));
                if let Some((_, records)) = tables.iter().find(|(d, _)| d.policy_map() == name) {
                    let table = new_table(&name, table_spec, records)?;
                    let slot = PolicySlot::create(&map, table_spec, &table)?;
                    map.reuse_fd(slot.outer.as_fd()).map_err(bpf_error(format!("reuse `{name}`")))?;
                    preset.push((slot, table));
                }
            }
            let dir = if name.starts_with(NODE_MAP_PREFIX) { &spec.node_pins } else { &spec.endpoint_pins };
            std::fs::create_dir_all(dir).map_err(|source| LoadError::PinDir { path: dir.clone(), source })?;
            if let Some((_, size)) = spec.map_sizes.iter().find(|(n, _)| *n == name) {
                map.set_max_entries(*size).map_err(bpf_error(format!("size of `{name}`")))?;
            }
            map.set_pin_path(dir.join(&name)).map_err(bpf_error(format!("pin path of `{name}`")))?;
        }

        if let Some((direction, _)) = tables.iter().find(|(d, _)| !preset.iter().any(|(s, _)| s.name == d.policy_map()))
        {
            return Err(LoadError::NoMap(direction.policy_map().to_string()));
        }

        // The tables' installs wait for a grace period each: on other
        // threads, while this one loads (the verifier).
        let (object, installed) = std::thread::scope(|scope| {
            let installs = scope.spawn(|| {
                let installs = preset.iter().collect();
                map_on_threads(installs, preset.len(), |(slot, table)| slot.install(table))
            });
            let object = open.load();
            let log = take_log_tail(40);
            let installed = installs.join().unwrap_or_default();
            (
                object.map_err(|source| LoadError::Load { endpoint: spec.endpoint.to_string(), path, source, log }),
                installed,
            )
        });
        let object = object?;
        if installed.len() != preset.len() {
            return Err(LoadError::Install("a table install panicked".to_string()));
        }
        for result in installed {
            result.unwrap_or_else(|| Err(LoadError::Install("a table install panicked".to_string())))?;
        }
        let loaded = LoadedEndpoint { object, rule_slots: Vec::new(), table_specs };
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
        let name = direction.policy_map();
        let Some((_, spec)) = self.table_specs.iter().find(|(n, _)| n == name) else { return Ok(None) };
        Ok(Some(PolicySlot { name, outer: self.map(name)?, spec: *spec }))
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
    fn replace_table(&self, direction: Direction, records: &[TableRecord]) -> Result<(), LoadError> {
        let slot = self.policy_slot(direction)?.ok_or_else(|| LoadError::NoMap(direction.policy_map().to_string()))?;
        replace_tables(vec![(slot, records)])
    }
}

/// How to create one policy table (the inner map of a direction's outer
/// map). The kernel accepts an inner map only if its type, key and value
/// sizes and flags equal the template's; `max_entries` is the capacity a
/// table is created with, so an entry set over it fails while filling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl TableSpec {
    /// The inner map template of an open map of type `ARRAY_OF_MAPS`.
    fn of_outer(map: &libbpf_rs::OpenMapMut<'_>) -> Option<TableSpec> {
        if map.map_type() != MapType::ArrayOfMaps {
            return None;
        }
        // SAFETY: the pointer is the open map's own; libbpf returns its inner
        // map template (or null), valid until the object is loaded.
        let inner = unsafe { libbpf_rs::libbpf_sys::bpf_map__inner_map(map.as_libbpf_object().as_ptr()) };
        if inner.is_null() {
            return None;
        }
        // SAFETY: `inner` is a valid, non-null `struct bpf_map` (see above).
        unsafe {
            Some(TableSpec {
                map_type: MapType::from(libbpf_rs::libbpf_sys::bpf_map__type(inner)),
                key_size: libbpf_rs::libbpf_sys::bpf_map__key_size(inner),
                value_size: libbpf_rs::libbpf_sys::bpf_map__value_size(inner),
                max_entries: libbpf_rs::libbpf_sys::bpf_map__max_entries(inner),
                flags: libbpf_rs::libbpf_sys::bpf_map__map_flags(inner),
            })
        }
    }

    /// The spec of an existing table (for an endpoint this process did not load).
    fn of_table(table: &MapHandle) -> Result<TableSpec, LoadError> {
        let info = table.info().map_err(bpf_error("policy table info"))?;
        Ok(TableSpec {
            map_type: table.map_type(),
            key_size: table.key_size(),
            value_size: table.value_size(),
            max_entries: table.max_entries(),
            flags: info.info.map_flags,
        })
    }
}

/// A policy table entry as bytes: (key, value) in the table's C layout.
pub type TableRecord = (Vec<u8>, Vec<u8>);

/// One enforced direction's policy: the outer map (`ep_pol_in` or
/// `ep_pol_eg`) whose single slot holds the table the program reads.
pub struct PolicySlot {
    name: &'static str,
    outer: MapHandle,
    spec: TableSpec,
}

impl PolicySlot {
    /// The slot of a direction pinned at `path` (e.g. by a previous polcd),
    /// with the spec of the table installed in it.
    pub fn open_pinned(direction: Direction, path: &Path) -> Result<PolicySlot, LoadError> {
        let name = direction.policy_map();
        let outer = MapHandle::from_pinned_path(path).map_err(bpf_error(format!("open `{}`", path.display())))?;
        let installed = installed_table(name, &outer)?
            .ok_or_else(|| LoadError::NoMap(format!("{} (no table installed)", path.display())))?;
        Ok(PolicySlot { name, outer, spec: TableSpec::of_table(&installed)? })
    }

    /// A new, empty slot for the outer map `map` of an object not loaded
    /// yet (for [`LoadedEndpoint::load_with_tables`]).
    fn create(map: &libbpf_rs::OpenMapMut<'_>, spec: TableSpec, template: &MapHandle) -> Result<PolicySlot, LoadError> {
        let name = map.name().to_string_lossy().into_owned();
        let name = Direction::BOTH
            .into_iter()
            .map(Direction::policy_map)
            .find(|n| *n == name)
            .ok_or_else(|| LoadError::NoMap(name.clone()))?;
        // The outer map takes any table shaped like `template`.
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            map_flags: map.map_flags(),
            inner_map_fd: std::os::fd::AsRawFd::as_raw_fd(&template.as_fd()) as u32,
            ..Default::default()
        };
        let outer =
            MapHandle::create(map.map_type(), Some(name), map.key_size(), map.value_size(), map.max_entries(), &opts)
                .map_err(bpf_error(format!("create `{name}`")))?;
        Ok(PolicySlot { name, outer, spec })
    }

    /// The table the program reads now, if any.
    pub fn installed(&self) -> Result<Option<MapHandle>, LoadError> {
        installed_table(self.name, &self.outer)
    }

    /// How many entries a table of this direction holds.
    pub fn capacity(&self) -> u32 {
        self.spec.max_entries
    }

    /// A new table holding exactly `records`, not yet visible to the program.
    pub fn stage(&self, records: &[TableRecord]) -> Result<MapHandle, LoadError> {
        new_table(self.name, self.spec, records)
    }

    /// Makes `table` the one the program reads, in one map update; packets
    /// already past the slot lookup finish with the table they saw.
    pub fn install(&self, table: &MapHandle) -> Result<(), LoadError> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&table.as_fd());
        self.outer
            .update(&datapath::POLICY_TABLE_SLOT.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(bpf_error(format!("install a table in `{}`", self.name)))
    }
}

/// A table named after the policy map `name`, holding exactly `records`.
fn new_table(name: &str, spec: TableSpec, records: &[TableRecord]) -> Result<MapHandle, LoadError> {
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: spec.flags,
        ..Default::default()
    };
    let table_name = format!("{name}_t");
    let table =
        MapHandle::create(spec.map_type, Some(&table_name), spec.key_size, spec.value_size, spec.max_entries, &opts)
            .map_err(bpf_error(format!("create a table for `{}`", name)))?;
    for (key, value) in records {
        table.update(key, value, MapFlags::ANY).map_err(bpf_error(format!(
            "fill a table for `{}` ({} entries)",
            name,
            records.len()
        )))?;
    }
    Ok(table)
}

/// The table in an outer map's slot (the kernel answers a lookup with the
/// inner map's id).
fn installed_table(name: &str, outer: &MapHandle) -> Result<Option<MapHandle>, LoadError> {
    let found = outer
        .lookup(&datapath::POLICY_TABLE_SLOT.to_ne_bytes(), MapFlags::ANY)
        .map_err(bpf_error(format!("lookup in `{name}`")))?;
    let Some(id) = found.and_then(|v| v.get(..4).and_then(|b| b.try_into().ok())).map(u32::from_ne_bytes) else {
        return Ok(None);
    };
    let table = MapHandle::from_map_id(id).map_err(bpf_error(format!("open the table of `{name}`")))?;
    Ok(Some(table))
}

/// A new table for one slot, created and filled but not yet installed,
/// with the table it is to replace.
pub struct StagedTable {
    slot: PolicySlot,
    table: MapHandle,
    previous: Option<MapHandle>,
}

impl StagedTable {
    /// Stages `records` for `slot` (see [`PolicySlot::stage`]).
    pub fn new(slot: PolicySlot, records: &[TableRecord]) -> Result<StagedTable, LoadError> {
        let table = slot.stage(records)?;
        let previous = slot.installed()?;
        Ok(StagedTable { slot, table, previous })
    }
}

/// Installs staged tables, all at once (each install waits for an RCU grace
/// period, and concurrent waits share one); if an install fails, the slots
/// installed get their previous tables back. A replaced table is freed by
/// the kernel once no program holds it.
pub fn install_tables(staged: &[StagedTable]) -> Result<(), LoadError> {
    let results = map_on_threads(staged.iter().collect(), staged.len(), |new| new.slot.install(&new.table));
    let mut first_error = None;
    for result in &results {
        match result {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            None => {
                first_error.get_or_insert_with(|| "a table install panicked".to_string());
            }
        }
    }
    let Some(error) = first_error else { return Ok(()) };
    for (done, result) in staged.iter().zip(&results) {
        if let (Some(Ok(())), Some(previous)) = (result, &done.previous) {
            let _ = done.slot.install(previous);
        }
    }
    Err(LoadError::Install(error))
}

/// Replaces the tables of several directions all or nothing: every new
/// table is created and filled first (invisible to the programs), then the
/// slots are flipped ([`install_tables`]).
pub fn replace_tables(changes: Vec<(PolicySlot, &[TableRecord])>) -> Result<(), LoadError> {
    let staged: Vec<StagedTable> =
        changes.into_iter().map(|(slot, records)| StagedTable::new(slot, records)).collect::<Result<_, _>>()?;
    install_tables(&staged)
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

#[cfg(test)]
#[allow(clippy::panic)]
mod counter_tests {
    use super::*;
    use libbpf_rs::MapType;

    /// A per-CPU array larger than one batch, with counts on every CPU at
    /// both ends and across the batch boundary: all read, summed per index.
    #[test]
    fn batched_reads_cover_every_entry_and_cpu() {
        if !crate::netlab::require_kernel("batched_reads_cover_every_entry_and_cpu") {
            return;
        }
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let map = MapHandle::create(MapType::PercpuArray, Some("polc_test_ctr"), 4, 16, 2600, &opts)
            .unwrap_or_else(|e| panic!("{e}"));
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
}
