//! Bad input never panics: arbitrary bytes, grammar-flavoured noise and
//! mutated example files go through parse, check and both renderers.
//! A short run (proptest's default of 256 cases per property) so it fits in
//! CI; set `PROPTEST_CASES=20000` locally for a longer hunt.

use polc::diag::render;
use polc::driver;
use polc::syntax::SourceMap;
use proptest::prelude::*;

/// Every example file, as (path, text).
const EXAMPLES: &[(&str, &str)] = &[
    ("deny-demo/endpoints.pol", include_str!("../../examples/deny-demo/endpoints.pol")),
    ("deny-demo/policy.pol", include_str!("../../examples/deny-demo/policy.pol")),
    ("l3-l4-rule/endpoints.pol", include_str!("../../examples/l3-l4-rule/endpoints.pol")),
    ("l3-l4-rule/policy.pol", include_str!("../../examples/l3-l4-rule/policy.pol")),
    ("three-tier/baseline.pol", include_str!("../../examples/three-tier/baseline.pol")),
    ("three-tier/defs.pol", include_str!("../../examples/three-tier/defs.pol")),
    ("three-tier/endpoints.pol", include_str!("../../examples/three-tier/endpoints.pol")),
    ("three-tier/tiers.pol", include_str!("../../examples/three-tier/tiers.pol")),
];

/// Pieces of the language, spliced in to reach deeper than random text does.
const TOKENS: &[&str] = &[
    "policy",
    "select",
    "ingress",
    "egress",
    "allow",
    "deny",
    "from",
    "to",
    "on",
    "except",
    "in",
    "not",
    "ports",
    "selector",
    "peers",
    "endpoint",
    "node",
    "labels",
    "ipv4",
    "ipv6",
    "mac",
    "iface",
    "netns",
    "port",
    "{",
    "}",
    "(",
    ")",
    ",",
    ":",
    "=",
    "!=",
    "!",
    "$",
    "$web",
    "/",
    "-",
    "#",
    "\"",
    "\n",
    "world",
    "all",
    "cluster",
    "host",
    "tcp/80",
    "udp/0",
    "tcp/65536",
    "tcp/9-1",
    "icmp/300",
    "icmpv6/echo-request",
    "any/http",
    "tcp/http",
    "10.0.0.0/8",
    "10.1.2.3/8",
    "::/0",
    "fd00::/129",
    "0.0.0.0/0 except (10.0.0.0/8)",
    "{app=web}",
    "{!a, a}",
    "99999999999999999999999",
    "é",
    "\u{202e}",
    "\t",
    "\r\n",
];

/// One edit of a file's text, in characters so UTF-8 stays valid.
#[derive(Debug, Clone)]
enum Mutation {
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        text: String,
    },
    Replace {
        at: usize,
        with: char,
    },
    /// Copy a stretch of the file somewhere else (duplicates or splits constructs).
    Splice {
        from: usize,
        len: usize,
        to: usize,
    },
    Token {
        at: usize,
        token: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), ".{0,8}").prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), any::<char>()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        (any::<usize>(), 1..40usize, any::<usize>()).prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Mutation::Token { at, token }),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        let n = chars.len() + 1;
        match m {
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            Mutation::Insert { at, text } => {
                let at = at % n;
                chars.splice(at..at, text.chars());
            }
            Mutation::Replace { at, with } => {
                if !chars.is_empty() {
                    let at = at % chars.len();
                    chars[at] = *with;
                }
            }
            Mutation::Splice { from, len, to } => {
                let from = from % n;
                let end = (from + len).min(chars.len());
                let piece: Vec<char> = chars[from.min(end)..end].to_vec();
                let to = to % n;
                chars.splice(to..to, piece);
            }
            Mutation::Token { at, token } => {
                let at = at % n;
                chars.splice(at..at, TOKENS[token % TOKENS.len()].chars());
            }
        }
    }
    chars.into_iter().collect()
}

/// Runs the whole front end and renders every diagnostic both ways.
fn check_and_render(sources: SourceMap) {
    let frontend = driver::check_sources(sources);
    let diagnostics = frontend.diagnostics.clone().sorted();
    let text = render::render_all_text(&frontend.sources, &diagnostics);
    for d in &diagnostics {
        let _ = render::to_json(&frontend.sources, d);
    }
    // Errors and only errors fail a check; a failed check says something.
    assert_eq!(frontend.has_errors(), diagnostics.iter().any(|d| d.is_error()));
    assert!(diagnostics.is_empty() || !text.is_empty());
}

fn one_file(path: &str, text: String) -> SourceMap {
    let mut sources = SourceMap::default();
    sources.add(path, text);
    sources
}

// proptest's default configuration: 256 cases, or `PROPTEST_CASES`.
proptest! {
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_and_render(one_file("bytes.pol", String::from_utf8_lossy(&bytes).into_owned()));
    }

    #[test]
    fn grammar_flavoured_noise(tokens in proptest::collection::vec((any::<usize>(), "[ \n]{0,2}"), 0..80)) {
        let text: String = tokens.iter().map(|(t, sep)| format!("{}{sep}", TOKENS[t % TOKENS.len()])).collect();
        check_and_render(one_file("noise.pol", text));
    }

    #[test]
    fn mutated_example(file in 0..EXAMPLES.len(), mutations in proptest::collection::vec(mutation(), 1..6)) {
        let (path, text) = EXAMPLES[file];
        check_and_render(one_file(path, apply(text, &mutations)));
    }

    /// A whole policy set with one file mutated: cross-file names, duplicate
    /// checks and warnings see the damage too.
    #[test]
    fn mutated_policy_set(victim in 0..EXAMPLES.len(), mutations in proptest::collection::vec(mutation(), 1..4)) {
        let prefix = EXAMPLES[victim].0.split('/').next().unwrap_or_default();
        let mut sources = SourceMap::default();
        for (i, (path, text)) in EXAMPLES.iter().enumerate().filter(|(_, (p, _))| p.starts_with(prefix)) {
            let text = if i == victim { apply(text, &mutations) } else { (*text).to_string() };
            sources.add(*path, text);
        }
        check_and_render(sources);
    }
}

#[test]
fn unmutated_example_sets_are_valid() {
    // The mutation tests start from valid policy sets; make sure they do.
    for (set, _) in EXAMPLES {
        let prefix = set.split('/').next().unwrap_or_default();
        let mut sources = SourceMap::default();
        for (path, text) in EXAMPLES.iter().filter(|(p, _)| p.starts_with(prefix)) {
            sources.add(*path, (*text).to_string());
        }
        let frontend = driver::check_sources(sources);
        assert!(!frontend.has_errors(), "{prefix}: {:?}", frontend.diagnostics);
    }
}
