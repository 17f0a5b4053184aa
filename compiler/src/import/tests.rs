//! The meaning of imported policies, checked through the reference
//! evaluator over the Kubernetes e2e model (namespaces x, y, z with pods
//! a, b, c; tests/corpus/kubernetes/e2e/pods.json). lang-spec/KUBERNETES.md.

#![allow(clippy::panic)] // tests report failures by panicking

use super::*;
use crate::driver::{self, Frontend};
use crate::eval::{self, flowspec, Flow, FlowPeer};
use crate::syntax::SourceMap;

const PODS: &str = include_str!("../../../tests/corpus/kubernetes/e2e/pods.json");
const NAMESPACES: &str = include_str!("../../../tests/corpus/kubernetes/e2e/namespaces.json");

fn run(yaml: &str, allow_partial: bool) -> Result<(Vec<OutputFile>, Vec<Diagnostic>), Vec<Diagnostic>> {
    import_texts(
        &[(Path::new("policy.yaml"), yaml)],
        Some((Path::new("pods.json"), PODS)),
        Some((Path::new("namespaces.json"), NAMESPACES)),
        allow_partial,
    )
}

fn load(files: Vec<OutputFile>) -> Frontend {
    let mut sources = SourceMap::default();
    for file in files {
        sources.add(file.name, file.text);
    }
    let frontend = driver::check_sources(sources);
    let diagnostics = frontend.diagnostics.clone().sorted();
    let rendered = crate::diag::render::render_all_text(&frontend.sources, &diagnostics);
    assert!(!frontend.has_errors(), "imported policy does not check:\n{rendered}");
    frontend
}

fn import(yaml: &str) -> Frontend {
    match run(yaml, false) {
        Ok((files, _)) => load(files),
        Err(errors) => panic!("import failed: {errors:?}"),
    }
}

fn peer(text: &str) -> FlowPeer {
    match text.split_once('/') {
        Some((ns, pod)) if ns.len() == 1 => FlowPeer::Endpoint(format!("{ns}_{pod}")),
        _ => flowspec::parse_peer(text).expect("a peer"),
    }
}

/// Whether the first packet from `from` to `to` (`x/a`, an address or an
/// entity) with `packet` (`tcp/80`, `udp/serve-80-udp`) is allowed.
fn allowed(set: &Frontend, from: &str, to: &str, packet: &str) -> bool {
    let (proto, port) = packet.split_once('/').expect("proto/port");
    let proto = flowspec::parse_proto(proto).expect("a protocol");
    let dst = peer(to);
    let port = flowspec::parse_port(proto, port).expect("a port");
    let port = flowspec::port_number(&set.checked.inventory, &dst, proto, &port).expect("a port number");
    let flow = Flow { src: peer(from), dst, proto, port };
    eval::evaluate(&set.checked, &flow).expect("known peers").allowed()
}

/// Asserts each `(from, to, packet, allowed)`.
fn expect(set: &Frontend, cases: &[(&str, &str, &str, bool)]) {
    for (from, to, packet, want) in cases {
        assert_eq!(allowed(set, from, to, packet), *want, "{from} -> {to} {packet}");
    }
}

fn netpol(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n{spec}"
    )
}

fn cnp(spec: &str) -> String {
    format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n{spec}")
}

#[test]
fn pod_selector_peers_are_limited_to_the_policy_namespace() {
    let set = import(&netpol(
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
    ));
    expect(&set, &[("x/b", "x/a", "tcp/80", true), ("y/b", "x/a", "tcp/80", false), ("x/c", "x/a", "tcp/80", false)]);
    // The subject too: pod=a of namespace x only.
    expect(&set, &[("y/c", "y/a", "tcp/80", true)]);
}

