//! polcd: the node agent and its client. See runtime/README.md.
//!
//! Exit codes: 0 ok, 1 the request failed (polcd said no, a bad policy at
//! start), 2 usage or I/O error (polcd unreachable, bad arguments).

use clap::{Args, Parser, Subcommand};
use polc_runtime::agent::api::{self, AgentStatus, EndpointSpec, EndpointStatus, Request, Response};
use polc_runtime::agent::daemon::Config;
use polc_runtime::agent::metrics;
use polc_runtime::agent::monitor::{self, MonitorFilter, Observe, StreamItem};
use polc_runtime::agent::reset::reset;
use polc_runtime::agent::serve::{run, run_bundle, RunError};
use polc_runtime::agent::stats;
use polc_runtime::attach::AttachMode;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "polcd", about = "polc node agent: enforces a policy set on this node's endpoints with eBPF")]
struct Cli {
    /// polcd's state directory (socket, state files, object cache)
    #[arg(long, global = true, default_value = "/run/polcd")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: enforce the policy set and follow its changes
    Run(RunArgs),
    /// Show the agent's state: each endpoint's identity, generation, policy version, errors
    Status(FormatArgs),
    /// Add, remove or list endpoints
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Detach every link and remove every pin polcd made (polcd must be stopped)
    Reset,
    /// Stream the verdicts the kernel reports (drops; new connections with `run --trace new`)
    Monitor(MonitorArgs),
    /// Packets and bytes per endpoint (allowed, dropped, drops by reason) and per rule
    Stats(FormatArgs),
}

