//! Kubernetes `NetworkPolicy` (networking.k8s.io/v1) as a polc policy.
//!
//! The policy selects pods of its own namespace; each ingress (egress)
//! rule becomes one allow rule whose peers are the rule's `from` (`to`)
//! peers and whose ports are its `ports`. lang-spec/KUBERNETES.md.

use super::emit::{self, Entry};
use super::objects::Meta;
use super::selector::{self, Keys, NAMESPACE_KEY};
use super::yaml::Node;
use super::{l3, Ctx, Problem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    fn field(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }

    fn peers(self) -> &'static str {
        match self {
            Dir::Ingress => "from",
            Dir::Egress => "to",
        }
    }

    fn policy_type(self) -> &'static str {
        match self {
            Dir::Ingress => "Ingress",
            Dir::Egress => "Egress",
        }
    }
}

pub fn convert(obj: &Node, meta: &Meta, ctx: &mut Ctx) -> Result<emit::Policy, Problem> {
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let spec = obj.get("spec").ok_or_else(|| Problem::at(obj.pos, "the NetworkPolicy has no `spec`".into()))?;
    let mut policy = emit::Policy { name: meta.policy_name(), ..emit::Policy::default() };
    let (mut subject, mut types, mut ingress, mut egress) = (None, None, None, None);
    for (key, value) in spec.map("spec")? {
        match key.name.as_str() {
            "podSelector" => subject = Some(value),
            // An empty list is defaulted by the API server, as a missing one.
            "policyTypes" if value.seq("policyTypes").is_ok_and(|t| t.is_empty()) => {}
            "policyTypes" => types = Some(value),
            "ingress" => ingress = Some(value),
            "egress" => egress = Some(value),
            _ => policy.notes.push(ctx.unknown(key, "spec")),
        }
    }
    let subject = subject.ok_or_else(|| {
        Problem::at(spec.pos, "the NetworkPolicy has no `podSelector`".into())
            .help("`podSelector: {}` selects every pod of the namespace")
    })?;
    policy.select.push(selector::in_namespace(ns));
    policy.select.extend(selector::convert(subject, "podSelector", Keys::Pod, ctx)?.terms);

    // Without `policyTypes`: Ingress, and Egress when there are egress rules.
    let has_egress_rules = match egress {
        Some(e) => !e.seq("egress")?.is_empty(),
        None => false,
    };
    let enforced = |dir: Dir| -> Result<bool, Problem> {
        match types {
            Some(list) => {
                let mut found = false;
                for t in list.seq("policyTypes")? {
                    match t.str("policyTypes")? {
                        "Ingress" | "Egress" => found |= t.str("policyTypes")? == dir.policy_type(),
                        other => {
                            return Err(Problem::at(t.pos, format!("unknown policy type `{other}`"))
                                .help("policy types are `Ingress` and `Egress`"))
                        }
                    }
                }
                Ok(found)
            }
            None => Ok(dir == Dir::Ingress || has_egress_rules),
        }
    };
    for (dir, rules) in [(Dir::Ingress, ingress), (Dir::Egress, egress)] {
        let section = if enforced(dir)? {
            let mut entries = Vec::new();
            if let Some(rules) = rules {
                for (i, rule_node) in rules.seq(dir.field())?.iter().enumerate() {
                    entries.push(rule(rule_node, i + 1, dir, ns, ctx)?);
                }
            }
            Some(entries)
        } else {
            if let Some(rules) = rules.filter(|r| r.seq(dir.field()).is_ok_and(|s| !s.is_empty())) {
                let message = format!(
                    "`{}` rules are ignored: `policyTypes` does not include `{}`",
                    dir.field(),
                    dir.policy_type()
                );
                policy.notes.push(format!("line {}: {message}", rules.pos.line));
                ctx.warnings.push(Problem::at(rules.pos, message));
            }
            None
        };
        match dir {
            Dir::Ingress => policy.ingress = section,
            Dir::Egress => policy.egress = section,
        }
    }
    Ok(policy)
}

fn rule(node: &Node, index: usize, dir: Dir, ns: &str, ctx: &mut Ctx) -> Result<Entry, Problem> {
    let mut notes = Vec::new();
    let (mut peers_node, mut ports_node) = (None, None);
    for (key, value) in node.map(dir.field())? {
        match key.name.as_str() {
            k if k == dir.peers() => peers_node = Some(value),
            "ports" => ports_node = Some(value),
            _ => notes.push(ctx.unknown(key, &format!("{} rule", dir.field()))),
        }
    }
    let mut peers = Vec::new();
    if let Some(list) = peers_node {
        for p in list.seq(dir.peers())? {
            peers.push(peer(p, ns, ctx)?);
        }
    }
    // No peers (or an empty list): every source or destination.
    if peers.is_empty() {
        peers.push("all".to_string());
    }
    let mut ports = Vec::new();
    if let Some(list) = ports_node {
        for p in list.seq("ports")? {
            ports.push(port(p)?);
        }
    }
    Ok(Entry::Rule(emit::Rule { deny: false, name: format!("{}-{index}", dir.field()), peers, ports, notes }))
}