#[test]
fn namespace_selectors_match_namespace_labels() {
    let set =
        import(&netpol("  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n"));
    expect(
        &set,
        &[
            ("y/a", "x/a", "tcp/80", true),
            ("y/c", "x/b", "udp/81", true),
            ("x/b", "x/a", "tcp/80", false),
            ("z/b", "x/c", "tcp/80", false),
        ],
    );
    let by_name = import(&netpol(
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions:\n        - {key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}\n",
    ));
    expect(
        &by_name,
        &[("z/a", "x/a", "tcp/80", true), ("x/b", "x/a", "tcp/80", true), ("y/a", "x/a", "tcp/80", false)],
    );
}

#[test]
fn peers_are_ored_and_one_peers_selectors_are_anded() {
    let or = import(&netpol(
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: b}}\n",
    ));
    expect(
        &or,
        &[
            ("y/c", "x/a", "tcp/80", true),
            ("x/b", "x/a", "tcp/80", true),
            ("z/b", "x/a", "tcp/80", false),
            ("x/c", "x/a", "tcp/80", false),
        ],
    );
    let and = import(&netpol(
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n",
    ));
    expect(
        &and,
        &[
            ("y/b", "x/a", "tcp/80", true),
            ("y/c", "x/a", "tcp/80", false),
            ("x/b", "x/a", "tcp/80", false),
            ("z/b", "x/a", "tcp/80", false),
        ],
    );
}

#[test]
fn an_empty_ingress_rule_allows_everything() {
    let set = import(&netpol("  podSelector: {}\n  ingress:\n  - {}\n"));
    expect(
        &set,
        &[("z/c", "x/a", "sctp/81", true), ("203.0.113.9", "x/b", "udp/53", true), ("host", "x/c", "tcp/1", true)],
    );
}

#[test]
fn policy_types_default_to_ingress_plus_egress_with_egress_rules() {
    // No rules at all: ingress deny-all, egress untouched.
    let ingress_only = import(&netpol("  podSelector: {}\n"));
    expect(&ingress_only, &[("y/a", "x/a", "tcp/80", false), ("x/a", "y/a", "tcp/80", true)]);
    // Egress rules: both directions enforced, ingress with no rule.
    let both =
        import(&netpol("  podSelector: {}\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}\n"));
    expect(&both, &[("x/a", "y/a", "tcp/80", true), ("x/a", "z/a", "tcp/80", false), ("y/a", "x/a", "tcp/80", false)]);
    // An empty list is defaulted like a missing one.
    let empty = import(&netpol("  podSelector: {}\n  policyTypes: []\n"));
    expect(&empty, &[("y/a", "x/a", "tcp/80", false), ("x/a", "y/a", "tcp/80", true)]);
    // Explicit Egress only: ingress is left alone, egress denies all.
    let egress = import(&netpol("  podSelector: {}\n  policyTypes: [Egress]\n"));
    expect(
        &egress,
        &[("y/a", "x/a", "tcp/80", true), ("x/a", "y/a", "tcp/80", false), ("x/a", "x/b", "tcp/80", false)],
    );
}

#[test]
fn ingress_rules_outside_the_policy_types_are_ignored_with_a_warning() {
    let (files, warnings) =
        run(&netpol("  podSelector: {}\n  policyTypes: [Egress]\n  ingress:\n  - {}\n"), false).expect("imports");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let policy = files.iter().find(|f| f.name == "x.p.pol").expect("the policy file");
    assert!(policy.text.contains("# polc: line 10: `ingress` rules are ignored"), "{}", policy.text);
    let set = load(files);
    expect(&set, &[("y/a", "x/a", "tcp/80", true), ("x/a", "y/a", "tcp/80", false)]);
}

#[test]
fn an_omitted_protocol_is_tcp_and_end_port_is_inclusive() {
    let set = import(&netpol(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n      endPort: 81\n    - protocol: UDP\n",
    ));
    expect(
        &set,
        &[
            ("y/a", "x/a", "tcp/80", true),
            ("y/a", "x/a", "tcp/81", true),
            ("y/a", "x/a", "tcp/82", false),
            ("y/a", "x/a", "tcp/79", false),
            ("y/a", "x/a", "udp/5000", true),
            ("y/a", "x/a", "sctp/80", false),
        ],
    );
}

