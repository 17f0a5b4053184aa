//! The live demo (run by scripts/demo.sh, as root): the seed's
//! endpoints (app1, app2, app3; demo1, demo2) in network namespaces, polcd
//! enforcing examples/l3-l4-rule and examples/deny-demo on their veths, the
//! connectivity matrix from real TCP, UDP and ICMP attempts (checked against
//! polc's evaluator), then the seed's change (deny demo2 -> demo1) made by
//! editing a policy file, and the matrix again with the reload time.
//! Everything it made is removed on exit, also on Ctrl-C.

use polc::eval::{evaluate, Flow, FlowPeer, IpProto};
use polc::sema::model::PolicySet;
use polc_runtime::agent::api::{self, AgentStatus, Request};
use polc_runtime::netlab::{EndpointSpec, Lab};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[derive(Debug)]
enum Stop {
    Interrupted,
    Failed(String),
}

fn check_interrupt() -> Result<(), Stop> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Stop::Interrupted)
    } else {
        Ok(())
    }
}

fn failed(e: impl std::fmt::Display) -> Stop {
    Stop::Failed(e.to_string())
}

struct Args {
    polcd: PathBuf,
    examples: PathBuf,
    work: PathBuf,
    prefix: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut polcd, mut examples, mut work, mut prefix) = (None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--polcd" => polcd = Some(PathBuf::from(value)),
            "--examples" => examples = Some(PathBuf::from(value)),
            "--work" => work = Some(PathBuf::from(value)),
            "--prefix" => prefix = Some(value),
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    let missing = |what: &str| format!("missing {what}");
    Ok(Args {
        polcd: polcd.ok_or_else(|| missing("--polcd"))?,
        examples: examples.ok_or_else(|| missing("--examples"))?,
        work: work.ok_or_else(|| missing("--work"))?,
        prefix: prefix.unwrap_or_else(|| format!("polcdemo{}", std::process::id())),
    })
}

/// What the demo made; dropping it removes all of it (polcd stopped and
/// reset, namespaces deleted).
struct Demo {
    polcd_bin: PathBuf,
    state: PathBuf,
    polcd: Option<Child>,
    lab: Lab,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.polcd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ =
            Command::new(&self.polcd_bin).arg("--state").arg(&self.state).arg("reset").stdout(Stdio::null()).status();
        println!("cleaned up: polcd stopped, links and pins removed, namespaces deleted");
    }
}

const SEED_DENY: &str = "deny no-demo2";

fn main() -> ExitCode {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Interrupted) => {
            println!("interrupted");
            ExitCode::from(130)
        }
        Err(Stop::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn copy_example(examples: &Path, name: &str, to: &Path) -> Result<(), Stop> {
    let dir = to.join(name);
    std::fs::create_dir_all(&dir).map_err(failed)?;
    for entry in std::fs::read_dir(examples.join(name)).map_err(failed)?.filter_map(|e| e.ok()) {
        if entry.path().extension().is_some_and(|e| e == "pol") {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).map_err(failed)?;
        }
    }
    Ok(())
}

fn read_set(policies: &Path) -> Result<PolicySet, Stop> {
    let frontend = polc::driver::load(&[policies.to_path_buf()]).map_err(failed)?;
    if frontend.has_errors() {
        return Err(failed("the example policies have errors"));
    }
    Ok(frontend.checked)
}

