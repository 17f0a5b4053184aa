//! `polc test PATH...`: runs the policy tests (`.poltest` files, see
//! lang-spec/TESTING.md) against the policy set.
//!
//! Directories give both their `.pol` files (the policy set) and their
//! `.poltest` files (the tests); a file is a test when it ends in
//! `.poltest`, and part of the policy set otherwise.
//!
//! Exit codes: 0 every test passed, 1 a test failed (or the policy set is
//! invalid), 2 a test file is malformed (`file:line:col`) or unreadable.

use super::{load_checked, print_error, Format, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use polc::driver::{self, LoadError};
use polc::eval::testfile::{self, Outcome, TestFile};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Policy directories (with their `.poltest` files), policy files, test files
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// `human` (failures and a summary) or `json`
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(args: Args) -> u8 {
    let (policy_paths, test_paths) = match split_paths(&args.paths) {
        Ok(split) => split,
        Err(e) => {
            print_error(&e, None);
            return EXIT_USAGE;
        }
    };
    if test_paths.is_empty() {
        print_error(
            &"no `.poltest` files found",
            Some("put tests in `*.poltest` files next to the policy, or name them"),
        );
        return EXIT_USAGE;
    }
    let frontend = match load_checked(&policy_paths) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut results: Vec<(TestFile, Vec<Outcome>)> = Vec::new();
    for path in test_paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                print_error(&format!("cannot read `{}`: {e}", path.display()), None);
                return EXIT_USAGE;
            }
        };
        let outcome = testfile::parse(&path, &text)
            .and_then(|file| testfile::run(&frontend.checked, &frontend.sources, &file).map(|o| (file, o)));
        match outcome {
            Ok(result) => results.push(result),
            Err(e) => {
                print_error(&e, e.help.as_deref());
                return EXIT_USAGE;
            }
        }
    }
    let failed: usize = results.iter().flat_map(|(_, o)| o).filter(|o| !o.passed).count();
    let passed: usize = results.iter().map(|(_, o)| o.len()).sum::<usize>() - failed;
    match args.format {
        Format::Human => print!("{}", report_text(&results, passed, failed)),
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&report_json(&results, passed, failed)).unwrap_or_default())
        }
    }
    if failed == 0 {
        EXIT_OK
    } else {
        EXIT_INVALID
    }
}

/// Policy paths and test files: directories count as both.
fn split_paths(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>), LoadError> {
    let mut policies = Vec::new();
    let mut tests = Vec::new();
    for path in paths {
        if path.is_dir() {
            policies.push(path.clone());
            tests.extend(driver::find_files(path, "poltest")?);
        } else if path.extension().is_some_and(|e| e == "poltest") {
            tests.push(path.clone());
        } else {
            policies.push(path.clone());
        }
    }
    tests.sort();
    tests.dedup();
    Ok((policies, tests))
}

fn report_text(results: &[(TestFile, Vec<Outcome>)], passed: usize, failed: usize) -> String {
    let mut out = String::new();
    for (file, outcomes) in results {
        for o in outcomes.iter().filter(|o| !o.passed) {
            out.push_str(&format!("FAIL {}:{}: {}\n", file.path.display(), o.line, o.text));
            out.push_str(&format!("  expected: {}\n", o.expected));
            out.push_str(&format!("  actual:   {}\n", o.actual.headline));
            out.push_str(&format!("  why:      {}\n", o.actual.reason));
        }
        let bad = outcomes.iter().filter(|o| !o.passed).count();
        let status = if bad == 0 { "ok" } else { "FAILED" };
        out.push_str(&format!("{status} {}: {} passed, {bad} failed\n", file.path.display(), outcomes.len() - bad));
    }
    out.push_str(&format!("{passed} passed, {failed} failed\n"));
    out
}

fn report_json(results: &[(TestFile, Vec<Outcome>)], passed: usize, failed: usize) -> serde_json::Value {
    let files: Vec<_> = results
        .iter()
        .map(|(file, outcomes)| {
            let tests: Vec<_> = outcomes
                .iter()
                .map(|o| {
                    json!({
                        "line": o.line,
                        "test": o.text,
                        "passed": o.passed,
                        "expected": o.expected,
                        "actual": {
                            "verdict": o.actual_verdict.keyword(),
                            "rules": o.actual_rules,
                            "summary": o.actual.headline,
                            "reason": o.actual.reason,
                        },
                    })
                })
                .collect();
            json!({ "path": file.path.display().to_string(), "tests": tests })
        })
        .collect();
    json!({ "passed": passed, "failed": failed, "files": files })
}