#[test]
fn ip_blocks_match_outside_addresses_minus_their_exceptions() {
    let set = import(&netpol(
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock:\n        cidr: 192.168.0.0/16\n        except: [192.168.1.0/24]\n    - ipBlock: {cidr: 10.0.0.0/8}\n",
    ));
    expect(
        &set,
        &[
            ("x/a", "192.168.2.1", "tcp/443", true),
            ("x/a", "192.168.1.5", "tcp/443", false),
            ("x/a", "10.200.0.1", "udp/53", true),
            // polc, like Cilium, never matches a pod's address with a CIDR (KUBERNETES.md).
            ("x/a", "x/b", "tcp/80", false),
            ("x/a", "10.0.1.2", "tcp/80", false),
        ],
    );
}

#[test]
fn named_ports_resolve_against_the_destination_pod() {
    let set = import(&netpol(
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - port: serve-81-tcp\n  egress:\n  - ports:\n    - {port: serve-80-udp, protocol: UDP}\n",
    ));
    expect(
        &set,
        &[
            ("y/b", "x/a", "tcp/81", true),
            ("y/b", "x/a", "tcp/80", false),
            ("y/b", "x/a", "udp/81", false),
            ("x/a", "y/b", "udp/80", true),
            ("x/a", "y/b", "udp/81", false),
            // A named port never matches outside the cluster.
            ("x/a", "198.51.100.1", "udp/80", false),
        ],
    );
}

#[test]
fn cilium_endpoint_selectors_are_namespaced_unless_they_name_the_namespace() {
    let set = import(&cnp(
        "  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {pod: b}\n    - matchLabels: {k8s:io.kubernetes.pod.namespace: y, any:pod: c}\n",
    ));
    expect(
        &set,
        &[
            ("x/b", "x/a", "tcp/80", true),
            ("y/b", "x/a", "tcp/80", false),
            ("y/c", "x/a", "udp/81", true),
            ("x/c", "x/a", "tcp/80", false),
            ("y/c", "y/a", "tcp/80", true),
        ],
    );
}

#[test]
fn cilium_entities_and_cidrs() {
    let set = import(&cnp(
        "  endpointSelector: {}\n  ingress:\n  - fromEntities: [world]\n  egress:\n  - toEntities: [cluster]\n  - toCIDRSet:\n    - cidr: 198.51.100.0/24\n      except: [198.51.100.128/25]\n  - toCIDR: [203.0.113.7]\n",
    ));
    expect(
        &set,
        &[
            ("203.0.113.1", "x/a", "tcp/80", true),
            ("y/a", "x/a", "tcp/80", false),
            ("x/a", "z/c", "tcp/80", true),
            ("x/a", "host", "tcp/80", true),
            ("x/a", "198.51.100.1", "tcp/80", true),
            ("x/a", "198.51.100.200", "tcp/80", false),
            ("x/a", "203.0.113.7", "udp/53", true),
            ("x/a", "203.0.113.8", "udp/53", false),
        ],
    );
}

#[test]
fn cilium_ports_default_to_any_protocol_and_take_end_port() {
    let set = import(&cnp(
        "  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports:\n      - {port: \"80\", endPort: 81}\n      - {port: \"53\", protocol: UDP}\n",
    ));
    expect(
        &set,
        &[
            ("z/a", "x/a", "tcp/80", true),
            ("z/a", "x/a", "udp/81", true),
            ("z/a", "x/a", "sctp/80", true),
            ("z/a", "x/a", "tcp/82", false),
            ("z/a", "x/a", "udp/53", true),
            ("z/a", "x/a", "tcp/53", false),
            ("203.0.113.1", "x/a", "tcp/80", true),
        ],
    );
}

