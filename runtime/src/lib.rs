//! The node runtime: loads built bundles, attaches them to endpoint devices
//! and swaps them on change. It knows nothing of the policy language; it
//! takes built artifacts (objects, constants, map entries).
//!
//! - [`datapath`]: the binary interface of the BPF datapath (map keys and
//!   values, verdict reasons, events), shared with `templates/bpf/`.
//! - [`loader`]: loading an endpoint object with libbpf-rs: pins, `.rodata`
//!   constants, tail calls, maps, BPF_PROG_TEST_RUN, events, counters.
//! - [`seam`]: the kernel seam trait over a loaded endpoint's maps, with an
//!   in-memory stand-in, and the map-filling logic written against it.
//! - [`netlab`]: network namespaces with veth-attached endpoints, for the
//!   tests and the demo (the "containers" polcd enforces policy on).
//!
//! Attaching and hot swapping: see issue "polcd: load, attach, hot-swap".

pub mod attach;
pub mod datapath;
pub mod loader;
pub mod netlab;
pub mod seam;
pub mod swap;
pub mod agent;
