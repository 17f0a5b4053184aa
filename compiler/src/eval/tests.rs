//! The evaluator on hand-checked flows: the three examples, then small
//! policy sets for the corners of SEMANTICS.md.

use super::flowspec::parse_peer;
use super::*;
use crate::driver::{self, Frontend};
use crate::sema::model::Proto;
use std::path::PathBuf;

fn example(name: &str) -> Frontend {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    let frontend = driver::load(&[dir]).expect("the example loads");
    assert!(!frontend.has_errors(), "{name} has errors: {:?}", frontend.diagnostics);
    frontend
}

fn text(source: &str) -> PolicySet {
    let frontend = driver::check_text("test.pol", source);
    assert!(!frontend.has_errors(), "errors: {:?}", frontend.diagnostics);
    frontend.checked
}

fn flow(src: &str, dst: &str, proto: Proto, port: u16) -> Flow {
    Flow {
        src: parse_peer(src).expect("a valid peer"),
        dst: parse_peer(dst).expect("a valid peer"),
        proto: proto.into(),
        port,
    }
}

/// What one flow comes to: the verdict and the ids of the deciding rules.
fn decide(set: &PolicySet, src: &str, dst: &str, proto: Proto, port: u16) -> (Action, Vec<u32>) {
    let eval = evaluate(set, &flow(src, dst, proto, port)).expect("the peers resolve");
    (eval.verdict(), eval.deciding_rules().iter().map(|r| r.id.0).collect())
}

const ALLOW: Action = Action::Allow;
const DENY: Action = Action::Deny;
use Proto::{Icmp, Icmpv6, Sctp, Tcp, Udp};

#[test]
fn l3_l4_rule() {
    let set = &example("l3-l4-rule").checked;
    assert_eq!(decide(set, "app2", "app1", Tcp, 80), (ALLOW, vec![1]));
    assert_eq!(decide(set, "10.200.1.12", "app1", Tcp, 80), (ALLOW, vec![1]));
    assert_eq!(decide(set, "app2", "app1", Tcp, 81), (DENY, vec![]));
    assert_eq!(decide(set, "app2", "app1", Udp, 80), (DENY, vec![]));
    assert_eq!(decide(set, "app3", "app1", Tcp, 80), (DENY, vec![]));
    assert_eq!(decide(set, "app1", "app2", Tcp, 80), (ALLOW, vec![]));

    let eval = evaluate(set, &flow("app3", "app1", Tcp, 80)).expect("resolves");
    assert_eq!(eval.egress.as_ref().map(|s| &s.verdict), Some(&SideVerdict::NotEnforced));
    let enforced_by = match eval.ingress.as_ref().map(|s| &s.verdict) {
        Some(SideVerdict::DefaultDeny { enforced_by }) => enforced_by.iter().map(|p| p.name.as_str()).collect(),
        _ => Vec::new(),
    };
    assert_eq!(enforced_by, ["l3-l4-rule"], "app1 ingress is default-deny by its one policy");
}

#[test]
fn deny_demo() {
    let set = &example("deny-demo").checked;
    // from-cluster (1) matches demo2 too, but the deny (2) wins.
    assert_eq!(decide(set, "demo2", "demo1", Tcp, 80), (DENY, vec![2]));
    assert_eq!(decide(set, "demo2", "demo1", Icmp, 8), (DENY, vec![2]));
    assert_eq!(decide(set, "host", "demo1", Tcp, 80), (ALLOW, vec![1]));
    assert_eq!(decide(set, "health", "demo1", Udp, 53), (ALLOW, vec![1]));
    assert_eq!(decide(set, "world", "demo1", Tcp, 80), (DENY, vec![]));
    assert_eq!(decide(set, "8.8.8.8", "demo1", Tcp, 80), (DENY, vec![]));
    assert_eq!(decide(set, "demo1", "demo2", Tcp, 80), (ALLOW, vec![]));
}

