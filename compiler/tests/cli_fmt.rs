//! `polc fmt` through the built binary: exit codes, what is written and what is not.

#![allow(clippy::panic)] // tests report failures by panicking

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

const MESSY: &str = "policy p{select {app = web}\ningress{allow x:from world on tcp/80}}\n";
const CANONICAL: &str = "policy p {\n  select {app=web}\n\n  ingress {\n    allow x: from world on tcp/80\n  }\n}\n";

fn polc_fmt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polc"))
        .arg("fmt")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run polc: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"))
}

#[test]
fn check_names_unformatted_files_writes_nothing_and_exits_1() {
    let dir = temp_dir();
    let messy = dir.path().join("messy.pol");
    let clean = dir.path().join("clean.pol");
    write(&messy, MESSY);
    write(&clean, CANONICAL);
    let out = polc_fmt(&["--check", dir.path().to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let listed = stdout(&out);
    assert!(listed.contains(&format!("{}: not formatted", messy.display())), "{listed}");
    assert!(listed.contains("line 1:\n  - policy p{select {app = web}\n  + policy p {"), "{listed}");
    assert!(!listed.contains("clean.pol"), "{listed}");
    assert_eq!(read(&messy), MESSY);
}

#[test]
fn check_passes_on_formatted_files_and_the_examples() {
    let dir = temp_dir();
    let clean = dir.path().join("clean.pol");
    write(&clean, CANONICAL);
    let out = polc_fmt(&["--check", clean.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let out = polc_fmt(&["--check", examples.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn fmt_rewrites_only_the_files_that_change() {
    let dir = temp_dir();
    let messy = dir.path().join("messy.pol");
    let clean = dir.path().join("clean.pol");
    let other = dir.path().join("notes.txt");
    write(&messy, MESSY);
    write(&clean, CANONICAL);
    write(&other, MESSY);
    let clean_inode = std::fs::metadata(&clean).map(|m| m.ino()).ok();
    let out = polc_fmt(&[dir.path().to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read(&messy), CANONICAL);
    assert_eq!(stdout(&out), format!("formatted {}\n", messy.display()));
    // An unchanged file is not rewritten (a rewrite replaces the inode), other files are not touched.
    assert_eq!(std::fs::metadata(&clean).map(|m| m.ino()).ok(), clean_inode);
    assert_eq!(read(&other), MESSY);
    let names: Vec<_> = std::fs::read_dir(dir.path()).into_iter().flatten().filter_map(|e| e.ok()).collect();
    assert_eq!(names.len(), 3, "a temporary file was left behind");
}

#[test]
fn stdout_prints_and_leaves_the_file_alone() {
    let dir = temp_dir();
    let messy = dir.path().join("messy.pol");
    write(&messy, MESSY);
    let out = polc_fmt(&["--stdout", messy.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), CANONICAL);
    assert_eq!(read(&messy), MESSY);
}

#[test]
fn a_syntax_error_is_reported_and_nothing_is_written() {
    let dir = temp_dir();
    let broken = dir.path().join("broken.pol");
    let messy = dir.path().join("messy.pol");
    let text = "policy p {\n  select {}\n  ingress { allow x from world }\n}\n";
    write(&broken, text);
    write(&messy, MESSY);
    let out = polc_fmt(&[dir.path().to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3:", broken.display())), "{err}");
    assert!(err.contains("error[E0001]: expected `:`"), "{err}");
    assert_eq!(read(&broken), text);
    // The other files are still formatted.
    assert_eq!(read(&messy), CANONICAL);
}

#[test]
fn a_missing_path_is_an_io_error() {
    let dir = temp_dir();
    let missing = dir.path().join("missing.pol");
    let out = polc_fmt(&["--check", missing.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

#[test]
fn check_and_stdout_do_not_go_together() {
    let out = polc_fmt(&["--check", "--stdout", "x.pol"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_reports_every_file() {
    let dir = temp_dir();
    let messy = dir.path().join("a.pol");
    let clean = dir.path().join("b.pol");
    let broken = dir.path().join("c.pol");
    write(&messy, MESSY);
    write(&clean, CANONICAL);
    write(&broken, "policy {");
    let out = polc_fmt(&["--check", "--format", "json", dir.path().to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)));
    assert_eq!(report["ok"], false);
    let files = report["files"].as_array().cloned().unwrap_or_default();
    let statuses: Vec<_> = files.iter().map(|f| f["status"].as_str().unwrap_or_default()).collect();
    assert_eq!(statuses, ["not_formatted", "unchanged", "invalid"]);
    assert_eq!(files[0]["first_difference"]["line"], 1);
    assert_eq!(files[0]["first_difference"]["after"], "policy p {");
    assert_eq!(files[2]["diagnostic"]["code"], "E0001");
    assert_eq!(files[2]["diagnostic"]["line"], 1);
    assert_eq!(read(&messy), MESSY);
}
