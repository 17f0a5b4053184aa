//! `polc check PATH...`: parse and check, report every diagnostic.

use super::{Format, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::diag::render;
use polc::driver;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Policy files or directories (searched for `.pol` files)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// `human` (file:line:col with source and caret) or `json`
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(args: Args) -> u8 {
    let frontend = match driver::load(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let failed = frontend.has_errors();
    let diagnostics = frontend.diagnostics.sorted();
    match args.format {
        Format::Human => {
            eprint!("{}", render::render_all_text(&frontend.sources, &diagnostics));
            if !failed {
                let files = frontend.sources.files().count();
                let policies = frontend.checked.policies.len();
                let rules = frontend.checked.rules().count();
                let endpoints = frontend.checked.inventory.endpoints.len();
                println!("ok: {files} files, {policies} policies, {rules} rules, {endpoints} endpoints");
            }
        }
        Format::Json => {
            let json: Vec<_> = diagnostics.iter().map(|d| render::to_json(&frontend.sources, d)).collect();
            let out = serde_json::json!({
                "ok": !failed,
                "errors": diagnostics.iter().filter(|d| d.is_error()).count(),
                "warnings": diagnostics.iter().filter(|d| !d.is_error()).count(),
                "diagnostics": json,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    }
    if failed {
        EXIT_INVALID
    } else {
        EXIT_OK
    }
}
