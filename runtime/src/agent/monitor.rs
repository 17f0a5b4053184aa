//! `polcd monitor`: the verdicts the kernel reported, as a person reads
//! them, tied back to the rule and the line that decided.
//!
//! `polcd run` is the one reader of the node's ring buffer (`node_events`):
//! a [`Hub`] thread waits on it with epoll (libbpf's ring buffer poll, woken
//! by the kernel on submit), names each record through the agent's current
//! [`Catalog`] and hands it to every subscriber whose [`MonitorFilter`]
//! matches. A subscriber is one `monitor` request on the socket
//! ([`stream`]); a subscriber that does not keep up loses events (counted
//! and reported to it), it never slows the reader or the kernel.
//!
//! Which verdicts the kernel reports is the endpoints' trace level (a
//! `.rodata` constant, `polcd run --trace`): drops always; new connections
//! (allowed, with their rule) from level 1; every packet at level 2.

use super::api::ClientError;
use super::catalog::{Catalog, RuleInfo};
use crate::datapath::VerdictEvent;
use libbpf_rs::{MapHandle, RingBufferBuilder};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

/// What `polcd run` was asked to observe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observe {
    /// The endpoints' trace level: 0 drops, 1 drops and new connections,
    /// 2 every verdict.
    pub trace_level: u32,
    /// Where to serve Prometheus metrics (`None`: not served).
    pub metrics: Option<SocketAddr>,
}

/// One verdict the kernel reported, named. The JSON form (`polcd monitor
/// --format json`, the socket's `monitor` stream) has exactly these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEvent {
    /// When polcd read it from the ring buffer, in ms since the Unix epoch.
    pub time_ms: u64,
    /// The endpoint whose program decided (`#N` if polcd does not know it).
    pub endpoint: String,
    /// `ingress` (to the endpoint) or `egress` (from it).
    pub direction: String,
    /// `allowed` or `dropped`.
    pub verdict: String,
    /// The datapath's reason (`policy-deny`, `default-deny`, `truncated`, ...).
    pub reason: String,
    /// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, or the protocol number.
    pub proto: String,
    /// The source: endpoint name, identity name, or address.
    pub from: String,
    pub from_identity: u32,
    pub from_addr: IpAddr,
    pub from_port: u16,
    pub to: String,
    pub to_identity: u32,
    pub to_addr: IpAddr,
    /// The destination port (for ICMP echo, the echo identifier).
    pub to_port: u16,
    /// The deciding rule (`null` for default deny and verdicts no rule made).
    pub rule: Option<RuleInfo>,
}

