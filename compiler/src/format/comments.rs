//! Comments, recovered from the source text. The grammar drops `#` comments
//! as silent tokens, so the AST has none; the printer reattaches these by
//! position.

/// One `# ...` comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// Byte offset of the `#`.
    pub start: usize,
    /// The comment from `#` to the end of its line, trailing whitespace removed.
    pub text: String,
}

/// Every comment of `text`, in source order. A `#` inside a double-quoted
/// label value (`{note="a#b"}`) is part of the value, not a comment.
pub fn scan(text: &str) -> Vec<Comment> {
    let bytes = text.as_bytes();
    let mut comments = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                let end = line_end(text, i);
                comments.push(Comment { start: i, text: text[i..end].trim_end().to_string() });
                i = end;
            }
            // A quoted value ends at the next quote or, unterminated, at the line's end.
            b'"' => {
                let close = bytes[i + 1..].iter().position(|&b| b == b'"' || b == b'\n');
                i = close.map_or(bytes.len(), |c| i + 1 + c + 1);
            }
            _ => i += 1,
        }
    }
    comments
}

/// The offset of the newline ending the line that contains `from` (or the text's end).
fn line_end(text: &str, from: usize) -> usize {
    text[from..].find('\n').map_or(text.len(), |n| from + n)
}

/// The offset of the next token at or after `pos`: whitespace and comments skipped.
/// `pos` must not be inside a quoted value.
pub fn next_token(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    while pos < bytes.len() {
        match bytes[pos] {
            b' ' | b'\t' | b'\r' | b'\n' => pos += 1,
            b'#' => pos = line_end(text, pos),
            _ => break,
        }
    }
    pos
}

/// The end of the last token in `start..end`: pest spans of rules that end
/// in an optional part (`allow ... on PORTS`, `CIDR except ...`) run on over
/// the whitespace and comments skipped while trying it.
/// `start` must not be inside a quoted value or a comment.
pub fn content_end(text: &str, start: usize, end: usize) -> usize {
    let bytes = text.as_bytes();
    let end = end.min(bytes.len());
    let mut last = start;
    let mut i = start;
    while i < end {
        match bytes[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => i = line_end(text, i),
            b'"' => {
                let close = bytes[i + 1..end].iter().position(|&b| b == b'"' || b == b'\n');
                i = close.map_or(end, |c| i + 1 + c + 1);
                last = i;
            }
            _ => {
                i += 1;
                last = i;
            }
        }
    }
    last
}

/// Whether at least one blank line separates `pos` from the text before it.
pub fn blank_line_before(text: &str, pos: usize) -> bool {
    let before = &text.as_bytes()[..pos.min(text.len())];
    let gap = before.iter().rev().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    gap.filter(|&&b| b == b'\n').count() >= 2
}

/// Whether only spaces and tabs lie between `from` and `to` (same line, nothing in between).
pub fn same_line_gap(text: &str, from: usize, to: usize) -> bool {
    text.get(from..to).is_some_and(|gap| gap.bytes().all(|b| b == b' ' || b == b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<String> {
        scan(src).into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn finds_full_line_and_trailing_comments() {
        let src = "# head\nports a = tcp/1 # tail  \n  # indented\n";
        assert_eq!(texts(src), ["# head", "# tail", "# indented"]);
        assert_eq!(scan(src)[1].start, src.find("# tail").unwrap_or_default());
    }

    #[test]
    fn hash_inside_quotes_is_not_a_comment() {
        let src = "selector s = {note=\"a # b\"} # real\n";
        assert_eq!(texts(src), ["# real"]);
    }

    #[test]
    fn quote_inside_comment_does_not_open_a_value() {
        let src = "# say \"hi\nports a = tcp/1 # x\n";
        assert_eq!(texts(src), ["# say \"hi", "# x"]);
    }

    #[test]
    fn next_token_skips_comments_and_blank_lines() {
        let src = "policy p # c\n\n  {";
        assert_eq!(next_token(src, 8), src.len() - 1);
    }

    #[test]
    fn content_end_ignores_trailing_comments_and_quoted_hashes() {
        let src = "allow x: from world # why\n  # more\n}";
        assert_eq!(content_end(src, 0, src.len() - 1), "allow x: from world".len());
        let src = "{k=\"# x\"}  ";
        assert_eq!(content_end(src, 0, src.len()), src.len() - 2);
    }

    #[test]
    fn blank_lines_are_detected_through_crlf() {
        assert!(blank_line_before("a\r\n\r\nb", 5));
        assert!(!blank_line_before("a\r\nb", 3));
        assert!(!blank_line_before("b", 0));
    }
}
