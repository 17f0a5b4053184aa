//! The canonical layout of `.pol` files (`polc fmt`). lang-spec/FORMAT.md
//! describes it for authors; in short:
//!
//! - Items in source order, exactly one blank line between top-level items;
//!   consecutive one-line definitions (`ports`, `selector`, `peers`) keep a
//!   single blank line between them only where the author had one.
//! - Blocks (`policy`, `ingress`/`egress`, `endpoint`, `node`) open on the
//!   header's line and close on a line of their own; bodies are indented by
//!   two spaces; a block with nothing inside is written `{}`.
//! - In a policy, one blank line after `select` and between sections. Rules
//!   and endpoint fields keep their order, one per line; a single blank line
//!   is kept between them where the author had one.
//! - Endpoint fields stay in source order: reordering would change which of
//!   two conflicting fields a diagnostic points at, and the author's grouping.
//! - Inline spacing: `{app=web, tier in (a, b), !legacy}`,
//!   `allow name: from PEER, PEER on tcp/80, udp/53`,
//!   `10.0.0.0/8 except (10.1.0.0/16)` (always parenthesized), no trailing
//!   commas. Tokens are kept as written: quoted values stay quoted, port
//!   numbers keep their digits.
//! - No line is ever wrapped: one rule is one line, whatever its length.
//! - Comments are kept, in order: a comment on a line of its own stays
//!   before the element that follows it; a comment after an element stays at
//!   the end of that element's line; a comment inside an element that is
//!   printed on one line moves above it; comments at the end of a block stay
//!   before its `}`.
//!
//! Formatting is idempotent and preserves meaning: the checked model of the
//! output equals that of the input (compiler/tests/format.rs checks both, and
//! compiler/tests/format_comments.rs checks where comments and blank lines go).

mod comments;
mod printer;
mod write;

pub use comments::{scan as scan_comments, Comment};
pub use write::write_atomically;

use crate::diag::Diagnostic;
use crate::syntax::{ast::Module, parse, FileId};

/// The canonical form of one file's text; the syntax error if it does not parse.
pub fn format_text(file: FileId, text: &str) -> Result<String, Diagnostic> {
    let module = parse::parse_module(file, text)?;
    Ok(format_module(&module, text))
}

/// The canonical form of `module`, parsed from `text` (whose comments it reattaches).
pub fn format_module(module: &Module, text: &str) -> String {
    let comments = comments::scan(text);
    printer::Printer::new(text, &comments).module(module)
}

/// The first line where two texts differ.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineDifference {
    /// 1-based.
    pub line: usize,
    /// The line in each text; `None` past its end.
    pub before: Option<String>,
    pub after: Option<String>,
}

