//! polcd, the node agent: builds the policy set with polc, enforces it on
//! the node's endpoints and follows changes.
//!
//! - [`build`]: resolved tables -> runtime artifacts (clang, constants, entries).
//! - [`node`]: the node-wide maps, opened from their pins (ipcache sync).
//! - [`pins`]: what a previous agent left pinned: adopted, detached or set aside.
//! - [`daemon`]: the agent's state and what it does on each event.
//! - [`bundled`]: `polcd run --bundle`: the agent of a built bundle.
//! - [`read`]: reading the policy directory, reading and parsing only the files that changed.
//! - [`serve`]: `polcd run`: the socket server and the file watcher.
//! - [`api`]: the JSON API over the unix socket, and its client.
//! - [`slot`]: one endpoint as an agent runs it, and its status.
//! - [`reset`]: removing everything polcd made.
//! - [`catalog`], [`monitor`], [`stats`], [`metrics`]: naming what the
//!   kernel reports; the event stream, the counters, Prometheus.
//! - [`counter_slots`]: each rule keeps its counter slot across versions.

pub mod api;
pub mod build;
pub mod bundled;
pub mod catalog;
pub mod counter_slots;
pub mod daemon;
pub mod metrics;
pub mod monitor;
pub mod node;
pub mod pins;
pub mod read;
pub mod reset;
pub mod serve;
pub mod slot;
pub mod stats;
