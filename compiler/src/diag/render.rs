//! Rendering diagnostics for people (`path:line:col: error[CODE]: message`,
//! the source line, a caret, a help line) and for machines (JSON).
//!
//! Hand-written rather than via codespan-reporting or annotate-snippets:
//! both put the location on a second line, and the first line here must be
//! the `path:line:col:` form that editors, grep and CI annotations parse.

use super::{Diagnostic, Severity};
use crate::syntax::SourceMap;
use serde::Serialize;
use std::fmt::Write;

/// One diagnostic as text, ending in a newline.
pub fn render_text(sources: &SourceMap, d: &Diagnostic) -> String {
    let mut out = String::new();
    let primary = d.primary_span();
    let severity = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let _ = writeln!(out, "{}: {severity}[{}]: {}", sources.locate(primary), d.code.id, d.message);

    // Primary label first, then the others in source order.
    let mut labels: Vec<_> = d.labels.iter().collect();
    labels.sort_by_key(|l| (!l.primary, l.span));
    let width = labels
        .iter()
        .map(|l| sources.file(l.span.file).line_col(l.span.start as usize).line.to_string().len())
        .max()
        .unwrap_or(1);
    let pad = " ".repeat(width);
    // A label on the line just shown only adds its marker line under it.
    let mut shown: Option<(crate::syntax::FileId, usize)> = None;
    for label in labels {
        let file = sources.file(label.span.file);
        let start = file.line_col(label.span.start as usize);
        let end = file.line_col(label.span.end as usize);
        let same_line = shown == Some((label.span.file, start.line));
        if label.span.file != primary.file && !same_line {
            let _ = writeln!(out, "{pad}--> {}", sources.locate(label.span));
        }
        let line = file.line_text(start.line);
        let underline_len = if end.line == start.line {
            end.col.saturating_sub(start.col).max(1)
        } else {
            line.chars().count().saturating_sub(start.col - 1).max(1)
        };
        let marker = if label.primary { "^" } else { "-" };
        if !same_line {
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{:>width$} | {line}", start.line);
            shown = Some((label.span.file, start.line));
        }
        let note = if label.message.is_empty() { String::new() } else { format!(" {}", label.message) };
        let _ = writeln!(out, "{pad} | {}{}{note}", " ".repeat(start.col - 1), marker.repeat(underline_len));
    }
    if let Some(help) = &d.help {
        let _ = writeln!(out, "{pad} = help: {help}");
    }
    out
}

/// All diagnostics as text, followed by a summary line when there are any.
pub fn render_all_text(sources: &SourceMap, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&render_text(sources, d));
        out.push('\n');
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if !diagnostics.is_empty() {
        let _ = writeln!(out, "{}", summary(errors, warnings));
    }
    out
}

pub fn summary(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!("{}, {}", plural(errors, "error"), plural(warnings, "warning"))
}

#[derive(Serialize)]
pub struct JsonLabel {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub message: String,
    pub primary: bool,
}

#[derive(Serialize)]
pub struct JsonDiagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub labels: Vec<JsonLabel>,
    pub help: Option<String>,
}

pub fn to_json(sources: &SourceMap, d: &Diagnostic) -> JsonDiagnostic {
    let labels: Vec<JsonLabel> = d
        .labels
        .iter()
        .map(|l| {
            let file = sources.file(l.span.file);
            let start = file.line_col(l.span.start as usize);
            let end = file.line_col(l.span.end as usize);
            JsonLabel {
                file: file.path.display().to_string(),
                line: start.line,
                column: start.col,
                end_line: end.line,
                end_column: end.col,
                message: l.message.clone(),
                primary: l.primary,
            }
        })
        .collect();
    let primary = labels.iter().find(|l| l.primary);
    JsonDiagnostic {
        severity: d.severity,
        code: d.code.id,
        message: d.message.clone(),
        file: primary.map(|l| l.file.clone()).unwrap_or_default(),
        line: primary.map_or(0, |l| l.line),
        column: primary.map_or(0, |l| l.column),
        labels,
        help: d.help.clone(),
    }
}
