//! Shared by the kernel tests: an example policy set resolved by polc,
//! its inventory as lab endpoints, and the endpoints enforced on their veths.

#![allow(dead_code, clippy::panic)] // each test binary uses part of it; tests fail by panicking

pub mod matrix;
pub mod monitor;

use polc::codegen::header::{BuildOptions, NodeConfig};
use polc::ir::Resolved;
use polc::resolve::{IdentityLock, ResolveConfig};
use polc::sema::model::PolicySet;
use polc_runtime::agent::api::{self, AgentStatus, Request};
use polc_runtime::agent::build::{ipcache_entries, NodeBuilder};
use polc_runtime::attach::{link_pin, AttachMode, Device};
use polc_runtime::datapath::Direction;
use polc_runtime::loader::PinDir;
use polc_runtime::netlab::{bind_retrying, in_netns};
use polc_runtime::netlab::{unique_prefix, EndpointSpec, Lab};
use polc_runtime::seam;
use polc_runtime::swap::{Artifact, Enforced};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets per second of the test flows.
pub const RATE: u64 = 12_000;

pub fn example_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("examples").join(name)
}

/// A policy directory: the l3-l4-rule example's endpoints and `policy` as
/// its one policy file.
pub fn policy_dir(policy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let endpoints =
        std::fs::read_to_string(example_dir("l3-l4-rule").join("endpoints.pol")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("endpoints.pol"), endpoints).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("policy.pol"), policy).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// The program ids an endpoint's two pinned links run (pins under `dir`).
pub fn program_ids(dir: &Path) -> Vec<u32> {
    Direction::BOTH
        .iter()
        .map(|d| {
            let link = libbpf_rs::Link::open(link_pin(dir, *d)).unwrap_or_else(|e| panic!("{e}"));
            link.info().unwrap_or_else(|e| panic!("{e}")).prog_id
        })
        .collect()
}

