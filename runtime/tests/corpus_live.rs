//! A subset of the Kubernetes and Cilium corpus (tests/corpus/kubernetes/)
//! on the live datapath: each case's policy and its family's pods are
//! imported with polc's library, enforced with tcx on real veths in lab
//! namespaces, and the live TCP reachability between pods equals the
//! case's `reachability.txt` (which compiler/tests/import_corpus.rs holds
//! equal to the evaluator). Only pod-to-pod TCP over IPv4 is probed here.
//! Needs root (skipped with a reason otherwise, a failure under CI=true).

#![allow(clippy::panic)]
mod support;

use polc::driver;
use polc::import::corpus::{expectations, import_case, Expectation};
use polc::import::emit;
use polc::resolve::{IdentityLock, ResolveConfig};
use polc::sema::model::PolicySet;
use polc::syntax::SourceMap;
use polc_runtime::netlab::{require_kernel, Lab};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use support::matrix::timeout;
use support::Node;

/// The cases: a default deny, an allow by pod selector within a namespace,
/// a namespace selector AND a pod selector, a port-restricted allow, and a
/// Cilium deny of another namespace.
const CASES: [(&str, &str); 5] = [
    ("e2e", "default-deny-ingress"),
    ("e2e", "any-pod-selectors"),
    ("e2e", "pod-and-ns-selector"),
    ("e2e", "ports"),
    ("cilium", "deny-other-namespace"),
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The case imported with its family's inventory, checked; every endpoint
/// gets a short host interface name (pod names make names past the
/// kernel's 15 bytes).
fn imported(family: &str, case: &str) -> PolicySet {
    let origin = PathBuf::from(format!("{family}/{case}/policy.yaml"));
    let (files, _) =
        import_case(&corpus().join(family), case, &origin).unwrap_or_else(|e| panic!("{family}/{case}: {e}"));
    let mut sources = SourceMap::default();
    for file in files {
        sources.add(file.name, file.text);
    }
    let frontend = driver::check_sources(sources);
    assert!(!frontend.has_errors(), "{family}/{case} does not check");
    let mut set = frontend.checked;
    for (i, endpoint) in set.inventory.endpoints.iter_mut().enumerate() {
        endpoint.iface = Some(format!("pc{i}"));
    }
    set
}

/// `ns/pod` as the inventory names it; None for other peers (addresses,
/// entities), which the lab does not hold.
fn pod(peer: &str) -> Option<String> {
    peer.split_once('/').map(|(ns, pod)| emit::ident(&[ns, pod]))
}

/// The expectation as a pod-to-pod TCP probe: (from, to, port).
fn tcp_probe(e: &Expectation) -> Option<(String, String, u16)> {
    let port = e.packet.strip_prefix("tcp/")?.parse().ok()?;
    Some((pod(&e.from)?, pod(&e.to)?, port))
}

/// Enforces the case and probes every pod-to-pod TCP flow it states; one
/// thread per destination (listeners bind in its namespace), so denied
/// probes wait out their timeouts side by side. Returns (probes, mismatches).
fn live_case(family: &str, case: &str) -> (usize, Vec<String>) {
    let set = imported(family, case);
    let lock = IdentityLock::parse("").unwrap_or_else(|e| panic!("{e}"));
    let (resolved, _) =
        polc::resolve::resolve(&set, &lock, &ResolveConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut node = Node::new(case, &set);
    node.enforce_all(&set, &resolved);

    let text = read(&corpus().join(family).join(case).join("reachability.txt"));
    let mut by_destination: BTreeMap<String, Vec<(usize, String, u16, bool)>> = BTreeMap::new();
    for e in expectations(&text).unwrap_or_else(|e| panic!("{family}/{case}: {e}")) {
        if let Some((from, to, port)) = tcp_probe(&e) {
            by_destination.entry(to).or_default().push((e.line, from, port, e.allowed));
        }
    }
    let address = |name: &str| -> IpAddr {
        let endpoint = set.inventory.endpoint(name).unwrap_or_else(|| panic!("no pod `{name}`"));
        endpoint.ipv4.map(IpAddr::V4).unwrap_or_else(|| panic!("`{name}` has no IPv4 address"))
    };
    let lab: &Lab = &node.lab;
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = by_destination
            .iter()
            .map(|(to, probes)| {
                let dst = address(to);
                scope.spawn(move || {
                    let mut mismatches = Vec::new();
                    for (line, from, port, want) in probes {
                        let live =
                            lab.tcp_reaches(from, dst, *port, timeout(*want)).unwrap_or_else(|e| panic!("{e}"));
                        if live != *want {
                            mismatches.push(format!(
                                "{family}/{case}/reachability.txt:{line}: {from} -> {to} tcp/{port}: live {live}, expected {want}"
                            ));
                        }
                    }
                    (probes.len(), mismatches)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| panic!("a probe thread panicked"))).collect()
    });
    let probes = results.iter().map(|(n, _)| n).sum();
    (probes, results.into_iter().flat_map(|(_, m)| m).collect())
}

#[test]
fn corpus_subset_on_real_veths_matches_its_reachability() {
    if !require_kernel("corpus_subset_on_real_veths_matches_its_reachability") {
        return;
    }
    let (mut probes, mut denied_cases, mut mismatches) = (0, 0, Vec::new());
    for (family, case) in CASES {
        let text = read(&corpus().join(family).join(case).join("reachability.txt"));
        let denies = expectations(&text).unwrap_or_else(|e| panic!("{e}")).iter().any(|e| !e.allowed);
        denied_cases += usize::from(denies);
        let (count, mut wrong) = live_case(family, case);
        println!("{family}/{case}: {count} live TCP probes, {} matched", count - wrong.len());
        assert!(count > 0, "{family}/{case}: no pod-to-pod TCP flow to probe");
        probes += count;
        mismatches.append(&mut wrong);
    }
    println!("corpus subset: {probes} probes, {} matched", probes - mismatches.len());
    assert_eq!(denied_cases, CASES.len(), "every case denies something, so the programs enforce");
    assert!(mismatches.is_empty(), "live reachability differs:\n{}", mismatches.join("\n"));
}
