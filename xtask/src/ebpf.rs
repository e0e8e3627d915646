//! `cargo xtask build-ebpf`: the kernel programs, built with nightly for the BPF target.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{self, Command},
};

use anyhow::{Context, Result, ensure};
use clap::Args;

use crate::{
    cmd::{self, step},
    toolchain::{self, Nightly, NightlyVersion},
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
    /// bpf-linker to use, whatever its version, instead of the pinned one that xtask builds
    /// into ~/.cache/homeserver-sensor/toolchain or finds on PATH.
    #[arg(long, env = "BPF_LINKER", value_name = "PATH")]
    pub bpf_linker: Option<PathBuf>,
    /// Directory where xtask builds and keeps the pinned bpf-linker, instead of
    /// ~/.cache/homeserver-sensor/toolchain; none on PATH is used then. An empty one builds
    /// it from nothing (CI does). It must outlive the linker's use (the binary keeps an rpath
    /// to DIR/lib): not under /tmp.
    #[arg(
        long,
        env = "HOMESERVER_SENSOR_TOOLCHAIN",
        value_name = "DIR",
        conflicts_with = "bpf_linker"
    )]
    pub toolchain_prefix: Option<PathBuf>,
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

/// Builds `sensor-ebpf` and returns the path of the object; writes beside it what built it
/// ([`cmd::ebpf_build_record`]).
pub fn build(opts: &Options) -> Result<PathBuf> {
    let nightly = Nightly::locate(&opts.toolchain)?;
    nightly.ensure_rust_src()?;
    let linker = toolchain::ensure_bpf_linker(
        &nightly,
        opts.bpf_linker.as_deref(),
        opts.toolchain_prefix.as_deref(),
    )?;
    let version = nightly.version()?;
    step(format!(
        "building the kernel programs (sensor-ebpf) with toolchain {} ({}, LLVM {}) and {} ({})...",
        nightly.name,
        version.rustc,
        version.llvm,
        linker.path.display(),
        linker.version.as_deref().unwrap_or("version unknown"),
    ));
    cmd::run(cargo(&nightly, Some(&linker.path)).args([
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
    let record = cmd::ebpf_build_record();
    let text = build_record(linker.version.as_deref(), &version);
    if write_if_changed(&record, &text)? {
        step(format!("wrote {}", record.display()));
    }
    step(format!("kernel object: {}", object.display()));
    Ok(object)
}

/// The text of `sensor.build`: `key=value` lines, `bpf_linker` (its version, `unknown` when
/// it printed none), `llvm` (the nightly's LLVM version) and `rustc` (the nightly's
/// `rustc -V`). sensor-user's build.rs reads these keys.
fn build_record(linker_version: Option<&str>, nightly: &NightlyVersion) -> String {
    format!(
        "bpf_linker={}\nllvm={}\nrustc={}\n",
        linker_version.unwrap_or("unknown"),
        nightly.llvm,
        nightly.rustc
    )
}

/// Writes `text` to `path` unless it already holds exactly that (a rewrite would make cargo
/// rebuild what depends on it), atomically: a temporary file beside it, then a rename.
/// Returns whether it wrote.
fn write_if_changed(path: &Path, text: &str) -> Result<bool> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", process::id()));
    let tmp = PathBuf::from(tmp);
    let written = fs::write(&tmp, text)
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| {
            fs::rename(&tmp, path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| true)
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

#[cfg(test)]
mod tests {
    use std::{fs, process};

    use super::{build_record, write_if_changed};
    use crate::{cmd, toolchain::NightlyVersion};

    #[test]
    fn build_record_has_the_three_keys() {
        let nightly = NightlyVersion {
            rustc: "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)".to_owned(),
            llvm: "22.1.4".to_owned(),
        };
        assert_eq!(
            build_record(Some("0.13.0"), &nightly),
            "bpf_linker=0.13.0\nllvm=22.1.4\nrustc=rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\n"
        );
        assert!(build_record(None, &nightly).starts_with("bpf_linker=unknown\n"));
    }

    #[test]
    fn writes_only_when_the_text_changes() {
        let dir = cmd::target_dir().join(format!("xtask-test-record.{}", process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sensor.build");
        assert!(write_if_changed(&path, "a=1\n").unwrap());
        assert!(!write_if_changed(&path, "a=1\n").unwrap());
        assert!(write_if_changed(&path, "a=2\n").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "a=2\n");
        // Nothing left beside it but the file itself.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
