//! The policy-only bundle: what `polc build` writes for a policy set without
//! an inventory (or with `--policy-only`), and its specialization to the
//! endpoints a node learns later.
//!
//! ```text
//! OUT/manifest.json        kind "policy-only": build options, node config,
//!                          the policy files in check order, shape -> object
//! OUT/policy/NNN-<file>.pol  the policy sources (the one source of truth)
//! OUT/policy.json          the checked model, for inspection only
//! OUT/identities.lock      the numbers the policy set has given out
//! OUT/node_config.h        the node header every object was built with
//! OUT/objects/<hash>.o     one object per code shape an endpoint could need
//! ```
//!
//! [`specialize`] re-checks the copied sources (same order, so the same
//! rule ids), adds the inventory, resolves with the bundle's lock (known
//! label sets keep their numbers, new ones get the next free number, as in
//! any build) and plans every endpoint exactly as a full build does; each
//! endpoint's object is picked among the prebuilt ones by its code shape.
//! clang is never run: its result is what a full build with that inventory
//! would write into `manifest.json` and `endpoints/<name>/ep_config.h`.

use super::bundle::{
    check_format, compile_all, located_rules, plan_endpoints_numbered, write, BuildReport, BundleOptions,
    EndpointManifest, Manifest, ManifestRule, BUNDLE_FORMAT,
};
use super::clang::Clang;
use super::header::{render_node, render_shape, shape_name, BuildOptions, Feature, Features, NodeConfig};
use super::CodegenError;
use crate::ir::Resolved;
use crate::resolve::{self, IdentityLock, LockError, ResolveConfig, ResolveError};
use crate::sema::model::{Inventory, PolicySet};
use crate::syntax::ast::{Action, Direction};
use crate::syntax::SourceMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `manifest.json`'s `kind` for a policy-only bundle.
pub const KIND: &str = "policy-only";

/// `manifest.json` of a policy-only bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyOnlyManifest {
    pub format: u32,
    /// Always [`KIND`].
    pub kind: String,
    pub node_header: String,
    /// Events and trace level, as for a full build: they shape the objects.
    pub build: BuildOptions,
    /// Map sizes: in the node header, and the policy map capacity check.
    pub node: NodeConfig,
    /// The policy files under the bundle, in the order they are checked.
    pub policy: Vec<String>,
    /// The checked model as JSON (for people; specialization reads `policy`).
    pub checked: String,
    pub lock: String,
    /// Code shape (as [`shape_name`]) -> object hash, for every shape
    /// [`possible_shapes`] gives.
    pub shapes: BTreeMap<String, String>,
    /// Every rule, located in the file `polc build` read it from (not the
    /// copy under `policy/`): carried into each specialization's manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ManifestRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecializeError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not a policy-only bundle manifest: {reason}")]
    NotPolicyOnly { path: PathBuf, reason: String },
    /// The copied sources no longer check (a bundle edited by hand, or made
    /// by a polc whose language differs).
    #[error("the bundle's policy does not check:\n{0}")]
    Policy(String),
    #[error("`{path}`: {source}")]
    Lock { path: PathBuf, source: LockError },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// An endpoint needs a shape the bundle has no object for (a bug in
    /// [`possible_shapes`] if the bundle is intact).
    #[error("endpoint `{endpoint}` needs code shape `{shape}`, which the bundle has no object for")]
    MissingShape { endpoint: String, shape: String },
    /// The node header this polc renders differs from the bundle's: its
    /// objects were built from other templates.
    #[error("the bundle's node header differs from this polc's: rebuild the bundle with this polc")]
    NodeHeader,
    #[error(transparent)]
    Format(#[from] super::bundle::FormatMismatch),
}

