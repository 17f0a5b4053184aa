//! A program the verifier rejects: the load error names the endpoint and
//! carries the end of the verifier's log, and no pin is left behind.

use crate::harness::require_bpf;
use polc_runtime::loader::{LoadError, LoadSpec, LoadedEndpoint, PinDir};

/// Reads the packet without checking it against data_end.
const UNCHECKED_READ: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tcx/ingress")
int from_ep(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	return *(volatile __u8 *)(data + 20);
}

char LICENSE[] SEC("license") = "GPL";
"#;

#[test]
fn a_verifier_rejection_names_the_endpoint_and_shows_the_log() {
    if !require_bpf("a_verifier_rejection_names_the_endpoint_and_shows_the_log") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = dir.path().join("bad.bpf.c");
    let object = dir.path().join("bad.o");
    std::fs::write(&source, UNCHECKED_READ).unwrap_or_else(|e| panic!("{e}"));
    let status = std::process::Command::new("clang")
        .args(polc::codegen::clang::CFLAGS)
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());

    let name = format!("test-{}-verifier", std::process::id());
    let pins = PinDir::create(&name).unwrap_or_else(|e| panic!("{e}"));
    let spec = LoadSpec {
        endpoint: "payments",
        object: &object,
        constants: &[],
        map_sizes: &[],
        node_pins: pins.node_maps(),
        endpoint_pins: pins.endpoint_maps(1),
    };
    match LoadedEndpoint::load(&spec) {
        Err(err @ LoadError::Load { .. }) => {
            let message = err.to_string();
            assert!(message.starts_with("endpoint `payments`: the kernel rejected"), "{message}");
            assert!(message.contains("invalid access to packet"), "the verifier's reason is shown:\n{message}");
        }
        Err(other) => panic!("expected a verifier rejection, got {other}"),
        Ok(_) => panic!("the verifier accepted an unchecked packet read"),
    }
    let path = pins.path().to_path_buf();
    drop(pins);
    assert!(!path.exists(), "pins removed");
}
