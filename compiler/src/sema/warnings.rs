//! The `warnings` pass: rules and policies that are valid but can never
//! decide anything, over the checked set built by `lower`.
//!
//! Every warning here must be certain: a rule is called shadowed only when
//! the covering deny provably matches every flow it matches. Where the
//! answer depends on the inventory (selectors against labels) or on the
//! union of several rules, the check stays silent.

use super::model::{L4Match, PeerMatch, Policy, PortMatch, Proto, Requirement, Rule, Selector};
use super::Context;
use crate::diag::{codes, Diagnostic, Diagnostics};
use crate::syntax::ast::{Action, Direction, Entity};
use crate::syntax::Span;
use ipnet::IpNet;
use std::collections::{BTreeSet, HashMap, HashSet};

pub fn run(cx: &mut Context<'_>) {
    policies_selecting_nothing(cx);
    unknown_named_ports(cx);
    // `lower` leaves invalid peers and ports out of a rule, so after an
    // error a rule may look narrower (or equal to another) than written.
    if !cx.diagnostics.has_errors() {
        for policy in &cx.checked.policies {
            for direction in [Direction::Ingress, Direction::Egress] {
                let Some(rules) = policy.section(direction) else { continue };
                duplicate_rules(&mut cx.diagnostics, policy, rules);
                shadowed_allows(&mut cx.diagnostics, rules);
            }
        }
    }
}

/// W0003: with an inventory present, a policy that selects none of its endpoints.
fn policies_selecting_nothing(cx: &mut Context<'_>) {
    let inventory = &cx.checked.inventory;
    if inventory.endpoints.is_empty() {
        return; // a policy-only set: endpoints arrive at run time
    }
    for policy in &cx.checked.policies {
        if !inventory.endpoints.iter().any(|e| policy.selector.matches(&e.labels)) {
            cx.diagnostics.push(
                Diagnostic::warning(
                    codes::POLICY_SELECTS_NOTHING,
                    policy.span,
                    format!("policy `{}` selects no endpoint of the inventory", policy.name),
                )
                .with_help("check its `select` labels against the endpoints' `labels`"),
            );
        }
    }
}

/// W0005: with an inventory present, a named port (`tcp/http`) that no
/// endpoint gives that name with that protocol, so it matches nothing.
fn unknown_named_ports(cx: &mut Context<'_>) {
    let inventory = &cx.checked.inventory;
    if inventory.endpoints.is_empty() {
        return;
    }
    let named: HashSet<(&str, Proto)> = inventory
        .endpoints
        .iter()
        .flat_map(|e| e.named_ports.iter().map(|(name, (proto, _))| (name.as_str(), *proto)))
        .collect();
    // A port spec inside a `ports` definition is shared by every rule using
    // it: report it once, where it is written.
    let mut reported: HashSet<Span> = HashSet::new();
    let mut found = Vec::new();
    for rule in cx.checked.rules() {
        for (l4, span) in rule.l4.iter().zip(&rule.l4_spans) {
            let PortMatch::Named(name) = &l4.ports else { continue };
            let known = match l4.proto {
                Some(proto) => named.contains(&(name.as_str(), proto)),
                None => named.iter().any(|(n, _)| n == name),
            };
            if !known && reported.insert(*span) {
                found.push((name.clone(), l4.proto, *span));
            }
        }
    }
    for (name, proto, span) in found {
        let other_protocols: BTreeSet<&str> = named.iter().filter(|(n, _)| *n == name).map(|(_, p)| p.name()).collect();
        let (message, help) = match (proto, other_protocols.is_empty()) {
            (_, true) => (
                format!("no endpoint of the inventory names a port `{name}`"),
                format!("name it in an endpoint (`port {name} = tcp/NUMBER`) or write the port number"),
            ),
            (Some(proto), false) => (
                format!("no endpoint of the inventory has a {} port named `{name}`", proto.name()),
                format!(
                    "`{name}` is named for {} only",
                    other_protocols.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
                ),
            ),
            // `any/name` with some endpoint naming it is known; unreachable here.
            (None, false) => continue,
        };
        cx.diagnostics.push(
            Diagnostic::warning(codes::UNKNOWN_NAMED_PORT, span, message)
                .with_label("this matches no port")
                .with_help(help),
        );
    }
}

