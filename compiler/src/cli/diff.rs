//! `polc diff OLD NEW` and `polc diff --git REV1 REV2 [PATH]`: the flows
//! whose verdict changes between two policy sets (see `polc::diff`).

use super::{load_checked, print_error, Format, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::diff::{self, Report};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct Args {
    /// OLD NEW (each a `.pol` file or a directory); with `--git`: REV1 REV2 [PATH]
    #[arg(required = true, num_args = 2..=3)]
    args: Vec<String>,
    /// Compare two git revisions of PATH (default `.`), read with `git show`
    #[arg(long)]
    git: bool,
    /// Exit 1 when any verdict changes (for CI)
    #[arg(long)]
    exit_code: bool,
    /// `human` or `json`
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(args: Args) -> u8 {
    match compare(&args) {
        Ok(code) | Err(code) => code,
    }
}

fn compare(args: &Args) -> Result<u8, u8> {
    // The temp dirs live until the comparison is done.
    let mut temps = Vec::new();
    let (old, new) = if args.git {
        let path = args.args.get(2).map_or(".", String::as_str);
        let old = checkout(&args.args[0], path)?;
        let new = checkout(&args.args[1], path)?;
        let paths = (old.path().to_path_buf(), new.path().to_path_buf());
        temps.push(old);
        temps.push(new);
        paths
    } else {
        if args.args.len() != 2 {
            print_error(&"expected OLD and NEW", Some("`polc diff OLD NEW`, or `polc diff --git REV1 REV2 [PATH]`"));
            return Err(EXIT_USAGE);
        }
        (PathBuf::from(&args.args[0]), PathBuf::from(&args.args[1]))
    };
    let old_set = load_checked(&[old])?;
    let new_set = load_checked(&[new])?;
    let report = diff::diff(&old_set.checked, &new_set.checked);
    drop(temps);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Format::Human => print!("{}", to_text(&report)),
    }
    Ok(if args.exit_code && !report.changes.is_empty() { EXIT_INVALID } else { EXIT_OK })
}

fn to_text(report: &Report) -> String {
    let mut out = String::new();
    for (side, names) in [("old", &report.only_old), ("new", &report.only_new)] {
        for name in names {
            out.push_str(&format!(
                "note: endpoint `{name}` is only in the {side} inventory; both sides are evaluated with its one definition\n"
            ));
        }
    }
    for change in &report.changes {
        out.push_str(&change.to_text());
        out.push('\n');
    }
    if report.changes.is_empty() {
        out.push_str(&format!("no verdict changes ({} flows compared)\n", report.compared));
    } else {
        out.push_str(&format!(
            "{} changes: {} now allowed, {} now denied ({} flows compared)\n",
            report.changes.len(),
            report.widened(),
            report.narrowed(),
            report.compared
        ));
    }
    out
}

fn git(args: &[&str]) -> Result<Vec<u8>, u8> {
    let output = Command::new("git").args(args).output().map_err(|e| {
        print_error(&format!("cannot run `git`: {e}"), None);
        EXIT_USAGE
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        print_error(&format!("`git {}` failed: {}", args.join(" "), stderr.trim()), None);
        return Err(EXIT_USAGE);
    }
    Ok(output.stdout)
}

/// The `.pol` files of `path` at `rev`, written under a temp dir with
/// their paths (relative to the current directory) kept, so that rule ids
/// number as they would in a checkout.
fn checkout(rev: &str, path: &str) -> Result<tempfile::TempDir, u8> {
    let listing = git(&["ls-tree", "-r", "--name-only", rev, "--", path])?;
    let dir = tempfile::tempdir().map_err(|e| {
        print_error(&format!("cannot create a temp dir: {e}"), None);
        EXIT_USAGE
    })?;
    let mut any = false;
    for file in String::from_utf8_lossy(&listing).lines().filter(|f| f.ends_with(".pol")) {
        let text = git(&["show", &format!("{rev}:./{file}")])?;
        let target = dir.path().join(Path::new(file));
        let written =
            target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&target, text));
        written.map_err(|e| {
            print_error(&format!("cannot write `{}`: {e}", target.display()), None);
            EXIT_USAGE
        })?;
        any = true;
    }
    if !any {
        print_error(&format!("`{path}` has no `.pol` files at `{rev}`"), None);
        return Err(EXIT_USAGE);
    }
    Ok(dir)
}
