//! `.poltest` files: one expected flow verdict per line, checked by
//! `polc test` against the reference evaluator. The format is documented in
//! lang-spec/TESTING.md:
//!
//! ```text
//! # comment
//! allow app2 -> app1 tcp/80 by app2-http
//! deny  app3 -> app1 tcp/80 because default-deny
//! allow app1 -> app2 udp/53 because not-enforced
//! ```

use super::explain::{explain, Explanation};
use super::flowspec::{self, FlowSpecError, PortText};
use super::peer::{self, FlowPeer};
use super::{evaluate, Flow, IpProto};
use crate::sema::model::{PolicySet, RuleId};
use crate::syntax::ast::Action;
use crate::syntax::SourceMap;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// A malformed test: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {message}", .path.display())]
pub struct TestFileError {
    pub path: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub help: Option<String>,
}

/// A word of a test line and its 1-based column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word<'t> {
    text: &'t str,
    col: usize,
}

/// A rule as a test names it: `name` or `policy.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleName {
    pub policy: Option<String>,
    pub name: String,
    pub col: usize,
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            Some(policy) => write!(f, "{policy}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What a test says decided the verdict, beyond allow or deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// `by a, b`: exactly these rules decided it.
    Rules(Vec<RuleName>),
    /// `because default-deny`: denied, and no deny rule decided it.
    DefaultDeny,
    /// `because not-enforced`: allowed, and no policy enforced it.
    NotEnforced,
}

/// One line of a `.poltest` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    pub line: usize,
    /// The line as written, trimmed (for reports).
    pub text: String,
    pub verdict: Action,
    pub src: FlowPeer,
    pub dst: FlowPeer,
    pub proto: IpProto,
    pub port: Option<PortText>,
    pub expected: Option<Expected>,
    src_col: usize,
    dst_col: usize,
    l4_col: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFile {
    pub path: PathBuf,
    pub cases: Vec<TestCase>,
}

/// Parses a `.poltest` file; the first malformed line is an error.
pub fn parse(path: &Path, text: &str) -> Result<TestFile, TestFileError> {
    let mut cases = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("");
        let words = split_words(content);
        if words.is_empty() {
            continue;
        }
        let error = |col: usize, message: String, help: Option<String>| TestFileError {
            path: path.to_path_buf(),
            line,
            col,
            message,
            help,
        };
        cases.push(parse_case(line, content.trim(), &words).map_err(|(col, message, help)| error(col, message, help))?);
    }
    Ok(TestFile { path: path.to_path_buf(), cases })
}

type LineError = (usize, String, Option<String>);

