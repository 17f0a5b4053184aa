//! `polc build PATH... -o OUT`: resolve the policy set and build the
//! datapath bundle (see `polc::codegen::bundle`): OUT/manifest.json,
//! OUT/node_config.h, OUT/endpoints/<name>/ep_config.h, OUT/objects/<hash>.o
//! and OUT/identities.lock. `--dump STAGE` prints one stage instead.
//! Without an inventory (or with `--policy-only`) it writes a policy-only
//! bundle instead (see `polc::codegen::policy_only`).

use super::{load_checked, resolve_with_lock, LockMode, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use clap::ValueEnum;
use polc::codegen::bundle::{build_bundle_with_rules, located_rules, BundleOptions};
use polc::codegen::header::BuildOptions;
use polc::codegen::policy_only::build_policy_only;
use polc::codegen::CodegenError;
use polc::resolve::ResolveConfig;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Policy files or directories (searched for `.pol` files), with their inventory (without one: a policy-only bundle)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output directory
    #[arg(short, long, value_name = "OUT", required_unless_present = "dump")]
    out: Option<PathBuf>,
    /// Compile each endpoint with its constants as #defines (one object per endpoint)
    #[arg(long)]
    per_endpoint_compile: bool,
    /// Parallel clang runs (default: the number of CPUs)
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Print a stage (`ast`, `ir` or `header`) to stdout instead of building
    #[arg(long, value_enum)]
    dump: Option<Stage>,
    /// Fail (exit 1) if identities.lock is missing or would change
    #[arg(long)]
    locked: bool,
    /// Verdict events: 0 drops, 1 drops and new connections, 2 every verdict
    #[arg(long, default_value_t = 0)]
    trace_level: u32,
    /// Build a policy-only bundle (objects for every code shape, no
    /// endpoints) even if the set has an inventory; a node specializes it
    #[arg(long, conflicts_with_all = ["per_endpoint_compile", "dump"])]
    policy_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Stage {
    Ast,
    Ir,
    Header,
}

pub fn run(args: Args) -> u8 {
    let frontend = match load_checked(&args.paths) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if args.dump == Some(Stage::Ast) {
        println!("{}", serde_json::to_string_pretty(&frontend.modules).unwrap_or_default());
        return EXIT_OK;
    }
    let mode = LockMode { locked: args.locked, no_write: args.dump.is_some() };
    let (resolved, lock) = match resolve_with_lock(&args.paths, &frontend, &ResolveConfig::default(), mode) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if args.dump == Some(Stage::Ir) {
        // The JSON of `polc show` (tables keyed by peer need string keys).
        println!("{}", serde_json::to_string_pretty(&polc::resolve::show::to_json(&resolved)).unwrap_or_default());
        return EXIT_OK;
    }
    let options = BundleOptions {
        build: BuildOptions { trace_level: args.trace_level, ..BuildOptions::default() },
        per_endpoint_compile: args.per_endpoint_compile,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        jobs: args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        ..BundleOptions::default()
    };
    let scratch;
    let out = match (&args.out, args.dump) {
        (Some(out), None) => out.clone(),
        _ => match tempfile::tempdir() {
            Ok(dir) => {
                scratch = dir;
                scratch.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("error: cannot create a temporary directory: {e}");
                return EXIT_USAGE;
            }
        },
    };
    let policy_only = args.dump.is_none() && (args.policy_only || frontend.checked.inventory.endpoints.is_empty());
    if policy_only && args.per_endpoint_compile {
        eprintln!("error: --per-endpoint-compile needs endpoints, and the policy set has no inventory");
        return EXIT_USAGE;
    }
    let built = if policy_only {
        build_policy_only(&frontend.sources, &frontend.checked, &lock, &out, &options)
    } else {
        let rules = located_rules(&frontend.checked, &frontend.sources);
        build_bundle_with_rules(&resolved, &frontend.checked.inventory.endpoints, &rules, &out, &options)
    };
    let report = match built {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return match e {
                CodegenError::Io { .. } | CodegenError::Spawn { .. } => EXIT_USAGE,
                _ => EXIT_INVALID,
            };
        }
    };
    for warning in &report.warnings {
        eprintln!("warning: clang:\n{warning}");
    }
    if args.dump == Some(Stage::Header) {
        print!("{}", std::fs::read_to_string(out.join("node_config.h")).unwrap_or_default());
        for endpoint in &resolved.endpoints {
            let header = out.join("endpoints").join(&endpoint.name).join("ep_config.h");
            print!("{}", std::fs::read_to_string(header).unwrap_or_default());
        }
        return EXIT_OK;
    }
    if let Err(e) = std::fs::write(out.join("identities.lock"), lock.render()) {
        eprintln!("error: cannot write `{}`: {e}", out.join("identities.lock").display());
        return EXIT_USAGE;
    }
    if policy_only {
        println!(
            "built a policy-only bundle into `{}`: {} objects for its code shapes ({} compiled, {} from the cache)",
            out.display(),
            report.objects,
            report.clang_runs,
            report.objects - report.clang_runs
        );
        return EXIT_OK;
    }
    println!(
        "built {} endpoints into `{}`: {} objects ({} compiled, {} from the cache)",
        report.endpoints,
        out.display(),
        report.objects,
        report.clang_runs,
        report.objects - report.clang_runs
    );
    EXIT_OK
}
