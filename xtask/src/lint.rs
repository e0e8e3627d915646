//! `cargo xtask fmt-check` and `cargo xtask clippy`.

use anyhow::Result;

use crate::{
    cmd::{self, step},
    ebpf,
    toolchain::{self, Nightly},
};

/// `cargo fmt --all -- --check`.
pub fn fmt_check() -> Result<()> {
    step("checking formatting (cargo fmt --all -- --check)...");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
}

/// Clippy with warnings denied: the host crates with the default toolchain, then the kernel
/// crate with nightly for the BPF target (same environment as `build-ebpf`). Both always run,
/// so one command shows every warning; it fails if either does.
pub fn clippy(opts: &ebpf::Options) -> Result<()> {
    let host = clippy_host();
    let kernel = clippy_kernel(opts);
    host.and(kernel)
}

fn clippy_host() -> Result<()> {
    step(
        "linting the host crates (cargo clippy --workspace --exclude sensor-ebpf --all-targets)...",
    );
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "sensor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn clippy_kernel(opts: &ebpf::Options) -> Result<()> {
    let nightly = Nightly::locate(&opts.toolchain)?;
    nightly.ensure_rust_src()?;
    // Linting does not link: use a bpf-linker if one is at hand, never build one for this.
    let linker = toolchain::find_bpf_linker(
        &nightly,
        opts.bpf_linker.as_deref(),
        opts.toolchain_prefix.as_deref(),
    )?
    .map(|linker| linker.path);
    step(format!(
        "linting the kernel crate (cargo +{} clippy -p sensor-ebpf --target {})...",
        nightly.name,
        ebpf::TARGET
    ));
    cmd::run(ebpf::cargo(&nightly, linker.as_deref()).args([
        "clippy",
        "--package",
        "sensor-ebpf",
        "--target",
        ebpf::TARGET,
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}
