//! Edge computation on small policy sets, and agreement with the reference
//! evaluator on every segment of every example.

use super::edges::{edges, Edge, EdgeKind};
use super::model::{L4Proto, Outcome};
use super::*;
use crate::driver::{self, Frontend};
use crate::eval::{evaluate, Flow, FlowPeer, SideVerdict};
use crate::resolve::{self, IdentityLock, ResolveConfig};
use crate::sema::model::{Proto, RuleId};
use crate::syntax::ast::Entity;
use std::path::PathBuf;

const INVENTORY: &str = "
node { ipv4 10.0.0.1 }
endpoint client { labels {app=client} ipv4 10.0.0.11 }
endpoint web { labels {app=web} ipv4 10.0.0.12 port http = tcp/8080 }
";

fn graph_of(frontend: &Frontend) -> Graph {
    assert!(!frontend.has_errors(), "errors: {:?}", frontend.diagnostics);
    let (resolved, _) =
        resolve::resolve(&frontend.checked, &IdentityLock::default(), &ResolveConfig::default()).expect("resolves");
    build(&resolved, &frontend.checked, &frontend.sources)
}

fn graph(policy: &str) -> Graph {
    graph_of(&driver::check_text("test.pol", &format!("{INVENTORY}{policy}")))
}

fn node(graph: &Graph, key: &str) -> usize {
    let found = graph.nodes.iter().position(|n| n.key == key);
    assert!(found.is_some(), "no node `{key}`");
    found.unwrap_or_default()
}

fn edges_between(graph: &Graph, from: &str, to: &str) -> Vec<Edge> {
    let (from, to) = (node(graph, from), node(graph, to));
    edges(graph)
        .into_iter()
        .filter(|e| (e.from, e.to) == (from, to) || (e.both_ways && (e.to, e.from) == (from, to)))
        .collect()
}

#[test]
fn an_allowed_port_range_shows_as_a_range() {
    let g = graph(
        "policy web { select {app=web} ingress { allow a: from {app=client} on tcp/8000-8080, tcp/80, udp/53 } }",
    );
    let found = edges_between(&g, "client", "web");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, EdgeKind::Allowed);
    assert_eq!(found[0].label, "tcp/80, tcp/8000-8080, udp/53");
    // The segments are the exact ranges: 7999 and 8081 are out, both ends in.
    let c = g.connection(node(&g, "client"), node(&g, "web")).expect("a connection");
    let tcp = L4Proto::Known(Proto::Tcp);
    let allowed: Vec<(u16, u16)> = c.allowed().filter(|s| s.proto == tcp).map(|s| (s.low, s.high)).collect();
    assert_eq!(allowed, vec![(80, 80), (8000, 8080)]);
    // Nothing else may reach web; web's egress is open.
    assert!(edges_between(&g, "host", "web").is_empty());
    assert_eq!(edges_between(&g, "web", "client")[0].kind, EdgeKind::Open);
}

#[test]
fn both_sides_narrow_the_edge_and_name_their_rules() {
    let g = graph(
        "policy c { select {app=client} egress { allow out: to {app=web} on tcp/80-90 } }
         policy w { select {app=web} ingress { allow in: from {app=client} on tcp/85-100, tcp/http } }",
    );
    let found = edges_between(&g, "client", "web");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].label, "tcp/85-90");
    assert!(found[0].detail.contains("rule `out`") && found[0].detail.contains("rule `in`"), "{}", found[0].detail);
    assert!(found[0].detail.contains("test.pol:"), "{}", found[0].detail);
    // The client's egress names no other peer: nothing to host or world.
    assert!(edges_between(&g, "client", "host").is_empty());
    assert!(edges_between(&g, "client", "world").is_empty());
}

