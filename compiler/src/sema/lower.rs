//! The `lower` pass: resolves names, validates every token, and builds the
//! checked [`model::PolicySet`]. Invalid parts are reported and left out;
//! the pass carries on so that one run reports every error it can.

use super::model::{self, EndpointDef, L4Match, PeerMatch, PortMatch, Proto, Requirement, RuleId, Selector};
use super::{icmp, labels, Context};
use crate::diag::{codes, Diagnostic, Diagnostics};
use crate::syntax::ast::{self, Direction, EndpointField, Item, LabelOp, PeerKeyword, PortSel, Protocol, Text};
use crate::syntax::Span;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn run(cx: &mut Context<'_>) {
    let mut lowerer = Lowerer::new(cx.modules);
    let inventory = lowerer.inventory(cx.modules);
    let policies = lowerer.policies(cx.modules);
    lowerer.report_unused();
    cx.checked = model::PolicySet { policies, inventory };
    cx.diagnostics.extend(lowerer.diagnostics);
}

/// A `ports`, `selector` or `peers` definition, by name.
#[derive(Clone, Copy)]
enum Definition<'a> {
    Ports(&'a ast::PortsDef),
    Selector(&'a ast::SelectorDef),
    Peers(&'a ast::PeersDef),
}

impl Definition<'_> {
    fn kind(self) -> &'static str {
        match self {
            Definition::Ports(_) => "ports",
            Definition::Selector(_) => "selector",
            Definition::Peers(_) => "peers",
        }
    }

    fn span(self) -> Span {
        match self {
            Definition::Ports(d) => d.span,
            Definition::Selector(d) => d.span,
            Definition::Peers(d) => d.span,
        }
    }

    /// Where its name is written, for "first defined here" notes.
    fn name_span(self) -> Span {
        match self {
            Definition::Ports(d) => d.name.span,
            Definition::Selector(d) => d.name.span,
            Definition::Peers(d) => d.name.span,
        }
    }

    /// Where a `$name` of this kind may be used, for help lines.
    fn usable_where(self) -> &'static str {
        match self {
            Definition::Ports(_) => "a `ports` definition goes after `on`",
            Definition::Selector(_) => "a `selector` definition goes after `select` or among a rule's peers",
            Definition::Peers(_) => "a `peers` definition goes among a rule's peers",
        }
    }
}

struct Lowerer<'a> {
    definitions: BTreeMap<&'a str, Definition<'a>>,
    /// Definitions referenced at least once (for W0004).
    used: HashSet<&'a str>,
    /// Definitions being expanded right now (for E0022).
    expanding: Vec<&'a str>,
    diagnostics: Diagnostics,
    /// (code, primary span) of every diagnostic so far: a definition is
    /// lowered at each use, but its problems are reported once.
    reported: HashSet<(&'static str, Span)>,
    next_rule: u32,
}

impl<'a> Lowerer<'a> {
    fn new(modules: &'a [ast::Module]) -> Lowerer<'a> {
        let mut lowerer = Lowerer {
            definitions: BTreeMap::new(),
            used: HashSet::new(),
            expanding: Vec::new(),
            diagnostics: Diagnostics::default(),
            reported: HashSet::new(),
            next_rule: 1,
        };
        for item in modules.iter().flat_map(|m| &m.items) {
            let (name, def) = match item {
                Item::Ports(d) => (&d.name, Definition::Ports(d)),
                Item::Selector(d) => (&d.name, Definition::Selector(d)),
                Item::Peers(d) => (&d.name, Definition::Peers(d)),
                _ => continue,
            };
            if let Some(first) = lowerer.definitions.get(name.name.as_str()) {
                let first_span = first.name_span();
                lowerer.error(
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        name.span,
                        format!("`{}` is defined more than once", name.name),
                    )
                    .with_label("defined again here")
                    .with_secondary(first_span, "first defined here")
                    .with_help("`ports`, `selector` and `peers` definitions share one namespace; rename one"),
                );
            } else {
                lowerer.definitions.insert(&name.name, def);
            }
        }
        lowerer
    }

    fn error(&mut self, d: Diagnostic) {
        if self.reported.insert((d.code.id, d.primary_span())) {
            self.diagnostics.push(d);
        }
    }

