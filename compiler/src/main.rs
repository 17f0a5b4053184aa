//! The `polc` command line. Each subcommand lives in its own file under
//! `cli/`; they are thin and call library code.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::run(args)
}
