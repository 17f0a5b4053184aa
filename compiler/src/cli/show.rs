//! `polc show PATH...`: the identity table, the ipcache and each endpoint's
//! resolved entries. Writes or updates `identities.lock` next to the policy
//! set (in the first directory given, or next to the first file).

use super::{Format, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::diag::render;
use polc::driver;
use polc::resolve::{self, show, IdentityLock, ResolveConfig, ResolveError};
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
    let lock_path = resolve::lock_path(&args.paths);
    let existing = match std::fs::read_to_string(&lock_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", lock_path.display());
            return EXIT_USAGE;
        }
    };
    let old_lock = match existing.as_deref().map(IdentityLock::parse).transpose() {
        Ok(lock) => lock.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: `{}`: {e}", lock_path.display());
            return EXIT_INVALID;
        }
    };
    let config = ResolveConfig {
        ignored_label_keys: args.ignore_labels.into_iter().collect(),
        max_entries_per_endpoint: args.max_entries,
    };
    let (resolved, lock) = match resolve::resolve(&frontend.checked, &old_lock, &config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            if let ResolveError::Capacity(capacity) = &e {
                for rule in &capacity.top_rules {
                    if let Some(span) = rule.span {
                        eprintln!("  --> {}: rule `{}` decides {} entries", frontend.sources.locate(span), rule.name, rule.entries);
                    }
                }
                eprintln!("  = help: split the policy, use ranges instead of single ports, or raise --max-entries");
            }
            return EXIT_INVALID;
        }
    };
    let lock_text = lock.render();
    if existing.as_deref() != Some(lock_text.as_str()) {
        if args.locked {
            eprintln!("error: `{}` needs to be updated but --locked was passed", lock_path.display());
            return EXIT_INVALID;
        }
        if !args.no_write_lock {
            if let Err(e) = std::fs::write(&lock_path, &lock_text) {
                eprintln!("error: cannot write `{}`: {e}", lock_path.display());
                return EXIT_USAGE;
            }
        }
    }
    match args.format {
        Format::Human => print!("{}", show::render_text(&resolved, &frontend.checked)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&show::to_json(&resolved)).unwrap_or_default()),
    }
    EXIT_OK
}
