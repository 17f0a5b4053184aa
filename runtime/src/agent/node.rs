//! The node-wide maps as the agent sees them: opened from their pins, so
//! they can be updated whether or not this process loaded an object.

use crate::datapath;
use crate::loader::LoadError;
use crate::seam::{self, EndpointMaps};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// (prefix address, prefix length, identity), as [`seam::fill_ipcache`] takes.
pub type IpcacheEntry = (IpAddr, u8, u32);

/// The pinned node maps under one directory.
pub struct NodeMaps {
    dir: PathBuf,
}

impl NodeMaps {
    pub fn new(dir: &Path) -> NodeMaps {
        NodeMaps { dir: dir.to_path_buf() }
    }

    /// Whether an object has created the node maps yet.
    pub fn exist(&self) -> bool {
        self.dir.join(datapath::IPCACHE_MAP).exists()
    }

    fn open(&self, map: &str) -> Result<MapHandle, LoadError> {
        MapHandle::from_pinned_path(self.dir.join(map))
            .map_err(|source| LoadError::Bpf { what: format!("open pinned `{map}`"), source })
    }

    /// Brings the ipcache to `new`: writes every entry, then deletes every
    /// key the maps hold that `new` does not have. The maps are read rather
    /// than trusting what this process wrote last, so entries left by an
    /// earlier agent (a restart) or by a failed sync are removed too: a stale
    /// entry would give a reused address the old identity's permissions.
    ///
    /// All or nothing: if a write fails (a full map), the entries written so
    /// far get their previous values back and the ones that were new are
    /// deleted, so the running programs never read a half-updated ipcache.
    pub fn sync_ipcache(&self, new: &[IpcacheEntry]) -> Result<(), LoadError> {
        write_all_or_nothing(self, new)?;
        let wanted: BTreeSet<(&str, Vec<u8>)> = new.iter().map(ipcache_slot).collect();
        for map in [datapath::IPCACHE_MAP, datapath::IPCACHE_HOST4_MAP, datapath::IPCACHE_HOST6_MAP] {
            if !self.has_map(map) {
                continue;
            }
            let handle = self.open(map)?;
            let stale: Vec<Vec<u8>> = handle.keys().filter(|k| !wanted.contains(&(map, k.clone()))).collect();
            for key in stale {
                // Already gone is fine: only the end state matters.
                let _ = handle.delete(&key);
            }
        }
        Ok(())
    }
}

impl EndpointMaps for NodeMaps {
    fn update(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), LoadError> {
        self.open(map)?
            .update(key, value, MapFlags::ANY)
            .map_err(|source| LoadError::Bpf { what: format!("update `{map}`"), source })
    }

    fn lookup(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, LoadError> {
        self.open(map)?
            .lookup(key, MapFlags::ANY)
            .map_err(|source| LoadError::Bpf { what: format!("lookup in `{map}`"), source })
    }

    fn delete(&self, map: &str, key: &[u8]) -> Result<(), LoadError> {
        self.open(map)?.delete(key).map_err(|source| LoadError::Bpf { what: format!("delete from `{map}`"), source })
    }

    fn has_map(&self, map: &str) -> bool {
        self.dir.join(map).exists()
    }
}

/// Writes `entries` like [`seam::fill_ipcache`]; on failure, puts back every
/// key written before it as it was (restored, or deleted if it was new).
pub fn write_all_or_nothing(maps: &dyn EndpointMaps, entries: &[IpcacheEntry]) -> Result<(), LoadError> {
    // (map, key, value before the write: `None` if the key was new)
    type Undo = (&'static str, Vec<u8>, Option<Vec<u8>>);
    let mut undo: Vec<Undo> = Vec::new();
    for entry in entries {
        let (map, key) = ipcache_slot(entry);
        let previous = maps.lookup(map, &key);
        let written = previous.and_then(|previous| {
            seam::fill_ipcache(maps, std::slice::from_ref(entry))?;
            Ok(previous)
        });
        match written {
            Ok(previous) => undo.push((map, key, previous)),
            Err(e) => {
                for (map, key, previous) in undo.into_iter().rev() {
                    // Best effort: the write's error is the one to report.
                    let _ = match previous {
                        Some(value) => maps.update(map, &key, &value),
                        None => maps.delete(map, &key),
                    };
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The map and key an ipcache entry is written to.
fn ipcache_slot(&(addr, len, _): &IpcacheEntry) -> (&'static str, Vec<u8>) {
    let full = if addr.is_ipv4() { 32 } else { 128 };
    if len == full {
        (datapath::ipcache_host_map(addr), datapath::ipcache_host_key(addr))
    } else {
        (datapath::IPCACHE_MAP, datapath::ipcache_key(addr, len).to_vec())
    }
}
