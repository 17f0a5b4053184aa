//! The text forms of polcd's observability, from constructed values (no
//! kernel): `polcd monitor` lines, `polcd stats`, the Prometheus page; and
//! the monitor's filters. Snapshots live in snapshots/observe/.

#![allow(clippy::panic)]

use polc_runtime::agent::catalog::{Catalog, RuleInfo};
use polc_runtime::agent::metrics;
use polc_runtime::agent::monitor::{MonitorEvent, MonitorFilter};
use polc_runtime::agent::stats::{self, Count, DirectionStats, EndpointStats, RuleStats, Stats};
use polc_runtime::datapath::{Direction, Reason, VerdictEvent};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../snapshots/observe"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn rule(id: u32, name: &str, action: &str, line: u32) -> RuleInfo {
    RuleInfo {
        id,
        name: name.into(),
        policy: "protect-demo1".into(),
        action: action.into(),
        direction: "ingress".into(),
        file: "policies/demo.pol".into(),
        line,
    }
}

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, 2, last))
}

/// demo1 (endpoint 1, identity 256, 10.200.2.11) and demo2 (2, 257, .12);
/// rule 1 allows from the cluster, rule 2 denies demo2.
fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog.endpoints.insert(1, "demo1".into());
    catalog.endpoints.insert(2, "demo2".into());
    catalog.addresses.insert(addr(11), "demo1".into());
    catalog.addresses.insert(addr(12), "demo2".into());
    catalog.identities.insert(256, "demo1".into());
    catalog.identities.insert(257, "demo2".into());
    catalog.identities.insert(9, "world-ipv4".into());
    catalog.rules.insert(1, rule(1, "from-cluster", "allow", 8));
    catalog.rules.insert(2, rule(2, "no-demo2", "deny", 9));
    catalog
}

fn event(reason: Reason, rule: u32, from: (u8, u32), to: (u8, u32), proto: u8, dport: u16) -> VerdictEvent {
    VerdictEvent {
        endpoint: 1,
        rule,
        src_identity: from.1,
        dst_identity: to.1,
        saddr: addr(from.0),
        daddr: addr(to.0),
        sport: 40000,
        dport,
        reason,
        direction: Direction::Ingress,
        proto,
    }
}

/// 12:00:01.250 UTC
const TIME_MS: u64 = 1_795_521_601_250;

fn events() -> Vec<MonitorEvent> {
    let catalog = catalog();
    let demo2 = (12, 257);
    let demo1 = (11, 256);
    let raw = [
        event(Reason::PolicyDeny, 2, demo2, demo1, 6, 80),
        event(Reason::PolicyDeny, 2, demo2, demo1, 1, 1234),
        event(Reason::DefaultDeny, 0, (99, 9), demo1, 17, 53),
        event(Reason::PolicyAllow, 1, demo2, demo1, 6, 443),
        VerdictEvent { direction: Direction::Egress, ..event(Reason::NotEnforced, 0, demo1, demo2, 6, 22) },
        event(Reason::PolicyDeny, 7, demo2, demo1, 6, 80),
        VerdictEvent {
            saddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            daddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_identity: 0,
            dst_identity: 256,
            ..event(Reason::Truncated, 0, demo2, demo1, 0, 0)
        },
    ];
    raw.iter().map(|r| MonitorEvent::new(r, &catalog, TIME_MS)).collect()
}

#[test]
fn monitor_lines() {
    let lines: Vec<String> = events().iter().map(MonitorEvent::to_line).collect();
    assert!(lines[0].contains("DROPPED by deny rule no-demo2 (policies/demo.pol:9)"), "{}", lines[0]);
    settings().bind(|| insta::assert_snapshot!("monitor_lines", lines.join("\n")));
}

#[test]
fn monitor_json_has_the_documented_fields() {
    let value = serde_json::to_value(&events()[0]).unwrap_or_else(|e| panic!("{e}"));
    let fields: Vec<&str> = value.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    let mut documented = vec![
        "time_ms",
        "endpoint",
        "direction",
        "verdict",
        "reason",
        "proto",
        "from",
        "from_identity",
        "from_addr",
        "from_port",
        "to",
        "to_identity",
        "to_addr",
        "to_port",
        "rule",
    ];
    documented.sort_unstable();
    assert_eq!(fields, documented);
    assert_eq!(value["rule"]["name"], "no-demo2");
    assert_eq!(value["rule"]["line"], 9);
    let back: MonitorEvent = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, events()[0]);
}

