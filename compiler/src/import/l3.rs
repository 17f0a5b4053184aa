//! CIDR peers, shared by `ipBlock` and Cilium's `fromCIDR`/`toCIDRSet`.

use super::yaml::Node;
use super::{Ctx, Problem};
use ipnet::IpNet;
use std::net::IpAddr;

/// A prefix as Kubernetes and Cilium read it: an address alone is a host
/// prefix, and bits past the length are ignored (Go's `net.ParseCIDR`).
pub fn prefix(node: &Node) -> Result<IpNet, Problem> {
    let text = node.str("cidr")?;
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => return Err(Problem::at(node.pos, format!("`{text}` is not an IP prefix"))),
        },
    };
    Ok(net.trunc())
}

/// `CIDR` or `CIDR except (E, ...)` in polc syntax.
pub fn peer(cidr: &Node, except: &[Node], ctx: &mut Ctx) -> Result<String, Problem> {
    let net = prefix(cidr)?;
    let mut exceptions = Vec::new();
    for e in except {
        let hole = prefix(e)?;
        if !net.contains(&hole) {
            return Err(Problem::at(e.pos, format!("`{hole}` in `except` is not inside `{net}`")));
        }
        exceptions.push(hole);
    }
    ctx.cidrs.push((cidr.pos, net, exceptions.clone()));
    let exceptions: Vec<String> = exceptions.iter().map(IpNet::to_string).collect();
    Ok(if exceptions.is_empty() { net.to_string() } else { format!("{net} except ({})", exceptions.join(", ")) })
}