/// Every code shape an endpoint of `set` could need, whatever its labels
/// and addresses. Per feature that shapes code:
/// - `IPV4`, `IPV6`: an endpoint has an IPv4 address, an IPv6 one, or both
///   (the checker requires at least one): three choices.
/// - `INGRESS_POLICY` (and `EGRESS_POLICY` alike): off only if no policy
///   has an `ingress` section; on only if a policy with one selects every
///   endpoint (an empty selector); else both, since whether an endpoint is
///   selected depends on labels not known yet.
/// - `DENY_RULES`: possible only if an enforced direction has a `deny` rule
///   among its sections; then both, as the deny may match no peer.
/// - `EVENTS`: as the build options say.
///
/// So at most 3 x 2 x 2 x 2 = 24 shapes, and 3 for a set with no policy.
/// Over-approximating is safe (an unused object); missing a shape is not,
/// and [`specialize`] reports it.
pub fn possible_shapes(set: &PolicySet, options: &BuildOptions) -> Vec<Features> {
    // (the values `enforced` can take, whether a deny rule exists)
    let direction = |d: Direction| {
        let sections: Vec<_> = set.policies.iter().filter_map(|p| p.section(d).map(|rules| (p, rules))).collect();
        let enforced = if sections.is_empty() {
            vec![false]
        } else if sections.iter().any(|(p, _)| p.selector.requirements.is_empty()) {
            vec![true]
        } else {
            vec![false, true]
        };
        let deny = sections.iter().flat_map(|(_, rules)| rules.iter()).any(|r| r.action == Action::Deny);
        (enforced, deny)
    };
    let (ingress, ingress_deny) = direction(Direction::Ingress);
    let (egress, egress_deny) = direction(Direction::Egress);
    let families = [vec![Feature::Ipv4], vec![Feature::Ipv6], vec![Feature::Ipv4, Feature::Ipv6]];
    let mut shapes = Vec::new();
    for family in &families {
        for &ingress_on in &ingress {
            for &egress_on in &egress {
                let deny_possible = (ingress_on && ingress_deny) || (egress_on && egress_deny);
                for deny in [false, true].into_iter().filter(|deny| !deny || deny_possible) {
                    let mut shape: Features = family.iter().copied().collect();
                    let switches = [
                        (Feature::IngressPolicy, ingress_on),
                        (Feature::EgressPolicy, egress_on),
                        (Feature::DenyRules, deny),
                        (Feature::Events, options.events),
                    ];
                    shape.extend(switches.into_iter().filter(|(_, on)| *on).map(|(f, _)| f));
                    shapes.push(shape);
                }
            }
        }
    }
    shapes
}

/// Writes the policy-only bundle of `set` (checked from `sources`, in their
/// order) into `out`, with `lock` as its identities.lock. The inventory of
/// `set`, if any, is left out: [`specialize`] takes the endpoints.
pub fn build_policy_only(
    sources: &SourceMap,
    set: &PolicySet,
    lock: &IdentityLock,
    out: &Path,
    options: &BundleOptions,
) -> Result<BuildReport, CodegenError> {
    let node_header = render_node(&options.node)?;
    write(&out.join("node_config.h"), &node_header)?;

    let mut policy = Vec::new();
    for (index, (_, file)) in sources.files().enumerate() {
        let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let relative = format!("policy/{index:03}-{name}");
        write(&out.join(&relative), &file.text)?;
        policy.push(relative);
    }
    let checked = PolicySet { policies: set.policies.clone(), inventory: Inventory::default() };
    write(&out.join("policy.json"), &serde_json::to_string_pretty(&checked).unwrap_or_default())?;
    write(&out.join(resolve::LOCK_FILE), &lock.render())?;

    let shapes = possible_shapes(set, &options.build);
    let headers = shapes.iter().map(render_shape).collect::<Result<Vec<_>, _>>()?;
    let clang = Clang::new(&options.cache.clone().unwrap_or_else(|| out.join(".cache")))?;
    let compiled = compile_all(&clang, &node_header, &headers, options.jobs.max(1), options.progress)?;
    let mut report = BuildReport { objects: compiled.len(), ..BuildReport::default() };
    let mut by_shape = BTreeMap::new();
    for (shape, object) in shapes.iter().zip(&compiled) {
        let target = out.join("objects").join(format!("{}.o", object.hash));
        write(&target, "")?; // creates objects/
        std::fs::copy(&object.path, &target).map_err(|source| CodegenError::Io { path: target, source })?;
        by_shape.insert(shape_name(shape), object.hash.clone());
        report.clang_runs += usize::from(object.compiled);
        if !object.warnings.is_empty() {
            report.warnings.push(object.warnings.clone());
        }
    }
    let manifest = PolicyOnlyManifest {
        format: BUNDLE_FORMAT,
        kind: KIND.to_string(),
        node_header: "node_config.h".to_string(),
        build: options.build,
        node: options.node,
        policy,
        checked: "policy.json".to_string(),
        lock: resolve::LOCK_FILE.to_string(),
        shapes: by_shape,
        rules: located_rules(set, sources),
    };
    write(&out.join("manifest.json"), &serde_json::to_string_pretty(&manifest).unwrap_or_default())?;
    Ok(report)
}

