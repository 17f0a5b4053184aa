//! `polc build` benchmark: 1,000 endpoints in 3 code shapes (ingress
//! enforced; both directions enforced; nothing enforced), each with its own
//! tables. Measures a cold build (empty cache: clang must run 3 times), a
//! rebuild without change, and `--per-endpoint-compile` on the first 100
//! endpoints for the ratio. Needs clang.
//!
//! Run: `cargo bench -p polc --bench build` (release profile). Figures go in
//! BENCHMARKS.md.

#![allow(clippy::panic)] // a benchmark reports failures by panicking

use polc::codegen::bundle::{build_bundle, BundleOptions};
use polc::ir::{Decision, DirectionTable, EndpointPolicy, Identity, L4Table, PeerKey, PortEntry, Resolved};
use polc::sema::model::{EndpointDef, RuleId};
use polc::syntax::ast::Action;
use std::collections::BTreeMap;
use std::time::Instant;

const ENDPOINTS: u32 = 1000;
const PER_ENDPOINT_SAMPLE: usize = 100;

fn table(seed: u32) -> DirectionTable {
    let mut tables = BTreeMap::new();
    for peer in 0..5 {
        let mut l4 = L4Table::default();
        let port = 1000 + ((seed * 7 + peer) % 50) as u16 * 10;
        let decision =
            Decision { action: if peer == 0 { Action::Deny } else { Action::Allow }, rule: RuleId(1 + peer) };
        l4.protocols.insert(6, vec![PortEntry { low: port, high: port + 5, decision }]);
        tables.insert(PeerKey::Identity(Identity(Identity::FIRST_ENDPOINT + peer + seed % 20)), l4);
    }
    DirectionTable { enforced: true, enforced_by: vec!["bench".into()], tables }
}

fn workload() -> (Resolved, Vec<EndpointDef>) {
    let mut endpoints = Vec::new();
    let mut defs = Vec::new();
    for e in 0..ENDPOINTS {
        let (ingress, egress) = match e % 3 {
            0 => (table(e), DirectionTable::default()),
            1 => (table(e), table(e + 1)),
            _ => (DirectionTable::default(), DirectionTable::default()),
        };
        let name = format!("ep{e}");
        endpoints.push(EndpointPolicy {
            name: name.clone(),
            identity: Identity(Identity::FIRST_ENDPOINT + e),
            ingress,
            egress,
        });
        defs.push(EndpointDef {
            name,
            labels: BTreeMap::new(),
            ipv4: Some(std::net::Ipv4Addr::from(0x0a00_0000 + e)),
            ipv6: None,
            mac: None,
            iface: None,
            netns: None,
            named_ports: BTreeMap::new(),
            span: polc::syntax::Span::default(),
        });
    }
    (Resolved { endpoints, ..Resolved::default() }, defs)
}

fn main() {
    let (resolved, defs) = workload();
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let options = BundleOptions { jobs: 2, ..BundleOptions::default() };

    let start = Instant::now();
    let cold = build_bundle(&resolved, &defs, out.path(), &options).unwrap_or_else(|e| panic!("{e}"));
    let cold_time = start.elapsed();
    let start = Instant::now();
    let warm = build_bundle(&resolved, &defs, out.path(), &options).unwrap_or_else(|e| panic!("{e}"));
    let warm_time = start.elapsed();
    println!(
        "cold build, {} endpoints: {:.2} s, {} objects, clang ran {} times",
        cold.endpoints,
        cold_time.as_secs_f64(),
        cold.objects,
        cold.clang_runs
    );
    println!("rebuild without change: {:.3} s, clang ran {} times", warm_time.as_secs_f64(), warm.clang_runs);

    let sample = Resolved { endpoints: resolved.endpoints[..PER_ENDPOINT_SAMPLE].to_vec(), ..Resolved::default() };
    let out2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let per_endpoint = BundleOptions { per_endpoint_compile: true, ..options };
    let start = Instant::now();
    let report = build_bundle(&sample, &defs, out2.path(), &per_endpoint).unwrap_or_else(|e| panic!("{e}"));
    let sample_time = start.elapsed();
    let extrapolated = sample_time.as_secs_f64() * f64::from(ENDPOINTS) / PER_ENDPOINT_SAMPLE as f64;
    println!(
        "--per-endpoint-compile, {} endpoints: {:.2} s ({} clang runs); for {ENDPOINTS}: ~{extrapolated:.0} s, {:.0}x the shared build",
        report.endpoints,
        sample_time.as_secs_f64(),
        report.clang_runs,
        extrapolated / cold_time.as_secs_f64()
    );
}
