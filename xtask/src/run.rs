//! `cargo xtask build` and `cargo xtask run`: the agent with the kernel programs embedded.

use std::{os::unix::process::CommandExt, path::PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::{
    cmd::{self, Root, step},
    ebpf,
};

/// The agent's package and binary.
const AGENT: &str = "homeserver-sensor";

/// Options of `cargo xtask build`.
#[derive(Args)]
pub struct BuildOptions {
    /// Build the agent with the release profile (the kernel object always is).
    #[arg(long)]
    pub release: bool,
    #[command(flatten)]
    pub ebpf: ebpf::Options,
}

/// Options of `cargo xtask run`.
#[derive(Args)]
pub struct RunOptions {
    #[command(flatten)]
    pub ebpf: ebpf::Options,
    /// Arguments for `homeserver-sensor run`, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Builds the kernel programs, then the agent.
pub fn build(opts: &BuildOptions) -> Result<()> {
    ebpf::build(&opts.ebpf)?;
    build_agent(opts.release).map(drop)
}

/// Builds everything in release mode and replaces this process with
/// `homeserver-sensor run ARGS...`, as root.
pub fn run(opts: &RunOptions) -> Result<()> {
    ebpf::build(&opts.ebpf)?;
    let agent = build_agent(true)?;
    let root = Root::get("loading the kernel programs")?;
    let mut cmd = root.command(&agent);
    cmd.arg("run").args(&opts.args);
    step(match root {
        Root::Already => format!("starting `{}`", cmd::show(&cmd)),
        Root::Sudo => format!("starting `{}` (root through sudo)", cmd::show(&cmd)),
    });
    // `exec` only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot start {}", agent.display()))
}

/// `cargo build -p homeserver-sensor [--release]`; returns the binary's path.
fn build_agent(release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    step(format!("building the agent ({AGENT}, {profile})..."));
    let mut cargo = cmd::cargo();
    cargo.args(["build", "--package", AGENT]);
    if release {
        cargo.arg("--release");
    }
    cmd::run(&mut cargo)?;
    Ok(cmd::target_dir().join(profile).join(AGENT))
}
