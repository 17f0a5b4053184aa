//! One endpoint under enforcement, and policy changes applied to it all or
//! nothing.
//!
//! A change builds a new *generation*: the new object is loaded with its
//! own per-endpoint maps (pinned under `<endpoint dir>/gen-<N>/`, so the new
//! maps never alias the ones the running programs read), its tail calls and
//! policy maps are filled completely, and only then are the endpoint's two
//! tcx links switched to it ([`Attachment::update`]). Until that moment the
//! old programs, with their old maps, keep enforcing; any failure before it
//! (an object the verifier rejects, a map update that fails) removes the new
//! generation and leaves the old one as it was.
//!
//! A change of code shape often changes one direction's programs only (an
//! ingress rule set becoming enforced, a deny rule in the only enforced
//! direction): a new generation keeps each direction whose programs would
//! be the same ([`crate::shape`]) instead of loading it again. The kept
//! direction's link keeps its program, and the new generation uses (and
//! pins again under its own directory) the maps that program reads: its
//! policy tables, its prog array and the counter array both directions
//! share. Its new policy entries are staged in its idle table and installed
//! with the switch, as in a table swap. Only the loaded directions' links
//! are updated; each loaded direction has a fresh prog array, filled.
//!
//! A change of table entries only ([`Enforced::swap_tables`]) loads
//! nothing: each enforced direction has two policy tables and a selector;
//! the idle table is filled completely, then the selector is flipped with
//! one map update. The program reads the selector once per packet, so every
//! packet sees one whole table.
//!
//! Node-wide maps (ipcache, conntrack, events) are shared by every
//! generation through the node pin directory: a swap keeps connections.
//!
//! Pin layout, under one root (e.g. `/sys/fs/bpf/polc/<node>`):
//!
//! ```text
//! node/                          node_ipcache, node_ipc_host4/6, node_ct4/6, node_events
//! endpoints/<name>/link_from_ep  tcx link on the veth's ingress (egress policy)
//! endpoints/<name>/link_to_ep    tcx link on the veth's egress (ingress policy)
//! endpoints/<name>/gen-<N>/      that generation's maps: ep_pol_in, ep_pol_eg
//!                                (selectors), ep_pol_in_a/_b, ep_pol_eg_a/_b
//!                                (tables, each with its index `_idx` and rows
//!                                `_row`), ep_calls_in, ep_calls_eg, ep_metrics
//!                                (a kept direction's maps are also pinned
//!                                under the generation it came from, until
//!                                that one is unpinned at the switch)
//! ```
//!
//! So the newest generation directory always holds every map the running
//! programs read, whichever generation loaded them.

use crate::attach::{AttachError, Attachment, Device};
use crate::datapath::{Direction, METRICS_MAP};
use crate::loader::{
    all_cpus, install_tables, restore_tables, LoadError, LoadSpec, LoadedEndpoint, PolicySlot, Running, StagedTable,
    TableRecords,
};
use crate::seam::{self, PolicyEntry};
use libbpf_rs::{MapCore, MapHandle};
use std::path::{Path, PathBuf};

/// What a build hands the runtime for one endpoint.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub endpoint: String,
    pub object: PathBuf,
    /// `.rodata` values by variable name.
    pub constants: Vec<(String, Vec<u8>)>,
    /// Map name -> max entries, overriding the object's (the counter array).
    pub map_sizes: Vec<(String, u32)>,
    /// The rule id of each counter slot (index 0: slot 1).
    pub rule_slots: Vec<u32>,
    /// Per direction, the policy map entries; `None` when not enforced.
    pub ingress: Option<Vec<PolicyEntry>>,
    pub egress: Option<Vec<PolicyEntry>>,
    /// Per direction ([`Direction::BOTH`] order), the features its programs
    /// are compiled from ([`polc::codegen::header::direction_code_shape`]),
    /// when every object comes from one builder (the same templates, node
    /// header and clang); `None` when not known (a bundle). A new generation
    /// keeps a direction whose features and maps did not change even when
    /// clang laid its code out differently (see [`crate::shape`]).
    pub direction_shapes: Option<[String; 2]>,
}

