//! The bad-input catalogue: `snapshots/diagnostics/` holds one small `.pol`
//! file per diagnostic code, named `<CODE>-<name>.pol`, each with the text
//! diagnostics `polc check` prints for it in a `.snap` file beside it.

use polc::diag::{codes, render};
use polc::driver;
use polc_suite::workspace_root;
use std::path::{Path, PathBuf};

fn catalogue_dir() -> PathBuf {
    workspace_root().join("snapshots/diagnostics")
}

/// `E0005-invalid-cidr.pol` -> the code it is named for, if any.
fn code_of(path: &Path) -> Option<codes::Code> {
    let stem = path.file_stem()?.to_str()?;
    let (id, name) = stem.split_once('-')?;
    codes::by_id(id).filter(|code| code.name == name)
}

#[test]
fn every_bad_file_reports_its_code() {
    insta::glob!("../snapshots/diagnostics", "*.pol", |path| {
        let file_name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 file name");
        let code = code_of(path).unwrap_or_else(|| panic!("`{file_name}` is not named `<CODE>-<name>.pol`"));
        let text = std::fs::read_to_string(path).expect("readable catalogue file");
        // Named by file name only, so snapshots do not depend on where the repo lives.
        let frontend = driver::check_text(file_name, &text);
        let diagnostics = frontend.diagnostics.sorted();
        assert!(
            diagnostics.iter().any(|d| d.code == code),
            "`{file_name}` should report {} but reports {:?}",
            code.id,
            diagnostics.iter().map(|d| d.code.id).collect::<Vec<_>>()
        );
        let rendered = render::render_all_text(&frontend.sources, &diagnostics);

        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(catalogue_dir());
        settings.set_prepend_module_to_snapshot(false);
        settings.remove_snapshot_suffix();
        settings.set_omit_expression(true);
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        settings.bind(|| insta::assert_snapshot!(stem, rendered));
    });
}

#[test]
fn every_code_has_a_bad_file_and_a_reference_row() {
    let files: Vec<PathBuf> = std::fs::read_dir(catalogue_dir())
        .expect("snapshots/diagnostics exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pol"))
        .collect();
    let reference = std::fs::read_to_string(workspace_root().join("lang-spec/REFERENCE.md")).expect("REFERENCE.md");
    let mut missing = Vec::new();
    for code in codes::ALL {
        if !files.iter().any(|f| code_of(f) == Some(*code)) {
            missing.push(format!("snapshots/diagnostics/{}-{}.pol", code.id, code.name));
        }
        let row = format!("| {} | `{}` |", code.id, code.name);
        if !reference.lines().any(|l| l.starts_with(&row)) {
            missing.push(format!("a row `{row} ...` in lang-spec/REFERENCE.md"));
        }
    }
    assert!(missing.is_empty(), "missing:\n{}", missing.join("\n"));
    assert!(files.len() >= 25, "the catalogue needs at least 25 files, has {}", files.len());
}
