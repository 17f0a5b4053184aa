//! Where `polc fmt` puts comments and blank lines, checked against a
//! reference. The generator builds a document whose comments sit at known
//! places (before an element, after it on its line, after a `{`, before a
//! `}`, after a `}`, at the end of the file), writes it out with a random
//! messy layout, and renders separately the text `polc fmt` must produce from
//! it, following lang-spec/FORMAT.md. The two renderings share nothing with
//! the formatter but the canonical form of single elements.

#![allow(clippy::panic)] // tests report failures by panicking

use polc::format::format_text;
use polc::syntax::FileId;
use proptest::prelude::*;

/// An own-line comment and whether a blank line precedes it in the source.
#[derive(Debug, Clone)]
struct OwnLine {
    blank_before: bool,
    text: String,
}

/// A line-level element with the comments around it. For a block's header,
/// `trailing` is the comment after its `{`.
#[derive(Debug, Clone)]
struct Line {
    leading: Vec<OwnLine>,
    blank_before: bool,
    text: String,
    trailing: Option<String>,
}

#[derive(Debug, Clone)]
enum Child {
    Line(Line),
    Block(Block),
}

#[derive(Debug, Clone)]
struct Block {
    header: Line,
    children: Vec<Child>,
    /// Sections in a policy are always set apart by a blank line.
    children_set_apart: bool,
    end_comments: Vec<OwnLine>,
    after_close: Option<String>,
}

#[derive(Debug, Clone)]
enum Item {
    Definition(Line),
    Block(Block),
}

#[derive(Debug, Clone)]
struct Document {
    items: Vec<Item>,
    end_comments: Vec<OwnLine>,
}

// ------------------------------------------------------------ generation

fn pick(choices: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop::sample::select(choices).prop_map(String::from)
}

fn comment() -> impl Strategy<Value = String> {
    "[a-z\"#{}]{0,6}".prop_map(|text| format!("# {text}").trim_end().to_string())
}

fn own_lines() -> impl Strategy<Value = Vec<OwnLine>> {
    prop::collection::vec(
        (any::<bool>(), comment()).prop_map(|(blank_before, text)| OwnLine { blank_before, text }),
        0..3,
    )
}

fn line(texts: impl Strategy<Value = String>) -> impl Strategy<Value = Line> {
    (own_lines(), any::<bool>(), texts, prop::option::of(comment()))
        .prop_map(|(leading, blank_before, text, trailing)| Line { leading, blank_before, text, trailing })
}

fn block(
    header: &'static str,
    children: impl Strategy<Value = Vec<Child>>,
    set_apart: bool,
) -> impl Strategy<Value = Block> {
    (line(Just(header.to_string())), children, own_lines(), prop::option::of(comment())).prop_map(
        move |(header, children, end_comments, after_close)| Block {
            header,
            children,
            children_set_apart: set_apart,
            end_comments,
            after_close,
        },
    )
}

/// Elements in their canonical form; every space in them may become any whitespace.
const RULES: &[&str] = &[
    "allow a: from world on tcp/80",
    "deny b: to {app=web, tier in (a, b)}, 10.0.0.0/8 except (10.1.0.0/16)",
    "allow c: from $p on $web, udp/53",
    "deny d: from {!legacy, team not in (ops)} on tcp/8000-8080",
];
const FIELDS: &[&str] =
    &["labels {app=web, tier=db}", "ipv4 10.0.0.1", "port http = tcp/80", "iface eth0", "labels {}"];
const DEFINITIONS: &[&str] =
    &["ports web = tcp/80, tcp/443", "selector s = {app=web}", "peers p = world, 10.0.0.0/8 except (10.1.0.0/16)"];

fn section() -> impl Strategy<Value = Child> {
    let rules = || prop::collection::vec(line(pick(RULES)).prop_map(Child::Line), 0..3);
    prop_oneof![block("ingress", rules(), false), block("egress", rules(), false)].prop_map(Child::Block)
}

fn policy() -> impl Strategy<Value = Block> {
    let select = line(pick(&["select {app=web}", "select $s"])).prop_map(Child::Line);
    let children = (select, prop::collection::vec(section(), 0..3)).prop_map(|(select, mut sections)| {
        sections.insert(0, select);
        sections
    });
    block("policy p", children, true)
}

fn endpoint() -> impl Strategy<Value = Block> {
    block("endpoint e", prop::collection::vec(line(pick(FIELDS)).prop_map(Child::Line), 0..4), false)
}

fn document() -> impl Strategy<Value = Document> {
    let item = prop_oneof![
        line(pick(DEFINITIONS)).prop_map(Item::Definition),
        policy().prop_map(Item::Block),
        endpoint().prop_map(Item::Block),
    ];
    (prop::collection::vec(item, 0..4), own_lines()).prop_map(|(items, end_comments)| Document { items, end_comments })
}

// ------------------------------------------------ the messy source layout

/// Writes a document with random whitespace; `noise` supplies the choices.
struct Messy<'a> {
    out: String,
    noise: std::iter::Cycle<std::slice::Iter<'a, u8>>,
    /// The last line ended in a comment: what follows must start a new line.
    need_newline: bool,
}

