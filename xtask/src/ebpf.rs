//! `cargo xtask build-ebpf`: the kernel programs, built with nightly for the BPF target.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, ensure};
use clap::Args;

use crate::{
    cmd::{self, step},
    toolchain::{self, Nightly},
};

/// The target the kernel crate builds for (the object is the same for every host arch).
pub const TARGET: &str = "bpfel-unknown-none";

/// Debug info plus `--btf` for bpf-linker, so the object carries BTF.
const RUSTFLAGS: &str = "-C debuginfo=2 -C link-arg=--btf";

/// Variables that the outer (stable) cargo or the user's host setup may set, and that would
/// make the nightly cargo use the wrong compiler or host-only flags.
const OUTER_VARS: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
];

/// How to build the kernel programs; shared by every command that builds or lints them.
#[derive(Args, Clone)]
pub struct Options {
    /// Nightly toolchain that builds the kernel programs.
    #[arg(long, env = "HOMESERVER_SENSOR_NIGHTLY", default_value = "nightly")]
    pub toolchain: String,
    /// bpf-linker to use, instead of the one xtask builds into
    /// ~/.cache/homeserver-sensor/toolchain or finds on PATH.
    #[arg(long, env = "BPF_LINKER", value_name = "PATH")]
    pub bpf_linker: Option<PathBuf>,
}

/// Options of `cargo xtask build-ebpf`.
#[derive(Args)]
pub struct BuildEbpfOptions {
    /// Build with the release profile. This is the default and the only profile: the agent
    /// embeds target/bpfel-unknown-none/release/sensor.
    #[arg(long)]
    pub release: bool,
    #[command(flatten)]
    pub ebpf: Options,
}

/// Builds `sensor-ebpf` and returns the path of the object.
pub fn build(opts: &Options) -> Result<PathBuf> {
    let nightly = Nightly::locate(&opts.toolchain)?;
    nightly.ensure_rust_src()?;
    let linker = toolchain::ensure_bpf_linker(&nightly, opts.bpf_linker.as_deref())?;
    step(format!(
        "building the kernel programs (sensor-ebpf) with toolchain {} and {}...",
        nightly.name,
        linker.display()
    ));
    cmd::run(cargo(&nightly, Some(&linker)).args([
        "build",
        "--package",
        "sensor-ebpf",
        "--release",
        "--target",
        TARGET,
        "-Z",
        "build-std=core",
    ]))?;
    let object = cmd::ebpf_object();
    ensure!(
        object.is_file(),
        "the kernel build succeeded but left no object at {}",
        object.display()
    );
    step(format!("kernel object: {}", object.display()));
    Ok(object)
}

/// `cargo +NIGHTLY` in the workspace root, cleaned of the outer cargo's compiler settings,
/// with the BPF flags and (when given) the linker set.
pub fn cargo(nightly: &Nightly, linker: Option<&Path>) -> Command {
    let mut cmd = cmd::cargo();
    cmd.arg(format!("+{}", nightly.name));
    for var in OUTER_VARS {
        cmd.env_remove(var);
    }
    cmd.env("RUSTFLAGS", RUSTFLAGS);
    if let Some(linker) = linker {
        cmd.env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", linker);
    }
    cmd
}
