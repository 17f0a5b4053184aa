//! `polc import`: Kubernetes `NetworkPolicy`, Cilium's `CiliumNetworkPolicy`
//! and `CiliumClusterwideNetworkPolicy`, and pod inventories, turned into
//! formatted `.pol` files with the meaning they have in Kubernetes and
//! Cilium. lang-spec/KUBERNETES.md states the mapping and where the
//! formats disagree.
//!
//! - [`yaml`]: YAML and JSON into a tree that remembers positions.
//! - [`objects`]: documents, `List`s, `apiVersion`/`kind`, metadata, names.
//! - [`selector`]: label selectors, label keys and the namespace prefix.
//! - [`netpol`]: Kubernetes `NetworkPolicy`.
//! - [`cilium`]: `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy`.
//! - [`l3`]: CIDRs shared by both policy formats.
//! - [`pods`]: `kubectl get pods -o json` (and namespaces) as `endpoint`s.
//! - [`emit`]: the `.pol` text of what was read, through the formatter.
//!
//! Nothing is dropped silently: a field polc cannot enforce is an error
//! at its position, or with `allow_partial` a warning and a `# polc:`
//! comment in the output.

pub mod cilium;
pub mod corpus;
pub mod emit;
pub mod l3;
pub mod netpol;
pub mod objects;
pub mod pods;
pub mod selector;
pub mod yaml;

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
pub use yaml::Pos;

/// Something wrong (or, as a warning, left out) at one place of an input file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    pub fn at(pos: Pos, message: String) -> Problem {
        Problem { pos, message, help: None }
    }

    pub fn help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A [`Problem`] with the file it is in, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    fn new(severity: Severity, file: &Path, problem: Problem) -> Diagnostic {
        Diagnostic {
            severity,
            file: file.to_path_buf(),
            line: problem.pos.line,
            column: problem.pos.col,
            message: problem.message,
            help: problem.help,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // Line 0: about the file as a whole (two objects that clash).
        match self.line {
            0 => write!(f, "{}: {severity}: {}", self.file.display(), self.message)?,
            line => write!(f, "{}:{line}:{}: {severity}: {}", self.file.display(), self.column, self.message)?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {help}")?;
        }
        Ok(())
    }
}

/// How strict the conversion is, and what it found on the way.
pub struct Ctx {
    pub allow_partial: bool,
    pub warnings: Vec<Problem>,
    /// Unsupported fields when not partial: every one is reported.
    pub errors: Vec<Problem>,
    /// Every CIDR peer read, to warn when one holds pod addresses.
    pub cidrs: Vec<(Pos, IpNet, Vec<IpNet>)>,
}

impl Ctx {
    pub fn new(allow_partial: bool) -> Ctx {
        Ctx { allow_partial, warnings: Vec::new(), errors: Vec::new(), cidrs: Vec::new() }
    }

    /// A field polc cannot enforce: an error, or with `--allow-partial` a
    /// warning. Returns the note the output carries as a `# polc:` comment
    /// (written only when partial); the conversion goes on either way, so
    /// that one run reports every such field.
    pub fn unsupported(&mut self, key: &yaml::Key, why: &str) -> String {
        let message = format!("`{}` is not supported: {why}", key.name);
        let note = format!("line {}: {message}", key.pos.line);
        if self.allow_partial {
            self.warnings.push(Problem::at(key.pos, message));
        } else {
            self.errors
                .push(Problem::at(key.pos, message).help("remove it, or pass `--allow-partial` to import the rest"));
        }
        note
    }

    /// A field this importer does not know at all (a typo, or a newer API).
    pub fn unknown(&mut self, key: &yaml::Key, within: &str) -> String {
        self.unsupported(key, &format!("polc does not know this field of `{within}`"))
    }
}

/// One `.pol` file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// The file name (no directory), e.g. `prod.allow-web.pol`.
    pub name: String,
    pub text: String,
}

/// Everything one `polc import` run read and made.
#[derive(Default)]
pub struct Import {
    pub allow_partial: bool,
    files: BTreeMap<String, (PathBuf, String)>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    cidrs: Vec<(PathBuf, Pos, IpNet, Vec<IpNet>)>,
    /// Pod name (`ns/pod`) and address, of the pods imported.
    pod_addresses: Vec<(String, IpAddr)>,
}

impl Import {
    pub fn new(allow_partial: bool) -> Import {
        Import { allow_partial, ..Import::default() }
    }

    /// Reads one file of policies (YAML or JSON, any number of objects).
    pub fn add_policies(&mut self, path: &Path, text: &str) {
        let mut ctx = Ctx::new(self.allow_partial);
        let (files, problems) = objects::policies(path, text, &mut ctx);
        self.take_warnings(path, &mut ctx);
        let mut problems: Vec<Problem> = problems.into_iter().chain(ctx.errors).collect();
        problems.sort_by_key(|p| (p.pos.line, p.pos.col));
        self.errors.extend(problems.into_iter().map(|p| Diagnostic::new(Severity::Error, path, p)));
        self.cidrs.extend(ctx.cidrs.into_iter().map(|(pos, net, except)| (path.to_path_buf(), pos, net, except)));
        files.into_iter().for_each(|f| self.add_file(path, f));
    }