    /// Checks the definitions no policy uses (their errors count too), then
    /// reports them as unused. One used only by an unused one counts as used.
    fn report_unused(&mut self) {
        let unused: Vec<(&'a str, Definition<'a>)> =
            self.definitions.iter().filter(|(name, _)| !self.used.contains(*name)).map(|(n, d)| (*n, *d)).collect();
        for (name, def) in unused {
            self.expanding.push(name);
            match def {
                Definition::Ports(d) => d.ports.iter().for_each(|item| self.port_item(item, &mut Vec::new())),
                Definition::Selector(d) => drop(self.selector(&d.selector)),
                Definition::Peers(d) => d.peers.iter().for_each(|peer| self.peer(peer, peer.span(), &mut Vec::new())),
            }
            self.expanding.pop();
        }
        let unused: Vec<_> = self
            .definitions
            .iter()
            .filter(|(name, _)| !self.used.contains(*name))
            .map(|(name, def)| (name.to_string(), *def))
            .collect();
        for (name, def) in unused {
            self.error(
                Diagnostic::warning(
                    codes::UNUSED_DEFINITION,
                    def.span(),
                    format!("{} definition `{name}` is never used", def.kind()),
                )
                .with_help(format!("use it as `${name}`, or remove it")),
            );
        }
    }

    // ------------------------------------------------------------ definitions

    /// Looks up `$name`; reports unknown names. Marks the definition used.
    fn lookup(&mut self, reference: &'a ast::Ident) -> Option<Definition<'a>> {
        match self.definitions.get(reference.name.as_str()).copied() {
            Some(def) => {
                self.used.insert(&reference.name);
                Some(def)
            }
            None => {
                let help = match self.closest_definition(&reference.name) {
                    Some(close) => format!("did you mean `${close}`?"),
                    None => "define it with `ports NAME = ...`, `selector NAME = {...}` or `peers NAME = ...`".into(),
                };
                self.error(
                    Diagnostic::error(
                        codes::UNKNOWN_NAME,
                        reference.span,
                        format!("`${}` is not defined", reference.name),
                    )
                    .with_help(help),
                );
                None
            }
        }
    }

    fn closest_definition(&self, name: &str) -> Option<&'a str> {
        self.definitions.keys().copied().filter(|d| edit_distance(d, name) <= 2).min_by_key(|d| edit_distance(d, name))
    }

    fn wrong_kind(&mut self, reference: &ast::Ident, def: Definition<'_>, wanted: &str) {
        self.error(
            Diagnostic::error(
                codes::WRONG_KIND,
                reference.span,
                format!("`${}` is a {} definition, but {wanted} is needed here", reference.name, def.kind()),
            )
            .with_secondary(def.name_span(), format!("`{}` defined here", reference.name))
            .with_help(def.usable_where()),
        );
    }