#[test]
fn filters_select_by_endpoint_verdict_and_peers() {
    let events = events();
    let count = |filter: MonitorFilter| events.iter().filter(|e| filter.matches(e)).count();
    assert_eq!(count(MonitorFilter::default()), events.len());
    let dropped = MonitorFilter { verdict: Some("dropped".into()), ..Default::default() };
    assert_eq!(count(dropped), 5);
    let allowed = MonitorFilter { verdict: Some("allowed".into()), ..Default::default() };
    assert_eq!(count(allowed), 2);
    let from_demo2 = MonitorFilter { from: Some("demo2".into()), ..Default::default() };
    assert_eq!(count(from_demo2.clone()), 4);
    let by_identity = MonitorFilter { from: Some("257".into()), ..Default::default() };
    assert_eq!(count(by_identity), 4);
    let by_address = MonitorFilter { from: Some("10.200.2.12".into()), ..Default::default() };
    assert_eq!(count(by_address), 4);
    let to_demo2 = MonitorFilter { to: Some("demo2".into()), ..Default::default() };
    assert_eq!(count(to_demo2), 1);
    let elsewhere = MonitorFilter { endpoint: Some("demo2".into()), ..Default::default() };
    assert_eq!(count(elsewhere), 0);
    let both = MonitorFilter { verdict: Some("allowed".into()), ..from_demo2 };
    assert_eq!(count(both), 1);
    assert!(MonitorFilter { verdict: Some("maybe".into()), ..Default::default() }.check().is_err());
}

fn constructed_stats() -> Stats {
    let count = |packets: u64| Count { packets, bytes: packets * 98 };
    let mut ingress = DirectionStats { allowed: count(12), dropped: count(7), reasons: BTreeMap::new() };
    ingress.reasons.insert("policy-allow".into(), count(2));
    ingress.reasons.insert("established".into(), count(10));
    ingress.reasons.insert("policy-deny".into(), count(5));
    ingress.reasons.insert("default-deny".into(), count(2));
    let mut egress = DirectionStats { allowed: count(11), ..Default::default() };
    egress.reasons.insert("reply".into(), count(10));
    egress.reasons.insert("arp".into(), count(1));
    let demo1 = EndpointStats { name: "demo1".into(), identity: 256, ingress, egress };
    let demo2 = EndpointStats {
        name: "demo2".into(),
        identity: 257,
        ingress: DirectionStats::default(),
        egress: DirectionStats::default(),
    };
    let rule = |name: &str, action: &str, line: u32, packets: u64| RuleStats {
        rule: name.into(),
        policy: "protect-demo1".into(),
        action: action.into(),
        direction: "ingress".into(),
        file: "policies/demo.pol".into(),
        line,
        packets,
        bytes: packets * 98,
    };
    Stats {
        endpoints: vec![demo1, demo2],
        rules: vec![rule("from-cluster", "allow", 8, 12), rule("no-demo2", "deny", 9, 5)],
    }
}

#[test]
fn stats_text() {
    let text = stats::to_text(&constructed_stats());
    settings().bind(|| insta::assert_snapshot!("stats_text", text));
}

#[test]
fn prometheus_page() {
    let page = metrics::render(&constructed_stats(), 42);
    assert!(page.contains("polc_drops_total{endpoint=\"demo1\",direction=\"ingress\",reason=\"policy-deny\"} 5"));
    settings().bind(|| insta::assert_snapshot!("prometheus", page));
}

#[test]
fn metrics_refuse_remote_addresses_unless_allowed() {
    let remote = "0.0.0.0:9962".parse().unwrap_or_else(|e| panic!("{e}"));
    let local = "127.0.0.1:9962".parse().unwrap_or_else(|e| panic!("{e}"));
    assert!(metrics::check_addr(remote, false).is_err());
    assert!(metrics::check_addr(remote, true).is_ok());
    assert!(metrics::check_addr(local, false).is_ok());
}
