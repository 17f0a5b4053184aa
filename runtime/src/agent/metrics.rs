//! `polcd run --metrics-addr ADDR`: the counters of `polcd stats` in
//! Prometheus' text format at `http://ADDR/metrics`, served on a thread of
//! its own (tiny_http: a small blocking HTTP/1.1 server, no async runtime
//! for one GET). Each scrape asks the agent's loop for its counters, as a
//! `stats` request on the socket does.
//!
//! The address must be a loopback one unless `--metrics-allow-remote` is
//! given: the metrics name every endpoint and rule of the node.

use super::monitor::Hub;
use super::stats::{Count, Stats};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

/// The address `--metrics-addr` takes when given without one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9962";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics address `{0}` is not a loopback address (add --metrics-allow-remote to serve it anyway)")]
    NotLoopback(SocketAddr),
    #[error("cannot serve metrics on `{addr}`: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// Refuses an address other hosts can reach unless `allow_remote`.
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), MetricsError> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(MetricsError::NotLoopback(addr))
    }
}

/// Serves `/metrics` on `addr` from a new thread; `stats` asks the agent
/// (`None`: it did not answer). Returns the bound address (port 0 picks one).
pub fn serve(
    addr: SocketAddr,
    stats: impl Fn() -> Option<Stats> + Send + 'static,
    hub: Arc<Hub>,
) -> Result<SocketAddr, MetricsError> {
    let server = tiny_http::Server::http(addr).map_err(|e| MetricsError::Bind { addr, reason: e.to_string() })?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let response = match request.url() {
                "/metrics" => match stats() {
                    Some(stats) => {
                        let content_type = "text/plain; version=0.0.4; charset=utf-8";
                        let header = tiny_http::Header::from_bytes("Content-Type", content_type).ok();
                        let mut response = tiny_http::Response::from_string(render(&stats, hub.events_read()));
                        if let Some(header) = header {
                            response.add_header(header);
                        }
                        response
                    }
                    None => tiny_http::Response::from_string("polcd did not answer\n").with_status_code(503),
                },
                _ => tiny_http::Response::from_string("see /metrics\n").with_status_code(404),
            };
            let _ = request.respond(response);
        }
    });
    Ok(bound)
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{} {value}", self.name);
            return;
        }
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let _ = writeln!(self.out, "{}{{{}}} {value}", self.name, labels.join(","));
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text format of `stats` (and of the events read so far).
pub fn render(stats: &Stats, events_read: u64) -> String {
    let mut out = String::new();
    let sides = |e: &super::stats::EndpointStats| [("ingress", e.ingress.clone()), ("egress", e.egress.clone())];
    let verdicts = |s: &super::stats::DirectionStats| [("allowed", s.allowed), ("dropped", s.dropped)];
    let endpoint_family = |out: &mut String, name, help, value: fn(Count) -> u64| {
        let mut family = Family::new(out, name, "counter", help);
        for e in &stats.endpoints {
            for (direction, side) in sides(e) {
                for (verdict, count) in verdicts(&side) {
                    family
                        .sample(&[("endpoint", &e.name), ("direction", direction), ("verdict", verdict)], value(count));
                }
            }
        }
    };
    endpoint_family(
        &mut out,
        "polc_endpoint_packets_total",
        "Packets the endpoint's programs passed or dropped.",
        |c| c.packets,
    );
    endpoint_family(
        &mut out,
        "polc_endpoint_bytes_total",
        "Bytes (Ethernet frames) the endpoint's programs passed or dropped.",
        |c| c.bytes,
    );

    let mut drops = Family::new(&mut out, "polc_drops_total", "counter", "Packets dropped, by the datapath's reason.");
    for e in &stats.endpoints {
        for (direction, side) in sides(e) {
            for (reason, count) in side.drops() {
                drops.sample(&[("endpoint", &e.name), ("direction", direction), ("reason", reason)], count.packets);
            }
        }
    }

    let rule_family = |out: &mut String, name, help, value: fn(&super::stats::RuleStats) -> u64| {
        let mut family = Family::new(out, name, "counter", help);
        for r in &stats.rules {
            let line = r.line.to_string();
            let labels = [
                ("rule", r.rule.as_str()),
                ("policy", r.policy.as_str()),
                ("policy_file", r.file.as_str()),
                ("line", line.as_str()),
                ("action", r.action.as_str()),
                ("direction", r.direction.as_str()),
            ];
            family.sample(&labels, value(r));
        }
    };
    rule_family(
        &mut out,
        "polc_rule_packets_total",
        "Packets a rule decided, with its connections' later packets.",
        |r| r.packets,
    );
    rule_family(&mut out, "polc_rule_bytes_total", "Bytes of the packets of polc_rule_packets_total.", |r| r.bytes);

    let mut events = Family::new(
        &mut out,
        "polc_monitor_events_total",
        "counter",
        "Verdict events polcd read from the ring buffer.",
    );
    events.sample(&[], events_read);
    out
}
