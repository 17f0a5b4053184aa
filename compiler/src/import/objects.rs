//! Kubernetes objects in a file: documents, `List`s, `apiVersion` and
//! `kind`, metadata, and the names of what is written.

use super::yaml::{self, Node, Pos};
use super::{cilium, emit, netpol, Ctx, OutputFile, Problem};
use std::path::Path;

/// The policy kinds polc imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NetworkPolicy,
    CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy,
}

impl Kind {
    fn of(api_version: &str, kind: &str) -> Option<Kind> {
        match (api_version, kind) {
            ("networking.k8s.io/v1", "NetworkPolicy") => Some(Kind::NetworkPolicy),
            ("cilium.io/v2", "CiliumNetworkPolicy") => Some(Kind::CiliumNetworkPolicy),
            ("cilium.io/v2", "CiliumClusterwideNetworkPolicy") => Some(Kind::CiliumClusterwideNetworkPolicy),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            Kind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
        }
    }
}

/// Who an object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub name: String,
    /// `None` for cluster-wide objects.
    pub namespace: Option<String>,
    pub pos: Pos,
}

impl Meta {
    /// The polc policy name: `<ns>_<name>`, `cnp_<ns>_<name>` or `ccnp_<name>`.
    pub fn policy_name(&self) -> String {
        let ns = self.namespace.as_deref().unwrap_or("");
        match self.kind {
            Kind::NetworkPolicy => emit::ident(&[ns, &self.name]),
            Kind::CiliumNetworkPolicy => emit::ident(&["cnp", ns, &self.name]),
            Kind::CiliumClusterwideNetworkPolicy => emit::ident(&["ccnp", &self.name]),
        }
    }

    /// The output file: `<ns>.<name>.pol`, `cnp.<ns>.<name>.pol` or `ccnp.<name>.pol`.
    pub fn file_name(&self) -> String {
        let ns = self.namespace.as_deref().unwrap_or("");
        match self.kind {
            Kind::NetworkPolicy => format!("{ns}.{}.pol", self.name),
            Kind::CiliumNetworkPolicy => format!("cnp.{ns}.{}.pol", self.name),
            Kind::CiliumClusterwideNetworkPolicy => format!("ccnp.{}.pol", self.name),
        }
    }

    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.name(), self.name),
            None => format!("{} {}", self.kind.name(), self.name),
        }
    }
}

/// The objects of a text: its documents, with `List` items in their place.
pub fn objects(text: &str) -> Result<Vec<Node>, Problem> {
    let mut out = Vec::new();
    for doc in yaml::documents(text)? {
        flatten(doc, &mut out)?;
    }
    Ok(out)
}

fn flatten(node: Node, out: &mut Vec<Node>) -> Result<(), Problem> {
    let is_list = node.get("kind").and_then(|k| k.str("kind").ok()).is_some_and(|k| k == "List" || k.ends_with("List"));
    match (is_list, node.get("items")) {
        (true, Some(items)) => {
            for item in items.seq("items")? {
                flatten(item.clone(), out)?;
            }
            Ok(())
        }
        _ => {
            out.push(node);
            Ok(())
        }
    }
}

fn required<'a>(obj: &'a Node, key: &str, within: &str) -> Result<&'a Node, Problem> {
    obj.get(key).ok_or_else(|| Problem::at(obj.pos, format!("`{within}` has no `{key}`")))
}

/// Reads the kind and metadata of one object.
pub fn meta(obj: &Node) -> Result<Meta, Problem> {
    let api = required(obj, "apiVersion", "object")?;
    let kind_node = required(obj, "kind", "object")?;
    let (api_text, kind_text) = (api.str("apiVersion")?, kind_node.str("kind")?);
    let kind = Kind::of(api_text, kind_text).ok_or_else(|| {
        Problem::at(kind_node.pos, format!("`{api_text}` `{kind_text}` is not a policy polc imports")).help(
            "polc imports networking.k8s.io/v1 NetworkPolicy and cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy",
        )
    })?;
    let metadata = required(obj, "metadata", "object")?;
    let name = required(metadata, "name", "metadata")?.str("metadata.name")?.to_string();
    let namespace = match kind {
        Kind::CiliumClusterwideNetworkPolicy => None,
        // As `kubectl apply` without `-n`: the `default` namespace.
        _ => Some(match metadata.get("namespace") {
            Some(ns) => ns.str("metadata.namespace")?.to_string(),
            None => "default".to_string(),
        }),
    };
    Ok(Meta { kind, name, namespace, pos: obj.pos })
}

/// Every policy of one file as `.pol` files, one per object; and the
/// problems of the objects that could not be read (the others still are).
pub fn policies(path: &Path, text: &str, ctx: &mut Ctx) -> (Vec<OutputFile>, Vec<Problem>) {
    let objects = match objects(text) {
        Ok(objects) => objects,
        Err(problem) => return (Vec::new(), vec![problem]),
    };
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for obj in objects {
        match policy_file(path, &obj, ctx) {
            Ok(file) => files.push(file),
            Err(problem) => problems.push(problem),
        }
    }
    (files, problems)
}

fn policy_file(path: &Path, obj: &Node, ctx: &mut Ctx) -> Result<OutputFile, Problem> {
    let meta = meta(obj)?;
    let mut notes = Vec::new();
    for (key, _) in obj.map("object")? {
        if !matches!(key.name.as_str(), "apiVersion" | "kind" | "metadata" | "spec" | "specs" | "status") {
            notes.push(ctx.unknown(key, meta.kind.name()));
        }
    }
    let policies = match meta.kind {
        Kind::NetworkPolicy => vec![netpol::convert(obj, &meta, ctx)?],
        Kind::CiliumNetworkPolicy | Kind::CiliumClusterwideNetworkPolicy => cilium::convert(obj, &meta, ctx)?,
    };
    let mut header = vec![format!(
        "Imported by `polc import` from {} (line {}): {}.",
        path.display(),
        meta.pos.line,
        meta.describe()
    )];
    header.extend(notes.into_iter().map(|n| format!("polc: {n}")));
    let blocks: Vec<String> = policies.iter().map(emit::policy).collect();
    Ok(emit::file(meta.file_name(), &header, &blocks))
}
