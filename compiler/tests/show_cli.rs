//! `polc show` as a command: the lock file it writes, `--locked`,
//! `--no-write-lock`, JSON output and exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn polc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_polc")).args(args).output().expect("runs polc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of an example in a fresh directory, without its lock.
fn copy_example(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    let dst = tmp.path().join(name);
    std::fs::create_dir(&dst).expect("mkdir");
    for entry in std::fs::read_dir(&src).expect("read example") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "pol") {
            std::fs::copy(&path, dst.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    (tmp, dst)
}

fn lock(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("identities.lock")).ok()
}

#[test]
fn writes_the_lock_then_locked_passes_and_fails_on_change() {
    let (_tmp, dir) = copy_example("l3-l4-rule");
    let d = dir.to_str().expect("utf-8 path");
    let (code, _, err) = polc(&["show", d, "--locked"]);
    assert_eq!(code, 1, "no lock yet: --locked fails");
    assert!(err.contains("--locked"), "{err}");
    assert_eq!(lock(&dir), None);

    let (code, out, _) = polc(&["show", d]);
    assert_eq!(code, 0);
    assert!(out.contains("endpoint app1 (identity 256 {id=app1})"), "{out}");
    let first = lock(&dir).expect("lock written");
    assert!(first.contains("endpoint 258 {id=app3}\n"), "{first}");
    assert_eq!(polc(&["show", d, "--locked"]).0, 0);

    // app3 goes, a new label set comes: with --no-write-lock nothing is written...
    let endpoints = dir.join("endpoints.pol");
    let text = std::fs::read_to_string(&endpoints).expect("read").replace("id=app3", "id=app4");
    std::fs::write(&endpoints, text).expect("write");
    assert_eq!(polc(&["show", d, "--locked"]).0, 1);
    assert_eq!(polc(&["show", d, "--no-write-lock"]).0, 0);
    assert_eq!(lock(&dir).as_deref(), Some(first.as_str()));
    // ...and without it, app3's number is retired and app4 gets the next one.
    let (code, out, _) = polc(&["show", d, "--format", "json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let app3 = json["endpoints"].as_array().expect("endpoints").iter().find(|e| e["name"] == "app3").expect("app3");
    assert_eq!(app3["identity"], 259);
    let second = lock(&dir).expect("lock");
    assert!(second.contains("endpoint 258 {id=app3} retired\nendpoint 259 {id=app4}\n"), "{second}");
}

#[test]
fn a_file_path_puts_the_lock_next_to_it_and_bad_input_exits_1() {
    let (_tmp, dir) = copy_example("deny-demo");
    let file = dir.join("policy.pol");
    let endpoints = dir.join("endpoints.pol");
    let (code, _, _) = polc(&["show", file.to_str().expect("utf-8"), endpoints.to_str().expect("utf-8")]);
    assert_eq!(code, 0);
    assert!(lock(&dir).is_some());

    std::fs::write(dir.join("identities.lock"), "version 1\nendpoint 3 {a=b}\n").expect("write");
    let (code, _, err) = polc(&["show", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(err.contains("identities.lock line 2"), "{err}");

    let (code, _, _) = polc(&["show", dir.join("missing").to_str().expect("utf-8")]);
    assert_eq!(code, 2);
}

#[test]
fn over_capacity_exits_1_naming_the_endpoint() {
    let (_tmp, dir) = copy_example("deny-demo");
    let (code, _, err) = polc(&["show", dir.to_str().expect("utf-8"), "--max-entries", "10", "--no-write-lock"]);
    assert_eq!(code, 1);
    assert!(err.contains("endpoint `demo1` needs 36 policy entries, more than the limit of 10"), "{err}");
    assert!(err.contains("rule `from-cluster` of policy `protect-demo1` (30 entries)"), "{err}");
    assert!(err.contains("policy.pol:7:5: rule `from-cluster` decides 30 entries"), "{err}");
}
