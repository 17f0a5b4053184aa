//! `polc trace`: human and JSON output (snapshots in snapshots/trace/),
//! and its exit codes.

mod common;

use common::{code, polc, stderr, stdout};

fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../snapshots/trace");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// Traces whose human output is snapshotted: name, then the arguments.
const TRACES: &[(&str, &[&str])] = &[
    ("l3-allowed", &["examples/l3-l4-rule", "--from", "app2", "--to", "app1", "--port", "80/tcp"]),
    ("l3-default-deny", &["examples/l3-l4-rule", "--from", "app3", "--to", "app1", "--port", "80/tcp"]),
    ("l3-not-enforced", &["examples/l3-l4-rule", "--from", "app1", "--to", "app2", "--port", "80/tcp"]),
    (
        "l3-by-address",
        &["examples/l3-l4-rule", "--from", "10.200.1.12", "--to", "fd00:200:1::11", "--port", "http/tcp"],
    ),
    ("deny-demo-deny-rule", &["examples/deny-demo", "--from", "demo2", "--to", "demo1", "--port", "80/tcp"]),
    ("deny-demo-world", &["examples/deny-demo", "--from", "world", "--to", "demo1", "--proto", "47"]),
    ("three-tier-both-sides", &["examples/three-tier", "--from", "frontend", "--to", "api", "--port", "9000/tcp"]),
    ("three-tier-both-deny", &["examples/three-tier", "--from", "api", "--to", "db", "--port", "5433/tcp"]),
    ("three-tier-metadata", &["examples/three-tier", "--from", "api", "--to", "169.254.169.254", "--port", "80/tcp"]),
    (
        "three-tier-icmpv6",
        &["examples/three-tier", "--from", "2001:db8::1", "--to", "frontend", "--icmp", "echo-request"],
    ),
    ("three-tier-icmp-reply", &["examples/three-tier", "--from", "host", "--to", "frontend", "--icmp", "echo-reply"]),
    ("three-tier-public", &["examples/three-tier", "--from", "world", "--to", "frontend", "--port", "http/tcp"]),
    (
        "three-tier-dns-to-node",
        &["examples/three-tier", "--from", "api", "--to", "10.200.3.1", "--proto", "udp", "--port", "53"],
    ),
];

#[test]
fn human_traces() {
    snapshot_settings().bind(|| {
        for (name, args) in TRACES {
            let mut full = vec!["trace"];
            full.extend_from_slice(args);
            let out = polc(&full);
            assert_eq!(code(&out), Some(0), "{name}: {}", stderr(&out));
            insta::assert_snapshot!(*name, stdout(&out), &full.join(" "));
        }
    });
}

