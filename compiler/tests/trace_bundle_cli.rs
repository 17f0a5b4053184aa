//! `polc trace --from-bundle OUT`: answers from the built tables, in the
//! forms of `polc trace` (snapshots in snapshots/trace-bundle/, the bundle's
//! path shown as `OUT`), the same words as `polc trace` when the sources are
//! given, and its exit codes. Needs clang to build the bundles (skipped
//! without it, failed with CI=true).

#![allow(clippy::panic)] // tests report failures by panicking

mod common;

use common::{clang_present, code, polc, stderr, stdout};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One bundle per example, built once for the whole test binary.
fn bundles() -> &'static Path {
    static BUILT: OnceLock<tempfile::TempDir> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            for example in ["l3-l4-rule", "deny-demo", "three-tier"] {
                let out = dir.path().join(example);
                let sources = format!("examples/{example}");
                let out_text = out.display().to_string();
                let built = polc(&["build", &sources, "-o", &out_text, "--locked"]);
                assert_eq!(code(&built), Some(0), "{}", stderr(&built));
            }
            dir
        })
        .path()
}

fn bundle(example: &str) -> PathBuf {
    bundles().join(example)
}

/// `polc trace --from-bundle OUT ARGS...` with OUT shown as `OUT` in its output.
fn trace_bundle(example: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bundle(example).display().to_string();
    let mut full = vec!["trace", "--from-bundle", &out];
    full.extend_from_slice(args);
    let run = polc(&full);
    (code(&run), stdout(&run).replace(&out, "OUT"), stderr(&run).replace(&out, "OUT"))
}

fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots/trace-bundle");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// Flows whose answer from the bundle alone is snapshotted: name, example, arguments.
const FLOWS: &[(&str, &str, &[&str])] = &[
    ("l3-allowed", "l3-l4-rule", &["--from", "app2", "--to", "app1", "--port", "80/tcp"]),
    ("l3-default-deny-by-address", "l3-l4-rule", &["--from", "app3", "--to", "10.200.1.11", "--port", "80/tcp"]),
    ("deny-demo-deny-rule", "deny-demo", &["--from", "demo2", "--to", "demo1", "--port", "80/tcp"]),
    ("deny-demo-world", "deny-demo", &["--from", "world", "--to", "demo1", "--proto", "47"]),
    ("three-tier-both-deny", "three-tier", &["--from", "api", "--to", "db", "--port", "5433/tcp"]),
    ("three-tier-metadata", "three-tier", &["--from", "api", "--to", "169.254.169.254", "--port", "80/tcp"]),
    ("three-tier-icmpv6", "three-tier", &["--from", "2001:db8::1", "--to", "frontend", "--icmp", "echo-request"]),
    (
        "three-tier-dns-to-node",
        "three-tier",
        &["--from", "api", "--to", "10.200.3.1", "--proto", "udp", "--port", "53"],
    ),
];

#[test]
fn answers_from_the_bundle_alone() {
    if !clang_present() {
        return;
    }
    snapshot_settings().bind(|| {
        for (name, example, args) in FLOWS {
            let (code, out, err) = trace_bundle(example, args);
            assert_eq!(code, Some(0), "{name}: {err}");
            assert!(out.contains("answered from the built tables in `OUT`"), "{name}: {out}");
            insta::assert_snapshot!(*name, out, &args.join(" "));
        }
        let (code, out, err) =
            trace_bundle("three-tier", &["--from", "api", "--to", "db", "--port", "5433/tcp", "--format", "json"]);
        assert_eq!(code, Some(0), "{err}");
        let json: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        insta::assert_json_snapshot!("three-tier-both-deny-json", json);
    });
}

