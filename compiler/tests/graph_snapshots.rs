//! `polc graph` output for every example, as insta snapshots under
//! `snapshots/graph/`: the DOT text and the HTML page (which embeds the
//! SVG). Sources are loaded under `examples/NAME/` so the `file:line:col`
//! the pictures show do not depend on where the repository is.

use polc::driver;
use polc::graph::{self, Graph};
use polc::resolve::{self, IdentityLock, ResolveConfig};
use polc::syntax::SourceMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots/graph"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// The example's graph, resolved against its committed lock.
fn graph_of(name: &str) -> Graph {
    let dir = root().join("examples").join(name);
    let mut sources = SourceMap::default();
    for file in driver::collect_files(std::slice::from_ref(&dir)).expect("lists the example") {
        let text = std::fs::read_to_string(&file).expect("reads");
        let shown = Path::new("examples").join(name).join(file.file_name().expect("a file name"));
        sources.add(shown, text);
    }
    let frontend = driver::check_sources(sources);
    assert!(!frontend.has_errors(), "{name}: {:?}", frontend.diagnostics);
    let lock_text = std::fs::read_to_string(dir.join(resolve::LOCK_FILE)).expect("the example's lock");
    let lock = IdentityLock::parse(&lock_text).expect("lock parses");
    let (resolved, _) = resolve::resolve(&frontend.checked, &lock, &ResolveConfig::default()).expect("resolves");
    graph::build(&resolved, &frontend.checked, &frontend.sources)
}

#[test]
fn dot_for_every_example() {
    let names = examples();
    assert!(names.len() >= 3);
    for name in names {
        let dot = graph::dot::render(&graph_of(&name));
        settings().bind(|| insta::assert_snapshot!(format!("{name}.dot"), dot));
    }
}

#[test]
fn html_for_every_example() {
    for name in examples() {
        let html = graph::html::render(&graph_of(&name), &format!("examples/{name}"));
        settings().bind(|| insta::assert_snapshot!(format!("{name}.html"), html));
    }
}

#[test]
fn svg_is_well_formed_and_self_contained() {
    for name in examples() {
        let g = graph_of(&name);
        let svg = graph::svg::render(&g, &name);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{name}");
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(!svg.contains("href"), "{name}: no external resources");
        // Every node is drawn by its name, every edge label is there.
        for node in &g.nodes {
            for line in node.label.lines() {
                assert!(svg.contains(&format!(">{line}</text>")), "{name}: node `{line}` missing");
            }
        }
        let open_tags = svg.matches("<g").count();
        assert_eq!(open_tags, svg.matches("</g>").count(), "{name}: unbalanced groups");
    }
}
