//! Reading the policy directory for a reload. Every file is read again (a
//! change may touch any of them), but only a file whose text changed since
//! the last read is parsed again: in a one-file edit, the other files'
//! modules come from memory. Checking always runs over the whole set.

use super::catalog::{rules_of, RuleInfo};
use polc::sema::model::PolicySet;
use polc::syntax::{ast::Module, parse::parse_module, SourceMap};
use std::path::{Path, PathBuf};

/// The policy directory and the modules of its last read.
pub struct PolicyReader {
    dir: PathBuf,
    /// Per file of the last read, in order: its path, text and module. A
    /// module's spans carry its file's position, so one is reused only at
    /// the same position, for the same path and text.
    parsed: Vec<Option<(PathBuf, String, Module)>>,
}

impl PolicyReader {
    pub fn new(dir: &Path) -> PolicyReader {
        PolicyReader { dir: dir.to_path_buf(), parsed: Vec::new() }
    }

    /// Reads, parses and checks the directory (and locates its rules);
    /// errors rendered as text.
    pub fn read(&mut self) -> Result<(PolicySet, Vec<RuleInfo>), String> {
        let files = polc::driver::collect_files(std::slice::from_ref(&self.dir)).map_err(|e| e.to_string())?;
        let mut sources = SourceMap::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
            sources.add(file, text);
        }
        let mut diagnostics = polc::diag::Diagnostics::default();
        let mut modules = Vec::new();
        let mut parsed = Vec::new();
        for (id, file) in sources.files() {
            let known = self.parsed.get(id.0 as usize).and_then(Option::as_ref);
            let module = match known.filter(|(path, text, _)| *path == file.path && *text == file.text) {
                Some((_, _, module)) => Ok(module.clone()),
                None => parse_module(id, &file.text),
            };
            match module {
                Ok(module) => {
                    parsed.push(Some((file.path.clone(), file.text.clone(), module.clone())));
                    modules.push(module);
                }
                Err(d) => {
                    parsed.push(None);
                    diagnostics.push(d);
                }
            }
        }
        self.parsed = parsed;
        let (checked, check_diagnostics) = polc::sema::check(&sources, &modules);
        diagnostics.extend(check_diagnostics);
        if diagnostics.has_errors() {
            let all: Vec<_> = diagnostics.iter().cloned().collect();
            return Err(polc::diag::render::render_all_text(&sources, &all).trim_end().to_string());
        }
        let rules = rules_of(&checked, &sources);
        Ok((checked, rules))
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::PolicyReader;

    const ENDPOINTS: &str = "endpoint a {\n  labels {id=a}\n  ipv4 10.0.0.1\n}\n";

    fn policy(port: u16) -> String {
        format!("policy p {{\n  select {{id=a}}\n  ingress {{\n    allow web: from {{id=a}} on tcp/{port}\n  }}\n}}\n")
    }

    #[test]
    fn rereads_see_every_change_and_equal_a_fresh_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("a.pol"), ENDPOINTS).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("b.pol"), policy(80)).unwrap_or_else(|e| panic!("{e}"));
        let mut reader = PolicyReader::new(dir.path());
        let fresh = |reader_dir: &std::path::Path| PolicyReader::new(reader_dir).read();
        assert_eq!(format!("{:?}", reader.read()), format!("{:?}", fresh(dir.path())));

        // One file edited: the other's module is reused, the result is a fresh read's.
        std::fs::write(dir.path().join("b.pol"), policy(81)).unwrap_or_else(|e| panic!("{e}"));
        let set = reader.read().unwrap_or_else(|e| panic!("{e}"));
        assert!(format!("{set:?}").contains("81"));
        assert_eq!(format!("{:?}", Ok::<_, String>(set)), format!("{:?}", fresh(dir.path())));

        // A file added before the others shifts their positions: still a fresh read's result.
        std::fs::write(dir.path().join("0.pol"), "policy q {\n  select {id=a}\n}\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{:?}", reader.read()), format!("{:?}", fresh(dir.path())));

        // A broken file is an error naming it; fixing it reads again.
        std::fs::write(dir.path().join("b.pol"), "policy p {\n  select {id=a\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(reader.read().is_err_and(|e| e.contains("b.pol")));
        std::fs::write(dir.path().join("b.pol"), policy(82)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{:?}", reader.read()), format!("{:?}", fresh(dir.path())));
    }
}
