//! Resolution over random policy sets and inventories:
//! - the tables give, for every endpoint, direction, peer identity, protocol
//!   and port, the verdict that SEMANTICS.md defines (checked against a
//!   direct, deliberately naive reading of the checked policy);
//! - the incremental resolver agrees with a full re-resolution: after any
//!   sequence of random edits (rules, policies, endpoints, labels, named
//!   ports), `Resolver::update` gives the same tables, identities, ipcache
//!   and lock as resolving the new set from scratch with the previous lock,
//!   and reports exactly the endpoints whose tables changed;
//! - an update taken back with `Resolver::undo` leaves the resolver equal
//!   to what it was (tables, set, lock, selector cache, impact graph), and
//!   later updates stay exact.

use polc::driver;
use polc::ir::{Identity, IdentityInfo, IdentityKind, Resolved, TableVerdict};
use polc::resolve::{resolve, IdentityLock, ResolveConfig, Resolver};
use polc::sema::model::{L4Match, Labels, PeerMatch, Policy, PolicySet, PortMatch, Proto, Rule};
use polc::syntax::ast::{Action, Direction, Entity};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::fmt::Write as _;

#[derive(Debug, Clone)]
struct EndpointSpec {
    id: usize,
    labels: Vec<(usize, usize)>,
    named: Vec<usize>,
}

#[derive(Debug, Clone)]
struct RuleSpec {
    deny: bool,
    peers: Vec<usize>,
    ports: Vec<usize>,
}

#[derive(Debug, Clone)]
struct PolicySpec {
    selector: Vec<usize>,
    ingress: Option<Vec<RuleSpec>>,
    egress: Option<Vec<RuleSpec>>,
}

#[derive(Debug, Clone)]
struct Spec {
    endpoints: Vec<EndpointSpec>,
    policies: Vec<PolicySpec>,
    next_endpoint: usize,
}

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const SELECTOR_TERMS: [&str; 8] =
    ["app=a", "app=b", "tier in (a, b)", "env!=c", "tier", "!env", "app not in (c)", "env=a"];
const PEERS: [&str; 14] = [
    "{app=a}",
    "{tier=b}",
    "{}",
    "{env!=a}",
    "world",
    "host",
    "cluster",
    "all",
    "10.0.0.0/8 except (10.1.0.0/16)",
    "0.0.0.0/0 except (192.168.0.0/16)",
    "10.0.0.3/32",
    "::/0",
    "fc00::/7",
    "{app=c, tier}",
];
const PORTS: [&str; 12] = [
    "tcp/80",
    "tcp/http",
    "udp/53",
    "any/443",
    "tcp/http",
    "any/http",
    "icmp/8",
    "tcp",
    "any",
    "udp/metrics",
    "tcp/85-100",
    "any/metrics",
];
const NAMED: [&str; 4] = ["http = tcp/80", "http = tcp/8080", "metrics = udp/9100", "http = udp/80"];

fn endpoint_spec(id: usize) -> impl Strategy<Value = EndpointSpec> {
    (prop::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..3), prop::collection::vec(0..NAMED.len(), 0..2))
        .prop_map(move |(labels, named)| EndpointSpec { id, labels, named })
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        prop::bool::weighted(0.3),
        prop::collection::vec(0..PEERS.len(), 1..3),
        prop::collection::vec(0..PORTS.len(), 0..3),
    )
        .prop_map(|(deny, peers, ports)| RuleSpec { deny, peers, ports })
}

fn section() -> impl Strategy<Value = Option<Vec<RuleSpec>>> {
    prop::option::weighted(0.7, prop::collection::vec(rule_spec(), 0..4))
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (prop::collection::vec(0..SELECTOR_TERMS.len(), 0..2), section(), section())
        .prop_map(|(selector, ingress, egress)| PolicySpec { selector, ingress, egress })
}

fn spec() -> impl Strategy<Value = Spec> {
    (2usize..7, prop::collection::vec(policy_spec(), 1..5)).prop_flat_map(|(n, policies)| {
        let endpoints: Vec<_> = (0..n).map(endpoint_spec).collect();
        endpoints.prop_map(move |endpoints| Spec {
            next_endpoint: endpoints.len(),
            endpoints,
            policies: policies.clone(),
        })
    })
}

