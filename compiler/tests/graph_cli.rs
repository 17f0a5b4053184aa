//! `polc graph` as a command: formats, `-o`, and exit codes.

use std::path::PathBuf;
use std::process::Command;

fn polc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_polc")).args(args).output().expect("runs polc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name).to_string_lossy().into_owned()
}

#[test]
fn each_format_to_stdout_and_to_a_file() {
    let dir = example("deny-demo");
    let (code, dot, _) = polc(&["graph", &dir]);
    assert_eq!(code, 0);
    assert!(dot.starts_with("digraph polc {") && dot.contains("deny no-demo2"), "{dot}");
    let (code, svg, _) = polc(&["graph", &dir, "--format", "svg"]);
    assert_eq!(code, 0);
    assert!(svg.starts_with("<svg ") && svg.contains("deny no-demo2"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("graph.html");
    let (code, stdout, _) = polc(&["graph", &dir, "--format", "html", "-o", out.to_str().expect("utf-8")]);
    assert_eq!(code, 0);
    assert!(stdout.is_empty(), "written to the file, not stdout");
    let html = std::fs::read_to_string(&out).expect("the page was written");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg ") && html.contains("deny no-demo2"));
}

#[test]
fn never_writes_the_lock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = PathBuf::from(example("l3-l4-rule"));
    for file in ["endpoints.pol", "policy.pol"] {
        std::fs::copy(src.join(file), tmp.path().join(file)).expect("copy");
    }
    let (code, _, _) = polc(&["graph", tmp.path().to_str().expect("utf-8")]);
    assert_eq!(code, 0);
    assert!(!tmp.path().join("identities.lock").exists());
}

#[test]
fn exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.pol");
    std::fs::write(&bad, "policy p { select {app=x} ingress { allow a: from nowhere } }").expect("write");
    let (code, _, err) = polc(&["graph", bad.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = polc(&["graph", &example("deny-demo"), "--format", "png"]);
    assert_eq!(code, 2);
    let (code, _, _) = polc(&["graph", tmp.path().join("missing.pol").to_str().expect("utf-8")]);
    assert_eq!(code, 2);
    let unwritable = tmp.path().join("no-such-dir").join("x.dot");
    let (code, _, err) = polc(&["graph", &example("deny-demo"), "-o", unwritable.to_str().expect("utf-8")]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot write"), "{err}");
}
