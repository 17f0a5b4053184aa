//! `polc show PATH...`: the identity table, the ipcache and each endpoint's
//! resolved entries. Writes or updates `identities.lock` next to the policy
//! set (in the first directory given, or next to the first file).

use super::{resolve_with_lock, Format, LockMode, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::diag::render;
use polc::driver;
use polc::resolve::{show, ResolveConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Policy files or directories (searched for `.pol` files)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// `human` or `json`
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Fail (exit 1) if identities.lock is missing or would change, instead of writing it
    #[arg(long)]
    locked: bool,
    /// Do not write identities.lock (numbers are still taken from it)
    #[arg(long)]
    no_write_lock: bool,
    /// A label key that does not count towards identities (repeatable), e.g. `pod-template-hash`
    #[arg(long = "ignore-label", value_name = "KEY")]
    ignore_labels: Vec<String>,
    /// Most policy entries one endpoint may need (both directions)
    #[arg(long, default_value_t = ResolveConfig::DEFAULT_MAX_ENTRIES)]
    max_entries: usize,
}

pub fn run(args: Args) -> u8 {
    let frontend = match driver::load(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if frontend.has_errors() {
        eprint!("{}", render::render_all_text(&frontend.sources, &frontend.diagnostics.sorted()));
        return EXIT_INVALID;
    }
    let config = ResolveConfig {
        ignored_label_keys: args.ignore_labels.into_iter().collect(),
        max_entries_per_endpoint: args.max_entries,
    };
    let mode = LockMode { locked: args.locked, no_write: args.no_write_lock };
    let (resolved, _lock) = match resolve_with_lock(&args.paths, &frontend, &config, mode) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match args.format {
        Format::Human => print!("{}", show::render_text(&resolved, &frontend.checked)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&show::to_json(&resolved)).unwrap_or_default()),
    }
    EXIT_OK
}
