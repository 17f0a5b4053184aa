//! Reading the policy directory for a reload, doing again only what a
//! change can have changed:
//!
//! - the directory is walked again only when one of the directories walked
//!   last time has changed (its metadata: an entry added, removed or
//!   renamed changes it);
//! - a file is read again only when its metadata changed, and parsed again
//!   only when its text changed: in a one-file edit, the other files' text
//!   and modules come from memory.
//!
//! Checking always runs over the whole set; its warnings-only passes run
//! only when there are errors to show them with.
//!
//! Metadata is trusted to show a change only once it is *settled*: its
//! change time (ctime) at least [`SETTLE`] older than the moment it was
//! read. A file or directory changed after that moment then gets a later
//! ctime, whatever the file system's timestamp granularity (as long as
//! it is under [`SETTLE`]); one changed just before it, in the same clock
//! tick, would not, so what is not settled is read again every time.

use super::catalog::{rules_of, RuleInfo};
use polc::sema::model::PolicySet;
use polc::syntax::{ast::Module, parse::parse_module, SourceMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old a ctime must be, when read, for its metadata to be trusted to
/// change with the next write (above any file system's timestamp
/// granularity: 2 s on FAT, a clock tick on most).
const SETTLE: Duration = Duration::from_secs(3);

/// What a file's or directory's metadata says of its content: equal stamps
/// with a settled ctime mean the same content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp in `meta` (read following symlinks), if it is trusted:
    /// settled at `now`, a moment taken before the metadata was read.
    fn settled(meta: &std::fs::Metadata, now: SystemTime, settle: Duration) -> Option<Stamp> {
        let stamp = Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        let ctime = Duration::new(u64::try_from(stamp.ctime.0).ok()?, u32::try_from(stamp.ctime.1).ok()?);
        let limit = now.duration_since(UNIX_EPOCH).ok()?.checked_sub(settle)?;
        (ctime < limit).then_some(stamp)
    }
}

/// The `.pol` files of the last walk, and the directories it read.
struct Listing {
    /// Each directory walked, with its stamp (`None`: not settled, so the
    /// listing is not reused).
    dirs: Vec<(PathBuf, Option<Stamp>)>,
    files: Vec<PathBuf>,
}

impl Listing {
    /// Whether the directories still list what they listed.
    fn still_valid(&self, now: SystemTime, settle: Duration) -> bool {
        self.dirs.iter().all(|(dir, stamp)| {
            stamp.is_some() && std::fs::metadata(dir).ok().and_then(|meta| Stamp::settled(&meta, now, settle)) == *stamp
        })
    }
}

/// One file of the last read.
struct ReadFile {
    path: PathBuf,
    /// Its stamp before it was read (`None`: not settled, read it again).
    stamp: Option<Stamp>,
    text: String,
}

/// The policy directory and what its last read found.
pub struct PolicyReader {
    dir: PathBuf,
    /// [`SETTLE`], shorter in tests.
    settle: Duration,
    listing: Option<Listing>,
    /// The files of the last read, in order.
    files: Vec<ReadFile>,
    /// Their modules (`None`: the file did not parse). A module's spans
    /// carry its file's position, so one is reused only at the same
    /// position, for the same path and text.
    modules: Vec<Option<Module>>,
    /// How many files the last read read from disk (for tests).
    reads: usize,
    /// How many walks of the directory (for tests).
    walks: usize,
}

impl PolicyReader {
    pub fn new(dir: &Path) -> PolicyReader {
        PolicyReader {
            dir: dir.to_path_buf(),
            settle: SETTLE,
            listing: None,
            files: Vec::new(),
            modules: Vec::new(),
            reads: 0,
            walks: 0,
        }
    }

    /// Reads, parses and checks the directory (and locates its rules);
    /// errors rendered as text.
    pub fn read(&mut self) -> Result<(PolicySet, Vec<RuleInfo>), String> {
        let paths = self.list()?;
        let mut sources = SourceMap::default();
        let mut files = Vec::with_capacity(paths.len());
        let mut modules = Vec::with_capacity(paths.len());
        let mut diagnostics = polc::diag::Diagnostics::default();
        self.reads = 0;
        for (i, path) in paths.into_iter().enumerate() {
            let (file, same) = self.read_file(i, path)?;
            let id = sources.add(file.path.clone(), file.text.clone());
            let reused = if same { self.modules.get_mut(i).and_then(Option::take) } else { None };
            match reused.map_or_else(|| parse_module(id, &file.text), Ok) {
                Ok(module) => modules.push(Some(module)),
                Err(d) => {
                    modules.push(None);
                    diagnostics.push(d);
                }
            }
            files.push(file);
        }
        self.files = files;
        // The modules are kept for the next read, by position.
        let (parsed, unparsed): (Vec<Module>, _) = if modules.iter().all(Option::is_some) {
            (modules.into_iter().flatten().collect(), None)
        } else {
            (modules.iter().flatten().cloned().collect(), Some(modules))
        };
        // Warnings are shown only with errors: checked for when there are.
        let (checked, check_diagnostics) = polc::sema::check_for_errors(&sources, &parsed);
        let failed = diagnostics.has_errors() || check_diagnostics.has_errors();
        if failed {
            diagnostics.extend(polc::sema::check(&sources, &parsed).1);
        }
        self.modules = unparsed.unwrap_or_else(|| parsed.into_iter().map(Some).collect());
        if failed {
            let all: Vec<_> = diagnostics.iter().cloned().collect();
            return Err(polc::diag::render::render_all_text(&sources, &all).trim_end().to_string());
        }
        let rules = rules_of(&checked, &sources);
        Ok((checked, rules))
    }