#[test]
fn a_deny_rule_shows_as_a_red_edge() {
    let g = graph("policy web { select {app=web} ingress { allow all-in: from cluster  deny no-ssh: from {app=client} on tcp/22 } }");
    let found = edges_between(&g, "client", "web");
    let deny = found.iter().find(|e| matches!(e.kind, EdgeKind::Denied(_))).expect("a deny edge");
    assert_eq!(deny.kind, EdgeKind::Denied(RuleId(2)));
    assert_eq!(deny.label, "deny no-ssh: tcp/22");
    let allow = found.iter().find(|e| e.kind == EdgeKind::Allowed).expect("an allowed edge");
    assert_eq!(allow.label, "tcp/0-21, tcp/23-65535, udp, sctp, icmp, icmpv6, other protocols");
    // The host is in `cluster` and not denied: everything.
    assert_eq!(edges_between(&g, "host", "web")[0].label, "any");
    let dot = dot::render(&g);
    let line = dot.lines().find(|l| l.contains("deny no-ssh")).expect("the deny edge in DOT");
    assert!(line.starts_with("  \"client\" -> \"web\""), "{line}");
    assert!(line.contains("color=\"#dc2626\"") && line.contains("style=dashed"), "{line}");
    assert!(line.contains("test.pol:"), "the tooltip names where the rule is: {line}");
}

#[test]
fn a_deny_of_everything_is_labelled_with_the_rule_alone() {
    let g = graph("policy web { select {app=web} ingress { allow a: from cluster  deny b: from {app=client} } }");
    let found = edges_between(&g, "client", "web");
    assert_eq!(found.len(), 1, "nothing allowed is left: {found:?}");
    assert_eq!(found[0].label, "deny b");
}

#[test]
fn not_enforced_directions_are_marked() {
    let g = graph("policy web { select {app=web} ingress { allow a: from {app=client} on tcp/80 } }");
    let web = &g.nodes[node(&g, "web")];
    let client = &g.nodes[node(&g, "client")];
    assert_eq!(web.enforcement_note().as_deref(), Some("egress not enforced"));
    assert_eq!(client.enforcement_note().as_deref(), Some("not enforced"));
    // Open both ways: one grey two-headed edge, not two.
    let open = edges_between(&g, "client", "host");
    assert_eq!(open.len(), 1);
    assert!(open[0].both_ways && open[0].kind == EdgeKind::Open);
    let dot = dot::render(&g);
    assert!(dot.contains("\"web\" [label=\"web\\n(egress not enforced)\""), "{dot}");
    assert!(dot.contains("dir=both"), "{dot}");
    let enforced = graph("policy web { select {app=web} ingress {} egress {} }");
    assert_eq!(enforced.nodes[node(&enforced, "web")].enforcement_note(), None);
    assert!(edges_between(&enforced, "client", "web").is_empty());
}

#[test]
fn icmp_types_are_named_and_endpoints_sharing_an_identity_share_a_group() {
    let frontend = driver::check_text(
        "test.pol",
        "endpoint a { labels {app=x} ipv4 10.0.0.11 }
         endpoint b { labels {app=x} ipv4 10.0.0.12 }
         policy p { select {app=x} ingress { allow ping: from all on icmp/echo-request, icmp/42 } }",
    );
    let g = graph_of(&frontend);
    assert_eq!(g.groups.len(), 1);
    assert_eq!(g.groups[0].members.len(), 2);
    assert_eq!(edges_between(&g, "a", "b")[0].label, "icmp echo-request, icmp type 42");
}

#[test]
fn outside_peers_treated_alike_share_a_node() {
    let g = graph(
        "policy c { select {app=client} egress {
            allow out: to 0.0.0.0/0 except (10.0.0.0/8, 192.168.0.0/16), ::/0 on tcp/443
            deny meta: to 169.254.0.0/16 } }",
    );
    // The two families and the two exceptions are each alike; the denied prefix stands alone.
    let keys: Vec<&str> = g.nodes.iter().filter(|n| !n.is_endpoint()).map(|n| n.key.as_str()).collect();
    assert_eq!(keys, vec!["host", "world", "10.0.0.0/8,192.168.0.0/16", "169.254.0.0/16"]);
    assert_eq!(edges_between(&g, "client", "world")[0].label, "tcp/443");
    assert!(edges_between(&g, "client", "10.0.0.0/8,192.168.0.0/16").is_empty());
    assert_eq!(edges_between(&g, "client", "169.254.0.0/16")[0].label, "deny meta");
}

