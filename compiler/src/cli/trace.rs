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
//! `--from-bundle OUT` answers from a built bundle instead: the tables the
//! kernel will hold (`polc::codegen::bundle_trace`). PATH is then optional;
//! given, the answer names rules as `polc trace` does and is checked
//! against the reference evaluator.
//!
//! Exit code 0 whatever the verdict; with `--expect allow|deny`, 1 when the
//! verdict differs. 1 for an invalid policy set, or a bundle not built from
//! the given sources; 2 for bad arguments or an unreadable bundle; 3 when
//! the bundle and the reference evaluator disagree (a bug in polc).

use super::{load_checked, print_error, read_lock, Format, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::codegen::bundle_trace::{BuiltBundle, BundleAnswer, BundleTraceError};
use polc::driver::Frontend;
use polc::eval::explain::{explain, to_json};
use polc::eval::flowspec::{self, FlowSpecError, PortText};
use polc::eval::{evaluate, Flow, FlowPeer, IpProto};
use polc::resolve::{IdentityLock, ResolveConfig};
use polc::sema::model::{Inventory, Proto};
use polc::syntax::ast::Action;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The built tables and the reference evaluator disagree: a bug in polc.
pub const EXIT_DISAGREE: u8 = 3;

#[derive(clap::Args)]
pub struct Args {
    /// Policy files or directories (searched for `.pol` files); optional with `--from-bundle`
    #[arg(required_unless_present = "from_bundle")]
    paths: Vec<PathBuf>,
    /// Answer from the tables built into OUT (`polc build -o OUT`), as the kernel will
    #[arg(long, value_name = "OUT")]
    from_bundle: Option<PathBuf>,
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
    if let Some(out) = &args.from_bundle {
        return run_from_bundle(&args, out);
    }
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
    expect(&args, evaluation.verdict())
}

/// `--expect`: 1 when the verdict is not the expected one.
fn expect(args: &Args, verdict: Action) -> u8 {
    let wanted = args.expect.map(|e| match e {
        Expect::Allow => Action::Allow,
        Expect::Deny => Action::Deny,
    });
    match wanted {
        Some(wanted) if wanted != verdict => {
            let message = format!("expected `{}`, but the flow is `{}`", wanted.keyword(), verdict.keyword());
            print_error(&message, None);
            EXIT_INVALID
        }
        _ => EXIT_OK,
    }
}

/// `--from-bundle OUT`: the flow decided by OUT's tables; with PATH, named
/// as `polc trace` names it and checked against the reference evaluator.
fn run_from_bundle(args: &Args, out: &Path) -> u8 {
    let bundle = match BuiltBundle::open(out) {
        Ok(b) => b,
        Err(e) => {
            let help = match e {
                BundleTraceError::PolicyOnly(_) => "build it with an inventory: `polc build PATH -o OUT`",
                BundleTraceError::Format(_) => "a bundle from another polc version: build it again with this one",
                _ => "give the output directory of `polc build PATH -o OUT`",
            };
            print_error(&e, Some(help));
            let invalid = matches!(e, BundleTraceError::Parse { .. } | BundleTraceError::Format(_));
            return if invalid { EXIT_INVALID } else { EXIT_USAGE };
        }
    };
    let frontend = match args.paths.is_empty() {
        true => None,
        false => match load_checked(&args.paths) {
            Ok(f) => Some(f),
            Err(code) => return code,
        },
    };
    let no_inventory = Inventory::default();
    let inventory = frontend.as_ref().map_or(&no_inventory, |f| &f.checked.inventory);
    if frontend.is_none() {
        if let Some(name) = named_port(args) {
            let message = format!("`{name}` is a named port, and the bundle records port numbers only");
            print_error(&message, Some("give the port number, or the policy sources (PATH) as well"));
            return EXIT_USAGE;
        }
    }
    // Checked first: a stale bundle may not even have the endpoints the sources name.
    let built_from = frontend.as_ref().map(|f| check_against_sources(args, out, &bundle, f));
    let answer = flow(args, inventory).and_then(|flow| bundle.answer(&flow).map_err(FlowSpecError::from));
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            print_error(&e, Some(&e.help()));
            return match built_from {
                Some(Err(code)) => code,
                _ => EXIT_USAGE,
            };
        }
    };
    let whence = format!("answered from the built tables in `{}` ({})", out.display(), answer.identities());
    let Some(frontend) = frontend else {
        let note = format!("{whence}; rules by number: give the policy sources to name them and check the answer");
        print_answer(args, &answer, (answer.to_text(), answer.to_json()), &note, None);
        return expect(args, answer.verdict());
    };
    let set = &frontend.checked;
    if let Some(Err(code)) = built_from {
        print_answer(args, &answer, (answer.to_text(), answer.to_json()), &whence, None);
        return code;
    }
    let reference = match evaluate(set, &answer.flow) {
        Ok(r) => r,
        Err(e) => {
            print_error(&e, Some(&e.help()));
            return EXIT_USAGE;
        }
    };
    let disagreements = answer.disagreements(&reference);
    let (text, mut json) = match answer.to_evaluation(set, &reference) {
        Some(named) => (explain(&named, &frontend.sources).to_text(), to_json(&named, &frontend.sources)),
        None => (answer.to_text(), answer.to_json()),
    };
    if disagreements.is_empty() {
        let note = format!("{whence}; the reference evaluator agrees");
        print_answer(args, &answer, (text, json), &note, Some(true));
        return expect(args, answer.verdict());
    }
    json["reference"] = to_json(&reference, &frontend.sources);
    let note = format!("{whence}; the reference evaluator disagrees");
    print_answer(args, &answer, (text, json), &note, Some(false));
    eprintln!("error: bug: the built tables and the reference evaluator disagree on this flow");
    for line in &disagreements {
        eprintln!("  {line}");
    }
    eprintln!("  reference: {}", explain(&reference, &frontend.sources).headline);
    eprintln!("  = help: this is a bug in polc; please report it with this command, the policy set and the bundle");
    EXIT_DISAGREE
}

