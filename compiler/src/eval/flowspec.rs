//! Flows written as text, shared by `polc trace` and `polc test`:
//! peers (`app2`, `10.200.1.12`, `world`), protocols (`tcp`, `icmpv6`,
//! `47`), ports (`80`, a named port of the destination such as `http`) and
//! ICMP types (`echo-request`, `8`).

use super::peer::{self, FlowPeer, Peer, PeerError};
use super::IpProto;
use crate::sema::icmp;
use crate::sema::model::{Inventory, Proto};
use crate::syntax::ast::Entity;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowSpecError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// `--to 10.0.0.0/8`
    #[error("`{0}` is a prefix, but a flow goes to one address")]
    Prefix(String),
    /// `--to 10.0.0` or `--to a/b`
    #[error("`{0}` is neither an endpoint name nor an IP address")]
    BadPeer(String),
    /// `--port 80/tpc`
    #[error("unknown protocol `{0}`")]
    UnknownProtocol(String),
    /// `--port 70000/tcp`
    #[error("`{0}` is not a port number")]
    BadPort(String),
    /// `--icmp echo-reqest`
    #[error("`{name}` is not an {} type", .proto.name())]
    UnknownIcmpType { proto: Proto, name: String },
    /// `--proto 47 --port 80`
    #[error("protocol `{0}` has no ports")]
    NoPorts(IpProto),
    /// `--proto tcp` without a port
    #[error("a {0} flow needs a port")]
    MissingPort(IpProto),
    /// `--port 53/udp --proto tcp`
    #[error("the port says `{0}` but the protocol says `{1}`")]
    ConflictingProtocols(IpProto, IpProto),
    /// `polc trace --from a --to b` with no packet
    #[error("the flow has no protocol")]
    NoPacket,
    /// `--to world --port http/tcp`
    #[error("`{name}` is a named port, but `{peer}` is not an endpoint with named ports")]
    NamedPortWithoutEndpoint { name: String, peer: String },
    /// `--to app1 --port https/tcp`
    #[error("endpoint `{endpoint}` has no {proto} port named `{name}`")]
    UnknownNamedPort { name: String, endpoint: String, proto: IpProto, known: Vec<String> },
}

impl FlowSpecError {
    /// A hint for the help line.
    pub fn help(&self) -> String {
        match self {
            FlowSpecError::Peer(e) => e.help(),
            FlowSpecError::Prefix(text) => {
                format!("name one address, e.g. `{}`", text.split('/').next().unwrap_or(text))
            }
            FlowSpecError::BadPeer(_) => {
                "name an endpoint, an IPv4 or IPv6 address, or `world`, `host`, `health`, `init`, `unmanaged`".into()
            }
            FlowSpecError::UnknownProtocol(_) => {
                "use `tcp`, `udp`, `sctp`, `icmp`, `icmpv6` or an IP protocol number".into()
            }
            FlowSpecError::BadPort(_) => "ports are numbers from 0 to 65535, or a named port of the destination".into(),
            FlowSpecError::UnknownIcmpType { proto, .. } => {
                format!("known names: {} (or a number from 0 to 255)", icmp::names(*proto).join(", "))
            }
            FlowSpecError::NoPorts(_) => "leave the port out for protocols other than tcp, udp and sctp".into(),
            FlowSpecError::MissingPort(_) => "give the destination port, e.g. `80`".into(),
            FlowSpecError::ConflictingProtocols(..) => "give the protocol once: `--port 53/udp`".into(),
            FlowSpecError::NoPacket => {
                "give `--port PORT/PROTO` (e.g. `80/tcp`), `--icmp TYPE`, or `--proto NUMBER`".into()
            }
            FlowSpecError::NamedPortWithoutEndpoint { .. } => "give the port number instead".into(),
            FlowSpecError::UnknownNamedPort { known, .. } if known.is_empty() => {
                "it has no named ports of that protocol; give the port number instead".into()
            }
            FlowSpecError::UnknownNamedPort { known, .. } => {
                let known: Vec<_> = known.iter().map(|k| format!("`{k}`")).collect();
                format!("its named ports: {}", known.join(", "))
            }
        }
    }
}

/// `app2`, `10.200.1.12`, `fd00::1`, `world`. Entity keywords win over
/// endpoint names (an endpoint called `host` is named by its address).
pub fn parse_peer(text: &str) -> Result<FlowPeer, FlowSpecError> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(FlowPeer::Address(addr));
    }
    if let Some(entity) = Entity::from_keyword(text) {
        return Ok(FlowPeer::Entity(entity));
    }
    if text.contains('/') && text.split('/').next().is_some_and(|a| a.parse::<IpAddr>().is_ok()) {
        return Err(FlowSpecError::Prefix(text.to_string()));
    }
    let is_name = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if is_name {
        Ok(FlowPeer::Endpoint(text.to_string()))
    } else {
        Err(FlowSpecError::BadPeer(text.to_string()))
    }
}

/// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, or an IP protocol number.
pub fn parse_proto(text: &str) -> Result<IpProto, FlowSpecError> {
    if let Some(p) = Proto::from_name(text) {
        return Ok(p.into());
    }
    text.parse::<u8>().map(IpProto).map_err(|_| FlowSpecError::UnknownProtocol(text.to_string()))
}

/// A port or ICMP type as written, before a named port is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortText {
    Number(u16),
    /// A named port of the destination endpoint.
    Named(String),
}

/// The port (or ICMP type) of a `proto` packet, as written.
pub fn parse_port(proto: IpProto, text: &str) -> Result<PortText, FlowSpecError> {
    match proto.known() {
        Some(p) if p.is_icmp() => {
            let number = text.parse::<u8>().ok().or_else(|| icmp::type_by_name(p, text));
            number
                .map(|t| PortText::Number(t.into()))
                .ok_or_else(|| FlowSpecError::UnknownIcmpType { proto: p, name: text.to_string() })
        }
        Some(_) => {
            if let Ok(n) = text.parse::<u16>() {
                Ok(PortText::Number(n))
            } else if text.starts_with(|c: char| c.is_ascii_alphabetic()) {
                Ok(PortText::Named(text.to_string()))
            } else {
                Err(FlowSpecError::BadPort(text.to_string()))
            }
        }
        None => Err(FlowSpecError::NoPorts(proto)),
    }
}

/// The port number, looking a named port up on the destination endpoint.
pub fn port_number(
    inventory: &Inventory,
    dst: &FlowPeer,
    proto: IpProto,
    port: &PortText,
) -> Result<u16, FlowSpecError> {
    let name = match port {
        PortText::Number(n) => return Ok(*n),
        PortText::Named(name) => name,
    };
    let Peer::Endpoint(endpoint) = peer::resolve(inventory, dst)? else {
        return Err(FlowSpecError::NamedPortWithoutEndpoint { name: name.clone(), peer: dst.to_string() });
    };
    let of_proto = || endpoint.named_ports.iter().filter(|(_, (p, _))| IpProto::from(*p) == proto);
    of_proto().find(|(n, _)| *n == name).map(|(_, (_, number))| *number).ok_or_else(|| {
        FlowSpecError::UnknownNamedPort {
            name: name.clone(),
            endpoint: endpoint.name.clone(),
            proto,
            known: of_proto().map(|(n, _)| n.clone()).collect(),
        }
    })
}

/// ICMP or ICMPv6 for a flow between these peers: ICMPv6 when either end is
/// written as an IPv6 address, ICMP otherwise.
pub fn icmp_for(src: &FlowPeer, dst: &FlowPeer) -> Proto {
    let v6 = |p: &FlowPeer| matches!(p, FlowPeer::Address(IpAddr::V6(_)));
    if v6(src) || v6(dst) {
        Proto::Icmpv6
    } else {
        Proto::Icmp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers() {
        assert_eq!(parse_peer("app1"), Ok(FlowPeer::Endpoint("app1".into())));
        assert_eq!(parse_peer("world"), Ok(FlowPeer::Entity(Entity::World)));
        assert!(matches!(parse_peer("fd00::1"), Ok(FlowPeer::Address(IpAddr::V6(_)))));
        assert_eq!(parse_peer("10.0.0.0/8"), Err(FlowSpecError::Prefix("10.0.0.0/8".into())));
        assert_eq!(parse_peer("10.0.0"), Err(FlowSpecError::BadPeer("10.0.0".into())));
    }

    #[test]
    fn ports_and_types() {
        let tcp = IpProto::from(Proto::Tcp);
        assert_eq!(parse_port(tcp, "80"), Ok(PortText::Number(80)));
        assert_eq!(parse_port(tcp, "http"), Ok(PortText::Named("http".into())));
        assert_eq!(parse_port(tcp, "70000"), Err(FlowSpecError::BadPort("70000".into())));
        assert_eq!(parse_port(Proto::Icmpv6.into(), "echo-request"), Ok(PortText::Number(128)));
        assert_eq!(parse_port(Proto::Icmp.into(), "echo-request"), Ok(PortText::Number(8)));
        assert!(matches!(parse_port(Proto::Icmp.into(), "ping"), Err(FlowSpecError::UnknownIcmpType { .. })));
        assert_eq!(parse_port(IpProto(47), "1"), Err(FlowSpecError::NoPorts(IpProto(47))));
        assert_eq!(parse_proto("47"), Ok(IpProto(47)));
        assert_eq!(parse_proto("tpc"), Err(FlowSpecError::UnknownProtocol("tpc".into())));
    }

    #[test]
    fn icmp_family_follows_the_addresses() {
        let name = FlowPeer::Endpoint("a".into());
        let v6 = FlowPeer::Address("fd00::1".parse().unwrap_or(IpAddr::from([0u8; 16])));
        assert_eq!(icmp_for(&name, &name), Proto::Icmp);
        assert_eq!(icmp_for(&name, &v6), Proto::Icmpv6);
    }
}
