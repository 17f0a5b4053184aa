//! The reference evaluator and the resolved tables must agree.
//!
//! Two independent readings of SEMANTICS.md: `polc::eval` evaluates a flow
//! directly from the checked policy; `polc::resolve` builds the tables the
//! datapath holds, which `DirectionTable::lookup` reads. For random policy
//! sets and inventories (tests/common/testgen.rs), every endpoint,
//! direction, peer (endpoints, their addresses, node and outside addresses,
//! reserved entities) and packet must get the same verdict and the same
//! deciding rule from both. The peer's identity comes from the ipcache, as
//! in the datapath.

mod common;

use common::testgen::{direction_queries, identity_of, scenario};
use polc::resolve::{resolve, IdentityLock, ResolveConfig};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn evaluator_and_tables_agree(s in scenario()) {
        let frontend = s.check();
        prop_assume!(!frontend.has_errors());
        let set = &frontend.checked;
        let (resolved, _) = resolve(set, &IdentityLock::default(), &ResolveConfig::default())
            .map_err(|e| TestCaseError::fail(format!("resolution failed: {e}")))?;
        let queries = direction_queries(set);
        prop_assert!(!queries.is_empty());
        for q in &queries {
            let endpoint = resolved.endpoint(&q.endpoint.name).expect("resolved endpoint");
            let table = match q.direction {
                polc::syntax::ast::Direction::Ingress => &endpoint.ingress,
                polc::syntax::ast::Direction::Egress => &endpoint.egress,
            };
            let peer = identity_of(&resolved, &q.peer);
            let from_tables = table.lookup(peer, q.proto.0, q.port);
            prop_assert_eq!(
                q.expected.to_table_verdict(),
                from_tables,
                "{} {:?} peer {:?} (identity {}) proto {} port {}\n{}",
                q.endpoint.name, q.direction, q.peer, peer.0, q.proto.0, q.port, s.source()
            );
        }
    }
}

/// The examples too, exhaustively over their endpoints and the pool of packets.
#[test]
fn examples_agree() {
    for example in ["l3-l4-rule", "deny-demo", "three-tier"] {
        let (frontend, resolved) = common::resolved_example(example);
        let set = &frontend.checked;
        let mut compared = 0;
        for q in direction_queries(set) {
            let endpoint = resolved.endpoint(&q.endpoint.name).expect("resolved endpoint");
            let table = match q.direction {
                polc::syntax::ast::Direction::Ingress => &endpoint.ingress,
                polc::syntax::ast::Direction::Egress => &endpoint.egress,
            };
            let peer = identity_of(&resolved, &q.peer);
            assert_eq!(q.expected.to_table_verdict(), table.lookup(peer, q.proto.0, q.port), "{example}: {q:?}");
            compared += 1;
        }
        assert!(compared > 100, "{example}: only {compared} comparisons");
    }
}