fn peer(node: &Node, ns: &str, ctx: &mut Ctx) -> Result<String, Problem> {
    let (mut pods, mut namespaces, mut block) = (None, None, None);
    for (key, value) in node.map("peer")? {
        match key.name.as_str() {
            "podSelector" => pods = Some(value),
            "namespaceSelector" => namespaces = Some(value),
            "ipBlock" => block = Some((key, value)),
            // Never partial: a peer without one of its parts would name more.
            _ => {
                return Err(Problem::at(key.pos, format!("unknown field `{}` in a NetworkPolicy peer", key.name))
                    .help("a peer has `podSelector`, `namespaceSelector` or `ipBlock`"))
            }
        }
    }
    if let Some((key, block)) = block {
        if pods.is_some() || namespaces.is_some() {
            return Err(Problem::at(key.pos, "`ipBlock` cannot be combined with a selector in one peer".into()));
        }
        let cidr = block.get("cidr").ok_or_else(|| Problem::at(block.pos, "`ipBlock` has no `cidr`".into()))?;
        let except = match block.get("except") {
            Some(list) => list.seq("except")?.to_vec(),
            None => Vec::new(),
        };
        return l3::peer(cidr, &except, ctx);
    }
    let mut terms = selector::Selector::default();
    match namespaces {
        // Pods of the policy's own namespace.
        None => terms.push(NAMESPACE_KEY, selector::in_namespace(ns)),
        // Pods of the namespaces the selector picks: every pod has a namespace.
        Some(sel) => {
            terms.push(NAMESPACE_KEY, NAMESPACE_KEY.to_string());
            terms.extend(selector::convert(sel, "namespaceSelector", Keys::Namespace, ctx)?);
        }
    }
    match pods {
        Some(sel) => terms.extend(selector::convert(sel, "podSelector", Keys::Pod, ctx)?),
        None if namespaces.is_none() => {
            return Err(Problem::at(node.pos, "a peer needs `podSelector`, `namespaceSelector` or `ipBlock`".into()))
        }
        None => {}
    }
    Ok(emit::selector(&terms.terms))
}

/// A `NetworkPolicyPort`: protocol (TCP when omitted), port or name, endPort.
fn port(node: &Node) -> Result<String, Problem> {
    let mut protocol = "tcp".to_string();
    let (mut number, mut end, mut name) = (None, None, None);
    for (key, value) in node.map("ports")? {
        match key.name.as_str() {
            "protocol" => {
                protocol = match value.str("protocol")? {
                    "TCP" => "tcp",
                    "UDP" => "udp",
                    "SCTP" => "sctp",
                    other => {
                        return Err(Problem::at(value.pos, format!("unknown protocol `{other}`"))
                            .help("NetworkPolicy protocols are `TCP`, `UDP` and `SCTP`"))
                    }
                }
                .to_string()
            }
            "port" => match port_value(value)? {
                PortValue::Number(n) => number = Some(n),
                PortValue::Name(n) => name = Some(n),
            },
            "endPort" => {
                end = Some(
                    (value.int().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0))
                        .ok_or_else(|| Problem::at(value.pos, "`endPort` must be a port number (1-65535)".into()))?,
                )
            }
            _ => {
                return Err(Problem::at(key.pos, format!("unknown field `{}` in a NetworkPolicy port", key.name))
                    .help("a port has `protocol`, `port` and `endPort`"))
            }
        }
    }
    match (number, end, name) {
        (Some(0), _, _) => Err(Problem::at(node.pos, "port 0 is not a port; leave `port` out for every port".into())),
        (_, Some(_), Some(_)) | (None, Some(_), None) => {
            Err(Problem::at(node.pos, "`endPort` needs a numeric `port`".into()))
        }
        (Some(lo), Some(hi), None) if hi < lo => {
            Err(Problem::at(node.pos, format!("`endPort` {hi} is below `port` {lo}")))
        }
        (Some(lo), Some(hi), None) if hi > lo => Ok(format!("{protocol}/{lo}-{hi}")),
        (Some(n), _, None) => Ok(format!("{protocol}/{n}")),
        (None, None, Some(name)) => Ok(format!("{protocol}/{name}")),
        (None, None, None) => Ok(protocol),
        (Some(_), _, Some(_)) => Err(Problem::at(node.pos, "a port cannot be both a number and a name".into())),
    }
}

pub enum PortValue {
    Number(u16),
    Name(String),
}

/// A port field: a number (1-65535), or the name of a container port.
pub fn port_value(node: &Node) -> Result<PortValue, Problem> {
    let text = node.str("port")?;
    if let Ok(n) = text.parse::<i64>() {
        return u16::try_from(n)
            .ok()
            .map(PortValue::Number)
            .ok_or_else(|| Problem::at(node.pos, format!("port `{n}` is not a port number (0-65535)")));
    }
    let ident = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ident {
        return Err(Problem::at(node.pos, format!("port name `{text}` cannot be written in polc"))
            .help("polc port names begin with a letter and hold letters, digits, `-` and `_`"));
    }
    Ok(PortValue::Name(text.to_string()))
}