fn split_words(line: &str) -> Vec<Word<'_>> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain(std::iter::once((line.len(), ' '))) {
        match (c.is_whitespace() || c == ',', start) {
            (true, Some(s)) => {
                words.push(Word { text: &line[s..i], col: line[..s].chars().count() + 1 });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    words
}

const SHAPE: &str =
    "a test reads `allow|deny SRC -> DST PROTO/PORT [by RULE, ...|because default-deny|because not-enforced]`";

fn parse_case(line: usize, text: &str, words: &[Word<'_>]) -> Result<TestCase, LineError> {
    let word = |i: usize| words.get(i);
    let end_col = words.last().map_or(1, |w| w.col + w.text.chars().count());
    let missing = |what: &str| (end_col, format!("expected {what} here"), Some(SHAPE.to_string()));
    let verdict_word = word(0).ok_or_else(|| missing("`allow` or `deny`"))?;
    let verdict = match verdict_word.text {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        other => {
            return Err((verdict_word.col, format!("expected `allow` or `deny`, found `{other}`"), Some(SHAPE.into())))
        }
    };
    let src_word = word(1).ok_or_else(|| missing("the source"))?;
    let src = flowspec::parse_peer(src_word.text).map_err(|e| spec_error(src_word.col, &e))?;
    match word(2) {
        Some(w) if w.text == "->" => {}
        Some(w) => return Err((w.col, format!("expected `->`, found `{}`", w.text), Some(SHAPE.into()))),
        None => return Err(missing("`->`")),
    }
    let dst_word = word(3).ok_or_else(|| missing("the destination"))?;
    let dst = flowspec::parse_peer(dst_word.text).map_err(|e| spec_error(dst_word.col, &e))?;
    let l4_word = word(4).ok_or_else(|| missing("the protocol and port, e.g. `tcp/80`"))?;
    let (proto, port) = parse_l4(l4_word)?;
    let expected = parse_expected(&words[5..], end_col)?;
    Ok(TestCase {
        line,
        text: text.to_string(),
        verdict,
        src,
        dst,
        proto,
        port,
        expected,
        src_col: src_word.col,
        dst_col: dst_word.col,
        l4_col: l4_word.col,
    })
}

fn spec_error(col: usize, e: &FlowSpecError) -> LineError {
    (col, e.to_string(), Some(e.help()))
}

/// `tcp/80`, `tcp/http`, `icmp/echo-request`, `icmpv6/128`, `proto/47`.
fn parse_l4(word: &Word<'_>) -> Result<(IpProto, Option<PortText>), LineError> {
    let Some((proto_text, port_text)) = word.text.split_once('/') else {
        return Err((
            word.col,
            format!("expected `PROTO/PORT`, found `{}`", word.text),
            Some("e.g. `tcp/80`, `udp/53`, `icmp/echo-request`, or `proto/47` for another IP protocol".into()),
        ));
    };
    let port_col = word.col + proto_text.chars().count() + 1;
    if proto_text == "proto" {
        let proto = flowspec::parse_proto(port_text).map_err(|e| spec_error(port_col, &e))?;
        if proto.known().is_some() {
            let help = format!("write `{}/PORT`", proto);
            return Err((port_col, format!("protocol {} needs its name and a port", proto.0), Some(help)));
        }
        return Ok((proto, None));
    }
    let proto = match flowspec::parse_proto(proto_text) {
        Ok(p) if p.known().is_some() => p,
        _ => return Err(spec_error(word.col, &FlowSpecError::UnknownProtocol(proto_text.to_string()))),
    };
    let port = flowspec::parse_port(proto, port_text).map_err(|e| spec_error(port_col, &e))?;
    Ok((proto, Some(port)))
}

/// `by a, b.c` or `because default-deny|not-enforced`, or nothing.
fn parse_expected(words: &[Word<'_>], end_col: usize) -> Result<Option<Expected>, LineError> {
    let Some((first, rest)) = words.split_first() else {
        return Ok(None);
    };
    match first.text {
        "by" if rest.is_empty() => Err((end_col, "expected a rule name after `by`".into(), Some(SHAPE.into()))),
        "by" => rest.iter().map(rule_name).collect::<Result<Vec<_>, _>>().map(|r| Some(Expected::Rules(r))),
        "because" => match rest {
            [w] if w.text == "default-deny" => Ok(Some(Expected::DefaultDeny)),
            [w] if w.text == "not-enforced" => Ok(Some(Expected::NotEnforced)),
            [w, ..] => Err((
                w.col,
                format!("expected `default-deny` or `not-enforced`, found `{}`", w.text),
                Some("`because` takes one reason: `default-deny` or `not-enforced`".into()),
            )),
            [] => Err((end_col, "expected `default-deny` or `not-enforced` after `because`".into(), None)),
        },
        other => Err((first.col, format!("expected `by` or `because`, found `{other}`"), Some(SHAPE.into()))),
    }
}

fn rule_name(word: &Word<'_>) -> Result<RuleName, LineError> {
    let (policy, name) = match word.text.split_once('.') {
        Some((policy, name)) => (Some(policy.to_string()), name),
        None => (None, word.text),
    };
    let ok = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if ok(name) && policy.as_deref().is_none_or(ok) {
        Ok(RuleName { policy, name: name.to_string(), col: word.col })
    } else {
        Err((word.col, format!("`{}` is not a rule name", word.text), Some("write `RULE` or `POLICY.RULE`".into())))
    }
}

/// The result of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub line: usize,
    pub text: String,
    pub passed: bool,
    /// What the test expected, in words: "deny by `no-demo2`".
    pub expected: String,
    /// What the evaluator said.
    pub actual: Explanation,
    pub actual_verdict: Action,
    pub actual_rules: Vec<String>,
}

/// Runs every test of a file. Names the tests cannot resolve against the
/// policy set (endpoints, named ports, rules) make the file malformed.
pub fn run(set: &PolicySet, sources: &SourceMap, file: &TestFile) -> Result<Vec<Outcome>, TestFileError> {
    file.cases.iter().map(|case| run_case(set, sources, &file.path, case)).collect()
}

fn run_case(set: &PolicySet, sources: &SourceMap, path: &Path, case: &TestCase) -> Result<Outcome, TestFileError> {
    let error = |col: usize, e: &FlowSpecError| TestFileError {
        path: path.to_path_buf(),
        line: case.line,
        col,
        message: e.to_string(),
        help: Some(e.help()),
    };
    peer::resolve(&set.inventory, &case.src).map_err(|e| error(case.src_col, &e.into()))?;
    peer::resolve(&set.inventory, &case.dst).map_err(|e| error(case.dst_col, &e.into()))?;
    let port = match &case.port {
        Some(p) => {
            flowspec::port_number(&set.inventory, &case.dst, case.proto, p).map_err(|e| error(case.l4_col, &e))?
        }
        None => 0,
    };
    let expected_rules = match &case.expected {
        Some(Expected::Rules(names)) => {
            Some(names.iter().map(|n| rule_id(set, n, path, case.line)).collect::<Result<BTreeSet<_>, _>>()?)
        }
        _ => None,
    };
    let flow = Flow { src: case.src.clone(), dst: case.dst.clone(), proto: case.proto, port };
    let eval = evaluate(set, &flow).map_err(|e| error(case.src_col, &e.into()))?;
    let deciding = eval.deciding_rules();
    let actual_ids: BTreeSet<RuleId> = deciding.iter().map(|r| r.id).collect();
    let verdict = eval.verdict();
    let why_ok = match &case.expected {
        None => true,
        Some(Expected::Rules(_)) => expected_rules.as_ref() == Some(&actual_ids),
        Some(Expected::DefaultDeny | Expected::NotEnforced) => actual_ids.is_empty(),
    };
    Ok(Outcome {
        line: case.line,
        text: case.text.clone(),
        passed: verdict == case.verdict && why_ok,
        expected: describe_expected(case),
        actual: explain(&eval, sources),
        actual_verdict: verdict,
        actual_rules: deciding.iter().map(|r| format!("{}.{}", r.policy, r.name)).collect(),
    })
}

fn describe_expected(case: &TestCase) -> String {
    let verdict = case.verdict.keyword();
    match &case.expected {
        None => verdict.to_string(),
        Some(Expected::Rules(names)) => {
            let list: Vec<_> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("{verdict} by {}", list.join(", "))
        }
        Some(Expected::DefaultDeny) => format!("{verdict} because default-deny"),
        Some(Expected::NotEnforced) => format!("{verdict} because not-enforced"),
    }
}

/// The rule a test names; unknown or ambiguous names make the file malformed.
fn rule_id(set: &PolicySet, name: &RuleName, path: &Path, line: usize) -> Result<RuleId, TestFileError> {
    let error = |message: String, help: Option<String>| TestFileError {
        path: path.to_path_buf(),
        line,
        col: name.col,
        message,
        help,
    };
    let candidates: Vec<_> =
        set.rules().filter(|r| r.name == name.name && name.policy.as_ref().is_none_or(|p| *p == r.policy)).collect();
    match candidates.as_slice() {
        [rule] => Ok(rule.id),
        [] => {
            let all: Vec<String> = set.rules().map(|r| format!("{}.{}", r.policy, r.name)).collect();
            let plain: Vec<&str> = set.rules().map(|r| r.name.as_str()).collect();
            let wanted = name.to_string();
            let pool: Vec<&str> = if name.policy.is_some() { all.iter().map(String::as_str).collect() } else { plain };
            let help = peer::closest(pool.into_iter(), &wanted).map(|c| format!("did you mean `{c}`?"));
            Err(error(format!("no rule `{name}` in the policy set"), help))
        }
        many => {
            let list: Vec<_> = many.iter().map(|r| format!("`{}.{}`", r.policy, r.name)).collect();
            Err(error(
                format!("rule name `{name}` is ambiguous"),
                Some(format!("name it with its policy: {}", list.join(" or "))),
            ))
        }
    }
}
