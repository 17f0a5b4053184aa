//! From polc's resolved tables to runtime [`Artifact`]s: the per-endpoint
//! half of `polc build` (features, code shape, clang with the object cache,
//! `.rodata` constants, policy map entries, capacity) as the agent needs it.

use crate::datapath::{Direction, METRICS_MAP};
use crate::swap::Artifact;
use polc::codegen::bundle::metrics_entries;
use polc::codegen::clang::Clang;
use polc::codegen::entries::{assign_slots, check_capacity, direction_entries, PolicyEntry};
use polc::codegen::header::{
    code_shape, direction_code_shape, features_of, render_node, render_shape, shape_name, BuildOptions,
    EndpointAddresses, EndpointConstants, Features, NodeConfig,
};
use polc::codegen::CodegenError;
use polc::ir::{DirectionTable, EndpointPolicy, Resolved};
use polc::sema::model::EndpointDef;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Builds endpoints for one node: clang with its object cache, the node
/// header, the build options.
pub struct NodeBuilder {
    clang: Clang,
    node: NodeConfig,
    node_header: String,
    options: BuildOptions,
    /// The object of each code shape met so far. The node header and the
    /// options are fixed for the builder's life, so the shape alone names
    /// the object: a known shape renders no header and hashes no sources
    /// (the clang cache's key), which is most of a table-only change's build.
    objects: Mutex<BTreeMap<Features, PathBuf>>,
}

impl NodeBuilder {
    pub fn new(cache: &Path, node: NodeConfig, options: BuildOptions) -> Result<NodeBuilder, CodegenError> {
        let clang = Clang::new(cache)?;
        let node_header = render_node(&node)?;
        Ok(NodeBuilder { clang, node, node_header, options, objects: Mutex::default() })
    }

    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// The artifact of one endpoint: the object of its code shape (compiled
    /// once, then from the cache), its constants and its policy entries.
    /// `id` is the endpoint's number on the node (LXC_ID, from 1).
    pub fn endpoint(&self, policy: &EndpointPolicy, def: &EndpointDef, id: u32) -> Result<Artifact, CodegenError> {
        let addresses = EndpointAddresses::of(def);
        let features = features_of(policy, &addresses, &self.options);
        // Empty for a direction that is not enforced.
        let mut ingress = direction_entries(&policy.name, &policy.ingress)?;
        let mut egress = direction_entries(&policy.name, &policy.egress)?;
        // Counter slots are numbered over both directions, as `polc build` does.
        let rule_slots = assign_slots(&policy.name, [&mut ingress, &mut egress])?;
        let capacity = self.node.sizes.policy;
        check_capacity(&policy.name, "ingress", &ingress, capacity)?;
        check_capacity(&policy.name, "egress", &egress, capacity)?;
        let map_sizes = vec![(METRICS_MAP.to_string(), metrics_entries(rule_slots.len()))];
        let object = self.object(&features)?;
        let constants = EndpointConstants {
            name: policy.name.clone(),
            identity: policy.identity.0,
            id,
            trace_level: self.options.trace_level,
            addresses,
        };
        let encode = |table: &DirectionTable, entries: Vec<PolicyEntry>| table.enforced.then_some(entries);
        Ok(Artifact {
            endpoint: policy.name.clone(),
            object,
            constants: constants.rodata(),
            map_sizes,
            rule_slots,
            ingress: encode(&policy.ingress, ingress),
            egress: encode(&policy.egress, egress),
            // One builder: one set of templates, node header and clang.
            direction_shapes: Some(
                Direction::BOTH.map(|d| shape_name(&direction_code_shape(&features, d == Direction::Ingress))),
            ),
        })
    }

    /// The object of `features`' code shape: from memory when this builder
    /// has met the shape and the file is still there, else from clang (its
    /// cache, or a compile).
    fn object(&self, features: &Features) -> Result<PathBuf, CodegenError> {
        let shape = code_shape(features);
        let known = self.objects.lock().ok().and_then(|objects| objects.get(&shape).cloned());
        if let Some(path) = known.filter(|path| path.is_file()) {
            return Ok(path);
        }
        let path = self.clang.compile(&self.node_header, &render_shape(&shape)?)?.path;
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(shape, path.clone());
        }
        Ok(path)
    }
}

/// The node-wide ipcache entries: (prefix address, length, identity).
pub fn ipcache_entries(resolved: &Resolved) -> Vec<(IpAddr, u8, u32)> {
    resolved.ipcache.iter().map(|(net, id)| (net.network(), net.prefix_len(), id.0)).collect()
}
