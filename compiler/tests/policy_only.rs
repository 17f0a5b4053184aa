//! The policy-only bundle: built from policies alone, then specialized to an
//! inventory, it must give what a full build with that inventory gives
//! (manifest.json byte for byte: identities, ipcache, object hashes,
//! constants, table entries; the endpoint headers; the lock). Needs clang
//! (skipped without it, failed with CI=true).

#![allow(clippy::panic)] // tests report failures by panicking

mod common;

use common::testgen::{scenario, Scenario};
use polc::codegen::bundle::{build_bundle, build_bundle_with_rules, located_rules, BundleOptions};
use polc::codegen::header::{shape_name, BuildOptions};
use polc::codegen::policy_only::{build_policy_only, possible_shapes, specialize, SpecializeError};
use polc::driver::{self, Frontend};
use polc::resolve::{self, IdentityLock, ResolveConfig};
use polc::syntax::SourceMap;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// One object cache for every build of this file: shapes recur, so clang
/// runs once per shape across tests and cases.
fn options() -> BundleOptions {
    BundleOptions {
        cache: Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-only-cache")),
        ..BundleOptions::default()
    }
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Builds `policies` (no inventory) policy-only, with `lock`, specializes it
/// to `full`'s inventory, and compares with a full build of `full` with the
/// same lock.
fn assert_specialization_equals_full_build(policies: &Frontend, full: &Frontend, lock: &IdentityLock) {
    assert!(!policies.has_errors() && !full.has_errors());
    assert!(policies.checked.inventory.endpoints.is_empty(), "the policy-only input has no endpoints");
    let config = ResolveConfig::default();

    let full_out = temp();
    let (resolved, full_lock) = resolve::resolve(&full.checked, lock, &config).unwrap_or_else(|e| panic!("{e}"));
    // The manifest names every rule where the build read it: the policy-only
    // bundle records its files and lines, and specialization carries them
    // (the same rules, ids and names as the full set's).
    let rules = located_rules(&policies.checked, &policies.sources);
    let names = |rules: &[polc::codegen::bundle::ManifestRule]| -> Vec<(u32, String, String)> {
        rules.iter().map(|r| (r.id, r.policy.clone(), r.name.clone())).collect()
    };
    assert_eq!(names(&rules), names(&located_rules(&full.checked, &full.sources)));
    assert_eq!(rules.len(), full.checked.rules().count());
    build_bundle_with_rules(&resolved, &full.checked.inventory.endpoints, &rules, full_out.path(), &options())
        .unwrap_or_else(|e| panic!("{e}"));

    let bundle = temp();
    let (_, policy_lock) = resolve::resolve(&policies.checked, lock, &config).unwrap_or_else(|e| panic!("{e}"));
    build_policy_only(&policies.sources, &policies.checked, &policy_lock, bundle.path(), &options())
        .unwrap_or_else(|e| panic!("{e}"));

    let specialized = specialize(bundle.path(), &full.checked.inventory).unwrap_or_else(|e| panic!("{e}"));
    let expected = read(&full_out.path().join("manifest.json"));
    assert_eq!(specialized.manifest().to_json(), expected, "manifest.json");
    assert_eq!(specialized.lock.render(), full_lock.render(), "identities.lock");
    for (endpoint, header) in specialized.endpoints.iter().zip(&specialized.headers) {
        assert_eq!(header, &read(&full_out.path().join(&endpoint.header)), "{}", endpoint.header);
    }

    // Written out, it is a full bundle: the same files, objects included.
    let written = temp();
    specialized.write(bundle.path(), written.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&written.path().join("manifest.json")), expected);
    assert_eq!(read(&written.path().join("node_config.h")), read(&full_out.path().join("node_config.h")));
    for hash in specialized.objects.keys() {
        let object = format!("objects/{hash}.o");
        let bytes = |dir: &Path| std::fs::read(dir.join(&object)).unwrap_or_else(|e| panic!("{object}: {e}"));
        assert_eq!(bytes(written.path()), bytes(full_out.path()), "{object}");
    }
}

