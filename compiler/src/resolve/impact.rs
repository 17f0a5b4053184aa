//! The impact graph: which endpoints a change can touch.
//!
//! Nodes are policies, rules, selectors, identities and endpoints; an edge
//! goes from a thing to what it refers to, so that both walks the resolver
//! needs are short:
//! - policy -> (subject) selector -> identities -> endpoints: the endpoints
//!   whose tables a policy (and so each of its rules) shapes;
//! - rule -> (peer) selector, policy -> (contains) rule: walked backwards
//!   from a selector whose identities changed, to the policies to redo.

use super::selector::SelectorCache;
use crate::ir::Identity;
use crate::sema::model::{PeerMatch, Policy, RuleId};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction::{Incoming, Outgoing};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    Policy(String),
    Rule(RuleId),
    Selector(PeerMatch),
    Identity(Identity),
    Endpoint(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Edge {
    /// policy -> its rule
    Contains,
    /// policy -> the selector choosing the endpoints it applies to
    Subject,
    /// rule -> a selector among its peers
    Peer,
    /// selector -> an identity it selects
    Selects,
    /// identity -> an endpoint that has it
    HeldBy,
}

#[derive(Debug, Clone, Default)]
pub struct ImpactGraph {
    graph: StableDiGraph<Node, Edge>,
    index: HashMap<Node, NodeIndex>,
}

/// Graphs are equal when they have the same nodes and edges, whatever the
/// order they were added in (node indexes differ).
impl PartialEq for ImpactGraph {
    fn eq(&self, other: &ImpactGraph) -> bool {
        self.contents() == other.contents()
    }
}

impl Eq for ImpactGraph {}

impl ImpactGraph {
    /// The graph of a policy set: `endpoints` are (name, identity) pairs.
    pub fn build<'a>(
        policies: &[Policy],
        cache: &SelectorCache,
        endpoints: impl IntoIterator<Item = (&'a str, Identity)>,
    ) -> ImpactGraph {
        let mut g = ImpactGraph::default();
        for id in cache.universe().keys() {
            g.node(Node::Identity(*id));
        }
        for (peer, ids) in cache.selectors() {
            g.set_selection(peer, ids);
        }
        for policy in policies {
            g.add_policy(policy);
        }
        for (name, id) in endpoints {
            g.add_endpoint(name, id);
        }
        g
    }

    fn node(&mut self, node: Node) -> NodeIndex {
        if let Some(index) = self.index.get(&node) {
            return *index;
        }
        let index = self.graph.add_node(node.clone());
        self.index.insert(node, index);
        index
    }

    fn remove(&mut self, node: &Node) {
        if let Some(index) = self.index.remove(node) {
            self.graph.remove_node(index);
        }
    }

    /// Every node and every edge (from, kind, to), sorted.
    fn contents(&self) -> (Vec<&Node>, Vec<(&Node, Edge, &Node)>) {
        let mut nodes: Vec<&Node> = self.graph.node_weights().collect();
        nodes.sort();
        let mut edges: Vec<(&Node, Edge, &Node)> = self
            .graph
            .edge_references()
            .map(|e| (&self.graph[e.source()], *e.weight(), &self.graph[e.target()]))
            .collect();
        edges.sort();
        (nodes, edges)
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    pub fn add_policy(&mut self, policy: &Policy) {
        let p = self.node(Node::Policy(policy.name.clone()));
        let subject = self.node(Node::Selector(PeerMatch::Endpoints(policy.selector.clone())));
        self.graph.add_edge(p, subject, Edge::Subject);
        for rule in policy.ingress.iter().chain(&policy.egress).flatten() {
            let r = self.node(Node::Rule(rule.id));
            self.graph.add_edge(p, r, Edge::Contains);
            for peer in &rule.peers {
                let s = self.node(Node::Selector(peer.clone()));
                self.graph.add_edge(r, s, Edge::Peer);
            }
        }
    }

    /// Removes a policy and its rules (selectors stay until [`Self::remove_selector`]).
    pub fn remove_policy(&mut self, name: &str) {
        let Some(&p) = self.index.get(&Node::Policy(name.to_string())) else {
            return;
        };
        let rules: Vec<Node> = self
            .graph
            .edges_directed(p, Outgoing)
            .filter(|e| *e.weight() == Edge::Contains)
            .map(|e| self.graph[e.target()].clone())
            .collect();
        for rule in rules {
            self.remove(&rule);
        }
        self.remove(&Node::Policy(name.to_string()));
    }

    /// Sets the identities a selector selects (adding the selector if new).
    pub fn set_selection(&mut self, peer: &PeerMatch, ids: &BTreeSet<Identity>) {
        let s = self.node(Node::Selector(peer.clone()));
        let old: Vec<_> = self.graph.edges_directed(s, Outgoing).map(|e| e.id()).collect();
        for edge in old {
            self.graph.remove_edge(edge);
        }
        for id in ids {
            let i = self.node(Node::Identity(*id));
            self.graph.add_edge(s, i, Edge::Selects);
        }
    }

    pub fn remove_selector(&mut self, peer: &PeerMatch) {
        self.remove(&Node::Selector(peer.clone()));
    }

    pub fn add_identity(&mut self, id: Identity) {
        self.node(Node::Identity(id));
    }

    pub fn remove_identity(&mut self, id: Identity) {
        self.remove(&Node::Identity(id));
    }

    pub fn add_endpoint(&mut self, name: &str, id: Identity) {
        let i = self.node(Node::Identity(id));
        let e = self.node(Node::Endpoint(name.to_string()));
        self.graph.add_edge(i, e, Edge::HeldBy);
    }

    pub fn remove_endpoint(&mut self, name: &str) {
        self.remove(&Node::Endpoint(name.to_string()));
    }

    fn targets(&self, from: NodeIndex, kind: Edge) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.edges_directed(from, Outgoing).filter(move |e| *e.weight() == kind).map(|e| e.target())
    }

    fn sources(&self, to: NodeIndex, kind: Edge) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.edges_directed(to, Incoming).filter(move |e| *e.weight() == kind).map(|e| e.source())
    }

    fn names(&self, nodes: impl Iterator<Item = NodeIndex>) -> impl Iterator<Item = &str> {
        nodes.filter_map(|n| match &self.graph[n] {
            Node::Endpoint(name) | Node::Policy(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The endpoints a policy applies to: policy -> selector -> identities -> endpoints.
    pub fn endpoints_of_policy(&self, name: &str) -> BTreeSet<String> {
        let Some(&p) = self.index.get(&Node::Policy(name.to_string())) else {
            return BTreeSet::new();
        };
        let mut out = BTreeSet::new();
        for s in self.targets(p, Edge::Subject) {
            for i in self.targets(s, Edge::Selects) {
                out.extend(self.names(self.targets(i, Edge::HeldBy)).map(str::to_string));
            }
        }
        out
    }

    /// The policies with a rule naming `peer` among its peers.
    pub fn policies_using(&self, peer: &PeerMatch) -> BTreeSet<String> {
        let Some(&s) = self.index.get(&Node::Selector(peer.clone())) else {
            return BTreeSet::new();
        };
        let mut out = BTreeSet::new();
        for r in self.sources(s, Edge::Peer) {
            out.extend(self.names(self.sources(r, Edge::Contains)).map(str::to_string));
        }
        out
    }

    /// The selectors (peers or policy selectors) that select `id`.
    pub fn selectors_of(&self, id: Identity) -> Vec<PeerMatch> {
        let Some(&i) = self.index.get(&Node::Identity(id)) else {
            return Vec::new();
        };
        self.sources(i, Edge::Selects)
            .filter_map(|s| match &self.graph[s] {
                Node::Selector(peer) => Some(peer.clone()),
                _ => None,
            })
            .collect()
    }
}
