//! Resolution: from the checked policy set to the tables the datapath holds.
//!
//! Entry point (what `polc show`, codegen and the runtime call):
//!
//! ```ignore
//! let (resolved, lock) = polc::resolve::resolve(&set, &old_lock, &ResolveConfig::default())?;
//! ```
//!
//! `resolved` ([`ir::Resolved`]) holds the identity table, the ipcache and,
//! per endpoint, its ingress and egress [`ir::DirectionTable`]s; `lock` is
//! the updated `identities.lock` to write back next to the policy set. The
//! meaning reproduced is `lang-spec/SEMANTICS.md`; the table contract is in
//! `ir.rs`. For changes over time, [`Resolver`] keeps its state and
//! recomputes only the endpoints a change touches ([`Resolver::update`]).
//!
//! The steps, one module each:
//! - [`identity`]: label sets and prefixes -> numbers, `identities.lock`;
//! - [`selector`]: the selector cache, peer -> identities;
//! - [`table`] and [`l4`]: per endpoint and direction, the resolved table;
//! - [`capacity`]: the per-endpoint entry limit;
//! - [`ipcache`]: prefix -> identity, and the identity list;
//! - [`impact`] and [`resolver`]: the impact graph and incremental updates;
//! - [`show`]: what `polc show` prints.

pub mod capacity;
pub mod identity;
pub mod impact;
pub mod ipcache;
pub mod l4;
pub mod resolver;
pub mod selector;
pub mod show;
pub mod table;

pub use capacity::CapacityError;
pub use identity::{IdentityLock, LockError};
pub use resolver::{ChangeSet, Resolver, Undo};

use crate::ir;
use crate::sema::model::PolicySet;
use std::collections::BTreeSet;

/// The file name of the lock, next to the policy set.
pub const LOCK_FILE: &str = "identities.lock";

/// What resolution can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveConfig {
    /// Label keys that do not count towards an endpoint's identity (nor can
    /// be selected on): endpoints differing only in these share a number.
    /// Empty by default; Kubernetes deployments would add
    /// `pod-template-hash` and `controller-revision-hash`, which change on
    /// every rollout without changing what a workload is. On the command
    /// line: `polc show --ignore-label KEY` (repeatable).
    pub ignored_label_keys: BTreeSet<String>,
    /// Most policy entries one endpoint may need, counted with
    /// [`ir::DirectionTable::entry_count`] over both directions.
    pub max_entries_per_endpoint: usize,
}

impl ResolveConfig {
    pub const DEFAULT_MAX_ENTRIES: usize = 16384;
}

impl Default for ResolveConfig {
    fn default() -> Self {
        ResolveConfig {
            ignored_label_keys: BTreeSet::new(),
            max_entries_per_endpoint: ResolveConfig::DEFAULT_MAX_ENTRIES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// An `identities.lock` that cannot be used.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// An endpoint whose tables would not fit the configured capacity.
    #[error(transparent)]
    Capacity(#[from] Box<CapacityError>),
}

/// Resolves a checked, error-free policy set against the lock; returns the
/// resolved tables and the lock to write back.
pub fn resolve(
    set: &PolicySet,
    lock: &IdentityLock,
    config: &ResolveConfig,
) -> Result<(ir::Resolved, IdentityLock), ResolveError> {
    let resolver = Resolver::new(set.clone(), lock, config.clone())?;
    Ok((resolver.resolved().clone(), resolver.lock().clone()))
}

/// Where a policy set's lock lives: in the first path if it is a directory,
/// else next to the first file.
pub fn lock_path(paths: &[std::path::PathBuf]) -> std::path::PathBuf {
    let dir = match paths.first() {
        Some(first) if first.is_dir() => first.clone(),
        Some(first) => first.parent().map(std::path::Path::to_path_buf).unwrap_or_default(),
        None => std::path::PathBuf::new(),
    };
    dir.join(LOCK_FILE)
}
