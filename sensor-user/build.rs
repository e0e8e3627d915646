//! Embeds the kernel object built by `cargo xtask build-ebpf`, and what it was built with.
//!
//! The object is looked up at `$HOMESERVER_SENSOR_EBPF_OBJECT` if set, else at
//! `<workspace>/target/bpfel-unknown-none/release/sensor`. When it is missing (a plain host
//! `cargo build`, which must not need nightly), the agent is built without it and says so
//! at start-up instead of failing to build.
//!
//! Beside the object, xtask writes `sensor.build` (`key=value` lines: `bpf_linker`, `llvm`,
//! `rustc`); each becomes `HOMESERVER_SENSOR_OBJECT_<KEY>` for the agent's `--version` and
//! start record, `unknown` when the file or the key is missing.
use std::{env, path::PathBuf};

/// The keys of `sensor.build` the agent shows.
const BUILD_KEYS: [&str; 3] = ["bpf_linker", "llvm", "rustc"];

fn main() {
    println!("cargo:rerun-if-env-changed=HOMESERVER_SENSOR_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let object = env::var_os("HOMESERVER_SENSOR_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpfel-unknown-none/release/sensor"));
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("sensor.bpf.o");
    match std::fs::read(&object) {
        Ok(bytes) => {
            std::fs::write(&out, bytes).expect("write OUT_DIR/sensor.bpf.o");
            println!("cargo:rustc-cfg=ebpf_object");
        }
        Err(_) => {
            std::fs::write(&out, []).expect("write OUT_DIR/sensor.bpf.o");
        }
    }
    println!("cargo:rustc-check-cfg=cfg(ebpf_object)");

    let info = object.with_extension("build");
    println!("cargo:rerun-if-changed={}", info.display());
    let text = std::fs::read_to_string(&info).unwrap_or_default();
    for key in BUILD_KEYS {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .unwrap_or("unknown");
        println!(
            "cargo:rustc-env=HOMESERVER_SENSOR_OBJECT_{}={value}",
            key.to_uppercase()
        );
    }
}