#[test]
fn json_traces() {
    let json = |args: &[&str]| {
        let mut full = vec!["trace", "--format", "json"];
        full.extend_from_slice(args);
        let out = polc(&full);
        assert_eq!(code(&out), Some(0), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("valid JSON")
    };
    let allowed = json(&["examples/l3-l4-rule", "--from", "app2", "--to", "app1", "--port", "80/tcp"]);
    assert_eq!(allowed["verdict"], "allow");
    assert_eq!(allowed["rule"]["name"], "app2-http");
    assert_eq!(allowed["rule"]["location"], "examples/l3-l4-rule/policy.pol:8");
    assert_eq!(allowed["egress"]["decision"], "not_enforced");
    assert_eq!(allowed["ingress"]["decision"], "allowed");
    let denied = json(&["examples/l3-l4-rule", "--from", "app3", "--to", "app1", "--port", "80/tcp"]);
    assert_eq!(denied["verdict"], "deny");
    assert_eq!(denied["rule"], serde_json::Value::Null);
    assert_eq!(denied["ingress"]["enforced_by"][0]["policy"], "l3-l4-rule");
    assert!(denied["reason"].as_str().is_some_and(|r| r.contains("default-deny")), "{denied}");
    snapshot_settings().bind(|| {
        let both = json(&["examples/three-tier", "--from", "api", "--to", "db", "--port", "5433/tcp"]);
        insta::assert_json_snapshot!("three-tier-both-deny-json", both);
        let ping =
            json(&["examples/three-tier", "--from", "fd00:200:3::14", "--to", "frontend", "--icmp", "echo-request"]);
        insta::assert_json_snapshot!("three-tier-icmpv6-json", ping);
    });
}

#[test]
fn icmp_family_follows_the_addresses() {
    let json = |args: &[&str]| {
        let mut full = vec!["trace", "examples/three-tier", "--format", "json"];
        full.extend_from_slice(args);
        let out = polc(&full);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("valid JSON")
    };
    let v4 = json(&["--from", "scraper", "--to", "frontend", "--icmp", "echo-request"]);
    assert_eq!((v4["flow"]["protocol"].clone(), v4["flow"]["port"].clone()), ("icmp".into(), 8.into()));
    let v6 = json(&["--from", "fd00:200:3::14", "--to", "frontend", "--icmp", "echo-request"]);
    assert_eq!((v6["flow"]["protocol"].clone(), v6["flow"]["port"].clone()), ("icmpv6".into(), 128.into()));
    let forced = json(&["--from", "scraper", "--to", "frontend", "--icmp6", "echo-request"]);
    assert_eq!(forced["flow"]["protocol"], "icmpv6");
}

#[test]
fn expect_sets_the_exit_code() {
    let base = ["trace", "examples/deny-demo", "--from", "demo2", "--to", "demo1", "--port", "80/tcp"];
    let with = |expect: &str| {
        let mut args = base.to_vec();
        args.extend(["--expect", expect]);
        polc(&args)
    };
    assert_eq!(code(&polc(&base)), Some(0));
    assert_eq!(code(&with("deny")), Some(0));
    let mismatch = with("allow");
    assert_eq!(code(&mismatch), Some(1));
    assert!(stderr(&mismatch).contains("expected `allow`, but the flow is `deny`"), "{}", stderr(&mismatch));
}

#[test]
fn bad_arguments_are_usage_errors() {
    let run = |args: &[&str]| {
        let mut full = vec!["trace", "examples/three-tier"];
        full.extend_from_slice(args);
        polc(&full)
    };
    let cases: &[(&[&str], &str)] = &[
        (&["--from", "frontnd", "--to", "api", "--port", "80/tcp"], "did you mean `frontend`?"),
        (&["--from", "cluster", "--to", "api", "--port", "80/tcp"], "`cluster` names a set of peers"),
        (&["--from", "api", "--to", "10.0.0.0/8", "--port", "80/tcp"], "is a prefix"),
        (&["--from", "api", "--to", "db", "--port", "80/tpc"], "unknown protocol `tpc`"),
        (&["--from", "api", "--to", "db", "--port", "99999/tcp"], "`99999` is not a port number"),
        (&["--from", "api", "--to", "db", "--port", "https/tcp"], "has no tcp port named `https`"),
        (&["--from", "api", "--to", "world", "--port", "http/tcp"], "is not an endpoint"),
        (&["--from", "api", "--to", "db", "--icmp", "ping"], "`ping` is not an icmp type"),
        (&["--from", "api", "--to", "db", "--port", "53/udp", "--proto", "tcp"], "the port says `udp`"),
        (&["--from", "api", "--to", "db"], "the flow has no protocol"),
    ];
    for (args, message) in cases {
        let out = run(args);
        assert_eq!(code(&out), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    let missing = polc(&["trace", "no/such/dir", "--from", "a", "--to", "b", "--port", "80"]);
    assert_eq!(code(&missing), Some(2));
}

#[test]
fn an_invalid_policy_set_is_reported_not_traced() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("bad.pol");
    std::fs::write(&file, "policy p { select {app=x} ingress { allow r: from 10.0.0.1/8 } }\n").expect("written");
    let path = file.display().to_string();
    let out = polc(&["trace", &path, "--from", "world", "--to", "host", "--port", "80/tcp"]);
    assert_eq!(code(&out), Some(1));
    assert!(stderr(&out).contains("has bits set after its prefix length"), "{}", stderr(&out));
}