#[test]
fn cilium_deny_rules_win_over_allows() {
    let set = import(&cnp(
        "  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEntities: [all]\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {pod: b}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n",
    ));
    expect(
        &set,
        &[
            ("x/b", "x/a", "tcp/80", false),
            ("x/b", "x/a", "tcp/81", true),
            ("x/c", "x/a", "tcp/80", true),
            ("y/b", "x/a", "tcp/80", true),
        ],
    );
}

#[test]
fn a_deny_only_cilium_policy_puts_the_direction_in_default_deny() {
    let set = import(&cnp("  endpointSelector: {}\n  egressDeny:\n  - toEntities: [world]\n"));
    expect(
        &set,
        &[("x/a", "198.51.100.1", "tcp/443", false), ("x/a", "x/b", "tcp/80", false), ("y/a", "x/b", "tcp/80", true)],
    );
}

#[test]
fn an_empty_cilium_rule_allows_nothing_but_enforces_default_deny() {
    let (files, _) =
        run(&cnp("  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - {}\n"), false).expect("imports");
    let policy = files.iter().find(|f| f.name == "cnp.x.p.pol").expect("the policy file");
    assert!(policy.text.contains("ingress {\n    # polc: `ingress` rule ingress-1 is empty"), "{}", policy.text);
    let set = load(files);
    expect(&set, &[("x/b", "x/a", "tcp/80", false), ("x/a", "x/b", "tcp/80", true), ("x/c", "x/b", "tcp/80", true)]);
}

#[test]
fn cilium_icmp_rules() {
    let set = import(&cnp(
        "  endpointSelector: {}\n  ingress:\n  - icmps:\n    - fields:\n      - {type: 8, family: IPv4}\n      - {type: EchoRequest, family: IPv6}\n",
    ));
    expect(
        &set,
        &[
            ("y/a", "x/a", "icmp/8", true),
            ("y/a", "x/a", "icmp/0", false),
            ("y/a", "x/a", "icmpv6/128", true),
            ("y/a", "x/a", "tcp/80", false),
        ],
    );
}

#[test]
fn clusterwide_policies_are_not_namespaced() {
    let set = import(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\nspec:\n  endpointSelector: {matchLabels: {pod: b}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {pod: a}}]\n",
    );
    expect(
        &set,
        &[
            ("y/a", "z/b", "tcp/80", true),
            ("x/a", "x/b", "tcp/80", true),
            ("y/c", "z/b", "tcp/80", false),
            ("y/c", "z/c", "tcp/80", true),
        ],
    );
}

#[test]
fn unsupported_fields_are_errors_at_their_position() {
    let yaml = cnp("  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: example.com}]\n    toPorts: [{ports: [{port: \"443\"}]}]\n");
    let errors = run(&yaml, false).expect_err("unsupported");
    assert_eq!((errors[0].line, errors[0].column), (9, 5), "{errors:?}");
    assert!(errors[0].message.contains("`toFQDNs` is not supported"), "{}", errors[0].message);
    assert!(errors[0].to_string().starts_with("policy.yaml:9:5: error: "), "{}", errors[0]);
}

#[test]
fn partial_imports_leave_out_a_rule_rather_than_widen_it() {
    let yaml = cnp("  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: example.com}]\n    toPorts: [{ports: [{port: \"443\"}]}]\n");
    let (files, warnings) = run(&yaml, true).expect("partial import");
    assert_eq!(warnings.len(), 1);
    let text = &files.iter().find(|f| f.name == "cnp.x.p.pol").expect("the policy file").text;
    assert!(text.contains("# polc: line 9: `toFQDNs` is not supported"), "{text}");
    assert!(text.contains("rule egress-1 is left out"), "{text}");
    let set = load(files);
    expect(&set, &[("x/a", "93.184.216.34", "tcp/443", false), ("x/a", "x/b", "tcp/443", false)]);
}

