//! Support code shared by the end-to-end tests in `tests/`.

use std::path::PathBuf;

/// The workspace root (where `examples/` and `snapshots/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
