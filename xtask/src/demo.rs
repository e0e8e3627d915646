//! `cargo xtask demo`: builds the kernel programs, the agent and the demo in release mode,
//! then becomes the demo (`tests/src/bin/demo.rs`), as root: a real homeserver, the sensor,
//! benign users, a scrape, the alerts as they come and the report (docs/demo.md).

use std::os::unix::process::CommandExt;

use anyhow::{Context, Result};
use clap::Args;

use crate::{
    cmd::{self, Root, step},
    ebpf,
};

/// Options of `cargo xtask demo`.
#[derive(Args)]
pub struct DemoOptions {
    /// How long the benign users chat, in seconds; the scraper and the harvester run among
    /// them.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub duration: u64,
    /// Keep the demo's state directory (configuration, every record, the sensor's log, the
    /// ledger) and print its path.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub ebpf: ebpf::Options,
}

pub fn demo(opts: &DemoOptions) -> Result<()> {
    ebpf::build(&opts.ebpf)?;
    step("building the agent and the demo (release)...");
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "--package",
        "homeserver-sensor",
        "--package",
        "homeserver-sensor-tests",
        "--bin",
        "homeserver-sensor",
        "--bin",
        "demo",
    ]))?;
    let demo = cmd::target_dir().join("release/demo");
    let root = Root::get("the demo (it loads the kernel programs)")?;
    let mut run = root.command(&demo);
    run.arg("--duration").arg(opts.duration.to_string());
    if opts.keep {
        run.arg("--keep");
    }
    step(format!("running `{}`...", cmd::show(&run)));
    // Replaced by the demo rather than waiting for it: Ctrl-C then reaches the demo, which
    // stops what it started, and no xtask process dies before it has. `exec` only returns
    // on failure.
    let err = run.exec();
    Err(err).with_context(|| format!("cannot start {}", demo.display()))
}