/// W0002: the same rule (action, peers and ports, compared as sets) twice in one section.
fn duplicate_rules(diagnostics: &mut Diagnostics, policy: &Policy, rules: &[Rule]) {
    let mut first_of: HashMap<RuleShape, &Rule> = HashMap::new();
    for rule in rules {
        match first_of.get(&RuleShape::of(rule)) {
            Some(first) => diagnostics.push(
                Diagnostic::warning(
                    codes::DUPLICATE_RULE,
                    rule.span,
                    format!("rule `{}` repeats rule `{}` of policy `{}`", rule.name, first.name, policy.name),
                )
                .with_secondary(first.span, "the same rule")
                .with_help(format!("it can never decide anything: `{}` always matches first; remove one", first.name)),
            ),
            None => {
                first_of.insert(RuleShape::of(rule), rule);
            }
        }
    }
}

/// What a rule matches, independent of how it was written: requirement
/// order, peer order, port order and repetition do not matter.
#[derive(PartialEq, Eq, Hash)]
struct RuleShape {
    action: Action,
    peers: BTreeSet<PeerMatch>,
    l4: BTreeSet<L4Match>,
}

impl RuleShape {
    fn of(rule: &Rule) -> RuleShape {
        let peers = rule
            .peers
            .iter()
            .map(|p| match p {
                PeerMatch::Endpoints(s) => PeerMatch::Endpoints(canonical(s)),
                other => other.clone(),
            })
            .collect();
        RuleShape { action: rule.action, peers, l4: rule.l4.iter().cloned().collect() }
    }
}

fn canonical(selector: &Selector) -> Selector {
    let mut requirements = selector.requirements.clone();
    requirements.sort();
    requirements.dedup();
    Selector { requirements }
}

/// W0001: an allow whose every flow one deny of the same section also
/// matches. Denies beat allows, so the allow can never decide a verdict.
fn shadowed_allows(diagnostics: &mut Diagnostics, rules: &[Rule]) {
    let denies: Vec<&Rule> = rules.iter().filter(|r| r.action == Action::Deny).collect();
    for allow in rules.iter().filter(|r| r.action == Action::Allow) {
        if allow.peers.is_empty() {
            continue;
        }
        let Some(deny) = denies.iter().find(|d| rule_covers(d, allow)) else { continue };
        diagnostics.push(
            Diagnostic::warning(
                codes::ALLOW_SHADOWED_BY_DENY,
                allow.span,
                format!("allow `{}` can never allow anything: deny `{}` matches all it matches", allow.name, deny.name),
            )
            .with_secondary(deny.span, "this deny always wins")
            .with_help("deny rules beat allow rules; narrow the deny or remove the allow"),
        );
    }
}

/// Whether every flow `inner` matches is also matched by `outer`: each of
/// its peers lies inside one of `outer`'s, and each of its L4 matches too.
fn rule_covers(outer: &Rule, inner: &Rule) -> bool {
    inner.peers.iter().all(|p| outer.peers.iter().any(|o| peer_covers(o, p)))
        && inner.l4.iter().all(|l| outer.l4.iter().any(|o| l4_covers(o, l)))
}

/// Whether peer `outer` matches every peer `inner` matches (lang-spec/SEMANTICS.md).
fn peer_covers(outer: &PeerMatch, inner: &PeerMatch) -> bool {
    use PeerMatch::{Cidr, Endpoints};
    match (outer, inner) {
        (PeerMatch::Entity(Entity::All), _) => true,
        (PeerMatch::Entity(a), PeerMatch::Entity(b)) => a == b || (*a == Entity::Cluster && in_cluster(*b)),
        (PeerMatch::Entity(Entity::Cluster), Endpoints(_)) => true,
        // `world` is every address outside the cluster; CIDR peers only match those.
        (PeerMatch::Entity(Entity::World), Cidr { .. }) => true,
        // `outer` selects a superset when each of its requirements follows
        // from one of `inner`'s (fewer or looser requirements select more).
        (Endpoints(o), Endpoints(i)) => o.requirements.iter().all(|r| i.requirements.iter().any(|ir| implies(ir, r))),
        (Cidr { net: on, except: oe }, Cidr { net: inn, except: ie }) => cidr_covers(on, oe, inn, ie),
        _ => false,
    }
}