impl Artifact {
    fn entries(&self, direction: Direction) -> Option<&[PolicyEntry]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("cannot read `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A table-only swap was asked for a change that needs a new program:
    /// load a new generation instead ([`Enforced::swap`]).
    #[error("endpoint `{endpoint}`: a table swap cannot apply this change ({why}); it needs a program swap")]
    NeedsProgramSwap { endpoint: String, why: String },
}

/// An endpoint's new policy tables, filled but not read by its programs
/// until [`Enforced::install_tables`].
pub struct StagedTables {
    tables: Vec<StagedTable>,
    rule_slots: Vec<u32>,
}

/// A loaded generation of an endpoint's programs and maps.
pub struct Generation {
    pub number: u64,
    pub loaded: LoadedEndpoint,
    /// The object file it was loaded from.
    pub object: PathBuf,
    pins: PathBuf,
    /// The new entries of the directions kept from the running generation,
    /// in their idle tables: installed with the switch.
    staged: Vec<StagedTable>,
}

impl Generation {
    /// Drops a generation that will not run, with its pins.
    pub fn discard(self) {
        let pins = self.pins.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(pins);
    }
}

/// The directory of generation `number`.
fn generation_dir(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("gen-{number}"))
}

/// Generation numbers pinned under an endpoint directory.
fn pinned_generations(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("gen-")).and_then(|n| n.parse().ok()))
        .collect();
    out.sort_unstable();
    out
}

/// The generation under `dir` whose maps the programs `program_ids` read.
/// A process killed between loading a generation and switching to it
/// leaves that generation pinned and not running, so the newest is not
/// always the one. Each direction's prog array and policy selector are the
/// running ones in a kept direction and fresh in a loaded one: the
/// generation with the most of them that the running programs use, then
/// the fewest they do not use, then the newest, is taken (a kill between
/// the two link updates of a switch leaves a tie: the newest). 0 when none
/// is pinned.
fn running_generation(dir: &Path, program_ids: &[u32]) -> u64 {
    let used: Vec<u32> = program_ids.iter().flat_map(|id| crate::attach::program_map_ids(*id)).collect();
    let score = |number: u64| {
        let maps = Direction::BOTH.iter().flat_map(|d| [d.prog_array(), d.policy_map()]);
        let ids: Vec<u32> = maps
            .filter_map(|name| MapHandle::from_pinned_path(generation_dir(dir, number).join(name)).ok())
            .filter_map(|handle| handle.info().ok().map(|info| info.info.id))
            .collect();
        let in_use = ids.iter().filter(|id| used.contains(id)).count();
        (in_use, std::cmp::Reverse(ids.len() - in_use), number)
    };
    pinned_generations(dir).into_iter().max_by_key(|number| score(*number)).unwrap_or(0)
}

/// Loads `artifact` as generation `number` under `dir` and fills its maps
/// completely. Over a `running` generation of the endpoint (see
/// [`Enforced::running`]), the directions whose programs would not change
/// are kept, not loaded: their new entries are staged in the running
/// tables' idle halves, installed by [`Enforced::switch_to`]. On failure,
/// nothing of it is left pinned. `program_threads`: see
/// [`LoadSpec::program_threads`] ([`crate::loader::all_cpus`] for a load
/// that runs alone).
pub fn load_generation(
    artifact: &Artifact,
    node_pins: &Path,
    dir: &Path,
    number: u64,
    running: Option<&Running>,
    program_threads: usize,
) -> Result<Generation, SwapError> {
    let pins = generation_dir(dir, number);
    // A leftover of a crashed attempt would be reused by name: start clean.
    let _ = std::fs::remove_dir_all(&pins);
    let spec = LoadSpec {
        endpoint: &artifact.endpoint,
        object: &artifact.object,
        constants: &artifact.constants,
        map_sizes: &artifact.map_sizes,
        node_pins: node_pins.to_path_buf(),
        endpoint_pins: pins.clone(),
        program_threads,
    };
    // The policy tables go in with the load (their installs overlap the
    // verifier's work).
    let records: Vec<(Direction, TableRecords)> = Direction::BOTH
        .into_iter()
        .filter_map(|d| artifact.entries(d).map(|entries| (d, seam::policy_records(entries))))
        .collect();
    let tables: Vec<(Direction, &TableRecords)> = records.iter().map(|(d, r)| (*d, r)).collect();
    let declared = artifact.direction_shapes.as_ref();
    let filled = LoadedEndpoint::load_over(&spec, &tables, running, declared).and_then(|mut loaded| {
        loaded.set_rule_slots(artifact.rule_slots.clone());
        let staged = stage_kept(&loaded, &tables)?;
        Ok((loaded, staged))
    });
    match filled {
        Ok((loaded, staged)) => Ok(Generation { number, loaded, object: artifact.object.clone(), pins, staged }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&pins);
            Err(e.into())
        }
    }
}

