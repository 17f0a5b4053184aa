//! "Why was this dropped?" answered from what the kernel did, with real
//! traffic between network namespaces and a real polcd: a dropped ping and
//! denied TCP connects appear in `polcd monitor --format json` with the
//! deciding endpoint, the identities, the reason and the rule's name and
//! line (and the time from the packet to the event is printed); filters
//! select; `polcd stats` counts exactly the packets sent, across a
//! generation swap and a restart of polcd; the Prometheus endpoint is scraped over HTTP and parsed.
//! Needs root (skipped with a reason otherwise; a failure under CI=true).

#![allow(clippy::panic)]
mod support;

use support::matrix::REACH_TIMEOUT;

use polc_runtime::netlab::{bind_retrying, in_netns, require_kernel};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::monitor::Monitor;
use support::{all_enforcing, example_dir, polcd_cli, resolve_dir, status, wait_for, Node, Polcd};

const T: Duration = Duration::from_millis(400);

/// app1 takes web traffic from app2 and nothing from app3.
const GUARD: &str = "# app1's guard\npolicy guard-app1 {\n  select {id=app1}\n  ingress {\n    allow app2-web: from {id=app2} on tcp/80, udp/5001\n    deny no-app3: from {id=app3}\n  }\n}\n";

/// The same with eight more rules (`app2-dns` and seven extras): ten, more
/// than app1's counter array (4 slots: slot 0 and 3 rules) holds, so app1
/// gets a new array (a generation swap).
/// With `dns_first`, `app2-dns` is written first: rule numbers move, the
/// array keeps its size (app1's tables are swapped, its programs stay).
fn guard_v2(dns_first: bool) -> String {
    let dns = "    allow app2-dns: from {id=app2} on udp/53\n";
    let more: String =
        (1..=7).map(|n| format!("    allow app2-extra{n}: from {{id=app2}} on udp/{}\n", 6000 + n)).collect();
    let (before, after) = if dns_first { (dns, "") } else { ("", dns) };
    format!(
        "# app1's guard\npolicy guard-app1 {{\n  select {{id=app1}}\n  ingress {{\n{before}    allow app2-web: from {{id=app2}} on tcp/80, udp/5001\n    deny no-app3: from {{id=app3}}\n{after}{more}  }}\n}}\n"
    )
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> u64 {
    text.lines().position(|l| l.contains(needle)).map_or(0, |i| i as u64 + 1)
}

/// A policy directory: l3-l4-rule's endpoints and lock, and `guard.pol`.
fn policies(work: &Path) -> PathBuf {
    let policies = work.join("policies");
    std::fs::create_dir_all(&policies).unwrap_or_else(|e| panic!("{e}"));
    for file in ["endpoints.pol", "identities.lock"] {
        std::fs::copy(example_dir("l3-l4-rule").join(file), policies.join(file)).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(policies.join("guard.pol"), GUARD).unwrap_or_else(|e| panic!("{e}"));
    policies
}

/// Starts polcd with extra `run` flags (after the support's usual ones).
fn start_polcd(policies: &Path, state: &Path, node: &Node, extra: &[&str]) -> Polcd {
    Polcd::start_with(policies, state, node.lab.node_ns(), node.pins.path(), extra)
}

fn is(event: &Value, reason: &str, from: &str, proto: &str) -> bool {
    event["reason"] == reason && event["from"] == from && event["proto"] == proto
}

#[test]
fn monitor_explains_drops_from_the_kernel() {
    if !require_kernel("monitor_explains_drops_from_the_kernel") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policies = policies(work.path());
    let state = work.path().join("state");
    let (set, _) = resolve_dir(&policies);
    let node = Node::new("monitor", &set);
    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let polcd = start_polcd(&policies, &state, &node, &["--trace", "new"]);
    wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);

    let all = Monitor::start(&state, &[]);
    let from_app3 = Monitor::start(&state, &["--verdict", "dropped", "--from", "app3", "--to", "app1"]);
    let at_app3 = Monitor::start(&state, &["--endpoint", "app3", "--verdict", "dropped"]);

    // A ping from app3: dropped at app1's ingress by `no-app3`.
    let app3_ns = node.lab.endpoint("app3").unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let sent = Instant::now();
    let ping = Command::new("ip")
        .args(["netns", "exec", &app3_ns, "ping", "-n", "-q", "-c", "1", "-W", "1", &app1.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!ping.status.success(), "the ping is dropped");
    let (seen, dropped_ping) = all.wait_for("the dropped ping", |e| is(e, "policy-deny", "app3", "icmp"));
    let ping_latency = seen.duration_since(sent);
    println!("dropped ping -> monitor event (ping started as a process): {:.1} ms", ping_latency.as_secs_f64() * 1e3);
    println!("{dropped_ping}");
    let deny_line = line_of(GUARD, "deny no-app3");
    assert_eq!(dropped_ping["verdict"], "dropped");
    assert_eq!(
        (dropped_ping["endpoint"].as_str(), dropped_ping["direction"].as_str()),
        (Some("app1"), Some("ingress"))
    );
    assert_eq!((dropped_ping["from_identity"].as_u64(), dropped_ping["to_identity"].as_u64()), (Some(258), Some(256)));
    assert_eq!((dropped_ping["to"].as_str(), dropped_ping["to_addr"].as_str()), (Some("app1"), Some("10.200.1.11")));
    assert_eq!(dropped_ping["rule"]["name"], "no-app3");
    assert_eq!(dropped_ping["rule"]["action"], "deny");
    assert_eq!(dropped_ping["rule"]["line"].as_u64(), Some(deny_line));
    assert!(dropped_ping["rule"]["file"].as_str().is_some_and(|f| f.ends_with("guard.pol")), "{dropped_ping}");

    // UDP datagrams sent from this process, one at a time: the time from
    // the send call to the event's line on the monitor's stdout, without a
    // process start (BENCHMARKS.md quotes these figures).
    let mut latencies: Vec<f64> = Vec::new();
    for port in 7000..7050u16 {
        let sent = in_netns(&app3_ns, move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("{e}"));
            let at = Instant::now();
            socket.send_to(b"why", SocketAddr::new(app1, port)).unwrap_or_else(|e| panic!("{e}"));
            at
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let (seen, _) =
            all.wait_for("a dropped datagram", |e| is(e, "policy-deny", "app3", "udp") && e["to_port"] == port);
        latencies.push(seen.duration_since(sent).as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "dropped UDP datagram -> monitor event, {} datagrams: median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        latencies.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );

    // A TCP connect from app3 (denied by the rule) and one from app2 to a
    // port no rule allows (default deny: no rule).
    assert!(!node.lab.tcp_reaches("app3", app1, 80, T).unwrap_or_else(|e| panic!("{e}")));
    let (_, denied) = all.wait_for("app3's connect", |e| is(e, "policy-deny", "app3", "tcp") && e["to_port"] == 80);
    assert_eq!((denied["rule"]["name"].as_str(), denied["rule"]["line"].as_u64()), (Some("no-app3"), Some(deny_line)));
    assert!(!node.lab.tcp_reaches("app2", app1, 81, T).unwrap_or_else(|e| panic!("{e}")));
    let (_, default) = all.wait_for("app2's connect to 81", |e| is(e, "default-deny", "app2", "tcp"));
    assert_eq!((default["to_port"].as_u64(), default["rule"].is_null()), (Some(81), true), "{default}");
    assert_eq!((default["from_identity"].as_u64(), default["endpoint"].as_str()), (Some(257), Some("app1")));

    // `--trace new`: a new allowed connection, with its rule.
    assert!(node.lab.tcp_reaches("app2", app1, 80, REACH_TIMEOUT).unwrap_or_else(|e| panic!("{e}")));
    let (_, allowed) = all.wait_for("app2's allowed connect", |e| is(e, "policy-allow", "app2", "tcp"));
    assert_eq!((allowed["verdict"].as_str(), allowed["rule"]["name"].as_str()), (Some("allowed"), Some("app2-web")));

    // The filtered monitors saw only what they asked for. A last datagram
    // from app3 marks the end: events reach each monitor in order, so once
    // it has the marker, an app2 event its filter let through would be
    // there too.
    in_netns(&app3_ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("{e}"));
        socket.send_to(b"end", SocketAddr::new(app1, 7999)).unwrap_or_else(|e| panic!("{e}"));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    from_app3.wait_for("app3's last datagram", |e| e["proto"] == "udp" && e["to_port"] == 7999);
    let filtered = from_app3.events();
    assert!(filtered.len() >= 4, "ping, datagrams, connect, marker: {filtered:#?}");
    assert!(
        filtered.iter().all(|(_, e)| e["verdict"] == "dropped" && e["from"] == "app3" && e["to"] == "app1"),
        "{filtered:#?}"
    );
    assert!(at_app3.events().is_empty(), "nothing is dropped at app3: {:#?}", at_app3.events());

    // The text form names the rule and its line.
    let mut text = ChildGuard(support::monitor::streaming(&state, &["--verdict", "dropped"]));
    assert!(!node.lab.tcp_reaches("app3", app1, 80, T).unwrap_or_else(|e| panic!("{e}")));
    let stdout = text.0.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let line = BufReader::new(stdout).lines().next().and_then(Result::ok).unwrap_or_default();
    println!("{line}");
    let expected = "app3 (id 258) -> app1 (id 256) tcp/80 DROPPED by deny rule no-app3 (";
    assert!(line.contains(expected) && line.contains(&format!("guard.pol:{deny_line}) [app1 ingress]")), "{line}");
    println!("polcd log:\n{}", polcd.log());
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `count` datagrams of 8 bytes from endpoint namespace `ns` to `to`.
fn send_datagrams(ns: &str, to: SocketAddr, count: u64) {
    send_datagrams_from(ns, 0, to, count);
}

/// The same from source port `port` (0: any): one flow across calls.
fn send_datagrams_from(ns: &str, port: u16, to: SocketAddr, count: u64) {
    in_netns(ns, move || {
        let socket = bind_retrying(|| UdpSocket::bind(("0.0.0.0", port))).unwrap_or_else(|e| panic!("{e}"));
        for n in 0..count {
            socket.send_to(&n.to_be_bytes(), to).unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(Duration::from_micros(200));
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// An 8-byte UDP payload in an Ethernet frame: 14 + 20 + 8 + 8.
const FRAME: u64 = 50;

fn stats(state: &Path) -> Value {
    let out = polcd_cli(state, &["stats", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
}

/// Stats once `counted` holds (at most 20 s): the datagrams just sent
/// cross the veths in softirq, which a loaded machine may run late; the
/// caller then checks the exact counts (more than sent fails too).
fn stats_when(state: &Path, counted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = stats(state);
        if counted(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The packets counted for rule `name` (0 when not listed).
fn packets(stats: &Value, name: &str) -> u64 {
    stats["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == name))
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or(0)
}

fn rule<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == name))
        .unwrap_or_else(|| panic!("no rule `{name}` in {stats}"))
}

fn endpoint<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["endpoints"]
        .as_array()
        .and_then(|endpoints| endpoints.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no endpoint `{name}` in {stats}"))
}

/// GET http://addr/metrics, parsed: sample (name and labels as written) ->
/// value, and the families that have both # HELP and # TYPE.
fn scrape(addr: &str) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: polcd\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap_or_else(|e| panic!("{e}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP body: {response}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let mut samples = BTreeMap::new();
    let (mut help, mut typed) = (Vec::new(), Vec::new());
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.push(rest.split(' ').next().unwrap_or("").to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or("").to_string();
            assert_eq!(parts.next(), Some("counter"), "{line}");
            typed.push(name);
        } else if !line.is_empty() {
            let (sample, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line `{line}`"));
            let family = sample.split('{').next().unwrap_or("");
            assert!(typed.iter().any(|t| t == family), "`{family}` has no # TYPE before its samples");
            samples.insert(sample.to_string(), value.parse().unwrap_or_else(|e| panic!("`{line}`: {e}")));
        }
    }
    let documented = typed.into_iter().filter(|t| help.contains(t)).collect();
    (samples, documented)
}

#[test]
fn stats_and_metrics_count_the_packets_sent() {
    if !require_kernel("stats_and_metrics_count_the_packets_sent") {
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policies = policies(work.path());
    let state = work.path().join("state");
    let (set, _) = resolve_dir(&policies);
    let node = Node::new("stats", &set);
    let app1 = set.inventory.endpoint("app1").and_then(|e| e.ipv4).map(IpAddr::V4).unwrap_or_else(|| panic!("app1"));
    let polcd = start_polcd(&policies, &state, &node, &["--metrics-addr", "127.0.0.1:0"]);
    wait_for(&state, &polcd, "all endpoints enforcing", all_enforcing);
    let metrics = polcd
        .log()
        .lines()
        .find_map(|l| l.split("serving metrics on http://").nth(1).map(|a| a.trim_end_matches("/metrics").to_string()))
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", polcd.log()));

    let ns = |name: &str| node.lab.endpoint(name).unwrap_or_else(|e| panic!("{e}")).netns.clone();
    let _receiver = support::receiver(&ns("app1"), app1, 5001);
    send_datagrams(&ns("app2"), SocketAddr::new(app1, 5001), 50);
    send_datagrams(&ns("app3"), SocketAddr::new(app1, 5002), 30);

    let first = stats_when(&state, |s| {
        let reasons = &endpoint(s, "app1")["ingress"]["reasons"];
        packets(s, "app2-web") >= 50
            && packets(s, "no-app3") >= 30
            && reasons["policy-deny"]["packets"].as_u64() >= Some(30)
            && reasons["policy-allow"]["packets"].as_u64() >= Some(1)
            && reasons["established"]["packets"].as_u64() >= Some(49)
    });
    let web = rule(&first, "app2-web");
    assert_eq!((web["packets"].as_u64(), web["bytes"].as_u64()), (Some(50), Some(50 * FRAME)), "{web}");
    assert_eq!(web["line"].as_u64(), Some(line_of(GUARD, "allow app2-web")));
    let deny = rule(&first, "no-app3");
    assert_eq!((deny["packets"].as_u64(), deny["bytes"].as_u64()), (Some(30), Some(30 * FRAME)), "{deny}");
    let app1_in = &endpoint(&first, "app1")["ingress"];
    assert_eq!(app1_in["reasons"]["policy-deny"]["packets"].as_u64(), Some(30), "{app1_in}");
    assert_eq!(app1_in["reasons"]["policy-allow"]["packets"].as_u64(), Some(1), "the first datagram: {app1_in}");
    assert_eq!(app1_in["reasons"]["established"]["packets"].as_u64(), Some(49), "{app1_in}");
    assert_eq!(endpoint(&first, "app1")["identity"].as_u64(), Some(256));
    let text = String::from_utf8_lossy(&polcd_cli(&state, &["stats"]).stdout).into_owned();
    println!("{text}");
    let row = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let web_row = text.lines().map(row).find(|r| r.first().is_some_and(|c| c == "app2-web")).unwrap_or_default();
    assert_eq!(web_row[web_row.len().saturating_sub(2)..], ["50".to_string(), (50 * FRAME).to_string()], "{text}");

    // A change regenerates app1 (generation 2, a new counter array): the
    // counts carry on.
    std::fs::write(policies.join("guard.pol"), guard_v2(false)).unwrap_or_else(|e| panic!("{e}"));
    let swapped = wait_for(&state, &polcd, "version 2", |s| s.policy_version == 2);
    let generation = swapped.endpoints.iter().find(|e| e.name == "app1").map_or(0, |e| e.generation);
    assert_eq!(generation, 2, "{swapped:#?}");
    let carried = stats(&state);
    assert_eq!(rule(&carried, "app2-web")["packets"].as_u64(), Some(50), "carried over the swap: {carried}");
    assert_eq!(rule(&carried, "app2-dns")["packets"].as_u64(), Some(0), "a new rule that never matched is listed");
    send_datagrams(&ns("app2"), SocketAddr::new(app1, 5001), 20);
    send_datagrams(&ns("app3"), SocketAddr::new(app1, 5002), 5);
    let after = stats_when(&state, |s| packets(s, "app2-web") >= 70 && packets(s, "no-app3") >= 35);
    assert_eq!(rule(&after, "app2-web")["packets"].as_u64(), Some(70), "{after}");
    assert_eq!(rule(&after, "no-app3")["packets"].as_u64(), Some(35), "{after}");

    // Prometheus, over HTTP.
    let (samples, documented) = scrape(&metrics);
    let rule_line = line_of(&guard_v2(false), "allow app2-web");
    let file = policies.join("guard.pol").display().to_string();
    let web_sample = format!(
        "polc_rule_packets_total{{rule=\"app2-web\",policy=\"guard-app1\",policy_file=\"{file}\",line=\"{rule_line}\",action=\"allow\",direction=\"ingress\"}}"
    );
    assert_eq!(samples.get(&web_sample), Some(&70), "{samples:#?}");
    let drops = "polc_drops_total{endpoint=\"app1\",direction=\"ingress\",reason=\"policy-deny\"}";
    assert_eq!(samples.get(drops), Some(&35), "{samples:#?}");
    let dropped = "polc_endpoint_packets_total{endpoint=\"app1\",direction=\"ingress\",verdict=\"dropped\"}";
    assert!(samples.get(dropped).is_some_and(|v| *v >= 35), "{samples:#?}");
    for family in [
        "polc_endpoint_packets_total",
        "polc_endpoint_bytes_total",
        "polc_drops_total",
        "polc_rule_packets_total",
        "polc_rule_bytes_total",
        "polc_monitor_events_total",
    ] {
        assert!(documented.iter().any(|d| d == family), "`{family}` lacks # HELP or # TYPE");
    }
    assert!(samples.get("polc_monitor_events_total").is_some_and(|v| *v >= 35), "every drop is an event: {samples:#?}");

    // Rules renumbered by a table-only swap (same programs, same counter
    // array): each rule keeps its own counts, also for the packets of a
    // connection opened before the swap (its conntrack entry keeps the
    // counter slot of the rule that allowed it, and the rule keeps its slot).
    let web = SocketAddr::new(app1, 5001);
    send_datagrams_from(&ns("app2"), 40001, web, 5);
    stats_when(&state, |s| packets(s, "app2-web") >= 75);
    std::fs::write(policies.join("guard.pol"), guard_v2(true)).unwrap_or_else(|e| panic!("{e}"));
    let renumbered = wait_for(&state, &polcd, "version 3", |s| s.policy_version == 3);
    let app1_status = renumbered.endpoints.iter().find(|e| e.name == "app1").unwrap_or_else(|| panic!("app1"));
    assert_eq!((app1_status.generation, app1_status.last_swap.as_deref()), (2, Some("tables")), "{renumbered:#?}");
    send_datagrams_from(&ns("app2"), 40001, web, 5);
    send_datagrams(&ns("app2"), web, 10);
    let last = stats_when(&state, |s| packets(s, "app2-web") >= 90);
    assert_eq!(rule(&last, "app2-web")["packets"].as_u64(), Some(90), "{last}");
    assert_eq!(rule(&last, "no-app3")["packets"].as_u64(), Some(35), "{last}");
    assert_eq!(rule(&last, "app2-dns")["packets"].as_u64(), Some(0), "{last}");
    println!("scraped {} samples; status {:?}", samples.len(), status(&state).map(|s| s.policy_version));

    // polcd is killed and started again: it adopts app1's generation, then
    // loads its own; the counts go on from where they were, and count on,
    // a connection opened before the restart included (its rule keeps its
    // counter slot: polc alone would number `app2-dns` first now).
    send_datagrams_from(&ns("app2"), 40002, web, 5);
    let before_kill = stats_when(&state, |s| packets(s, "app2-web") >= 95);
    assert_eq!(rule(&before_kill, "app2-web")["packets"].as_u64(), Some(95), "{before_kill}");
    let mut polcd = polcd;
    polcd.kill();
    let polcd = start_polcd(&policies, &state, &node, &[]);
    wait_for(&state, &polcd, "all endpoints enforcing after the restart", all_enforcing);
    let restarted = stats(&state);
    for name in ["app2-web", "no-app3", "app2-dns"] {
        assert_eq!(rule(&restarted, name)["packets"], rule(&before_kill, name)["packets"], "`{name}`: {restarted}");
        assert_eq!(rule(&restarted, name)["bytes"], rule(&before_kill, name)["bytes"], "`{name}`: {restarted}");
    }
    let denied = |stats: &Value| endpoint(stats, "app1")["ingress"]["reasons"]["policy-deny"]["packets"].as_u64();
    assert_eq!(denied(&restarted), Some(35), "{restarted}");
    send_datagrams_from(&ns("app2"), 40002, web, 5);
    send_datagrams(&ns("app2"), web, 10);
    send_datagrams(&ns("app3"), SocketAddr::new(app1, 5002), 5);
    let counting = stats_when(&state, |s| {
        packets(s, "app2-web") >= 110
            && endpoint(s, "app1")["ingress"]["reasons"]["policy-deny"]["packets"].as_u64() >= Some(40)
    });
    assert_eq!(rule(&counting, "app2-web")["packets"].as_u64(), Some(110), "{counting}");
    assert_eq!(rule(&counting, "app2-dns")["packets"].as_u64(), Some(0), "{counting}");
    assert_eq!(denied(&counting), Some(40), "{counting}");
    drop(polcd);
    let reset = polcd_cli(&state, &["reset"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    assert!(!state.join(polc_runtime::agent::stats::COUNTERS_FILE).exists(), "reset removes the saved counters");
}

#[test]
fn metrics_on_a_remote_address_are_refused_unless_allowed() {
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_polcd"))
        .args(["--state", &work.path().display().to_string(), "run", "--policies", "/nonexistent"])
        .args(["--metrics-addr", "0.0.0.0:9962"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a loopback address") && stderr.contains("--metrics-allow-remote"), "{stderr}");
}
