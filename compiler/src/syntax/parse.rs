//! Pest parse tree -> AST. A syntax error becomes one diagnostic (E0001)
//! saying what was expected; pest stops at the first one, so a file with a
//! syntax error yields no AST and the checks run on the other files.

use super::ast::*;
use super::grammar::{PolGrammar, Rule as R};
use super::{FileId, Span};
use crate::diag::{codes, Diagnostic};
use pest::iterators::Pair;
use pest::Parser;

type P<'a> = Pair<'a, R>;

pub fn parse_module(file: FileId, text: &str) -> Result<Module, Diagnostic> {
    let mut pairs = match PolGrammar::parse(R::file, text) {
        Ok(pairs) => pairs,
        Err(_) => return Err(syntax_error(file, text, parse_with_error_detail(text))),
    };
    let root = pairs.next().ok_or_else(|| {
        Diagnostic::error(codes::SYNTAX, Span::new(file, 0, 0), "empty parse").with_help("this is a bug in polc")
    })?;
    let b = Builder { file };
    let items = children(root).filter(|p| p.as_rule() != R::EOI).map(|p| b.item(p)).collect();
    Ok(Module { items })
}

/// Serializes the parses that collect error detail (see [`parse_with_error_detail`]).
static ERROR_DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The error of a text that did not parse, parsed again with pest's error
/// detail on, which lets syntax errors name the punctuation expected. The
/// detail is collected only then: it takes about half of a parse's work
/// (pest records every token it tries). pest has one switch for it, read
/// when a parse starts and left off (its default) by every other parse: it
/// is turned on and off again only here, under a lock, so a parse running
/// meanwhile on another thread only collects detail it does not need.
fn parse_with_error_detail(text: &str) -> pest::error::Error<R> {
    let _only_one = ERROR_DETAIL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    pest::set_error_detail(true);
    let result = PolGrammar::parse(R::file, text);
    pest::set_error_detail(false);
    match result {
        Err(e) => e,
        // Cannot be: the same text failed a moment ago.
        Ok(_) => pest::error::Error::new_from_pos(
            pest::error::ErrorVariant::CustomError { message: "the text parsed when parsed again".to_string() },
            pest::Position::from_start(text),
        ),
    }
}