    /// Guards against `peers a = $b` / `peers b = $a`; returns false on a cycle.
    fn enter(&mut self, reference: &'a ast::Ident) -> bool {
        if self.expanding.contains(&reference.name.as_str()) {
            let chain = self.expanding.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" -> ");
            self.error(
                Diagnostic::error(
                    codes::CYCLIC_DEFINITION,
                    reference.span,
                    format!("`{}` refers to itself", reference.name),
                )
                .with_help(format!("the definitions form a cycle: {chain} -> `{}`", reference.name)),
            );
            return false;
        }
        self.expanding.push(&reference.name);
        true
    }

    fn leave(&mut self) {
        self.expanding.pop();
    }

    // ---------------------------------------------------------------- policies

    fn policies(&mut self, modules: &'a [ast::Module]) -> Vec<model::Policy> {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut out = Vec::new();
        for item in modules.iter().flat_map(|m| &m.items) {
            let Item::Policy(policy) = item else { continue };
            if let Some(first) = seen.get(policy.name.name.as_str()) {
                self.error(
                    Diagnostic::error(
                        codes::DUPLICATE_DEFINITION,
                        policy.name.span,
                        format!("policy `{}` is defined more than once", policy.name.name),
                    )
                    .with_label("defined again here")
                    .with_secondary(*first, "first defined here")
                    .with_help("policy names are unique across the policy set; rename one or merge them"),
                );
            } else {
                seen.insert(&policy.name.name, policy.name.span);
            }
            out.push(self.policy(policy));
        }
        out
    }

    fn policy(&mut self, policy: &'a ast::Policy) -> model::Policy {
        let selector = match &policy.select {
            ast::EndpointSelector::Inline(s) => self.selector(s),
            ast::EndpointSelector::Named(reference) => match self.lookup(reference) {
                Some(Definition::Selector(def)) => self.selector(&def.selector),
                Some(other) => {
                    self.wrong_kind(reference, other, "a `selector` definition");
                    Selector::default()
                }
                None => Selector::default(),
            },
        };
        let mut lowered =
            model::Policy { name: policy.name.name.clone(), selector, ingress: None, egress: None, span: policy.span };
        if policy.sections.is_empty() {
            self.error(
                Diagnostic::warning(
                    codes::POLICY_WITHOUT_SECTIONS,
                    policy.name.span,
                    format!("policy `{}` has no `ingress` or `egress` section", policy.name.name),
                )
                .with_help("it changes nothing; add `ingress { }` to deny all ingress to the selected endpoints"),
            );
        }
        let mut rule_names: HashMap<&str, Span> = HashMap::new();
        let mut section_spans: HashMap<Direction, Span> = HashMap::new();
        for section in &policy.sections {
            if let Some(first) = section_spans.get(&section.direction) {
                self.error(
                    Diagnostic::error(
                        codes::DUPLICATE_SECTION,
                        section.span,
                        format!("policy `{}` has two `{}` sections", policy.name.name, section.direction.keyword()),
                    )
                    .with_secondary(*first, "the first one")
                    .with_help("merge their rules into one section"),
                );
                continue;
            }
            section_spans.insert(section.direction, section.span);
            let mut rules = Vec::new();
            for rule in &section.rules {
                if let Some(first) = rule_names.get(rule.name.name.as_str()) {
                    self.error(
                        Diagnostic::error(
                            codes::DUPLICATE_RULE_NAME,
                            rule.name.span,
                            format!("rule `{}` is defined twice in policy `{}`", rule.name.name, policy.name.name),
                        )
                        .with_secondary(*first, "first defined here")
                        .with_help("rule names identify rules in traces, counters and events; make them unique"),
                    );
                } else {
                    rule_names.insert(&rule.name.name, rule.name.span);
                }
                rules.push(self.rule(policy, section.direction, rule));
            }
            match section.direction {
                Direction::Ingress => lowered.ingress = Some(rules),
                Direction::Egress => lowered.egress = Some(rules),
            }
        }
        lowered
    }

    fn rule(&mut self, policy: &ast::Policy, direction: Direction, rule: &'a ast::Rule) -> model::Rule {
        let expected = match direction {
            Direction::Ingress => PeerKeyword::From,
            Direction::Egress => PeerKeyword::To,
        };
        if rule.peer_keyword != expected {
            let (written, wanted) = match expected {
                PeerKeyword::From => ("to", "from"),
                PeerKeyword::To => ("from", "to"),
            };
            self.error(
                Diagnostic::error(
                    codes::WRONG_PEER_DIRECTION,
                    rule.peer_keyword_span,
                    format!("`{written}` in an {} section", direction.keyword()),
                )
                .with_label(format!("expected `{wanted}`"))
                .with_help(format!(
                    "{} rules name where traffic {}: write `{wanted}`",
                    direction.keyword(),
                    if direction == Direction::Ingress { "comes from" } else { "goes to" }
                )),
            );
        }
        let mut peers = Vec::new();
        for peer in &rule.peers {
            self.peer(peer, peer.span(), &mut peers);
        }
        let mut l4 = Vec::new();
        for item in &rule.ports {
            self.port_item(item, &mut l4);
        }
        if rule.ports.is_empty() {
            l4.push((L4Match::ANY, rule.span));
        }
        let (peers, peer_spans) = peers.into_iter().unzip();
        let (l4, l4_spans) = l4.into_iter().unzip();
        let id = RuleId(self.next_rule);
        self.next_rule += 1;
        model::Rule {
            id,
            name: rule.name.name.clone(),
            policy: policy.name.name.clone(),
            action: rule.action,
            direction,
            peers,
            peer_spans,
            l4,
            l4_spans,
            span: rule.span,
        }
    }

    // ------------------------------------------------------------------- peers

    /// Lowers one peer into `out`, each with `written`: where the rule names it.
    fn peer(&mut self, peer: &'a ast::Peer, written: Span, out: &mut Vec<(PeerMatch, Span)>) {
        match peer {
            ast::Peer::Selector(s) => out.push((PeerMatch::Endpoints(self.selector(s)), written)),
            ast::Peer::Entity(e) => out.push((PeerMatch::Entity(e.entity), written)),
            ast::Peer::Cidr(c) => {
                if let Some(m) = self.cidr_peer(c) {
                    out.push((m, written));
                }
            }
            ast::Peer::Ref(reference) => match self.lookup(reference) {
                Some(Definition::Selector(def)) => {
                    out.push((PeerMatch::Endpoints(self.selector(&def.selector)), written));
                }
                // `enter` reports a cycle; a reference in one lowers to nothing.
                Some(Definition::Peers(def)) if self.enter(reference) => {
                    for inner in &def.peers {
                        self.peer(inner, written, out);
                    }
                    self.leave();
                }
                Some(Definition::Peers(_)) => {}
                Some(other @ Definition::Ports(_)) => self.wrong_kind(reference, other, "a peer"),
                None => {}
            },
        }
    }

    fn cidr_peer(&mut self, peer: &ast::CidrPeer) -> Option<PeerMatch> {
        let net = self.cidr(&peer.cidr)?;
        let mut except = Vec::new();
        for text in &peer.except {
            let Some(e) = self.cidr(text) else { continue };
            let same_family = matches!((net, e), (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)));
            if !same_family {
                self.error(
                    Diagnostic::error(
                        codes::MIXED_ADDRESS_FAMILY,
                        text.span,
                        format!("`{}` and `{}` are of different address families", peer.cidr.value, text.value),
                    )
                    .with_secondary(peer.cidr.span, "the CIDR it is an exception to")
                    .with_help("an `except` list holds prefixes of the same family as its CIDR"),
                );
            } else if !net.contains(&e) {
                self.error(
                    Diagnostic::error(
                        codes::EXCEPT_OUTSIDE_CIDR,
                        text.span,
                        format!("`{}` is not inside `{}`", text.value, peer.cidr.value),
                    )
                    .with_secondary(peer.cidr.span, "the CIDR it should be inside")
                    .with_help("an exception must be a part of its CIDR; remove it or fix the prefix"),
                );
            } else {
                except.push(e);
            }
        }
        except.sort();
        except.dedup();
        Some(PeerMatch::Cidr { net, except })
    }

    fn cidr(&mut self, text: &Text) -> Option<IpNet> {
        let (addr, len) = text.value.split_once('/').unwrap_or((&text.value, ""));
        let parsed_addr: Option<IpAddr> = addr.parse().ok();
        let max = match parsed_addr {
            Some(IpAddr::V4(_)) => 32,
            Some(IpAddr::V6(_)) => 128,
            None => {
                self.error(
                    Diagnostic::error(codes::INVALID_CIDR, text.span, format!("`{addr}` is not an IP address"))
                        .with_help("write an IPv4 (`10.0.0.0/8`) or IPv6 (`fd00::/64`) prefix"),
                );
                return None;
            }
        };
        let prefix: Option<u8> = len.parse().ok().filter(|l| *l <= max);
        let (Some(addr), Some(prefix)) = (parsed_addr, prefix) else {
            self.error(
                Diagnostic::error(codes::INVALID_CIDR, text.span, format!("prefix length `/{len}` is too long"))
                    .with_help(format!("an {} prefix length is 0 to {max}", if max == 32 { "IPv4" } else { "IPv6" })),
            );
            return None;
        };
        let net = IpNet::new(addr, prefix).ok()?;
        if net.network() != addr {
            self.error(
                Diagnostic::error(
                    codes::CIDR_HOST_BITS,
                    text.span,
                    format!("`{}` has bits set after its prefix length", text.value),
                )
                .with_help(format!("did you mean `{}`?", net.trunc())),
            );
            return None;
        }
        Some(net)
    }

    // -------------------------------------------------------------- selectors

    fn selector(&mut self, selector: &ast::LabelSelector) -> Selector {
        let mut requirements = Vec::new();
        for term in &selector.terms {
            let key_ok = self.label_key(&term.key);
            let values: Vec<&Text> = match &term.op {
                LabelOp::Equals(v) | LabelOp::NotEquals(v) => vec![v],
                LabelOp::In(vs) | LabelOp::NotIn(vs) => vs.iter().collect(),
                LabelOp::Exists | LabelOp::DoesNotExist => vec![],
            };
            let mut values_ok = true;
            for v in &values {
                values_ok &= self.label_value(v);
            }
            if !(key_ok && values_ok) {
                continue;
            }
            let key = term.key.value.clone();
            let set = || values.iter().map(|v| v.value.clone()).collect::<BTreeSet<_>>();
            requirements.push(match &term.op {
                LabelOp::Equals(_) | LabelOp::In(_) => Requirement::In { key, values: set() },
                LabelOp::NotEquals(_) | LabelOp::NotIn(_) => Requirement::NotIn { key, values: set() },
                LabelOp::Exists => Requirement::Exists { key },
                LabelOp::DoesNotExist => Requirement::DoesNotExist { key },
            });
        }
        if let Some(reason) = contradiction(&requirements) {
            self.error(
                Diagnostic::warning(codes::CONTRADICTORY_SELECTOR, selector.span, "this selector can match nothing")
                    .with_help(reason),
            );
        }
        Selector { requirements }
    }

    fn label_key(&mut self, key: &Text) -> bool {
        match labels::key_problem(&key.value) {
            None => true,
            Some(problem) => {
                self.error(
                    Diagnostic::error(codes::INVALID_LABEL_KEY, key.span, format!("invalid label key `{}`", key.value))
                        .with_label(problem)
                        .with_help("keys are `[prefix/]name`: name up to 63 letters, digits, `-`, `_`, `.`"),
                );
                false
            }
        }
    }

    fn label_value(&mut self, value: &Text) -> bool {
        match labels::value_problem(&value.value) {
            None => true,
            Some(problem) => {
                self.error(
                    Diagnostic::error(
                        codes::INVALID_LABEL_VALUE,
                        value.span,
                        format!("invalid label value `{}`", value.value),
                    )
                    .with_label(problem)
                    .with_help("values are up to 63 letters, digits, `-`, `_`, `.`, beginning and ending alphanumeric"),
                );
                false
            }
        }
    }

    // ------------------------------------------------------------------- ports

    /// Lowers one port item into `out`, each with the span of its port spec.
    fn port_item(&mut self, item: &'a ast::PortItem, out: &mut Vec<(L4Match, Span)>) {
        match item {
            ast::PortItem::Spec(spec) => {
                if let Some(m) = self.port_spec(spec) {
                    out.push((m, spec.span));
                }
            }
            ast::PortItem::Ref(reference) => match self.lookup(reference) {
                // `enter` reports a cycle; a reference in one lowers to nothing.
                Some(Definition::Ports(def)) if self.enter(reference) => {
                    for inner in &def.ports {
                        self.port_item(inner, out);
                    }
                    self.leave();
                }
                Some(Definition::Ports(_)) => {}
                Some(other) => self.wrong_kind(reference, other, "a `ports` definition"),
                None => {}
            },
        }
    }

    fn port_spec(&mut self, spec: &ast::PortSpec) -> Option<L4Match> {
        let proto = match spec.protocol {
            Protocol::Tcp => Some(Proto::Tcp),
            Protocol::Udp => Some(Proto::Udp),
            Protocol::Sctp => Some(Proto::Sctp),
            Protocol::Icmp => Some(Proto::Icmp),
            Protocol::Icmpv6 => Some(Proto::Icmpv6),
            Protocol::Any => None,
        };
        let Some(sel) = &spec.port else {
            return Some(L4Match { proto, ports: PortMatch::All });
        };
        if let Some(icmp_proto) = proto.filter(|p| p.is_icmp()) {
            return self
                .icmp_type(icmp_proto, sel)
                .map(|t| L4Match { proto, ports: PortMatch::Range { low: t.into(), high: t.into() } });
        }
        let ports = match sel {
            PortSel::Number { value, span } => {
                let port = self.port_number(*value, *span)?;
                PortMatch::Range { low: port, high: port }
            }
            PortSel::Range { low, high, span } => {
                let lo = self.port_number(*low, *span);
                let hi = self.port_number(*high, *span);
                let (lo, hi) = (lo?, hi?);
                if lo > hi {
                    self.error(
                        Diagnostic::error(
                            codes::REVERSED_RANGE,
                            *span,
                            format!("port range `{lo}-{hi}` runs backwards"),
                        )
                        .with_help(format!("write it low to high: `{hi}-{lo}`")),
                    );
                    return None;
                }
                PortMatch::Range { low: lo, high: hi }
            }
            PortSel::Name(name) => {
                if icmp::is_type_name(&name.name) {
                    self.error(
                        Diagnostic::error(
                            codes::ICMP_TYPE_ON_PORT_PROTOCOL,
                            name.span,
                            format!(
                                "`{}` is an ICMP type, but the protocol is `{}`",
                                name.name,
                                spec.protocol.keyword()
                            ),
                        )
                        .with_help(format!("ICMP types go with `icmp` or `icmpv6`: `icmp/{}`", name.name)),
                    );
                    return None;
                }
                PortMatch::Named(name.name.clone())
            }
        };
        Some(L4Match { proto, ports })
    }

    fn port_number(&mut self, value: u64, span: Span) -> Option<u16> {
        match u16::try_from(value) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                let shown = if value == u64::MAX { "this number".to_string() } else { format!("`{value}`") };
                self.error(
                    Diagnostic::error(codes::PORT_OUT_OF_RANGE, span, format!("port {shown} is out of range"))
                        .with_help("ports are 1 to 65535; leave the port out to match every port"),
                );
                None
            }
        }
    }

    fn icmp_type(&mut self, proto: Proto, sel: &PortSel) -> Option<u8> {
        match sel {
            PortSel::Number { value, span } => match u8::try_from(*value) {
                Ok(t) => Some(t),
                Err(_) => {
                    self.error(
                        Diagnostic::error(
                            codes::UNKNOWN_ICMP_TYPE,
                            *span,
                            format!("`{value}` is not an {} type", proto.name()),
                        )
                        .with_help("ICMP types are numbers from 0 to 255, or names such as `echo-request`"),
                    );
                    None
                }
            },
            PortSel::Range { span, .. } => {
                self.error(
                    Diagnostic::error(
                        codes::PORTS_ON_PORTLESS_PROTOCOL,
                        *span,
                        format!("`{}` has message types, not port ranges", proto.name()),
                    )
                    .with_help(format!("list the types one by one: `{0}/echo-request, {0}/echo-reply`", proto.name())),
                );
                None
            }
            PortSel::Name(name) => match icmp::type_by_name(proto, &name.name) {
                Some(t) => Some(t),
                None => {
                    self.error(
                        Diagnostic::error(
                            codes::UNKNOWN_ICMP_TYPE,
                            name.span,
                            format!("`{}` is not an {} type", name.name, proto.name()),
                        )
                        .with_help(format!("known names: {}", icmp::names(proto).join(", "))),
                    );
                    None
                }
            },
        }
    }

    // --------------------------------------------------------------- inventory

    fn inventory(&mut self, modules: &'a [ast::Module]) -> model::Inventory {
        let mut inventory = model::Inventory::default();
        let mut names: HashMap<&str, Span> = HashMap::new();
        let mut addresses: HashMap<IpAddr, Span> = HashMap::new();
        let mut node_span: Option<Span> = None;
        for item in modules.iter().flat_map(|m| &m.items) {
            match item {
                Item::Endpoint(endpoint) => {
                    if let Some(first) = names.get(endpoint.name.name.as_str()) {
                        self.error(
                            Diagnostic::error(
                                codes::DUPLICATE_DEFINITION,
                                endpoint.name.span,
                                format!("endpoint `{}` is defined more than once", endpoint.name.name),
                            )
                            .with_secondary(*first, "first defined here")
                            .with_help("endpoint names are unique on a node"),
                        );
                        continue;
                    }
                    names.insert(&endpoint.name.name, endpoint.name.span);
                    if let Some(def) = self.endpoint(endpoint, &mut addresses) {
                        inventory.endpoints.push(def);
                    }
                }
                Item::Node(node) => {
                    if let Some(first) = node_span {
                        self.error(
                            Diagnostic::error(codes::DUPLICATE_NODE, node.span, "the node is described twice")
                                .with_secondary(first, "first described here")
                                .with_help("list all of the node's addresses in one `node { }` block"),
                        );
                        continue;
                    }
                    node_span = Some(node.span);
                    for field in &node.addresses {
                        match self.address(field, &mut addresses) {
                            Some(IpAddr::V4(a)) => inventory.node.ipv4.push(a),
                            Some(IpAddr::V6(a)) => inventory.node.ipv6.push(a),
                            None => {}
                        }
                    }
                }
                _ => {}
            }
        }
        inventory
    }

    fn address(&mut self, field: &EndpointField, seen: &mut HashMap<IpAddr, Span>) -> Option<IpAddr> {
        let (text, want_v4) = match field {
            EndpointField::Ipv4(t) => (t, true),
            EndpointField::Ipv6(t) => (t, false),
            _ => return None,
        };
        let parsed = if want_v4 {
            text.value.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        } else {
            text.value.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        };
        let Some(addr) = parsed else {
            let family = if want_v4 { "IPv4" } else { "IPv6" };
            let other = if want_v4 { "ipv6" } else { "ipv4" };
            let help = if text.value.parse::<IpAddr>().is_ok() {
                format!("this is an address of the other family: write `{other} {}`", text.value)
            } else {
                format!("write an {family} address without a prefix length")
            };
            self.error(
                Diagnostic::error(
                    codes::INVALID_ADDRESS,
                    text.span,
                    format!("`{}` is not an {family} address", text.value),
                )
                .with_help(help),
            );
            return None;
        };
        if let Some(first) = seen.get(&addr) {
            self.error(
                Diagnostic::error(codes::DUPLICATE_ADDRESS, text.span, format!("address `{addr}` is used twice"))
                    .with_secondary(*first, "first used here")
                    .with_help("an address identifies one endpoint (or the node); give each its own"),
            );
            return None;
        }
        seen.insert(addr, text.span);
        Some(addr)
    }

    fn endpoint(&mut self, endpoint: &ast::Endpoint, addresses: &mut HashMap<IpAddr, Span>) -> Option<EndpointDef> {
        let mut def = EndpointDef {
            name: endpoint.name.name.clone(),
            labels: BTreeMap::new(),
            ipv4: None,
            ipv6: None,
            mac: None,
            iface: None,
            netns: None,
            named_ports: BTreeMap::new(),
            span: endpoint.span,
        };
        let mut fields_seen: HashMap<&str, Span> = HashMap::new();
        let mut port_names: HashMap<&str, Span> = HashMap::new();
        let mut label_keys: HashMap<String, Span> = HashMap::new();
        for field in &endpoint.fields {
            let keyword = field.keyword();
            if keyword != "port" {
                if let Some(first) = fields_seen.get(keyword) {
                    self.error(
                        Diagnostic::error(
                            codes::DUPLICATE_FIELD,
                            field.span(),
                            format!("endpoint `{}` has `{keyword}` twice", endpoint.name.name),
                        )
                        .with_secondary(*first, "first given here")
                        .with_help(format!("an endpoint has at most one `{keyword}`")),
                    );
                    continue;
                }
                fields_seen.insert(keyword, field.span());
            }
            match field {
                EndpointField::Labels { labels, .. } => {
                    for (key, value) in labels {
                        let ok = self.label_key(key) & self.label_value(value);
                        if let Some(first) = label_keys.get(&key.value) {
                            self.error(
                                Diagnostic::error(
                                    codes::DUPLICATE_LABEL_KEY,
                                    key.span,
                                    format!("label `{}` is given twice", key.value),
                                )
                                .with_secondary(*first, "first given here")
                                .with_help("a label key has one value per endpoint"),
                            );
                            continue;
                        }
                        label_keys.insert(key.value.clone(), key.span);
                        if ok {
                            def.labels.insert(key.value.clone(), value.value.clone());
                        }
                    }
                }
                EndpointField::Ipv4(_) => {
                    if let Some(IpAddr::V4(a)) = self.address(field, addresses) {
                        def.ipv4 = Some(a);
                    }
                }
                EndpointField::Ipv6(_) => {
                    if let Some(IpAddr::V6(a)) = self.address(field, addresses) {
                        def.ipv6 = Some(a);
                    }
                }
                EndpointField::Mac(text) => def.mac = self.mac(text),
                EndpointField::Iface(text) => def.iface = self.device_name(text, "an interface"),
                EndpointField::Netns(text) => def.netns = self.device_name(text, "a network namespace"),
                EndpointField::Port { name, spec, .. } => {
                    if let Some(first) = port_names.get(name.name.as_str()) {
                        self.error(
                            Diagnostic::error(
                                codes::DUPLICATE_FIELD,
                                name.span,
                                format!("named port `{}` is given twice", name.name),
                            )
                            .with_secondary(*first, "first given here")
                            .with_help("a port name means one port per endpoint"),
                        );
                        continue;
                    }
                    port_names.insert(&name.name, name.span);
                    if let Some(port) = self.named_port(spec) {
                        def.named_ports.insert(name.name.clone(), port);
                    }
                }
            }
        }
        if def.ipv4.is_none()
            && def.ipv6.is_none()
            && !fields_seen.contains_key("ipv4")
            && !fields_seen.contains_key("ipv6")
        {
            self.error(
                Diagnostic::error(
                    codes::ENDPOINT_WITHOUT_ADDRESS,
                    endpoint.name.span,
                    format!("endpoint `{}` has no address", endpoint.name.name),
                )
                .with_help("give it `ipv4 ADDRESS`, `ipv6 ADDRESS` or both"),
            );
        }
        Some(def)
    }

    fn named_port(&mut self, spec: &ast::PortSpec) -> Option<(Proto, u16)> {
        let proto = match spec.protocol {
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
            Protocol::Sctp => Proto::Sctp,
            _ => {
                self.error(
                    Diagnostic::error(
                        codes::INVALID_NAMED_PORT,
                        spec.span,
                        format!("a named port cannot use `{}`", spec.protocol.keyword()),
                    )
                    .with_help("a named port is one TCP, UDP or SCTP port: `port http = tcp/8080`"),
                );
                return None;
            }
        };
        match &spec.port {
            Some(PortSel::Number { value, span }) => self.port_number(*value, *span).map(|p| (proto, p)),
            other => {
                let (at, what) = match other {
                    Some(PortSel::Range { span, .. }) => (*span, "a range"),
                    Some(PortSel::Name(name)) => (name.span, "another name"),
                    _ => (spec.span, "no port"),
                };
                self.error(
                    Diagnostic::error(codes::INVALID_NAMED_PORT, at, "a named port must be a single port number")
                        .with_label(format!("{what}, not one port"))
                        .with_help(format!("write `port NAME = {}/NUMBER`", spec.protocol.keyword())),
                );
                None
            }
        }
    }

    fn mac(&mut self, text: &Text) -> Option<[u8; 6]> {
        let parts: Vec<Option<u8>> =
            text.value.split(':').map(|p| if p.len() == 2 { u8::from_str_radix(p, 16).ok() } else { None }).collect();
        if parts.len() == 6 && parts.iter().all(Option::is_some) {
            let mut mac = [0u8; 6];
            for (slot, byte) in mac.iter_mut().zip(parts.into_iter().flatten()) {
                *slot = byte;
            }
            return Some(mac);
        }
        self.error(
            Diagnostic::error(codes::INVALID_MAC, text.span, format!("`{}` is not a MAC address", text.value))
                .with_help("write six hex bytes separated by `:`, e.g. `02:00:0a:c8:01:01`"),
        );
        None
    }

    fn device_name(&mut self, text: &Text, what: &str) -> Option<String> {
        // Linux interface names: at most 15 bytes, no `/` (the grammar excludes
        // whitespace). Namespace names follow the same rule here for simplicity.
        if text.value.len() <= 15 {
            return Some(text.value.clone());
        }
        self.error(
            Diagnostic::error(
                codes::INVALID_DEVICE_NAME,
                text.span,
                format!("`{}` is too long for {what} name", text.value),
            )
            .with_help("Linux limits interface names to 15 characters"),
        );
        None
    }
}

