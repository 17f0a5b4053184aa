//! A program the verifier rejects: the load error names the endpoint and
//! carries the end of the verifier's log, and no pin is left behind; also
//! when the programs are verified on separate threads and the others pass.

use crate::harness::require_bpf;
use polc_runtime::loader::{LoadError, LoadSpec, LoadedEndpoint, PinDir};
use std::path::{Path, PathBuf};

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

/// A per-endpoint map, pinned, that [`COUNTING`] uses.
const SEEN_MAP: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ep_seen SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
"#;

/// A program the verifier accepts (`NAME` is its name).
const COUNTING: &str = r#"
SEC("tcx/ingress")
int NAME(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u32 *seen = bpf_map_lookup_elem(&ep_seen, &key);
	if (seen)
		*seen += 1;
	return 0;
}
"#;

/// A program the verifier rejects: it reads the packet unchecked.
const UNCHECKED: &str = r#"
SEC("tcx/ingress")
int NAME(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	return *(volatile __u8 *)(data + 20);
}
"#;

fn compile(dir: &Path, name: &str, source: &str) -> PathBuf {
    let (c, object) = (dir.join(format!("{name}.bpf.c")), dir.join(format!("{name}.o")));
    std::fs::write(&c, source).unwrap_or_else(|e| panic!("{e}"));
    let status = std::process::Command::new("clang")
        .args(polc::codegen::clang::CFLAGS)
        .arg("-c")
        .arg(&c)
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    object
}

/// Loads `object` on `program_threads` threads: a verifier rejection that
/// names the endpoint and shows the log; no pin left under the endpoint's
/// pin directory.
fn assert_rejected(object: &Path, program_threads: usize, test: &str) {
    let name = format!("test-{}-{test}", std::process::id());
    let pins = PinDir::create(&name).unwrap_or_else(|e| panic!("{e}"));
    let spec = LoadSpec {
        endpoint: "payments",
        object,
        constants: &[],
        map_sizes: &[],
        node_pins: pins.node_maps(),
        endpoint_pins: pins.endpoint_maps(1),
        program_threads,
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
    let left: Vec<_> = std::fs::read_dir(pins.endpoint_maps(1))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no per-endpoint pin left: {left:?}");
    let path = pins.path().to_path_buf();
    drop(pins);
    assert!(!path.exists(), "pins removed");
}

#[test]
fn a_verifier_rejection_names_the_endpoint_and_shows_the_log() {
    if !require_bpf("a_verifier_rejection_names_the_endpoint_and_shows_the_log") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let object = compile(dir.path(), "bad", UNCHECKED_READ);
    assert_rejected(&object, 1, "verifier");
}

/// The programs of one load verified on two threads, one of them rejected:
/// the first program (loaded with the maps) or the second (loaded from
/// another object on another thread, after the first one's load created
/// and pinned the map). Either way the log is the rejected one's and the
/// map's pin is gone.
#[test]
fn a_rejection_on_one_of_two_loading_threads_leaves_no_pin() {
    if !require_bpf("a_rejection_on_one_of_two_loading_threads_leaves_no_pin") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (first, second) = ("from_ep", "from_ep_v6");
    let rejected_first = [UNCHECKED.replace("NAME", first), COUNTING.replace("NAME", second)];
    let rejected_second = [COUNTING.replace("NAME", first), UNCHECKED.replace("NAME", second)];
    for (case, programs) in [("first", rejected_first), ("second", rejected_second)] {
        let object = compile(dir.path(), case, &format!("{SEEN_MAP}{}{}", programs[0], programs[1]));
        assert_rejected(&object, 2, &format!("verifier-split-{case}"));
    }
}

/// A split load whose maps cannot be made (an array of 0 entries): the
/// threads waiting for them to load their programs are released, and the
/// error is the map's.
#[test]
fn a_map_the_kernel_refuses_fails_a_split_load_before_its_programs() {
    if !require_bpf("a_map_the_kernel_refuses_fails_a_split_load_before_its_programs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Not the datapath's names: the object has no prog array for tail calls.
    let programs = [COUNTING.replace("NAME", "one"), COUNTING.replace("NAME", "two")];
    let object = compile(dir.path(), "good", &format!("{SEEN_MAP}{}{}", programs[0], programs[1]));
    let pins =
        PinDir::create(&format!("test-{}-verifier-split-map", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let map_sizes = [("ep_seen".to_string(), 0)];
    let spec = LoadSpec {
        endpoint: "payments",
        object: &object,
        constants: &[],
        map_sizes: &map_sizes,
        node_pins: pins.node_maps(),
        endpoint_pins: pins.endpoint_maps(1),
        program_threads: 2,
    };
    match LoadedEndpoint::load(&spec) {
        Err(err @ LoadError::Load { .. }) => {
            let message = err.to_string();
            assert!(message.contains("map 'ep_seen'"), "the map's error is shown:\n{message}");
        }
        Err(other) => panic!("expected a load error, got {other}"),
        Ok(_) => panic!("an array of 0 entries was created"),
    }
    assert!(!pins.endpoint_maps(1).join("ep_seen").exists(), "nothing pinned");
    // The same object with its maps loads on two threads.
    let spec = LoadSpec { map_sizes: &[], ..spec };
    let loaded = LoadedEndpoint::load(&spec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.program_loads(), 2);
}
