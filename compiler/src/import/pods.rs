//! The inventory from Kubernetes: `kubectl get pods -A -o json` (and
//! `kubectl get ns -o json`) as `endpoint` blocks, labelled as Cilium
//! labels pods (lang-spec/KUBERNETES.md).

use super::emit::{self, Endpoint};
use super::objects;
use super::selector::{self, Keys, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, NAMESPACE_NAME_LABEL, SERVICE_ACCOUNT_KEY};
use super::yaml::{Node, Pos};
use super::{Ctx, OutputFile, Problem};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// Namespace name -> its labels (key, value, where the value is written).
pub type NamespaceLabels = BTreeMap<String, Vec<(String, String, Pos)>>;

fn kind_is(obj: &Node, kind: &str) -> bool {
    obj.get("kind").and_then(|k| k.str("kind").ok()).is_none_or(|k| k == kind)
}

fn labels_of(meta: &Node) -> Result<Vec<(String, String, Pos)>, Problem> {
    let mut out = Vec::new();
    if let Some(labels) = meta.get("labels") {
        for (key, value) in labels.map("labels")? {
            let text = if value.is_null() { "" } else { value.str("label value")? };
            out.push((key.name.clone(), text.to_string(), key.pos));
        }
    }
    Ok(out)
}

/// The labels of every namespace of a namespace list.
pub fn namespace_labels(text: &str) -> Result<NamespaceLabels, Problem> {
    let mut out = NamespaceLabels::new();
    for obj in objects::objects(text)? {
        if !kind_is(&obj, "Namespace") {
            return Err(Problem::at(obj.pos, "expected a Namespace (from `kubectl get ns -o json`)".into()));
        }
        let meta = obj.get("metadata").ok_or_else(|| Problem::at(obj.pos, "a Namespace without `metadata`".into()))?;
        let name = meta.get("name").ok_or_else(|| Problem::at(meta.pos, "a Namespace without a name".into()))?;
        out.insert(name.str("name")?.to_string(), labels_of(meta)?);
    }
    Ok(out)
}

/// Every pod of a pod list as an endpoint, in one file `pods.pol`.
/// Also returns each pod's addresses (`ns/pod`, address).
pub fn inventory(
    path: &Path,
    text: &str,
    namespaces: Option<&NamespaceLabels>,
    ctx: &mut Ctx,
) -> Result<(OutputFile, Vec<(String, IpAddr)>), Problem> {
    let mut notes = Vec::new();
    let mut blocks = Vec::new();
    let mut count = 0;
    let mut addresses = Vec::new();
    for pod in objects::objects(text)? {
        if !kind_is(&pod, "Pod") {
            return Err(Problem::at(pod.pos, "expected a Pod (from `kubectl get pods -A -o json`)".into()));
        }
        match endpoint(&pod, namespaces)? {
            Ok(e) => {
                count += 1;
                let name = pod_name(&pod);
                for a in e.ipv4.iter().chain(e.ipv6.iter()) {
                    addresses.extend(a.parse::<IpAddr>().ok().map(|a| (name.clone(), a)));
                }
                blocks.push(emit::endpoint(&e));
            }
            Err(note) => {
                ctx.warnings.push(Problem::at(pod.pos, note.clone()));
                notes.push(format!("polc: line {}: {note}", pod.pos.line));
            }
        }
    }
    let mut header = vec![format!("Imported by `polc import --pods` from {}: {count} pods.", path.display())];
    header.extend(notes);
    Ok((emit::file("pods.pol".to_string(), &header, &blocks), addresses))
}

fn pod_name(pod: &Node) -> String {
    let meta = pod.get("metadata");
    let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(|n| n.str(key).ok()).map(str::to_string);
    format!("{}/{}", text("namespace").unwrap_or_else(|| "default".into()), text("name").unwrap_or_default())
}

fn field<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    node.get(key).filter(|n| !n.is_null())
}

