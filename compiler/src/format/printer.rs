//! Prints an AST in the canonical layout, putting the source's comments back
//! where they were (see [`super`] for the layout's rules).
//!
//! The printer writes whole lines. Every line-level element (an item, a
//! `select`, a section, a rule, an endpoint field, a closing brace) is
//! printed with [`Printer::element`], which first writes the comments that
//! come before the element's end in the source (own-line comments, and
//! comments inside an element printed on one line), then the element, then
//! the comment that followed it on the same source line. Comments are
//! consumed strictly in source order, so none is lost or reordered.

use super::comments::{blank_line_before, content_end, next_token, same_line_gap, Comment};
use crate::syntax::ast::*;
use crate::syntax::Span;

const INDENT: &str = "  ";

pub struct Printer<'a> {
    src: &'a str,
    comments: &'a [Comment],
    /// The next comment not yet written.
    next: usize,
    out: String,
    depth: usize,
    /// Right after an opening brace (or at the file's start): no blank line here.
    at_block_start: bool,
    /// The next line is preceded by a blank line whatever the source had.
    force_blank: bool,
}

impl<'a> Printer<'a> {
    pub fn new(src: &'a str, comments: &'a [Comment]) -> Printer<'a> {
        Printer { src, comments, next: 0, out: String::new(), depth: 0, at_block_start: true, force_blank: false }
    }

    pub fn module(mut self, module: &Module) -> String {
        let mut previous: Option<&Item> = None;
        for item in &module.items {
            // One blank line between top-level items, except that consecutive
            // one-line definitions may stay grouped as the author wrote them.
            self.force_blank = previous.is_some_and(|p| !(is_definition(p) && is_definition(item)));
            self.item(item);
            previous = Some(item);
        }
        self.comments_before(self.src.len() + 1);
        self.out
    }

    // ------------------------------------------------------------ lines

    /// Whether a blank line goes before a line whose source starts at `start`:
    /// never at a block's start, always when forced, else where the author had one.
    fn blank_wanted(&self, start: usize) -> bool {
        !self.at_block_start && (self.force_blank || blank_line_before(self.src, start))
    }

    fn put_line(&mut self, blank: bool, text: &str) {
        if blank {
            self.out.push('\n');
        }
        self.force_blank = false;
        self.at_block_start = false;
        for _ in 0..self.depth {
            self.out.push_str(INDENT);
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// Own-line comments that start before `pos`.
    fn comments_before(&mut self, pos: usize) {
        while let Some(comment) = self.comments.get(self.next).filter(|c| c.start < pos) {
            self.next += 1;
            let blank = self.blank_wanted(comment.start);
            self.put_line(blank, &comment.text);
        }
    }

    /// One line for an element spanning `start..end` in the source.
    fn element(&mut self, start: usize, end: usize, text: &str) {
        let end = content_end(self.src, start, end);
        self.comments_before(start);
        // Comments inside the element move above it, keeping its blank line above them.
        let mut blank = self.blank_wanted(start);
        while let Some(comment) = self.comments.get(self.next).filter(|c| c.start < end) {
            self.next += 1;
            self.put_line(blank, &comment.text);
            blank = false;
        }
        self.put_line(blank, text);
        self.trailing(end);
    }

    /// A comment on the same source line right after `end` stays at the end of the line just written.
    fn trailing(&mut self, end: usize) {
        let Some(comment) = self.comments.get(self.next) else { return };
        if same_line_gap(self.src, end, comment.start) {
            self.next += 1;
            self.out.pop();
            self.out.push(' ');
            self.out.push_str(&comment.text);
            self.out.push('\n');
        }
    }

    /// `header {`, the body one level deeper, `}`; `header {}` when there is
    /// nothing inside (no children, no comments). `open` and `close` are the
    /// offsets of the braces in the source.
    fn block(
        &mut self,
        start: usize,
        header: &str,
        open: usize,
        close: usize,
        empty: bool,
        body: impl FnOnce(&mut Self),
    ) {
        let pending = self.comments.get(self.next..).unwrap_or_default();
        let has_comment_inside = pending.iter().take_while(|c| c.start < close).any(|c| c.start > open);
        if empty && !has_comment_inside {
            self.element(start, close + 1, &format!("{header} {{}}"));
            return;
        }
        self.element(start, open + 1, &format!("{header} {{"));
        self.depth += 1;
        self.at_block_start = true;
        body(self);
        self.comments_before(close);
        self.depth -= 1;
        self.put_line(false, "}");
        self.trailing(close + 1);
    }

    /// The offset of the `{` that follows `pos` (the grammar puts one there).
    fn open_brace(&self, pos: usize) -> usize {
        let at = next_token(self.src, pos);
        debug_assert_eq!(self.src.as_bytes().get(at), Some(&b'{'), "expected `{{` at {at}");
        at
    }

    /// The offset of the `}` that ends a block spanning `span`.
    fn close_brace(&self, span: Span) -> usize {
        content_end(self.src, span.start as usize, span.end as usize).saturating_sub(1)
    }

    // ------------------------------------------------------------ items

    fn item(&mut self, item: &Item) {
        match item {
            Item::Policy(policy) => self.policy(policy),
            Item::Endpoint(endpoint) => self.endpoint(endpoint),
            Item::Node(node) => self.node(node),
            Item::Ports(def) => {
                let text = format!("ports {} = {}", def.name.name, self.port_list(&def.ports));
                self.element(def.span.start as usize, def.span.end as usize, &text);
            }
            Item::Selector(def) => {
                let text = format!("selector {} = {}", def.name.name, self.selector(&def.selector));
                self.element(def.span.start as usize, def.span.end as usize, &text);
            }
            Item::Peers(def) => {
                let text = format!("peers {} = {}", def.name.name, self.peer_list(&def.peers));
                self.element(def.span.start as usize, def.span.end as usize, &text);
            }
        }
    }

    fn policy(&mut self, policy: &Policy) {
        let open = self.open_brace(policy.name.span.end as usize);
        let close = self.close_brace(policy.span);
        let header = format!("policy {}", policy.name.name);
        self.block(policy.span.start as usize, &header, open, close, false, |p| {
            let (select, select_end) = match &policy.select {
                EndpointSelector::Inline(selector) => (p.selector(selector), selector.span.end),
                EndpointSelector::Named(name) => (format!("${}", name.name), name.span.end),
            };
            let select_start = next_token(p.src, open + 1);
            p.element(select_start, select_end as usize, &format!("select {select}"));
            for section in &policy.sections {
                // One blank line after `select` and between sections.
                p.force_blank = true;
                p.section(section);
            }
        });
    }

    fn section(&mut self, section: &Section) {
        let start = section.span.start as usize;
        let keyword = section.direction.keyword();
        let open = self.open_brace(start + keyword.len());
        let close = self.close_brace(section.span);
        self.block(start, keyword, open, close, section.rules.is_empty(), |p| {
            for rule in &section.rules {
                let text = p.rule(rule);
                p.element(rule.span.start as usize, rule.span.end as usize, &text);
            }
        });
    }

    fn rule(&self, rule: &Rule) -> String {
        let keyword = match rule.peer_keyword {
            PeerKeyword::From => "from",
            PeerKeyword::To => "to",
        };
        let mut text =
            format!("{} {}: {keyword} {}", rule.action.keyword(), rule.name.name, self.peer_list(&rule.peers));
        if !rule.ports.is_empty() {
            text.push_str(" on ");
            text.push_str(&self.port_list(&rule.ports));
        }
        text
    }

    fn endpoint(&mut self, endpoint: &Endpoint) {
        let open = self.open_brace(endpoint.name.span.end as usize);
        let close = self.close_brace(endpoint.span);
        let header = format!("endpoint {}", endpoint.name.name);
        self.block(endpoint.span.start as usize, &header, open, close, endpoint.fields.is_empty(), |p| {
            p.fields(open, &endpoint.fields)
        });
    }

    fn node(&mut self, node: &Node) {
        let start = node.span.start as usize;
        let open = self.open_brace(start + "node".len());
        let close = self.close_brace(node.span);
        self.block(start, "node", open, close, node.addresses.is_empty(), |p| p.fields(open, &node.addresses));
    }

    /// Endpoint and node fields, one per line, in source order.
    fn fields(&mut self, open: usize, fields: &[EndpointField]) {
        let mut previous_end = open + 1;
        for field in fields {
            // A field's span may start at its value rather than its keyword:
            // the keyword is the next token after the previous field.
            let start = next_token(self.src, previous_end);
            let end = content_end(self.src, start, field.span().end as usize);
            let text = self.field(field);
            self.element(start, end, &text);
            previous_end = end;
        }
    }

    fn field(&self, field: &EndpointField) -> String {
        let keyword = field.keyword();
        match field {
            EndpointField::Labels { labels, .. } => {
                let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{}={}", text(k), text(v))).collect();
                format!("{keyword} {{{}}}", pairs.join(", "))
            }
            EndpointField::Port { name, spec, .. } => format!("{keyword} {} = {}", name.name, self.port_spec(spec)),
            EndpointField::Ipv4(value)
            | EndpointField::Ipv6(value)
            | EndpointField::Mac(value)
            | EndpointField::Iface(value)
            | EndpointField::Netns(value) => format!("{keyword} {}", text(value)),
        }
    }

    // ------------------------------------------------- inline constructs

    fn peer_list(&self, peers: &[Peer]) -> String {
        join(peers.iter().map(|peer| self.peer(peer)))
    }

    fn peer(&self, peer: &Peer) -> String {
        match peer {
            Peer::Selector(selector) => self.selector(selector),
            Peer::Entity(entity) => entity.entity.keyword().to_string(),
            Peer::Ref(name) => format!("${}", name.name),
            Peer::Cidr(cidr) if cidr.except.is_empty() => text(&cidr.cidr),
            Peer::Cidr(cidr) => format!("{} except ({})", text(&cidr.cidr), join(cidr.except.iter().map(text))),
        }
    }

    fn selector(&self, selector: &LabelSelector) -> String {
        format!("{{{}}}", join(selector.terms.iter().map(term)))
    }

    fn port_list(&self, ports: &[PortItem]) -> String {
        join(ports.iter().map(|item| match item {
            PortItem::Spec(spec) => self.port_spec(spec),
            PortItem::Ref(name) => format!("${}", name.name),
        }))
    }

    fn port_spec(&self, spec: &PortSpec) -> String {
        let protocol = spec.protocol.keyword();
        match &spec.port {
            None => protocol.to_string(),
            // Numbers as written: `tcp/080` keeps its digits, and a number too
            // large for the AST keeps the value its diagnostic quotes.
            Some(PortSel::Number { span, .. } | PortSel::Range { span, .. }) => {
                let digits = self.src.get(span.start as usize..span.end as usize).unwrap_or_default();
                format!("{protocol}/{digits}")
            }
            Some(PortSel::Name(name)) => format!("{protocol}/{}", name.name),
        }
    }
}

/// `ports`, `selector` and `peers` definitions: one line each.
fn is_definition(item: &Item) -> bool {
    matches!(item, Item::Ports(_) | Item::Selector(_) | Item::Peers(_))
}

fn term(term: &LabelTerm) -> String {
    let key = text(&term.key);
    match &term.op {
        LabelOp::Equals(value) => format!("{key}={}", text(value)),
        LabelOp::NotEquals(value) => format!("{key}!={}", text(value)),
        LabelOp::In(values) => format!("{key} in ({})", join(values.iter().map(text))),
        LabelOp::NotIn(values) => format!("{key} not in ({})", join(values.iter().map(text))),
        LabelOp::Exists => key,
        LabelOp::DoesNotExist => format!("!{key}"),
    }
}

/// A token as written; quoted values stay quoted.
fn text(token: &Text) -> String {
    if token.quoted {
        format!("\"{}\"", token.value)
    } else {
        token.value.clone()
    }
}

fn join(parts: impl Iterator<Item = String>) -> String {
    parts.collect::<Vec<_>>().join(", ")
}
