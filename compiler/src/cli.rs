//! Subcommands of `polc`, one file each.
//!
//! Exit codes: 0 success (warnings allowed), 1 the input is invalid or a
//! check/test failed, 2 usage or I/O error.

mod check;
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
        Command::Show(args) => show::run(args),
    };
    ExitCode::from(code)
}
