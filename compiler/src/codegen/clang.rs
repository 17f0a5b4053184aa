//! Compiling the datapath (templates/bpf/) with clang, once per code shape.
//!
//! The sources are embedded in polc; a compile writes them with the
//! generated headers into `<cache>/src/<hash>/` and the object to
//! `<cache>/objects/<hash>.o`. The hash covers everything that shapes the
//! code: the sources, both headers (features, map sizes; constants only in a
//! per-endpoint compile), the clang version and the flags. An object already
//! in the cache is reused without running clang.

use super::CodegenError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The datapath sources, by file name.
pub const SOURCES: [(&str, &str); 7] = [
    ("common.h", include_str!("../../../templates/bpf/common.h")),
    ("parse.h", include_str!("../../../templates/bpf/parse.h")),
    ("ipcache.h", include_str!("../../../templates/bpf/ipcache.h")),
    ("conntrack.h", include_str!("../../../templates/bpf/conntrack.h")),
    ("policy.h", include_str!("../../../templates/bpf/policy.h")),
    ("events.h", include_str!("../../../templates/bpf/events.h")),
    ("endpoint.bpf.c", include_str!("../../../templates/bpf/endpoint.bpf.c")),
];
const MAIN_SOURCE: &str = "endpoint.bpf.c";
pub const NODE_HEADER: &str = "node_config.h";
pub const ENDPOINT_HEADER: &str = "ep_config.h";

pub const CFLAGS: [&str; 7] =
    ["-O2", "-g", "-target", "bpf", "-Wall", "-Wno-unused-function", "-I/usr/include/x86_64-linux-gnu"];

/// A compiled object in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledObject {
    pub hash: String,
    pub path: PathBuf,
    /// Whether clang ran (false: found in the cache).
    pub compiled: bool,
    /// clang's warnings, naming the generated files.
    pub warnings: String,
}

pub struct Clang {
    program: String,
    version: String,
    cache: PathBuf,
}

impl Clang {
    /// Finds clang (`$CLANG` or `clang`) and uses `cache` for sources and objects.
    pub fn new(cache: &Path) -> Result<Clang, CodegenError> {
        let program = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
        let output = Command::new(&program)
            .arg("--version")
            .output()
            .map_err(|source| CodegenError::Spawn { program: program.clone(), source })?;
        let version = String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().to_string();
        Ok(Clang { program, version, cache: cache.to_path_buf() })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The object for `node_header` + `endpoint_header` (a shape header or a
    /// full per-endpoint one), compiled unless cached.
    pub fn compile(&self, node_header: &str, endpoint_header: &str) -> Result<CompiledObject, CodegenError> {
        let hash = self.hash(node_header, endpoint_header);
        let objects = self.cache.join("objects");
        let path = objects.join(format!("{hash}.o"));
        if path.is_file() {
            return Ok(CompiledObject { hash, path, compiled: false, warnings: String::new() });
        }
        let dir = self.cache.join("src").join(&hash);
        let write = |name: &str, contents: &str| {
            let file = dir.join(name);
            std::fs::write(&file, contents).map_err(|source| CodegenError::Io { path: file, source })
        };
        for d in [&dir, &objects] {
            std::fs::create_dir_all(d).map_err(|source| CodegenError::Io { path: d.clone(), source })?;
        }
        for (name, contents) in SOURCES {
            write(name, contents)?;
        }
        write(NODE_HEADER, node_header)?;
        write(ENDPOINT_HEADER, endpoint_header)?;

        // Compile to a temporary name and rename: parallel builds of the same
        // shape never see a half-written object.
        let partial = objects.join(format!("{hash}.o.{}", std::process::id()));
        let output = Command::new(&self.program)
            .args(CFLAGS)
            .arg("-I")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join(MAIN_SOURCE))
            .arg("-o")
            .arg(&partial)
            .output()
            .map_err(|source| CodegenError::Spawn { program: self.program.clone(), source })?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            let _ = std::fs::remove_file(&partial);
            return Err(CodegenError::Clang { what: format!("object {hash}"), dir, stderr });
        }
        std::fs::rename(&partial, &path).map_err(|source| CodegenError::Io { path: path.clone(), source })?;
        Ok(CompiledObject { hash, path, compiled: true, warnings: stderr })
    }

    fn hash(&self, node_header: &str, endpoint_header: &str) -> String {
        let mut h = Fnv64::default();
        h.add(&self.version);
        for flag in CFLAGS {
            h.add(flag);
        }
        for (name, contents) in SOURCES {
            h.add(name);
            h.add(contents);
        }
        h.add(node_header);
        h.add(endpoint_header);
        format!("{:016x}", h.0)
    }
}

/// FNV-1a, 64 bits: stable across builds and Rust versions (unlike
/// `DefaultHasher`), enough to key a local cache.
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    fn add(&mut self, text: &str) {
        // Length first, so ("ab", "c") and ("a", "bc") differ.
        for byte in (text.len() as u64).to_le_bytes().iter().chain(text.as_bytes()) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
