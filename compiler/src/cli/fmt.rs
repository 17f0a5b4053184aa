//! `polc fmt PATH...`: rewrite `.pol` files in the canonical layout
//! (see `polc::format`); `--check` only reports, `--stdout` prints.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::diag::render;
use polc::driver;
use polc::format;
use polc::syntax::SourceMap;
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
}

/// What happened to one file.
enum Outcome {
    Unchanged,
    Changed,
    /// A syntax error (already reported).
    Invalid,
    /// Could not be read or written (already reported).
    IoError,
}

pub fn run(args: Args) -> u8 {
    let files = match driver::collect_files(&args.paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let outcomes: Vec<Outcome> = files.iter().map(|file| format_file(file, &args)).collect();
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let changed = count(|o| matches!(o, Outcome::Changed));
    if args.check && changed > 0 {
        let plural = if changed == 1 { "" } else { "s" };
        eprintln!("{changed} file{plural} not formatted: run `polc fmt` on them");
    }
    if count(|o| matches!(o, Outcome::IoError)) > 0 {
        EXIT_USAGE
    } else if count(|o| matches!(o, Outcome::Invalid)) > 0 || (args.check && changed > 0) {
        EXIT_INVALID
    } else {
        EXIT_OK
    }
}

fn format_file(path: &Path, args: &Args) -> Outcome {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            return Outcome::IoError;
        }
    };
    let mut sources = SourceMap::default();
    let file = sources.add(path, text);
    let text = &sources.file(file).text;
    let formatted = match format::format_text(file, text) {
        Ok(formatted) => formatted,
        Err(diagnostic) => {
            eprint!("{}", render::render_text(&sources, &diagnostic));
            return Outcome::Invalid;
        }
    };
    if args.stdout {
        print!("{formatted}");
    }
    let Some(difference) = format::first_difference(text, &formatted) else {
        return Outcome::Unchanged;
    };
    if args.check {
        println!("{}: not formatted", path.display());
        match (&difference.before, &difference.after) {
            (None, None) => println!("  line endings or the final newline differ"),
            (before, after) => {
                println!("  line {}:", difference.line);
                println!("  - {}", before.as_deref().unwrap_or("(end of file)"));
                println!("  + {}", after.as_deref().unwrap_or("(end of file)"));
            }
        }
    } else if !args.stdout {
        if let Err(e) = format::write_atomically(path, &formatted) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return Outcome::IoError;
        }
        println!("formatted {}", path.display());
    }
    Outcome::Changed
}
