//! The network lab itself: endpoints in namespaces reach each other over
//! TCP, UDP and ICMP (v4 and v6) with no policy loaded, and every namespace
//! is gone after the lab is dropped.

use polc_runtime::netlab::{require_kernel, unique_prefix, EndpointSpec, Lab};
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(String::from)
        .collect()
}

fn spec(name: &str, last: u8) -> EndpointSpec {
    EndpointSpec {
        name: name.into(),
        host_iface: format!("polc-{name}"),
        ipv4: Some(format!("10.200.9.{last}").parse().expect("literal address")),
        ipv6: Some(format!("fd00:200:9::{last}").parse().expect("literal address")),
    }
}

#[test]
fn endpoints_reach_each_other_and_cleanup_is_complete() {
    if !require_kernel("endpoints_reach_each_other_and_cleanup_is_complete") {
        return;
    }
    let prefix = unique_prefix();
    // Generous for what must arrive (returns as soon as it does); the ping
    // that must not waits it out, one second.
    let t = Duration::from_secs(5);
    {
        let mut lab = Lab::new(&prefix).expect("node namespace");
        lab.add_endpoint(spec("a", 1)).expect("endpoint a");
        lab.add_endpoint(spec("b", 2)).expect("endpoint b");
        assert_eq!(namespaces_with(&prefix).len(), 3);

        let b4: IpAddr = "10.200.9.2".parse().expect("literal");
        let b6: IpAddr = "fd00:200:9::2".parse().expect("literal");
        assert!(lab.ping_reaches("a", b4, t).expect("ping v4"), "a pings b over IPv4");
        assert!(lab.ping_reaches("a", b6, t).expect("ping v6"), "a pings b over IPv6");
        assert!(lab.tcp_reaches("a", b4, 8080, t).expect("tcp v4"), "a connects to b:8080");
        assert!(lab.tcp_reaches("a", b6, 8080, t).expect("tcp v6"), "a connects to [b]:8080");
        assert!(lab.udp_reaches("a", b4, 5353, t).expect("udp v4"), "a's datagram reaches b");

        lab.remove_endpoint("b").expect("remove b");
        assert!(!lab.ping_reaches("a", b4, Duration::from_secs(1)).expect("ping v4"), "b is gone");
        assert_eq!(namespaces_with(&prefix).len(), 2);
    }
    assert!(namespaces_with(&prefix).is_empty(), "dropping the lab removes its namespaces");
}