/// The children of a node, without keyword tokens (they carry no information).
fn children(pair: P<'_>) -> impl Iterator<Item = P<'_>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

fn is_keyword(kind: R) -> bool {
    matches!(
        kind,
        R::kw_policy
            | R::kw_select
            | R::kw_ingress
            | R::kw_egress
            | R::kw_from
            | R::kw_to
            | R::kw_on
            | R::kw_except
            | R::kw_in
            | R::kw_not
            | R::kw_ports
            | R::kw_selector
            | R::kw_peers
            | R::kw_endpoint
            | R::kw_node
            | R::kw_labels
            | R::kw_ipv4
            | R::kw_ipv6
            | R::kw_mac
            | R::kw_iface
            | R::kw_netns
            | R::kw_port
    )
}

struct Builder {
    file: FileId,
}

impl Builder {
    fn span(&self, pair: &P<'_>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), s.start() + content_len(pair.as_str()))
    }

    fn ident(&self, pair: P<'_>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(&pair) }
    }

    fn text(&self, pair: P<'_>) -> Text {
        let raw = pair.as_str();
        let quoted = pair.as_rule() == R::quoted;
        let value = if quoted { raw[1..raw.len() - 1].to_string() } else { raw.to_string() };
        Text { value, quoted, span: self.span(&pair) }
    }

    fn item(&self, pair: P<'_>) -> Item {
        let span = self.span(&pair);
        match pair.as_rule() {
            R::policy => Item::Policy(self.policy(pair)),
            R::endpoint => Item::Endpoint(self.endpoint(pair)),
            R::node => Item::Node(Node { addresses: children(pair).map(|f| self.endpoint_field(f)).collect(), span }),
            R::ports_def => {
                let mut it = children(pair);
                let name = it.next().map(|p| self.ident(p));
                let ports = it.next().map(|p| self.port_list(p)).unwrap_or_default();
                Item::Ports(PortsDef { name: name.unwrap_or_else(|| self.missing(span)), ports, span })
            }
            R::selector_def => {
                let mut it = children(pair);
                let name = it.next().map(|p| self.ident(p));
                let selector = it.next().map(|p| self.label_selector(p));
                Item::Selector(SelectorDef {
                    name: name.unwrap_or_else(|| self.missing(span)),
                    selector: selector.unwrap_or(LabelSelector { terms: vec![], span }),
                    span,
                })
            }
            R::peers_def => {
                let mut it = children(pair);
                let name = it.next().map(|p| self.ident(p));
                let peers = it.next().map(|p| self.peer_list(p)).unwrap_or_default();
                Item::Peers(PeersDef { name: name.unwrap_or_else(|| self.missing(span)), peers, span })
            }
            other => unreachable_rule(other, span),
        }
    }

    /// The grammar guarantees the parts exist; this keeps the builder total anyway.
    fn missing(&self, span: Span) -> Ident {
        Ident { name: String::new(), span }
    }

    fn policy(&self, pair: P<'_>) -> Policy {
        let span = self.span(&pair);
        let mut name = self.missing(span);
        let mut select = EndpointSelector::Inline(LabelSelector { terms: vec![], span });
        let mut sections = Vec::new();
        for child in children(pair) {
            match child.as_rule() {
                R::ident => name = self.ident(child),
                R::select => {
                    if let Some(inner) = children(child).next() {
                        select = match inner.as_rule() {
                            R::reference => EndpointSelector::Named(self.reference(inner)),
                            _ => EndpointSelector::Inline(self.label_selector(inner)),
                        };
                    }
                }
                R::section => sections.push(self.section(child)),
                _ => {}
            }
        }
        Policy { name, select, sections, span }
    }

    fn reference(&self, pair: P<'_>) -> Ident {
        // `$name`: the span covers the `$` too, the name does not.
        let span = self.span(&pair);
        Ident { name: pair.as_str().trim_start_matches('$').to_string(), span }
    }

    fn section(&self, pair: P<'_>) -> Section {
        let span = self.span(&pair);
        let mut direction = Direction::Ingress;
        let mut rules = Vec::new();
        for child in children(pair) {
            match child.as_rule() {
                R::direction => {
                    direction = if child.as_str() == "egress" { Direction::Egress } else { Direction::Ingress }
                }
                R::rule => rules.push(self.rule(child)),
                _ => {}
            }
        }
        Section { direction, rules, span }
    }

    fn rule(&self, pair: P<'_>) -> Rule {
        let span = self.span(&pair);
        let mut rule = Rule {
            action: Action::Allow,
            name: self.missing(span),
            peer_keyword: PeerKeyword::From,
            peer_keyword_span: span,
            peers: vec![],
            ports: vec![],
            span,
        };
        for child in children(pair) {
            match child.as_rule() {
                R::action => rule.action = if child.as_str() == "deny" { Action::Deny } else { Action::Allow },
                R::ident => rule.name = self.ident(child),
                R::peer_clause => {
                    for part in children(child) {
                        match part.as_rule() {
                            R::peer_dir => {
                                rule.peer_keyword_span = self.span(&part);
                                rule.peer_keyword =
                                    if part.as_str() == "to" { PeerKeyword::To } else { PeerKeyword::From };
                            }
                            R::peer_list => rule.peers = self.peer_list(part),
                            _ => {}
                        }
                    }
                }
                R::l4_clause => {
                    if let Some(list) = children(child).next() {
                        rule.ports = self.port_list(list);
                    }
                }
                _ => {}
            }
        }
        rule
    }

    fn peer_list(&self, pair: P<'_>) -> Vec<Peer> {
        children(pair).map(|p| self.peer(p)).collect()
    }

    fn peer(&self, pair: P<'_>) -> Peer {
        let span = self.span(&pair);
        match pair.as_rule() {
            R::label_selector => Peer::Selector(self.label_selector(pair)),
            R::entity => {
                Peer::Entity(EntityRef { entity: Entity::from_keyword(pair.as_str()).unwrap_or(Entity::All), span })
            }
            R::reference => Peer::Ref(self.reference(pair)),
            R::cidr_peer => {
                let mut it = children(pair);
                let cidr = it.next().map(|p| self.text(p));
                let except = it.next().map(|list| children(list).map(|c| self.text(c)).collect()).unwrap_or_default();
                Peer::Cidr(CidrPeer {
                    cidr: cidr.unwrap_or(Text { value: String::new(), quoted: false, span }),
                    except,
                    span,
                })
            }
            other => unreachable_rule(other, span),
        }
    }

    fn label_selector(&self, pair: P<'_>) -> LabelSelector {
        let span = self.span(&pair);
        LabelSelector { terms: children(pair).map(|t| self.label_term(t)).collect(), span }
    }

    fn label_term(&self, pair: P<'_>) -> LabelTerm {
        let span = self.span(&pair);
        let kind = pair.as_rule();
        let mut it = children(pair);
        let key = it.next().map(|k| self.text(k)).unwrap_or(Text { value: String::new(), quoted: false, span });
        let rest = it.next();
        let values = |p: Option<P<'_>>| -> Vec<Text> {
            p.map(|list| children(list).map(|v| self.text(v)).collect()).unwrap_or_default()
        };
        let one = |p: Option<P<'_>>| -> Text {
            p.map(|v| self.text(v)).unwrap_or(Text { value: String::new(), quoted: false, span })
        };
        let op = match kind {
            R::term_in => LabelOp::In(values(rest)),
            R::term_not_in => LabelOp::NotIn(values(rest)),
            R::term_equals => LabelOp::Equals(one(rest)),
            R::term_not_equals => LabelOp::NotEquals(one(rest)),
            R::term_absent => LabelOp::DoesNotExist,
            _ => LabelOp::Exists,
        };
        LabelTerm { key, op, span }
    }

    fn port_list(&self, pair: P<'_>) -> Vec<PortItem> {
        children(pair)
            .map(|p| match p.as_rule() {
                R::reference => PortItem::Ref(self.reference(p)),
                _ => PortItem::Spec(self.port_spec(p)),
            })
            .collect()
    }

    fn port_spec(&self, pair: P<'_>) -> PortSpec {
        let span = self.span(&pair);
        let mut protocol = Protocol::Any;
        let mut port = None;
        for child in children(pair) {
            let child_span = self.span(&child);
            match child.as_rule() {
                R::protocol => protocol = Protocol::from_keyword(child.as_str()).unwrap_or(Protocol::Any),
                R::port_number => port = Some(PortSel::Number { value: number(child.as_str()), span: child_span }),
                R::port_range => {
                    let mut bounds = child.into_inner().map(|n| number(n.as_str()));
                    let low = bounds.next().unwrap_or(0);
                    let high = bounds.next().unwrap_or(0);
                    port = Some(PortSel::Range { low, high, span: child_span });
                }
                R::port_name => port = Some(PortSel::Name(self.ident(child))),
                _ => {}
            }
        }
        PortSpec { protocol, port, span }
    }

    fn endpoint(&self, pair: P<'_>) -> Endpoint {
        let span = self.span(&pair);
        let mut it = children(pair);
        let name = it.next().map(|p| self.ident(p)).unwrap_or_else(|| self.missing(span));
        let fields = it.map(|f| self.endpoint_field(f)).collect();
        Endpoint { name, fields, span }
    }

    fn endpoint_field(&self, pair: P<'_>) -> EndpointField {
        let span = self.span(&pair);
        let kind = pair.as_rule();
        let mut it = children(pair);
        let empty = Text { value: String::new(), quoted: false, span };
        match kind {
            R::ep_labels => EndpointField::Labels {
                labels: it
                    .map(|kv| {
                        let mut parts = children(kv);
                        let k = parts.next().map(|p| self.text(p)).unwrap_or_else(|| empty.clone());
                        let v = parts.next().map(|p| self.text(p)).unwrap_or_else(|| empty.clone());
                        (k, v)
                    })
                    .collect(),
                span,
            },
            R::ep_port => {
                let name = it.next().map(|p| self.ident(p)).unwrap_or_else(|| self.missing(span));
                let spec = it.next().map(|p| self.port_spec(p)).unwrap_or(PortSpec {
                    protocol: Protocol::Any,
                    port: None,
                    span,
                });
                EndpointField::Port { name, spec, span }
            }
            _ => {
                let value = it.next().map(|p| self.text(p)).unwrap_or(empty);
                match kind {
                    R::ep_ipv4 => EndpointField::Ipv4(value),
                    R::ep_ipv6 => EndpointField::Ipv6(value),
                    R::ep_mac => EndpointField::Mac(value),
                    R::ep_iface => EndpointField::Iface(value),
                    _ => EndpointField::Netns(value),
                }
            }
        }
    }
}