    /// The `.pol` files to read, as `polc::driver::collect_files` finds
    /// them: from the last walk when no directory of it changed.
    fn list(&mut self) -> Result<Vec<PathBuf>, String> {
        let now = SystemTime::now();
        if let Some(listing) = self.listing.as_ref().filter(|l| l.still_valid(now, self.settle)) {
            return Ok(listing.files.clone());
        }
        self.listing = None;
        self.walks += 1;
        let meta = std::fs::metadata(&self.dir).map_err(|e| format!("cannot read `{}`: {e}", self.dir.display()))?;
        if !meta.is_dir() {
            return Ok(vec![self.dir.clone()]);
        }
        let (files, dirs) = polc::driver::find_files_and_dirs(&self.dir, "pol").map_err(|e| e.to_string())?;
        if files.is_empty() {
            return Err(polc::driver::LoadError::NoFiles(self.dir.clone()).to_string());
        }
        // Stamped after the walk, against `now` taken before it: a directory
        // changed meanwhile has an unsettled stamp, so the next read walks again.
        let dirs = dirs
            .into_iter()
            .map(|dir| {
                let stamp = std::fs::metadata(&dir).ok().and_then(|m| Stamp::settled(&m, now, self.settle));
                (dir, stamp)
            })
            .collect();
        let listing = Listing { dirs, files };
        let files = listing.files.clone();
        self.listing = Some(listing);
        Ok(files)
    }

