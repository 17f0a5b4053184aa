//! polc: the policy compiler.
//!
//! The pipeline, one layer per module:
//! - [`syntax`]: source files, spans, the pest grammar (from `lang-spec/`), the AST.
//! - [`sema`]: named check passes over the AST, producing the checked policy set.
//! - [`resolve`]: identities, the selector cache and the per-endpoint tables ([`ir`]).
//! - [`diag`]: diagnostics as values, rendered as `file:line:col` text or JSON.
//! - [`format`]: the canonical layout (`polc fmt`).
//! - [`eval`]: the reference evaluator (what a policy set means for one flow).
//! - [`graph`]: who may talk to whom, drawn (DOT, SVG, HTML matrix).
//!
//! [`driver`] ties them together for the CLI and for tests.

pub mod codegen;
pub mod diag;
pub mod driver;
pub mod eval;
pub mod format;
pub mod graph;
pub mod ir;
pub mod resolve;
pub mod sema;
pub mod syntax;
