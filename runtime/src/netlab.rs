//! A network lab: endpoints in network namespaces behind veth pairs, all
//! hanging off one "node" namespace, for kernel tests and the demo.
//!
//! Topology (everything inside namespaces this lab creates; nothing is
//! routed to or from the machine's own network):
//!
//! ```text
//!   {prefix}-node netns                      {prefix}-{name} netns
//!   host-side veth (e.g. polc-app1)  <---->  eth0: 10.200.1.11/32, fd00::11/128
//!   route 10.200.1.11/32 dev polc-app1       default via 169.254.1.1 / fe80::1
//!   169.254.1.1/32 + fe80::1 on each veth
//! ```
//!
//! The node namespace forwards between endpoints, like a Cilium node: the
//! host-side veth is where polcd attaches its programs. [`Lab`] removes every
//! namespace it made when dropped, on every exit path (a panicking test too).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("cannot enter network namespace `{ns}`: {source}")]
    Setns { ns: String, source: std::io::Error },
    #[error("no endpoint `{0}` in this lab")]
    UnknownEndpoint(String),
    #[error("a thread in namespace `{0}` panicked")]
    ThreadPanicked(String),
}

/// How long [`Lab::tcp_reaches`] waits for its listener to accept a
/// connection the client side already sees established.
const ACCEPT_WAIT: Duration = Duration::from_secs(5);

/// The address endpoints use as their gateway: the node side of every veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// What an endpoint of the lab looks like.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub name: String,
    /// The host-side veth name, in the node namespace (at most 15 bytes).
    pub host_iface: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone)]
pub struct LabEndpoint {
    pub spec: EndpointSpec,
    /// The endpoint's own network namespace.
    pub netns: String,
}

pub struct Lab {
    prefix: String,
    node_ns: String,
    endpoints: Vec<LabEndpoint>,
}

/// Whether this process may run kernel tests (root, bpffs, `ip`). `Err` says
/// why not. Tests call [`require_kernel`] rather than this.
pub fn kernel_test_capability() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: kernel tests need CAP_BPF and CAP_NET_ADMIN (run as root)".into());
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ")) {
        return Err("bpffs is not mounted on /sys/fs/bpf (scripts/setup.sh mounts it)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("`ip` (iproute2) is not installed (scripts/setup.sh installs it)".into());
    }
    Ok(())
}