/// The example's files other than its inventory (`endpoints.pol`), checked
/// in path order as `polc build` would.
fn example_policies(dir: &Path) -> Frontend {
    let files = driver::collect_files(&[dir.to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    let mut sources = SourceMap::default();
    for file in files.into_iter().filter(|f| !f.ends_with("endpoints.pol")) {
        let text = read(&file);
        sources.add(file, text);
    }
    driver::check_sources(sources)
}

#[test]
fn specializing_each_example_gives_its_full_build() {
    if !common::clang_present() {
        return;
    }
    for name in ["l3-l4-rule", "deny-demo", "three-tier"] {
        let dir = common::workspace_root().join("examples").join(name);
        let full = driver::load(std::slice::from_ref(&dir)).unwrap_or_else(|e| panic!("{e}"));
        let lock = IdentityLock::parse(&read(&dir.join("identities.lock"))).unwrap_or_else(|e| panic!("{e}"));
        assert_specialization_equals_full_build(&example_policies(&dir), &full, &lock);
    }
}

#[test]
fn shapes_follow_the_sections_the_policies_have() {
    let shapes = |source: &str| {
        let frontend = driver::check_text("p.pol", source);
        assert!(!frontend.has_errors());
        let mut names: Vec<String> =
            possible_shapes(&frontend.checked, &BuildOptions::default()).iter().map(shape_name).collect();
        names.sort();
        names
    };
    // No policy: only the address families.
    assert_eq!(shapes(""), ["IPV4+EVENTS", "IPV4+IPV6+EVENTS", "IPV6+EVENTS"]);
    // Ingress allows only: ingress on or off, never egress nor deny.
    let ingress = shapes("policy p {\n  select {app=a}\n  ingress {\n    allow r: from world\n  }\n}\n");
    assert_eq!(ingress.len(), 6, "{ingress:?}");
    assert!(ingress.iter().all(|s| !s.contains("EGRESS") && !s.contains("DENY")), "{ingress:?}");
    // Selecting every endpoint: ingress is always on; a deny may or may not match.
    let all = shapes("policy p {\n  select {}\n  ingress {\n    deny r: from world\n  }\n}\n");
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(all.iter().all(|s| s.contains("INGRESS_POLICY")), "{all:?}");
    assert_eq!(all.iter().filter(|s| s.contains("DENY_RULES")).count(), 3, "{all:?}");
}

#[test]
fn specialize_refuses_a_full_bundle() {
    if !common::clang_present() {
        return;
    }
    let dir = common::workspace_root().join("examples/l3-l4-rule");
    let full = driver::load(&[dir]).unwrap_or_else(|e| panic!("{e}"));
    let (resolved, _) = resolve::resolve(&full.checked, &IdentityLock::default(), &ResolveConfig::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let out = temp();
    build_bundle(&resolved, &full.checked.inventory.endpoints, out.path(), &options())
        .unwrap_or_else(|e| panic!("{e}"));
    match specialize(out.path(), &full.checked.inventory) {
        Err(SpecializeError::NotPolicyOnly { .. }) => {}
        other => panic!("expected NotPolicyOnly, got {other:?}"),
    }
}

#[test]
fn polc_build_without_inventory_writes_a_policy_only_bundle() {
    if !common::clang_present() {
        return;
    }
    let policy = common::workspace_root().join("examples/l3-l4-rule/policy.pol");
    let set = temp();
    let copy = set.path().join("policy.pol");
    std::fs::copy(&policy, &copy).unwrap_or_else(|e| panic!("{e}"));
    let out_dir = temp();
    let out = out_dir.path().to_path_buf();
    let output = common::polc(&["build", &set.path().display().to_string(), "-o", &out.display().to_string()]);
    assert_eq!(common::code(&output), Some(0), "{}", common::stderr(&output));
    assert!(common::stdout(&output).starts_with("built a policy-only bundle"), "{}", common::stdout(&output));
    let manifest: serde_json::Value = serde_json::from_str(&read(&out.join("manifest.json"))).unwrap_or_default();
    assert_eq!(manifest["kind"], "policy-only");
    assert_eq!(read(&out.join("policy/000-policy.pol")), read(&policy));
    assert!(out.join("policy.json").is_file() && out.join("identities.lock").is_file());
    let shapes = manifest["shapes"].as_object().map(|s| s.len()).unwrap_or(0);
    let objects = std::fs::read_dir(out.join("objects")).map(|d| d.count()).unwrap_or(0);
    assert!(shapes > 0 && objects == shapes, "one object per shape: {shapes} shapes, {objects} objects");
    // The rules, located in the file polc build read (not the copy).
    let rule = &manifest["rules"][0];
    assert_eq!((rule["name"].as_str(), rule["policy"].as_str()), (Some("app2-http"), Some("l3-l4-rule")), "{rule}");
    assert_eq!((rule["action"].as_str(), rule["direction"].as_str()), (Some("allow"), Some("ingress")), "{rule}");
    assert_eq!(rule["file"].as_str(), Some(copy.display().to_string().as_str()), "{rule}");
    assert_eq!(rule["line"], 8, "{rule}");

    // The same bundle said to be of another format is refused, not misread.
    let mut other_format = manifest.clone();
    other_format["format"] = serde_json::json!(1);
    std::fs::write(out.join("manifest.json"), other_format.to_string()).unwrap_or_else(|e| panic!("{e}"));
    match specialize(&out, &polc::sema::model::Inventory::default()) {
        Err(SpecializeError::Format(mismatch)) => assert_eq!(mismatch.found, 1),
        other => panic!("expected a format mismatch, got {other:?}"),
    }

    // `--per-endpoint-compile` needs endpoints.
    let output = common::polc(&[
        "build",
        &set.path().display().to_string(),
        "-o",
        &out.display().to_string(),
        "--per-endpoint-compile",
    ]);
    assert_eq!(common::code(&output), Some(2), "{}", common::stderr(&output));
}

#[test]
fn policy_only_flag_ignores_the_inventory_and_keeps_the_lock() {
    if !common::clang_present() {
        return;
    }
    let example = common::workspace_root().join("examples/deny-demo");
    let set = temp();
    for file in ["endpoints.pol", "policy.pol", "identities.lock"] {
        std::fs::copy(example.join(file), set.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let out = temp();
    let dir = set.path().display().to_string();
    let output = common::polc(&["build", &dir, "-o", &out.path().display().to_string(), "--policy-only", "--locked"]);
    assert_eq!(common::code(&output), Some(0), "{}", common::stderr(&output));
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("manifest.json"))).unwrap_or_default();
    assert_eq!(manifest["kind"], "policy-only");
    assert!(manifest.get("endpoints").is_none(), "no endpoint in a policy-only manifest");
    assert_eq!(read(&out.path().join("identities.lock")), read(&example.join("identities.lock")));
    assert_eq!(read(&set.path().join("identities.lock")), read(&example.join("identities.lock")));

    // Specialized to the set's own inventory: the endpoints come back.
    let full = driver::load(&[set.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    let specialized = specialize(out.path(), &full.checked.inventory).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = specialized.endpoints.iter().map(|e| e.name.as_str()).collect();
    let expected: Vec<&str> = full.checked.inventory.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, expected);
}

/// The scenario's policies alone (no endpoints, no node).
fn policies_of(scenario: &Scenario) -> Frontend {
    let policies = Scenario { endpoints: Vec::new(), node: false, ..scenario.clone() };
    driver::check_text("generated.pol", &policies.source())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn specializing_random_policies_gives_their_full_build(scenario in scenario()) {
        if common::clang_present() {
            let full = scenario.check();
            assert_specialization_equals_full_build(&policies_of(&scenario), &full, &IdentityLock::default());
        }
    }
}
