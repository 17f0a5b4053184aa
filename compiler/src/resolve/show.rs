//! What `polc show` prints: the identity table, the ipcache and each
//! endpoint's resolved entries, for people (text) and machines (JSON).

use crate::ir::{Decision, DirectionTable, Identity, IdentityKind, L4Table, PeerKey, PortEntry, Resolved};
use crate::resolve::identity::render_labels;
use crate::sema::icmp;
use crate::sema::model::{PolicySet, Proto};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Names for identities and rules, to make numbers readable.
struct Names<'a> {
    identities: HashMap<Identity, String>,
    set: &'a PolicySet,
}

impl<'a> Names<'a> {
    fn new(resolved: &Resolved, set: &'a PolicySet) -> Names<'a> {
        let identities = resolved.identities.iter().map(|info| (info.id, describe(&info.kind))).collect();
        Names { identities, set }
    }

    fn peer(&self, key: PeerKey) -> String {
        match key {
            PeerKey::Any => "any other peer".to_string(),
            PeerKey::Identity(id) => match self.identities.get(&id) {
                Some(what) => format!("{} {what}", id.0),
                None => id.0.to_string(),
            },
        }
    }

    fn decision(&self, d: Decision) -> String {
        let rule = self.set.rule(d.rule).map_or_else(String::new, |r| format!(" `{}` (policy `{}`)", r.name, r.policy));
        format!("{:<5} rule {}{rule}", d.action.keyword(), d.rule.0)
    }
}

fn describe(kind: &IdentityKind) -> String {
    match kind {
        IdentityKind::Reserved { name } => name.clone(),
        IdentityKind::Endpoint { labels } => render_labels(labels),
        IdentityKind::Cidr { prefix } => prefix.to_string(),
    }
}

fn kind_word(kind: &IdentityKind) -> &'static str {
    match kind {
        IdentityKind::Reserved { .. } => "reserved",
        IdentityKind::Endpoint { .. } => "endpoint",
        IdentityKind::Cidr { .. } => "cidr",
    }
}

fn proto_of(number: u8) -> Option<Proto> {
    Proto::ALL.into_iter().find(|p| p.number() == number)
}

/// `80`, `80-90`, `all`, or for ICMP `type 8 (echo-request)`.
fn ports(proto: Option<Proto>, entry: &PortEntry) -> String {
    let max = if proto.is_some_and(Proto::is_icmp) { u16::from(u8::MAX) } else { u16::MAX };
    match proto {
        _ if entry.low == 0 && entry.high >= max => "all".to_string(),
        Some(p) if p.is_icmp() && entry.low == entry.high => {
            let name = u8::try_from(entry.low).ok().and_then(|t| icmp::type_name(p, t));
            name.map_or_else(|| format!("type {}", entry.low), |n| format!("type {} ({n})", entry.low))
        }
        Some(p) if p.is_icmp() => format!("types {}-{}", entry.low, entry.high),
        _ if entry.low == entry.high => entry.low.to_string(),
        _ => format!("{}-{}", entry.low, entry.high),
    }
}

pub fn render_text(resolved: &Resolved, set: &PolicySet) -> String {
    let names = Names::new(resolved, set);
    let mut out = String::from("identities\n");
    for info in &resolved.identities {
        let _ = writeln!(out, "  {:<10} {:<9} {}", info.id.0, kind_word(&info.kind), describe(&info.kind));
    }
    out.push_str("\nipcache\n");
    for (net, id) in &resolved.ipcache {
        let _ = writeln!(out, "  {:<24} {}", net.to_string(), names.peer(PeerKey::Identity(*id)));
    }
    for endpoint in &resolved.endpoints {
        let _ = writeln!(
            out,
            "\nendpoint {} (identity {})",
            endpoint.name,
            names.peer(PeerKey::Identity(endpoint.identity))
        );
        direction_text(&mut out, &names, "ingress", "from", &endpoint.ingress);
        direction_text(&mut out, &names, "egress", "to", &endpoint.egress);
        let total = endpoint.ingress.entry_count() + endpoint.egress.entry_count();
        let _ = writeln!(out, "  {total} {}", if total == 1 { "entry" } else { "entries" });
    }
    out
}

