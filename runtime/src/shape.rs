//! What one direction's programs are made of, so that a code-shape change
//! reloads only the direction whose programs change.
//!
//! A direction's programs (its entry program and its tail-call targets, see
//! [`Direction::programs`]) run the same way in two loads when the loads
//! give them the same *shape*:
//! - the same instructions, byte for byte, and the same relocations (what
//!   each one points at, by name), for each of its programs, and the same
//!   section (the attach type) and license;
//! - the same `.text` functions (subprograms) its programs call, directly or
//!   through each other, with their relocations (global functions are called
//!   by name, so a direction's calls are known; a call into `.text` by
//!   offset, as a static subprogram's, makes the whole of `.text` part of
//!   the shape);
//! - the same definitions of the maps its programs use (type, key and value
//!   size, entries after the load's overrides, flags), but for the counter
//!   array, which may be larger than the new load asks
//!   ([`DirectionShape::keeps`]);
//! - the same read-only data (`.rodata` after the endpoint's constants are
//!   written: the verifier prunes branches on it).
//!
//! The verifier sees the same program and the kernel runs the same code, so
//! a direction whose shape did not change keeps its running programs (and
//! the maps they use). A builder may also declare the features each
//! direction is compiled from: equal declared features stand in for equal
//! code (clang lays one direction out differently when the other changes),
//! the maps and read-only data must still agree ([`DirectionShape::keeps`]). An object with writable global data (`.data`,
//! `.bss`) has no shapes: both directions would share that state, which a
//! load of one direction cannot. This reads only the object file and
//! values libbpf computed at open; it makes no syscalls.

use crate::datapath::{Direction, METRICS_MAP};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// A map as the kernel creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// Everything a direction's loaded programs depend on (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionShape {
    /// Its programs' and `.text`'s bytes and relocations, in a fixed order.
    code: Vec<u8>,
    /// The maps its programs (and `.text`) use, by name.
    maps: Vec<MapDef>,
    /// Every read-only internal map's initial value, by name.
    rodata: Vec<(String, Vec<u8>)>,
    /// The features its programs are compiled from, as the builder
    /// declares them (see [`DirectionShape::declare_features`]).
    features: Option<String>,
}

impl DirectionShape {
    /// Whether programs of shape `new` may be kept running as programs of
    /// this (running) shape: the same code and read-only data, and the same
    /// maps, except that the running counter array ([`METRICS_MAP`]) may be
    /// larger than `new` asks (a kept direction keeps its counter array,
    /// which the loaded direction then shares, as a table swap does).
    ///
    /// The code may also differ when both shapes declare the same features
    /// (the builder's word that the direction's programs decide alike, see
    /// `polc::codegen::header::direction_code_shape`): clang lays a
    /// direction's code out differently when the other direction's code
    /// changes. The maps and read-only data must still agree.
    pub fn keeps(&self, new: &DirectionShape) -> bool {
        let same_map = |(old, new): (&MapDef, &MapDef)| match old.name == METRICS_MAP && new.name == METRICS_MAP {
            true => {
                MapDef { max_entries: new.max_entries, ..old.clone() } == *new && old.max_entries >= new.max_entries
            }
            false => old == new,
        };
        let same_features = self.features.is_some() && self.features == new.features;
        (self.code == new.code || same_features)
            && self.rodata == new.rodata
            && self.maps.len() == new.maps.len()
            && self.maps.iter().zip(&new.maps).all(same_map)
    }

    /// Records the features the builder compiled this direction from: two
    /// shapes declaring the same ones keep each other whatever clang's
    /// layout, given the same maps and read-only data.
    pub fn declare_features(&mut self, features: &str) {
        self.features = Some(features.to_string());
    }

    /// Records the size of the counter array as created (a load that kept
    /// a direction shares that direction's array, which may be larger than
    /// the object asks).
    pub fn set_counter_entries(&mut self, entries: u32) {
        for map in self.maps.iter_mut().filter(|m| m.name == METRICS_MAP) {
            map.max_entries = entries;
        }
    }

    /// The names of the maps its programs use.
    pub fn map_names(&self) -> impl Iterator<Item = &str> {
        self.maps.iter().map(|m| m.name.as_str())
    }
}

/// What libbpf says of an opened object's maps: each map's definition
/// (after the load's overrides), and the initial value of internal ones.
pub struct OpenMaps {
    pub defs: Vec<MapDef>,
    /// Internal maps by section (`.rodata`, `.data`, ...: without the
    /// object's name libbpf puts before it).
    pub internal: Vec<(String, Vec<u8>)>,
}