/// `Ok(Err(why))`: a pod that is not an endpoint polc polices.
fn endpoint(pod: &Node, namespaces: Option<&NamespaceLabels>) -> Result<Result<Endpoint, String>, Problem> {
    let meta = field(pod, "metadata").ok_or_else(|| Problem::at(pod.pos, "a Pod without `metadata`".into()))?;
    let name = field(meta, "name").ok_or_else(|| Problem::at(meta.pos, "a Pod without a name".into()))?.str("name")?;
    let ns = match field(meta, "namespace") {
        Some(ns) => ns.str("namespace")?,
        None => "default",
    };
    let spec = field(pod, "spec");
    let status = field(pod, "status");
    if spec.and_then(|s| field(s, "hostNetwork")).and_then(|h| h.str("hostNetwork").ok()) == Some("true") {
        return Ok(Err(format!("pod `{ns}/{name}` uses the host network: it is the `host` entity, not an endpoint")));
    }

    // Labels: the pod's own, then those Cilium derives.
    let mut labels = Vec::new();
    for (key, value, pos) in labels_of(meta)? {
        let key = selector::key(&key, Keys::Pod, pos)?;
        if key == NAMESPACE_KEY || key == SERVICE_ACCOUNT_KEY || key.starts_with(NAMESPACE_LABELS_PREFIX) {
            return Err(Problem::at(
                pos,
                format!("pod label `{key}` would clash with the label polc derives from Kubernetes"),
            ));
        }
        labels.push((key, selector::value(&value, pos)?.trim_matches('"').to_string()));
    }
    labels.push((NAMESPACE_KEY.to_string(), ns.to_string()));
    let ns_labels = match namespaces {
        Some(all) => all.get(ns).cloned().ok_or_else(|| {
            Problem::at(
                meta.pos,
                format!("pod `{ns}/{name}` is in namespace `{ns}`, which the namespace list does not have"),
            )
        })?,
        // Without a namespace list, the label Kubernetes puts on every namespace.
        None => vec![(NAMESPACE_NAME_LABEL.to_string(), ns.to_string(), Pos::default())],
    };
    for (key, value, pos) in ns_labels {
        let key = selector::key(&key, Keys::Namespace, pos)?;
        labels.push((key, selector::value(&value, pos)?.trim_matches('"').to_string()));
    }
    if let Some(sa) = spec.and_then(|s| field(s, "serviceAccountName")) {
        labels.push((SERVICE_ACCOUNT_KEY.to_string(), sa.str("serviceAccountName")?.to_string()));
    }

    // Addresses: podIPs (all families), else podIP.
    let (mut ipv4, mut ipv6) = (None, None);
    let mut addresses = Vec::new();
    if let Some(status) = status {
        if let Some(list) = field(status, "podIPs") {
            for item in list.seq("podIPs")? {
                if let Some(ip) = field(item, "ip") {
                    addresses.push(ip);
                }
            }
        }
        if addresses.is_empty() {
            addresses.extend(field(status, "podIP"));
        }
    }
    for node in addresses {
        let text = node.str("ip")?;
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => ipv4 = ipv4.or(Some(a.to_string())),
            Ok(IpAddr::V6(a)) => ipv6 = ipv6.or(Some(a.to_string())),
            Err(_) => return Err(Problem::at(node.pos, format!("`{text}` is not an IP address"))),
        }
    }
    if ipv4.is_none() && ipv6.is_none() {
        return Ok(Err(format!("pod `{ns}/{name}` has no IP address yet: not imported")));
    }

    // Container ports with names are named ports.
    let mut ports: Vec<(String, String)> = Vec::new();
    let containers = spec.and_then(|s| field(s, "containers"));
    for container in containers.map(|c| c.seq("containers")).transpose()?.unwrap_or(&[]) {
        let Some(list) = field(container, "ports") else { continue };
        for p in list.seq("ports")? {
            let Some(port_name) = field(p, "name") else { continue };
            let port_text = port_name.str("name")?;
            let valid = port_text.starts_with(|c: char| c.is_ascii_alphabetic())
                && port_text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(Problem::at(port_name.pos, format!("port name `{port_text}` cannot be written in polc"))
                    .help("polc port names begin with a letter and hold letters, digits, `-` and `_`"));
            }
            if ports.iter().any(|(n, _)| n == port_text) {
                return Err(Problem::at(
                    port_name.pos,
                    format!("port name `{port_text}` is used twice in pod `{ns}/{name}`"),
                ));
            }
            let number = field(p, "containerPort")
                .and_then(Node::int)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| Problem::at(p.pos, "`containerPort` must be a port number (1-65535)".into()))?;
            let proto = match field(p, "protocol").map(|n| n.str("protocol")).transpose()? {
                None | Some("TCP") => "tcp",
                Some("UDP") => "udp",
                Some("SCTP") => "sctp",
                Some(other) => return Err(Problem::at(p.pos, format!("unknown protocol `{other}`"))),
            };
            ports.push((port_text.to_string(), format!("{proto}/{number}")));
        }
    }

    Ok(Ok(Endpoint { name: emit::ident(&[ns, name]), labels, ipv4, ipv6, ports, notes: Vec::new() }))
}
