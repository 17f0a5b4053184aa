//! The node runtime: loads built bundles, attaches them to endpoint devices
//! and swaps them on change. Its core (loader, attach, swap) knows nothing
//! of the policy language: it takes built artifacts (objects, constants, map
//! entries); only [`agent`] calls polc, to build them.
//!
//! - [`datapath`]: the binary interface of the BPF datapath (map keys and
//!   values, verdict reasons, events), shared with `templates/bpf/`.
//! - [`loader`]: loading an endpoint object with libbpf-rs: pins, `.rodata`
//!   constants, tail calls, maps, BPF_PROG_TEST_RUN, events, counters; a load's
//!   programs verified on several threads.
//! - [`seam`]: the kernel seam trait over a loaded endpoint's maps, with an
//!   in-memory stand-in, and the map-filling logic written against it.
//! - [`bundle`]: reading a build's output and loading an endpoint from it.
//! - [`netlab`]: network namespaces with veth-attached endpoints, for the
//!   tests and the demo (the "containers" polcd enforces policy on).
//! - [`attach`]: tcx links on an endpoint's host-side veth, pinned, swapped
//!   atomically with `BPF_LINK_UPDATE`, in the device's network namespace.
//! - [`swap`]: one enforced endpoint; policy changes as new generations
//!   (fresh per-endpoint maps, filled first), switched all or nothing.
//! - [`shape`]: what one direction's programs are made of, read from the
//!   object file: a code-shape change reloads only the directions it changes.
//! - [`parallel`]: loads and table installs on several threads at once.
//! - [`agent`]: polcd itself (the only part that uses polc, to build).

pub mod agent;
pub mod attach;
pub mod bundle;
pub mod datapath;
pub mod loader;
pub mod netlab;
pub mod parallel;
pub mod seam;
pub mod shape;
pub mod swap;