    /// File `i` of this read, and whether it is the same file with the
    /// same text as file `i` of the last read. Not read again when it was
    /// there with a settled stamp that has not changed.
    fn read_file(&mut self, i: usize, path: PathBuf) -> Result<(ReadFile, bool), String> {
        let cannot = |e: std::io::Error| format!("cannot read `{}`: {e}", path.display());
        let now = SystemTime::now();
        let stamp = Stamp::settled(&std::fs::metadata(&path).map_err(cannot)?, now, self.settle);
        let old = self.files.get(i).filter(|old| old.path == path);
        match old {
            Some(old) if stamp.is_some() && old.stamp == stamp => {
                Ok((ReadFile { path, stamp, text: old.text.clone() }, true))
            }
            old => {
                self.reads += 1;
                let text = std::fs::read_to_string(&path).map_err(cannot)?;
                let same = old.is_some_and(|old| old.text == text);
                Ok((ReadFile { path, stamp, text }, same))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::PolicyReader;
    use std::path::Path;
    use std::time::Duration;

    const ENDPOINTS: &str = "endpoint a {\n  labels {id=a}\n  ipv4 10.0.0.1\n}\n";

    fn policy(port: u16) -> String {
        format!("policy p {{\n  select {{id=a}}\n  ingress {{\n    allow web: from {{id=a}} on tcp/{port}\n  }}\n}}\n")
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    }

    /// A fresh reader's result, as text.
    fn fresh(dir: &Path) -> String {
        format!("{:?}", PolicyReader::new(dir).read())
    }

    /// A reader trusting metadata settled for `SETTLE_TEST`, and a pause
    /// that makes what was just written settled.
    const SETTLE_TEST: Duration = Duration::from_millis(50);

    fn settle() {
        std::thread::sleep(SETTLE_TEST * 2);
    }

    fn quick_reader(dir: &Path) -> PolicyReader {
        PolicyReader { settle: SETTLE_TEST, ..PolicyReader::new(dir) }
    }

    #[test]
    fn rereads_see_every_change_and_equal_a_fresh_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(&dir.path().join("a.pol"), ENDPOINTS);
        write(&dir.path().join("b.pol"), &policy(80));
        for mut reader in [PolicyReader::new(dir.path()), quick_reader(dir.path())] {
            write(&dir.path().join("b.pol"), &policy(80));
            let _ = std::fs::remove_file(dir.path().join("0.pol"));
            assert_eq!(format!("{:?}", reader.read()), fresh(dir.path()));

            // One file edited: the other's module is reused, the result is a fresh read's.
            settle();
            write(&dir.path().join("b.pol"), &policy(81));
            let set = reader.read().unwrap_or_else(|e| panic!("{e}"));
            assert!(format!("{set:?}").contains("81"));
            assert_eq!(format!("{:?}", Ok::<_, String>(set)), fresh(dir.path()));

            // A file added before the others shifts their positions: still a fresh read's result.
            write(&dir.path().join("0.pol"), "policy q {\n  select {id=a}\n}\n");
            assert_eq!(format!("{:?}", reader.read()), fresh(dir.path()));

            // A broken file is an error naming it; fixing it reads again.
            settle();
            write(&dir.path().join("b.pol"), "policy p {\n  select {id=a\n");
            assert!(reader.read().is_err_and(|e| e.contains("b.pol")));
            write(&dir.path().join("b.pol"), &policy(82));
            assert_eq!(format!("{:?}", reader.read()), fresh(dir.path()));
            assert_eq!(format!("{:?}", reader.read()), fresh(dir.path()));
        }
    }

    #[test]
    fn errors_are_shown_with_the_warnings_of_the_set() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(&dir.path().join("a.pol"), ENDPOINTS);
        write(&dir.path().join("b.pol"), "policy nobody {\n  select {id=zzz}\n}\n");
        let mut reader = PolicyReader::new(dir.path());
        reader.read().unwrap_or_else(|e| panic!("a warning alone is no error: {e}"));
        // A broken file: the error names it, and the warning is shown with it,
        // as `polc check` shows it (its text here is polc's rendering of both).
        write(&dir.path().join("c.pol"), "policy p {\n  select {id=a\n");
        let error = reader.read().err().unwrap_or_else(|| panic!("c.pol is broken"));
        assert!(error.contains("c.pol") && error.contains("policy `nobody` selects no endpoint"), "{error}");
        let frontend = polc::driver::load(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
        let all: Vec<_> = frontend.diagnostics.iter().cloned().collect();
        assert_eq!(error, polc::diag::render::render_all_text(&frontend.sources, &all).trim_end());
    }

    #[test]
    fn only_files_whose_metadata_changed_are_read_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (dir.path().join("a.pol"), dir.path().join("b.pol"));
        write(&a, ENDPOINTS);
        write(&b, &policy(80));
        settle();
        let mut reader = quick_reader(dir.path());
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((reader.reads, reader.walks), (2, 1));
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((reader.reads, reader.walks), (0, 1), "nothing changed: nothing read, no walk");

        // An edit of the same length, its modification time put back: the
        // change time still tells, and only that file is read.
        let modified = std::fs::metadata(&b).and_then(|m| m.modified()).unwrap_or_else(|e| panic!("{e}"));
        write(&b, &policy(81));
        let file = std::fs::File::options().write(true).open(&b).unwrap_or_else(|e| panic!("{e}"));
        file.set_modified(modified).unwrap_or_else(|e| panic!("{e}"));
        let set = reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert!(format!("{set:?}").contains("81"));
        assert_eq!((reader.reads, reader.walks), (1, 1));

        // Not settled yet: read every time, until it is. (Judged with a
        // settle longer than any pause a loaded machine makes between the
        // write and this read: with SETTLE_TEST it could already be
        // settled, and both files are young for this one.)
        reader.settle = Duration::from_secs(600);
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.reads, 2, "files changed a moment ago are read again");
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.reads, 2, "and again");
        reader.settle = SETTLE_TEST;
        settle();
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.reads, 0);
        assert_eq!(format!("{:?}", reader.read()), fresh(dir.path()));
    }

    #[test]
    fn the_directory_is_walked_again_when_an_entry_comes_or_goes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("{e}"));
        write(&dir.path().join("a.pol"), ENDPOINTS);
        settle();
        let mut reader = quick_reader(dir.path());
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.walks, 1);

        // A file added in a subdirectory: its directory changed, not the top one.
        write(&sub.join("b.pol"), &policy(80));
        let set = reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.0.policies.len(), 1);
        assert_eq!(reader.walks, 2);
        assert_eq!(format!("{:?}", reader.read()), fresh(dir.path()));

        // Removed (while the listing is settled): gone from the next read.
        settle();
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        let walks = reader.walks;
        std::fs::remove_file(sub.join("b.pol")).unwrap_or_else(|e| panic!("{e}"));
        let set = reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert!(set.0.policies.is_empty());
        assert_eq!(reader.walks, walks + 1);
        assert_eq!(format!("{:?}", reader.read()), fresh(dir.path()));

        // Files as `polc` collects them: `.pol` only, sorted, in subdirectories too.
        write(&dir.path().join("notes.txt"), "not policy");
        write(&sub.join("c.pol"), &policy(81));
        settle();
        reader.read().unwrap_or_else(|e| panic!("{e}"));
        let listed = reader.list().unwrap_or_else(|e| panic!("{e}"));
        let collected = polc::driver::collect_files(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed, collected);
    }
}
