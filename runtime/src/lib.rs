//! The node runtime: loads built bundles, attaches them to endpoint devices
//! and swaps them on change. It knows nothing of the policy language; it
//! takes built artifacts (objects, constants, map entries).
//!
//! Not built yet: see issue "polcd: load, attach, hot-swap".
