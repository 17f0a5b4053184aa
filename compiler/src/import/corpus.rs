//! A case of the corpus in tests/corpus/kubernetes/ (see its README):
//! its policy imported with its family's inventory, and its expected
//! reachability (`reachability.txt`): matrices of `.` allowed, `X` denied
//! and `-` not checked, under the packets an `on` line names, and single
//! `allow|deny FROM -> TO PACKET` flows. Shared by the corpus tests that
//! ask the evaluator and the live datapath.

use super::{import_texts, Diagnostic, OutputFile};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaseError {
    #[error("cannot read `{}`: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("does not import: {}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
    Import(Vec<Diagnostic>),
}

/// Imports `family/case/policy.yaml` with the family's `pods.json` and
/// `namespaces.json`, the policy named `origin` in comments and
/// diagnostics: the `.pol` files and the warnings.
pub fn import_case(family: &Path, case: &str, origin: &Path) -> Result<(Vec<OutputFile>, Vec<Diagnostic>), CaseError> {
    let read = |path: PathBuf| std::fs::read_to_string(&path).map_err(|source| CaseError::Read { path, source });
    let policy = read(family.join(case).join("policy.yaml"))?;
    let (pods, namespaces) = (read(family.join("pods.json"))?, read(family.join("namespaces.json"))?);
    import_texts(
        &[(origin, &policy)],
        Some((Path::new("pods.json"), &pods)),
        Some((Path::new("namespaces.json"), &namespaces)),
        false,
    )
    .map_err(CaseError::Import)
}

/// One flow the file states: peers as written (`ns/pod` or as in
/// `.poltest` files), the packet as `proto/port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub line: usize,
    pub from: String,
    pub to: String,
    pub packet: String,
    pub allowed: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReachabilityError {
    #[error("line {0}: expected `allow|deny FROM -> TO PACKET`")]
    BadFlow(usize),
    #[error("line {0}: expected one mark per column")]
    MarkCount(usize),
    #[error("line {0}: unknown mark `{1}`")]
    UnknownMark(usize, String),
}

/// Every flow `text` states, in file order.
pub fn expectations(text: &str) -> Result<Vec<Expectation>, ReachabilityError> {
    let mut out = Vec::new();
    let mut packets: Vec<String> = Vec::new();
    let mut columns: Option<Vec<String>> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&first) = words.first() else { continue };
        let flow = |from: &str, to: &str, packet: &str, allowed: bool| Expectation {
            line: i + 1,
            from: from.into(),
            to: to.into(),
            packet: packet.into(),
            allowed,
        };
        match first {
            "on" => {
                packets = line[2..].split(',').map(|p| p.trim().to_string()).collect();
                columns = None;
            }
            "allow" | "deny" => {
                if words.len() != 5 || words[2] != "->" {
                    return Err(ReachabilityError::BadFlow(i + 1));
                }
                out.push(flow(words[1], words[3], words[4], first == "allow"));
            }
            _ => match &columns {
                None => columns = Some(words.iter().map(|w| w.to_string()).collect()),
                Some(cols) => {
                    if words.len() != cols.len() + 1 {
                        return Err(ReachabilityError::MarkCount(i + 1));
                    }
                    for (col, mark) in cols.iter().zip(&words[1..]) {
                        let allowed = match *mark {
                            "." => true,
                            "X" => false,
                            "-" => continue,
                            other => return Err(ReachabilityError::UnknownMark(i + 1, other.into())),
                        };
                        out.extend(packets.iter().map(|packet| flow(first, col, packet, allowed)));
                    }
                }
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_expand_over_packets_and_flows_stand_alone() {
        let text = "on tcp/80, udp/81\n   x/a x/b\nx/a  -  X  # comment\nx/b  .  -\nallow 192.0.2.1 -> x/a tcp/80\n";
        let got: Vec<(String, String, String, bool)> =
            expectations(text).expect("parses").into_iter().map(|e| (e.from, e.to, e.packet, e.allowed)).collect();
        let want = [
            ("x/a", "x/b", "tcp/80", false),
            ("x/a", "x/b", "udp/81", false),
            ("x/b", "x/a", "tcp/80", true),
            ("x/b", "x/a", "udp/81", true),
            ("192.0.2.1", "x/a", "tcp/80", true),
        ];
        let want: Vec<_> = want.iter().map(|(f, t, p, a)| (f.to_string(), t.to_string(), p.to_string(), *a)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(expectations("on tcp/80\n a b\na ?  .\n"), Err(ReachabilityError::UnknownMark(3, "?".into())));
        assert_eq!(expectations("on tcp/80\n a b\na .\n"), Err(ReachabilityError::MarkCount(3)));
        assert_eq!(expectations("allow a b\n"), Err(ReachabilityError::BadFlow(1)));
    }
}