/// Whether every label set satisfying `inner` satisfies `outer`.
fn implies(inner: &Requirement, outer: &Requirement) -> bool {
    use Requirement::{DoesNotExist, Exists, In, NotIn};
    match (inner, outer) {
        (In { key: ik, values: iv }, In { key: ok, values: ov }) => ik == ok && iv.is_subset(ov),
        (In { key: ik, .. }, Exists { key: ok }) => ik == ok,
        (In { key: ik, values: iv }, NotIn { key: ok, values: ov }) => ik == ok && iv.is_disjoint(ov),
        (NotIn { key: ik, values: iv }, NotIn { key: ok, values: ov }) => ik == ok && ov.is_subset(iv),
        (DoesNotExist { key: ik }, NotIn { key: ok, .. }) => ik == ok,
        _ => inner == outer,
    }
}

fn in_cluster(entity: Entity) -> bool {
    matches!(entity, Entity::Cluster | Entity::Host | Entity::Health | Entity::Init | Entity::Unmanaged)
}

/// `outer_net except outer_except` contains `inner_net except inner_except`
/// when the outer net contains the inner one and each outer exception is
/// either outside the inner net or inside one of its exceptions.
fn cidr_covers(outer_net: &IpNet, outer_except: &[IpNet], inner_net: &IpNet, inner_except: &[IpNet]) -> bool {
    outer_net.contains(inner_net)
        && outer_except.iter().all(|e| {
            let disjoint = !e.contains(inner_net) && !inner_net.contains(e);
            disjoint || inner_except.iter().any(|ie| ie.contains(e))
        })
}