#[test]
fn three_tier() {
    // Ids: scrape 1, dns 2, public 3, ping 4, to-api 5, from-frontend 6,
    // to-db 7, outside 8, metadata 9, from-api 10, admin-ports 11.
    let set = &example("three-tier").checked;
    assert_eq!(decide(set, "frontend", "api", Tcp, 9000), (ALLOW, vec![5, 6]));
    // to-db names db's named port `postgres` (tcp/5432) on egress.
    assert_eq!(decide(set, "api", "db", Tcp, 5432), (ALLOW, vec![7, 10]));
    assert_eq!(decide(set, "api", "db", Tcp, 5433), (DENY, vec![11]));
    assert_eq!(decide(set, "scraper", "db", Tcp, 5433), (DENY, vec![11]));
    assert_eq!(decide(set, "scraper", "api", Tcp, 9100), (ALLOW, vec![1]));
    // public: `world` on the frontend's named port http (tcp/8080).
    assert_eq!(decide(set, "world", "frontend", Tcp, 8080), (ALLOW, vec![3]));
    assert_eq!(decide(set, "203.0.113.5", "frontend", Tcp, 8080), (ALLOW, vec![3]));
    assert_eq!(decide(set, "scraper", "frontend", Tcp, 8080), (DENY, vec![]));
    assert_eq!(decide(set, "world", "frontend", Tcp, 80), (DENY, vec![]));
    assert_eq!(decide(set, "host", "frontend", Icmp, 8), (ALLOW, vec![4]));
    assert_eq!(decide(set, "host", "frontend", Icmpv6, 128), (ALLOW, vec![4]));
    assert_eq!(decide(set, "host", "frontend", Icmp, 0), (DENY, vec![]));
    assert_eq!(decide(set, "api", "host", Udp, 53), (ALLOW, vec![2]));
    assert_eq!(decide(set, "api", "10.200.3.1", Tcp, 53), (ALLOW, vec![2]));
    assert_eq!(decide(set, "api", "8.8.8.8", Udp, 53), (DENY, vec![]));
    assert_eq!(decide(set, "api", "93.184.216.34", Tcp, 443), (ALLOW, vec![8]));
    assert_eq!(decide(set, "api", "2001:db8::1", Tcp, 443), (ALLOW, vec![8]));
    // `world` without an address has no family: no CIDR (not even a /0) holds it.
    assert_eq!(decide(set, "api", "world", Tcp, 443), (DENY, vec![]));
    assert_eq!(decide(set, "api", "10.1.2.3", Tcp, 443), (DENY, vec![]));
    assert_eq!(decide(set, "api", "fd00::99", Tcp, 443), (DENY, vec![]));
    assert_eq!(decide(set, "api", "169.254.169.254", Tcp, 80), (DENY, vec![9]));
    // The endpoint's own address is not a CIDR match, even inside 10/8.
    assert_eq!(decide(set, "api", "10.200.3.14", Tcp, 443), (DENY, vec![]));
    // db has an empty egress section: default deny except the baseline's dns.
    assert_eq!(decide(set, "db", "host", Udp, 53), (ALLOW, vec![2]));
    assert_eq!(decide(set, "db", "world", Tcp, 443), (DENY, vec![]));
}

#[test]
fn both_sides_deny_egress_first() {
    let set = &example("three-tier").checked;
    let eval = evaluate(set, &flow("api", "db", Tcp, 5433)).expect("resolves");
    let sides: Vec<_> = eval.denying_sides().map(|s| (s.endpoint.name.as_str(), s.direction)).collect();
    assert_eq!(sides, [("api", Direction::Egress), ("db", Direction::Ingress)]);
    // The packet is dropped at api's egress by default deny: no rule to name.
    assert_eq!(eval.rule(), None);
    assert_eq!(eval.deciding_rules().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["admin-ports"]);
}

#[test]
fn unknown_and_set_peers_are_errors() {
    let set = &example("l3-l4-rule").checked;
    let err = evaluate(set, &flow("ap1", "app1", Tcp, 80)).err();
    assert_eq!(err, Some(PeerError::UnknownEndpoint { name: "ap1".into(), suggestion: Some("app1".into()) }));
    let err = evaluate(set, &flow("app2", "cluster", Tcp, 80)).err();
    assert_eq!(err, Some(PeerError::NotAFlowPeer(crate::syntax::ast::Entity::Cluster)));
}

const TWO: &str = "
endpoint a { labels {app=a} ipv4 10.0.0.1 ipv6 fd00::1 port web = udp/80 port dns = udp/53 }
endpoint b { labels {app=b} ipv4 10.0.0.2 }
node { ipv4 10.0.0.254 }
";

#[test]
fn named_ports_need_the_protocol_of_the_name() {
    let set = text(&format!(
        "{TWO}
        policy p {{ select {{app=a}} ingress {{
            allow t: from {{}} on tcp/web
            allow any-name: from {{}} on any/dns
        }} }}"
    ));
    // `web` is udp/80: `tcp/web` matches neither tcp/80 nor udp/80.
    assert_eq!(decide(&set, "b", "a", Tcp, 80), (DENY, vec![]));
    assert_eq!(decide(&set, "b", "a", Udp, 80), (DENY, vec![]));
    // `any/dns` takes udp from the name.
    assert_eq!(decide(&set, "b", "a", Udp, 53), (ALLOW, vec![2]));
    assert_eq!(decide(&set, "b", "a", Tcp, 53), (DENY, vec![]));
}