/// Stages the entries of the directions `loaded` kept in their (running)
/// idle tables.
fn stage_kept(loaded: &LoadedEndpoint, tables: &[(Direction, &TableRecords)]) -> Result<Vec<StagedTable>, LoadError> {
    let mut staged = Vec::new();
    for direction in loaded.kept() {
        let slot = loaded.policy_slot(direction)?;
        match (slot, tables.iter().find(|(d, _)| *d == direction)) {
            (Some(slot), Some((_, records))) => staged.push(StagedTable::new(slot, records)?),
            (None, None) => {}
            // A kept direction has the running maps, so this cannot be;
            // refuse rather than run with tables of the wrong kind.
            _ => return Err(LoadError::NoMap(direction.policy_map().to_string())),
        }
    }
    Ok(staged)
}

/// An endpoint under enforcement: its links and its current generation.
pub struct Enforced {
    dir: PathBuf,
    node_pins: PathBuf,
    attachment: Attachment,
    /// `None` after adoption: the programs run, but this process did not
    /// load them (the next swap loads a fresh generation).
    current: Option<Generation>,
    generation: u64,
}

impl Enforced {
    /// Loads `artifact`, fills it and attaches it to `device`; everything is
    /// pinned under `dir` (node maps under `node_pins`).
    pub fn start(artifact: &Artifact, device: &Device, node_pins: &Path, dir: &Path) -> Result<Enforced, SwapError> {
        let generation = load_generation(artifact, node_pins, dir, 1, None, all_cpus())?;
        Enforced::attach(generation, device, node_pins, dir)
    }

    /// Attaches a loaded (and filled) generation to `device`; on failure its
    /// pins are removed.
    pub fn attach(
        generation: Generation,
        device: &Device,
        node_pins: &Path,
        dir: &Path,
    ) -> Result<Enforced, SwapError> {
        match Attachment::attach(&generation.loaded, device, dir) {
            Ok(attachment) => Ok(Enforced {
                dir: dir.to_path_buf(),
                node_pins: node_pins.to_path_buf(),
                attachment,
                generation: generation.number,
                current: Some(generation),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&generation.pins);
                Err(e.into())
            }
        }
    }

    /// Takes over an endpoint a previous process left enforced under `dir`
    /// (`netns`: where its device is, for tc filters).
    pub fn adopt(node_pins: &Path, dir: &Path, netns: Option<&str>) -> Result<Enforced, SwapError> {
        let attachment = Attachment::adopt(dir, netns)?;
        // Asking may fail (a tc filter whose device is gone): then no
        // program says, and the newest pinned generation is taken.
        let program_ids: Vec<u32> =
            attachment.program_ids().unwrap_or_default().into_iter().map(|(_, id)| id).collect();
        let generation = running_generation(dir, &program_ids);
        Ok(Enforced {
            dir: dir.to_path_buf(),
            node_pins: node_pins.to_path_buf(),
            attachment,
            current: None,
            generation,
        })
    }