/// Gate for kernel tests: `true` to run; `false` (with the reason printed)
/// to skip. Under `CI=true` a skip is a failure: it panics with the reason.
pub fn require_kernel(test: &str) -> bool {
    match kernel_test_capability() {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                #[allow(clippy::panic)]
                {
                    panic!("{test}: kernel test cannot run in CI: {reason}");
                }
            }
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

/// A prefix unique to this process and call, short enough for namespace
/// names: `polc-<pid>-<n>`.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("polc{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Lab {
    /// Creates the node namespace `{prefix}-node` with forwarding on.
    pub fn new(prefix: &str) -> Result<Lab, LabError> {
        let node_ns = format!("{prefix}-node");
        run("ip", &["netns", "add", &node_ns])?;
        let lab = Lab { prefix: prefix.to_string(), node_ns, endpoints: Vec::new() };
        lab.in_node(&["ip", "link", "set", "lo", "up"])?;
        lab.in_node(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        lab.in_node(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        Ok(lab)
    }

    pub fn node_ns(&self) -> &str {
        &self.node_ns
    }

    pub fn endpoints(&self) -> &[LabEndpoint] {
        &self.endpoints
    }

    pub fn endpoint(&self, name: &str) -> Result<&LabEndpoint, LabError> {
        self.endpoints.iter().find(|e| e.spec.name == name).ok_or_else(|| LabError::UnknownEndpoint(name.into()))
    }

    /// `ip netns exec NODE ...` is fine for configuration; only bpffs is
    /// hidden by it (see PLATFORM.md), and nothing here touches bpffs.
    fn in_node(&self, args: &[&str]) -> Result<(), LabError> {
        in_ns(&self.node_ns, args)
    }

    /// Creates the endpoint's namespace and veth pair, addresses and routes.
    pub fn add_endpoint(&mut self, spec: EndpointSpec) -> Result<&LabEndpoint, LabError> {
        let netns = format!("{}-{}", self.prefix, spec.name);
        run("ip", &["netns", "add", &netns])?;
        // Record it first so Drop removes it even if the rest fails.
        self.endpoints.push(LabEndpoint { spec: spec.clone(), netns: netns.clone() });
        let host = spec.host_iface.as_str();
        self.in_node(&["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &netns])?;
        in_ns(&netns, &["ip", "link", "set", "lo", "up"])?;
        in_ns(&netns, &["ip", "link", "set", "eth0", "up"])?;
        self.in_node(&["ip", "link", "set", host, "up"])?;
        let gw4 = GATEWAY_V4.to_string();
        if let Some(v4) = spec.ipv4 {
            self.in_node(&["ip", "addr", "add", &format!("{gw4}/32"), "dev", host])?;
            self.in_node(&["ip", "route", "add", &format!("{v4}/32"), "dev", host])?;
            in_ns(&netns, &["ip", "addr", "add", &format!("{v4}/32"), "dev", "eth0"])?;
            in_ns(&netns, &["ip", "route", "add", &gw4, "dev", "eth0", "scope", "link"])?;
            in_ns(&netns, &["ip", "route", "add", "default", "via", &gw4, "dev", "eth0"])?;
        }
        if let Some(v6) = spec.ipv6 {
            // No duplicate address detection: addresses are usable at once.
            in_ns(&netns, &["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])?;
            self.in_node(&["sysctl", "-qw", &format!("net.ipv6.conf.{host}.accept_dad=0")])?;
            self.in_node(&["ip", "-6", "addr", "add", &format!("{GATEWAY_V6}/64"), "dev", host, "nodad"])?;
            self.in_node(&["ip", "-6", "route", "add", &format!("{v6}/128"), "dev", host])?;
            in_ns(&netns, &["ip", "-6", "addr", "add", &format!("{v6}/128"), "dev", "eth0", "nodad"])?;
            in_ns(&netns, &["ip", "-6", "route", "add", "default", "via", &GATEWAY_V6.to_string(), "dev", "eth0"])?;
        }
        self.endpoint(&spec.name)
    }

    /// Deletes an endpoint's namespace (its veth pair goes with it).
    pub fn remove_endpoint(&mut self, name: &str) -> Result<(), LabError> {
        let index = self
            .endpoints
            .iter()
            .position(|e| e.spec.name == name)
            .ok_or_else(|| LabError::UnknownEndpoint(name.into()))?;
        // Deleting the veth is synchronous; a namespace is torn down lazily
        // by the kernel, so its devices could linger for a moment. The
        // namespace goes whatever the link deletion says, and the entry is
        // dropped only once it is gone (else Drop still removes it).
        let endpoint = &self.endpoints[index];
        let link = self.in_node(&["ip", "link", "del", &endpoint.spec.host_iface]);
        run("ip", &["netns", "del", &endpoint.netns])?;
        self.endpoints.remove(index);
        link
    }

    /// Can `from` reach `to` over TCP on `port`? A listener in `to`'s
    /// namespace accepts; the connection attempt gives up after `timeout`.
    pub fn tcp_reaches(&self, from: &str, to: IpAddr, port: u16, timeout: Duration) -> Result<bool, LabError> {
        let from_ns = self.endpoint(from)?.netns.clone();
        let to_ns = self.owner_ns(to)?;
        let listener = in_netns(&to_ns, move || bind_retrying(|| TcpListener::bind(SocketAddr::new(to, port))))?
            .map_err(|source| LabError::Spawn { command: format!("bind tcp {to}:{port}"), source })?;
        let connected = in_netns(&from_ns, move || TcpStream::connect_timeout(&SocketAddr::new(to, port), timeout))?;
        let Ok(_client) = connected else { return Ok(false) };
        // Connected: the listener has the connection, or is about to (the
        // last ACK of the handshake may still be crossing the veths). Waited
        // for only now, not on a clock started with the attempt: a thread
        // that starts late on a loaded machine does not turn a reach into
        // a miss.
        listener.set_nonblocking(true).ok();
        let deadline = std::time::Instant::now() + ACCEPT_WAIT;
        loop {
            match listener.accept() {
                Ok(_) => return Ok(true),
                Err(e) if accept_again(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Ok(false),
            }
        }
    }

    /// Does a UDP datagram from `from` to `to:port` arrive?
    pub fn udp_reaches(&self, from: &str, to: IpAddr, port: u16, timeout: Duration) -> Result<bool, LabError> {
        let from_ns = self.endpoint(from)?.netns.clone();
        let to_ns = self.owner_ns(to)?;
        let server = in_netns(&to_ns, move || bind_retrying(|| UdpSocket::bind(SocketAddr::new(to, port))))?
            .map_err(|source| LabError::Spawn { command: format!("bind udp {to}:{port}"), source })?;
        server.set_read_timeout(Some(timeout)).ok();
        let sent = in_netns(&from_ns, move || {
            let any: IpAddr = if to.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
            UdpSocket::bind(SocketAddr::new(any, 0)).and_then(|s| s.send_to(b"polc-probe", SocketAddr::new(to, port)))
        })?;
        let mut buf = [0u8; 64];
        Ok(sent.is_ok() && matches!(server.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"polc-probe"))
    }

    /// Does a ping (ICMP or ICMPv6 echo) from `from` to `to` get a reply?
    pub fn ping_reaches(&self, from: &str, to: IpAddr, timeout: Duration) -> Result<bool, LabError> {
        let from_ns = &self.endpoint(from)?.netns;
        let wait = timeout.as_secs().max(1).to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", from_ns, "ping", "-n", "-q", "-c", "1", "-W", &wait, &to.to_string()])
            .output()
            .map_err(|source| LabError::Spawn { command: "ping".into(), source })?;
        Ok(out.status.success())
    }

    /// The namespace holding address `addr`: an endpoint's.
    fn owner_ns(&self, addr: IpAddr) -> Result<String, LabError> {
        self.endpoints
            .iter()
            .find(|e| e.spec.ipv4.map(IpAddr::V4) == Some(addr) || e.spec.ipv6.map(IpAddr::V6) == Some(addr))
            .map(|e| e.netns.clone())
            .ok_or_else(|| LabError::UnknownEndpoint(addr.to_string()))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for endpoint in self.endpoints.drain(..) {
            let _ = run("ip", &["netns", "del", &endpoint.netns]);
        }
        let _ = run("ip", &["netns", "del", &self.node_ns]);
    }
}

/// Whether an `accept` that failed with `e` is worth trying again: nothing
/// yet, a signal, or a connection reset before it was taken (the next one
/// may be ours).
fn accept_again(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, Interrupted, WouldBlock};
    matches!(e.kind(), WouldBlock | Interrupted | ConnectionAborted)
}

/// Binds with `bind`, trying again for up to two seconds while the address
/// is in use. A socket closed a moment ago can still be held by a process
/// another thread is starting (the child has a copy of the descriptor table
/// until its exec closes it), so the same address bound again right away
/// fails now and then when tests run side by side.
pub fn bind_retrying<S>(bind: impl Fn() -> std::io::Result<S>) -> std::io::Result<S> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match bind() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns`
/// (`/run/netns/NAME`). Sockets created there stay in that namespace.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, LabError> {
    let path = format!("/run/netns/{ns}");
    let ns_name = ns.to_string();
    let handle = std::thread::spawn(move || -> Result<T, LabError> {
        let file = std::fs::File::open(&path).map_err(|source| LabError::Setns { ns: ns_name.clone(), source })?;
        // SAFETY: a valid namespace fd; setns affects only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LabError::Setns { ns: ns_name, source: std::io::Error::last_os_error() });
        }
        Ok(f())
    });
    handle.join().map_err(|_| LabError::ThreadPanicked(ns.to_string()))?
}

fn in_ns(ns: &str, args: &[&str]) -> Result<(), LabError> {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

fn run(program: &str, args: &[&str]) -> Result<(), LabError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}
