//! Code generation from IR tables: the rendered headers (snapshots), the
//! object cache keyed by code shape, and clang's diagnostics. The clang
//! tests need clang: skipped with a message without it, failed with CI=true.

#![allow(clippy::panic)] // tests report failures by panicking
use polc::codegen::clang::Clang;
use polc::codegen::entries::direction_entries;
use polc::codegen::header::{
    features_of, policy_map_summary, render_endpoint, render_node, render_shape, BuildOptions, EndpointAddresses,
    EndpointConstants, NodeConfig,
};
use polc::codegen::CodegenError;
use polc::ir::{Decision, DirectionTable, EndpointPolicy, Identity, L4Table, PeerKey, PortEntry};
use polc::sema::model::RuleId;
use polc::syntax::ast::Action;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Ingress enforced (a deny, a port range, ICMP echo), egress open.
fn web() -> (EndpointPolicy, EndpointConstants) {
    let d = |action, rule| Decision { action, rule: RuleId(rule) };
    let mut frontend = L4Table::default();
    frontend.protocols.insert(
        6,
        vec![
            PortEntry { low: 22, high: 22, decision: d(Action::Deny, 3) },
            PortEntry { low: 8000, high: 8099, decision: d(Action::Allow, 1) },
        ],
    );
    let mut any = L4Table::default();
    any.protocols.insert(1, vec![PortEntry { low: 8, high: 8, decision: d(Action::Allow, 2) }]);
    let ingress = DirectionTable {
        enforced: true,
        enforced_by: vec!["web-ingress".into()],
        tables: BTreeMap::from([(PeerKey::Identity(Identity(257)), frontend), (PeerKey::Any, any)]),
    };
    let policy =
        EndpointPolicy { name: "web".into(), identity: Identity(256), ingress, egress: DirectionTable::default() };
    let constants = EndpointConstants {
        name: "web".into(),
        identity: 256,
        id: 3,
        trace_level: 1,
        addresses: EndpointAddresses {
            ipv4: Some("10.0.1.5".parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)),
            ipv6: Some("fd00::1:5".parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED)),
            mac: Some([0x02, 0, 0, 0, 0x01, 0x05]),
        },
    };
    (policy, constants)
}

#[test]
fn rendered_headers() {
    let (policy, constants) = web();
    let features = features_of(&policy, &constants.addresses, &BuildOptions::default());
    let entries = direction_entries("web", &policy.ingress).unwrap_or_default();
    let maps = [policy_map_summary("ep_pol_in", &policy.ingress, &entries)];
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(workspace_root().join("snapshots/headers"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::assert_snapshot!("node_config", render_node(&NodeConfig::default()).unwrap_or_else(|e| e.to_string()));
        insta::assert_snapshot!(
            "web_ep_config",
            render_endpoint(&constants, &features, &maps).unwrap_or_else(|e| e.to_string())
        );
        insta::assert_snapshot!("web_shape", render_shape(&features).unwrap_or_else(|e| e.to_string()));
    });
}

