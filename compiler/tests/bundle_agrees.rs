//! The built tables, read as the kernel reads them, agree with the
//! reference evaluator.
//!
//! `polc trace --from-bundle` answers from a bundle's encoded policy entries
//! through `codegen::lookup_model::lookup_encoded` (a model of the C lookup
//! in templates/bpf/policy.h). For every example and random policy sets
//! (tests/common/testgen.rs), the entries a build writes (the same planning
//! `polc build` runs, without clang) must give every endpoint, direction,
//! peer and packet of the pools the evaluator's verdict and deciding rule;
//! and the whole trace (the manifest as JSON, peers resolved from its
//! ipcache and endpoints) must agree with `polc::eval::evaluate` on every
//! generated flow.

#![allow(clippy::panic)] // tests report failures by panicking

mod common;

use common::testgen::{direction_queries, identity_of, scenario, Scenario};
use polc::codegen::bundle::{plan_endpoints, BundleOptions, Manifest};
use polc::codegen::bundle_trace::{encoded_verdict, BuiltBundle};
use polc::eval::evaluate;
use polc::ir::Resolved;
use polc::resolve::{resolve, IdentityLock, ResolveConfig};
use polc::sema::model::PolicySet;
use polc::syntax::ast::Direction;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// What `polc build` writes to manifest.json for `resolved` (objects aside).
fn manifest_json(set: &PolicySet, resolved: &Resolved) -> Result<String, String> {
    let planned = plan_endpoints(resolved, &set.inventory.endpoints, &BundleOptions::default())
        .map_err(|e| format!("planning failed: {e}"))?;
    let endpoints = planned.into_iter().map(|p| p.manifest).collect();
    Ok(Manifest::new(resolved, false, BTreeMap::new(), endpoints).to_json())
}

/// Compares every pool query and every flow; the number of comparisons.
fn compare(set: &PolicySet, resolved: &Resolved, context: &dyn Fn() -> String) -> Result<usize, String> {
    let bundle = BuiltBundle::from_json(&manifest_json(set, resolved)?)
        .map_err(|e| format!("the manifest does not read back: {e:?}"))?;
    bundle.built_from(resolved, &set.inventory.endpoints).map_err(|e| format!("not built from itself: {e}"))?;
    let mut compared = 0;
    for q in direction_queries(set) {
        let endpoint = bundle.endpoint(&q.endpoint.name).ok_or("every endpoint is built")?;
        let direction = match q.direction {
            Direction::Ingress => &endpoint.ingress,
            Direction::Egress => &endpoint.egress,
        };
        let peer = identity_of(resolved, &q.peer);
        let built = encoded_verdict(direction.enforced, &direction.entries, peer.0, q.proto.0, q.port);
        if built != q.expected.to_table_verdict() {
            return Err(format!(
                "{} {:?} peer {:?} (identity {}) proto {} port {}: built {built:?}, reference {:?}\n{}",
                q.endpoint.name,
                q.direction,
                q.peer,
                peer.0,
                q.proto.0,
                q.port,
                q.expected,
                context()
            ));
        }
        compared += 1;
    }
    Ok(compared)
}

fn compare_flows(set: &PolicySet, resolved: &Resolved, s: &Scenario) -> Result<(), String> {
    let bundle = BuiltBundle::from_json(&manifest_json(set, resolved)?).map_err(|e| format!("{e:?}"))?;
    for flow in s.flows() {
        let reference = evaluate(set, &flow).map_err(|e| e.to_string())?;
        let answer = bundle.answer(&flow).map_err(|e| e.to_string())?;
        let disagreements = answer.disagreements(&reference);
        if !disagreements.is_empty() || answer.verdict() != reference.verdict() {
            return Err(format!("{flow:?}: {disagreements:?}\n{}", s.source()));
        }
        if answer.to_evaluation(set, &reference).as_ref() != Some(&reference) {
            return Err(format!("{flow:?}: named differently from the reference\n{}", s.source()));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn built_entries_agree_with_the_evaluator(s in scenario()) {
        let frontend = s.check();
        let set = &frontend.checked;
        let (resolved, _) = resolve(set, &IdentityLock::default(), &ResolveConfig::default())
            .map_err(|e| TestCaseError::fail(format!("resolution failed: {e}")))?;
        let compared = compare(set, &resolved, &|| s.source()).map_err(TestCaseError::fail)?;
        prop_assert!(compared > 0);
        compare_flows(set, &resolved, &s).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn every_example_agrees() {
    for example in ["l3-l4-rule", "deny-demo", "three-tier"] {
        let (frontend, resolved) = common::resolved_example(example);
        let set = &frontend.checked;
        let compared = compare(set, &resolved, &|| example.to_string()).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(compared > 100, "{example}: only {compared} comparisons");
    }
}
