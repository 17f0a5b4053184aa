//! `polc test`: the examples' own tests pass; failing and malformed test
//! files are reported with file:line and the right exit codes.

mod common;

use common::{code, polc, stderr, stdout};
use std::path::{Path, PathBuf};

const EXAMPLES: [&str; 3] = ["examples/l3-l4-rule", "examples/deny-demo", "examples/three-tier"];

#[test]
fn every_example_passes_its_own_tests() {
    for example in EXAMPLES {
        let out = polc(&["test", example]);
        assert_eq!(code(&out), Some(0), "{example}: {}{}", stdout(&out), stderr(&out));
        let summary = stdout(&out).lines().last().unwrap_or_default().to_string();
        assert!(summary.ends_with(" passed, 0 failed"), "{example}: {summary}");
        assert!(!summary.starts_with("0 passed"), "{example} has tests");
    }
}

/// A test file in a temp dir, next to nothing else (the policy comes from `examples/`).
fn test_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("extra.poltest");
    std::fs::write(&path, text).expect("written");
    path
}

fn run_l3(tests: &Path, format: &[&str]) -> std::process::Output {
    let tests = tests.display().to_string();
    let mut args = vec!["test", "examples/l3-l4-rule/policy.pol", "examples/l3-l4-rule/endpoints.pol", &tests];
    args.extend_from_slice(format);
    polc(&args)
}

#[test]
fn failures_show_expected_and_actual() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let tests = test_file(
        dir.path(),
        "# two pass, three fail\n\
         allow app2 -> app1 tcp/80 by app2-http\n\
         deny app2 -> app1 tcp/80\n\
         \n\
         deny app3 -> app1 tcp/80 because default-deny\n\
         deny app3 -> app1 tcp/80 by app2-http\n\
         allow app1 -> app2 tcp/80 by app2-http\n",
    );
    let out = run_l3(&tests, &[]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let path = tests.display();
    assert!(text.contains(&format!("FAIL {path}:3: deny app2 -> app1 tcp/80\n  expected: deny\n  actual:   ALLOWED by rule `app2-http` (examples/l3-l4-rule/policy.pol:8)")), "{text}");
    assert!(text.contains(&format!("FAIL {path}:6: deny app3 -> app1 tcp/80 by app2-http\n  expected: deny by `app2-http`\n  actual:   DENIED: app1 ingress is default-deny")), "{text}");
    assert!(text.contains(&format!("FAIL {path}:7: allow app1 -> app2 tcp/80 by app2-http\n  expected: allow by `app2-http`\n  actual:   ALLOWED: no policy enforces this flow")), "{text}");
    assert_eq!(text.matches("FAIL ").count(), 3, "{text}");
    assert!(text.ends_with("2 passed, 3 failed\n"), "{text}");

    let json = run_l3(&tests, &["--format", "json"]);
    assert_eq!(code(&json), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid JSON");
    assert_eq!((report["passed"].clone(), report["failed"].clone()), (2.into(), 3.into()));
    let second = &report["files"][0]["tests"][1];
    assert_eq!(second["line"], 3);
    assert_eq!(second["passed"], false);
    assert_eq!(second["actual"]["verdict"], "allow");
    assert_eq!(second["actual"]["rules"][0], "l3-l4-rule.app2-http");
}

#[test]
fn malformed_test_files_point_at_the_problem() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let cases = [
        ("allow app2 => app1 tcp/80\n", ":1:12: expected `->`, found `=>`"),
        ("\nallow app2 -> ap1 tcp/80\n", ":2:15: no endpoint `ap1` in the inventory"),
        ("permit app2 -> app1 tcp/80\n", ":1:1: expected `allow` or `deny`, found `permit`"),
        ("allow app2 -> app1 tcp/80 by app2-htp\n", ":1:30: no rule `app2-htp` in the policy set"),
        ("allow app2 -> app1 tcp/https\n", ":1:20: endpoint `app1` has no tcp port named `https`"),
        ("allow app2 -> app1 icmp/ping\n", ":1:25: `ping` is not an icmp type"),
        ("allow app2 -> app1 tcp\n", ":1:20: expected `PROTO/PORT`, found `tcp`"),
        ("allow app2 -> app1 tcp/80 because reasons\n", ":1:35: expected `default-deny` or `not-enforced`"),
        ("allow app2 -> app1 tcp/80 by\n", ":1:29: expected a rule name after `by`"),
        ("allow app2 -> app1\n", ":1:19: expected the protocol and port"),
    ];
    for (text, message) in cases {
        let tests = test_file(dir.path(), text);
        let out = run_l3(&tests, &[]);
        assert_eq!(code(&out), Some(2), "{text:?}: {}", stdout(&out));
        let expected = format!("error: {}{message}", tests.display());
        assert!(stderr(&out).contains(&expected), "{text:?}: wanted {expected:?} in {}", stderr(&out));
    }
}

#[test]
fn ambiguous_rule_names_need_their_policy() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("p.pol"),
        "endpoint a { labels {app=a} ipv4 10.0.0.1 }\n\
         policy p1 { select {app=a} ingress { allow web: from all on tcp/80 } }\n\
         policy p2 { select {app=a} ingress { allow web: from all on tcp/80 } }\n",
    )
    .expect("written");
    std::fs::write(dir.path().join("t.poltest"), "allow world -> a tcp/80 by web\n").expect("written");
    let dir_arg = dir.path().display().to_string();
    let out = polc(&["test", &dir_arg]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("rule name `web` is ambiguous"), "{}", stderr(&out));
    assert!(stderr(&out).contains("`p1.web` or `p2.web`"), "{}", stderr(&out));
    std::fs::write(dir.path().join("t.poltest"), "allow world -> a tcp/80 by p1.web\n").expect("written");
    let out = polc(&["test", &dir_arg]);
    assert_eq!(code(&out), Some(0), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn no_tests_is_a_usage_error() {
    let out = polc(&["test", "examples/l3-l4-rule/policy.pol"]);
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("no `.poltest` files found"), "{}", stderr(&out));
}
