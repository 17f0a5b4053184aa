//! Resolution of the examples: hand-checked verdicts read from the
//! resolved tables the way the datapath reads them (ipcache, then the
//! source's egress table and the destination's ingress table).

use polc::driver;
use polc::ir::{Identity, Resolved, TableVerdict};
use polc::resolve::{resolve, IdentityLock, ResolveConfig};
use polc::sema::model::PolicySet;
use polc::syntax::ast::Action;
use std::net::IpAddr;
use std::path::PathBuf;

fn example(name: &str) -> (PolicySet, Resolved) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    let frontend = driver::load(&[dir]).expect("example loads");
    assert!(!frontend.has_errors(), "{name} has errors");
    let (resolved, _) =
        resolve(&frontend.checked, &IdentityLock::default(), &ResolveConfig::default()).expect("resolves");
    (frontend.checked, resolved)
}

/// A flow's endpoint: an endpoint of the inventory or an address.
enum Side<'a> {
    Endpoint(&'a str),
    Addr(&'a str),
}

/// Verdict for the first packet from `from` to `to`: egress of the source (if
/// an endpoint), then ingress of the destination (if an endpoint).
fn flow(resolved: &Resolved, from: Side, to: Side, proto: u8, port: u16) -> (Action, u32) {
    let identity = |side: &Side| match side {
        Side::Endpoint(name) => resolved.endpoint(name).expect("endpoint").identity,
        Side::Addr(addr) => resolved.identity_of(addr.parse::<IpAddr>().expect("address")),
    };
    let (src, dst) = (identity(&from), identity(&to));
    let mut checks = Vec::new();
    if let Side::Endpoint(name) = from {
        checks.push(resolved.endpoint(name).expect("endpoint").egress.lookup(dst, proto, port));
    }
    if let Side::Endpoint(name) = to {
        checks.push(resolved.endpoint(name).expect("endpoint").ingress.lookup(src, proto, port));
    }
    for verdict in checks {
        match verdict {
            TableVerdict::NotEnforced => {}
            TableVerdict::Decided { action: Action::Allow, .. } => {}
            TableVerdict::Decided { action: Action::Deny, rule } => return (Action::Deny, rule.0),
            TableVerdict::DefaultDeny => return (Action::Deny, 0),
        }
    }
    // Allowed: report the deciding allow of the destination side, else the source side.
    let allow_rule = |v: TableVerdict| match v {
        TableVerdict::Decided { rule, .. } => Some(rule.0),
        _ => None,
    };
    let ingress = match to {
        Side::Endpoint(name) => allow_rule(resolved.endpoint(name).expect("endpoint").ingress.lookup(src, proto, port)),
        Side::Addr(_) => None,
    };
    let egress = match from {
        Side::Endpoint(name) => allow_rule(resolved.endpoint(name).expect("endpoint").egress.lookup(dst, proto, port)),
        Side::Addr(_) => None,
    };
    (Action::Allow, ingress.or(egress).unwrap_or(0))
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
use Side::{Addr, Endpoint as Ep};

#[test]
fn l3_l4_rule() {
    let (_, r) = example("l3-l4-rule");
    assert_eq!(flow(&r, Ep("app2"), Ep("app1"), TCP, 80), (Action::Allow, 1));
    assert_eq!(flow(&r, Ep("app3"), Ep("app1"), TCP, 80), (Action::Deny, 0), "app3 is denied by default");
    assert_eq!(flow(&r, Ep("app2"), Ep("app1"), TCP, 81), (Action::Deny, 0));
    assert_eq!(flow(&r, Ep("app2"), Ep("app1"), UDP, 80), (Action::Deny, 0));
    assert_eq!(flow(&r, Ep("app1"), Ep("app2"), TCP, 22), (Action::Allow, 0), "app2 is selected by no policy");
    assert_eq!(flow(&r, Addr("8.8.8.8"), Ep("app1"), TCP, 80), (Action::Deny, 0));
    let app1 = r.endpoint("app1").expect("app1");
    assert!(app1.ingress.enforced && !app1.egress.enforced);
    assert_eq!(app1.ingress.enforced_by, vec!["l3-l4-rule".to_string()]);
    assert_eq!(app1.ingress.entry_count(), 1, "one identity, one port");
}

#[test]
fn deny_demo() {
    let (_, r) = example("deny-demo");
    assert_eq!(flow(&r, Ep("demo2"), Ep("demo1"), TCP, 80), (Action::Deny, 2), "denied by rule no-demo2");
    assert_eq!(flow(&r, Ep("demo2"), Ep("demo1"), ICMP, 8), (Action::Deny, 2));
    assert_eq!(flow(&r, Ep("demo1"), Ep("demo2"), TCP, 80), (Action::Allow, 0));
    assert_eq!(flow(&r, Addr("1.2.3.4"), Ep("demo1"), TCP, 80), (Action::Deny, 0), "world is not in the cluster");
    let demo1 = r.endpoint("demo1").expect("demo1");
    assert_eq!(
        demo1.ingress.lookup(Identity::HOST, 47, 0),
        TableVerdict::Decided { action: Action::Allow, rule: polc::sema::model::RuleId(1) },
        "the host is in the cluster, any protocol"
    );
}

#[test]
fn three_tier() {
    let (_, r) = example("three-tier");
    // Rule ids: baseline.pol scrape=1 dns=2; tiers.pol public=3 ping=4 to-api=5
    // from-frontend=6 to-db=7 outside=8 metadata=9 from-api=10 admin-ports=11.
    assert_eq!(flow(&r, Ep("frontend"), Ep("api"), TCP, 9000), (Action::Allow, 6));
    assert_eq!(flow(&r, Ep("api"), Ep("db"), TCP, 5432), (Action::Allow, 10), "`tcp/postgres` is db's 5432");
    assert_eq!(flow(&r, Ep("api"), Ep("db"), TCP, 5433), (Action::Deny, 0), "api egress allows only postgres");
    assert_eq!(flow(&r, Ep("frontend"), Ep("db"), TCP, 5433), (Action::Deny, 0));
    assert_eq!(
        r.endpoint("db").expect("db").ingress.lookup(r.endpoint("frontend").expect("f").identity, TCP, 5435),
        TableVerdict::Decided { action: Action::Deny, rule: polc::sema::model::RuleId(11) }
    );
    assert_eq!(
        flow(&r, Addr("203.0.113.9"), Ep("frontend"), TCP, 8080),
        (Action::Allow, 3),
        "`tcp/http` is 8080 on frontend"
    );
    assert_eq!(flow(&r, Addr("203.0.113.9"), Ep("frontend"), TCP, 80), (Action::Deny, 0));
    assert_eq!(flow(&r, Ep("scraper"), Ep("api"), TCP, 9150), (Action::Allow, 1));
    assert_eq!(flow(&r, Ep("scraper"), Ep("frontend"), ICMP, 8), (Action::Allow, 4));
    assert_eq!(flow(&r, Ep("db"), Ep("api"), TCP, 9000), (Action::Deny, 0), "db's empty egress denies all");
    assert_eq!(flow(&r, Ep("db"), Addr("10.200.3.1"), UDP, 53), (Action::Allow, 2), "the node is `host`");
    assert_eq!(flow(&r, Ep("api"), Addr("169.254.169.254"), TCP, 443), (Action::Deny, 9), "metadata deny wins");
    assert_eq!(flow(&r, Ep("api"), Addr("8.8.8.8"), TCP, 443), (Action::Allow, 8));
    assert_eq!(flow(&r, Ep("api"), Addr("2001:db8::1"), TCP, 80), (Action::Allow, 8));
    assert_eq!(flow(&r, Ep("api"), Addr("10.1.2.3"), TCP, 443), (Action::Deny, 0), "private ranges are excepted");
    assert_eq!(flow(&r, Ep("api"), Addr("fd00:200:3::11"), TCP, 443), (Action::Deny, 0), "an endpoint is not outside");
    assert_eq!(flow(&r, Ep("api"), Addr("8.8.8.8"), UDP, 443), (Action::Deny, 0));
}

#[test]
fn equal_label_sets_share_an_identity_and_ignored_keys_do_not_count() {
    let text = "endpoint a { labels {app=x, pod-template-hash=1} ipv4 10.0.0.1 }\n\
                endpoint b { labels {app=x, pod-template-hash=2} ipv4 10.0.0.2 }\n\
                endpoint c { labels {app=y} ipv4 10.0.0.3 }\n\
                policy p { select {app=x} ingress { allow c: from {app=y} } }\n";
    let frontend = driver::check_text("t.pol", text);
    assert!(!frontend.has_errors());
    let (plain, _) = resolve(&frontend.checked, &IdentityLock::default(), &ResolveConfig::default()).expect("resolves");
    let id = |r: &Resolved, n: &str| r.endpoint(n).expect("endpoint").identity;
    assert_ne!(id(&plain, "a"), id(&plain, "b"));
    let config =
        ResolveConfig { ignored_label_keys: ["pod-template-hash".to_string()].into(), ..ResolveConfig::default() };
    let (ignoring, lock) = resolve(&frontend.checked, &IdentityLock::default(), &config).expect("resolves");
    assert_eq!(id(&ignoring, "a"), id(&ignoring, "b"));
    assert_eq!(ignoring.endpoints[0].ingress, ignoring.endpoints[1].ingress);
    assert_eq!(lock.entries().count(), 2);
}

#[test]
fn over_capacity_is_an_error_naming_endpoint_and_rules() {
    let (set, _) = example("three-tier");
    let config = ResolveConfig { max_entries_per_endpoint: 3, ..ResolveConfig::default() };
    let err = resolve(&set, &IdentityLock::default(), &config).expect_err("over capacity");
    let text = err.to_string();
    assert!(text.starts_with("endpoint `frontend` needs "), "{text}");
    assert!(text.contains("more than the limit of 3; most come from rule `"), "{text}");
}
