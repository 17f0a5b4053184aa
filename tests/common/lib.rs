//! Support code shared by the end-to-end tests in `tests/`, and the random
//! policy generator ([`testgen`]) that the compiler's tests use as well.

pub mod testgen;

use std::path::PathBuf;

/// The workspace root (where `examples/` and `snapshots/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example policy sets (`examples/*/`), sorted.
pub fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("examples"))
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// An example checked and resolved against its committed identities.lock.
pub fn resolve_example(dir: &std::path::Path) -> Result<(polc::sema::model::PolicySet, polc::ir::Resolved), String> {
    use polc::resolve::{self, IdentityLock, ResolveConfig};
    let frontend = polc::driver::load(&[dir.to_path_buf()]).map_err(|e| e.to_string())?;
    if frontend.has_errors() {
        return Err(format!("{} has errors", dir.display()));
    }
    let lock_file = resolve::lock_path(&[dir.to_path_buf()]);
    let text = std::fs::read_to_string(&lock_file).map_err(|e| e.to_string())?;
    let lock = IdentityLock::parse(&text).map_err(|e| e.to_string())?;
    let (resolved, _) =
        resolve::resolve(&frontend.checked, &lock, &ResolveConfig::default()).map_err(|e| e.to_string())?;
    Ok((frontend.checked, resolved))
}
