//! Subcommands of `polc`, one file each.
//!
//! Exit codes: 0 success (warnings allowed), 1 the input is invalid or a
//! check/test failed, 2 usage or I/O error; 3 (`polc trace --from-bundle`
//! only) the built tables and the reference evaluator disagree: a bug.

mod build;
mod check;
mod diff;
mod fmt;
mod graph;
mod import;
mod show;
mod test;
mod trace;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "polc", version, about = "Compile network policy (.pol) into eBPF datapath programs")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the datapath: per-endpoint headers, BPF objects and manifest.json into OUT
    Build(build::Args),
    /// Parse and check policy files; report every error and warning
    Check(check::Args),
    /// Rewrite policy files in the canonical layout (`--check` only reports)
    Fmt(fmt::Args),
    /// Evaluate one flow against the policy (or a built bundle): allowed or denied, by which rule, and why
    Trace(trace::Args),
    /// Run policy tests (`.poltest` files: flows and their expected verdicts)
    Test(test::Args),
    /// Resolve identities and per-endpoint tables, and show them; writes identities.lock
    Show(show::Args),
    /// Draw who may talk to whom: DOT, SVG, or an HTML connectivity matrix
    Graph(graph::Args),
    /// Kubernetes NetworkPolicy, CiliumNetworkPolicy and pod lists as `.pol` files
    Import(import::Args),
    /// The flows whose verdict changes between two policy sets (or two git revisions)
    Diff(diff::Args),
}

/// Output for people or for machines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Human,
    Json,
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_INVALID: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Build(args) => build::run(args),
        Command::Check(args) => check::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Test(args) => test::run(args),
        Command::Show(args) => show::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Import(args) => import::run(args),
        Command::Diff(args) => diff::run(args),
    };
    ExitCode::from(code)
}

/// Prints an error and its help line to stderr, as the diagnostics do.
pub fn print_error(message: &dyn std::fmt::Display, help: Option<&str>) {
    eprintln!("error: {message}");
    if let Some(help) = help {
        eprintln!("  = help: {help}");
    }
}

/// Loads and checks a policy set for a command that needs it error-free:
/// I/O problems are usage errors (2), an invalid policy set is 1 (its
/// diagnostics are printed).
pub fn load_checked(paths: &[std::path::PathBuf]) -> Result<polc::driver::Frontend, u8> {
    let frontend = polc::driver::load(paths).map_err(|e| {
        print_error(&e, None);
        EXIT_USAGE
    })?;
    if frontend.has_errors() {
        let diagnostics = frontend.diagnostics.sorted();
        eprint!("{}", polc::diag::render::render_all_text(&frontend.sources, &diagnostics));
        print_error(&"the policy set has errors; fix them first (see `polc check`)", None);
        return Err(EXIT_INVALID);
    }
    Ok(frontend)
}

/// How a command treats identities.lock.
#[derive(Clone, Copy, Debug)]
pub struct LockMode {
    /// Fail if the lock is missing or would change.
    pub locked: bool,
    /// Never write it.
    pub no_write: bool,
}

/// Resolves a checked policy set with the numbers of its identities.lock,
/// and writes the lock back when it changed (as `mode` allows). Errors are
/// printed; the exit code is returned.
pub fn resolve_with_lock(
    paths: &[std::path::PathBuf],
    frontend: &polc::driver::Frontend,
    config: &polc::resolve::ResolveConfig,
    mode: LockMode,
) -> Result<(polc::ir::Resolved, polc::resolve::IdentityLock), u8> {
    use polc::resolve::{self, IdentityLock, ResolveError};
    let lock_path = resolve::lock_path(paths);
    let existing = match std::fs::read_to_string(&lock_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", lock_path.display());
            return Err(EXIT_USAGE);
        }
    };
    let old_lock = match existing.as_deref().map(IdentityLock::parse).transpose() {
        Ok(lock) => lock.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: `{}`: {e}", lock_path.display());
            return Err(EXIT_INVALID);
        }
    };
    let (resolved, lock) = match resolve::resolve(&frontend.checked, &old_lock, config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            if let ResolveError::Capacity(capacity) = &e {
                for rule in &capacity.top_rules {
                    if let Some(span) = rule.span {
                        eprintln!(
                            "  --> {}: rule `{}` decides {} entries",
                            frontend.sources.locate(span),
                            rule.name,
                            rule.entries
                        );
                    }
                }
                eprintln!("  = help: split the policy, use ranges instead of single ports, or raise the limit (`polc show --max-entries N` shows the tables under a higher one)");
            }
            return Err(EXIT_INVALID);
        }
    };
    let lock_text = lock.render();
    if existing.as_deref() != Some(lock_text.as_str()) {
        if mode.locked {
            eprintln!("error: `{}` needs to be updated but --locked was passed", lock_path.display());
            return Err(EXIT_INVALID);
        }
        if !mode.no_write {
            if let Err(e) = std::fs::write(&lock_path, &lock_text) {
                eprintln!("error: cannot write `{}`: {e}", lock_path.display());
                return Err(EXIT_USAGE);
            }
        }
    }
    Ok((resolved, lock))
}

/// The policy set's `identities.lock` (empty when there is none yet), for
/// commands that take numbers from it without writing it. Unreadable: 2;
/// unparsable: 1.
pub fn read_lock(paths: &[std::path::PathBuf]) -> Result<polc::resolve::IdentityLock, u8> {
    let lock_path = polc::resolve::lock_path(paths);
    match std::fs::read_to_string(&lock_path) {
        Ok(text) => polc::resolve::IdentityLock::parse(&text).map_err(|e| {
            print_error(&format!("`{}`: {e}", lock_path.display()), None);
            EXIT_INVALID
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(polc::resolve::IdentityLock::default()),
        Err(e) => {
            print_error(&format!("cannot read `{}`: {e}", lock_path.display()), None);
            Err(EXIT_USAGE)
        }
    }
}
