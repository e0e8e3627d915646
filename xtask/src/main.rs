//! Developer commands for homeserver-sensor, run as `cargo xtask <command>`.
//!
//! Every step prints one line to stderr that starts with `xtask:`. The first step that fails
//! ends the command with a non-zero exit status and a sentence saying what failed.

mod bench;
mod cmd;
mod demo;
mod ebpf;
mod lint;
mod run;
mod test;
mod toolchain;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer commands for homeserver-sensor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel programs (sensor-ebpf) into target/bpfel-unknown-none/release/sensor,
    /// installing rust-src and the pinned bpf-linker first if they are missing, and record
    /// what built it in sensor.build beside it.
    BuildEbpf(ebpf::BuildEbpfOptions),
    /// Build the kernel programs, then the agent (homeserver-sensor) that embeds them.
    Build(run::BuildOptions),
    /// Build everything in release mode and run `homeserver-sensor run [ARGS...]` as root
    /// (through `sudo -E` when not root).
    Run(run::RunOptions),
    /// Run the unprivileged tests, then the privileged integration tests as root, one at a time.
    Test(test::TestOptions),
    /// Measure what the sensor costs, against no sensor, interleaved in one run (as root).
    Bench(bench::BenchOptions),
    /// Show the sensor at work, as root: a real homeserver, benign users, a scrape on a
    /// stolen account and a token-less harvest, the alerts as they come and the report.
    Demo(demo::DemoOptions),
    /// Check formatting of the whole workspace (`cargo fmt --all -- --check`).
    FmtCheck,
    /// Lint the host crates (stable) and the kernel crate (nightly, BPF target) with
    /// warnings denied.
    Clippy(ebpf::Options),
    /// Boot Debian kernels (x86_64, aarch64) under qemu and run the privileged tests inside
    /// each, one kernel at a time (as root: installs qemu and cross tools when missing).
    VmTest(vm::VmTestOptions),
}

fn main() {
    let result = match Cli::parse().command {
        Command::BuildEbpf(opts) => ebpf::build(&opts.ebpf).map(drop),
        Command::Build(opts) => run::build(&opts),
        Command::Run(opts) => run::run(&opts),
        Command::Test(opts) => test::test(&opts),
        Command::Bench(opts) => bench::bench(&opts),
        Command::Demo(opts) => demo::demo(&opts),
        Command::FmtCheck => lint::fmt_check(),
        Command::Clippy(opts) => lint::clippy(&opts),
        Command::VmTest(opts) => vm::vm_test(&opts),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
