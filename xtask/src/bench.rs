//! `cargo xtask bench`: builds the kernel programs and the benchmark in release mode, then
//! runs it as root. The benchmark prints a table and writes JSON; it never asserts on timings.

use anyhow::Result;
use clap::Args;

use crate::{
    cmd::{self, Root, step},
    ebpf,
};

/// Options of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchOptions {
    /// Interleaved rounds (each runs every mode once).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// A short run that only proves the benchmark works (CI): fewer operations per sample.
    #[arg(long)]
    pub quick: bool,
    /// Only the workloads whose name contains this text.
    #[arg(long)]
    pub only: Option<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    pub json: String,
    #[command(flatten)]
    pub ebpf: ebpf::Options,
}

pub fn bench(opts: &BenchOptions) -> Result<()> {
    ebpf::build(&opts.ebpf)?;
    step("building the benchmark (release)...");
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "--package",
        "homeserver-sensor-tests",
        "--bin",
        "bench",
        "--bin",
        "test-server",
    ]))?;
    let json = cmd::workspace_root().join(&opts.json);
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = Root::get("the benchmark (it loads the kernel programs)")?;
    let mut run = root.command(cmd::target_dir().join("release/bench"));
    run.arg("--rounds")
        .arg(opts.rounds.to_string())
        .arg("--json")
        .arg(&json);
    if opts.quick {
        run.arg("--quick");
    }
    if let Some(only) = &opts.only {
        run.arg("--only").arg(only);
    }
    step(format!("running `{}`...", cmd::show(&run)));
    cmd::run(&mut run)
}