/// The length of `text` without trailing whitespace and comments. pest lets
/// a rule ending in an optional part (`on PORTS`, `except ...`) swallow the
/// whitespace and comments after it; spans should end at the last token.
fn content_len(text: &str) -> usize {
    let mut end = text.trim_end().len();
    loop {
        let line_start = text[..end].rfind('\n').map_or(0, |i| i + 1);
        match comment_start(&text[line_start..end]) {
            Some(hash) if line_start + hash < end => end = text[..line_start + hash].trim_end().len(),
            _ => return end,
        }
    }
}

/// Where a `#` comment starts on one line, ignoring `#` inside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Digits only (the grammar says so); saturates so that huge numbers are still "too large".
fn number(digits: &str) -> u64 {
    digits.parse().unwrap_or(u64::MAX)
}

fn unreachable_rule(kind: R, span: Span) -> ! {
    // The grammar only produces the rules matched above; reaching this is a
    // mismatch between polc.pest and this builder, found by the tests.
    #[allow(clippy::panic)]
    {
        panic!("parser builder out of date with the grammar: unexpected {kind:?} at {span:?}")
    }
}

// ------------------------------------------------------------ syntax errors

fn syntax_error(file: FileId, text: &str, error: pest::error::Error<R>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    // With error detail on, pest records what it expected at the furthest
    // position it reached, including punctuation such as `:` (rules alone
    // would only say where the enclosing rule started).
    let attempts = error.parse_attempts();
    let start = match (&attempts, &error.location) {
        (Some(a), _) => a.max_position,
        (None, InputLocation::Pos(p)) => *p,
        (None, InputLocation::Span((s, _))) => *s,
    };
    let mut names: Vec<String> = Vec::new();
    let mut expected_rules: Vec<R> = Vec::new();
    if let Some(attempts) = &attempts {
        for stack in attempts.call_stacks() {
            let rule = stack.deepest.get_rule().copied().or(stack.parent);
            if let Some(r) = rule {
                expected_rules.push(r);
                if let Some(name) = describe(r).filter(|_| !begins_with_rule(r)) {
                    names.push(name.to_string());
                }
            }
        }
        for token in attempts.expected_tokens() {
            // Display gives the literal for plain string tokens.
            let token = token.to_string();
            let punctuation = !token.is_empty() && token.chars().all(|c| c.is_ascii_punctuation());
            // `$` is already said by "a `$name` reference"; `#` starts a comment.
            if punctuation && token != "#" && token != "$" && !token.contains("..") {
                names.push(format!("`{token}`"));
            }
        }
    } else if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
        expected_rules = positives.clone();
        names.extend(positives.iter().filter_map(|r| describe(*r)).map(String::from));
    }
    names.sort();
    names.dedup();
    let found = found_token(text, start);
    let end = (start + found.len().max(1)).min(text.len()).max(start);
    let span = Span::new(file, start, end);
    let message = match names.as_slice() {
        [] => format!("unexpected {}", found_text(&found)),
        [one] => format!("expected {one}"),
        [init @ .., last] => format!("expected {} or {last}", init.join(", ")),
    };
    let label = format!("found {}", found_text(&found));
    Diagnostic::error(codes::SYNTAX, span, message).with_label(label).with_help(syntax_help(&expected_rules, &found))
}