/// Parses, checks and resolves a policy set directory (its lock included).
pub fn resolve_dir(dir: &Path) -> (PolicySet, Resolved) {
    let frontend = polc::driver::load(&[dir.to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!frontend.has_errors(), "{} has errors", dir.display());
    let lock_text = std::fs::read_to_string(dir.join(polc::resolve::LOCK_FILE)).unwrap_or_default();
    let lock = IdentityLock::parse(&lock_text).unwrap_or_else(|e| panic!("{e}"));
    let (resolved, _) =
        polc::resolve::resolve(&frontend.checked, &lock, &ResolveConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    (frontend.checked, resolved)
}

/// An in-process agent's configuration on a lab node: endpoints' devices in
/// `netns`, pins under `pins`, no debounce, default events, tcx.
pub fn agent_config(policies: &Path, state: &Path, netns: &str, pins: &Path) -> polc_runtime::agent::daemon::Config {
    polc_runtime::agent::daemon::Config {
        policies: policies.to_path_buf(),
        state: state.to_path_buf(),
        netns: Some(netns.to_string()),
        pin_root: pins.to_path_buf(),
        debounce: Duration::ZERO,
        observe: Default::default(),
        attach: AttachMode::Auto,
    }
}

pub fn node_config() -> NodeConfig {
    let mut node = NodeConfig::default();
    node.sizes.ipcache = 1024;
    node.sizes.conntrack = 16384;
    node.sizes.policy = 4096;
    node.sizes.metrics = 1024;
    node.sizes.events_ringbuf = 1 << 16;
    node
}

/// A node: the lab holding the inventory's endpoints, and what is enforced.
/// Drop order: links first, then pins, then the namespaces.
pub struct Node {
    /// How [`Node::enforce_all`] attaches (default: auto).
    pub attach: AttachMode,
    pub enforced: BTreeMap<String, Enforced>,
    pub builder: NodeBuilder,
    pub pins: PinDir,
    pub lab: Lab,
    _cache: tempfile::TempDir,
}

impl Node {
    /// Creates the lab endpoints of `set`'s inventory (their veths as the
    /// inventory names them, in a node namespace of their own).
    pub fn new(test: &str, set: &PolicySet) -> Node {
        let prefix = unique_prefix();
        let mut lab = Lab::new(&prefix).unwrap_or_else(|e| panic!("{e}"));
        for def in &set.inventory.endpoints {
            let spec = EndpointSpec {
                name: def.name.clone(),
                host_iface: def.iface.clone().unwrap_or_else(|| format!("polc-{}", def.name)),
                ipv4: def.ipv4,
                ipv6: def.ipv6,
            };
            lab.add_endpoint(spec).unwrap_or_else(|e| panic!("{e}"));
        }
        let pins = PinDir::create(&format!("test-{}-{test}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
        let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let builder =
            NodeBuilder::new(cache.path(), node_config(), BuildOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        Node { attach: AttachMode::Auto, enforced: BTreeMap::new(), builder, pins, lab, _cache: cache }
    }

    pub fn endpoint_dir(&self, name: &str) -> PathBuf {
        self.pins.path().join("endpoints").join(name)
    }

    pub fn device(&self, name: &str) -> Device {
        let ep = self.lab.endpoint(name).unwrap_or_else(|e| panic!("{e}"));
        Device::in_netns(&ep.spec.host_iface, self.lab.node_ns()).with_mode(self.attach)
    }

    /// The artifact of endpoint `name` under `resolved`.
    pub fn artifact(&self, set: &PolicySet, resolved: &Resolved, name: &str) -> Artifact {
        let index =
            set.inventory.endpoints.iter().position(|e| e.name == name).unwrap_or_else(|| panic!("no `{name}`"));
        let policy = resolved.endpoint(name).unwrap_or_else(|| panic!("`{name}` not resolved"));
        self.builder
            .endpoint(policy, &set.inventory.endpoints[index], index as u32 + 1)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds, loads and attaches every endpoint; fills the ipcache.
    pub fn enforce_all(&mut self, set: &PolicySet, resolved: &Resolved) {
        for def in &set.inventory.endpoints {
            let artifact = self.artifact(set, resolved, &def.name);
            let enforced = Enforced::start(
                &artifact,
                &self.device(&def.name),
                &self.pins.node_maps(),
                &self.endpoint_dir(&def.name),
            )
            .unwrap_or_else(|e| panic!("enforce `{}`: {e}", def.name));
            self.enforced.insert(def.name.clone(), enforced);
        }
        let any = self.enforced.values().find_map(|e| e.current()).unwrap_or_else(|| panic!("no endpoint loaded"));
        seam::fill_ipcache(any, &ipcache_entries(resolved)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A lab enforcing policy `first` (with the l3-l4-rule endpoints, see
/// [`policy_dir`]), and app1's artifact under `first` and under `second`:
/// a node ready to swap app1 between two policy versions.
pub struct TwoVersions {
    pub node: Node,
    /// The policy set of `first`.
    pub set: PolicySet,
    pub versions: [Artifact; 2],
}

pub fn two_versions(test: &str, first: &str, second: &str) -> TwoVersions {
    let (dir1, dir2) = (policy_dir(first), policy_dir(second));
    let (set, resolved1) = resolve_dir(dir1.path());
    let (set2, resolved2) = resolve_dir(dir2.path());
    let mut node = Node::new(test, &set);
    node.enforce_all(&set, &resolved1);
    let versions = [node.artifact(&set, &resolved1, "app1"), node.artifact(&set2, &resolved2, "app1")];
    TwoVersions { node, set, versions }
}

/// A receiver with a large buffer (no loss of our own making), counting
/// datagrams with a valid sequence number.
pub fn receiver(ns: &str, addr: IpAddr, port: u16) -> UdpSocket {
    let socket = in_netns(ns, move || bind_retrying(|| UdpSocket::bind(SocketAddr::new(addr, port))))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let size: libc::c_int = 16 << 20;
    // SAFETY: a valid socket and a c_int option value.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.set_read_timeout(Some(Duration::from_millis(300))).ok();
    socket
}

pub fn count(socket: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut received = 0u64;
        let mut buf = [0u8; 64];
        loop {
            match socket.recv(&mut buf) {
                Ok(8) => received += 1,
                Ok(_) => {}
                Err(_) if stop.load(Ordering::SeqCst) => return received,
                Err(_) => {}
            }
        }
    })
}

/// Sends paced datagrams from `ns` to `to` until `stop`; returns how many.
pub fn send(ns: &str, to: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("{e}"));
            let start = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let due = start.elapsed().as_micros() as u64 * RATE / 1_000_000;
                while sent < due {
                    if socket.send_to(&sent.to_be_bytes(), to).is_ok() {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A running polcd, killed (SIGKILL) when dropped.
pub struct Polcd {
    child: Child,
    log: PathBuf,
}

impl Polcd {
    pub fn start(policies: &Path, state: &Path, netns: &str, pins: &Path) -> Polcd {
        Polcd::start_with(policies, state, netns, pins, &[])
    }

    /// Starts `polcd run` with `extra` arguments (e.g. `--attach tc`).
    pub fn start_with(policies: &Path, state: &Path, netns: &str, pins: &Path, extra: &[&str]) -> Polcd {
        let source = ["--policies".to_string(), policies.display().to_string()];
        Polcd::spawn(state, netns, pins, &source, extra)
    }

    /// Starts `polcd run --bundle DIR`.
    pub fn start_bundle(bundle: &Path, state: &Path, netns: &str, pins: &Path) -> Polcd {
        Polcd::spawn(state, netns, pins, &["--bundle".to_string(), bundle.display().to_string()], &[])
    }

    fn spawn(state: &Path, netns: &str, pins: &Path, source: &[String], extra: &[&str]) -> Polcd {
        let log = state.with_extension("log");
        let file = std::fs::File::options().create(true).append(true).open(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_polcd"))
            .args(["--state", &state.display().to_string(), "run"])
            .args(source)
            .args(["--netns", netns, "--pin-root", &pins.display().to_string(), "--debounce-ms", "50"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        Polcd { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Polcd {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn status(state: &Path) -> Option<AgentStatus> {
    api::request(state, &Request::Status).ok().and_then(|r| r.status)
}

/// Polls status until `done` holds (at most 60 s: builds run clang).
pub fn wait_for(state: &Path, polcd: &Polcd, what: &str, done: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = status(state).filter(|s| done(s)) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status {:#?}\nlog:\n{}",
            status(state),
            polcd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn all_enforcing(s: &AgentStatus) -> bool {
    !s.endpoints.is_empty() && s.endpoints.iter().all(|e| e.state == "enforcing")
}

pub fn polcd_cli(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_polcd"))
        .args(["--state", &state.display().to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Makes endpoint `app4` (10.200.1.14 behind `polc-app4`) in the lab and adds
/// it to a running polcd through its socket with `labels`.
pub fn add_app4_via_api(node: &mut Node, state: &Path, labels: &str) {
    node.lab
        .add_endpoint(EndpointSpec {
            name: "app4".into(),
            host_iface: "polc-app4".into(),
            ipv4: Some([10, 200, 1, 14].into()),
            ipv6: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let added = polcd_cli(
        state,
        &["endpoint", "add", "app4", "--iface", "polc-app4", "--ipv4", "10.200.1.14", "--labels", labels],
    );
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
}

/// The l3-l4-rule example with app1's policy changed to allow only app3 on tcp/80.
pub const ONLY_APP3: &str =
    "policy l3-l4-rule {\n  select {id=app1}\n  ingress {\n    allow app3-http: from {id=app3} on tcp/80\n  }\n}\n";

/// Copies `files` of example `name` into `dir` (created).
pub fn copy_example(name: &str, files: &[&str], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    for file in files {
        std::fs::copy(example_dir(name).join(file), dir.join(file)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// One UDP flow: from the sender's namespace to the receiver's address
/// and port, in the receiver's namespace.
pub struct Flow<'a> {
    pub from_ns: &'a str,
    pub to_ns: &'a str,
    pub to: IpAddr,
    pub port: u16,
}

/// Two UDP flows at [`RATE`]: one the policy allows, one it denies.
pub struct Flows {
    stop_senders: Arc<AtomicBool>,
    stop_receivers: Arc<AtomicBool>,
    senders: [std::thread::JoinHandle<u64>; 2],
    receivers: [std::thread::JoinHandle<u64>; 2],
}

/// What the flows sent and received.
#[derive(Debug)]
pub struct FlowCounts {
    pub allowed_sent: u64,
    pub allowed_received: u64,
    pub denied_sent: u64,
    pub denied_received: u64,
}

impl Flows {
    pub fn start(allowed: Flow<'_>, denied: Flow<'_>) -> Flows {
        let (stop_receivers, stop_senders) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let receivers = [&allowed, &denied].map(|f| count(receiver(f.to_ns, f.to, f.port), stop_receivers.clone()));
        let senders = [&allowed, &denied].map(|f| send(f.from_ns, SocketAddr::new(f.to, f.port), stop_senders.clone()));
        Flows { stop_senders, stop_receivers, senders, receivers }
    }

    /// Stops the senders, lets the last packets arrive, stops the receivers.
    pub fn stop(self) -> FlowCounts {
        self.stop_senders.store(true, Ordering::SeqCst);
        let [allowed_sent, denied_sent] = self.senders.map(|s| s.join().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
        self.stop_receivers.store(true, Ordering::SeqCst);
        let [allowed_received, denied_received] = self.receivers.map(|r| r.join().unwrap_or(0));
        FlowCounts { allowed_sent, allowed_received, denied_sent, denied_received }
    }
}

impl std::fmt::Display for FlowCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "allowed flow {} sent, {} received; denied flow {} sent, {} delivered",
            self.allowed_sent, self.allowed_received, self.denied_sent, self.denied_received
        )
    }
}
