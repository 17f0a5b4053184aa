//! `polc import` and `polc diff` from the command line: files written,
//! exit codes, `--allow-partial`, `--format json`, `--git`.

mod common;

use common::{code, polc, stderr, stdout};
use std::path::Path;
use std::process::Command;

const PODS: &str = "tests/corpus/kubernetes/e2e/pods.json";
const NAMESPACES: &str = "tests/corpus/kubernetes/e2e/namespaces.json";

fn import(policy: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let out = out.display().to_string();
    let mut args = vec!["import", policy, "--pods", PODS, "--namespaces", NAMESPACES, "-o", &out];
    args.extend_from_slice(extra);
    polc(&args)
}

#[test]
fn import_writes_formatted_files_that_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = import("tests/corpus/kubernetes/e2e/stacked-policies/policy.yaml", dir.path(), &[]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    names.sort();
    assert_eq!(names, ["pods.pol", "x.allow-ns-y-port-81.pol", "x.allow-ns-z-port-81.pol"]);
    let dir_arg = dir.path().display().to_string();
    let fmt = polc(&["fmt", "--check", &dir_arg]);
    assert_eq!(code(&fmt), Some(0), "{}", stdout(&fmt));
    let check = polc(&["check", &dir_arg]);
    assert_eq!(code(&check), Some(0), "{}", stderr(&check));
}

#[test]
fn unsupported_fields_fail_with_their_position_unless_partial() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("l7.yaml");
    std::fs::write(
        &policy,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: l7, namespace: x}\nspec:\n  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: \"80\", protocol: TCP}]\n      rules: {http: [{method: GET}]}\n",
    )
    .expect("written");
    let policy = policy.display().to_string();
    let out_dir = dir.path().join("out");
    let strict = import(&policy, &out_dir, &[]);
    assert_eq!(code(&strict), Some(1));
    assert!(stderr(&strict).contains("l7.yaml:9:7: error: `rules` is not supported"), "{}", stderr(&strict));
    assert!(!out_dir.exists(), "nothing is written when an object fails");

    let partial = import(&policy, &out_dir, &["--allow-partial", "--format", "json"]);
    assert_eq!(code(&partial), Some(0), "{}", stderr(&partial));
    let json: serde_json::Value = serde_json::from_str(&stdout(&partial)).expect("json");
    assert_eq!(json["ok"], true);
    assert_eq!(json["diagnostics"][0]["severity"], "warning");
    assert_eq!(json["diagnostics"][0]["line"], 9);
    let text = std::fs::read_to_string(out_dir.join("cnp.x.l7.pol")).expect("written");
    assert!(text.contains("# polc: line 9: `rules` is not supported"), "{text}");
}

#[test]
fn import_usage_and_io_errors_exit_2() {
    assert_eq!(code(&polc(&["import", "-o", "/tmp/never"])), Some(2));
    assert_eq!(code(&polc(&["import", "no/such/file.yaml", "-o", "/tmp/never"])), Some(2));
}

#[test]
fn diff_reports_changed_flows_and_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert_eq!(code(&import("tests/corpus/kubernetes/e2e/ports/policy.yaml", &a, &[])), Some(0));
    assert_eq!(code(&import("tests/corpus/kubernetes/e2e/end-port/policy.yaml", &b, &[])), Some(0));
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let out = polc(&["diff", &a, &b, "--exit-code"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("y_a -> x_a tcp/80: denied (default-deny) -> allowed by x_allow-ns-y-ports-80-81.ingress-1"),
        "{text}"
    );
    assert!(text.contains("3 changes: 3 now allowed, 0 now denied"), "{text}");
    let same = polc(&["diff", &a, &a, "--exit-code"]);
    assert_eq!(code(&same), Some(0));
    assert!(stdout(&same).starts_with("no verdict changes"));
    let json = polc(&["diff", &a, &b, "--format", "json"]);
    assert_eq!(code(&json), Some(0), "without --exit-code a change is not a failure");
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(value["changes"].as_array().map(Vec::len), Some(3));
    assert_eq!(value["changes"][0]["before"]["allowed"], false);
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

#[test]
fn diff_compares_two_git_revisions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path();
    git(repo, &["init", "-q"]);
    std::fs::create_dir(repo.join("pol")).expect("dir");
    let inventory = "endpoint a { labels {app=a}  ipv4 10.0.0.1 }\nendpoint b { labels {app=b}  ipv4 10.0.0.2 }\n";
    std::fs::write(repo.join("pol/endpoints.pol"), inventory).expect("written");
    std::fs::write(
        repo.join("pol/p.pol"),
        "policy p {\n  select {app=a}\n\n  ingress {\n    allow r: from {app=b} on tcp/80\n  }\n}\n",
    )
    .expect("written");
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", "one"]);
    std::fs::write(
        repo.join("pol/p.pol"),
        "policy p {\n  select {app=a}\n\n  ingress {\n    allow r: from {app=b} on tcp/80-81\n  }\n}\n",
    )
    .expect("written");
    git(repo, &["commit", "-qam", "two"]);
    let out = Command::new(env!("CARGO_BIN_EXE_polc"))
        .args(["diff", "--git", "HEAD~1", "HEAD", "pol", "--exit-code"])
        .current_dir(repo)
        .output()
        .expect("polc runs");
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().next(), Some("b -> a tcp/81: denied (default-deny) -> allowed by p.r"));
    let bad = Command::new(env!("CARGO_BIN_EXE_polc"))
        .args(["diff", "--git", "no-such-rev", "HEAD"])
        .current_dir(repo)
        .output()
        .expect("polc runs");
    assert_eq!(code(&bad), Some(2), "{}", stderr(&bad));
}
