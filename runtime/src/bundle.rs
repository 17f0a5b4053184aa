//! Reading a build's output (`OUT/manifest.json`, `OUT/objects/`) and
//! loading an endpoint from it: its object, its `.rodata` constants, the
//! node's ipcache and its policy entries. The manifest is written by the
//! compiler (`polc::codegen::bundle`); only the fields the runtime needs are
//! read here.

use crate::datapath::{self, Direction};
use crate::loader::{LoadError, LoadSpec, LoadedEndpoint, PinDir};
use crate::seam::{fill_ipcache, fill_policy, PolicyEntry};
use serde::Deserialize;
use std::collections::BTreeMap;
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
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpcacheEntry {
    pub prefix: ipnet::IpNet,
    pub identity: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EndpointEntry {
    pub name: String,
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
}

#[derive(Debug, Clone, Deserialize)]
pub struct DirectionEntry {
    pub enforced: bool,
    pub entries: Vec<PolicyEntry>,
}

/// A build's output directory.
pub struct Bundle {
    dir: PathBuf,
    pub manifest: Manifest,
}

impl Bundle {
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Read { path: path.clone(), source })?;
        Ok(Bundle { dir: dir.to_path_buf(), manifest: parse_manifest(&text, &path)? })
    }

    pub fn endpoint(&self, name: &str) -> Result<&EndpointEntry, BundleError> {
        self.manifest.endpoints.iter().find(|e| e.name == name).ok_or_else(|| BundleError::NoEndpoint(name.to_string()))
    }

    /// Loads `name`'s object with its constants under `pins`, and fills the
    /// ipcache and its policy maps from the manifest.
    pub fn load_endpoint(&self, name: &str, pins: &PinDir) -> Result<LoadedEndpoint, BundleError> {
        let endpoint = self.endpoint(name)?;
        let mut constants = Vec::new();
        for (var, hex) in &endpoint.rodata {
            let bytes = decode_hex(hex)
                .ok_or_else(|| BundleError::Constant { endpoint: name.to_string(), name: var.clone() })?;
            constants.push((var.clone(), bytes));
        }
        let object = self.dir.join("objects").join(format!("{}.o", endpoint.object));
        let map_sizes = [(datapath::METRICS_MAP.to_string(), endpoint.metrics_entries)];
        let spec = LoadSpec {
            endpoint: name,
            object: &object,
            constants: &constants,
            map_sizes: &map_sizes,
            node_pins: pins.node_maps(),
            endpoint_pins: pins.endpoint_maps(endpoint.constants.id),
        };
        let mut loaded = LoadedEndpoint::load(&spec)?;
        loaded.set_rule_slots(endpoint.rule_slots.clone());
        let ipcache: Vec<_> =
            self.manifest.ipcache.iter().map(|e| (e.prefix.network(), e.prefix.prefix_len(), e.identity)).collect();
        fill_ipcache(&loaded, &ipcache)?;
        for (direction, table) in [(Direction::Ingress, &endpoint.ingress), (Direction::Egress, &endpoint.egress)] {
            if table.enforced {
                fill_policy(&loaded, direction, &table.entries)?;
            }
        }
        Ok(loaded)
    }
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
    serde_json::from_str(text).map_err(|source| BundleError::Parse { path: path.to_path_buf(), source })
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
        let policy_only = r#"{"format": 1, "kind": "policy-only", "shapes": {}}"#;
        assert!(matches!(parse_manifest(policy_only, path), Err(BundleError::PolicyOnly(_))));
        assert!(matches!(parse_manifest(r#"{"format": 1}"#, path), Err(BundleError::Parse { .. })));
        let full = r#"{"format": 1, "ipcache": [], "endpoints": []}"#;
        assert!(parse_manifest(full, path).is_ok_and(|m| m.endpoints.is_empty()));
    }
}