    /// Reads a pod list (and optionally a namespace list) into `pods.pol`.
    pub fn add_pods(&mut self, pods: (&Path, &str), namespaces: Option<(&Path, &str)>) {
        let mut ctx = Ctx::new(self.allow_partial);
        let labels = match namespaces {
            Some((path, text)) => match pods::namespace_labels(text) {
                Ok(labels) => Some(labels),
                Err(problem) => {
                    self.errors.push(Diagnostic::new(Severity::Error, path, problem));
                    return;
                }
            },
            None => None,
        };
        let result = pods::inventory(pods.0, pods.1, labels.as_ref(), &mut ctx);
        self.take_warnings(pods.0, &mut ctx);
        match result {
            Ok((file, addresses)) => {
                self.pod_addresses.extend(addresses);
                self.add_file(pods.0, file)
            }
            Err(problem) => self.errors.push(Diagnostic::new(Severity::Error, pods.0, problem)),
        }
    }

    fn take_warnings(&mut self, path: &Path, ctx: &mut Ctx) {
        for problem in ctx.warnings.drain(..) {
            self.warnings.push(Diagnostic::new(Severity::Warning, path, problem));
        }
    }

    fn add_file(&mut self, origin: &Path, file: OutputFile) {
        if let Some((first, _)) = self.files.get(&file.name) {
            let message =
                format!("two objects are both imported as `{}` (the other is from `{}`)", file.name, first.display());
            self.errors.push(Diagnostic::new(Severity::Error, origin, Problem::at(Pos::default(), message)));
            return;
        }
        self.files.insert(file.name, (origin.to_path_buf(), file.text));
    }

    /// Warns about CIDR peers that hold addresses of imported pods: polc,
    /// like Cilium, never matches a pod with a CIDR (KUBERNETES.md).
    fn warn_cidrs_with_pods(&mut self) {
        for (path, pos, net, except) in &self.cidrs {
            let inside: Vec<&str> = self
                .pod_addresses
                .iter()
                .filter(|(_, a)| net.contains(a) && !except.iter().any(|e| e.contains(a)))
                .map(|(name, _)| name.as_str())
                .collect();
            if let Some(first) = inside.first() {
                let message = format!(
                    "`{net}` holds the addresses of {} imported pods (`{first}`, ...), which it will not match",
                    inside.len()
                );
                let help = "polc, like Cilium, matches CIDRs only outside the cluster; select pods by their labels (see lang-spec/KUBERNETES.md)";
                self.warnings.push(Diagnostic::new(Severity::Warning, path, Problem::at(*pos, message).help(help)));
            }
        }
    }

    /// The files to write, sorted by name, or every error when there is any
    /// (nothing is written then); and every warning. What is written is
    /// checked as `polc check` would: an import never writes an invalid
    /// policy set.
    pub fn finish(mut self) -> (Result<Vec<OutputFile>, Vec<Diagnostic>>, Vec<Diagnostic>) {
        self.warn_cidrs_with_pods();
        let warnings = std::mem::take(&mut self.warnings);
        (self.files_checked(), warnings)
    }

    fn files_checked(self) -> Result<Vec<OutputFile>, Vec<Diagnostic>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let files: Vec<OutputFile> =
            self.files.into_iter().map(|(name, (_, text))| OutputFile { name, text }).collect();
        let mut sources = crate::syntax::SourceMap::default();
        for file in &files {
            sources.add(&file.name, file.text.clone());
        }
        let checked = crate::driver::check_sources(sources);
        if checked.has_errors() {
            let diagnostics = checked.diagnostics.clone().sorted();
            let rendered = crate::diag::render::render_all_text(&checked.sources, &diagnostics);
            let message = format!("the imported policy set does not check:\n{}", rendered.trim_end());
            return Err(vec![Diagnostic::new(
                Severity::Error,
                Path::new("(import)"),
                Problem::at(Pos::default(), message),
            )]);
        }
        Ok(files)
    }
}

/// Imports in memory: policy texts and an optional inventory, as `polc
/// import` would write them (used by the tests and the corpus).
pub fn import_texts(
    policies: &[(&Path, &str)],
    pods: Option<(&Path, &str)>,
    namespaces: Option<(&Path, &str)>,
    allow_partial: bool,
) -> Result<(Vec<OutputFile>, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut import = Import::new(allow_partial);
    for (path, text) in policies {
        import.add_policies(path, text);
    }
    if let Some(pods) = pods {
        import.add_pods(pods, namespaces);
    }
    let (files, warnings) = import.finish();
    files.map(|files| (files, warnings))
}

#[cfg(test)]
mod tests;
