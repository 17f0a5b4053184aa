//! `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy` (cilium.io/v2)
//! as polc policies: one policy per rule of `spec`/`specs`.
//!
//! Cilium's peers of one rule (`fromEndpoints`, `fromCIDR`, `fromCIDRSet`,
//! `fromEntities`) are alternatives, as polc's peers are; `toPorts` and
//! `icmps` restrict all of them. lang-spec/KUBERNETES.md.

use super::emit::{self, Entry};
use super::netpol::{port_value, PortValue};
use super::objects::{Kind, Meta};
use super::selector::{self, Keys, NAMESPACE_KEY};
use super::yaml::{Key, Node};
use super::{l3, Ctx, Problem};
use crate::sema::{icmp, model::Proto};

/// Where a rule sits: its direction and whether it denies.
#[derive(Debug, Clone, Copy)]
struct Section {
    ingress: bool,
    deny: bool,
}

impl Section {
    fn field(self) -> &'static str {
        match (self.ingress, self.deny) {
            (true, false) => "ingress",
            (true, true) => "ingressDeny",
            (false, false) => "egress",
            (false, true) => "egressDeny",
        }
    }

    fn rule_name(self, index: usize) -> String {
        let dir = if self.ingress { "ingress" } else { "egress" };
        let deny = if self.deny { "-deny" } else { "" };
        format!("{dir}{deny}-{index}")
    }
}

/// What a rule is about: the namespace that scopes its selectors, if any.
struct Scope<'a> {
    namespace: Option<&'a str>,
}

pub fn convert(obj: &Node, meta: &Meta, ctx: &mut Ctx) -> Result<Vec<emit::Policy>, Problem> {
    let mut specs = Vec::new();
    if let Some(spec) = obj.get("spec") {
        specs.push(spec);
    }
    if let Some(list) = obj.get("specs") {
        specs.extend(list.seq("specs")?);
    }
    if specs.is_empty() {
        return Err(Problem::at(obj.pos, format!("the {} has neither `spec` nor `specs`", meta.kind.name())));
    }
    let scope = Scope {
        namespace: match meta.kind {
            Kind::CiliumClusterwideNetworkPolicy => None,
            _ => meta.namespace.as_deref(),
        },
    };
    let many = specs.len() > 1;
    let mut policies = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let name = if many { format!("{}_{}", meta.policy_name(), i + 1) } else { meta.policy_name() };
        policies.push(rule_set(spec, name, &scope, ctx)?);
    }
    Ok(policies)
}

/// One Cilium rule (one `spec`): a subject and its four lists of rules.
fn rule_set(spec: &Node, name: String, scope: &Scope, ctx: &mut Ctx) -> Result<emit::Policy, Problem> {
    let mut policy = emit::Policy { name, ..emit::Policy::default() };
    let mut subject = None;
    let mut lists: Vec<(Section, &Node)> = Vec::new();
    for (key, value) in spec.map("spec")? {
        let section = |ingress, deny| Section { ingress, deny };
        match key.name.as_str() {
            "endpointSelector" => subject = Some(value),
            "ingress" => lists.push((section(true, false), value)),
            "ingressDeny" => lists.push((section(true, true), value)),
            "egress" => lists.push((section(false, false), value)),
            "egressDeny" => lists.push((section(false, true), value)),
            // Documentation only: they change nothing a packet sees.
            "description" | "labels" => {}
            "nodeSelector" => {
                let note = ctx.unsupported(key, "host policies (`nodeSelector`) are not imported");
                policy.notes.push(format!("{note}; the whole rule is left out"));
                // A policy without sections changes nothing (and says so, W0007).
                return Ok(policy);
            }
            "enableDefaultDeny" => {
                policy.notes.push(ctx.unsupported(key, "polc always enforces default deny on a selected direction"))
            }
            _ => policy.notes.push(ctx.unknown(key, "spec")),
        }
    }
    let subject = subject.ok_or_else(|| {
        Problem::at(spec.pos, "the rule has no `endpointSelector`".into())
            .help("`endpointSelector: {}` selects every endpoint")
    })?;
    if let Some(ns) = scope.namespace {
        policy.select.push(selector::in_namespace(ns));
    }
    policy.select.extend(selector::convert(subject, "endpointSelector", Keys::Cilium, ctx)?.terms);

    for (section, list) in lists {
        let rules = list.seq(section.field())?;
        // An empty list is no list: it enforces nothing.
        if rules.is_empty() {
            continue;
        }
        let target = if section.ingress { &mut policy.ingress } else { &mut policy.egress };
        let entries = target.get_or_insert_with(Vec::new);
        for (i, node) in rules.iter().enumerate() {
            entries.push(rule(node, section, section.rule_name(i + 1), scope, ctx)?);
        }
    }
    Ok(policy)
}

