//! Invariants of the reference evaluator over random policy sets,
//! inventories and flows (the generator is `common::testgen`).

mod common;

use common::testgen::{direction_queries, scenario, GenPolicy, GenRule, Scenario};
use polc::eval::flowspec::parse_peer;
use polc::eval::{evaluate, evaluate_direction, Evaluation, Flow, Peer, SideVerdict};
use polc::sema::model::PolicySet;
use polc::syntax::ast::{Action, Direction};
use proptest::prelude::*;

fn eval<'a>(set: &'a PolicySet, flow: &Flow) -> Evaluation<'a> {
    evaluate(set, flow).expect("generated flows name existing endpoints")
}

/// Verdict and deciding rules as (policy, rule) names, comparable across
/// policy sets whose rule ids differ.
fn outcome(e: &Evaluation<'_>) -> (Action, Vec<(String, String)>) {
    (e.verdict(), e.deciding_rules().iter().map(|r| (r.policy.clone(), r.name.clone())).collect())
}

fn catch_all(name: &str, ingress: Option<GenRule>, egress: Option<GenRule>) -> GenPolicy {
    GenPolicy {
        name: name.into(),
        selector: "{}".into(),
        ingress: ingress.map(|r| vec![r]),
        egress: egress.map(|r| vec![r]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The verdict is the conjunction of the policed sides, and each side's
    /// answer is consistent with the policies that select its endpoint.
    #[test]
    fn sides_are_consistent(s in scenario()) {
        let frontend = s.check();
        let set = &frontend.checked;
        for flow in s.flows() {
            let e = eval(set, &flow);
            prop_assert_eq!(e.allowed(), e.sides().all(|side| side.verdict.allows()));
            prop_assert_eq!(e.egress.is_some(), e.src.endpoint().is_some());
            prop_assert_eq!(e.ingress.is_some(), e.dst.endpoint().is_some());
            for side in e.sides() {
                let enforcing: Vec<&str> = set
                    .policies
                    .iter()
                    .filter(|p| p.selector.matches(&side.endpoint.labels) && p.section(side.direction).is_some())
                    .map(|p| p.name.as_str())
                    .collect();
                match &side.verdict {
                    SideVerdict::NotEnforced => prop_assert!(enforcing.is_empty()),
                    SideVerdict::DefaultDeny { enforced_by } => {
                        let names: Vec<&str> = enforced_by.iter().map(|p| p.name.as_str()).collect();
                        prop_assert_eq!(names, enforcing);
                    }
                    SideVerdict::Allowed { rule } | SideVerdict::Denied { rule } => {
                        let model = set.rule(rule.id).expect("the deciding rule exists");
                        prop_assert_eq!(model.direction, side.direction);
                        prop_assert_eq!(model.action, rule.action);
                        prop_assert_eq!(side.verdict.allows(), rule.action == Action::Allow);
                        prop_assert!(enforcing.contains(&model.policy.as_str()));
                    }
                }
            }
        }
    }

    /// Without policies, every flow is allowed and no rule decides.
    #[test]
    fn no_policies_allow_everything(s in scenario()) {
        let open = Scenario { policies: Vec::new(), ..s };
        let frontend = open.check();
        for flow in open.flows() {
            let e = eval(&frontend.checked, &flow);
            prop_assert!(e.allowed());
            prop_assert!(e.sides().all(|side| side.verdict == SideVerdict::NotEnforced));
        }
    }

    /// A deny of everything on every endpoint's ingress denies every flow
    /// into an endpoint by a deny rule; other flows are unchanged.
    #[test]
    fn a_catch_all_deny_denies_every_flow_into_an_endpoint(s in scenario()) {
        let before = s.check();
        let deny = GenRule::new(Action::Deny, "everything", &["all"], &[]);
        let walled = s.with_policy(catch_all("zz-deny", Some(deny), None));
        let after = walled.check();
        for flow in s.flows() {
            let old = eval(&before.checked, &flow);
            let new = eval(&after.checked, &flow);
            match &new.ingress {
                Some(side) => {
                    prop_assert!(!new.allowed());
                    prop_assert!(matches!(side.verdict, SideVerdict::Denied { .. }), "{:?}", side.verdict);
                }
                None => prop_assert_eq!(outcome(&old), outcome(&new)),
            }
        }
    }

    /// An allow of everything, after every other rule, allows what no deny
    /// rule denies; sides already allowed keep their (lower-id) rule.
    #[test]
    fn a_catch_all_allow_yields_to_every_deny(s in scenario()) {
        let before = s.check();
        let allow_in = GenRule::new(Action::Allow, "in-everything", &["all"], &[]);
        let allow_out = GenRule::new(Action::Allow, "out-everything", &["all"], &[]);
        let opened = s.with_policy(catch_all("zz-allow", Some(allow_in), Some(allow_out)));
        let after = opened.check();
        for flow in s.flows() {
            let old = eval(&before.checked, &flow);
            let new = eval(&after.checked, &flow);
            for (old_side, new_side) in old.sides().zip(new.sides()) {
                match &old_side.verdict {
                    SideVerdict::Denied { rule } | SideVerdict::Allowed { rule } => {
                        prop_assert_eq!(new_side.verdict.rule().map(|r| &r.name), Some(&rule.name));
                    }
                    SideVerdict::NotEnforced | SideVerdict::DefaultDeny { .. } => {
                        prop_assert_eq!(new_side.verdict.rule().map(|r| r.policy.as_str()), Some("zz-allow"));
                    }
                }
            }
            let denied_by_rule = old.sides().any(|side| matches!(side.verdict, SideVerdict::Denied { .. }));
            prop_assert_eq!(new.allowed(), !denied_by_rule);
        }
    }

    /// A deciding rule matches the flow on its own: alone in a policy that
    /// selects every endpoint, it decides the same side the same way.
    #[test]
    fn the_deciding_rule_matches_on_its_own(s in scenario()) {
        let frontend = s.check();
        for flow in s.flows() {
            let e = eval(&frontend.checked, &flow);
            for side in e.sides() {
                let Some(rule) = side.verdict.rule() else { continue };
                let policy = s.policies.iter().find(|p| p.name == rule.policy).expect("the rule's policy");
                let section = match side.direction {
                    Direction::Ingress => &policy.ingress,
                    Direction::Egress => &policy.egress,
                };
                let gen_rule = section.iter().flatten().find(|r| r.name == rule.name).expect("the rule").clone();
                let (ingress, egress) = match side.direction {
                    Direction::Ingress => (Some(gen_rule), None),
                    Direction::Egress => (None, Some(gen_rule)),
                };
                let alone = Scenario { policies: vec![catch_all("alone", ingress, egress)], ..s.clone() };
                let alone_frontend = alone.check();
                let again = eval(&alone_frontend.checked, &flow);
                let again_side = again.sides().find(|x| x.direction == side.direction).expect("the same side");
                prop_assert_eq!(again_side.verdict.rule().map(|r| (&r.name, r.action)), Some((&rule.name, rule.action)));
            }
        }
    }

    /// Naming an endpoint or giving its address is the same flow.
    #[test]
    fn addresses_resolve_to_their_endpoints(s in scenario()) {
        let frontend = s.check();
        let set = &frontend.checked;
        for flow in s.flows() {
            let by_address = |peer: &polc::eval::FlowPeer| match peer {
                polc::eval::FlowPeer::Endpoint(name) => {
                    let e = set.inventory.endpoint(name).expect("exists");
                    let addr = e.ipv4.map(|a| a.to_string()).or(e.ipv6.map(|a| a.to_string())).expect("an address");
                    parse_peer(&addr).expect("an address parses")
                }
                other => other.clone(),
            };
            let rewritten = Flow { src: by_address(&flow.src), dst: by_address(&flow.dst), ..flow.clone() };
            prop_assert_eq!(outcome(&eval(set, &flow)), outcome(&eval(set, &rewritten)));
        }
    }

    /// Tables are per peer identity: a peer endpoint with the same labels as
    /// another gets the same answer from every endpoint, in both directions.
    #[test]
    fn answers_depend_on_the_peer_identity_only(s in scenario()) {
        let frontend = s.check();
        let set = &frontend.checked;
        for q in direction_queries(set) {
            let Peer::Endpoint(peer) = q.peer else { continue };
            for twin in set.inventory.endpoints.iter().filter(|t| t.labels == peer.labels && t.name != peer.name) {
                let answer = evaluate_direction(set, q.endpoint, q.direction, &Peer::Endpoint(twin), q.proto, q.port);
                prop_assert_eq!(&answer, &q.expected, "{} {:?} from {} vs {}", q.endpoint.name, q.direction, peer.name, twin.name);
            }
        }
    }
}
