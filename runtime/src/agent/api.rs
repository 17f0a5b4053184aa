//! polcd's client API: JSON over a unix socket, one request per line, one
//! response per line (see runtime/README.md for the full description).
//!
//! ```text
//! {"cmd":"status"}
//! {"cmd":"endpoint_add","endpoint":{"name":"app4","iface":"polc-app4","ipv4":"10.200.1.14","labels":{"id":"app4"}}}
//! {"cmd":"endpoint_del","name":"app4"}
//! {"cmd":"endpoint_list"}
//! {"cmd":"stats"}
//! {"cmd":"monitor","verdict":"dropped","from":"app3"}
//! ```
//!
//! `monitor` streams: after its `{"ok":true}` line the connection carries
//! one event object per line until the client closes it.
//!
//! Every response is `{"ok":true,...}` or `{"ok":false,"error":"..."}`.

use super::monitor::MonitorFilter;
use super::stats::Stats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The socket's file name in the state directory.
pub const SOCKET: &str = "polcd.sock";

pub fn socket_path(state: &Path) -> PathBuf {
    state.join(SOCKET)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    EndpointAdd {
        endpoint: EndpointSpec,
    },
    EndpointDel {
        name: String,
    },
    EndpointList,
    /// Counters per endpoint and per rule.
    Stats,
    /// Streams verdict events (every filter field optional).
    Monitor(MonitorFilter),
}

/// An endpoint added at run time (as `endpoint NAME { ... }` would declare it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub name: String,
    /// The host-side device, in the namespace polcd attaches in.
    pub iface: String,
    /// The endpoint's own namespace (recorded, shown in status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One endpoint as status and list show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub name: String,
    /// `file` (declared in the policy set), `api` (added with endpoint add)
    /// or `bundle` (`polcd run --bundle`).
    pub source: String,
    pub identity: u32,
    pub iface: Option<String>,
    pub netns: Option<String>,
    /// `enforcing`, `waiting-for-device`, `no-iface` or `failed`.
    pub state: String,
    /// The generation the links run (0: none yet).
    pub generation: u64,
    /// The hook its programs run on: `tcx` or `tc` (`None`: not enforced).
    #[serde(default)]
    pub hook: Option<String>,
    /// The object it runs: its code shape's hash (`None` until this polcd
    /// loaded it, e.g. just after adopting).
    pub program: Option<String>,
    /// The policy version of its last regeneration.
    pub policy_version: u64,
    /// When it was last regenerated, in milliseconds since the Unix epoch.
    pub last_regeneration_ms: Option<u64>,
    /// How its last regeneration was applied: `tables` (new policy tables
    /// for the running programs) or `program` (a new generation loaded).
    #[serde(default)]
    pub last_swap: Option<String>,
    /// The directions (`ingress`, `egress`) whose programs the running
    /// generation loaded. A direction not listed runs the programs of an
    /// earlier generation, kept because the change left its code as it was
    /// (same instructions, maps and constants). `None` until this polcd
    /// loaded a generation (e.g. just after adopting).
    #[serde(default)]
    pub loaded_directions: Option<Vec<String>>,
    pub last_error: Option<String>,
}

/// The last reload of the policy set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub at_ms: u64,
    pub took_ms: f64,
    /// Endpoints whose programs were rebuilt and swapped.
    pub regenerated: usize,
    /// Their names.
    pub regenerated_endpoints: Vec<String>,
    /// Those of them whose policy tables only were swapped (the programs
    /// stayed); the others loaded a new generation.
    #[serde(default)]
    pub tables_swapped: Vec<String>,
    /// Endpoints the change did not touch (not rebuilt, not swapped).
    pub skipped: usize,
    /// Endpoints the impact graph had resolution recompute (a superset of
    /// the changed ones; the rest were kept without recomputation).
    pub recomputed: usize,
    pub removed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub policies: PathBuf,
    pub pin_root: PathBuf,
    /// How many policy sets have been applied (1 after the first).
    pub policy_version: u64,
    pub last_reload: Option<ReloadStatus>,
    /// Why the latest change was not applied (the previous policy enforces).
    pub last_error: Option<String>,
    pub endpoints: Vec<EndpointStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<EndpointStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

impl Response {
    pub fn ok() -> Response {
        Response { ok: true, error: None, status: None, endpoints: None, stats: None }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response { ok: false, error: Some(message.into()), status: None, endpoints: None, stats: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach polcd at `{path}` (is it running?): {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("talking to polcd: {0}")]
    Io(#[from] std::io::Error),
    #[error("polcd answered something unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Refused(String),
}

/// Sends one request to the polcd of `state` and reads its response.
pub fn request(state: &Path, request: &Request) -> Result<Response, ClientError> {
    let path = socket_path(state);
    let mut stream = UnixStream::connect(&path).map_err(|source| ClientError::Connect { path, source })?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}
