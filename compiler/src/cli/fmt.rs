//! `polc fmt PATH...`: rewrite `.pol` files in the canonical layout
//! (see `polc::format` and lang-spec/FORMAT.md); `--check` only reports,
//! `--stdout` prints.

use super::{Format, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::diag::render::{self, JsonDiagnostic};
use polc::driver;
use polc::format::{self, LineDifference};
use polc::syntax::SourceMap;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Policy files or directories (searched for `.pol` files)
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Write nothing; name the files that are not formatted and exit 1 if any
    #[arg(long, conflicts_with = "stdout")]
    check: bool,
    /// Print the formatted text instead of rewriting the files
    #[arg(long)]
    stdout: bool,
    /// `human` or `json` (a report on every file)
    #[arg(long, value_enum, default_value_t, conflicts_with = "stdout")]
    format: Format,
}

/// What became of one file.
#[derive(Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
enum Status {
    /// Already in the canonical layout.
    Unchanged,
    /// Rewritten (or printed, with `--stdout`).
    Formatted,
    /// With `--check`: would be rewritten.
    NotFormatted,
    /// Does not parse; left as it is.
    Invalid {
        diagnostic: JsonDiagnostic,
        #[serde(skip)]
        rendered: String,
    },
    /// Could not be read or written.
    IoError { message: String },
}

#[derive(Serialize)]
struct FileReport {
    path: PathBuf,
    #[serde(flatten)]
    status: Status,
    /// Where the file differs from its canonical form.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_difference: Option<LineDifference>,
}

pub fn run(args: Args) -> u8 {
    let files = match driver::collect_files(&args.paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let reports: Vec<FileReport> = files.iter().map(|path| format_file(path, &args)).collect();
    let has = |f: fn(&Status) -> bool| reports.iter().any(|r| f(&r.status));
    let code = if has(|s| matches!(s, Status::IoError { .. })) {
        EXIT_USAGE
    } else if has(|s| matches!(s, Status::Invalid { .. } | Status::NotFormatted)) {
        EXIT_INVALID
    } else {
        EXIT_OK
    };
    match args.format {
        Format::Human => print_human(&reports, args.stdout),
        Format::Json => {
            let out = serde_json::json!({ "ok": code == EXIT_OK, "files": reports });
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    }
    code
}

fn format_file(path: &Path, args: &Args) -> FileReport {
    let report = |status, first_difference| FileReport { path: path.to_path_buf(), status, first_difference };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return report(Status::IoError { message: format!("cannot read `{}`: {e}", path.display()) }, None),
    };
    let mut sources = SourceMap::default();
    let file = sources.add(path, text);
    let text = &sources.file(file).text;
    let formatted = match format::format_text(file, text) {
        Ok(formatted) => formatted,
        Err(d) => {
            let rendered = render::render_text(&sources, &d);
            return report(Status::Invalid { diagnostic: render::to_json(&sources, &d), rendered }, None);
        }
    };
    if args.stdout {
        // A closed pipe (`polc fmt --stdout x.pol | head`) is not an error of this file.
        let _ = std::io::stdout().write_all(formatted.as_bytes());
    }
    let Some(difference) = format::first_difference(text, &formatted) else {
        return report(Status::Unchanged, None);
    };
    if args.check {
        return report(Status::NotFormatted, Some(difference));
    }
    if !args.stdout {
        if let Err(e) = format::write_atomically(path, &formatted) {
            return report(Status::IoError { message: format!("cannot write `{}`: {e}", path.display()) }, None);
        }
    }
    report(Status::Formatted, Some(difference))
}

/// Diagnostics and errors on stderr; the files rewritten, or with `--check`
/// the files that differ, on stdout.
fn print_human(reports: &[FileReport], to_stdout: bool) {
    // Written without `println!`, which panics when the reader has gone (`| head`).
    let mut out = std::io::stdout().lock();
    let mut not_formatted = 0;
    for report in reports {
        let path = report.path.display();
        match &report.status {
            Status::Unchanged => {}
            // With `--stdout` the text itself was the output.
            Status::Formatted if to_stdout => {}
            Status::Formatted => {
                let _ = writeln!(out, "formatted {path}");
            }
            Status::NotFormatted => {
                not_formatted += 1;
                let _ = writeln!(out, "{path}: not formatted");
                match report.first_difference.as_ref() {
                    Some(LineDifference { line, before, after }) if before.is_some() || after.is_some() => {
                        let before = before.as_deref().unwrap_or("(end of file)");
                        let after = after.as_deref().unwrap_or("(end of file)");
                        let _ = writeln!(out, "  line {line}:\n  - {before}\n  + {after}");
                    }
                    _ => {
                        let _ = writeln!(out, "  line endings or the final newline differ");
                    }
                }
            }
            Status::Invalid { rendered, .. } => eprintln!("{rendered}"),
            Status::IoError { message } => eprintln!("error: {message}"),
        }
    }
    if not_formatted > 0 {
        let plural = if not_formatted == 1 { "" } else { "s" };
        eprintln!("{not_formatted} file{plural} not formatted: run `polc fmt` on them");
    }
}