/// One program (or `.text` function) as the object file has it.
#[derive(Default)]
struct ProgramCode {
    code: Vec<u8>,
    maps: BTreeSet<String>,
    /// The `.text` functions it calls by name.
    calls: BTreeSet<String>,
    /// It points into `.text` by offset (a static subprogram).
    into_text: bool,
}

/// An object's code: its programs by name, its `.text` functions by name,
/// and the whole of `.text`.
struct ObjectCode {
    programs: BTreeMap<String, ProgramCode>,
    functions: BTreeMap<String, ProgramCode>,
    text: ProgramCode,
}

impl ObjectCode {
    /// The `.text` functions `roots` call, directly or not, by name; `None`
    /// when one of them points into `.text` by offset (then all of `.text`
    /// counts).
    fn reachable(&self, roots: &[&ProgramCode]) -> Option<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&ProgramCode> = roots.to_vec();
        while let Some(code) = todo.pop() {
            if code.into_text {
                return None;
            }
            for name in &code.calls {
                if seen.insert(name.clone()) {
                    todo.push(self.functions.get(name)?);
                }
            }
        }
        Some(seen)
    }
}

/// The shape of each direction ([`Direction::BOTH`] order) of the object
/// `elf`, opened by libbpf as `maps`; `None` where it cannot be told
/// (writable global data, an object that does not parse).
pub fn direction_shapes(elf: &[u8], maps: &OpenMaps) -> [Option<DirectionShape>; 2] {
    let writable = maps.internal.iter().any(|(name, _)| name.contains(".data") || name.contains(".bss"));
    let Some(object) = (!writable).then(|| object_code(elf)).flatten() else { return [None, None] };
    let rodata: Vec<(String, Vec<u8>)> =
        maps.internal.iter().filter(|(name, _)| name.contains(".rodata")).cloned().collect();
    Direction::BOTH.map(|direction| {
        let mut bytes = Vec::new();
        let mut used = BTreeSet::new();
        let mut roots = Vec::new();
        for name in direction.programs() {
            put(&mut bytes, name.as_bytes());
            match object.programs.get(name) {
                Some(program) => {
                    put(&mut bytes, &program.code);
                    used.extend(program.maps.iter().cloned());
                    roots.push(program);
                }
                None => put(&mut bytes, b"(absent)"),
            }
        }
        match object.reachable(&roots) {
            Some(called) => {
                for name in &called {
                    let function = object.functions.get(name)?;
                    put(&mut bytes, name.as_bytes());
                    put(&mut bytes, &function.code);
                    used.extend(function.maps.iter().cloned());
                }
            }
            None => {
                put(&mut bytes, &object.text.code);
                used.extend(object.text.maps.iter().cloned());
            }
        }
        let mut defs: Vec<MapDef> = maps.defs.iter().filter(|d| used.contains(&d.name)).cloned().collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        // A map used by name but unknown to libbpf: nothing to compare it by.
        if defs.len() != used.len() {
            return None;
        }
        Some(DirectionShape { code: bytes, maps: defs, rodata: rodata.clone(), features: None })
    })
}

/// How many objects' code [`object_code`] remembers.
const REMEMBERED: usize = 8;

/// The code of the objects read last, with their bytes, most recent first.
static RECENT: Mutex<Vec<(Vec<u8>, Arc<ObjectCode>)>> = Mutex::new(Vec::new());

/// [`read_code`] of `elf`, remembered for the next object with the same
/// bytes: code-shape changes load the same few cached objects again and
/// again (each endpoint of a shape, each swap back), and reading an
/// object's code (parsing the ELF, sorting out each program's relocations)
/// is ~0.5 ms, most of [`direction_shapes`]; comparing bytes takes
/// microseconds.
fn object_code(elf: &[u8]) -> Option<Arc<ObjectCode>> {
    if let Ok(mut recent) = RECENT.lock() {
        if let Some(at) = recent.iter().position(|(bytes, _)| bytes.as_slice() == elf) {
            let hit = recent.remove(at);
            let code = Arc::clone(&hit.1);
            recent.insert(0, hit);
            return Some(code);
        }
    }
    // Read without the lock: loads on other threads may meanwhile find theirs.
    let code = Arc::new(read_code(elf)?);
    if let Ok(mut recent) = RECENT.lock() {
        recent.insert(0, (elf.to_vec(), Arc::clone(&code)));
        recent.truncate(REMEMBERED);
    }
    Some(code)
}

/// Appends `data` with its length, so that concatenations cannot collide.
fn put(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
}

