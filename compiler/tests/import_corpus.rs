//! The corpus of published Kubernetes and Cilium policies
//! (tests/corpus/kubernetes/): each case is imported with its family's
//! inventory, checked, and every flow of its expected reachability
//! matrix is asked of the reference evaluator. The `.pol` files the import
//! writes are insta snapshots under `snapshots/import/`.
//!
//! Layout: `<family>/pods.json` and `<family>/namespaces.json` (the
//! inventory), `<family>/<case>/policy.yaml` (the published policy, its
//! source in a comment) and `<family>/<case>/reachability.txt`:
//!
//! ```text
//! on tcp/80, udp/81            # the packets the next matrix is about
//!      x/a x/b x/c             # destinations
//! x/a   -   .   X              # from x/a: `.` allowed, `X` denied, `-` not checked
//! deny x/a -> 192.0.2.1 tcp/80 # one flow; peers as in .poltest files
//! ```

#![allow(clippy::panic)] // tests report failures by panicking

use polc::driver::{self, Frontend};
use polc::eval::{self, flowspec, Flow, FlowPeer};
use polc::import::corpus::{expectations, import_case};
use polc::import::{emit, import_texts};
use polc::syntax::SourceMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("readable").map(|e| e.expect("entry").path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

fn name(p: &Path) -> String {
    p.file_name().expect("a name").to_string_lossy().into_owned()
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots/import"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// `ns/pod` is a pod (flows never name prefixes); else as in `.poltest`.
fn peer(text: &str) -> FlowPeer {
    match text.split_once('/') {
        Some((ns, pod)) => FlowPeer::Endpoint(emit::ident(&[ns, pod])),
        None => flowspec::parse_peer(text).unwrap_or_else(|e| panic!("bad peer `{text}`: {e}")),
    }
}

fn allowed(set: &Frontend, from: &str, to: &str, packet: &str) -> bool {
    let (proto, port) = packet.split_once('/').unwrap_or_else(|| panic!("bad packet `{packet}`"));
    let proto = flowspec::parse_proto(proto).expect("a protocol");
    let dst = peer(to);
    let port = flowspec::parse_port(proto, port).expect("a port");
    let port = flowspec::port_number(&set.checked.inventory, &dst, proto, &port).expect("a port number");
    let flow = Flow { src: peer(from), dst, proto, port };
    eval::evaluate(&set.checked, &flow).unwrap_or_else(|e| panic!("{from} -> {to}: {e}")).allowed()
}

#[test]
fn every_corpus_case_imports_and_has_its_published_reachability() {
    let corpus = root().join("tests/corpus/kubernetes");
    let mut cases = 0;
    let mut flows = 0;
    let mut failures = Vec::new();
    for family in subdirs(&corpus) {
        for case in subdirs(&family) {
            cases += 1;
            let label = format!("{}/{}", name(&family), name(&case));
            let origin = PathBuf::from(format!("tests/corpus/kubernetes/{label}/policy.yaml"));
            let (files, warnings) =
                import_case(&family, &name(&case), &origin).unwrap_or_else(|e| panic!("{label}: {e}"));
            // The only warnings: CIDRs that hold pod addresses (KUBERNETES.md).
            assert!(warnings.iter().all(|w| w.message.ends_with("which it will not match")), "{label}: {warnings:?}");
            let mut sources = SourceMap::default();
            for file in &files {
                if file.name != "pods.pol" {
                    let snapshot = format!("{}.{}.{}", name(&family), name(&case), file.name.trim_end_matches(".pol"));
                    settings().bind(|| insta::assert_snapshot!(snapshot, &file.text));
                }
                sources.add(&file.name, file.text.clone());
            }
            let set = driver::check_sources(sources);
            assert!(!set.has_errors(), "{label}: {:?}", set.diagnostics.clone().sorted());
            let text = std::fs::read_to_string(case.join("reachability.txt")).expect("reachability.txt");
            for e in expectations(&text).unwrap_or_else(|e| panic!("{label}/reachability.txt: {e}")) {
                flows += 1;
                if allowed(&set, &e.from, &e.to, &e.packet) != e.allowed {
                    let word = if e.allowed { "allowed" } else { "denied" };
                    let (line, from, to, packet) = (e.line, &e.from, &e.to, &e.packet);
                    failures.push(format!("{label}/reachability.txt:{line}: {from} -> {to} {packet} should be {word}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {flows} flows differ:\n{}", failures.len(), failures.join("\n"));
    assert!(cases >= 30, "the corpus has {cases} cases");
    assert!(flows > 1000, "only {flows} flows checked");
}

#[test]
fn every_family_inventory_imports() {
    let corpus = root().join("tests/corpus/kubernetes");
    for family in subdirs(&corpus) {
        let pods = std::fs::read_to_string(family.join("pods.json")).expect("pods.json");
        let namespaces = std::fs::read_to_string(family.join("namespaces.json")).ok();
        let (files, _) = import_texts(
            &[],
            Some((Path::new("pods.json"), &pods)),
            namespaces.as_deref().map(|ns| (Path::new("namespaces.json"), ns)),
            false,
        )
        .expect("imports");
        settings().bind(|| insta::assert_snapshot!(format!("{}.pods", name(&family)), &files[0].text));
    }
}

/// A corpus case imported with its family's inventory, checked.
fn imported(family: &str, case: &str) -> polc::sema::model::PolicySet {
    let dir = root().join("tests/corpus/kubernetes").join(family);
    let origin = PathBuf::from(format!("{family}/{case}/policy.yaml"));
    let (files, _) = import_case(&dir, case, &origin).unwrap_or_else(|e| panic!("{family}/{case}: {e}"));
    let mut sources = SourceMap::default();
    for file in files {
        sources.add(file.name, file.text);
    }
    let set = driver::check_sources(sources);
    assert!(!set.has_errors());
    set.checked
}

/// `polc diff` between corpus cases that a reviewer would confuse: the
/// reports are snapshots (`snapshots/import/diff.*.snap`).
#[test]
fn diffs_between_corpus_cases() {
    for (family, old, new) in [
        ("e2e", "pod-or-ns-selector", "pod-and-ns-selector"),
        ("e2e", "ports", "end-port"),
        ("e2e", "default-deny-ingress", "default-deny-all"),
        ("cilium", "l3-endpoints", "l4-labels-dependent"),
    ] {
        let report = polc::diff::diff(&imported(family, old), &imported(family, new));
        let text: String = report.changes.iter().map(|c| c.to_text() + "\n").collect();
        let summary = format!("{} now allowed, {} now denied\n", report.widened(), report.narrowed());
        settings().bind(|| insta::assert_snapshot!(format!("diff.{family}.{old}.{new}"), text + &summary));
    }
}

/// The diff's shortcut (skipping endpoints whose rules did not change)
/// loses nothing: on pairs of corpus cases of one family it reports what
/// evaluating every pair reports.
#[test]
fn diff_shortcut_agrees_with_exhaustive_evaluation() {
    let corpus = root().join("tests/corpus/kubernetes");
    let mut changed = 0;
    for family in ["e2e", "cilium"] {
        let cases: Vec<String> = subdirs(&corpus.join(family)).iter().map(|c| name(c)).collect();
        let sets: Vec<_> = cases.iter().map(|c| imported(family, c)).collect();
        for (i, old) in sets.iter().enumerate() {
            let new = &sets[(i + 1) % sets.len()];
            let fast = polc::diff::diff(old, new);
            assert_eq!(
                fast,
                polc::diff::diff_exhaustive(old, new),
                "{family}: {} -> {}",
                cases[i],
                cases[(i + 1) % cases.len()]
            );
            changed += usize::from(!fast.changes.is_empty());
        }
    }
    assert!(changed > 40, "only {changed} pairs of cases differ");
}
