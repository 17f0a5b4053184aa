//! `polcd reset`: detach every link and remove every pin and state file
//! an agent made, as recorded in its state directory.

use super::api::{socket_path, SOCKET};
use super::daemon::{StateFile, API_ENDPOINTS_FILE, IDENTITIES_FILE, STATE_FILE};
use super::stats::COUNTERS_FILE;
use crate::attach::Attachment;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("polcd is running on `{0}`: stop it first")]
    Running(PathBuf),
    #[error("no polcd state in `{path}`: {source}")]
    NoState { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not a polcd state file: {source}")]
    BadState { path: PathBuf, source: serde_json::Error },
    #[error("the state file names pin root `{0}`, which is not under /sys/fs/bpf/polc/: refusing to delete it")]
    UnconfinedPinRoot(PathBuf),
}

/// What a reset removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub endpoints: Vec<String>,
    pub errors: Vec<String>,
}

pub fn reset(state: &Path) -> Result<Removed, ResetError> {
    if UnixStream::connect(socket_path(state)).is_ok() {
        return Err(ResetError::Running(socket_path(state)));
    }
    let path = state.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| ResetError::NoState { path: path.clone(), source })?;
    let recorded: StateFile = serde_json::from_str(&text).map_err(|source| ResetError::BadState { path, source })?;
    if !crate::loader::is_confined_pin_root(&recorded.pin_root) {
        return Err(ResetError::UnconfinedPinRoot(recorded.pin_root));
    }
    let mut removed = Removed::default();
    if let Ok(entries) = std::fs::read_dir(recorded.pin_root.join("endpoints")) {
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if Attachment::is_pinned(&entry.path()) {
                match Attachment::adopt(&entry.path(), recorded.netns.as_deref()).and_then(Attachment::detach) {
                    Ok(()) => removed.endpoints.push(name),
                    Err(e) => removed.errors.push(format!("`{name}`: {e}")),
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&recorded.pin_root);
    for file in [SOCKET, STATE_FILE, API_ENDPOINTS_FILE, IDENTITIES_FILE, COUNTERS_FILE] {
        let _ = std::fs::remove_file(state.join(file));
    }
    // What a write killed before its rename left.
    for partial in ["identities.lock.new", "counters.json.tmp"] {
        let _ = std::fs::remove_file(state.join(partial));
    }
    let _ = std::fs::remove_dir_all(state.join("cache"));
    Ok(removed)
}