fn found_text(found: &str) -> String {
    if found.is_empty() {
        "end of file".to_string()
    } else {
        format!("`{found}`")
    }
}

/// The token at `offset`: a word, or one punctuation character.
fn found_token(text: &str, offset: usize) -> String {
    let rest = text.get(offset..).unwrap_or("");
    let word: String =
        rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':')).collect();
    if word.is_empty() {
        rest.chars().next().filter(|c| !c.is_whitespace()).map(String::from).unwrap_or_default()
    } else {
        word
    }
}

fn syntax_help(expected: &[R], found: &str) -> String {
    let expects = |r: R| expected.contains(&r);
    if expects(R::peer_clause) || expects(R::peer_dir) || expects(R::rule) {
        "a rule reads `allow NAME: from PEERS [on PORTS]` (`to` in egress sections)".into()
    } else if expects(R::select) {
        "a policy starts with `select {key=value}` naming the endpoints it applies to".into()
    } else if expects(R::port_spec) || expects(R::protocol) {
        "ports are written `tcp/80`, `udp/53`, `tcp/8000-8080`, `icmp/echo-request` or `$name`".into()
    } else if expects(R::item) || expects(R::policy) {
        "a file holds `policy`, `endpoint`, `node`, `ports`, `selector` and `peers` blocks".into()
    } else if found == "}" || found == "{" {
        "check that braces are balanced".into()
    } else {
        "see lang-spec/REFERENCE.md for the syntax".into()
    }
}