/// Each program's code by name (its section name, its bytes and its
/// relocations, the license), each `.text` function's, and `.text`'s.
fn read_code(elf: &[u8]) -> Option<ObjectCode> {
    let file = object::File::parse(elf).ok()?;
    let license = file.section_by_name("license").and_then(|s| s.data().ok()).unwrap_or_default().to_vec();
    let mut programs = BTreeMap::new();
    let mut functions = BTreeMap::new();
    let mut text = ProgramCode::default();
    for section in file.sections() {
        let name = section.name().ok()?;
        let data = section.data().ok()?;
        let relocations: Vec<Relocation> = section
            .relocations()
            .map(|(offset, relocation)| {
                let (target, points) = match relocation.target() {
                    RelocationTarget::Symbol(index) => {
                        let symbol = file.symbol_by_index(index).ok()?;
                        let section_name = symbol
                            .section_index()
                            .and_then(|i| file.section_by_index(i).ok())
                            .and_then(|s| s.name().ok().map(str::to_string))
                            .unwrap_or_default();
                        let target = match symbol.kind() {
                            SymbolKind::Section => section_name.clone(),
                            _ => symbol.name().ok()?.to_string(),
                        };
                        let points = match (section_name.as_str(), symbol.kind()) {
                            (".maps", _) => Points::Map,
                            (".text", SymbolKind::Section) => Points::IntoText,
                            (".text", SymbolKind::Text) => Points::Function,
                            _ => Points::Other,
                        };
                        (target, points)
                    }
                    RelocationTarget::Section(index) => {
                        let target = file.section_by_index(index).ok()?.name().ok()?.to_string();
                        let points = if target == ".text" { Points::IntoText } else { Points::Other };
                        (target, points)
                    }
                    _ => (String::from("(absolute)"), Points::Other),
                };
                let kind = format!("{:?}/{}", relocation.flags(), relocation.addend());
                Some(Relocation { offset, target, kind, points })
            })
            .collect::<Option<_>>()?;
        let symbols = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.section_index() == Some(section.index()) && s.size() > 0);
        for symbol in symbols {
            let range = symbol.address()..symbol.address() + symbol.size();
            let mut code = program_code(name, data, &relocations, range);
            if name == ".text" {
                functions.insert(symbol.name().ok()?.to_string(), code);
            } else {
                put(&mut code.code, &license);
                programs.insert(symbol.name().ok()?.to_string(), code);
            }
        }
        if name == ".text" {
            text = program_code(name, data, &relocations, 0..data.len() as u64);
        }
    }
    Some(ObjectCode { programs, functions, text })
}

/// What a relocation points at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Points {
    /// A map (a symbol in `.maps`).
    Map,
    /// A `.text` function, by name (a global function's call).
    Function,
    /// `.text` by offset (a static subprogram's call, or data in it).
    IntoText,
    Other,
}

/// One relocation of a section: where, what it points at (a symbol's name,
/// or a section's), and how.
struct Relocation {
    offset: u64,
    target: String,
    kind: String,
    points: Points,
}

/// The code of the bytes `range` of section `section`: the section's name,
/// the bytes, and each relocation in the range (offset from its start,
/// target and kind).
fn program_code(section: &str, data: &[u8], relocations: &[Relocation], range: std::ops::Range<u64>) -> ProgramCode {
    let mut program = ProgramCode::default();
    put(&mut program.code, section.as_bytes());
    let bytes =
        usize::try_from(range.start).ok().zip(usize::try_from(range.end).ok()).and_then(|(a, b)| data.get(a..b));
    put(&mut program.code, bytes.unwrap_or(b"(out of range)"));
    for relocation in relocations.iter().filter(|r| range.contains(&r.offset)) {
        put(&mut program.code, &(relocation.offset - range.start).to_le_bytes());
        put(&mut program.code, relocation.target.as_bytes());
        put(&mut program.code, relocation.kind.as_bytes());
        match relocation.points {
            Points::Map => {
                program.maps.insert(relocation.target.clone());
            }
            Points::Function => {
                program.calls.insert(relocation.target.clone());
            }
            Points::IntoText => program.into_text = true,
            Points::Other => {}
        }
    }
    program
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn no_maps() -> OpenMaps {
        OpenMaps { defs: Vec::new(), internal: Vec::new() }
    }

    #[test]
    fn what_does_not_parse_has_no_shape() {
        assert_eq!(direction_shapes(b"not an object", &no_maps()), [None, None]);
    }

    #[test]
    fn writable_global_data_has_no_shape() {
        let maps = OpenMaps { defs: Vec::new(), internal: vec![(".bss".into(), vec![0; 4])] };
        // Refused before the file is read at all.
        assert_eq!(direction_shapes(b"", &maps), [None, None]);
    }
}