/// Whether L4 match `outer` matches every packet `inner` matches.
fn l4_covers(outer: &L4Match, inner: &L4Match) -> bool {
    if outer == inner || *outer == L4Match::ANY {
        return true;
    }
    let protocols_covered = match (outer.proto, inner.proto) {
        (Some(o), Some(i)) => o == i,
        // `any/N` and `any/name` are TCP, UDP or SCTP with that port.
        (None, Some(i)) => outer.ports != PortMatch::All && Proto::WITH_PORTS.contains(&i),
        (None, None) => true,
        (Some(_), None) => false,
    };
    protocols_covered
        && match (&outer.ports, &inner.ports) {
            (PortMatch::All, _) => true,
            (PortMatch::Range { low: ol, high: oh }, PortMatch::Range { low: il, high: ih }) => ol <= il && ih <= oh,
            // A name's number depends on the destination: only the same name is certain.
            (PortMatch::Named(o), PortMatch::Named(i)) => o == i,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    fn tcp(low: u16, high: u16) -> L4Match {
        L4Match { proto: Some(Proto::Tcp), ports: PortMatch::Range { low, high } }
    }

    #[test]
    fn cidr_coverage_respects_excepts() {
        let ten = net("10.0.0.0/8");
        // The outer hole (10.1/16) is inside the inner prefix and not excepted there.
        assert!(!cidr_covers(&ten, &[net("10.1.0.0/16")], &net("10.0.0.0/12"), &[]));
        // The same hole, also excepted by the inner peer: covered.
        assert!(cidr_covers(&ten, &[net("10.1.0.0/16")], &net("10.0.0.0/12"), &[net("10.0.0.0/15")]));
        // A hole elsewhere does not matter.
        assert!(cidr_covers(&ten, &[net("10.200.0.0/16")], &net("10.0.0.0/12"), &[]));
        // The outer hole swallows the whole inner prefix.
        assert!(!cidr_covers(&ten, &[net("10.0.0.0/9")], &net("10.1.0.0/16"), &[]));
        assert!(!cidr_covers(&net("10.0.0.0/16"), &[], &ten, &[]));
        assert!(!cidr_covers(&net("0.0.0.0/0"), &[], &net("fd00::/8"), &[]));
    }

    #[test]
    fn l4_coverage() {
        let any_80 = L4Match { proto: None, ports: PortMatch::Range { low: 80, high: 80 } };
        assert!(l4_covers(&L4Match::ANY, &tcp(80, 80)));
        assert!(l4_covers(&tcp(1, 1024), &tcp(80, 443)));
        assert!(!l4_covers(&tcp(80, 80), &tcp(80, 81)));
        assert!(l4_covers(&any_80, &tcp(80, 80)));
        let icmp_8 = L4Match { proto: Some(Proto::Icmp), ports: PortMatch::Range { low: 8, high: 8 } };
        assert!(!l4_covers(&any_80, &icmp_8));
        let tcp_all = L4Match { proto: Some(Proto::Tcp), ports: PortMatch::All };
        assert!(l4_covers(&tcp_all, &tcp(1, 65535)));
        assert!(!l4_covers(&tcp(1, 65535), &tcp_all), "port 0 is not in 1-65535");
        let named = |proto, n: &str| L4Match { proto, ports: PortMatch::Named(n.into()) };
        assert!(l4_covers(&named(None, "http"), &named(Some(Proto::Tcp), "http")));
        assert!(!l4_covers(&tcp(1, 65535), &named(Some(Proto::Tcp), "http")));
    }

    #[test]
    fn peer_coverage() {
        let sel = |pairs: &[(&str, &str)]| {
            PeerMatch::Endpoints(Selector {
                requirements: pairs
                    .iter()
                    .map(|(k, v)| Requirement::In { key: (*k).into(), values: [(*v).to_string()].into() })
                    .collect(),
            })
        };
        assert!(peer_covers(&sel(&[("app", "a")]), &sel(&[("app", "a"), ("env", "prod")])));
        assert!(!peer_covers(&sel(&[("app", "a"), ("env", "prod")]), &sel(&[("app", "a")])));
        assert!(peer_covers(&PeerMatch::Entity(Entity::Cluster), &sel(&[])));
        assert!(peer_covers(&PeerMatch::Entity(Entity::Cluster), &PeerMatch::Entity(Entity::Host)));
        assert!(!peer_covers(&PeerMatch::Entity(Entity::Cluster), &PeerMatch::Entity(Entity::World)));
        let cidr = PeerMatch::Cidr { net: net("10.0.0.0/8"), except: vec![] };
        assert!(peer_covers(&PeerMatch::Entity(Entity::World), &cidr));
        assert!(!peer_covers(&cidr, &PeerMatch::Entity(Entity::World)));
        assert!(!peer_covers(&sel(&[]), &PeerMatch::Entity(Entity::Host)));
    }

    #[test]
    fn requirement_implication() {
        let set = |vs: &[&str]| vs.iter().map(|v| (*v).to_string()).collect::<BTreeSet<_>>();
        let is_in = |vs: &[&str]| Requirement::In { key: "tier".into(), values: set(vs) };
        let not_in = |vs: &[&str]| Requirement::NotIn { key: "tier".into(), values: set(vs) };
        assert!(implies(&is_in(&["api"]), &is_in(&["api", "db"])));
        assert!(!implies(&is_in(&["api", "db"]), &is_in(&["api"])));
        assert!(implies(&is_in(&["api"]), &Requirement::Exists { key: "tier".into() }));
        assert!(implies(&is_in(&["api"]), &not_in(&["web"])));
        assert!(!implies(&is_in(&["api"]), &not_in(&["api"])));
        assert!(implies(&not_in(&["web", "api"]), &not_in(&["web"])));
        assert!(!implies(&not_in(&["web"]), &not_in(&["web", "api"])));
        assert!(implies(&Requirement::DoesNotExist { key: "tier".into() }, &not_in(&["web"])));
        assert!(!implies(&is_in(&["api"]), &Requirement::In { key: "app".into(), values: set(&["api"]) }));
    }
}
