//! A dump of the checked AST of each example policy set (spans omitted), so a
//! grammar or parser change shows up as a reviewable diff.

use polc::driver;
use polc_suite::workspace_root;
use serde::Serialize;

/// One file of a policy set: its path relative to the example, and its AST.
#[derive(Serialize)]
struct FileDump<'a> {
    file: String,
    module: &'a polc::syntax::ast::Module,
}

#[test]
fn examples_ast() {
    let mut examples: Vec<_> = std::fs::read_dir(workspace_root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no examples found");
    for dir in examples {
        let name = dir.file_name().and_then(|n| n.to_str()).expect("utf-8 example name").to_string();
        let frontend = driver::load(std::slice::from_ref(&dir)).expect("example loads");
        assert!(!frontend.has_errors(), "example `{name}` has errors: {:?}", frontend.diagnostics);
        // Every file parsed, so modules and files line up one to one.
        let dump: Vec<FileDump<'_>> = frontend
            .sources
            .files()
            .zip(&frontend.modules)
            .map(|((_, file), module)| FileDump {
                file: file.path.strip_prefix(&dir).unwrap_or(&file.path).display().to_string(),
                module,
            })
            .collect();
        let json = serde_json::to_string_pretty(&dump).expect("AST serializes");

        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(workspace_root().join("snapshots/ast"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_input_file(&dir);
        settings.bind(|| insta::assert_snapshot!(name, json));
    }
}
