//! Subcommands of `polc`, one file each.
//!
//! Exit codes: 0 success (warnings allowed), 1 the input is invalid or a
//! check/test failed, 2 usage or I/O error.

mod check;
mod fmt;
mod test;
mod trace;
mod show;

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
    /// Parse and check policy files; report every error and warning
    Check(check::Args),
    /// Rewrite policy files in the canonical layout (`--check` only reports)
    Fmt(fmt::Args),
    /// Evaluate one flow against the policy: allowed or denied, by which rule, and why
    Trace(trace::Args),
    /// Run policy tests (`.poltest` files: flows and their expected verdicts)
    Test(test::Args),
    /// Resolve identities and per-endpoint tables, and show them; writes identities.lock
    Show(show::Args),
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
        Command::Check(args) => check::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Test(args) => test::run(args),
        Command::Show(args) => show::run(args),
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