/// With the sources, the answer reads exactly as `polc trace`'s, plus the
/// line that says where it came from and that the evaluator agrees.
#[test]
fn with_the_sources_it_reads_as_polc_trace_and_agrees() {
    if !clang_present() {
        return;
    }
    for (name, example, args) in FLOWS {
        let sources = format!("examples/{example}");
        let mut with_sources = vec![sources.as_str()];
        with_sources.extend_from_slice(args);
        let (code, out, err) = trace_bundle(example, &with_sources);
        assert_eq!(code, Some(0), "{name}: {err}");
        let mut reference = vec!["trace"];
        reference.extend_from_slice(&with_sources);
        let expected = stdout(&polc(&reference));
        let (answer, last) = out.split_at(out.trim_end().rfind('\n').map_or(0, |i| i + 1));
        assert_eq!(answer, expected, "{name}");
        assert!(last.starts_with("answered from the built tables in `OUT`"), "{name}: {last}");
        assert!(last.trim_end().ends_with("the reference evaluator agrees"), "{name}: {last}");
    }
    let (code, out, err) = trace_bundle(
        "three-tier",
        &["examples/three-tier", "--from", "api", "--to", "db", "--port", "5433/tcp", "--format", "json"],
    );
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!((json["answered_from"].as_str(), json["agrees"].as_bool()), (Some("bundle"), Some(true)));
    assert_eq!(json["ingress"]["rule"]["name"], "admin-ports");
    assert_eq!(json["ingress"]["rule"]["location"], "examples/three-tier/tiers.pol:36");
    assert!(json["flow"]["from"]["identity"].as_u64().is_some_and(|id| id >= 256), "{json}");
    // A named port needs the sources, and works with them.
    let named = ["examples/l3-l4-rule", "--from", "app2", "--to", "app1", "--port", "http/tcp", "--expect", "allow"];
    let (code, _, err) = trace_bundle("l3-l4-rule", &named);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn exit_codes() {
    if !clang_present() {
        return;
    }
    let cases: &[(&str, &[&str], i32, &str)] = &[
        (
            "l3-l4-rule",
            &["--from", "app2", "--to", "app1", "--port", "http/tcp"],
            2,
            "`http` is a named port, and the bundle records port numbers only",
        ),
        ("l3-l4-rule", &["--from", "ap2", "--to", "app1", "--port", "80/tcp"], 2, "did you mean `app2`?"),
        ("l3-l4-rule", &["--from", "cluster", "--to", "app1", "--port", "80/tcp"], 2, "names a set of peers"),
        (
            "l3-l4-rule",
            &["--from", "app3", "--to", "app1", "--port", "80/tcp", "--expect", "allow"],
            1,
            "expected `allow`, but the flow is `deny`",
        ),
        // Another example's sources: the bundle was not built from them,
        // and lacks their endpoints.
        (
            "l3-l4-rule",
            &["examples/deny-demo", "--from", "world", "--to", "host", "--port", "80/tcp"],
            1,
            "`OUT` was not built from these policy sources",
        ),
        (
            "l3-l4-rule",
            &["examples/deny-demo", "--from", "demo2", "--to", "demo1", "--port", "80/tcp"],
            1,
            "`OUT` was not built from these policy sources",
        ),
    ];
    for (example, args, expected, message) in cases {
        let (code, _, err) = trace_bundle(example, args);
        assert_eq!(code, Some(*expected), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let missing = polc(&["trace", "--from-bundle", "no/such/dir", "--from", "a", "--to", "b", "--port", "80"]);
    assert_eq!(code(&missing), Some(2));
    assert!(stderr(&missing).contains("manifest.json"), "{}", stderr(&missing));
    // Not a full bundle: a policy-only one (2), a manifest that is not one (1), or one of another format (1).
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let fake = dir.path().display().to_string();
    let fake_args = ["trace", "--from-bundle", &fake, "--from", "a", "--to", "b", "--port", "80"];
    for (manifest, expected, message) in [
        (r#"{"format": 2, "kind": "policy-only"}"#, 2, "is a policy-only bundle"),
        ("{}", 1, "is not a polc manifest"),
        (r#"{"format": 1, "ipcache": [], "endpoints": []}"#, 1, "is bundle format 1, and this polc reads format 2"),
    ] {
        std::fs::write(dir.path().join("manifest.json"), manifest).unwrap_or_else(|e| panic!("{e}"));
        let run = polc(&fake_args);
        assert_eq!(code(&run), Some(expected), "{}", stderr(&run));
        assert!(stderr(&run).contains(message), "{}", stderr(&run));
    }
    let no_paths = polc(&["trace", "--from", "a", "--to", "b", "--port", "80"]);
    assert_eq!(code(&no_paths), Some(2), "PATH is required without --from-bundle");
}

#[test]
fn a_changed_manifest_is_stale_not_a_bug() {
    if !clang_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = bundle("deny-demo");
    for file in ["manifest.json", "identities.lock"] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap_or_else(|e| panic!("{e}"));
    }
    // Swap the two directions' tables of every endpoint, as a stale or
    // edited bundle might hold them.
    let path = dir.path().join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    for endpoint in manifest["endpoints"].as_array_mut().into_iter().flatten() {
        let ingress = endpoint["ingress"].take();
        endpoint["ingress"] = endpoint["egress"].take();
        endpoint["egress"] = ingress;
    }
    std::fs::write(&path, manifest.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().display().to_string();
    let args =
        ["trace", "--from-bundle", &out, "examples/deny-demo", "--from", "demo2", "--to", "demo1", "--icmp", "8"];
    let run = polc(&args);
    assert_eq!(code(&run), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).contains("has other tables"), "{}", stderr(&run));
    assert!(stdout(&run).contains("answered from the built tables"), "the bundle's answer is still shown");
}
