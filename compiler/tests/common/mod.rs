//! Support shared by the integration tests of `polc`: running the binary
//! from the workspace root, and the random policy generator ([`testgen`],
//! which lives with the workspace's test support in tests/common/ so the
//! kernel tests draw the same policy sets).
#![allow(dead_code)] // each test binary uses a different part

#[path = "../../../tests/common/testgen.rs"]
pub mod testgen;

use std::path::{Path, PathBuf};
use std::process::Output;

/// The workspace root, where `examples/` and `snapshots/` live.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `polc ARGS...` from the workspace root, so paths in its output are
/// the relative ones given (`examples/l3-l4-rule/policy.pol:8`).
pub fn polc(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_polc"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("polc runs")
}

/// An example (`examples/NAME`), checked and resolved with fresh numbers.
pub fn resolved_example(name: &str) -> (polc::driver::Frontend, polc::ir::Resolved) {
    use polc::resolve::{resolve, IdentityLock, ResolveConfig};
    let frontend = polc::driver::load(&[workspace_root().join("examples").join(name)]).expect("example loads");
    assert!(!frontend.has_errors(), "{name} checks");
    let (resolved, _) =
        resolve(&frontend.checked, &IdentityLock::default(), &ResolveConfig::default()).expect("resolves");
    (frontend, resolved)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

/// Whether clang can run; prints a skip message if not, and fails under
/// CI=true (the clang tests must run there).
pub fn clang_present() -> bool {
    let present = std::process::Command::new("clang").arg("--version").output().is_ok();
    if !present {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true but clang is missing");
        eprintln!("SKIPPED: clang is not installed");
    }
    present
}
