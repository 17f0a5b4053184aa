//! The rendered headers of every example endpoint, as insta snapshots under
//! `snapshots/headers/` (the node header's snapshot is compiler/tests/codegen.rs's).

#![allow(clippy::panic)] // tests report failures by panicking

use polc::codegen::bundle::{plan_endpoints, BundleOptions};
use polc_suite::{example_dirs, resolve_example, workspace_root};

#[test]
fn headers_of_every_example() {
    let dirs = example_dirs();
    assert!(dirs.len() >= 3, "examples: {dirs:?}");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(workspace_root().join("snapshots/headers"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for dir in dirs {
            let example = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let (set, resolved) = resolve_example(&dir).unwrap_or_else(|e| panic!("{e}"));
            let planned = plan_endpoints(&resolved, &set.inventory.endpoints, &BundleOptions::default())
                .unwrap_or_else(|e| panic!("{example}: {e}"));
            for endpoint in planned {
                insta::assert_snapshot!(format!("{example}__{}", endpoint.manifest.name), endpoint.header);
            }
        }
    });
}