fn rule(node: &Node, section: Section, name: String, scope: &Scope, ctx: &mut Ctx) -> Result<Entry, Problem> {
    let prefix = if section.ingress { "from" } else { "to" };
    let mut notes = Vec::new();
    let mut peers = Vec::new();
    let (mut has_l3, mut has_l4, mut dropped_peer) = (false, false, false);
    let mut ports = Vec::new();
    for (key, value) in node.map(section.field())? {
        let field = key.name.strip_prefix(prefix).unwrap_or("");
        match field {
            "Endpoints" => {
                has_l3 = true;
                for sel in value.seq(&key.name)? {
                    peers.push(endpoints(sel, scope, ctx)?);
                }
            }
            "CIDR" => {
                has_l3 = true;
                for cidr in value.seq(&key.name)? {
                    peers.push(l3::peer(cidr, &[], ctx)?);
                }
            }
            "CIDRSet" => {
                has_l3 = true;
                for set in value.seq(&key.name)? {
                    match cidr_set(set, ctx)? {
                        Ok(peer) => peers.push(peer),
                        Err(note) => {
                            notes.push(note);
                            dropped_peer = true;
                        }
                    }
                }
            }
            "Entities" => {
                has_l3 = true;
                for entity in value.seq(&key.name)? {
                    match entity_peer(entity, ctx)? {
                        Ok(peer) => peers.push(peer),
                        Err(note) => {
                            notes.push(note);
                            dropped_peer = true;
                        }
                    }
                }
            }
            // A requirement narrows the rule's other peers; alone it names none.
            "Requires" => {
                has_l3 = true;
                dropped_peer = true;
                notes.push(ctx.unsupported(key, "polc has no peer requirements; the rule applies without it"));
            }
            "FQDNs" | "Services" | "Groups" | "Nodes" => {
                has_l3 = true;
                dropped_peer = true;
                notes.push(ctx.unsupported(key, "polc cannot enforce this peer; it is left out of the rule"));
            }
            _ if key.name == "toPorts" => {
                has_l4 = true;
                for port_rule in value.seq("toPorts")? {
                    ports.extend(to_ports(port_rule, section, ctx, &mut notes)?);
                }
            }
            _ if key.name == "icmps" => {
                has_l4 = true;
                for item in value.seq("icmps")? {
                    ports.extend(icmps(item)?);
                }
            }
            _ if key.name == "authentication" => {
                notes.push(ctx.unsupported(key, "polc has no mutual authentication; the rule applies without it"))
            }
            _ => notes.push(ctx.unknown(key, &format!("{} rule", section.field()))),
        }
    }
    if !has_l3 && !has_l4 {
        // Cilium: an empty rule allows nothing, but still selects the endpoint.
        notes.push(format!("`{}` rule {name} is empty: it allows nothing, yet enforces default deny", section.field()));
        return Ok(Entry::LeftOut(notes));
    }
    if peers.is_empty() {
        if dropped_peer {
            notes.push(format!("rule {name} is left out: none of its peers can be imported"));
            return Ok(Entry::LeftOut(notes));
        }
        // Only L4 (or empty peer lists): every peer.
        peers.push("all".to_string());
    }
    Ok(Entry::Rule(emit::Rule { deny: section.deny, name, peers, ports, notes }))
}

/// An endpoint selector as a peer: in a namespaced policy it selects that
/// namespace's endpoints unless it names the namespace label itself.
fn endpoints(sel: &Node, scope: &Scope, ctx: &mut Ctx) -> Result<String, Problem> {
    let converted = selector::convert(sel, "endpoint selector", Keys::Cilium, ctx)?;
    let mut terms = Vec::new();
    if let Some(ns) = scope.namespace.filter(|_| !converted.mentions(NAMESPACE_KEY)) {
        terms.push(selector::in_namespace(ns));
    }
    terms.extend(converted.terms);
    Ok(emit::selector(&terms))
}

/// `Ok(Err(note))`: left out with `--allow-partial`.
fn cidr_set(set: &Node, ctx: &mut Ctx) -> Result<Result<String, String>, Problem> {
    let (mut cidr, mut except) = (None, Vec::new());
    for (key, value) in set.map("CIDRSet")? {
        match key.name.as_str() {
            "cidr" => cidr = Some(value),
            "except" => except = value.seq("except")?.to_vec(),
            "cidrGroupRef" | "cidrGroupSelector" => {
                return Ok(Err(ctx.unsupported(key, "CiliumCIDRGroups are not imported; the peer is left out")))
            }
            _ => return Err(Problem::at(key.pos, format!("unknown field `{}` in a CIDR set", key.name))),
        }
    }
    let cidr = cidr.ok_or_else(|| Problem::at(set.pos, "the CIDR set has no `cidr`".into()))?;
    Ok(Ok(l3::peer(cidr, &except, ctx)?))
}

