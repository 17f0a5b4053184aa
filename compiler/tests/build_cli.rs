//! `polc build` end to end on an example: the bundle's files, the cache on
//! rebuild, `--dump`, and exit codes. Needs clang (skipped without it, failed with CI=true).

#![allow(clippy::panic)] // tests report failures by panicking

mod common;

use common::clang_present;
use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

fn polc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_polc")).args(args).output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn build_writes_the_bundle_and_rebuilds_from_its_cache() {
    if !clang_present() {
        return;
    }
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = example("l3-l4-rule");
    let args = ["build", dir.to_str().unwrap_or_default(), "-o", out.path().to_str().unwrap_or_default(), "--locked"];
    let (code, stdout, stderr) = polc(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("built 3 endpoints into"), "{stdout}");
    for file in ["manifest.json", "node_config.h", "identities.lock", "endpoints/app1/ep_config.h"] {
        assert!(out.path().join(file).is_file(), "{file}");
    }
    let objects = std::fs::read_dir(out.path().join("objects")).map(|d| d.count()).unwrap_or(0);
    assert!((1..=3).contains(&objects), "one object per code shape: {objects}");
    // The manifest names its rules where they are written (for polcd monitor and stats).
    let text = std::fs::read_to_string(out.path().join("manifest.json")).unwrap_or_default();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let rule = &manifest["rules"][0];
    assert_eq!((rule["id"].as_u64(), rule["name"].as_str()), (Some(1), Some("app2-http")), "{rule}");
    let file = rule["file"].as_str().unwrap_or_default();
    assert!(file.ends_with("l3-l4-rule/policy.pol") && rule["line"] == 8, "{rule}");
    let (code, stdout, _) = polc(&args);
    assert_eq!(code, 0);
    assert!(stdout.contains("(0 compiled,"), "a rebuild without change reuses the objects: {stdout}");
}

#[test]
fn dump_header_prints_every_endpoint_header() {
    if !clang_present() {
        return;
    }
    let dir = example("deny-demo");
    let (code, stdout, stderr) = polc(&["build", dir.to_str().unwrap_or_default(), "--dump", "header", "--locked"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches("#define SECLABEL").count(), 2, "{stdout}");
    assert!(stdout.contains("#define IPCACHE_MAP_SIZE"));
}

#[test]
fn build_of_a_missing_path_is_a_usage_error() {
    let (code, _, stderr) = polc(&["build", "/nonexistent/polc", "-o", "/tmp/never"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/polc"), "{stderr}");
}

#[test]
fn dump_ir_prints_the_resolved_tables() {
    let dir = example("l3-l4-rule");
    let (code, stdout, stderr) = polc(&["build", dir.to_str().unwrap_or_default(), "--dump", "ir", "--locked"]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(stdout.contains("app1") && json.is_object(), "{stdout}");
}
