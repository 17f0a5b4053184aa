//! A build's output directory (`polc build PATH -o OUT`), from resolved IR
//! and the inventory's addresses:
//!
//! ```text
//! OUT/manifest.json               identities, ipcache, and per endpoint: header,
//!                                 object hash, features, constants, table entries
//! OUT/node_config.h               the node header
//! OUT/endpoints/<name>/ep_config.h  the endpoint's header (the auditable artifact)
//! OUT/objects/<hash>.o            one object per code shape (or per endpoint
//!                                 with `per_endpoint_compile`)
//! OUT/.cache/                     clang's inputs and outputs, reused by rebuilds
//! ```
//!
//! Compiles run in parallel (`jobs` threads), one per distinct code shape.

use super::clang::{Clang, CompiledObject};
use super::entries::{assign_slots, check_capacity, direction_entries, PolicyEntry};
use super::header::{
    code_shape, features_of, policy_map_summary, render_endpoint, render_node, render_shape, shape_name, BuildOptions,
    EndpointAddresses, EndpointConstants, NodeConfig,
};
use super::CodegenError;
use crate::ir::{IdentityInfo, Resolved};
use crate::sema::model::{EndpointDef, PolicySet};
use crate::syntax::SourceMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The manifest format this polc writes and the only one it reads (full and
/// policy-only bundles alike). Bumped whenever what a manifest means
/// changes, so a node never loads entries it would read differently:
/// 1: policy entries were LPM trie prefixes;
/// 2: policy entries are hashed `{identity, proto, kind, bucket}` -> port intervals.
pub const BUNDLE_FORMAT: u32 = 2;

/// A manifest written in another format than [`BUNDLE_FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` is bundle format {found}, and this polc reads format {BUNDLE_FORMAT}: rebuild it with this polc (`polc build`)")]
pub struct FormatMismatch {
    pub path: PathBuf,
    pub found: u32,
}

/// Checks the `format` of the manifest `text` read from `path`. A manifest
/// without a readable `format` passes: the reader's own parse reports it.
pub fn check_format(text: &str, path: &Path) -> Result<(), FormatMismatch> {
    #[derive(serde::Deserialize)]
    struct Format {
        format: Option<u32>,
    }
    match serde_json::from_str(text) {
        Ok(Format { format: Some(found) }) if found != BUNDLE_FORMAT => {
            Err(FormatMismatch { path: path.to_path_buf(), found })
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Clone)]
pub struct BundleOptions {
    pub build: BuildOptions,
    pub node: NodeConfig,
    /// Constants as #defines, one object per endpoint (for auditing and to
    /// check it decides like the shared objects).
    pub per_endpoint_compile: bool,
    pub jobs: usize,
    /// Where clang's inputs and objects are kept between builds (default `OUT/.cache`).
    pub cache: Option<PathBuf>,
    /// Show `[done/total]` on stderr while compiling (for a terminal).
    pub progress: bool,
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions {
            build: BuildOptions::default(),
            node: NodeConfig::default(),
            per_endpoint_compile: false,
            jobs: 2,
            cache: None,
            progress: false,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub format: u32,
    pub node_header: &'static str,
    pub per_endpoint_compile: bool,
    pub identities: &'a [IdentityInfo],
    pub ipcache: Vec<IpcacheEntry>,
    pub objects: BTreeMap<String, String>,
    pub endpoints: Vec<EndpointManifest>,
    /// Every rule of the policy set, located in its file: what a node needs
    /// to name the rule ids the kernel reports (`polcd monitor`, `stats`).
    /// Absent when the build was not given them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ManifestRule>,
}

/// One rule as a person finds it (the manifest's `rules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ManifestRule {
    /// Its number in the policy set (`RuleId`: what the datapath reports).
    pub id: u32,
    pub name: String,
    pub policy: String,
    /// `allow` or `deny`.
    pub action: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// The policy file as the build read it.
    pub file: String,
    /// 1-based line of the rule in `file`.
    pub line: u32,
}

impl ManifestRule {
    /// `file:line`
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Every rule of `set`, located through the `sources` it was checked from.
pub fn located_rules(set: &PolicySet, sources: &SourceMap) -> Vec<ManifestRule> {
    set.rules()
        .map(|rule| {
            let file = sources.file(rule.span.file);
            ManifestRule {
                id: rule.id.0,
                name: rule.name.clone(),
                policy: rule.policy.clone(),
                action: rule.action.keyword().to_string(),
                direction: rule.direction.keyword().to_string(),
                file: file.path.display().to_string(),
                line: file.line_col(rule.span.start as usize).line as u32,
            }
        })
        .collect()
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct IpcacheEntry {
    pub prefix: ipnet::IpNet,
    pub identity: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointManifest {
    pub name: String,
    /// The inventory's host-side device and the endpoint's namespace: where
    /// `polcd run --bundle` attaches (absent: not attached by polcd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub header: String,
    pub object: String,
    pub features: Vec<&'static str>,
    pub constants: EndpointConstants,
    /// `.rodata` variable -> hex bytes (empty with a per-endpoint compile).
    pub rodata: BTreeMap<String, String>,
    /// The rule id of each counter slot (the first is slot 1).
    pub rule_slots: Vec<u32>,
    /// Size of the endpoint's counter array (`ep_metrics`).
    pub metrics_entries: u32,
    pub ingress: DirectionManifest,
    pub egress: DirectionManifest,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectionManifest {
    pub enforced: bool,
    pub enforced_by: Vec<String>,
    pub entries: Vec<PolicyEntry>,
}

/// What a build did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    pub endpoints: usize,
    pub objects: usize,
    /// How many times clang ran (0 when everything came from the cache).
    pub clang_runs: usize,
    pub warnings: Vec<String>,
}

/// One endpoint, rendered and encoded, waiting for its object.
pub struct PlannedEndpoint {
    pub manifest: EndpointManifest,
    /// Its header (`endpoints/<name>/ep_config.h`).
    pub header: String,
    /// The header clang compiles for it (its shape's, or its own).
    compile_header: String,
    /// What its object is called in the manifest: the shape, or the endpoint.
    pub object_label: String,
}

/// Renders and encodes every endpoint of `resolved` (no compile, no files),
/// numbered 1, 2, ... in order.
pub fn plan_endpoints(
    resolved: &Resolved,
    inventory: &[EndpointDef],
    options: &BundleOptions,
) -> Result<Vec<PlannedEndpoint>, CodegenError> {
    plan_endpoints_numbered(resolved, inventory, options, |index, _| index as u32 + 1)
}

/// [`plan_endpoints`] with each endpoint's number on the node (LXC_ID) given
/// by `number(index, name)`: a node that keeps numbers across changes.
pub fn plan_endpoints_numbered(
    resolved: &Resolved,
    inventory: &[EndpointDef],
    options: &BundleOptions,
    number: impl Fn(usize, &str) -> u32,
) -> Result<Vec<PlannedEndpoint>, CodegenError> {
    let mut planned = Vec::new();
    for (index, policy) in resolved.endpoints.iter().enumerate() {
        let def = inventory.iter().find(|d| d.name == policy.name);
        let addresses = def.map(EndpointAddresses::of).unwrap_or_default();
        let constants = EndpointConstants {
            name: policy.name.clone(),
            identity: policy.identity.0,
            id: number(index, &policy.name),
            trace_level: options.build.trace_level,
            addresses,
        };
        let features = features_of(policy, &addresses, &options.build);
        let mut ingress = direction_entries(&policy.name, &policy.ingress)?;
        let mut egress = direction_entries(&policy.name, &policy.egress)?;
        let rule_slots = assign_slots(&policy.name, [&mut ingress, &mut egress])?;
        check_capacity(&policy.name, "ingress", &ingress, options.node.sizes.policy)?;
        check_capacity(&policy.name, "egress", &egress, options.node.sizes.policy)?;
        let maps = [
            policy_map_summary("ep_pol_in", &policy.ingress, &ingress),
            policy_map_summary("ep_pol_eg", &policy.egress, &egress),
        ];
        let enforced_maps: Vec<_> = maps
            .into_iter()
            .zip([policy.ingress.enforced, policy.egress.enforced])
            .filter(|(_, on)| *on)
            .map(|(m, _)| m)
            .collect();
        let header = render_endpoint(&constants, &features, &enforced_maps)?;
        let (compile_header, rodata) = if options.per_endpoint_compile {
            (header.clone(), BTreeMap::new())
        } else {
            let rodata = constants.rodata().into_iter().map(|(name, bytes)| (name, hex(&bytes))).collect();
            (render_shape(&features)?, rodata)
        };
        let direction = |table: &crate::ir::DirectionTable, entries| DirectionManifest {
            enforced: table.enforced,
            enforced_by: table.enforced_by.clone(),
            entries,
        };
        planned.push(PlannedEndpoint {
            manifest: EndpointManifest {
                name: policy.name.clone(),
                iface: def.and_then(|d| d.iface.clone()),
                netns: def.and_then(|d| d.netns.clone()),
                header: format!("endpoints/{}/ep_config.h", policy.name),
                object: String::new(),
                features: features.iter().map(|f| f.define()).collect(),
                constants,
                rodata,
                metrics_entries: metrics_entries(rule_slots.len()),
                rule_slots,
                ingress: direction(&policy.ingress, ingress),
                egress: direction(&policy.egress, egress),
            },
            header,
            compile_header,
            object_label: if options.per_endpoint_compile {
                policy.name.clone()
            } else {
                shape_name(&code_shape(&features))
            },
        });
    }
    Ok(planned)
}

pub fn build_bundle(
    resolved: &Resolved,
    inventory: &[EndpointDef],
    out: &Path,
    options: &BundleOptions,
) -> Result<BuildReport, CodegenError> {
    build_bundle_with_rules(resolved, inventory, &[], out, options)
}

/// [`build_bundle`] whose manifest also names the `rules` (from [`located_rules`]).
pub fn build_bundle_with_rules(
    resolved: &Resolved,
    inventory: &[EndpointDef],
    rules: &[ManifestRule],
    out: &Path,
    options: &BundleOptions,
) -> Result<BuildReport, CodegenError> {
    let node_header = render_node(&options.node)?;
    write(&out.join("node_config.h"), &node_header)?;

    let planned = plan_endpoints(resolved, inventory, options)?;
    for p in &planned {
        write(&out.join(&p.manifest.header), &p.header)?;
    }

    // One compile per distinct header (code shape), in parallel.
    let mut shapes: Vec<String> = planned.iter().map(|p| p.compile_header.clone()).collect();
    shapes.sort();
    shapes.dedup();
    let clang = Clang::new(&options.cache.clone().unwrap_or_else(|| out.join(".cache")))?;
    let compiled = compile_all(&clang, &node_header, &shapes, options.jobs.max(1), options.progress)?;

    let mut report = BuildReport { endpoints: planned.len(), ..BuildReport::default() };
    let mut objects = BTreeMap::new();
    let objects_dir = out.join("objects");
    std::fs::create_dir_all(&objects_dir).map_err(|source| CodegenError::Io { path: objects_dir.clone(), source })?;
    for (header, object) in shapes.iter().zip(&compiled) {
        let target = objects_dir.join(format!("{}.o", object.hash));
        std::fs::copy(&object.path, &target).map_err(|source| CodegenError::Io { path: target, source })?;
        let label = planned.iter().find(|p| &p.compile_header == header).map(|p| p.object_label.clone());
        objects.insert(object.hash.clone(), label.unwrap_or_default());
        report.clang_runs += usize::from(object.compiled);
        if !object.warnings.is_empty() {
            report.warnings.push(object.warnings.clone());
        }
    }
    report.objects = compiled.len();
    let mut endpoints = Vec::new();
    for mut p in planned {
        let i = shapes.binary_search(&p.compile_header).unwrap_or_default();
        p.manifest.object = compiled[i].hash.clone();
        endpoints.push(p.manifest);
    }
    let manifest = Manifest::new(resolved, options.per_endpoint_compile, objects, endpoints).with_rules(rules.to_vec());
    write(&out.join("manifest.json"), &manifest.to_json())?;
    Ok(report)
}

impl<'a> Manifest<'a> {
    /// The manifest of `resolved`'s endpoints, given each its object.
    pub fn new(
        resolved: &'a Resolved,
        per_endpoint_compile: bool,
        objects: BTreeMap<String, String>,
        endpoints: Vec<EndpointManifest>,
    ) -> Manifest<'a> {
        Manifest {
            format: BUNDLE_FORMAT,
            node_header: "node_config.h",
            per_endpoint_compile,
            identities: &resolved.identities,
            ipcache: resolved
                .ipcache
                .iter()
                .map(|(prefix, id)| IpcacheEntry { prefix: prefix.trunc(), identity: id.0 })
                .collect(),
            objects,
            endpoints,
            rules: Vec::new(),
        }
    }

    /// The manifest naming `rules` (see [`Manifest::rules`]).
    pub fn with_rules(self, rules: Vec<ManifestRule>) -> Manifest<'a> {
        Manifest { rules, ..self }
    }

    /// `manifest.json`'s text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Compiles every header with `jobs` threads; results in input order.
pub(crate) fn compile_all(
    clang: &Clang,
    node_header: &str,
    headers: &[String],
    jobs: usize,
    progress: bool,
) -> Result<Vec<CompiledObject>, CodegenError> {
    let next = Mutex::new(0usize);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<CompiledObject, CodegenError>>>> =
        Mutex::new(headers.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(headers.len()) {
            scope.spawn(|| loop {
                let i = {
                    let Ok(mut next) = next.lock() else { return };
                    let i = *next;
                    *next += 1;
                    i
                };
                let Some(header) = headers.get(i) else { return };
                let result = clang.compile(node_header, header);
                if let Ok(mut results) = results.lock() {
                    results[i] = Some(result);
                }
                let finished = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if progress {
                    eprint!("\r[{finished}/{}] objects", headers.len());
                }
            });
        }
    });
    if progress && !headers.is_empty() {
        eprintln!();
    }
    let results = results.into_inner().unwrap_or_default();
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(CodegenError::Io {
                    path: PathBuf::from("<compile worker>"),
                    source: std::io::Error::other("a compile thread stopped"),
                })
            })
        })
        .collect()
}

/// Counters per slot: one per verdict reason and direction (templates/bpf/events.h).
pub const COUNTERS_PER_SLOT: u32 = 13 * 2;

/// The fewest counter slots an array has (slot 0 and 3 rules).
const MIN_COUNTER_SLOTS: u32 = 4;

/// The size of an endpoint's counter array for `rules` counted rules (slot
/// 0 counts verdicts of no rule): slots rounded up to a power of two, at
/// least 4, so a rule added later usually fits the running array and the
/// change stays a table swap (a larger array is a new object load). At most
/// twice the memory of an exact fit from 2 rules on (4 slots: 1.6 KiB per
/// possible CPU).
pub fn metrics_entries(rules: usize) -> u32 {
    let slots = (rules as u32 + 1).next_power_of_two().max(MIN_COUNTER_SLOTS);
    slots * COUNTERS_PER_SLOT
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<(), CodegenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| CodegenError::Io { path: dir.to_path_buf(), source })?;
    }
    std::fs::write(path, contents).map_err(|source| CodegenError::Io { path: path.to_path_buf(), source })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
