//! Code generation: from one endpoint's resolved tables ([`crate::ir`]) to
//! what the datapath needs. Templates and encoders read IR only, never the AST.
//!
//! - [`entries`]: a [`DirectionTable`](crate::ir::DirectionTable) as policy
//!   map entries (LPM prefixes) whose longest match is exactly
//!   `DirectionTable::lookup`.
//! - [`header`]: features (ENABLE_*), constants, and the minijinja-rendered
//!   node and endpoint headers.
//! - [`clang`]: compiling `templates/bpf/` once per code shape (or per
//!   endpoint), with an object cache keyed by what shapes the code.
//! - [`bundle`]: a build's output directory; [`policy_only`]: the bundle
//!   built without an inventory, and its specialization to endpoints.
//! - [`lookup_model`]: the datapath's policy lookup over encoded entries, in
//!   Rust; [`bundle_trace`]: one flow answered from a built bundle with it
//!   (`polc trace --from-bundle`).

pub mod bundle;
pub mod bundle_trace;
pub mod clang;
pub mod entries;
pub mod header;
pub mod lookup_model;
pub mod policy_index;
pub mod policy_only;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// An IR table keyed by identity 0, which the datapath reserves for `any`.
    #[error("endpoint `{endpoint}`: identity 0 cannot key a policy table (it stands for any peer)")]
    ReservedIdentity { endpoint: String },
    /// More entries than the policy map holds, e.g. thousands of port ranges.
    #[error("endpoint `{endpoint}`: {direction} policy needs {needed} map entries, the map holds {capacity}")]
    Capacity { endpoint: String, direction: &'static str, needed: usize, capacity: u32 },
    /// More distinct rules than counter slots (65,534) in one endpoint.
    #[error("endpoint `{endpoint}`: {rules} distinct rules, at most 65534 per endpoint")]
    TooManyRules { endpoint: String, rules: usize },
    #[error("template `{name}`: {source}")]
    Template { name: String, source: minijinja::Error },
    #[error("cannot run `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    /// clang's diagnostics name the generated files under `dir`.
    #[error("clang failed compiling {what} (generated sources in `{dir}`):\n{stderr}")]
    Clang { what: String, dir: PathBuf, stderr: String },
    #[error("cannot write `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}
