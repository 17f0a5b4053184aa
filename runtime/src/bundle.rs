//! Reading a build's output (`OUT/manifest.json`, `OUT/objects/`) and
//! loading an endpoint from it: its object, its `.rodata` constants, the
//! node's ipcache and its policy entries. The manifest is written by the
//! compiler (`polc::codegen::bundle`); only the fields the runtime needs are
//! read here.

use crate::agent::catalog::RuleInfo;
use crate::datapath::{self, Direction};
use crate::loader::{LoadError, LoadSpec, LoadedEndpoint, PinDir};
use crate::seam::{fill_ipcache, fill_policy, PolicyEntry};
use crate::swap::Artifact;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not a polc manifest: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    /// Built without an inventory: it has objects but no endpoints yet.
    #[error("`{0}` is a policy-only bundle: specialize it to the node's endpoints first (`polc::codegen::policy_only::specialize`)")]
    PolicyOnly(PathBuf),
    #[error(transparent)]
    Format(#[from] polc::codegen::bundle::FormatMismatch),
    #[error("the bundle has no endpoint `{0}`")]
    NoEndpoint(String),
    #[error("endpoint `{endpoint}`: constant `{name}` is not hex bytes")]
    Constant { endpoint: String, name: String },
    #[error(transparent)]
    Load(#[from] LoadError),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub ipcache: Vec<IpcacheEntry>,
    pub endpoints: Vec<EndpointEntry>,
    /// The identities the build gave out (for naming peers); absent in
    /// older manifests.
    #[serde(default)]
    pub identities: Vec<IdentityEntry>,
    /// Every rule with its name, policy, action and file:line (for naming
    /// the rule ids the kernel reports); absent in older manifests.
    #[serde(default)]
    pub rules: Vec<RuleInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdentityEntry {
    pub id: u32,
    pub kind: IdentityKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    Reserved { name: String },
    Endpoint { labels: BTreeMap<String, String> },
    Cidr { prefix: ipnet::IpNet },
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpcacheEntry {
    pub prefix: ipnet::IpNet,
    pub identity: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EndpointEntry {
    pub name: String,
    /// The host-side device polcd attaches to (`polcd run --bundle`), and
    /// the endpoint's namespace (recorded); absent in older manifests.
    #[serde(default)]
    pub iface: Option<String>,
    #[serde(default)]
    pub netns: Option<String>,
    pub object: String,
    pub constants: Constants,
    pub rodata: BTreeMap<String, String>,
    pub rule_slots: Vec<u32>,
    pub metrics_entries: u32,
    pub ingress: DirectionEntry,
    pub egress: DirectionEntry,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Constants {
    pub id: u32,
    pub identity: u32,
    /// The endpoint's addresses (for naming peers); absent in older manifests.
    #[serde(default)]
    pub addresses: Addresses,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Addresses {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DirectionEntry {
    pub enforced: bool,
    pub entries: Vec<PolicyEntry>,
}

/// A build's output directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    pub manifest: Manifest,
}

impl Bundle {
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Read { path: path.clone(), source })?;
        Bundle::from_text(dir, &text)
    }

    /// The bundle in `dir` whose manifest reads `text`.
    pub fn from_text(dir: &Path, text: &str) -> Result<Bundle, BundleError> {
        Ok(Bundle { dir: dir.to_path_buf(), manifest: parse_manifest(text, &dir.join("manifest.json"))? })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the runtime loads for `name`: its object, `.rodata` constants,
    /// counter array size, rule slots and policy entries.
    pub fn artifact(&self, name: &str) -> Result<Artifact, BundleError> {
        let endpoint = self.endpoint(name)?;
        let entries = |table: &DirectionEntry| table.enforced.then(|| table.entries.clone());
        Ok(Artifact {
            endpoint: name.to_string(),
            object: self.object(endpoint),
            constants: rodata_constants(endpoint)?,
            map_sizes: vec![(datapath::METRICS_MAP.to_string(), endpoint.metrics_entries)],
            rule_slots: endpoint.rule_slots.clone(),
            ingress: entries(&endpoint.ingress),
            egress: entries(&endpoint.egress),
            // Bundles may come from other builds: compare the code itself.
            direction_shapes: None,
        })
    }

    fn object(&self, endpoint: &EndpointEntry) -> PathBuf {
        self.dir.join("objects").join(format!("{}.o", endpoint.object))
    }

    pub fn endpoint(&self, name: &str) -> Result<&EndpointEntry, BundleError> {
        self.manifest.endpoints.iter().find(|e| e.name == name).ok_or_else(|| BundleError::NoEndpoint(name.to_string()))
    }

    /// Loads `name`'s object with its constants under `pins`, and fills the
    /// ipcache and its policy maps from the manifest.
    pub fn load_endpoint(&self, name: &str, pins: &PinDir) -> Result<LoadedEndpoint, BundleError> {
        let endpoint = self.endpoint(name)?;
        let constants = rodata_constants(endpoint)?;
        let object = self.object(endpoint);
        let map_sizes = [(datapath::METRICS_MAP.to_string(), endpoint.metrics_entries)];
        let spec = LoadSpec {
            endpoint: name,
            object: &object,
            constants: &constants,
            map_sizes: &map_sizes,
            node_pins: pins.node_maps(),
            endpoint_pins: pins.endpoint_maps(endpoint.constants.id),
            program_threads: crate::loader::all_cpus(),
        };
        let mut loaded = LoadedEndpoint::load(&spec)?;
        loaded.set_rule_slots(endpoint.rule_slots.clone());
        fill_ipcache(&loaded, &self.manifest.ipcache_entries())?;
        for (direction, table) in [(Direction::Ingress, &endpoint.ingress), (Direction::Egress, &endpoint.egress)] {
            if table.enforced {
                fill_policy(&loaded, direction, &table.entries)?;
            }
        }
        Ok(loaded)
    }
}

impl Manifest {
    /// The node ipcache: (prefix address, prefix length, identity).
    pub fn ipcache_entries(&self) -> Vec<(IpAddr, u8, u32)> {
        self.ipcache.iter().map(|e| (e.prefix.network(), e.prefix.prefix_len(), e.identity)).collect()
    }
}

/// An endpoint's `.rodata` values, decoded from the manifest's hex.
fn rodata_constants(endpoint: &EndpointEntry) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    let mut constants = Vec::new();
    for (var, hex) in &endpoint.rodata {
        let bytes = decode_hex(hex)
            .ok_or_else(|| BundleError::Constant { endpoint: endpoint.name.clone(), name: var.clone() })?;
        constants.push((var.clone(), bytes));
    }
    Ok(constants)
}

/// A full build's manifest; a policy-only one (`"kind": "policy-only"`) is
/// told apart so that the error says what to do.
fn parse_manifest(text: &str, path: &Path) -> Result<Manifest, BundleError> {
    #[derive(Deserialize)]
    struct Kind {
        kind: Option<String>,
    }
    if let Ok(Kind { kind: Some(kind) }) = serde_json::from_str(text) {
        if kind == "policy-only" {
            return Err(BundleError::PolicyOnly(path.to_path_buf()));
        }
    }
    let manifest =
        serde_json::from_str(text).map_err(|source| BundleError::Parse { path: path.to_path_buf(), source })?;
    polc::codegen::bundle::check_format(text, path)?;
    Ok(manifest)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [_, _] => u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn hex_constants_decode() {
        assert_eq!(decode_hex("00010000"), Some(vec![0, 1, 0, 0]));
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("abc"), None);
    }

    #[test]
    fn a_policy_only_manifest_is_told_apart() {
        let path = Path::new("out/manifest.json");
        let policy_only = r#"{"format": 2, "kind": "policy-only", "shapes": {}}"#;
        assert!(matches!(parse_manifest(policy_only, path), Err(BundleError::PolicyOnly(_))));
        assert!(matches!(parse_manifest(r#"{"format": 2}"#, path), Err(BundleError::Parse { .. })));
        let full = r#"{"format": 2, "ipcache": [], "endpoints": []}"#;
        assert!(parse_manifest(full, path).is_ok_and(|m| m.endpoints.is_empty()));
        // A manifest of another format (format 1 held LPM entries) is refused, not misread.
        let format_1 = r#"{"format": 1, "ipcache": [], "endpoints": []}"#;
        let refused = parse_manifest(format_1, path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("bundle format 1") && refused.contains("rebuild"), "{refused}");
    }

    #[test]
    fn a_manifest_names_its_endpoints_identities_and_rules() {
        let text = r#"{"format": 2, "ipcache": [],
            "identities": [{"id": 2, "kind": {"reserved": {"name": "world"}}},
                           {"id": 256, "kind": {"endpoint": {"labels": {"id": "app1"}}}},
                           {"id": 16777217, "kind": {"cidr": {"prefix": "10.0.0.0/8"}}}],
            "rules": [{"id": 1, "name": "no-app3", "policy": "guard", "action": "deny",
                       "direction": "ingress", "file": "p/guard.pol", "line": 6}],
            "endpoints": [{"name": "app1", "object": "h", "rodata": {}, "rule_slots": [1], "metrics_entries": 52,
                "constants": {"id": 7, "identity": 256, "addresses": {"ipv4": "10.200.1.11", "ipv6": null}},
                "ingress": {"enforced": true, "entries": []}, "egress": {"enforced": false, "entries": []}}]}"#;
        let manifest = parse_manifest(text, Path::new("m.json")).unwrap_or_else(|e| panic!("{e}"));
        let catalog = crate::agent::catalog::Catalog::of_manifest(&manifest);
        assert_eq!(catalog.endpoint(7), "app1");
        assert_eq!(catalog.peer("10.200.1.11".parse().unwrap_or_else(|e| panic!("{e}")), 256), "app1");
        assert_eq!(catalog.peer("10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}")), 16777217), "10.0.0.0/8");
        assert_eq!(catalog.identities.get(&256).map(String::as_str), Some("app1"));
        let rule = catalog.rule(1).unwrap_or_else(|| panic!("rule 1"));
        assert_eq!((rule.name.as_str(), rule.location()), ("no-app3", "p/guard.pol:6".to_string()));
        // An older manifest (no identities, rules or addresses) still reads.
        let old = r#"{"format": 2, "ipcache": [], "endpoints": [{"name": "a", "object": "h", "rodata": {},
            "rule_slots": [], "metrics_entries": 26, "constants": {"id": 1, "identity": 256},
            "ingress": {"enforced": false, "entries": []}, "egress": {"enforced": false, "entries": []}}]}"#;
        let old = parse_manifest(old, Path::new("m.json")).unwrap_or_else(|e| panic!("{e}"));
        assert!(crate::agent::catalog::Catalog::of_manifest(&old).rules.is_empty());
    }
}
