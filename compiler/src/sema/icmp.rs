//! ICMP and ICMPv6 message type names (RFC 792, RFC 4443, RFC 4861).

use crate::sema::model::Proto;

const ICMP_TYPES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp", 13),
    ("timestamp-reply", 14),
];

const ICMPV6_TYPES: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("router-solicitation", 133),
    ("router-advertisement", 134),
    ("neighbor-solicitation", 135),
    ("neighbor-advertisement", 136),
    ("redirect", 137),
];

fn table(proto: Proto) -> &'static [(&'static str, u8)] {
    if proto == Proto::Icmpv6 {
        ICMPV6_TYPES
    } else {
        ICMP_TYPES
    }
}

/// The type number of a name, for `icmp` or `icmpv6`.
pub fn type_by_name(proto: Proto, name: &str) -> Option<u8> {
    table(proto).iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The name of a type number, if it has one.
pub fn type_name(proto: Proto, number: u8) -> Option<&'static str> {
    table(proto).iter().find(|(_, t)| *t == number).map(|(n, _)| *n)
}

/// Whether `name` names an ICMP or ICMPv6 type (to explain `tcp/echo-request`).
pub fn is_type_name(name: &str) -> bool {
    ICMP_TYPES.iter().chain(ICMPV6_TYPES).any(|(n, _)| *n == name)
}

/// All names of one protocol, for help lines.
pub fn names(proto: Proto) -> Vec<&'static str> {
    table(proto).iter().map(|(n, _)| *n).collect()
}