fn direction_text(out: &mut String, names: &Names<'_>, direction: &str, peer_word: &str, table: &DirectionTable) {
    if !table.enforced {
        let _ = writeln!(out, "  {direction}: not enforced (allows everything)");
        return;
    }
    let by: Vec<String> = table.enforced_by.iter().map(|p| format!("`{p}`")).collect();
    let _ = writeln!(out, "  {direction}: default deny, enforced by {}", by.join(", "));
    if table.tables.is_empty() {
        let _ = writeln!(out, "    (no entries: everything is denied)");
    }
    for (key, l4) in &table.tables {
        let _ = writeln!(out, "    {peer_word} {}", names.peer(*key));
        for (proto, entries) in &l4.protocols {
            let p = proto_of(*proto);
            let pname = p.map_or_else(|| proto.to_string(), |p| p.name().to_string());
            for entry in entries {
                let _ = writeln!(out, "      {:<7} {:<24} {}", pname, ports(p, entry), names.decision(entry.decision));
            }
        }
        if let Some(d) = l4.other {
            let _ = writeln!(out, "      {:<32} {}", "other protocols", names.decision(d));
        }
    }
}

fn decision_json(d: Decision) -> Value {
    json!({ "action": d.action.keyword(), "rule": d.rule.0 })
}

fn l4_json(l4: &L4Table) -> Value {
    let protocols: serde_json::Map<String, Value> = l4
        .protocols
        .iter()
        .map(|(proto, entries)| {
            let name = proto_of(*proto).map_or_else(|| proto.to_string(), |p| p.name().to_string());
            let list: Vec<Value> = entries
                .iter()
                .map(|e| json!({ "low": e.low, "high": e.high, "action": e.decision.action.keyword(), "rule": e.decision.rule.0 }))
                .collect();
            (name, Value::Array(list))
        })
        .collect();
    json!({ "protocols": protocols, "other": l4.other.map(decision_json) })
}

fn direction_json(table: &DirectionTable) -> Value {
    let tables: Vec<Value> = table
        .tables
        .iter()
        .map(|(key, l4)| {
            let peer = match key {
                PeerKey::Any => json!("any"),
                PeerKey::Identity(id) => json!(id.0),
            };
            let mut value = l4_json(l4);
            value["peer"] = peer;
            value
        })
        .collect();
    json!({
        "enforced": table.enforced,
        "enforced_by": table.enforced_by,
        "entries": table.entry_count(),
        "tables": tables,
    })
}

/// `{"identities": [...], "ipcache": [...], "endpoints": [...]}`; table
/// peers are identity numbers or `"any"`, protocols are named.
pub fn to_json(resolved: &Resolved) -> Value {
    let identities: Vec<Value> = resolved
        .identities
        .iter()
        .map(|info| {
            let mut v = json!({ "id": info.id.0, "kind": kind_word(&info.kind) });
            match &info.kind {
                IdentityKind::Reserved { name } => v["name"] = json!(name),
                IdentityKind::Endpoint { labels } => v["labels"] = json!(labels),
                IdentityKind::Cidr { prefix } => v["prefix"] = json!(prefix.to_string()),
            }
            v
        })
        .collect();
    let ipcache: Vec<Value> =
        resolved.ipcache.iter().map(|(net, id)| json!({ "prefix": net.to_string(), "identity": id.0 })).collect();
    let endpoints: Vec<Value> = resolved
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "identity": e.identity.0,
                "ingress": direction_json(&e.ingress),
                "egress": direction_json(&e.egress),
            })
        })
        .collect();
    json!({ "identities": identities, "ipcache": ipcache, "endpoints": endpoints })
}
