//! `polc trace PATH --from X --to Y --port 80/tcp`: what the policy says
//! about one flow, by which rule, and why (the reference evaluator).
//!
//! X and Y are endpoint names, IP addresses, or `world`, `host`, `health`,
//! `init`, `unmanaged`. The packet is one of:
//! - `--port 80/tcp` (also `53/udp`, `http/tcp` for a named port of the
//!   destination; `--port 80` alone is TCP, or the protocol of `--proto`);
//! - `--icmp TYPE`: ICMPv6 when either end is written as an IPv6 address,
//!   ICMP otherwise; `--icmp6 TYPE` is always ICMPv6 (TYPE: name or number);
//! - `--proto N` alone: another IP protocol, by number.
//!
//! Exit code 0 whatever the verdict; with `--expect allow|deny`, 1 when the
//! verdict differs. 1 for an invalid policy set, 2 for bad arguments.

use super::{load_checked, print_error, Format, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::eval::explain::{explain, to_json};
use polc::eval::flowspec::{self, FlowSpecError, PortText};
use polc::eval::{evaluate, Flow, FlowPeer, IpProto};
use polc::sema::model::{Inventory, Proto};
use polc::syntax::ast::Action;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Policy files or directories (searched for `.pol` files)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The source: endpoint name, IP address, or entity (`world`, `host`, ...)
    #[arg(long, value_name = "PEER")]
    from: String,
    /// The destination: endpoint name, IP address, or entity
    #[arg(long, value_name = "PEER")]
    to: String,
    /// Destination port and protocol: `80/tcp`, `53/udp`, `http/tcp` (named port)
    #[arg(long, value_name = "PORT[/PROTO]")]
    port: Option<String>,
    /// Protocol: `tcp`, `udp`, `sctp` (with `--port`), or an IP protocol number
    #[arg(long, value_name = "PROTO")]
    proto: Option<String>,
    /// ICMP message type (name or number); ICMPv6 if an end is an IPv6 address
    #[arg(long, value_name = "TYPE", conflicts_with_all = ["port", "proto", "icmp6"])]
    icmp: Option<String>,
    /// ICMPv6 message type (name or number)
    #[arg(long, value_name = "TYPE", conflicts_with_all = ["port", "proto"])]
    icmp6: Option<String>,
    /// Exit with 1 unless the verdict is this one
    #[arg(long, value_enum)]
    expect: Option<Expect>,
    /// `human` (one line, then one per end of the flow) or `json`
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Expect {
    Allow,
    Deny,
}

pub fn run(args: Args) -> u8 {
    let frontend = match load_checked(&args.paths) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let set = &frontend.checked;
    let evaluation = flow(&args, &set.inventory).and_then(|flow| evaluate(set, &flow).map_err(FlowSpecError::from));
    let evaluation = match evaluation {
        Ok(e) => e,
        Err(e) => {
            print_error(&e, Some(&e.help()));
            return EXIT_USAGE;
        }
    };
    match args.format {
        Format::Human => print!("{}", explain(&evaluation, &frontend.sources).to_text()),
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&to_json(&evaluation, &frontend.sources)).unwrap_or_default())
        }
    }
    let wanted = args.expect.map(|e| match e {
        Expect::Allow => Action::Allow,
        Expect::Deny => Action::Deny,
    });
    match wanted {
        Some(wanted) if wanted != evaluation.verdict() => {
            let message =
                format!("expected `{}`, but the flow is `{}`", wanted.keyword(), evaluation.verdict().keyword());
            print_error(&message, None);
            EXIT_INVALID
        }
        _ => EXIT_OK,
    }
}

/// The flow the arguments describe.
fn flow(args: &Args, inventory: &Inventory) -> Result<Flow, FlowSpecError> {
    let src = flowspec::parse_peer(&args.from)?;
    let dst = flowspec::parse_peer(&args.to)?;
    let (proto, port) = packet(args, &src, &dst)?;
    let port = match port {
        Some(p) => flowspec::port_number(inventory, &dst, proto, &p)?,
        None => 0,
    };
    Ok(Flow { src, dst, proto, port })
}

/// The protocol and the port (or ICMP type) as written.
fn packet(args: &Args, src: &FlowPeer, dst: &FlowPeer) -> Result<(IpProto, Option<PortText>), FlowSpecError> {
    let icmp = match (&args.icmp, &args.icmp6) {
        (Some(t), _) => Some((flowspec::icmp_for(src, dst), t)),
        (None, Some(t)) => Some((Proto::Icmpv6, t)),
        (None, None) => None,
    };
    if let Some((proto, t)) = icmp {
        let proto = IpProto::from(proto);
        return Ok((proto, Some(flowspec::parse_port(proto, t)?)));
    }
    let named = args.proto.as_deref().map(flowspec::parse_proto).transpose()?;
    let Some(port) = &args.port else {
        return match named {
            Some(p) if p.known().is_some() => Err(FlowSpecError::MissingPort(p)),
            Some(p) => Ok((p, None)),
            None => Err(FlowSpecError::NoPacket),
        };
    };
    let (port_text, proto) = match port.split_once('/') {
        Some((port_text, proto_text)) => {
            let proto = flowspec::parse_proto(proto_text)?;
            if let Some(other) = named.filter(|n| *n != proto) {
                return Err(FlowSpecError::ConflictingProtocols(proto, other));
            }
            (port_text, proto)
        }
        None => (port.as_str(), named.unwrap_or(Proto::Tcp.into())),
    };
    Ok((proto, Some(flowspec::parse_port(proto, port_text)?)))
}