/// Rules that begin with another rule. When pest reports one as the deepest
/// attempt, a token inside it failed (the `:` after a rule's name), not the
/// rule itself: naming it ("expected `allow` or `deny`") would mislead, and
/// the token is named from the expected tokens instead.
fn begins_with_rule(kind: R) -> bool {
    matches!(
        kind,
        R::policy
            | R::select
            | R::section
            | R::rule
            | R::peer_clause
            | R::l4_clause
            | R::peer_list
            | R::cidr_peer
            | R::port_list
            | R::port_spec
            | R::port_range
            | R::ports_def
            | R::selector_def
            | R::peers_def
            | R::endpoint
            | R::node
            | R::ep_labels
            | R::label_pair
            | R::ep_ipv4
            | R::ep_ipv6
            | R::ep_mac
            | R::ep_iface
            | R::ep_netns
            | R::ep_port
            | R::term_in
            | R::term_not_in
            | R::term_equals
            | R::term_not_equals
    )
}

/// How an expected rule is named in "expected ..." messages; `None` hides it.
fn describe(kind: R) -> Option<&'static str> {
    Some(match kind {
        R::ident => "a name",
        R::reference => "a `$name` reference",
        R::policy | R::kw_policy => "`policy`",
        R::endpoint | R::kw_endpoint => "`endpoint`",
        R::node | R::kw_node => "`node`",
        R::ports_def | R::kw_ports => "`ports`",
        R::selector_def | R::kw_selector => "`selector`",
        R::peers_def | R::kw_peers => "`peers`",
        R::select | R::kw_select => "`select`",
        R::section | R::direction | R::kw_ingress | R::kw_egress => "`ingress` or `egress`",
        R::rule | R::action => "`allow` or `deny`",
        R::peer_clause | R::peer_dir | R::kw_from | R::kw_to => "`from` or `to`",
        R::l4_clause | R::kw_on => "`on`",
        R::peer_list | R::peer => "a peer",
        R::entity => "an entity",
        R::cidr_peer | R::cidr => "a CIDR",
        R::kw_except => "`except`",
        R::except_list => "a CIDR or `(CIDR, ...)`",
        R::label_selector => "a label selector `{...}`",
        R::term_in
        | R::term_not_in
        | R::term_equals
        | R::term_not_equals
        | R::term_absent
        | R::term_exists
        | R::label_key => "a label key",
        R::bare_value | R::quoted => "a label value",
        R::value_list => "`(`",
        R::port_list | R::port_spec | R::protocol => "a protocol (`tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, `any`)",
        R::port_number | R::port_range | R::port_name => "a port",
        R::ep_labels | R::kw_labels => "`labels`",
        R::ep_ipv4 | R::kw_ipv4 => "`ipv4`",
        R::ep_ipv6 | R::kw_ipv6 => "`ipv6`",
        R::ep_mac | R::kw_mac => "`mac`",
        R::ep_iface | R::kw_iface => "`iface`",
        R::ep_netns | R::kw_netns => "`netns`",
        R::ep_port | R::kw_port => "`port`",
        R::address => "an address",
        R::device_name => "a device name",
        R::label_pair => "`key=value`",
        R::EOI => "end of file",
        _ => return None,
    })
}
