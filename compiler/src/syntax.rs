//! The front of the pipeline: source text -> pest parse tree -> AST with spans.

pub mod ast;
pub mod grammar;
pub mod parse;
pub mod source;

pub use source::{FileId, SourceMap, Span};