#[derive(Debug, Clone)]
enum Edit {
    ReplaceRule { policy: usize, rule: usize, new: RuleSpec },
    AddRule { policy: usize, new: RuleSpec },
    RemoveRule { policy: usize, rule: usize },
    ReplacePolicy { policy: usize, new: PolicySpec },
    AddPolicy(PolicySpec),
    RemovePolicy(usize),
    Relabel { endpoint: usize, labels: Vec<(usize, usize)> },
    Rename { endpoint: usize, named: Vec<usize> },
    AddEndpoint(EndpointSpec),
    RemoveEndpoint(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), any::<usize>(), rule_spec()).prop_map(|(policy, rule, new)| Edit::ReplaceRule { policy, rule, new }),
        1 => (any::<usize>(), rule_spec()).prop_map(|(policy, new)| Edit::AddRule { policy, new }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(policy, rule)| Edit::RemoveRule { policy, rule }),
        1 => (any::<usize>(), policy_spec()).prop_map(|(policy, new)| Edit::ReplacePolicy { policy, new }),
        1 => policy_spec().prop_map(Edit::AddPolicy),
        1 => any::<usize>().prop_map(Edit::RemovePolicy),
        2 => (any::<usize>(), prop::collection::vec((0..KEYS.len(), 0..VALUES.len()), 0..3))
            .prop_map(|(endpoint, labels)| Edit::Relabel { endpoint, labels }),
        4 => (any::<usize>(), prop::collection::vec(0..NAMED.len(), 0..3)).prop_map(|(endpoint, named)| Edit::Rename { endpoint, named }),
        1 => endpoint_spec(0).prop_map(Edit::AddEndpoint),
        1 => any::<usize>().prop_map(Edit::RemoveEndpoint),
    ]
}