fn run(args: &Args) -> Result<(), Stop> {
    let policies = args.work.join("policies");
    let state = args.work.join("state");
    copy_example(&args.examples, "l3-l4-rule", &policies)?;
    copy_example(&args.examples, "deny-demo", &policies)?;
    // Start from before the seed's change: demo1 accepts the whole cluster.
    let deny_file = policies.join("deny-demo").join("policy.pol");
    let with_deny = std::fs::read_to_string(&deny_file).map_err(failed)?;
    let without_deny: String = with_deny.lines().filter(|l| !l.contains(SEED_DENY)).map(|l| format!("{l}\n")).collect();
    std::fs::write(&deny_file, &without_deny).map_err(failed)?;
    let set = read_set(&policies)?;

    println!("== creating endpoints in network namespaces ({} endpoints)", set.inventory.endpoints.len());
    let lab = Lab::new(&args.prefix).map_err(failed)?;
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/polc/{}", args.prefix));
    let mut demo = Demo { polcd_bin: args.polcd.clone(), state: state.clone(), polcd: None, lab };
    for def in &set.inventory.endpoints {
        check_interrupt()?;
        let iface = def.iface.clone().unwrap_or_else(|| format!("polc-{}", def.name));
        demo.lab
            .add_endpoint(EndpointSpec {
                name: def.name.clone(),
                host_iface: iface.clone(),
                ipv4: def.ipv4,
                ipv6: def.ipv6,
            })
            .map_err(failed)?;
        println!(
            "   {:<6} {:<15} behind {iface} in netns {}-{}",
            def.name,
            def.ipv4.map(|a| a.to_string()).unwrap_or_default(),
            args.prefix,
            def.name
        );
    }

    println!("== starting polcd on {}", policies.display());
    let log = std::fs::File::create(args.work.join("polcd.log")).map_err(failed)?;
    let child = Command::new(&args.polcd)
        .arg("--state")
        .arg(&state)
        .arg("run")
        .arg("--policies")
        .arg(&policies)
        .args(["--netns", demo.lab.node_ns(), "--debounce-ms", "20"])
        .arg("--pin-root")
        .arg(&pin_root)
        .stderr(log)
        .spawn()
        .map_err(failed)?;
    demo.polcd = Some(child);
    let first = wait_status(&state, |s| !s.endpoints.is_empty() && s.endpoints.iter().all(|e| e.state == "enforcing"))?;
    if let Some(reload) = &first.last_reload {
        println!("   enforcing on {} endpoints (first load: {:.0} ms)", first.endpoints.len(), reload.took_ms);
    }

    println!("\n== connectivity from real traffic, before the change");
    print_matrix(&set, &demo.lab)?;

    println!("\n== the seed's change: `{SEED_DENY}` added to deny-demo/policy.pol (deny demo2 -> demo1)");
    let before = first.policy_version;
    let written = Instant::now();
    std::fs::write(&deny_file, &with_deny).map_err(failed)?;
    let after = wait_status(&state, |s| s.policy_version > before || s.last_error.is_some())?;
    if let Some(error) = &after.last_error {
        return Err(failed(format!("polcd did not apply the change: {error}")));
    }
    let seen = written.elapsed();
    if let Some(reload) = &after.last_reload {
        println!(
            "   enforced {:.0} ms after the file was written (20 ms debounce included); polcd's reload took {:.1} ms: \
             regenerated [{}], {} endpoints skipped",
            seen.as_secs_f64() * 1000.0,
            reload.took_ms,
            reload.regenerated_endpoints.join(", "),
            reload.skipped
        );
    }
    let set = read_set(&policies)?;
    println!("\n== connectivity from real traffic, after the change");
    print_matrix(&set, &demo.lab)?;
    drop(demo);
    Ok(())
}

fn wait_status(state: &Path, done: impl Fn(&AgentStatus) -> bool) -> Result<AgentStatus, Stop> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        check_interrupt()?;
        if let Some(status) = api::request(state, &Request::Status).ok().and_then(|r| r.status) {
            if done(&status) {
                return Ok(status);
            }
        }
        if Instant::now() > deadline {
            return Err(failed("polcd did not get there in 120 s (see polcd.log)"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn allowed(set: &PolicySet, from: IpAddr, to: IpAddr, proto: u8, port: u16) -> bool {
    let flow = Flow { src: FlowPeer::Address(from), dst: FlowPeer::Address(to), proto: IpProto(proto), port };
    evaluate(set, &flow).map(|e| e.allowed()).unwrap_or(false)
}

/// One row per source, one column per destination; a cell lists what got
/// through: T = tcp/80, U = udp/53, P = ping (IPv4), `.` = blocked.
fn print_matrix(set: &PolicySet, lab: &Lab) -> Result<(), Stop> {
    let t = Duration::from_millis(300);
    let names: Vec<&str> = set.inventory.endpoints.iter().map(|e| e.name.as_str()).collect();
    print!("   {:<8}", "from\\to");
    for to in &names {
        print!("{to:<8}");
    }
    println!();
    let (mut probes, mut mismatches) = (0, Vec::new());
    for from in &set.inventory.endpoints {
        print!("   {:<8}", from.name);
        for to in &set.inventory.endpoints {
            if from.name == to.name {
                print!("{:<8}", "-");
                continue;
            }
            let (Some(src), Some(dst)) = (from.ipv4.map(IpAddr::V4), to.ipv4.map(IpAddr::V4)) else {
                print!("{:<8}", "?");
                continue;
            };
            let mut cell = String::new();
            for (letter, proto, port) in [('T', 6u8, 80u16), ('U', 17, 53), ('P', 1, 8)] {
                check_interrupt()?;
                let live = match letter {
                    'T' => lab.tcp_reaches(&from.name, dst, port, t),
                    'U' => lab.udp_reaches(&from.name, dst, port, t),
                    _ => lab.ping_reaches(&from.name, dst, Duration::from_secs(1)),
                }
                .map_err(failed)?;
                probes += 1;
                if live != allowed(set, src, dst, proto, port) {
                    mismatches.push(format!("{} -> {} {letter}", from.name, to.name));
                }
                cell.push(if live { letter } else { '.' });
            }
            print!("{cell:<8}");
        }
        println!();
    }
    println!("   (T tcp/80, U udp/53, P ping; `.` blocked)");
    if mismatches.is_empty() {
        println!("   {probes} probes, all as `polc trace` says");
    } else {
        println!("   {probes} probes, {} differ from `polc trace`: {}", mismatches.len(), mismatches.join(", "));
    }
    Ok(())
}