/// Why requirements cannot all hold, if they cannot.
fn contradiction(requirements: &[Requirement]) -> Option<String> {
    for (i, a) in requirements.iter().enumerate() {
        for b in &requirements[i + 1..] {
            let reason = match (a, b) {
                (Requirement::In { key: k1, values: v1 }, Requirement::In { key: k2, values: v2 })
                    if k1 == k2 && v1.is_disjoint(v2) =>
                {
                    format!("`{k1}` cannot take values from two disjoint sets at once")
                }
                (
                    Requirement::In { key: k1, .. } | Requirement::Exists { key: k1 },
                    Requirement::DoesNotExist { key: k2 },
                )
                | (
                    Requirement::DoesNotExist { key: k2 },
                    Requirement::In { key: k1, .. } | Requirement::Exists { key: k1 },
                ) if k1 == k2 => {
                    format!("`{k1}` cannot both exist and not exist")
                }
                (Requirement::In { key: k1, values: v1 }, Requirement::NotIn { key: k2, values: v2 })
                | (Requirement::NotIn { key: k2, values: v2 }, Requirement::In { key: k1, values: v1 })
                    if k1 == k2 && v1.is_subset(v2) =>
                {
                    format!("every value `{k1}` is required to have is also excluded")
                }
                _ => continue,
            };
            return Some(reason);
        }
    }
    None
}

/// Levenshtein distance, for "did you mean" hints on short names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(row[j]).min(row[j + 1]) };
            prev = current;
        }
    }
    row[b.len()]
}
