//! YAML (and JSON, which YAML 1.2 contains) read into a small tree that
//! keeps the position of every key and value, so that an unsupported field
//! is reported as `file:line:col`. Built on yaml-rust2's event parser.

use super::Problem;
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn of(mark: &Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos { line: mark.line(), col: mark.col() + 1 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A scalar as written; `plain` is false for quoted and block scalars,
    /// which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// A mapping key (always a scalar here: Kubernetes objects have no others).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

impl Node {
    /// The entries of a mapping; `what` names it in the error.
    pub fn map(&self, what: &str) -> Result<&[(Key, Node)], Problem> {
        match &self.value {
            Value::Map(entries) => Ok(entries),
            Value::Null => Ok(&[]),
            _ => Err(Problem::at(self.pos, format!("`{what}` must be a mapping"))),
        }
    }

    /// The items of a sequence; null is an empty one.
    pub fn seq(&self, what: &str) -> Result<&[Node], Problem> {
        match &self.value {
            Value::Seq(items) => Ok(items),
            Value::Null => Ok(&[]),
            _ => Err(Problem::at(self.pos, format!("`{what}` must be a list"))),
        }
    }

    /// A scalar's text (numbers and booleans as written).
    pub fn str(&self, what: &str) -> Result<&str, Problem> {
        match &self.value {
            Value::Scalar { text, .. } => Ok(text),
            _ => Err(Problem::at(self.pos, format!("`{what}` must be a string"))),
        }
    }

    /// An unquoted integer scalar, if this is one.
    pub fn int(&self) -> Option<i64> {
        match &self.value {
            Value::Scalar { text, plain: true } => text.parse().ok(),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// The value of `key` in a mapping (`None` for other nodes).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Every document of a YAML (or JSON) text; empty documents are left out.
pub fn documents(text: &str) -> Result<Vec<Node>, Problem> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| {
        let mark = e.marker();
        Problem::at(Pos::of(mark), format!("invalid YAML: {}", e.info()))
    })?;
    if let Some(problem) = builder.problem {
        return Err(problem);
    }
    Ok(builder.documents.into_iter().filter(|d| !d.is_null()).collect())
}

enum Frame {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(Key, Node)>, key: Option<Key> },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    documents: Vec<Node>,
    anchors: HashMap<usize, Node>,
    problem: Option<Problem>,
}

impl Builder {
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => match node.value {
                    Value::Scalar { text, .. } => *key = Some(Key { name: text, pos: node.pos }),
                    Value::Null => *key = Some(Key { name: String::new(), pos: node.pos }),
                    _ => {
                        self.problem.get_or_insert(Problem::at(node.pos, "mapping keys must be strings".into()));
                    }
                },
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let pos = Pos::of(&mark);
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let null = plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let value = if null { Value::Null } else { Value::Scalar { text, plain } };
                self.finish(Node { pos, value }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq { pos, anchor, items: Vec::new() }),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map { pos, anchor, entries: Vec::new(), key: None })
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => self.finish(Node { pos, value: Value::Seq(items) }, anchor),
                Some(Frame::Map { pos, anchor, entries, .. }) => {
                    // yaml-rust2 marks a flow mapping's start late; its first key is exact.
                    let pos = entries.first().map_or(pos, |(k, _)| k.pos);
                    self.finish(Node { pos, value: Value::Map(entries) }, anchor)
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.finish(Node { pos, ..node }, 0),
                None => {
                    self.problem.get_or_insert(Problem::at(pos, "an alias to an unknown anchor".into()));
                }
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_keys_and_values() {
        let docs = documents("a: 1\nb:\n  - x\n  - 'y'\n").expect("valid");
        let entries = docs[0].map("doc").expect("map");
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let items = entries[1].1.seq("b").expect("seq");
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
        assert_eq!(items[1].value, Value::Scalar { text: "y".into(), plain: false });
        assert_eq!(entries[0].1.int(), Some(1));
    }

    #[test]
    fn json_and_multiple_documents() {
        let docs = documents("{\"a\": [1, \"2\"]}\n---\n---\nb: null\n").expect("valid");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].get("a").and_then(|a| a.seq("a").ok()).map(|s| s.len()), Some(2));
        assert!(docs[1].get("b").is_some_and(Node::is_null));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let docs = documents("a: &x {k: v}\nb: *x\n").expect("valid");
        assert_eq!(docs[0].get("b").and_then(|b| b.get("k")).and_then(|k| k.str("k").ok()), Some("v"));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let problem = documents("a: [1, 2\n").expect_err("invalid");
        assert!(problem.message.starts_with("invalid YAML"), "{}", problem.message);
        assert!(problem.pos.line >= 1);
    }
}