    /// The hook the programs run on: `tcx` or `tc`.
    pub fn hook(&self) -> &'static str {
        self.attachment.hook()
    }

    /// The generation the links run (0 if unknown).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The object the links run, when this process loaded it.
    pub fn object(&self) -> Option<&Path> {
        self.current.as_ref().map(|g| g.object.as_path())
    }

    /// The loaded generation, when this process loaded it.
    pub fn current(&self) -> Option<&LoadedEndpoint> {
        self.current.as_ref().map(|g| &g.loaded)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the links still enforce on `device` (see [`Attachment::is_live_on`]).
    pub fn is_live_on(&self, device: &Device) -> bool {
        self.attachment.is_live_on(device)
    }

    /// The number the next generation of this endpoint gets.
    pub fn next_generation(&self) -> u64 {
        self.generation + 1
    }

    /// The running generation as the next one may keep directions of it
    /// (`None` after adoption: this process does not know what its
    /// programs are made of, so the next generation loads both).
    pub fn running(&self) -> Option<Running> {
        let current = self.current.as_ref()?;
        Some(current.loaded.running(&current.pins))
    }

    /// The kernel id of the program each direction runs now ([`Direction::BOTH`] order).
    pub fn program_ids(&self) -> Result<Vec<(Direction, u32)>, SwapError> {
        Ok(self.attachment.program_ids()?)
    }

    /// Applies a new artifact all or nothing: load and fill a new generation
    /// (keeping the directions whose programs do not change), then switch
    /// the links to it. On error the running generation stays.
    pub fn swap(&mut self, artifact: &Artifact) -> Result<(), SwapError> {
        let running = self.running();
        let number = self.next_generation();
        let next = load_generation(artifact, &self.node_pins, &self.dir, number, running.as_ref(), all_cpus())?;
        self.switch_to(next)
    }

    /// Replaces both directions' policy tables of the running generation with
    /// `artifact`'s entries, without loading or switching programs: the
    /// tables are staged ([`Enforced::stage_tables`]), then installed
    /// ([`Enforced::install_tables`]). On error the running tables stay.
    pub fn swap_tables(&mut self, artifact: &Artifact) -> Result<(), SwapError> {
        let staged = self.stage_tables(artifact)?;
        self.install_tables(staged)
    }

    /// Creates and fills new policy tables for `artifact`, invisible to the
    /// running programs until [`Enforced::install_tables`]; dropping them
    /// instead changes nothing. A caller applying one change to several
    /// endpoints stages every table before installing any.
    ///
    /// The artifact must have the running object's code shape (the caller
    /// checks); a different set of enforced directions, or more counter
    /// slots than the running counter array holds, is refused with
    /// [`SwapError::NeedsProgramSwap`]. Works on an adopted endpoint too (the
    /// pinned policy maps of the running generation are opened).
    pub fn stage_tables(&self, artifact: &Artifact) -> Result<StagedTables, SwapError> {
        let refuse = |why: String| SwapError::NeedsProgramSwap { endpoint: artifact.endpoint.clone(), why };
        let pins = generation_dir(&self.dir, self.generation);
        let mut changes = Vec::new();
        for direction in Direction::BOTH {
            let slot = match &self.current {
                Some(generation) => generation.loaded.policy_slot(direction)?,
                None => pins
                    .join(direction.policy_map())
                    .exists()
                    .then(|| PolicySlot::open_pinned(direction, &pins))
                    .transpose()?,
            };
            match (slot, artifact.entries(direction)) {
                (Some(slot), Some(entries)) => changes.push((slot, seam::policy_records(entries))),
                (None, None) => {}
                (slot, _) => {
                    let running = if slot.is_some() { "enforced" } else { "not enforced" };
                    return Err(refuse(format!("{direction:?} policy is {running} in the running programs")));
                }
            }
        }
        let wanted = artifact.map_sizes.iter().find(|(name, _)| name == METRICS_MAP).map(|(_, size)| *size);
        if let Some(wanted) = wanted {
            let running = match &self.current {
                Some(generation) => generation.loaded.map(METRICS_MAP)?,
                None => MapHandle::from_pinned_path(pins.join(METRICS_MAP))
                    .map_err(|source| LoadError::Bpf { what: format!("open `{METRICS_MAP}`"), source })?,
            };
            if wanted > running.max_entries() {
                return Err(refuse(format!(
                    "{wanted} counters needed, the running counter array has {}",
                    running.max_entries()
                )));
            }
        }
        let tables = changes
            .into_iter()
            .map(|(slot, records)| StagedTable::new(slot, &records))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StagedTables { tables, rule_slots: artifact.rule_slots.clone() })
    }

    /// Makes staged tables the ones the programs read, each direction in one
    /// map update (a failed second install puts the first one back).
    pub fn install_tables(&mut self, staged: StagedTables) -> Result<(), SwapError> {
        install_tables(&staged.tables)?;
        if let Some(generation) = &mut self.current {
            generation.loaded.set_rule_slots(staged.rule_slots);
        }
        Ok(())
    }

    /// Switches to `next` (loaded with [`load_generation`] under this
    /// endpoint's directory): the tables staged for the directions it kept
    /// are installed, then the links of the directions it loaded switch to
    /// its programs (if they cannot, the tables are put back); then the
    /// generations before it are unpinned.
    pub fn switch_to(&mut self, mut next: Generation) -> Result<(), SwapError> {
        if let Err(e) = install_tables(&next.staged) {
            let _ = std::fs::remove_dir_all(&next.pins);
            return Err(e.into());
        }
        if let Err(e) = self.attachment.update(&next.loaded) {
            // Best effort: the link error is the one to report.
            let _ = restore_tables(&next.staged);
            let _ = std::fs::remove_dir_all(&next.pins);
            return Err(e.into());
        }
        // Installed: the directions may be staged again by the next change.
        next.staged.clear();
        let number = next.number;
        self.generation = number;
        // The old generation's programs no longer run: unpin what remains
        // (for an adopted endpoint, whatever generations were pinned).
        drop(self.current.replace(next));
        for old in pinned_generations(&self.dir).into_iter().filter(|n| *n != number) {
            let _ = std::fs::remove_dir_all(generation_dir(&self.dir, old));
        }
        Ok(())
    }

    /// Detaches the links and removes every pin of the endpoint.
    pub fn remove(self) -> Result<(), SwapError> {
        let result = self.attachment.detach();
        drop(self.current);
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(result?)
    }
}
