//! Loading a policy set from paths and running the front end over it: what
//! every `polc` subcommand and the tests start from.

use crate::diag::Diagnostics;
use crate::sema::{self, model};
use crate::syntax::{ast, parse, SourceMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{0}` contains no `.pol` files")]
    NoFiles(PathBuf),
}

/// The `.pol` files named by `paths`: files as given, directories searched
/// recursively; sorted so rule numbering does not depend on the file system.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Io { path: path.clone(), source })?;
        if meta.is_dir() {
            let before = files.len();
            walk(path, "pol", &mut files, &mut Vec::new())?;
            if files.len() == before {
                return Err(LoadError::NoFiles(path.clone()));
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The files under `dir` whose extension is `extension` (e.g. `poltest`), sorted.
pub fn find_files(dir: &Path, extension: &str) -> Result<Vec<PathBuf>, LoadError> {
    Ok(find_files_and_dirs(dir, extension)?.0)
}

/// [`find_files`], and every directory it read (`dir` first): what a
/// reader that caches the walk watches for changes.
pub fn find_files_and_dirs(dir: &Path, extension: &str) -> Result<(Vec<PathBuf>, Vec<PathBuf>), LoadError> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(dir, extension, &mut files, &mut dirs)?;
    files.sort();
    Ok((files, dirs))
}

fn walk(dir: &Path, extension: &str, out: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    dirs.push(dir.to_path_buf());
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| LoadError::Io { path: dir.to_path_buf(), source })?.path();
        if path.is_dir() {
            walk(&path, extension, out, dirs)?;
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
    Ok(())
}

/// The sources of a policy set and what the front end made of them.
pub struct Frontend {
    pub sources: SourceMap,
    /// Parsed modules, one per file that parsed (same order as the files).
    pub modules: Vec<ast::Module>,
    pub checked: model::PolicySet,
    pub diagnostics: Diagnostics,
}

impl Frontend {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.has_errors()
    }
}

/// Reads the files named by `paths` and runs parse and check.
pub fn load(paths: &[PathBuf]) -> Result<Frontend, LoadError> {
    let mut sources = SourceMap::default();
    for file in collect_files(paths)? {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io { path: file.clone(), source })?;
        sources.add(file, text);
    }
    Ok(check_sources(sources))
}

/// Parse and check sources already in memory (tests, fuzzing, the agent).
pub fn check_sources(sources: SourceMap) -> Frontend {
    let mut diagnostics = Diagnostics::default();
    let mut modules = Vec::new();
    for (id, file) in sources.files() {
        match parse::parse_module(id, &file.text) {
            Ok(module) => modules.push(module),
            Err(d) => diagnostics.push(d),
        }
    }
    let (checked, check_diagnostics) = sema::check(&sources, &modules);
    diagnostics.extend(check_diagnostics);
    Frontend { sources, modules, checked, diagnostics }
}

/// One in-memory file, for tests: `check_text("a.pol", "policy ...")`.
pub fn check_text(path: &str, text: &str) -> Frontend {
    let mut sources = SourceMap::default();
    sources.add(path, text.to_string());
    check_sources(sources)
}