/// A policy-only bundle specialized to an inventory: what a full build
/// with that inventory writes, without its objects (they are the bundle's).
#[derive(Debug, Clone)]
pub struct Specialized {
    pub resolved: Resolved,
    /// The bundle's lock with the inventory's label sets added.
    pub lock: IdentityLock,
    pub node_header: String,
    /// Object hash -> code shape, for the objects the endpoints use.
    pub objects: BTreeMap<String, String>,
    pub endpoints: Vec<EndpointManifest>,
    /// Per endpoint (same order): its `ep_config.h`.
    pub headers: Vec<String>,
    /// The bundle's rules, located (the manifest's `rules`).
    pub rules: Vec<ManifestRule>,
}

impl Specialized {
    /// What a full build writes as `manifest.json`.
    pub fn manifest(&self) -> Manifest<'_> {
        Manifest::new(&self.resolved, false, self.objects.clone(), self.endpoints.clone())
            .with_rules(self.rules.clone())
    }

    /// Writes a full bundle into `out` (objects copied from `bundle`), as
    /// `polc build` with the inventory would: the runtime loads it as such.
    pub fn write(&self, bundle: &Path, out: &Path) -> Result<(), CodegenError> {
        write(&out.join("node_config.h"), &self.node_header)?;
        for (endpoint, header) in self.endpoints.iter().zip(&self.headers) {
            write(&out.join(&endpoint.header), header)?;
        }
        for hash in self.objects.keys() {
            let name = format!("objects/{hash}.o");
            write(&out.join(&name), "")?; // creates objects/
            std::fs::copy(bundle.join(&name), out.join(&name))
                .map_err(|source| CodegenError::Io { path: out.join(&name), source })?;
        }
        write(&out.join(resolve::LOCK_FILE), &self.lock.render())?;
        write(&out.join("manifest.json"), &self.manifest().to_json())
    }
}

/// Specializes the policy-only bundle at `bundle` to `inventory` (its
/// endpoints and node): resolution, headers, constants and table entries as
/// a full build makes them, objects chosen by code shape. Never runs clang.
pub fn specialize(bundle: &Path, inventory: &Inventory) -> Result<Specialized, SpecializeError> {
    PolicyOnly::open(bundle)?.specialize(inventory, |index, _| index as u32 + 1)
}

/// A policy-only bundle read and checked once, to be specialized to many
/// inventories (a node whose endpoints come and go): the sources are
/// parsed and checked by [`PolicyOnly::open`] only.
#[derive(Debug, Clone)]
pub struct PolicyOnly {
    dir: PathBuf,
    manifest: PolicyOnlyManifest,
    set: PolicySet,
    lock: IdentityLock,
    node_header: String,
}

