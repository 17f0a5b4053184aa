//! The `warnings` pass on small policy sets: it warns when a rule provably
//! never decides anything, and stays silent whenever that is not certain.

use polc::driver;

/// The codes `polc check` reports for one file, in source order.
fn codes(text: &str) -> Vec<&'static str> {
    driver::check_text("t.pol", text).diagnostics.sorted().iter().map(|d| d.code.id).collect()
}

/// One policy selecting `{app=web}` with the given egress rules.
fn egress(rules: &str) -> String {
    format!("policy web {{\n  select {{app=web}}\n  egress {{\n{rules}\n  }}\n}}\n")
}

#[test]
fn allow_inside_a_deny_is_shadowed() {
    let cases = [
        // CIDR inside CIDR, port inside range.
        "allow a: to 10.20.0.0/16 on tcp/443\n deny b: to 10.0.0.0/8 on tcp/1-1024",
        // A deny without `on` covers every port; `all` covers every peer.
        "allow a: to {app=db} on tcp/5432\n deny b: to all",
        // Looser selectors select more; `cluster` holds every endpoint and the host.
        "allow a: to {app=db, env=prod}, host on udp/53\n deny b: to {app=db}, cluster on udp/53",
        // `world` holds every CIDR; `any/53` holds tcp/53 and udp/53.
        "allow a: to 203.0.113.0/24 on tcp/53, udp/53\n deny b: to world on any/53",
        // The deny's hole is one the allow excepts too.
        "allow a: to 10.0.0.0/16 except 10.0.1.0/24\n deny b: to 10.0.0.0/8 except 10.0.1.0/24",
        // Order does not matter: deny first.
        "deny b: to {tier in (api, db)} on tcp\n allow a: to {tier=api} on tcp/9000-9010",
    ];
    for rules in cases {
        assert_eq!(codes(&egress(rules)), ["W0001"], "{rules}");
    }
}

#[test]
fn allow_not_certainly_covered_is_not_shadowed() {
    let cases = [
        // Port 1025 is outside the deny.
        "allow a: to 10.20.0.0/16 on tcp/443, tcp/1025\n deny b: to 10.0.0.0/8 on tcp/1-1024",
        // The deny's hole lies inside the allowed prefix.
        "allow a: to 10.0.0.0/16\n deny b: to 10.0.0.0/8 except 10.0.1.0/24",
        // The deny's selector is narrower.
        "allow a: to {app=db}\n deny b: to {app=db, env=prod}",
        // `any/53` does not hold ICMP; a named port's number is unknown.
        "allow a: to world on icmp/8\n deny b: to world on any/1-1024",
        "allow a: to world on tcp/dns\n deny b: to world on tcp/1-1024",
        // `cluster` is not `world`.
        "allow a: to 10.0.0.0/8\n deny b: to cluster",
        // Covered only by two denies together: not reported (not certain from one rule).
        "allow a: to {app=db} on tcp/80, udp/53\n deny b: to {app=db} on tcp/80\n deny c: to {app=db} on udp/53",
    ];
    for rules in cases {
        assert_eq!(codes(&egress(rules)), Vec::<&str>::new(), "{rules}");
    }
}

#[test]
fn deny_in_another_section_or_policy_does_not_shadow() {
    let text = "policy web {\n select {app=web}\n ingress { allow a: from {app=db} on tcp/80 }\n \
                egress { deny b: to all }\n}\n\
                policy other {\n select {app=web}\n ingress { deny c: from all }\n}\n";
    assert_eq!(codes(text), Vec::<&str>::new());
}

#[test]
fn duplicate_rules_compare_as_sets() {
    let rules = "allow a: to {tier=api, env=prod}, host on tcp/80, tcp/443\n \
                 allow b: to host, {env=prod, tier=api} on tcp/443, tcp/80, tcp/80";
    assert_eq!(codes(&egress(rules)), ["W0002"]);
    // Same peers and ports, other action: that is shadowing, not duplication.
    assert_eq!(codes(&egress("allow a: to host on tcp/80\n deny b: to host on tcp/80")), ["W0001"]);
    // Different ports: distinct rules.
    assert_eq!(codes(&egress("allow a: to host on tcp/80\n allow b: to host on tcp/81")), Vec::<&str>::new());
    // A `ports` definition expands to the same set as writing it out.
    let text = format!(
        "ports web = tcp/80, tcp/443\n{}",
        egress("allow a: to host on $web\n allow b: to host on tcp/443, tcp/80")
    );
    assert_eq!(codes(&text), ["W0002"]);
}

#[test]
fn rule_warnings_wait_for_a_valid_set() {
    // `b` loses its invalid CIDR and would look like `a`: no W0002 while there are errors.
    let rules = "allow a: to host on tcp/80\n allow b: to host, 10.0.0.300/8 on tcp/80";
    assert_eq!(codes(&egress(rules)), ["E0005"]);
}

const INVENTORY: &str =
    "endpoint web {\n labels {app=web}\n ipv4 10.0.0.10\n port http = tcp/8080\n port dns = udp/53\n}\n";

#[test]
fn unknown_named_ports_need_an_inventory() {
    let policy = egress("allow a: to {app=web} on tcp/https, udp/dns, tcp/http");
    // Without an inventory, endpoints arrive at run time: no warning.
    assert_eq!(codes(&policy), Vec::<&str>::new());
    let with_inventory = format!("{INVENTORY}{policy}");
    let frontend = driver::check_text("t.pol", &with_inventory);
    let warnings: Vec<_> = frontend.diagnostics.sorted();
    assert_eq!(warnings.iter().map(|d| d.code.id).collect::<Vec<_>>(), ["W0005"]);
    assert!(warnings[0].message.contains("`https`"), "{}", warnings[0].message);
}

#[test]
fn named_port_with_the_wrong_protocol() {
    let text = format!("{INVENTORY}{}", egress("allow a: to {app=web} on tcp/dns, any/dns"));
    let diagnostics = driver::check_text("t.pol", &text).diagnostics.sorted();
    assert_eq!(diagnostics.iter().map(|d| d.code.id).collect::<Vec<_>>(), ["W0005"]);
    assert!(diagnostics[0].message.contains("tcp port named `dns`"), "{}", diagnostics[0].message);
    assert_eq!(diagnostics[0].help.as_deref(), Some("`dns` is named for `udp` only"));
}

#[test]
fn named_port_in_a_shared_definition_is_reported_once() {
    let text = format!(
        "{INVENTORY}ports web = tcp/https\n{}",
        egress("allow a: to {app=web} on $web\n allow b: to host on $web")
    );
    assert_eq!(codes(&text), ["W0005"]);
}