fn clang_or_skip(test: &str, dir: &std::path::Path) -> Option<Clang> {
    match Clang::new(dir) {
        Ok(clang) => Some(clang),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("{test}: CI=true but clang is unusable: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

#[test]
fn objects_are_compiled_once_per_code_shape() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(clang) = clang_or_skip("objects_are_compiled_once_per_code_shape", cache.path()) else { return };
    let node = render_node(&NodeConfig::default()).unwrap_or_default();
    let (policy, constants) = web();
    let options = BuildOptions::default();
    let features = features_of(&policy, &constants.addresses, &options);

    // Another endpoint, other constants, same features: the same object.
    let mut other = policy.clone();
    other.name = "web-2".into();
    other.identity = Identity(999);
    let other_features = features_of(&other, &EndpointAddresses { mac: None, ..constants.addresses }, &options);
    assert_eq!(features, other_features);

    let first = clang.compile(&node, &render_shape(&features).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    let again =
        clang.compile(&node, &render_shape(&other_features).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(first.compiled && !again.compiled, "the second endpoint reuses the object");
    assert_eq!(first.hash, again.hash);
    assert!(first.warnings.is_empty(), "{}", first.warnings);

    // Enforcing egress changes the code shape; a per-endpoint compile is its own object.
    let mut enforced = policy.clone();
    enforced.egress.enforced = true;
    let shape2 = render_shape(&features_of(&enforced, &constants.addresses, &options)).unwrap_or_default();
    let second = clang.compile(&node, &shape2).unwrap_or_else(|e| panic!("{e}"));
    assert!(second.compiled && second.hash != first.hash);
    let own = render_endpoint(&constants, &features, &[]).unwrap_or_default();
    let per_endpoint = clang.compile(&node, &own).unwrap_or_else(|e| panic!("{e}"));
    assert!(per_endpoint.compiled && per_endpoint.hash != first.hash);
    assert!(per_endpoint.path.is_file());
}

#[test]
fn clang_errors_name_the_generated_file_and_line() {
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(clang) = clang_or_skip("clang_errors_name_the_generated_file_and_line", cache.path()) else { return };
    let node = render_node(&NodeConfig::default()).unwrap_or_default();
    let broken = "/* a header that does not compile */\n#define ENABLE_IPV4 1\nthis is not C;\n";
    match clang.compile(&node, broken) {
        Err(CodegenError::Clang { stderr, dir, .. }) => {
            assert!(stderr.contains("ep_config.h:3:"), "clang output names the header and line:\n{stderr}");
            assert!(dir.join("ep_config.h").is_file(), "the generated header is kept for reading");
        }
        other => panic!("expected a clang error, got {other:?}"),
    }
}

fn def(name: &str, last: u8) -> polc::sema::model::EndpointDef {
    polc::sema::model::EndpointDef {
        name: name.into(),
        labels: BTreeMap::new(),
        ipv4: Some(std::net::Ipv4Addr::new(10, 0, 1, last)),
        ipv6: None,
        mac: None,
        iface: None,
        netns: None,
        named_ports: BTreeMap::new(),
        span: polc::syntax::Span::default(),
    }
}

/// web-1 and web-2 share a shape; db enforces egress too; batch enforces nothing.
fn four_endpoints() -> (polc::ir::Resolved, Vec<polc::sema::model::EndpointDef>) {
    let (web, _) = web();
    let endpoint = |name: &str, identity, egress_enforced, ingress_enforced| {
        let mut p = web.clone();
        p.name = name.into();
        p.identity = Identity(identity);
        p.egress.enforced = egress_enforced;
        p.ingress.enforced = ingress_enforced;
        p
    };
    let resolved = polc::ir::Resolved {
        endpoints: vec![
            endpoint("web-1", 256, false, true),
            endpoint("web-2", 256, false, true),
            endpoint("db", 257, true, true),
            endpoint("batch", 258, false, false),
        ],
        ipcache: vec![("10.0.1.0/24".parse().unwrap_or_else(|_| ipnet::IpNet::default()), Identity(256))],
        ..Default::default()
    };
    let defs = vec![def("web-1", 1), def("web-2", 2), def("db", 3), def("batch", 4)];
    (resolved, defs)
}

#[test]
fn a_bundle_has_one_object_per_code_shape_and_rebuilds_from_cache() {
    use polc::codegen::bundle::{build_bundle, BundleOptions};
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    if clang_or_skip("a_bundle_has_one_object_per_code_shape_and_rebuilds_from_cache", out.path()).is_none() {
        return;
    }
    let (resolved, defs) = four_endpoints();
    let options = BundleOptions::default();
    let report = build_bundle(&resolved, &defs, out.path(), &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.endpoints, report.objects, report.clang_runs), (4, 3, 3), "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let again = build_bundle(&resolved, &defs, out.path(), &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.clang_runs, 0, "a rebuild without change runs no clang");

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("manifest.json")).unwrap_or_default())
            .unwrap_or_default();
    let endpoints = manifest["endpoints"].as_array().cloned().unwrap_or_default();
    let object = |i: usize| endpoints[i]["object"].as_str().unwrap_or_default().to_string();
    assert_eq!(endpoints.len(), 4);
    assert_eq!(object(0), object(1), "web-1 and web-2 share the object");
    assert_ne!(object(0), object(2));
    for (i, endpoint) in endpoints.iter().enumerate() {
        assert!(out.path().join("objects").join(format!("{}.o", object(i))).is_file());
        let header = out.path().join(endpoint["header"].as_str().unwrap_or_default());
        assert!(std::fs::read_to_string(header).unwrap_or_default().contains("#define SECLABEL"));
    }
    assert_eq!(endpoints[0]["rodata"]["seclabel"], "00010000", "identity 256, little endian");
    assert_eq!(endpoints[3]["ingress"]["entries"].as_array().map(Vec::len), Some(0), "batch enforces nothing");
    // any: icmp; 257: tcp, and an empty icmp entry that shadows any's.
    assert_eq!(endpoints[0]["ingress"]["entries"].as_array().map(Vec::len), Some(3));

    let per_endpoint = BundleOptions { per_endpoint_compile: true, ..BundleOptions::default() };
    let out2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let report = build_bundle(&resolved, &defs, out2.path(), &per_endpoint).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.objects, report.clang_runs), (4, 4));
}
