//! polcd, the node agent: builds the policy set with polc, enforces it on
//! the node's endpoints and follows changes.
//!
//! - [`build`]: resolved tables -> runtime artifacts (clang, constants, entries).
//! - [`node`]: the node-wide maps, opened from their pins (ipcache sync).
//! - [`daemon`]: the agent's state and what it does on each event.
//! - [`read`]: reading the policy directory, parsing only the files that changed.
//! - [`serve`]: `polcd run`: the socket server and the file watcher.
//! - [`api`]: the JSON API over the unix socket, and its client.
//! - [`reset`]: removing everything polcd made.

pub mod api;
pub mod build;
pub mod daemon;
pub mod node;
pub mod read;
pub mod reset;
pub mod serve;