#[test]
fn l7_rules_are_unsupported_and_partially_kept_as_l4() {
    let yaml = cnp(
        "  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: \"80\", protocol: TCP}]\n      rules:\n        http: [{method: GET}]\n",
    );
    let errors = run(&yaml, false).expect_err("unsupported");
    assert_eq!((errors[0].line, errors[0].column), (11, 7));
    let (files, _) = run(&yaml, true).expect("partial import");
    let set = load(files);
    expect(&set, &[("y/a", "x/a", "tcp/80", true), ("y/a", "x/a", "tcp/81", false)]);
}

#[test]
fn lists_json_and_multiple_documents() {
    let json = r#"{"apiVersion": "v1", "kind": "List", "items": [
      {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
       "metadata": {"name": "a", "namespace": "y"}, "spec": {"podSelector": {}}},
      {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
       "metadata": {"name": "b.c", "namespace": "z"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}]}"#;
    let yaml = format!("{}\n---\n{}", netpol("  podSelector: {}\n"), json);
    let (files, _) = run(&yaml, false).expect("imports");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["pods.pol", "x.p.pol", "y.a.pol", "z.b.c.pol"]);
    assert!(files[3].text.contains("policy z_b_c {"), "{}", files[3].text);
    assert!(
        files[3].text.starts_with("# Imported by `polc import` from policy.yaml (line 13): NetworkPolicy z/b.c.\n"),
        "{}",
        files[3].text
    );
    let set = load(files);
    expect(
        &set,
        &[
            ("x/a", "y/a", "tcp/80", false),
            ("z/a", "x/a", "tcp/80", false),
            ("z/a", "y/b", "tcp/80", false),
            ("y/a", "z/b", "tcp/80", true),
        ],
    );
}

#[test]
fn objects_of_other_kinds_are_errors() {
    let errors = run("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", false).expect_err("not a policy");
    assert_eq!((errors[0].line, errors[0].column), (2, 7));
}

#[test]
fn the_inventory_carries_namespace_labels_and_named_ports() {
    let (files, _) = run("", false).expect("imports");
    let pods = &files[0].text;
    assert!(pods.contains("endpoint y_b {\n  labels {pod=b, io.kubernetes.pod.namespace=y, io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=y, io.cilium.k8s.namespace.labels.ns=y, io.cilium.k8s.policy.serviceaccount=default}\n  ipv4 10.0.2.2\n  ipv6 fd00:0:2::2\n  port serve-80-tcp = tcp/80\n"), "{pods}");
}

#[test]
fn pods_without_an_address_or_on_the_host_network_are_left_out_with_a_note() {
    let pods = r#"{"kind": "List", "items": [
      {"kind": "Pod", "metadata": {"name": "p", "namespace": "n"}, "status": {}},
      {"kind": "Pod", "metadata": {"name": "h", "namespace": "n"}, "spec": {"hostNetwork": true}, "status": {"podIP": "10.1.1.1"}},
      {"kind": "Pod", "metadata": {"name": "ok", "namespace": "n", "labels": {"app": "web"}}, "status": {"podIP": "10.1.1.2"}}]}"#;
    let (files, warnings) = import_texts(&[], Some((Path::new("pods.json"), pods)), None, false).expect("imports");
    assert_eq!(warnings.len(), 2);
    let text = &files[0].text;
    assert!(text.contains("# polc: line 2: pod `n/p` has no IP address yet"), "{text}");
    assert!(text.contains("# polc: line 3: pod `n/h` uses the host network"), "{text}");
    assert!(text.contains("endpoint n_ok {\n  labels {app=web, io.kubernetes.pod.namespace=n, io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=n}\n  ipv4 10.1.1.2\n}"), "{text}");
}