impl Spec {
    fn apply(&mut self, edit: &Edit) {
        let np = self.policies.len().max(1);
        let ne = self.endpoints.len().max(1);
        match edit.clone() {
            Edit::ReplaceRule { policy, rule, new } => {
                if let Some(section) =
                    self.policies.get_mut(policy % np).and_then(|p| p.ingress.as_mut().or(p.egress.as_mut()))
                {
                    if !section.is_empty() {
                        let n = section.len();
                        section[rule % n] = new;
                    }
                }
            }
            Edit::AddRule { policy, new } => {
                if let Some(p) = self.policies.get_mut(policy % np) {
                    p.egress.get_or_insert_with(Vec::new).push(new);
                }
            }
            Edit::RemoveRule { policy, rule } => {
                if let Some(section) = self.policies.get_mut(policy % np).and_then(|p| p.ingress.as_mut()) {
                    if !section.is_empty() {
                        let n = section.len();
                        section.remove(rule % n);
                    }
                }
            }
            Edit::ReplacePolicy { policy, new } => {
                if let Some(p) = self.policies.get_mut(policy % np) {
                    *p = new;
                }
            }
            Edit::AddPolicy(new) => self.policies.push(new),
            Edit::RemovePolicy(i) => {
                if !self.policies.is_empty() {
                    self.policies.remove(i % np);
                }
            }
            Edit::Relabel { endpoint, labels } => {
                if let Some(e) = self.endpoints.get_mut(endpoint % ne) {
                    e.labels = labels;
                }
            }
            Edit::Rename { endpoint, named } => {
                if let Some(e) = self.endpoints.get_mut(endpoint % ne) {
                    e.named = named;
                }
            }
            Edit::AddEndpoint(mut e) => {
                e.id = self.next_endpoint;
                self.next_endpoint += 1;
                self.endpoints.push(e);
            }
            Edit::RemoveEndpoint(i) => {
                if !self.endpoints.is_empty() {
                    self.endpoints.remove(i % ne);
                }
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::from("node { ipv4 10.9.0.1 }\n");
        for e in &self.endpoints {
            let mut labels = BTreeSet::new();
            let mut keys = BTreeSet::new();
            for (k, v) in &e.labels {
                if keys.insert(k) {
                    labels.insert(format!("{}={}", KEYS[*k], VALUES[*v]));
                }
            }
            let labels: Vec<_> = labels.into_iter().collect();
            let _ = write!(
                out,
                "endpoint e{} {{ labels {{{}}} ipv4 10.0.{}.{} ",
                e.id,
                labels.join(", "),
                e.id / 200,
                e.id % 200 + 1
            );
            let mut names = BTreeSet::new();
            for n in &e.named {
                if names.insert(NAMED[*n].split(' ').next().unwrap_or_default()) {
                    let _ = write!(out, "port {} ", NAMED[*n]);
                }
            }
            out.push_str("}\n");
        }
        for (i, p) in self.policies.iter().enumerate() {
            let terms: BTreeSet<&str> = p.selector.iter().map(|t| SELECTOR_TERMS[*t]).collect();
            let terms: Vec<&str> = terms.into_iter().collect();
            let _ = writeln!(out, "policy p{i} {{\n  select {{{}}}", terms.join(", "));
            for (keyword, peer_word, section) in [("ingress", "from", &p.ingress), ("egress", "to", &p.egress)] {
                let Some(rules) = section else { continue };
                let _ = writeln!(out, "  {keyword} {{");
                for (j, r) in rules.iter().enumerate() {
                    let peers: Vec<&str> = r.peers.iter().map(|x| PEERS[*x]).collect();
                    let action = if r.deny { "deny" } else { "allow" };
                    let _ = write!(out, "    {action} r{j}: {peer_word} {}", peers.join(", "));
                    if !r.ports.is_empty() {
                        let ports: Vec<&str> = r.ports.iter().map(|x| PORTS[*x]).collect();
                        let _ = write!(out, " on {}", ports.join(", "));
                    }
                    out.push('\n');
                }
                out.push_str("  }\n");
            }
            out.push_str("}\n");
        }
        out
    }

    fn checked(&self) -> Option<PolicySet> {
        let frontend = driver::check_text("random.pol", &self.text());
        (!frontend.has_errors()).then_some(frontend.checked)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_full(base in spec(), edits in prop::collection::vec(prop::collection::vec(edit(), 1..3), 1..4)) {
        // A small capacity, so that some updates fail: a failed update must change nothing.
        let config = ResolveConfig { max_entries_per_endpoint: 60, ..ResolveConfig::default() };
        let set = base.checked();
        prop_assume!(set.is_some());
        let resolver = Resolver::new(set.unwrap_or_default(), &IdentityLock::default(), config.clone());
        prop_assume!(resolver.is_ok());
        let Ok(mut resolver) = resolver else { return Ok(()) };
        let mut spec = base;
        for step in edits {
            for e in &step {
                spec.apply(e);
            }
            let Some(next) = spec.checked() else { continue };
            // Tried and taken back first (as polcd does when a change cannot be applied).
            let saved = resolver.clone();
            if let Ok((_, undo)) = resolver.update_undoable(next.clone()) {
                resolver.undo(undo);
            }
            prop_assert!(resolver == saved, "the undo gives the resolver back: {}", spec.text());
            let before = resolver.resolved().clone();
            let lock_before = resolver.lock().clone();
            let full = Resolver::new(next.clone(), &lock_before, config.clone());
            let changes = match resolver.update(next) {
                Ok(changes) => changes,
                Err(e) => {
                    prop_assert_eq!(full.map(|_| ()), Err(e));
                    prop_assert_eq!(resolver.resolved(), &before);
                    prop_assert_eq!(resolver.lock(), &lock_before);
                    continue;
                }
            };
            let full = full.expect("full resolution succeeds when the update does");
            prop_assert_eq!(resolver.resolved(), full.resolved(), "{}", spec.text());
            prop_assert_eq!(resolver.lock(), full.lock());
            let expected: Vec<String> = full
                .resolved()
                .endpoints
                .iter()
                .filter(|e| before.endpoint(&e.name) != Some(*e))
                .map(|e| e.name.clone())
                .collect();
            prop_assert_eq!(&changes.changed_endpoints, &expected, "{}", spec.text());
            prop_assert_eq!(changes.recomputed + changes.skipped, full.resolved().endpoints.len());
        }
    }
}

#[test]
fn one_rule_edit_recomputes_only_its_endpoints() {
    let base = "endpoint a { labels {app=a} ipv4 10.0.0.1 }\n\
                endpoint b { labels {app=b} ipv4 10.0.0.2 }\n\
                endpoint c { labels {app=c} ipv4 10.0.0.3 }\n\
                policy pa { select {app=a} ingress { allow x: from {app=b} on tcp/80 } }\n\
                policy pc { select {app=c} ingress { allow y: from all on tcp/22 } }\n";
    let checked = |text: &str| driver::check_text("t.pol", text).checked;
    let mut resolver =
        Resolver::new(checked(base), &IdentityLock::default(), ResolveConfig::default()).expect("resolves");
    let changes = resolver.update(checked(&base.replace("tcp/80", "tcp/8080"))).expect("update");
    assert_eq!(changes.changed_endpoints, vec!["a".to_string()]);
    assert_eq!((changes.recomputed, changes.skipped), (1, 2));
    assert!(!changes.identities_changed && !changes.ipcache_changed);

    // A new endpoint `{app=b}`-labelled: same identity as b, nothing else to redo.
    let more = format!("{base}endpoint b2 {{ labels {{app=b}} ipv4 10.0.0.4 }}\n").replace("tcp/80", "tcp/8080");
    let changes = resolver.update(checked(&more)).expect("update");
    assert_eq!(changes.changed_endpoints, vec!["b2".to_string()]);
    assert_eq!((changes.recomputed, changes.skipped), (1, 3));
    assert!(changes.ipcache_changed && !changes.identities_changed);

    // A new label set is a new identity: `pc` names it through `all`... but `all`
    // tables need no new entry, so only the new endpoint changes.
    let newer = format!("{more}endpoint d {{ labels {{app=d}} ipv4 10.0.0.5 }}\n");
    let changes = resolver.update(checked(&newer)).expect("update");
    assert_eq!(changes.changed_endpoints, vec!["d".to_string()]);
    assert!(changes.identities_changed);
}

#[test]
fn a_peer_renaming_its_port_changes_egress_tables_that_name_it() {
    let base = "endpoint web { labels {app=web} ipv4 10.0.0.1 port http = tcp/80 }\n\
                endpoint client { labels {app=client} ipv4 10.0.0.2 }\n\
                endpoint other { labels {app=other} ipv4 10.0.0.3 }\n\
                policy p { select {app=client} egress { allow x: to {app=web} on tcp/http } }\n";
    let checked = |text: &str| driver::check_text("t.pol", text).checked;
    let mut resolver =
        Resolver::new(checked(base), &IdentityLock::default(), ResolveConfig::default()).expect("resolves");
    let changes = resolver.update(checked(&base.replace("tcp/80", "tcp/8080"))).expect("update");
    assert_eq!(changes.changed_endpoints, vec!["client".to_string()], "web's tables do not use its names");
    let web = resolver.resolved().endpoint("web").expect("web").identity;
    let client = resolver.resolved().endpoint("client").expect("client");
    assert!(client.egress.lookup(web, 6, 8080).allows());
    assert!(!client.egress.lookup(web, 6, 80).allows());
}

#[test]
fn a_failed_update_changes_nothing_and_later_updates_stay_exact() {
    let endpoints = "endpoint a { labels {app=a} ipv4 10.0.0.1 }\n\
                     endpoint c { labels {app=c} ipv4 10.0.0.3 port http = tcp/80 }\n";
    let checked = |policy: &str| driver::check_text("t.pol", &format!("{endpoints}{policy}")).checked;
    let config = ResolveConfig { max_entries_per_endpoint: 4, ..ResolveConfig::default() };
    let small = "policy p { select {app=a} egress { allow x: to host on tcp/22 } }\n";
    let mut resolver = Resolver::new(checked(small), &IdentityLock::default(), config.clone()).expect("resolves");
    let before = resolver.resolved().clone();

    // Five entries for `a`: over the limit of four.
    let big = "policy p { select {app=a} egress { allow x: to {app=c} on tcp, udp, sctp, icmp, icmpv6 } }\n";
    let err = resolver.update(checked(big)).expect_err("over capacity");
    assert!(err.to_string().starts_with("endpoint `a` needs 5 policy entries"), "{err}");
    assert_eq!(resolver.resolved(), &before);

    // The same peer, within the limit; then `c` renames its port: `a` follows.
    let named = "policy p { select {app=a} egress { allow x: to {app=c} on tcp/http } }\n";
    resolver.update(checked(named)).expect("fits");
    let moved = format!("{endpoints}{named}").replace("tcp/80", "tcp/8080");
    let changes = resolver.update(driver::check_text("t.pol", &moved).checked).expect("fits");
    assert_eq!(changes.changed_endpoints, vec!["a".to_string()]);
    let full =
        Resolver::new(driver::check_text("t.pol", &moved).checked, &IdentityLock::default(), config).expect("full");
    assert_eq!(resolver.resolved(), full.resolved());
}

#[test]
fn an_undone_update_is_seen_again_by_the_next_one() {
    let base = "endpoint a { labels {app=a} ipv4 10.0.0.1 }\n\
                endpoint b { labels {app=b} ipv4 10.0.0.2 }\n\
                policy pa { select {app=a} ingress { allow x: from {app=b} on tcp/80 } }\n";
    let checked = |text: &str| driver::check_text("t.pol", text).checked;
    let mut resolver =
        Resolver::new(checked(base), &IdentityLock::default(), ResolveConfig::default()).expect("resolves");
    let saved = resolver.clone();
    let edits = [
        // A policy edit with a new peer selector.
        base.replace("from {app=b}", "from {app=c}"),
        // A new label set (a new identity) and a CIDR prefix.
        format!("{base}endpoint c {{ labels {{app=c}} ipv4 10.0.0.3 }}\n").replace("from {app=b}", "from 10.1.0.0/16"),
        // An endpoint removed.
        base.replace("endpoint b { labels {app=b} ipv4 10.0.0.2 }\n", ""),
    ];
    for edit in &edits {
        let (changes, undo) = resolver.update_undoable(checked(edit)).expect("update");
        assert!(!changes.changed_endpoints.is_empty() || !changes.removed_endpoints.is_empty(), "{edit}");
        resolver.undo(undo);
        assert!(resolver == saved, "back as it was after {edit}");
        // The edit again: the same change set as from a resolver that never saw it.
        let mut fresh = saved.clone();
        let expected = fresh.update(checked(edit)).expect("update");
        let mut again = resolver.clone();
        assert_eq!(again.update(checked(edit)).expect("update"), expected);
        assert!(again == fresh);
    }
}

/// The verdict of SEMANTICS.md "Verdicts" for one direction, straight from
/// the checked policy: `None` when the direction is not enforced, else the
/// deciding (action, rule id), rule 0 for default deny.
fn naive_verdict(
    set: &PolicySet,
    resolved: &Resolved,
    endpoint: &str,
    direction: Direction,
    peer: &IdentityInfo,
    proto: u8,
    port: u16,
) -> Option<(Action, u32)> {
    let me = resolved.endpoint(endpoint).expect("endpoint");
    let my_labels = labels_of(resolved, me.identity);
    let def = set.inventory.endpoint(endpoint).expect("def");
    let selecting: Vec<&Policy> = set.policies.iter().filter(|p| p.selector.matches(&my_labels)).collect();
    let sections: Vec<&Vec<Rule>> = selecting.iter().filter_map(|p| p.section(direction)).collect();
    if sections.is_empty() {
        return None;
    }
    // Named ports of the destination: ingress, this endpoint; egress, every endpoint with the peer's identity.
    let destination_ports = |name: &str| -> Vec<(Proto, u16)> {
        match direction {
            Direction::Ingress => def.named_ports.get(name).copied().into_iter().collect(),
            Direction::Egress => set
                .inventory
                .endpoints
                .iter()
                .filter(|e| resolved.endpoint(&e.name).is_some_and(|r| r.identity == peer.id))
                .filter_map(|e| e.named_ports.get(name).copied())
                .collect(),
        }
    };
    let l4_matches = |l4: &L4Match| -> bool {
        let proto_is = |p: Proto| p.number() == proto;
        match (&l4.ports, l4.proto) {
            (PortMatch::All, None) => true,
            (PortMatch::All, Some(p)) => proto_is(p),
            (PortMatch::Range { low, high }, Some(p)) => proto_is(p) && (*low..=*high).contains(&port),
            (PortMatch::Range { low, high }, None) => [6, 17, 132].contains(&proto) && (*low..=*high).contains(&port),
            (PortMatch::Named(name), wanted) => destination_ports(name)
                .into_iter()
                .any(|(p, n)| proto_is(p) && n == port && wanted.is_none_or(|w| w == p)),
        }
    };
    let matching: Vec<&Rule> = sections
        .into_iter()
        .flatten()
        .filter(|r| r.peers.iter().any(|m| naive_peer_matches(m, peer)) && r.l4.iter().any(&l4_matches))
        .collect();
    let lowest = |action: Action| matching.iter().filter(|r| r.action == action).map(|r| r.id.0).min();
    Some(match (lowest(Action::Deny), lowest(Action::Allow)) {
        (Some(id), _) => (Action::Deny, id),
        (None, Some(id)) => (Action::Allow, id),
        (None, None) => (Action::Deny, 0),
    })
}

fn labels_of(resolved: &Resolved, id: Identity) -> Labels {
    resolved
        .identities
        .iter()
        .find_map(|i| match &i.kind {
            IdentityKind::Endpoint { labels } if i.id == id => Some(labels.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// SEMANTICS.md "Which peers a rule names", read literally.
fn naive_peer_matches(m: &PeerMatch, peer: &IdentityInfo) -> bool {
    let reserved = |name: &str| matches!(&peer.kind, IdentityKind::Reserved { name: n } if n == name);
    match (m, &peer.kind) {
        (PeerMatch::Endpoints(selector), IdentityKind::Endpoint { labels }) => selector.matches(labels),
        (PeerMatch::Endpoints(_), _) => false,
        (PeerMatch::Cidr { net, except }, IdentityKind::Cidr { prefix }) => {
            net.contains(prefix) && !except.iter().any(|e| e.contains(prefix))
        }
        // The per-family worlds are the `/0` prefixes; `world` itself has no family.
        (PeerMatch::Cidr { net, except }, _) => {
            let slash0: Option<ipnet::IpNet> = if reserved("world-ipv4") {
                Some(ipnet::IpNet::V4(Default::default()))
            } else if reserved("world-ipv6") {
                Some(ipnet::IpNet::V6(Default::default()))
            } else {
                None
            };
            slash0.is_some_and(|p| net.contains(&p) && !except.iter().any(|e| e.contains(&p)))
        }
        (PeerMatch::Entity(Entity::All), _) => true,
        (PeerMatch::Entity(Entity::World), kind) => {
            ["world", "world-ipv4", "world-ipv6"].iter().any(|n| reserved(n))
                || matches!(kind, IdentityKind::Cidr { .. })
        }
        (PeerMatch::Entity(Entity::Cluster), kind) => {
            matches!(kind, IdentityKind::Endpoint { .. })
                || ["host", "health", "init", "unmanaged"].iter().any(|n| reserved(n))
        }
        (PeerMatch::Entity(Entity::Host), _) => reserved("host"),
        (PeerMatch::Entity(Entity::Health), _) => reserved("health"),
        (PeerMatch::Entity(Entity::Init), _) => reserved("init"),
        (PeerMatch::Entity(Entity::Unmanaged), _) => reserved("unmanaged"),
    }
}

const SAMPLE_PORTS: [u16; 17] = [0, 1, 22, 53, 79, 80, 81, 85, 90, 91, 100, 101, 443, 8080, 9100, 9101, 65535];
const SAMPLE_TYPES: [u16; 5] = [0, 3, 8, 128, 255];

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn tables_give_the_verdicts_of_the_semantics(spec in spec()) {
        let set = spec.checked();
        prop_assume!(set.is_some());
        let set = set.unwrap_or_default();
        let (resolved, _) = resolve(&set, &IdentityLock::default(), &ResolveConfig::default()).expect("resolves");
        for endpoint in &resolved.endpoints {
            for direction in [Direction::Ingress, Direction::Egress] {
                let table = match direction {
                    Direction::Ingress => &endpoint.ingress,
                    Direction::Egress => &endpoint.egress,
                };
                for peer in &resolved.identities {
                    for proto in [6u8, 17, 132, 1, 58, 47] {
                        let ports: &[u16] = if proto == 1 || proto == 58 { &SAMPLE_TYPES } else { &SAMPLE_PORTS };
                        for &port in ports {
                            let expected = naive_verdict(&set, &resolved, &endpoint.name, direction, peer, proto, port);
                            let got = match table.lookup(peer.id, proto, port) {
                                TableVerdict::NotEnforced => None,
                                TableVerdict::Decided { action, rule } => Some((action, rule.0)),
                                TableVerdict::DefaultDeny => Some((Action::Deny, 0)),
                            };
                            prop_assert_eq!(
                                got, expected,
                                "{} {:?} from/to {:?} proto {} port {}\n{}", endpoint.name, direction, peer, proto, port, spec.text()
                            );
                        }
                    }
                }
            }
        }
    }
}
