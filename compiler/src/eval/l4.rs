//! Which packets a rule's `on` clause names (SEMANTICS.md, "Which packets a
//! rule names"): protocols, ports and ranges, ICMP types, named ports.

use crate::sema::icmp;
use crate::sema::model::{EndpointDef, L4Match, PortMatch, Proto};
use serde::Serialize;
use std::fmt;

/// An IP protocol number: one of the five polc knows, or any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IpProto(pub u8);

impl IpProto {
    pub fn known(self) -> Option<Proto> {
        Proto::ALL.into_iter().find(|p| p.number() == self.0)
    }

    /// Whether the packet carries a port (TCP, UDP, SCTP).
    pub fn has_ports(self) -> bool {
        self.known().is_some_and(|p| Proto::WITH_PORTS.contains(&p))
    }
}

impl From<Proto> for IpProto {
    fn from(p: Proto) -> IpProto {
        IpProto(p.number())
    }
}

impl fmt::Display for IpProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known() {
            Some(p) => f.write_str(p.name()),
            None => write!(f, "proto {}", self.0),
        }
    }
}

/// The packet's protocol and port as a person writes it: `tcp/80`,
/// `icmp/echo-request`, `proto 47`.
pub fn describe(proto: IpProto, port: u16) -> String {
    match proto.known() {
        Some(p) if p.is_icmp() => match u8::try_from(port).ok().and_then(|t| icmp::type_name(p, t)) {
            Some(name) => format!("{}/{name}", p.name()),
            None => format!("{}/{port}", p.name()),
        },
        Some(p) => format!("{}/{port}", p.name()),
        None => proto.to_string(),
    }
}

/// Whether one item of an `on` clause names the packet. `destinations` are
/// the endpoints whose named ports apply (see [`named_port_matches`]).
pub fn matches(m: &L4Match, proto: IpProto, port: u16, destinations: &[&EndpointDef]) -> bool {
    let proto_ok = match m.proto {
        Some(p) => IpProto::from(p) == proto,
        // `any/N` means TCP, UDP or SCTP with that port; `any` everything.
        None => matches!(m.ports, PortMatch::All) || proto.has_ports(),
    };
    proto_ok
        && match &m.ports {
            PortMatch::All => true,
            PortMatch::Range { low, high } => (*low..=*high).contains(&port),
            PortMatch::Named(name) => named_port_matches(name, m.proto, proto, port, destinations),
        }
}

/// A named port matches the port a destination endpoint gives that name,
/// with that protocol: the rule's protocol if it has one (`tcp/http` does
/// not match a `port http = udp/80`), else the name's (`any/http`).
/// Destinations outside the cluster have no named ports.
pub fn named_port_matches(
    name: &str,
    rule_proto: Option<Proto>,
    proto: IpProto,
    port: u16,
    destinations: &[&EndpointDef],
) -> bool {
    destinations.iter().any(|d| {
        d.named_ports.get(name).is_some_and(|&(named_proto, named_port)| {
            rule_proto.is_none_or(|p| p == named_proto) && IpProto::from(named_proto) == proto && named_port == port
        })
    })
}
