//! `polc fmt`'s library side: the examples are canonical, formatting is
//! idempotent over every `.pol` file of the repository, it keeps every
//! comment and it never changes what a policy means (the checked model and
//! the diagnostics of the output equal those of the input), for the examples
//! and for generated and mutated inputs.

#![allow(clippy::panic)] // tests report failures by panicking

use polc::driver::{self, Frontend};
use polc::format::{format_text, scan_comments};
use polc::syntax::{FileId, SourceMap};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.pol` file under `dir`, skipping build output and hidden folders.
fn pol_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                pol_files(&path, out);
            }
        } else if name.ends_with(".pol") {
            out.push(path);
        }
    }
}

fn example_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    pol_files(&workspace_root().join("examples"), &mut files);
    files.sort();
    assert!(files.len() >= 8, "the examples are missing: {files:?}");
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn fmt(text: &str) -> Result<String, String> {
    format_text(FileId(0), text).map_err(|d| format!("{}: {}", d.code.id, d.message))
}

/// What a policy set means, spans left out: the checked model (its spans are
/// not serialized) and every diagnostic's severity, code, message and help.
fn meaning(frontend: &Frontend) -> (serde_json::Value, Vec<String>) {
    let model = serde_json::to_value(&frontend.checked).unwrap_or_else(|e| panic!("model does not serialize: {e}"));
    let mut diagnostics: Vec<String> = frontend
        .diagnostics
        .iter()
        .map(|d| format!("{:?} {} {} {:?}", d.severity, d.code.id, d.message, d.help))
        .collect();
    diagnostics.sort();
    (model, diagnostics)
}

fn comment_texts(text: &str) -> Vec<String> {
    scan_comments(text).into_iter().map(|c| c.text).collect()
}

/// The properties every input that parses must have; `Err` says which failed.
fn check_formatting(text: &str) -> Result<(), String> {
    let once = fmt(text).map_err(|e| format!("input does not parse: {e}"))?;
    let twice = fmt(&once).map_err(|e| format!("output does not parse: {e}\n--- output\n{once}"))?;
    if twice != once {
        return Err(format!("not idempotent\n--- once\n{once}\n--- twice\n{twice}"));
    }
    if let Some(problem) = layout_problem(&once) {
        return Err(format!("{problem}\n--- output\n{once}"));
    }
    if comment_texts(&once) != comment_texts(text) {
        return Err(format!("comments changed\n--- input\n{text}\n--- output\n{once}"));
    }
    let before = meaning(&driver::check_text("a.pol", text));
    let after = meaning(&driver::check_text("a.pol", &once));
    if before != after {
        return Err(format!("meaning changed\n--- input\n{text}\n--- output\n{once}\n{before:#?}\n{after:#?}"));
    }
    Ok(())
}

/// What no formatted text may contain, whatever the input's layout.
fn layout_problem(out: &str) -> Option<String> {
    if !out.is_empty() && (!out.ends_with('\n') || out.ends_with("\n\n")) {
        return Some("the text must end in exactly one newline".into());
    }
    let lines: Vec<&str> = out.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let indent = line.len() - line.trim_start_matches(' ').len();
        if line.ends_with([' ', '\t', '\r']) || line.starts_with('\t') || indent % 2 != 0 {
            return Some(format!("line {n} has stray whitespace: {line:?}"));
        }
        let blank = line.is_empty();
        let previous = i.checked_sub(1).map(|p| lines[p]);
        if blank
            && (i == 0
                || previous.is_some_and(|p| p.is_empty() || (p.ends_with('{') && !p.trim_start().starts_with('#'))))
        {
            return Some(format!("line {n}: a blank line at the start or after a blank line or `{{`"));
        }
        if line.trim_start().starts_with('}') && previous.is_some_and(str::is_empty) {
            return Some(format!("line {n}: a blank line before `}}`"));
        }
    }
    None
}

#[test]
fn the_examples_are_canonically_formatted() {
    for path in example_files() {
        let text = read(&path);
        assert_eq!(fmt(&text).as_deref(), Ok(text.as_str()), "run `polc fmt {}`", path.display());
    }
}

#[test]
fn every_pol_file_in_the_repository_formats_idempotently_and_keeps_its_meaning() {
    let mut files = Vec::new();
    pol_files(&workspace_root(), &mut files);
    let mut formatted = 0;
    for path in &files {
        // Not UTF-8 (a fixture for the fuzz tests, say): `polc fmt` reports it as unreadable.
        let Ok(text) = String::from_utf8(std::fs::read(path).unwrap_or_default()) else { continue };
        match fmt(&text) {
            // Files kept for their syntax errors are not formatted; the error says why.
            Err(e) => assert!(e.starts_with("E0001"), "{}: {e}", path.display()),
            Ok(_) => {
                if let Err(e) = check_formatting(&text) {
                    panic!("{}: {e}", path.display());
                }
                formatted += 1;
            }
        }
    }
    assert!(formatted >= example_files().len());
}

#[test]
fn formatting_keeps_the_meaning_of_each_example_set() {
    let mut dirs: Vec<PathBuf> = example_files().iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    dirs.dedup();
    for dir in dirs {
        let files: Vec<PathBuf> = example_files().into_iter().filter(|f| f.parent() == Some(dir.as_path())).collect();
        let mut original = SourceMap::default();
        let mut formatted = SourceMap::default();
        for file in &files {
            let text = read(file);
            let out = fmt(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            original.add(file, text);
            formatted.add(file, out);
        }
        let before = driver::check_sources(original);
        assert!(!before.has_errors(), "{} has errors", dir.display());
        assert!(!before.checked.policies.is_empty());
        assert_eq!(meaning(&before), meaning(&driver::check_sources(formatted)), "{}", dir.display());
    }
}

#[test]
fn snapshots_of_the_formatted_examples() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(workspace_root().join("snapshots/format"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for path in example_files() {
            let text = read(&path);
            let out = fmt(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let set = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or_default();
            let file = path.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
            insta::assert_snapshot!(format!("{set}__{file}"), out);
        }
    });
}

#[test]
fn a_messy_layout_comes_out_canonical_with_its_comments() {
    let messy = "# defs\nports   web=tcp/80 ,tcp/443# web ports\nselector s={ app = shop ,tier in(a,b,) ,}\n\n\n\
        policy p{select $s # which\n ingress{\n# from the lb\nallow lb:from 10.0.0.0/8 except 10.1.0.0/16 on $web\n\n\n\
        deny bad : from {app=\"x # y\"}}egress{}}";
    let want = "# defs\nports web = tcp/80, tcp/443 # web ports\nselector s = {app=shop, tier in (a, b)}\n\n\
        policy p {\n  select $s # which\n\n  ingress {\n    # from the lb\n    allow lb: from 10.0.0.0/8 except (10.1.0.0/16) on $web\n\n\
        \x20   deny bad: from {app=\"x # y\"}\n  }\n\n  egress {}\n}\n";
    assert_eq!(fmt(messy).as_deref(), Ok(want));
    assert_eq!(check_formatting(messy), Ok(()));
}

#[test]
fn a_file_that_does_not_parse_is_not_formatted() {
    let err = format_text(FileId(0), "policy p { select {} ingress { allow x from world } }");
    assert!(matches!(err, Err(d) if d.code.id == "E0001"));
}

// ------------------------------------------------------------ generated input

/// Tokens of a random `.pol` file: well-formed, not necessarily valid (names
/// may be undefined or duplicated, addresses may not fit), so that the
/// meaning compared includes diagnostics.
fn tokens() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(item(), 0..5).prop_map(|items| items.concat())
}

fn pick(choices: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop::sample::select(choices).prop_map(String::from)
}

fn name() -> impl Strategy<Value = String> + Clone {
    pick(&["a", "b", "web", "db-1", "x_2"])
}

fn list(parts: Vec<Vec<String>>, open: &str, close: &str, trailing_comma: bool) -> Vec<String> {
    let mut out = vec![open.to_string()];
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(",".into());
        }
        out.extend(part);
    }
    if trailing_comma && out.len() > 1 {
        out.push(",".into());
    }
    out.push(close.to_string());
    out.retain(|t| !t.is_empty());
    out
}

fn selector() -> impl Strategy<Value = Vec<String>> + Clone {
    let key = pick(&["app", "tier", "k8s.io/name", "a:b", "in"]);
    let value = pick(&["web", "db", "\"x # y\"", "\"\"", "v1.2", "@home"]);
    let values = prop::collection::vec(value.clone(), 1..3);
    let term = prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| vec![k, "=".into(), v]),
        (key.clone(), value).prop_map(|(k, v)| vec![k, "!=".into(), v]),
        (key.clone(), values.clone(), any::<bool>()).prop_map(|(k, vs, t)| {
            let mut out = vec![k, "in".into()];
            out.extend(list(vs.into_iter().map(|v| vec![v]).collect(), "(", ")", t));
            out
        }),
        (key.clone(), values).prop_map(|(k, vs)| {
            let mut out = vec![k, "not".into(), "in".into()];
            out.extend(list(vs.into_iter().map(|v| vec![v]).collect(), "(", ")", false));
            out
        }),
        key.clone().prop_map(|k| vec!["!".into(), k]),
        key.prop_map(|k| vec![k]),
    ];
    (prop::collection::vec(term, 0..3), any::<bool>()).prop_map(|(terms, t)| list(terms, "{", "}", t))
}

fn peer() -> impl Strategy<Value = Vec<String>> {
    let cidr = pick(&["10.0.0.0/8", "10.1.0.0/16", "::/0", "fc00::/7", "192.168.1.0/24", "10.2.0.0/33"]);
    prop_oneof![
        selector(),
        pick(&["world", "host", "cluster", "all", "health", "init", "unmanaged"]).prop_map(|e| vec![e]),
        name().prop_map(|n| vec![format!("${n}")]),
        cidr.clone().prop_map(|c| vec![c]),
        (cidr.clone(), prop::collection::vec(cidr, 1..3), any::<bool>()).prop_map(|(c, except, parens)| {
            let mut out = vec![c, "except".into()];
            if parens || except.len() > 1 {
                out.extend(list(except.into_iter().map(|e| vec![e]).collect(), "(", ")", parens));
            } else {
                out.extend(except);
            }
            out
        }),
    ]
}

fn port() -> impl Strategy<Value = String> + Clone {
    pick(&[
        "tcp",
        "tcp/80",
        "udp/53",
        "tcp/8000-8080",
        "tcp/http",
        "icmp/echo-request",
        "icmp/8",
        "any",
        "$web",
        "$a",
        "sctp/0",
    ])
}

fn comma_separated(parts: Vec<Vec<String>>) -> Vec<String> {
    list(parts, "", "", false)
}

fn rule() -> impl Strategy<Value = Vec<String>> {
    (
        pick(&["allow", "deny"]),
        name(),
        pick(&["from", "to"]),
        prop::collection::vec(peer(), 1..3),
        prop::collection::vec(port(), 0..3),
    )
        .prop_map(|(action, name, keyword, peers, ports)| {
            let mut out = vec![action, name, ":".into(), keyword];
            out.extend(comma_separated(peers));
            if !ports.is_empty() {
                out.push("on".into());
                out.extend(comma_separated(ports.into_iter().map(|p| vec![p]).collect()));
            }
            out
        })
}

fn policy() -> impl Strategy<Value = Vec<String>> {
    let select = prop_oneof![selector(), name().prop_map(|n| vec![format!("${n}")])];
    let section = (pick(&["ingress", "egress"]), prop::collection::vec(rule(), 0..3));
    (name(), select, prop::collection::vec(section, 0..3)).prop_map(|(name, select, sections)| {
        let mut out = vec!["policy".into(), name, "{".into(), "select".into()];
        out.extend(select);
        for (direction, rules) in sections {
            out.extend([direction, "{".into()]);
            out.extend(rules.concat());
            out.push("}".into());
        }
        out.push("}".into());
        out
    })
}

fn field() -> impl Strategy<Value = Vec<String>> {
    let pair = (pick(&["app", "id", "k8s.io/x"]), pick(&["web", "\"a # b\"", "db"]));
    prop_oneof![
        (prop::collection::vec(pair, 0..3), any::<bool>()).prop_map(|(pairs, t)| {
            let mut out = vec!["labels".to_string()];
            out.extend(list(pairs.into_iter().map(|(k, v)| vec![k, "=".into(), v]).collect(), "{", "}", t));
            out
        }),
        pick(&["10.0.0.1", "10.0.0.2", "300.1.1.1"]).prop_map(|a| vec!["ipv4".into(), a]),
        pick(&["fd00::1", "::1"]).prop_map(|a| vec!["ipv6".into(), a]),
        Just(vec!["mac".into(), "02:00:00:00:00:01".into()]),
        pick(&["eth0", "lxc-a"]).prop_map(|d| vec!["iface".into(), d]),
        pick(&["ns1", "ns.2"]).prop_map(|d| vec!["netns".into(), d]),
        (name(), pick(&["tcp/80", "udp/53", "tcp/99999"])).prop_map(|(n, p)| vec!["port".into(), n, "=".into(), p]),
    ]
}

fn item() -> impl Strategy<Value = Vec<String>> {
    let address = prop_oneof![
        pick(&["10.9.0.1", "10.9.0.2"]).prop_map(|a| vec!["ipv4".into(), a]),
        Just(vec!["ipv6".into(), "fd00::9".into()]),
    ];
    prop_oneof![
        policy(),
        (name(), prop::collection::vec(field(), 0..4)).prop_map(|(name, fields)| {
            let mut out = vec!["endpoint".into(), name, "{".into()];
            out.extend(fields.concat());
            out.push("}".into());
            out
        }),
        prop::collection::vec(address, 0..3).prop_map(|fields| {
            let mut out = vec!["node".to_string(), "{".into()];
            out.extend(fields.concat());
            out.push("}".into());
            out
        }),
        (name(), prop::collection::vec(port(), 1..3)).prop_map(|(name, ports)| {
            let mut out = vec!["ports".into(), name, "=".into()];
            out.extend(comma_separated(ports.into_iter().map(|p| vec![p]).collect()));
            out
        }),
        (name(), selector()).prop_map(|(name, selector)| {
            let mut out = vec!["selector".into(), name, "=".into()];
            out.extend(selector);
            out
        }),
        (name(), prop::collection::vec(peer(), 1..3)).prop_map(|(name, peers)| {
            let mut out = vec!["peers".into(), name, "=".into()];
            out.extend(comma_separated(peers));
            out
        }),
    ]
}

/// What goes between two tokens: whitespace of any shape, or a comment.
fn separator() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => pick(&[" ", "  ", "\n", "\n\n", "\n\n\n", "\t", "\r\n", " \n  "]),
        1 => "[a-z \"#]{0,8}".prop_map(|text| format!(" #{text}\n")),
        1 => "[a-z \"#]{0,8}".prop_map(|text| format!("\n\n# {text}\n")),
    ]
}

fn laid_out(tokens: Vec<String>, separators: Vec<String>) -> String {
    let mut text = String::new();
    for (i, token) in tokens.iter().enumerate() {
        text.push_str(separators.get(i).map_or(" ", String::as_str));
        text.push_str(token);
    }
    text.push_str(separators.get(tokens.len()).map_or("", String::as_str));
    text
}

fn mutation() -> impl Strategy<Value = (prop::sample::Index, Option<String>)> {
    let inserted = pick(&[" ", "\n", "# x\n", ",", "{", "}", "(", ")", "1", "a", "$", "\"", "-", "/"]);
    (any::<prop::sample::Index>(), prop::option::of(inserted))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_files_format_idempotently_and_keep_their_meaning(
        tokens in tokens(),
        separators in prop::collection::vec(separator(), 0..200),
    ) {
        let text = laid_out(tokens, separators);
        prop_assert_eq!(check_formatting(&text), Ok(()));
    }

    #[test]
    fn mutated_examples_that_parse_keep_their_meaning(
        example in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let files = example_files();
        let mut text = read(example.get::<PathBuf>(&files)).into_bytes();
        for (at, inserted) in mutations {
            let at = at.index(text.len() + 1);
            match inserted {
                Some(s) => { text.splice(at..at, s.into_bytes()); }
                None if at < text.len() => { text.remove(at); }
                None => {}
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        if fmt(&text).is_ok() {
            prop_assert_eq!(check_formatting(&text), Ok(()));
        }
    }
}