#[test]
fn egress_named_ports_come_from_every_endpoint_of_the_identity() {
    let set = text(
        "endpoint src { labels {app=src} ipv4 10.0.0.1 }
        endpoint d1 { labels {app=d} ipv4 10.0.0.2 port http = tcp/80 }
        endpoint d2 { labels {app=d} ipv4 10.0.0.3 port http = tcp/8080 }
        endpoint e { labels {app=e} ipv4 10.0.0.4 port http = tcp/9000 }
        policy p { select {app=src} egress { allow web: to {app=d}, {app=e}, world on tcp/http } }",
    );
    // d1 and d2 share an identity, so both of their `http` ports count.
    assert_eq!(decide(&set, "src", "d1", Tcp, 8080), (ALLOW, vec![1]));
    assert_eq!(decide(&set, "src", "d2", Tcp, 80), (ALLOW, vec![1]));
    // e's own port only; and no named port outside the cluster.
    assert_eq!(decide(&set, "src", "e", Tcp, 80), (DENY, vec![]));
    assert_eq!(decide(&set, "src", "e", Tcp, 9000), (ALLOW, vec![1]));
    assert_eq!(decide(&set, "src", "192.0.2.1", Tcp, 80), (DENY, vec![]));
}

#[test]
fn cidrs_match_only_outside_addresses() {
    let set = text(&format!(
        "{TWO}
        policy p {{ select {{app=a}} ingress {{
            allow net: from 10.0.0.0/8 except (10.9.0.0/16)
            allow v6: from ::/0
        }} }}"
    ));
    assert_eq!(decide(&set, "10.1.2.3", "a", Tcp, 1), (ALLOW, vec![1]));
    assert_eq!(decide(&set, "10.9.0.1", "a", Tcp, 1), (DENY, vec![]));
    // b's address and the node's are inside 10/8 but resolve to b and host.
    assert_eq!(decide(&set, "10.0.0.2", "a", Tcp, 1), (DENY, vec![]));
    assert_eq!(decide(&set, "10.0.0.254", "a", Tcp, 1), (DENY, vec![]));
    // `world` without an address has no family, so `::/0` does not hold it;
    // an outside IPv6 address is held, an outside IPv4 one outside 10/8 is not.
    assert_eq!(decide(&set, "world", "a", Tcp, 1), (DENY, vec![]));
    assert_eq!(decide(&set, "2001:db8::1", "a", Tcp, 1), (ALLOW, vec![2]));
    assert_eq!(decide(&set, "192.0.2.1", "a", Tcp, 1), (DENY, vec![]));
}

#[test]
fn a_slash_zero_exception_excludes_the_world_peer() {
    let set = text(&format!(
        "{TWO}
        policy p {{ select {{app=a}} ingress {{ allow none: from 0.0.0.0/0 except (0.0.0.0/0) }} }}"
    ));
    assert_eq!(decide(&set, "world", "a", Tcp, 1), (DENY, vec![]));
    assert_eq!(decide(&set, "192.0.2.1", "a", Tcp, 1), (DENY, vec![]));
}

#[test]
fn entities() {
    let set = text(&format!(
        "{TWO}
        policy p {{ select {{app=a}} ingress {{
            allow c: from cluster on tcp/1
            allow w: from world on tcp/2
            allow h: from host on tcp/3
            allow all: from all on tcp/4
        }} }}"
    ));
    for peer in ["b", "host", "health", "init", "unmanaged", "10.0.0.254"] {
        assert_eq!(decide(&set, peer, "a", Tcp, 1), (ALLOW, vec![1]), "cluster includes {peer}");
    }
    for peer in ["world", "192.0.2.1", "10.0.0.99"] {
        assert_eq!(decide(&set, peer, "a", Tcp, 1), (DENY, vec![]), "cluster excludes {peer}");
        assert_eq!(decide(&set, peer, "a", Tcp, 2), (ALLOW, vec![2]), "world includes {peer}");
    }
    assert_eq!(decide(&set, "b", "a", Tcp, 2), (DENY, vec![]));
    assert_eq!(decide(&set, "10.0.0.254", "a", Tcp, 3), (ALLOW, vec![3]));
    assert_eq!(decide(&set, "health", "a", Tcp, 3), (DENY, vec![]));
    for peer in ["b", "world", "init", "fd00::99"] {
        assert_eq!(decide(&set, peer, "a", Tcp, 4), (ALLOW, vec![4]), "all includes {peer}");
    }
}

