//! The kernel object this agent embeds, and how it was built: what `--version` and the
//! start record say, so that a report from the field names the exact object (the
//! verifier's work depends on the compiler and the linker as much as on the kernel).

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::OBJECT;

/// How the embedded kernel object was built (`sensor.build`, written by `cargo xtask
/// build-ebpf`; see build.rs) and its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectBuild {
    /// SHA-256 of the object, hex; `none` when the agent was built without one.
    pub sha256: String,
    pub bpf_linker: &'static str,
    pub llvm: &'static str,
    pub rustc: &'static str,
}

impl ObjectBuild {
    /// The embedded object's.
    pub fn embedded() -> Self {
        let sha256 = if OBJECT.is_empty() {
            "none".to_owned()
        } else {
            Sha256::digest(OBJECT)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        ObjectBuild {
            sha256,
            bpf_linker: env!("HOMESERVER_SENSOR_OBJECT_BPF_LINKER"),
            llvm: env!("HOMESERVER_SENSOR_OBJECT_LLVM"),
            rustc: env!("HOMESERVER_SENSOR_OBJECT_RUSTC"),
        }
    }
}

impl fmt::Display for ObjectBuild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel object sha256 {}, linked by bpf-linker {} (LLVM {}), compiled by {}",
            self.sha256, self.bpf_linker, self.llvm, self.rustc
        )
    }
}