#[derive(Args)]
struct MonitorArgs {
    /// Only events decided by this endpoint's programs
    #[arg(long)]
    endpoint: Option<String>,
    /// Only `allowed` or `dropped` events
    #[arg(long, value_parser = ["allowed", "dropped"])]
    verdict: Option<String>,
    /// Only events from this source: endpoint name, identity, or address
    #[arg(long)]
    from: Option<String>,
    /// Only events to this destination: endpoint name, identity, or address
    #[arg(long)]
    to: Option<String>,
    /// `text` (one line a person reads) or `json` (one object a line)
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

#[derive(Args)]
struct RunArgs {
    /// The policy set directory (.pol files, identities.lock)
    #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
    policies: Option<PathBuf>,
    /// Run a built bundle (`polc build PATH -o DIR`) instead: endpoints, objects and tables from its manifest
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// The network namespace holding the endpoints' host-side devices (default: polcd's own)
    #[arg(long)]
    netns: Option<String>,
    /// Where links and maps are pinned
    #[arg(long, default_value = "/sys/fs/bpf/polc/node")]
    pin_root: PathBuf,
    /// Quiet time after a file change before reloading, in milliseconds
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// Which verdicts the datapath reports to `polcd monitor`: `drops`, `new` (drops and new
    /// connections) or `all` (every packet)
    #[arg(long, default_value = "drops", value_parser = ["drops", "new", "all"])]
    trace: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (without a value: 127.0.0.1:9962)
    #[arg(long, num_args = 0..=1, default_missing_value = metrics::DEFAULT_ADDR)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Allow a --metrics-addr other hosts can reach (not loopback)
    #[arg(long)]
    metrics_allow_remote: bool,
    /// The hook programs run on: `tcx`, `tc` (clsact), or `auto` (tcx where the kernel has it)
    #[arg(long, default_value = "auto")]
    attach: AttachMode,
}

#[derive(Args)]
struct FormatArgs {
    /// `text` or `json`
    #[arg(long, default_value = "text")]
    format: String,
}

#[derive(Subcommand)]
enum EndpointCommand {
    /// Add an endpoint (its device is attached as soon as it exists)
    Add(AddArgs),
    /// Remove an endpoint added with `endpoint add`
    Del { name: String },
    /// List the endpoints
    List(FormatArgs),
}

#[derive(Args)]
struct AddArgs {
    name: String,
    /// The host-side veth, in the namespace polcd attaches in
    #[arg(long)]
    iface: String,
    /// The endpoint's own network namespace (recorded)
    #[arg(long)]
    netns: Option<String>,
    #[arg(long)]
    ipv4: Option<Ipv4Addr>,
    #[arg(long)]
    ipv6: Option<Ipv6Addr>,
    /// Labels: `k=v,k2=v2`
    #[arg(long, default_value = "")]
    labels: String,
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("label `{pair}` is not `key=value`"))?;
        labels.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(labels)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            if let Some(addr) = args.metrics_addr {
                if let Err(e) = metrics::check_addr(addr, args.metrics_allow_remote) {
                    return fail(2, &e.to_string());
                }
            }
            let trace_level = match args.trace.as_str() {
                "all" => 2,
                "new" => 1,
                _ => 0,
            };
            let bundle = args.bundle.is_some();
            let config = Config {
                // The watched directory: the policy set, or the bundle.
                policies: args.bundle.or(args.policies).unwrap_or_default(),
                state: cli.state,
                netns: args.netns,
                pin_root: args.pin_root,
                debounce: Duration::from_millis(args.debounce_ms),
                observe: Observe { trace_level, metrics: args.metrics_addr },
                attach: args.attach,
            };
            match if bundle { run_bundle(config) } else { run(config) } {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ RunError::Agent(_)) => fail(1, &e.to_string()),
                Err(e) => fail(2, &e.to_string()),
            }
        }
        Command::Status(format) => client(&cli.state, &Request::Status, |r| match &r.status {
            Some(status) if format.format == "json" => {
                println!("{}", serde_json::to_string_pretty(status).unwrap_or_default())
            }
            Some(status) => print_status(status),
            None => {}
        }),
        Command::Endpoint(EndpointCommand::Add(args)) => {
            let labels = match parse_labels(&args.labels) {
                Ok(labels) => labels,
                Err(e) => return fail(2, &e),
            };
            let endpoint = EndpointSpec {
                name: args.name,
                iface: args.iface,
                netns: args.netns,
                ipv4: args.ipv4,
                ipv6: args.ipv6,
                labels,
            };
            client(&cli.state, &Request::EndpointAdd { endpoint }, |_| {})
        }
        Command::Endpoint(EndpointCommand::Del { name }) => client(&cli.state, &Request::EndpointDel { name }, |_| {}),
        Command::Endpoint(EndpointCommand::List(format)) => client(&cli.state, &Request::EndpointList, |r| {
            let endpoints = r.endpoints.clone().unwrap_or_default();
            if format.format == "json" {
                println!("{}", serde_json::to_string_pretty(&endpoints).unwrap_or_default());
            } else {
                print_endpoints(&endpoints);
            }
        }),
        Command::Monitor(args) => watch(&cli.state, args),
        Command::Stats(format) => client(&cli.state, &Request::Stats, |r| match &r.stats {
            Some(stats) if format.format == "json" => {
                println!("{}", serde_json::to_string_pretty(stats).unwrap_or_default())
            }
            Some(stats) => print!("{}", stats::to_text(stats)),
            None => {}
        }),
        Command::Reset => match reset(&cli.state) {
            Ok(removed) => {
                println!("detached {} endpoint(s){}", removed.endpoints.len(), list(&removed.endpoints));
                for e in &removed.errors {
                    eprintln!("error: {e}");
                }
                if removed.errors.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => fail(2, &e.to_string()),
        },
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(": {}", names.join(", "))
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn client(state: &std::path::Path, request: &Request, show: impl FnOnce(&Response)) -> ExitCode {
    match api::request(state, request) {
        Ok(response) if response.ok => {
            show(&response);
            ExitCode::SUCCESS
        }
        Ok(response) => fail(1, response.error.as_deref().unwrap_or("polcd refused the request")),
        Err(e) => fail(2, &e.to_string()),
    }
}

/// `polcd monitor`: prints events until polcd goes away (or the reader of
/// stdout does).
fn watch(state: &std::path::Path, args: MonitorArgs) -> ExitCode {
    use std::io::Write;
    let filter = MonitorFilter { endpoint: args.endpoint, verdict: args.verdict, from: args.from, to: args.to };
    let events = match monitor::subscribe(state, &filter) {
        Ok(events) => events,
        Err(api::ClientError::Refused(e)) => return fail(1, &e),
        Err(e) => return fail(2, &e.to_string()),
    };
    eprintln!("polcd monitor: streaming verdicts (drops; new connections with `polcd run --trace new`)");
    let mut out = std::io::stdout().lock();
    for item in events {
        let line = match item {
            Ok(StreamItem::Event(event)) if args.format == "json" => serde_json::to_string(&event).unwrap_or_default(),
            Ok(StreamItem::Event(event)) => event.to_line(),
            Ok(StreamItem::Lost(n)) => {
                eprintln!("polcd: {n} event(s) lost (this monitor fell behind)");
                continue;
            }
            Err(e) => return fail(2, &e.to_string()),
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
    fail(2, "polcd closed the stream")
}

fn print_status(status: &AgentStatus) {
    println!("policies: {} (version {})", status.policies.display(), status.policy_version);
    println!("pins: {}", status.pin_root.display());
    if let Some(reload) = &status.last_reload {
        println!(
            "last reload: {:.1} ms, {} regenerated ({} by a table swap), {} skipped, {} removed",
            reload.took_ms,
            reload.regenerated,
            reload.tables_swapped.len(),
            reload.skipped,
            reload.removed
        );
    }
    match &status.last_error {
        Some(error) => println!("last change NOT applied (version {} enforces):\n{error}", status.policy_version),
        None => println!("last change: applied"),
    }
    print_endpoints(&status.endpoints);
}

fn print_endpoints(endpoints: &[EndpointStatus]) {
    println!(
        "{:<12} {:<8} {:<20} {:<14} {:>4} {:>7}  {:<16}  {:<24}  error",
        "endpoint", "identity", "state", "iface", "gen", "version", "program", "last swap"
    );
    for e in endpoints {
        println!(
            "{:<12} {:<8} {:<20} {:<14} {:>4} {:>7}  {:<16}  {:<24}  {}",
            e.name,
            e.identity,
            e.state,
            e.iface.as_deref().unwrap_or("-"),
            e.generation,
            e.policy_version,
            e.program.as_deref().unwrap_or("-"),
            last_swap(e),
            e.last_error.as_deref().unwrap_or("")
        );
    }
}

/// `tables`, or `program (ingress, egress)` with the directions the last
/// program swap loaded (the others were kept), or `-`.
fn last_swap(e: &EndpointStatus) -> String {
    match (e.last_swap.as_deref(), &e.loaded_directions) {
        (Some("program"), Some(loaded)) => format!("program ({})", loaded.join(", ")),
        (Some(kind), _) => kind.to_string(),
        (None, _) => "-".to_string(),
    }
}
