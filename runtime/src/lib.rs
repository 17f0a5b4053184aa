//! The node runtime: loads built bundles, attaches them to endpoint devices
//! and swaps them on change. It knows nothing of the policy language; it
//! takes built artifacts (objects, constants, map entries).
//!
//! - [`netlab`]: network namespaces with veth-attached endpoints, for the
//!   tests and the demo (the "containers" polcd enforces policy on).

pub mod netlab;
