//! The `.pol` text of imported policies and endpoints. Text is assembled
//! plainly and then run through the formatter, so what `polc import`
//! writes is exactly what `polc fmt` would.

use super::OutputFile;
use crate::format;
use crate::syntax::FileId;

/// One polc rule, its parts already in polc syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub deny: bool,
    pub name: String,
    /// At least one peer (`all` for "every source/destination").
    pub peers: Vec<String>,
    /// Empty: every packet.
    pub ports: Vec<String>,
    /// `# polc:` comments written above the rule.
    pub notes: Vec<String>,
}

/// A rule position in a section: a rule, or only the notes of one left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Rule(Rule),
    LeftOut(Vec<String>),
}

/// One polc policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub name: String,
    /// Selector terms, in polc syntax (`app=web`).
    pub select: Vec<String>,
    /// `None`: the direction is left alone; `Some(empty)`: default deny.
    pub ingress: Option<Vec<Entry>>,
    pub egress: Option<Vec<Entry>>,
    pub notes: Vec<String>,
}

/// One `endpoint` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// `(name, "tcp/80")`.
    pub ports: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// A label value as polc writes it: bare when it can be, else quoted.
pub fn value(v: &str) -> String {
    if v.is_empty() {
        "\"\"".into()
    } else {
        v.to_string()
    }
}

pub fn selector(terms: &[String]) -> String {
    format!("{{{}}}", terms.join(", "))
}

fn note_lines(out: &mut String, indent: &str, notes: &[String]) {
    for note in notes {
        out.push_str(&format!("{indent}# polc: {note}\n"));
    }
}

fn section(out: &mut String, keyword: &str, entries: &Option<Vec<Entry>>) {
    let Some(entries) = entries else { return };
    out.push_str(&format!("  {keyword} {{\n"));
    for entry in entries {
        match entry {
            Entry::LeftOut(notes) => note_lines(out, "    ", notes),
            Entry::Rule(rule) => {
                note_lines(out, "    ", &rule.notes);
                let action = if rule.deny { "deny" } else { "allow" };
                let dir = if keyword == "ingress" { "from" } else { "to" };
                out.push_str(&format!("    {action} {}: {dir} {}", rule.name, rule.peers.join(", ")));
                if !rule.ports.is_empty() {
                    out.push_str(&format!(" on {}", rule.ports.join(", ")));
                }
                out.push('\n');
            }
        }
    }
    out.push_str("  }\n");
}

/// The text of one policy block.
pub fn policy(p: &Policy) -> String {
    let mut out = String::new();
    note_lines(&mut out, "", &p.notes);
    out.push_str(&format!("policy {} {{\n  select {}\n", p.name, selector(&p.select)));
    section(&mut out, "ingress", &p.ingress);
    section(&mut out, "egress", &p.egress);
    out.push_str("}\n");
    out
}

/// The text of one endpoint block.
pub fn endpoint(e: &Endpoint) -> String {
    let mut out = String::new();
    note_lines(&mut out, "", &e.notes);
    let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={}", value(v))).collect();
    out.push_str(&format!("endpoint {} {{\n  labels {}\n", e.name, selector(&labels)));
    if let Some(a) = &e.ipv4 {
        out.push_str(&format!("  ipv4 {a}\n"));
    }
    if let Some(a) = &e.ipv6 {
        out.push_str(&format!("  ipv6 {a}\n"));
    }
    for (name, spec) in &e.ports {
        out.push_str(&format!("  port {name} = {spec}\n"));
    }
    out.push_str("}\n");
    out
}

/// A whole file: a header comment, then the blocks, formatted.
pub fn file(name: String, header: &[String], blocks: &[String]) -> OutputFile {
    let mut text: String = header.iter().map(|line| format!("# {line}\n")).collect();
    for block in blocks {
        text.push('\n');
        text.push_str(block);
    }
    // The text is built from validated parts; should it still not parse,
    // keep it as it is so that `polc check` shows the problem.
    let text = format::format_text(FileId(0), &text).unwrap_or(text);
    OutputFile { name, text }
}

/// A Kubernetes name (or several, joined by `_`) as a polc name: `.` becomes
/// `_` (Kubernetes names have no `_`), and a name that does not begin with
/// a letter gets `k8s_` in front.
pub fn ident(parts: &[&str]) -> String {
    let joined = parts.iter().map(|p| p.replace('.', "_")).collect::<Vec<_>>().join("_");
    let clean: String =
        joined.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if clean.starts_with(|c: char| c.is_ascii_alphabetic()) {
        clean
    } else {
        format!("k8s_{clean}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_follow_the_name_grammar() {
        assert_eq!(ident(&["prod", "allow.web"]), "prod_allow_web");
        assert_eq!(ident(&["1ns", "p"]), "k8s_1ns_p");
    }

    #[test]
    fn policies_render_and_format() {
        let p = Policy {
            name: "x_p".into(),
            select: vec!["app=web".into()],
            ingress: Some(vec![Entry::Rule(Rule {
                deny: false,
                name: "ingress-1".into(),
                peers: vec!["all".into()],
                ports: vec!["tcp/80".into()],
                notes: vec!["note".into()],
            })]),
            egress: Some(vec![]),
            notes: vec![],
        };
        let f = file("x.p.pol".into(), &["origin".into()], &[policy(&p)]);
        assert_eq!(
            f.text,
            "# origin\n\npolicy x_p {\n  select {app=web}\n\n  ingress {\n    # polc: note\n    allow ingress-1: from all on tcp/80\n  }\n\n  egress {}\n}\n"
        );
    }
}
