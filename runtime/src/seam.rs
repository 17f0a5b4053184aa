//! The kernel seam: what the runtime asks of one loaded endpoint. The real
//! implementation is [`crate::loader::LoadedEndpoint`] (libbpf-rs); logic
//! that only fills or reads maps (table swaps, ipcache updates) is written
//! against this trait so it also runs on [`MemoryMaps`] without a kernel.

use crate::datapath;
use crate::loader::{LoadError, TableRecords};
use polc::codegen::policy_index::{policy_index, INDEX_ROWS};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub trait EndpointMaps {
    fn update(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), LoadError>;
    fn lookup(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, LoadError>;
    fn delete(&self, map: &str, key: &[u8]) -> Result<(), LoadError>;
    fn has_map(&self, map: &str) -> bool;
}

/// Writes ipcache entries: (prefix address, prefix length, identity). Host
/// addresses go to the exact-match map, shorter prefixes to the trie.
pub fn fill_ipcache(maps: &dyn EndpointMaps, entries: &[(IpAddr, u8, u32)]) -> Result<(), LoadError> {
    for &(addr, len, identity) in entries {
        let value = datapath::ipcache_value(identity);
        let full = if addr.is_ipv4() { 32 } else { 128 };
        if len == full {
            maps.update(datapath::ipcache_host_map(addr), &datapath::ipcache_host_key(addr), &value)?;
        } else {
            maps.update(datapath::IPCACHE_MAP, &datapath::ipcache_key(addr, len), &value)?;
        }
    }
    Ok(())
}

/// One policy map entry as the build wrote it (see codegen::entries).
pub use polc::codegen::entries::PolicyEntry;

/// Where an endpoint's policy tables live: one table per enforced
/// direction, replaced whole (the program sees the old table or the new one,
/// never a mix).
pub trait PolicyTables {
    /// Replaces `direction`'s table with one holding exactly `records`.
    /// Fails with [`LoadError::NoMap`] when the direction is not enforced.
    fn replace_table(&self, direction: datapath::Direction, records: &TableRecords) -> Result<(), LoadError>;
}

/// A direction's entries as table records in the C layout: the hash, and
/// the array index in front of it (`polc::codegen::policy_index`).
pub fn policy_records(entries: &[PolicyEntry]) -> TableRecords {
    let index = policy_index(entries, INDEX_ROWS);
    let key = |n: u32| n.to_ne_bytes().to_vec();
    TableRecords {
        hash: entries.iter().map(|e| (datapath::policy_key(e).to_vec(), datapath::policy_value(e))).collect(),
        index: index
            .identities
            .iter()
            .map(|(&identity, rows)| (key(identity), datapath::policy_index_value(rows).to_vec()))
            .collect(),
        rows: index.rows.iter().zip(0..).map(|(entry, row)| (key(row), datapath::policy_value(entry))).collect(),
    }
}

/// Replaces a direction's policy table with `entries`.
pub fn fill_policy(
    tables: &dyn PolicyTables,
    direction: datapath::Direction,
    entries: &[PolicyEntry],
) -> Result<(), LoadError> {
    tables.replace_table(direction, &policy_records(entries))
}

/// (map name, key) -> value.
type Entries = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// Maps in memory: a stand-in for the kernel in tests of map-filling logic.
#[derive(Debug, Default)]
pub struct MemoryMaps {
    pub names: BTreeSet<String>,
    pub contents: RefCell<Entries>,
}

impl MemoryMaps {
    pub fn with_maps(names: &[&str]) -> MemoryMaps {
        MemoryMaps { names: names.iter().map(|n| n.to_string()).collect(), contents: RefCell::default() }
    }

    fn check(&self, map: &str) -> Result<(), LoadError> {
        if self.has_map(map) {
            Ok(())
        } else {
            Err(LoadError::NoMap(map.to_string()))
        }
    }
}

impl EndpointMaps for MemoryMaps {
    fn update(&self, map: &str, key: &[u8], value: &[u8]) -> Result<(), LoadError> {
        self.check(map)?;
        self.contents.borrow_mut().insert((map.to_string(), key.to_vec()), value.to_vec());
        Ok(())
    }

    fn lookup(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, LoadError> {
        self.check(map)?;
        Ok(self.contents.borrow().get(&(map.to_string(), key.to_vec())).cloned())
    }

    fn delete(&self, map: &str, key: &[u8]) -> Result<(), LoadError> {
        self.check(map)?;
        self.contents.borrow_mut().remove(&(map.to_string(), key.to_vec()));
        Ok(())
    }

    fn has_map(&self, map: &str) -> bool {
        self.names.contains(map)
    }
}

/// A table replaced in memory: the map named after the direction holds
/// exactly the new hash records (the array index is derived from them).
impl PolicyTables for MemoryMaps {
    fn replace_table(&self, direction: datapath::Direction, records: &TableRecords) -> Result<(), LoadError> {
        let map = direction.policy_map();
        self.check(map)?;
        let mut contents = self.contents.borrow_mut();
        contents.retain(|(name, _), _| name != map);
        for (key, value) in &records.hash {
            contents.insert((map.to_string(), key.clone()), value.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::Direction;
    use polc::codegen::entries::{EntryAction, EntryInterval, EntryKind};

    #[test]
    fn fills_go_to_the_right_maps_in_the_c_layout() {
        let maps = MemoryMaps::with_maps(&[datapath::IPCACHE_MAP, datapath::IPCACHE_HOST4_MAP, "ep_pol_in"]);
        let (net, host) = (IpAddr::from([10, 0, 0, 0]), IpAddr::from([10, 0, 0, 7]));
        assert!(fill_ipcache(&maps, &[(net, 8, 300), (host, 32, 301)]).is_ok());
        let key = datapath::ipcache_key(net, 8);
        assert_eq!(maps.lookup(datapath::IPCACHE_MAP, &key).ok().flatten(), Some(300u32.to_ne_bytes().to_vec()));
        let key = datapath::ipcache_host_key(host);
        assert_eq!(maps.lookup(datapath::IPCACHE_HOST4_MAP, &key).ok().flatten(), Some(301u32.to_ne_bytes().to_vec()));
        assert_eq!(maps.contents.borrow().len(), 2);

        let tcp = PolicyEntry {
            identity: 300,
            proto: 6,
            kind: EntryKind::Protocol,
            bucket: 0,
            split: false,
            intervals: vec![EntryInterval { low: 80, high: 80, action: EntryAction::Allow, rule: 4, slot: 1 }],
        };
        assert!(fill_policy(&maps, Direction::Ingress, std::slice::from_ref(&tcp)).is_ok());
        let stored = maps.lookup("ep_pol_in", &datapath::policy_key(&tcp)).ok().flatten();
        assert_eq!(stored, Some(datapath::policy_value(&tcp)));
        // A refill replaces the whole table: the old entry is gone.
        let udp = PolicyEntry { proto: 17, ..tcp.clone() };
        assert!(fill_policy(&maps, Direction::Ingress, std::slice::from_ref(&udp)).is_ok());
        assert_eq!(maps.lookup("ep_pol_in", &datapath::policy_key(&tcp)).ok().flatten(), None);
        assert!(maps.lookup("ep_pol_in", &datapath::policy_key(&udp)).ok().flatten().is_some());
        // Egress is not enforced in this shape: no map to fill.
        assert!(matches!(fill_policy(&maps, Direction::Egress, &[tcp]), Err(LoadError::NoMap(_))));
    }
}
