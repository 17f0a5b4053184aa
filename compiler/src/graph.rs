//! `polc graph`: who may talk to whom, as a picture.
//!
//! [`model`] computes, from the resolved tables ([`crate::ir`]), what every
//! pair of nodes may exchange: endpoints (grouped by identity) and the
//! outside peers that matter (the node, the world, the CIDRs the policy
//! names). It walks exact port segments (the breakpoints of both tables'
//! intervals), so a range shows as a range and nothing is sampled. The
//! renderers only draw that model:
//! - [`dot`]: Graphviz DOT text;
//! - [`svg`]: a self-contained SVG with its own circular layout (no Graphviz);
//! - [`html`]: a standalone page with the connectivity matrix and the SVG.
//!
//! [`edges`] decides what is drawn between two nodes, [`services`] writes
//! port sets compactly (`tcp/80, tcp/8000-8080`).

pub mod dot;
pub mod edges;
pub mod html;
pub mod model;
pub mod services;
pub mod svg;

pub use model::{build, Connection, Graph, Node, NodeKind, Outcome, RuleInfo, Segment};

#[cfg(test)]
mod tests;
