//! `polc show` output for every example, as insta snapshots under
//! `snapshots/show/`, resolved against each example's committed
//! `identities.lock` (which must be up to date).

use polc::driver;
use polc::resolve::{self, show, IdentityLock, ResolveConfig};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots/show"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}

fn name(dir: &Path) -> String {
    dir.file_name().expect("name").to_string_lossy().into_owned()
}

fn resolve_example(dir: &Path) -> (polc::sema::model::PolicySet, polc::ir::Resolved) {
    let frontend = driver::load(&[dir.to_path_buf()]).expect("loads");
    assert!(!frontend.has_errors(), "{}", dir.display());
    let lock_file = resolve::lock_path(&[dir.to_path_buf()]);
    let text = std::fs::read_to_string(&lock_file).expect("every example commits its identities.lock");
    let lock = IdentityLock::parse(&text).expect("lock parses");
    let (resolved, new_lock) = resolve::resolve(&frontend.checked, &lock, &ResolveConfig::default()).expect("resolves");
    assert_eq!(new_lock.render(), text, "{} is out of date: run `polc show {}`", lock_file.display(), dir.display());
    (frontend.checked, resolved)
}

#[test]
fn show_text_for_every_example() {
    let dirs = examples();
    assert!(dirs.len() >= 3);
    for dir in dirs {
        let (set, resolved) = resolve_example(&dir);
        settings().bind(|| insta::assert_snapshot!(name(&dir), show::render_text(&resolved, &set)));
    }
}

#[test]
fn show_json_for_l3_l4_rule() {
    let (_, resolved) = resolve_example(&root().join("examples/l3-l4-rule"));
    settings().bind(|| insta::assert_json_snapshot!("l3-l4-rule.json", show::to_json(&resolved)));
}

#[test]
fn resolving_twice_is_byte_identical() {
    for dir in examples() {
        let (set, resolved) = resolve_example(&dir);
        let (again_set, again) = resolve_example(&dir);
        assert_eq!(show::render_text(&resolved, &set), show::render_text(&again, &again_set));
        assert_eq!(show::to_json(&resolved).to_string(), show::to_json(&again).to_string());
    }
}
