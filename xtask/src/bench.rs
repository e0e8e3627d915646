//! `cargo xtask bench`: builds the kernel programs, the agent and the benchmark in release
//! mode, installs the benchmark's outside tools when missing (Debian's `wrk`, the load
//! generator, and `bpftrace`, the peer it is compared with), then runs it as root. The
//! benchmark prints a table and writes JSON; it never asserts on timings, and fails when a
//! workload cannot run.
//!
//! CI smoke run (a few minutes): `cargo xtask bench --quick --rounds 1`.

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
    /// A short run that only proves every workload still runs (CI): fewer operations per
    /// sample, 1-second load runs, 5,000 connections instead of 100,000.
    #[arg(long)]
    pub quick: bool,
    /// Only the sections (overhead, synapse, capacity, memory, latency) or workloads whose
    /// name contains this text.
    #[arg(long)]
    pub only: Option<String>,
    /// Only these modes in the overhead section, comma-separated (none, default,
    /// call_counts, syscalls, bpftrace); no sensor always runs.
    #[arg(long)]
    pub modes: Option<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    pub json: String,
    #[command(flatten)]
    pub ebpf: ebpf::Options,
}

/// Debian packages the benchmark runs, by the program each provides.
const TOOLS: [(&str, &str); 2] = [("wrk", "wrk"), ("bpftrace", "bpftrace")];

pub fn bench(opts: &BenchOptions) -> Result<()> {
    ebpf::build(&opts.ebpf)?;
    step("building the agent and the benchmark (release)...");
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "--package",
        "homeserver-sensor-tests",
        "--bin",
        "bench",
        "--bin",
        "test-server",
        "--package",
        "homeserver-sensor",
        "--bin",
        "homeserver-sensor",
    ]))?;
    let json = cmd::workspace_root().join(&opts.json);
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = Root::get("the benchmark (it loads the kernel programs)")?;
    install_tools()?;
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
    if let Some(modes) = &opts.modes {
        run.arg("--modes").arg(modes);
    }
    step(format!("running `{}`...", cmd::show(&run)));
    cmd::run(&mut run)
}

/// `apt-get install` of the tools that are not on the path, once, saying so.
fn install_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(program, _)| cmd::find_on_path(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    cmd::apt_install("what the benchmark drives", &missing)
}