fn proto_name(proto: u8) -> String {
    match proto {
        // Dropped before the L4 protocol was read.
        0 => "?".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

impl MonitorEvent {
    pub fn new(raw: &VerdictEvent, catalog: &Catalog, time_ms: u64) -> MonitorEvent {
        let endpoint = catalog.endpoint(raw.endpoint);
        MonitorEvent {
            time_ms,
            endpoint,
            direction: raw.direction.name().to_string(),
            verdict: if raw.reason.is_drop() { "dropped" } else { "allowed" }.to_string(),
            reason: raw.reason.name().to_string(),
            proto: proto_name(raw.proto),
            from: catalog.peer(raw.saddr, raw.src_identity),
            from_identity: raw.src_identity,
            from_addr: raw.saddr,
            from_port: raw.sport,
            to: catalog.peer(raw.daddr, raw.dst_identity),
            to_identity: raw.dst_identity,
            to_addr: raw.daddr,
            to_port: raw.dport,
            rule: (raw.rule != 0).then(|| catalog.rule(raw.rule).cloned()).flatten(),
        }
    }

    /// One line for a person:
    /// `12:00:01.250 app3 (id 258) -> app1 (id 256) tcp/80 DROPPED by deny rule no-app3 (policies/policy.pol:7) [app1 ingress]`
    pub fn to_line(&self) -> String {
        let port = match self.proto.as_str() {
            "tcp" | "udp" | "sctp" => format!("{}/{}", self.proto, self.to_port),
            _ => self.proto.clone(),
        };
        let verdict = self.verdict.to_uppercase();
        format!(
            "{} {} (id {}) -> {} (id {}) {port} {verdict} {} [{} {}]",
            clock(self.time_ms),
            self.from,
            self.from_identity,
            self.to,
            self.to_identity,
            self.why(),
            self.endpoint,
            self.direction
        )
    }

    /// Why, in words: the rule and its line, or the reason.
    fn why(&self) -> String {
        if let Some(rule) = &self.rule {
            let by = format!("by {} rule {} ({})", rule.action, rule.name, rule.location());
            return match self.reason.as_str() {
                "established" => format!("(established connection) {by}"),
                "reply" => format!("(reply) {by}"),
                _ => by,
            };
        }
        match self.reason.as_str() {
            "default-deny" => format!("by default deny (no {} rule allows it)", self.direction),
            "policy-deny" | "policy-allow" => format!("by rule of a previous policy version ({})", self.reason),
            "not-enforced" => format!("(no policy selects {} for {})", self.endpoint, self.direction),
            "truncated" => "(malformed: truncated header)".to_string(),
            "invalid" => "(malformed: invalid header)".to_string(),
            "fragment" => "(non-first fragment)".to_string(),
            "unknown-l3" => "(address family not enabled for this endpoint)".to_string(),
            "no-tail-call" => "(no program for this address family)".to_string(),
            other => format!("({other})"),
        }
    }
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds.
fn clock(time_ms: u64) -> String {
    let ms = time_ms % 1000;
    let s = time_ms / 1000;
    format!("{:02}:{:02}:{:02}.{ms:03}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// Which events a subscriber wants; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorFilter {
    /// The endpoint whose program decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `allowed` or `dropped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The source: endpoint name, identity (number or name) or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The destination, as `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl MonitorFilter {
    /// Why the filter can never match, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        match self.verdict.as_deref() {
            None | Some("allowed") | Some("dropped") => Ok(()),
            Some(other) => Err(format!("verdict `{other}` is neither `allowed` nor `dropped`")),
        }
    }

    pub fn matches(&self, event: &MonitorEvent) -> bool {
        let peer = |wanted: &Option<String>, name: &str, identity: u32, addr: IpAddr| {
            wanted
                .as_deref()
                .is_none_or(|w| w == name || w == identity.to_string() || w.parse::<IpAddr>().is_ok_and(|a| a == addr))
        };
        self.endpoint.as_deref().is_none_or(|e| e == event.endpoint)
            && self.verdict.as_deref().is_none_or(|v| v == event.verdict)
            && peer(&self.from, &event.from, event.from_identity, event.from_addr)
            && peer(&self.to, &event.to, event.to_identity, event.to_addr)
    }
}

/// Queue of one subscriber: events beyond it are counted as lost.
const SUBSCRIBER_QUEUE: usize = 4096;

struct Subscriber {
    filter: MonitorFilter,
    sender: mpsc::SyncSender<MonitorEvent>,
    lost: Arc<AtomicU64>,
}

/// The reader of the ring buffer and its subscribers.
#[derive(Default)]
pub struct Hub {
    catalog: RwLock<Arc<Catalog>>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Events read from the ring buffer since start.
    read: AtomicU64,
}

/// One subscriber's end: its events and how many it lost.
pub struct Subscription {
    pub events: mpsc::Receiver<MonitorEvent>,
    pub lost: Arc<AtomicU64>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Names events with `catalog` from now on.
    pub fn set_catalog(&self, catalog: Catalog) {
        if let Ok(mut current) = self.catalog.write() {
            if **current != catalog {
                *current = Arc::new(catalog);
            }
        }
    }

    pub fn events_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self, filter: MonitorFilter) -> Subscription {
        let (sender, events) = mpsc::sync_channel(SUBSCRIBER_QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.push(Subscriber { filter, sender, lost: Arc::clone(&lost) });
        }
        Subscription { events, lost }
    }

    /// Names `raw` and hands it to the subscribers that want it; drops
    /// subscribers that went away.
    pub fn publish(&self, raw: &[VerdictEvent], time_ms: u64) {
        self.read.fetch_add(raw.len() as u64, Ordering::Relaxed);
        let catalog = self.catalog.read().map(|c| Arc::clone(&c)).unwrap_or_default();
        let Ok(mut subscribers) = self.subscribers.lock() else { return };
        if subscribers.is_empty() {
            return;
        }
        for event in raw.iter().map(|r| MonitorEvent::new(r, &catalog, time_ms)) {
            subscribers.retain(|s| {
                if !s.filter.matches(&event) {
                    return true;
                }
                match s.sender.try_send(event.clone()) {
                    Ok(()) => true,
                    Err(mpsc::TrySendError::Full(_)) => {
                        s.lost.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => false,
                }
            });
        }
    }

    /// Starts the reader thread on the pinned ring buffer at `pin` (it
    /// waits for the pin: the first loaded object creates it).
    pub fn start_reader(self: &Arc<Hub>, pin: PathBuf) {
        let hub = Arc::clone(self);
        std::thread::spawn(move || loop {
            match MapHandle::from_pinned_path(&pin) {
                Ok(map) => {
                    if let Err(e) = hub.read_ring(&map) {
                        super::daemon::log(&format!("events: {e}"));
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        });
    }

    /// Waits on the ring buffer (epoll) and publishes what arrives; returns
    /// only on an error.
    fn read_ring(&self, map: &MapHandle) -> Result<(), libbpf_rs::Error> {
        let pending: Rc<RefCell<Vec<VerdictEvent>>> = Rc::default();
        let sink = Rc::clone(&pending);
        let mut builder = RingBufferBuilder::new();
        builder.add(map, move |raw: &[u8]| {
            if let Some(event) = VerdictEvent::parse(raw) {
                sink.borrow_mut().push(event);
            }
            0
        })?;
        let ring = builder.build()?;
        loop {
            let polled = ring.poll_raw(Duration::from_millis(500));
            if polled < 0 && polled != -libc::EINTR {
                return Err(libbpf_rs::Error::from_raw_os_error(-polled));
            }
            let batch = std::mem::take(&mut *pending.borrow_mut());
            if !batch.is_empty() {
                self.publish(&batch, super::daemon::now_ms());
            }
        }
    }
}

/// Serves one `monitor` request: an `{"ok":true}` line, then one event per
/// line (and `{"lost":N}` when this subscriber fell behind) until the client
/// goes away.
pub fn stream(mut writer: UnixStream, hub: &Hub, filter: MonitorFilter) {
    let send = |writer: &mut UnixStream, value: &serde_json::Value| {
        let mut text = value.to_string();
        text.push('\n');
        writer.write_all(text.as_bytes()).is_ok()
    };
    if let Err(e) = filter.check() {
        send(&mut writer, &serde_json::json!({"ok": false, "error": e}));
        return;
    }
    let subscription = hub.subscribe(filter);
    if !send(&mut writer, &serde_json::json!({"ok": true})) {
        return;
    }
    loop {
        match subscription.events.recv_timeout(Duration::from_secs(1)) {
            Ok(event) => {
                let lost = subscription.lost.swap(0, Ordering::Relaxed);
                if lost > 0 && !send(&mut writer, &serde_json::json!({ "lost": lost })) {
                    return;
                }
                let value = serde_json::to_value(&event).unwrap_or_default();
                if !send(&mut writer, &value) {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if hung_up(&writer) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Whether the client closed its end (checked while no event is sent).
fn hung_up(stream: &UnixStream) -> bool {
    let mut fd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// What a `monitor` stream carries, line by line.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Event(Box<MonitorEvent>),
    /// This many events were lost: the client fell behind.
    Lost(u64),
}

/// The client side: sends a `monitor` request to the polcd of `state` and
/// returns its events as they come.
pub fn subscribe(
    state: &std::path::Path,
    filter: &MonitorFilter,
) -> Result<impl Iterator<Item = Result<StreamItem, ClientError>>, ClientError> {
    use std::io::BufRead;
    let path = super::api::socket_path(state);
    let mut stream = UnixStream::connect(&path).map_err(|source| ClientError::Connect { path, source })?;
    let mut line = serde_json::to_string(&super::api::Request::Monitor(filter.clone()))?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut lines = std::io::BufReader::new(stream).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let ack: super::api::Response = serde_json::from_str(&first)?;
    if !ack.ok {
        return Err(ClientError::Refused(ack.error.unwrap_or_default()));
    }
    Ok(lines.map(|line| {
        let value: serde_json::Value = serde_json::from_str(&line?)?;
        if let Some(lost) = value.get("lost").and_then(serde_json::Value::as_u64) {
            return Ok(StreamItem::Lost(lost));
        }
        Ok(StreamItem::Event(Box::new(serde_json::from_value(value)?)))
    }))
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::datapath::{Direction, Reason};
    use std::io::{BufRead, BufReader};
    use std::net::Ipv4Addr;
    use std::time::Instant;

    fn raw(reason: Reason) -> VerdictEvent {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        VerdictEvent {
            endpoint: 1,
            rule: 0,
            src_identity: 256,
            dst_identity: 257,
            saddr: addr,
            daddr: addr,
            sport: 1,
            dport: 2,
            reason,
            direction: Direction::Ingress,
            proto: 6,
        }
    }

    #[test]
    fn subscribers_get_what_they_filter_and_count_what_they_miss() {
        let hub = Hub::new();
        let drops = hub.subscribe(MonitorFilter { verdict: Some("dropped".into()), ..Default::default() });
        let all = hub.subscribe(MonitorFilter::default());
        hub.publish(&[raw(Reason::DefaultDeny), raw(Reason::PolicyAllow)], 0);
        assert_eq!(drops.events.try_iter().map(|e| e.reason).collect::<Vec<_>>(), ["default-deny"]);
        assert_eq!(all.events.try_iter().count(), 2);
        let flood: Vec<VerdictEvent> = (0..SUBSCRIBER_QUEUE + 10).map(|_| raw(Reason::DefaultDeny)).collect();
        hub.publish(&flood, 0);
        assert_eq!(all.lost.load(Ordering::Relaxed), 10, "a full queue loses, it does not block");
        assert_eq!(hub.events_read(), 2 + flood.len() as u64);
        drop(drops);
        hub.publish(&[raw(Reason::DefaultDeny)], 0);
        assert_eq!(hub.subscribers.lock().map(|s| s.len()).unwrap_or(0), 1, "a gone subscriber is dropped");
    }

    #[test]
    fn a_stream_ends_when_its_client_hangs_up() {
        let hub = Hub::new();
        let (server, client) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let serving = {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || stream(server, &hub, MonitorFilter::default()))
        };
        let mut lines = BufReader::new(client.try_clone().unwrap_or_else(|e| panic!("{e}"))).lines();
        assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some(r#"{"ok":true}"#));
        hub.publish(&[raw(Reason::PolicyDeny)], 5);
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let event: MonitorEvent = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!((event.time_ms, event.reason.as_str(), event.endpoint.as_str()), (5, "policy-deny", "#1"));
        drop(lines);
        drop(client);
        // Noticed without an event to send, at its next 1 s look; the bound
        // leaves a loaded machine's scheduling several seconds more.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !serving.is_finished() {
            assert!(Instant::now() < deadline, "the stream did not notice its client hung up");
            std::thread::sleep(Duration::from_millis(10));
        }
        serving.join().unwrap_or_else(|_| panic!("stream panicked"));
    }
}
