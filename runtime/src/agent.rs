//! polcd, the node agent: builds the policy set with polc, enforces it on
//! the node's endpoints and follows changes.
//!
//! - [`build`]: resolved tables -> runtime artifacts (clang, constants, entries).

pub mod build;