#[test]
fn labels_polc_cannot_represent_are_errors() {
    let long = "a".repeat(40);
    let namespaces = format!(
        r#"{{"kind": "List", "items": [{{"kind": "Namespace", "metadata": {{"name": "n", "labels": {{"{long}": "v"}}}}}}]}}"#
    );
    let pods = r#"{"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p", "namespace": "n"}, "status": {"podIP": "10.1.1.1"}}]}"#;
    let errors =
        import_texts(&[], Some((Path::new("pods.json"), pods)), Some((Path::new("ns.json"), &namespaces)), false)
            .expect_err("too long");
    assert!(errors[0].message.contains("which is invalid"), "{}", errors[0].message);
    assert_eq!(errors[0].line, 1);
}

#[test]
fn every_unsupported_field_and_every_bad_object_is_reported_in_one_run() {
    let yaml = format!(
        "{}\n---\n{}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n",
        cnp("  endpointSelector: {}\n  egress:\n  - toFQDNs: [{matchName: example.com}]\n  - toServices: [{k8sService: {serviceName: s}}]\n"),
        netpol("  podSelector: {}\n")
    );
    let errors = run(&yaml, false).expect_err("unsupported");
    let found: Vec<(usize, &str)> =
        errors.iter().map(|e| (e.line, e.message.split(':').next().unwrap_or(""))).collect();
    assert_eq!(
        found,
        [
            (9, "`toFQDNs` is not supported"),
            (10, "`toServices` is not supported"),
            (23, "`v1` `ConfigMap` is not a policy polc imports")
        ]
    );
}

#[test]
fn cidrs_that_hold_pod_addresses_are_warned_about() {
    let (_, warnings) = run(
        &netpol("  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.1.0/24]}\n    - ipBlock: {cidr: 192.0.2.0/24}\n"),
        false,
    )
    .expect("imports");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!((warnings[0].line, warnings[0].column), (10, 23));
    assert_eq!(
        warnings[0].message,
        "`10.0.0.0/8` holds the addresses of 6 imported pods (`y/a`, ...), which it will not match"
    );
}

#[test]
fn invalid_ports_are_errors_at_the_port() {
    for (ports, message) in [
        ("    - port: 0\n", "port 0 is not a port"),
        ("    - {port: 90, endPort: 80}\n", "`endPort` 80 is below `port` 90"),
        ("    - {port: http, endPort: 80}\n", "`endPort` needs a numeric `port`"),
        ("    - {port: 80, protocol: ICMP}\n", "unknown protocol `ICMP`"),
    ] {
        let errors =
            run(&netpol(&format!("  podSelector: {{}}\n  ingress:\n  - ports:\n{ports}")), false).expect_err(message);
        assert_eq!(errors[0].line, 10, "{errors:?}");
        assert!(errors[0].message.starts_with(message), "{errors:?}");
    }
}

#[test]
fn a_partial_requirement_keeps_the_rules_other_peers() {
    let yaml = cnp(
        "  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {pod: b}}]\n    fromRequires: [{matchLabels: {env: prod}}]\n",
    );
    assert!(run(&yaml, false).is_err());
    let (files, warnings) = run(&yaml, true).expect("partial import");
    assert_eq!(warnings.len(), 1);
    let text = &files.iter().find(|f| f.name == "cnp.x.p.pol").expect("the policy file").text;
    assert!(text.contains("`fromRequires` is not supported: polc has no peer requirements; the rule applies without it\n    allow ingress-1: from {io.kubernetes.pod.namespace=x, pod=b}\n"), "{text}");
    expect(&load(files), &[("x/b", "x/a", "tcp/80", true), ("x/c", "x/a", "tcp/80", false)]);
}

#[test]
fn two_objects_written_to_one_file_are_an_error() {
    let text = netpol("  podSelector: {}\n");
    let errors = import_texts(&[(Path::new("a.yaml"), &text), (Path::new("b.yaml"), &text)], None, None, false)
        .expect_err("clash");
    assert_eq!(
        errors[0].to_string(),
        "b.yaml: error: two objects are both imported as `x.p.pol` (the other is from `a.yaml`)"
    );
}