/// The named port the arguments give, if they give one (other mistakes
/// are reported when the flow is read).
fn named_port(args: &Args) -> Option<String> {
    let src = flowspec::parse_peer(&args.from).ok()?;
    let dst = flowspec::parse_peer(&args.to).ok()?;
    match packet(args, &src, &dst).ok()? {
        (_, Some(PortText::Named(name))) => Some(name),
        _ => None,
    }
}

/// Whether OUT is what the sources build (resolved with OUT's
/// identities.lock, else the sources' own): if not, their answers may
/// differ without a bug, so the check is refused (exit 1).
fn check_against_sources(args: &Args, out: &Path, bundle: &BuiltBundle, frontend: &Frontend) -> Result<(), u8> {
    let lock = match std::fs::read_to_string(out.join("identities.lock")) {
        Ok(text) => IdentityLock::parse(&text).map_err(|e| {
            print_error(&format!("`{}`: {e}", out.join("identities.lock").display()), None);
            EXIT_INVALID
        })?,
        Err(_) => read_lock(&args.paths)?,
    };
    let resolved = match polc::resolve::resolve(&frontend.checked, &lock, &ResolveConfig::default()) {
        Ok((resolved, _)) => resolved,
        Err(e) => {
            print_error(&e, None);
            return Err(EXIT_INVALID);
        }
    };
    bundle.built_from(&resolved, &frontend.checked.inventory.endpoints).map_err(|difference| {
        let message = format!(
            "`{}` was not built from these policy sources ({difference}), so its answer cannot be checked against them",
            out.display()
        );
        print_error(&message, Some("rebuild it (`polc build PATH -o OUT`), or leave the sources out"));
        EXIT_INVALID
    })
}

/// The answer in the chosen format, with where it came from: a last line
/// of text, or `answered_from`, `bundle`, `note` (and `agrees` when checked)
/// and the peers' identities in JSON.
fn print_answer(
    args: &Args,
    answer: &BundleAnswer,
    (text, mut json): (String, Value),
    note: &str,
    agrees: Option<bool>,
) {
    match args.format {
        Format::Human => println!("{text}{note}"),
        Format::Json => {
            json["flow"]["from"]["identity"] = answer.src.identity.into();
            json["flow"]["to"]["identity"] = answer.dst.identity.into();
            json["answered_from"] = "bundle".into();
            json["bundle"] = args.from_bundle.as_ref().map(|out| out.display().to_string()).into();
            json["note"] = note.into();
            if let Some(agrees) = agrees {
                json["agrees"] = agrees.into();
            }
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        }
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
