//! The `polc` command line. Each subcommand lives in its own file under
//! `cli/`; they are thin and call library code.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    restore_default_sigpipe();
    let args = cli::Cli::parse();
    cli::run(args)
}

/// Rust ignores SIGPIPE, so `polc ... | head` would panic in `println!` once
/// the reader goes away. A command-line tool should just stop, as `cat` does.
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