impl Messy<'_> {
    fn choose(&mut self, n: usize) -> usize {
        self.noise.next().map_or(0, |&b| b as usize % n)
    }

    /// Whitespace before a token: a blank line if asked, else a new line when one is needed, else anything.
    fn gap(&mut self, blank: bool) {
        let choice = self.choose(4);
        let gap = if blank {
            ["\n\n", "\n \n\t", "\n\n\n", "\r\n\r\n"][choice]
        } else if self.need_newline || self.out.is_empty() {
            ["\n", "\n  ", "\n\t", "\r\n"][choice]
        } else {
            [" ", "\n", "\t ", "  "][choice]
        };
        self.out.push_str(if self.out.is_empty() { gap.trim_start_matches(['\r', '\n']) } else { gap });
        self.need_newline = false;
    }

    fn own_line(&mut self, comment: &OwnLine) {
        if !comment.blank_before && !self.out.is_empty() {
            self.need_newline = true;
        }
        self.gap(comment.blank_before);
        self.out.push_str(&comment.text);
        self.need_newline = true;
    }

    fn trailing(&mut self, comment: &Option<String>) {
        if let Some(text) = comment {
            let choice = self.choose(3);
            self.out.push_str([" ", "\t", "   "][choice]);
            self.out.push_str(text);
            self.need_newline = true;
        }
    }

    /// An element's text with each space replaced by random whitespace.
    fn element(&mut self, text: &str) {
        for (i, word) in text.split(' ').enumerate() {
            if i > 0 {
                let choice = self.choose(5);
                self.out.push_str([" ", "  ", "\n", "\t", "\n\n"][choice]);
            }
            self.out.push_str(word);
        }
    }

    fn line(&mut self, line: &Line) {
        line.leading.iter().for_each(|c| self.own_line(c));
        self.gap(line.blank_before);
        self.element(&line.text);
        self.trailing(&line.trailing);
    }

    fn block(&mut self, block: &Block) {
        let header = &block.header;
        header.leading.iter().for_each(|c| self.own_line(c));
        self.gap(header.blank_before);
        self.element(&header.text);
        self.gap(false);
        self.out.push('{');
        self.trailing(&header.trailing);
        for child in &block.children {
            match child {
                Child::Line(line) => self.line(line),
                Child::Block(inner) => self.block(inner),
            }
        }
        block.end_comments.iter().for_each(|c| self.own_line(c));
        self.gap(false);
        self.out.push('}');
        self.trailing(&block.after_close);
    }

    fn document(mut self, document: &Document) -> String {
        for item in &document.items {
            match item {
                Item::Definition(line) => self.line(line),
                Item::Block(block) => self.block(block),
            }
        }
        document.end_comments.iter().for_each(|c| self.own_line(c));
        if self.need_newline || self.choose(2) == 0 {
            self.out.push('\n');
        }
        self.out
    }
}

// ------------------------------------------------ the expected canonical text

/// Renders what FORMAT.md says the canonical form of a document is.
#[derive(Default)]
struct Expected {
    out: String,
    depth: usize,
    at_block_start: bool,
    force_blank: bool,
}

impl Expected {
    fn put(&mut self, blank_in_source: bool, text: &str) {
        if !self.at_block_start && (self.force_blank || blank_in_source) {
            self.out.push('\n');
        }
        self.at_block_start = false;
        self.force_blank = false;
        self.out.push_str(&"  ".repeat(self.depth));
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn trailing(&mut self, comment: &Option<String>) {
        if let Some(text) = comment {
            self.out.pop();
            self.out.push(' ');
            self.out.push_str(text);
            self.out.push('\n');
        }
    }

    fn line(&mut self, line: &Line, text: &str) {
        line.leading.iter().for_each(|c| self.put(c.blank_before, &c.text));
        self.put(line.blank_before, text);
        self.trailing(&line.trailing);
    }

    fn block(&mut self, block: &Block) {
        let empty = block.children.is_empty() && block.end_comments.is_empty() && block.header.trailing.is_none();
        if empty {
            self.line(&block.header, &format!("{} {{}}", block.header.text));
            self.trailing(&block.after_close);
            return;
        }
        self.line(&block.header, &format!("{} {{", block.header.text));
        self.depth += 1;
        self.at_block_start = true;
        for (i, child) in block.children.iter().enumerate() {
            self.force_blank = block.children_set_apart && i > 0;
            match child {
                Child::Line(line) => self.line(line, &line.text),
                Child::Block(inner) => self.block(inner),
            }
        }
        block.end_comments.iter().for_each(|c| self.put(c.blank_before, &c.text));
        self.depth -= 1;
        self.at_block_start = true; // no blank line before `}`
        self.put(false, "}");
        self.trailing(&block.after_close);
    }

    fn document(mut self, document: &Document) -> String {
        self.at_block_start = true;
        let mut previous_was_definition = None;
        for item in &document.items {
            let is_definition = matches!(item, Item::Definition(_));
            self.force_blank = previous_was_definition.is_some_and(|p| !(p && is_definition));
            match item {
                Item::Definition(line) => self.line(line, &line.text),
                Item::Block(block) => self.block(block),
            }
            previous_was_definition = Some(is_definition);
        }
        document.end_comments.iter().for_each(|c| self.put(c.blank_before, &c.text));
        self.out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn comments_and_blank_lines_land_where_the_layout_rules_say(
        document in document(),
        noise in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let messy = Messy { out: String::new(), noise: noise.iter().cycle(), need_newline: false }.document(&document);
        let expected = Expected::default().document(&document);
        let formatted = format_text(FileId(0), &messy)
            .unwrap_or_else(|d| panic!("the messy layout does not parse: {}\n{messy}", d.message));
        prop_assert_eq!(formatted, expected, "from\n{}", messy);
    }
}