fn example(name: &str) -> Frontend {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    driver::load(&[dir]).expect("the example loads")
}

/// What the evaluator says of one packet, in the model's terms.
fn evaluated(frontend: &Frontend, from: FlowPeer, to: FlowPeer, proto: L4Proto, port: u16) -> Outcome {
    let proto = match proto {
        L4Proto::Known(p) => p.number(),
        L4Proto::Other => 47,
    };
    let flow = Flow { src: from, dst: to, proto: crate::eval::IpProto(proto), port };
    let evaluation = evaluate(&frontend.checked, &flow).expect("the peers resolve");
    let mut rules = Vec::new();
    for side in evaluation.egress.iter().chain(evaluation.ingress.iter()) {
        match &side.verdict {
            SideVerdict::NotEnforced => {}
            SideVerdict::Allowed { rule } => rules.push(rule.id),
            SideVerdict::Denied { rule } => return Outcome::Denied { rule: rule.id },
            SideVerdict::DefaultDeny { .. } => return Outcome::DefaultDeny,
        }
    }
    Outcome::Allowed { rules }
}

#[test]
fn every_segment_of_every_example_agrees_with_the_evaluator() {
    for name in ["deny-demo", "l3-l4-rule", "three-tier"] {
        let frontend = example(name);
        let g = graph_of(&frontend);
        let peer = |i: usize| match &g.nodes[i].kind {
            NodeKind::Endpoint { .. } => Some(FlowPeer::Endpoint(g.nodes[i].key.clone())),
            NodeKind::Host => Some(FlowPeer::Entity(Entity::Host)),
            _ => None,
        };
        let mut checked = 0;
        for c in &g.connections {
            let (Some(from), Some(to)) = (peer(c.from), peer(c.to)) else {
                continue;
            };
            for s in &c.segments {
                for port in [s.low, s.high] {
                    let expected = evaluated(&frontend, from.clone(), to.clone(), s.proto, port);
                    assert_eq!(s.outcome, expected, "{name}: {from} -> {to} {:?}/{port}", s.proto);
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "{name}: only {checked} packets checked");
    }
}

#[test]
fn the_svg_draws_one_edge_for_an_identity_when_its_endpoints_agree() {
    let frontend = driver::check_text(
        "test.pol",
        "endpoint w1 { labels {app=web} ipv4 10.0.0.11 port http = tcp/8080 }
         endpoint w2 { labels {app=web} ipv4 10.0.0.12 port http = tcp/8080 }
         endpoint w3 { labels {app=web} ipv4 10.0.0.13 port http = tcp/8081 }
         endpoint db { labels {app=db} ipv4 10.0.0.20 }
         policy web { select {app=web} ingress { allow h: from world on tcp/http } egress { allow d: to {app=db} on tcp/5432 } }
         policy db { select {app=db} ingress { allow w: from {app=web} on tcp/5432 } egress {} }",
    );
    let svg = svg::render(&graph_of(&frontend), "t");
    // The three agree about db: one edge from the identity's box.
    assert_eq!(svg.matches("<title>w1, w2, w3 → db\n").count(), 1, "{svg}");
    assert!(!svg.contains("<title>w1 → db\n"), "{svg}");
    // Not about the world: w3's `http` is another port, so one edge each.
    assert!(svg.contains("<title>world → w1\n") && svg.contains("<title>world → w3\n"), "{svg}");
    assert!(svg.contains(">tcp/8081</text>") && svg.contains(">tcp/8080</text>"), "{svg}");
}
