//! What an agent finds pinned under its pin root, and what it does with it
//! at start: `endpoints/<name>/` of endpoints it still enforces are adopted,
//! those of endpoints it no longer knows are detached, and links it cannot
//! adopt (half pinned by a crash) are set aside under `stale/<name>/`, still
//! enforcing, until a new generation of `name` is attached.

use super::daemon::{log, now_ms};
use crate::attach::Attachment;
use crate::swap::Enforced;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The pin root of one agent (`node/`, `endpoints/`, `stale/`).
pub struct PinRoot<'a> {
    root: &'a Path,
    /// Where the endpoints' devices are (for tc filters).
    netns: Option<&'a str>,
}

impl<'a> PinRoot<'a> {
    pub fn new(root: &'a Path, netns: Option<&'a str>) -> PinRoot<'a> {
        PinRoot { root, netns }
    }

    pub fn node(&self) -> PathBuf {
        self.root.join("node")
    }

    pub fn endpoints(&self) -> PathBuf {
        self.root.join("endpoints")
    }

    pub fn endpoint(&self, name: &str) -> PathBuf {
        self.endpoints().join(name)
    }

    /// Where links a previous agent left for `name` wait, still enforcing,
    /// until a new generation of `name` is attached.
    pub fn stale(&self) -> PathBuf {
        self.root.join("stale")
    }

    /// Adopts the endpoints pinned under `endpoints/` that are `known`;
    /// detaches the others. What cannot be adopted is set aside.
    pub fn adopt(&self, known: &BTreeSet<String>) -> Vec<(String, Enforced)> {
        let mut adopted = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.endpoints()) else { return adopted };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if !Attachment::is_pinned(&dir) {
                // Half pinned (a crash between two pins): what runs keeps
                // running until a new generation is attached.
                if known.contains(&name) {
                    self.set_aside(&name);
                } else {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                continue;
            }
            match Enforced::adopt(&self.node(), &dir, self.netns) {
                Ok(enforced) if known.contains(&name) => {
                    log(&format!("adopted `{name}` (generation {})", enforced.generation()));
                    adopted.push((name, enforced));
                }
                Ok(enforced) => {
                    log(&format!("`{name}` is no longer in the inventory: detaching"));
                    if let Err(e) = enforced.remove() {
                        log(&format!("detaching `{name}`: {e}"));
                    }
                }
                Err(e) => {
                    log(&format!("cannot adopt `{name}`: {e}"));
                    if known.contains(&name) {
                        self.set_aside(&name);
                    }
                }
            }
        }
        // Set-aside links of endpoints no longer in the inventory.
        if let Ok(entries) = std::fs::read_dir(self.stale()) {
            for entry in entries.filter_map(|e| e.ok()) {
                if !known.contains(entry.file_name().to_string_lossy().as_ref()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        adopted
    }

    /// Moves the pins of `name` that the agent does not hold (links it
    /// could not adopt) out of the way of a new generation, to
    /// `stale/<name>/<ms>/`: the links keep enforcing until
    /// [`PinRoot::drop_stale`] once the new generation is attached. Pins
    /// without links are removed.
    pub fn set_aside(&self, name: &str) {
        let dir = self.endpoint(name);
        if !Attachment::has_pins(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let target = self.stale().join(name).join(now_ms().to_string());
        let moved = std::fs::create_dir_all(self.stale().join(name)).and_then(|()| std::fs::rename(&dir, &target));
        if let Err(e) = moved {
            log(&format!("cannot set aside the old links of `{name}` ({e}): removing them"));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Removes the set-aside links of `name` (they detach).
    pub fn drop_stale(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.stale().join(name));
    }
}
