//! Host tools the VM tests need, installed when missing: qemu, the aarch64 cross linker and
//! the musl Rust targets. Each install prints one step line and runs only once.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::arch::Arch;
use crate::cmd::{self, step};

/// Installs what the architectures in `archs` need and is missing.
pub fn ensure(archs: &[Arch]) -> Result<()> {
    for tool in ["dpkg-deb", "tar", "apt-get", "apt-cache"] {
        if cmd::find_on_path(tool).is_none() {
            bail!("{tool} is not installed: vm-test downloads Debian's kernels with apt and dpkg");
        }
    }
    if archs.iter().any(|a| cmd::find_on_path(a.qemu()).is_none()) {
        install_qemu()?;
    }
    if archs.contains(&Arch::Aarch64) && cmd::find_on_path("aarch64-linux-gnu-gcc").is_none() {
        // The C library headers too: crates with C code (ring) compile for the target.
        cmd::apt_install(
            "the aarch64 cross linker",
            &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
        )?;
    }
    let installed = cmd::output(
        Command::new("rustup")
            .current_dir(cmd::workspace_root())
            .args(["target", "list", "--installed"]),
    )
    .context("cannot ask rustup for the installed targets")?;
    for arch in archs {
        let target = arch.rust_target();
        if !installed.lines().any(|line| line.trim() == target) {
            step(format!("installing the Rust target {target} (once)..."));
            cmd::run(
                Command::new("rustup")
                    .current_dir(cmd::workspace_root())
                    .args(["target", "add", target]),
            )
            .with_context(|| format!("cannot install the Rust target {target}"))?;
        }
    }
    Ok(())
}

/// qemu for both architectures, in one apt line with `qemu-utils` of the same version: a
/// host that has a newer `qemu-utils` (a backport) cannot keep it next to
/// `qemu-system-common` of its release, and apt refuses to pick for itself.
fn install_qemu() -> Result<()> {
    let policy = cmd::output(Command::new("apt-cache").args(["policy", "qemu-system-x86"]))?;
    let Some(candidate) = policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)")
    else {
        bail!(
            "apt knows no qemu-system-x86 package: run `apt-get update`, or install qemu \
             (qemu-system-x86_64, qemu-system-aarch64) yourself"
        );
    };
    let utils = format!("qemu-utils={candidate}");
    cmd::apt_install(
        &format!("qemu {candidate} (with {utils}, which may replace a newer qemu-utils)"),
        &["qemu-system-x86", "qemu-system-arm", &utils],
    )
}