#[test]
fn lowest_deny_then_lowest_allow_across_policies() {
    let set = text(&format!(
        "{TWO}
        policy p1 {{ select {{app=a}} ingress {{ allow a1: from {{}} on tcp/80  deny d1: from {{app=b}} on tcp/81 }} }}
        policy p2 {{ select {{}} ingress {{ allow a2: from all  deny d2: from all on tcp/81-90 }} }}"
    ));
    assert_eq!(decide(&set, "b", "a", Tcp, 80), (ALLOW, vec![1]));
    assert_eq!(decide(&set, "b", "a", Tcp, 81), (DENY, vec![2]));
    assert_eq!(decide(&set, "b", "a", Tcp, 85), (DENY, vec![4]));
    assert_eq!(decide(&set, "b", "a", Udp, 81), (ALLOW, vec![3]));
    // p2 selects b too; p1 does not.
    assert_eq!(decide(&set, "a", "b", Tcp, 80), (ALLOW, vec![3]));
    assert_eq!(decide(&set, "a", "b", Tcp, 81), (DENY, vec![4]));
}

#[test]
fn protocols_and_ports() {
    let set = text(&format!(
        "{TWO}
        policy p {{ select {{app=a}} ingress {{
            allow ported: from {{}} on any/80-81
            allow ping: from {{}} on icmp/echo-request
            allow sctp: from {{}} on sctp
        }} }}
        policy q {{ select {{app=b}} ingress {{ allow everything: from all on any }} }}"
    ));
    assert_eq!(decide(&set, "b", "a", Tcp, 81), (ALLOW, vec![1]));
    assert_eq!(decide(&set, "b", "a", Udp, 80), (ALLOW, vec![1]));
    assert_eq!(decide(&set, "b", "a", Sctp, 80), (ALLOW, vec![1]));
    assert_eq!(decide(&set, "b", "a", Sctp, 9), (ALLOW, vec![3]));
    // `any/N` is for ported protocols: ICMP type 80 is not port 80.
    assert_eq!(decide(&set, "b", "a", Icmp, 80), (DENY, vec![]));
    assert_eq!(decide(&set, "b", "a", Icmp, 8), (ALLOW, vec![2]));
    assert_eq!(decide(&set, "b", "a", Icmpv6, 8), (DENY, vec![]));
    let gre = Flow { proto: IpProto(47), port: 0, ..flow("b", "a", Tcp, 0) };
    assert_eq!(evaluate(&set, &gre).map(|e| e.verdict()), Ok(DENY));
    let gre = Flow { proto: IpProto(47), port: 0, ..flow("a", "b", Tcp, 0) };
    assert_eq!(evaluate(&set, &gre).map(|e| e.verdict()), Ok(ALLOW));
}

#[test]
fn an_empty_section_denies_everything_and_a_missing_one_nothing() {
    let set = text(&format!("{TWO} policy p {{ select {{app=a}} egress {{ }} }}"));
    assert_eq!(decide(&set, "a", "b", Tcp, 80), (DENY, vec![]));
    assert_eq!(decide(&set, "b", "a", Tcp, 80), (ALLOW, vec![]));
    let b = set.inventory.endpoint("b").expect("b exists");
    let verdict = evaluate_direction(&set, b, Direction::Ingress, &Peer::Reserved(Reserved::World), Tcp.into(), 80);
    assert_eq!(verdict.to_table_verdict(), TableVerdict::NotEnforced);
}

#[test]
fn explanations_name_rules_and_policies_with_file_and_line() {
    let frontend = example("l3-l4-rule");
    let set = &frontend.checked;
    let words = |src, dst, port| {
        let eval = evaluate(set, &flow(src, dst, Tcp, port)).expect("resolves");
        explain::explain(&eval, &frontend.sources)
    };
    let path = |file: &str| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/l3-l4-rule").join(file);
    let policy = path("policy.pol").display().to_string();
    assert_eq!(words("app2", "app1", 80).headline, format!("ALLOWED by rule `app2-http` ({policy}:8)"));
    assert_eq!(
        words("app3", "app1", 80).headline,
        format!("DENIED: app1 ingress is default-deny since policy `l3-l4-rule` ({policy}:4) selects it")
    );
    assert_eq!(words("app1", "app3", 80).headline, "ALLOWED: no policy enforces this flow");
}