fn entity_peer(node: &Node, ctx: &mut Ctx) -> Result<Result<String, String>, Problem> {
    let name = node.str("entity")?;
    let peer = match name {
        "world" | "host" | "cluster" | "all" | "health" | "init" | "unmanaged" => name,
        "world-ipv4" => "0.0.0.0/0",
        "world-ipv6" => "::/0",
        "remote-node" | "kube-apiserver" | "ingress" => {
            let key = Key { name: name.to_string(), pos: node.pos };
            return Ok(Err(ctx.unsupported(&key, "polc has no such entity; the peer is left out")));
        }
        other => {
            return Err(Problem::at(node.pos, format!("unknown entity `{other}`"))
                .help("Cilium's entities are world, host, cluster, all, health, init, unmanaged, remote-node, kube-apiserver, ingress, world-ipv4, world-ipv6"))
        }
    };
    Ok(Ok(peer.to_string()))
}

/// One `PortRule`: its ports; L7 `rules` and TLS settings are unsupported.
fn to_ports(node: &Node, section: Section, ctx: &mut Ctx, notes: &mut Vec<String>) -> Result<Vec<String>, Problem> {
    let mut out = Vec::new();
    for (key, value) in node.map("toPorts")? {
        match key.name.as_str() {
            "ports" => {
                for p in value.seq("ports")? {
                    out.push(port(p)?);
                }
            }
            "rules" | "terminatingTLS" | "originatingTLS" | "serverNames" | "listener" => {
                let effect =
                    if section.deny { "it is left out" } else { "it is left out and the ports are allowed without it" };
                notes.push(ctx.unsupported(key, &format!("polc enforces L3/L4 only; {effect}")));
            }
            _ => notes.push(ctx.unknown(key, "toPorts")),
        }
    }
    Ok(out)
}

/// A `PortProtocol`: protocol ANY when omitted, port 0 or none for all ports.
fn port(node: &Node) -> Result<String, Problem> {
    let mut protocol = "any";
    let (mut number, mut end, mut name) = (0u16, None, None);
    for (key, value) in node.map("ports")? {
        match key.name.as_str() {
            "protocol" => {
                protocol = match value.str("protocol")? {
                    "TCP" => "tcp",
                    "UDP" => "udp",
                    "SCTP" => "sctp",
                    "ANY" => "any",
                    "ICMP" => "icmp",
                    "ICMPV6" => "icmpv6",
                    other => {
                        return Err(Problem::at(value.pos, format!("unknown protocol `{other}`"))
                            .help("Cilium's protocols are `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPV6` and `ANY`"))
                    }
                }
            }
            "port" => match port_value(value)? {
                PortValue::Number(n) => number = n,
                PortValue::Name(n) => name = Some(n),
            },
            "endPort" => {
                end = Some(
                    value
                        .int()
                        .and_then(|n| u16::try_from(n).ok())
                        .ok_or_else(|| Problem::at(value.pos, "`endPort` must be a port number (0-65535)".into()))?,
                )
            }
            _ => return Err(Problem::at(key.pos, format!("unknown field `{}` in a port", key.name))),
        }
    }
    if let Some(name) = name {
        return Ok(format!("{protocol}/{name}"));
    }
    let icmp = matches!(protocol, "icmp" | "icmpv6");
    match end {
        _ if number == 0 || icmp => Ok(protocol.to_string()),
        Some(hi) if hi > number => Ok(format!("{protocol}/{number}-{hi}")),
        _ => Ok(format!("{protocol}/{number}")),
    }
}

/// An `ICMPRule`: `fields` of `family` (IPv4 by default) and `type`.
fn icmps(node: &Node) -> Result<Vec<String>, Problem> {
    let mut out = Vec::new();
    let fields = node.get("fields").ok_or_else(|| Problem::at(node.pos, "an ICMP rule needs `fields`".into()))?;
    for field in fields.seq("fields")? {
        let proto = match field.get("family").map(|f| f.str("family")).transpose()? {
            None | Some("IPv4") => Proto::Icmp,
            Some("IPv6") => Proto::Icmpv6,
            Some(other) => return Err(Problem::at(field.pos, format!("unknown ICMP family `{other}`"))),
        };
        let ty = field.get("type").ok_or_else(|| Problem::at(field.pos, "an ICMP field needs `type`".into()))?;
        let number = match ty.int() {
            Some(n) => u8::try_from(n).ok(),
            // Cilium's names are CamelCase (`EchoRequest`); polc's kebab-case.
            None => icmp::type_by_name(proto, &kebab(ty.str("type")?)),
        };
        let number = number
            .ok_or_else(|| Problem::at(ty.pos, format!("unknown ICMP type `{}`", ty.str("type").unwrap_or("?"))))?;
        let keyword = if proto == Proto::Icmp { "icmp" } else { "icmpv6" };
        out.push(format!("{keyword}/{number}"));
    }
    Ok(out)
}

fn kebab(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}
