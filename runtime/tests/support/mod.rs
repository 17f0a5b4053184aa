//! Shared by the kernel tests: an example policy set resolved by polc,
//! its inventory as lab endpoints, and the endpoints enforced on their veths.

#![allow(dead_code, clippy::panic)] // each test binary uses part of it; tests fail by panicking

use polc::codegen::header::{BuildOptions, NodeConfig};
use polc::ir::Resolved;
use polc::resolve::{IdentityLock, ResolveConfig};
use polc::sema::model::PolicySet;
use polc_runtime::agent::build::{ipcache_entries, NodeBuilder};
use polc_runtime::attach::Device;
use polc_runtime::loader::PinDir;
use polc_runtime::netlab::{unique_prefix, EndpointSpec, Lab};
use polc_runtime::seam;
use polc_runtime::swap::{Artifact, Enforced};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn example_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("examples").join(name)
}

/// Parses, checks and resolves a policy set directory (its lock included).
pub fn resolve_dir(dir: &Path) -> (PolicySet, Resolved) {
    let frontend = polc::driver::load(&[dir.to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!frontend.has_errors(), "{} has errors", dir.display());
    let lock_text = std::fs::read_to_string(dir.join(polc::resolve::LOCK_FILE)).unwrap_or_default();
    let lock = IdentityLock::parse(&lock_text).unwrap_or_else(|e| panic!("{e}"));
    let (resolved, _) =
        polc::resolve::resolve(&frontend.checked, &lock, &ResolveConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    (frontend.checked, resolved)
}

pub fn node_config() -> NodeConfig {
    let mut node = NodeConfig::default();
    node.sizes.ipcache = 1024;
    node.sizes.conntrack = 16384;
    node.sizes.policy = 4096;
    node.sizes.metrics = 1024;
    node.sizes.events_ringbuf = 1 << 16;
    node
}

/// A node: the lab holding the inventory's endpoints, and what is enforced.
/// Drop order: links first, then pins, then the namespaces.
pub struct Node {
    pub enforced: BTreeMap<String, Enforced>,
    pub builder: NodeBuilder,
    pub pins: PinDir,
    pub lab: Lab,
    _cache: tempfile::TempDir,
}

impl Node {
    /// Creates the lab endpoints of `set`'s inventory (their veths as the
    /// inventory names them, in a node namespace of their own).
    pub fn new(test: &str, set: &PolicySet) -> Node {
        let prefix = unique_prefix();
        let mut lab = Lab::new(&prefix).unwrap_or_else(|e| panic!("{e}"));
        for def in &set.inventory.endpoints {
            let spec = EndpointSpec {
                name: def.name.clone(),
                host_iface: def.iface.clone().unwrap_or_else(|| format!("polc-{}", def.name)),
                ipv4: def.ipv4,
                ipv6: def.ipv6,
            };
            lab.add_endpoint(spec).unwrap_or_else(|e| panic!("{e}"));
        }
        let pins = PinDir::create(&format!("test-{}-{test}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
        let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let builder = NodeBuilder::new(cache.path(), node_config(), BuildOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        Node { enforced: BTreeMap::new(), builder, pins, lab, _cache: cache }
    }

    pub fn endpoint_dir(&self, name: &str) -> PathBuf {
        self.pins.path().join("endpoints").join(name)
    }

    pub fn device(&self, name: &str) -> Device {
        let ep = self.lab.endpoint(name).unwrap_or_else(|e| panic!("{e}"));
        Device::in_netns(&ep.spec.host_iface, self.lab.node_ns())
    }

    /// The artifact of endpoint `name` under `resolved`.
    pub fn artifact(&self, set: &PolicySet, resolved: &Resolved, name: &str) -> Artifact {
        let index = set.inventory.endpoints.iter().position(|e| e.name == name).unwrap_or_else(|| panic!("no `{name}`"));
        let policy = resolved.endpoint(name).unwrap_or_else(|| panic!("`{name}` not resolved"));
        self.builder.endpoint(policy, &set.inventory.endpoints[index], index as u32 + 1).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds, loads and attaches every endpoint; fills the ipcache.
    pub fn enforce_all(&mut self, set: &PolicySet, resolved: &Resolved) {
        for def in &set.inventory.endpoints {
            let artifact = self.artifact(set, resolved, &def.name);
            let enforced = Enforced::start(&artifact, &self.device(&def.name), &self.pins.node_maps(), &self.endpoint_dir(&def.name))
                .unwrap_or_else(|e| panic!("enforce `{}`: {e}", def.name));
            self.enforced.insert(def.name.clone(), enforced);
        }
        let any = self.enforced.values().find_map(|e| e.current()).unwrap_or_else(|| panic!("no endpoint loaded"));
        seam::fill_ipcache(any, &ipcache_entries(resolved)).unwrap_or_else(|e| panic!("{e}"));
    }
}
