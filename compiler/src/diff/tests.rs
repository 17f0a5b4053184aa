use super::*;
use crate::driver::check_text;

fn set(text: &str) -> PolicySet {
    let frontend = check_text("p.pol", text);
    assert!(!frontend.has_errors(), "{:?}", frontend.diagnostics.clone().sorted());
    frontend.checked
}

const INVENTORY: &str = "endpoint a { labels {app=a}  ipv4 10.0.0.1  port http = tcp/8080 }\nendpoint b { labels {app=b}  ipv4 10.0.0.2 }\n";

fn lines(report: &Report) -> Vec<String> {
    report.changes.iter().map(Change::to_text).collect()
}

#[test]
fn identical_sets_have_no_changes() {
    let text = format!("{INVENTORY}policy p {{ select {{app=a}} ingress {{ allow r: from {{app=b}} on tcp/80 }} }}");
    let report = diff(&set(&text), &set(&text));
    assert_eq!(report.changes, []);
    assert!(report.compared > 0);
}

#[test]
fn a_widened_port_range_is_reported_exactly() {
    let old = format!("{INVENTORY}policy p {{ select {{app=a}} ingress {{ allow r: from {{app=b}} on tcp/80 }} }}");
    let new = format!("{INVENTORY}policy p {{ select {{app=a}} ingress {{ allow r: from {{app=b}} on tcp/80-90 }} }}");
    let report = diff(&set(&old), &set(&new));
    assert_eq!(lines(&report), ["b -> a tcp/81-90: denied (default-deny) -> allowed by p.r"]);
    assert_eq!((report.widened(), report.narrowed()), (1, 0));
}

#[test]
fn a_new_deny_narrows_and_names_the_rule() {
    let old = format!("{INVENTORY}policy p {{ select {{app=a}} ingress {{ allow r: from all }} }}");
    let new = format!(
        "{INVENTORY}policy p {{ select {{app=a}} ingress {{ allow r: from all\n deny d: from 192.0.2.0/24 except 192.0.2.128/25 on udp }} }}"
    );
    let report = diff(&set(&old), &set(&new));
    assert_eq!(lines(&report), ["192.0.2.0 -> a udp/0-65535: allowed by p.r -> denied by p.d"]);
}

#[test]
fn named_ports_and_icmp_types_are_cut_exactly() {
    let old = format!("{INVENTORY}policy p {{ select {{app=b}} egress {{ allow r: to {{app=a}} on tcp/80 }} }}");
    let new = format!(
        "{INVENTORY}policy p {{ select {{app=b}} egress {{ allow r: to {{app=a}} on tcp/http, icmp/echo-request }} }}"
    );
    let report = diff(&set(&old), &set(&new));
    assert_eq!(
        lines(&report),
        [
            "b -> a tcp/80: allowed by p.r -> denied (default-deny)",
            "b -> a tcp/8080: denied (default-deny) -> allowed by p.r",
            "b -> a icmp/8: denied (default-deny) -> allowed by p.r",
        ]
    );
}

#[test]
fn an_endpoint_only_one_side_has_is_evaluated_on_both() {
    let old = format!("{INVENTORY}policy p {{ select {{app=a}} ingress {{ allow r: from {{app=b}} }} }}");
    let new = format!("{old}\nendpoint c {{ labels {{app=b}}  ipv4 10.0.0.3 }}");
    let report = diff(&set(&old), &set(&new));
    assert_eq!(report.only_new, ["c"]);
    assert_eq!(report.changes, [], "c has b's labels: the same access on both sides");
}

#[test]
fn other_protocols_and_world_are_peers() {
    let old = format!("{INVENTORY}policy p {{ select {{app=a}} egress {{ allow r: to world on tcp }} }}");
    let new = format!("{INVENTORY}policy p {{ select {{app=a}} egress {{ allow r: to world }} }}");
    let report = diff(&set(&old), &set(&new));
    let text = lines(&report);
    assert!(text.contains(&"a -> world other: denied (default-deny) -> allowed by p.r".to_string()), "{text:#?}");
    assert!(
        text.contains(&"a -> 0.0.0.0 udp/0-65535: denied (default-deny) -> allowed by p.r".to_string()),
        "{text:#?}"
    );
    assert!(!text.iter().any(|l| l.contains(" tcp/")), "{text:#?}");
}

#[test]
fn endpoints_with_equal_labels_each_get_their_changes() {
    let twins = format!("{INVENTORY}endpoint c {{ labels {{app=b}}  ipv4 10.0.0.3 }}\n");
    let old = format!("{twins}policy p {{ select {{app=a}} ingress {{ allow r: from {{app=b}} on tcp/80 }} }}");
    let new = format!("{twins}policy p {{ select {{app=a}} ingress {{ allow r: from {{app=b}} on tcp/81 }} }}");
    let report = diff(&set(&old), &set(&new));
    assert_eq!(
        lines(&report),
        [
            "b -> a tcp/80: allowed by p.r -> denied (default-deny)",
            "b -> a tcp/81: denied (default-deny) -> allowed by p.r",
            "c -> a tcp/80: allowed by p.r -> denied (default-deny)",
            "c -> a tcp/81: denied (default-deny) -> allowed by p.r",
        ]
    );
}

#[test]
fn a_pair_whose_every_packet_changes_is_one_line() {
    let old = format!("{INVENTORY}policy p {{ select {{app=a}} ingress {{ allow r: from {{app=b}} }} }}");
    let new = format!("{INVENTORY}policy p {{ select {{app=a}} ingress {{}} }}");
    let report = diff(&set(&old), &set(&new));
    assert_eq!(lines(&report), ["b -> a any: allowed by p.r -> denied (default-deny)"]);
}