/// Where `before` and `after` first differ, line by line; `None` if they are equal.
pub fn first_difference(before: &str, after: &str) -> Option<LineDifference> {
    if before == after {
        return None;
    }
    let mut old = before.lines();
    let mut new = after.lines();
    let mut line = 1;
    loop {
        match (old.next(), new.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            // Equal lines throughout: the texts differ only in line endings or a final newline.
            (None, None) => return Some(LineDifference { line, before: None, after: None }),
            (a, b) => return Some(LineDifference { line, before: a.map(String::from), after: b.map(String::from) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formatted text, or the syntax error (which no expected output matches).
    fn fmt(text: &str) -> String {
        format_text(FileId(0), text).unwrap_or_else(|d| format!("does not parse: {}", d.message))
    }

    #[test]
    fn normalizes_inline_spacing() {
        let src = "policy  p{select{app = web,tier in(a,b,),! legacy}\ningress{allow x :from 10.0.0.0/8 except 10.1.0.0/16,{k}on tcp/80,udp/53}}";
        let want = "policy p {\n  select {app=web, tier in (a, b), !legacy}\n\n  ingress {\n    allow x: from 10.0.0.0/8 except (10.1.0.0/16), {k} on tcp/80, udp/53\n  }\n}\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn one_blank_line_between_items_and_kept_blank_lines_between_rules() {
        let src = "ports a = tcp/1\nports b = tcp/2\n\n\n\npolicy p {\nselect {}\negress {\nallow a: to world\n\n\nallow b: to host\nallow c: to all\n}\n}\n";
        let want = "ports a = tcp/1\nports b = tcp/2\n\npolicy p {\n  select {}\n\n  egress {\n    allow a: to world\n\n    allow b: to host\n    allow c: to all\n  }\n}\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn definitions_stay_grouped_but_blocks_are_set_apart() {
        let src = "ports a = tcp/1\nports b = tcp/2\n\n\nselector s = {}\nnode {}\nports c = tcp/3\n";
        let want = "ports a = tcp/1\nports b = tcp/2\n\nselector s = {}\n\nnode {}\n\nports c = tcp/3\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn empty_blocks_close_on_the_same_line() {
        assert_eq!(fmt("policy p { select $s egress {\n\n} }"), "policy p {\n  select $s\n\n  egress {}\n}\n");
        assert_eq!(fmt("endpoint e {\n}\nnode{}"), "endpoint e {}\n\nnode {}\n");
    }

    #[test]
    fn comments_stay_where_they_were() {
        let src = "# head\n\n# about p\npolicy p { # opens\n  select {a=b} # which\n  ingress {\n    # first\n    allow x: from world # why\n    # at the end\n  }\n} # after\n# tail\n";
        let want = "# head\n\n# about p\npolicy p { # opens\n  select {a=b} # which\n\n  ingress {\n    # first\n    allow x: from world # why\n    # at the end\n  }\n} # after\n# tail\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn comments_inside_a_one_line_element_move_above_it() {
        let src = "ports dns = udp/53, # classic\n  tcp/53 # big answers\n";
        assert_eq!(fmt(src), "# classic\nports dns = udp/53, tcp/53 # big answers\n");
    }

    #[test]
    fn a_comment_in_an_empty_block_keeps_it_open() {
        let src = "policy p { select {} egress { # nothing yet\n } }";
        assert_eq!(fmt(src), "policy p {\n  select {}\n\n  egress { # nothing yet\n  }\n}\n");
    }

    #[test]
    fn a_comment_before_an_empty_block_does_not_hide_one_inside() {
        let src = "endpoint e {\n}\n# about n\nnode {\n  # inside\n}\n";
        assert_eq!(fmt(src), "endpoint e {}\n\n# about n\nnode {\n  # inside\n}\n");
    }

    #[test]
    fn comments_inside_headers_move_above_the_header() {
        let src = "policy # a\n p # b\n { select {} egress # c\n { } }";
        assert_eq!(fmt(src), "# a\n# b\npolicy p {\n  select {}\n\n  # c\n  egress {}\n}\n");
    }

    #[test]
    fn comments_after_closing_braces_stay_on_their_line() {
        let src = "policy p { select {}\n ingress { } # i\n egress { allow a: to world } # e\n} # p\nnode {} # n\n";
        let want = "policy p {\n  select {}\n\n  ingress {} # i\n\n  egress {\n    allow a: to world\n  } # e\n} # p\n\nnode {} # n\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn blank_lines_around_comments_at_the_end_of_blocks_and_files_are_kept_once() {
        let src = "policy p {\n  select {}\n  egress {\n    allow a: to world\n\n\n    # later\n\n  }\n}\n\n\n# end\n";
        let want = "policy p {\n  select {}\n\n  egress {\n    allow a: to world\n\n    # later\n  }\n}\n\n# end\n";
        assert_eq!(fmt(src), want);
    }

    #[test]
    fn crlf_input_comes_out_with_lf_and_its_comments() {
        let src = "# a\r\nports p = tcp/1 # b\r\n";
        assert_eq!(fmt(src), "# a\nports p = tcp/1 # b\n");
    }

    #[test]
    fn comments_alone_and_empty_files() {
        assert_eq!(fmt(""), "");
        assert_eq!(fmt("\n\n"), "");
        assert_eq!(fmt("  # only\n\n\n# comments   \n"), "# only\n\n# comments\n");
    }

    #[test]
    fn quoted_values_and_port_digits_are_kept() {
        let src = "endpoint e { labels {note=\"a # b\", k=v,} port p = tcp/080 }";
        assert_eq!(fmt(src), "endpoint e {\n  labels {note=\"a # b\", k=v}\n  port p = tcp/080\n}\n");
    }

    #[test]
    fn first_difference_names_the_line() {
        let d = first_difference("a\nb\nc\n", "a\nB\nc\n");
        assert_eq!(d, Some(LineDifference { line: 2, before: Some("b".into()), after: Some("B".into()) }));
        let d = first_difference("a\n", "a\nb\n");
        assert_eq!(d, Some(LineDifference { line: 2, before: None, after: Some("b".into()) }));
        assert_eq!(first_difference("a\n", "a\n"), None);
        assert_eq!(first_difference("a", "a\n").map(|d| d.line), Some(2));
    }
}
