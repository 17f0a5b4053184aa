//! Kubernetes label selectors (`matchLabels`, `matchExpressions`) as polc
//! selector terms, and the label keys imported endpoints carry (Cilium's
//! conventions, lang-spec/KUBERNETES.md).

use super::emit;
use super::yaml::{Key, Node, Pos};
use super::{Ctx, Problem};
use crate::sema::labels;

/// The namespace of a pod, as Cilium labels it.
pub const NAMESPACE_KEY: &str = "io.kubernetes.pod.namespace";
/// Namespace labels on a pod: `io.cilium.k8s.namespace.labels.<key>`.
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// A pod's service account, as Cilium labels it.
pub const SERVICE_ACCOUNT_KEY: &str = "io.cilium.k8s.policy.serviceaccount";
/// The label Kubernetes puts on every namespace (1.21 and later).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Whose labels a selector's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// A pod's, as Kubernetes writes them (`app`).
    Pod,
    /// A namespace's: each key gets [`NAMESPACE_LABELS_PREFIX`].
    Namespace,
    /// Cilium's: an optional `k8s:` or `any:` source prefix is dropped.
    Cilium,
}

/// A selector in polc terms, and the polc keys it mentions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub terms: Vec<String>,
    pub keys: Vec<String>,
}

impl Selector {
    pub fn mentions(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    pub fn push(&mut self, key: &str, term: String) {
        self.keys.push(key.to_string());
        self.terms.push(term);
    }

    pub fn extend(&mut self, other: Selector) {
        self.keys.extend(other.keys);
        self.terms.extend(other.terms);
    }
}

/// The polc label key for a key written in a selector or on an object.
pub fn key(raw: &str, keys: Keys, pos: Pos) -> Result<String, Problem> {
    let key = match keys {
        Keys::Pod => raw.to_string(),
        Keys::Namespace => format!("{NAMESPACE_LABELS_PREFIX}{raw}"),
        Keys::Cilium => match raw.split_once(':') {
            Some(("k8s" | "any", rest)) => rest.to_string(),
            Some((source, _)) => {
                return Err(Problem::at(pos, format!("label source `{source}:` in `{raw}` is not supported"))
                    .help("imported endpoints carry Kubernetes labels only: use `k8s:`, `any:` or no prefix"))
            }
            None => raw.to_string(),
        },
    };
    match labels::key_problem(&key) {
        Some(problem) if key != raw => {
            Err(Problem::at(pos, format!("label key `{raw}` becomes `{key}` in polc, which is invalid: {problem}")))
        }
        Some(problem) => Err(Problem::at(pos, format!("invalid label key `{raw}`: {problem}"))),
        None => Ok(key),
    }
}

/// A label value, checked and written as polc writes it.
pub fn value(raw: &str, pos: Pos) -> Result<String, Problem> {
    match labels::value_problem(raw) {
        Some(problem) => Err(Problem::at(pos, format!("invalid label value `{raw}`: {problem}"))),
        None => Ok(emit::value(raw)),
    }
}

/// A `LabelSelector` object.
pub fn convert(node: &Node, what: &str, keys: Keys, ctx: &mut Ctx) -> Result<Selector, Problem> {
    let mut out = Selector::default();
    for (k, v) in node.map(what)? {
        match k.name.as_str() {
            "matchLabels" => {
                for (label, val) in v.map("matchLabels")? {
                    let polc_key = key(&label.name, keys, label.pos)?;
                    let val = value(v_str(val)?, val.pos)?;
                    out.push(&polc_key, format!("{polc_key}={val}"));
                }
            }
            "matchExpressions" => {
                for expr in v.seq("matchExpressions")? {
                    let (polc_key, term) = expression(expr, keys)?;
                    out.push(&polc_key, term);
                }
            }
            _ => return Err(not_a_selector_field(k, what, ctx)),
        }
    }
    Ok(out)
}

fn not_a_selector_field(k: &Key, what: &str, _ctx: &mut Ctx) -> Problem {
    // Never partial: leaving out part of a selector would widen it.
    Problem::at(k.pos, format!("unknown field `{}` in label selector `{what}`", k.name))
        .help("a label selector has `matchLabels` and `matchExpressions`")
}

fn v_str(node: &Node) -> Result<&str, Problem> {
    if node.is_null() {
        return Ok("");
    }
    node.str("label value")
}

fn expression(expr: &Node, keys: Keys) -> Result<(String, String), Problem> {
    let field = |name: &str| expr.get(name);
    let raw_key = field("key").ok_or_else(|| Problem::at(expr.pos, "a match expression needs `key`".into()))?;
    let polc_key = key(raw_key.str("key")?, keys, raw_key.pos)?;
    let op_node =
        field("operator").ok_or_else(|| Problem::at(expr.pos, "a match expression needs `operator`".into()))?;
    let values = match field("values") {
        Some(list) => list.seq("values")?.iter().map(|v| value(v_str(v)?, v.pos)).collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    for (k, _) in expr.map("matchExpressions")? {
        if !matches!(k.name.as_str(), "key" | "operator" | "values") {
            return Err(Problem::at(k.pos, format!("unknown field `{}` in a match expression", k.name)));
        }
    }
    let op = op_node.str("operator")?;
    let needs_values = matches!(op, "In" | "NotIn");
    if needs_values && values.is_empty() {
        return Err(Problem::at(op_node.pos, format!("operator `{op}` needs at least one value")));
    }
    if !needs_values && !values.is_empty() {
        return Err(Problem::at(op_node.pos, format!("operator `{op}` takes no values")));
    }
    let list = values.join(", ");
    let term = match op {
        "In" => format!("{polc_key} in ({list})"),
        "NotIn" => format!("{polc_key} not in ({list})"),
        "Exists" => polc_key.clone(),
        "DoesNotExist" => format!("!{polc_key}"),
        other => {
            return Err(Problem::at(op_node.pos, format!("unknown operator `{other}`"))
                .help("use `In`, `NotIn`, `Exists` or `DoesNotExist`"))
        }
    };
    Ok((polc_key, term))
}

/// The term that limits a selector to one namespace.
pub fn in_namespace(namespace: &str) -> String {
    format!("{NAMESPACE_KEY}={}", emit::value(namespace))
}