impl PolicyOnly {
    /// Reads the bundle at `dir`: its manifest, node header, lock, and the
    /// policy sources (checked).
    pub fn open(dir: &Path) -> Result<PolicyOnly, SpecializeError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| SpecializeError::Read { path, source })
        };
        let manifest_path = dir.join("manifest.json");
        let text = read("manifest.json")?;
        let manifest: PolicyOnlyManifest = serde_json::from_str(&text)
            .map_err(|e| SpecializeError::NotPolicyOnly { path: manifest_path.clone(), reason: e.to_string() })?;
        if manifest.kind != KIND {
            let reason = format!("its kind is `{}`", manifest.kind);
            return Err(SpecializeError::NotPolicyOnly { path: manifest_path, reason });
        }
        check_format(&text, &manifest_path)?;

        let node_header = render_node(&manifest.node)?;
        if node_header != read(&manifest.node_header)? {
            return Err(SpecializeError::NodeHeader);
        }
        let mut sources = SourceMap::default();
        for name in &manifest.policy {
            sources.add(dir.join(name), read(name)?);
        }
        let frontend = crate::driver::check_sources(sources);
        if frontend.has_errors() {
            let diagnostics = frontend.diagnostics.sorted();
            return Err(SpecializeError::Policy(crate::diag::render::render_all_text(&frontend.sources, &diagnostics)));
        }
        let lock = IdentityLock::parse(&read(&manifest.lock)?)
            .map_err(|source| SpecializeError::Lock { path: dir.join(&manifest.lock), source })?;
        Ok(PolicyOnly { dir: dir.to_path_buf(), manifest, set: frontend.checked, lock, node_header })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bundle's located rules (its manifest's `rules`).
    pub fn rules(&self) -> &[ManifestRule] {
        &self.manifest.rules
    }

    /// The bundle's identity lock.
    pub fn lock(&self) -> &IdentityLock {
        &self.lock
    }

    /// Specializes to `inventory`, each endpoint numbered on the node by
    /// `number(index, name)`.
    pub fn specialize(
        &self,
        inventory: &Inventory,
        number: impl Fn(usize, &str) -> u32,
    ) -> Result<Specialized, SpecializeError> {
        self.specialize_with_lock(inventory, &self.lock, number)
    }

    /// [`PolicyOnly::specialize`], resolving with `lock` instead of the
    /// bundle's: a node agent passes the bundle's lock extended with the
    /// numbers it gave out before ([`IdentityLock::extended_with`]), so an
    /// endpoint added later does not renumber the label sets already
    /// running (new sets are numbered in sorted order).
    pub fn specialize_with_lock(
        &self,
        inventory: &Inventory,
        lock: &IdentityLock,
        number: impl Fn(usize, &str) -> u32,
    ) -> Result<Specialized, SpecializeError> {
        let manifest = &self.manifest;
        let mut set = self.set.clone();
        set.inventory = inventory.clone();
        let (resolved, lock) = resolve::resolve(&set, lock, &ResolveConfig::default())?;

        let options = BundleOptions { build: manifest.build, node: manifest.node, ..BundleOptions::default() };
        let mut objects = BTreeMap::new();
        let mut endpoints = Vec::new();
        let mut headers = Vec::new();
        for mut planned in plan_endpoints_numbered(&resolved, &set.inventory.endpoints, &options, number)? {
            let Some(hash) = manifest.shapes.get(&planned.object_label) else {
                return Err(SpecializeError::MissingShape {
                    endpoint: planned.manifest.name,
                    shape: planned.object_label,
                });
            };
            objects.insert(hash.clone(), planned.object_label.clone());
            planned.manifest.object = hash.clone();
            endpoints.push(planned.manifest);
            headers.push(planned.header);
        }
        let node_header = self.node_header.clone();
        Ok(Specialized { resolved, lock, node_header, objects, endpoints, headers, rules: manifest.rules.clone() })
    }
}
