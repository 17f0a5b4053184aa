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

    /// Brings the ipcache from `old` to `new`: writes every new entry, then
    /// deletes the prefixes no longer present.
    pub fn sync_ipcache(&self, old: &[IpcacheEntry], new: &[IpcacheEntry]) -> Result<(), LoadError> {
        seam::fill_ipcache(self, new)?;
        let keep: BTreeSet<(IpAddr, u8)> = new.iter().map(|(a, l, _)| (*a, *l)).collect();
        for &(addr, len, _) in old.iter().filter(|(a, l, _)| !keep.contains(&(*a, *l))) {
            let full = if addr.is_ipv4() { 32 } else { 128 };
            let result = if len == full {
                self.delete(datapath::ipcache_host_map(addr), &datapath::ipcache_host_key(addr))
            } else {
                self.delete(datapath::IPCACHE_MAP, &datapath::ipcache_key(addr, len))
            };
            // Already gone is fine (a restart does not know what was written).
            let _ = result;
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
