//! `cargo xtask test`: the unprivileged tier, then the privileged tier as root.

use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::{
    cmd::{self, Root, step},
    ebpf,
};

/// The package that holds the privileged integration tests.
const PRIVILEGED: &str = "homeserver-sensor-tests";

/// Options of `cargo xtask test`.
#[derive(Args)]
pub struct TestOptions {
    /// Run only the unprivileged tests (no root, no nightly).
    #[arg(long, conflicts_with = "privileged_only")]
    pub unit_only: bool,
    /// Run only the privileged integration tests.
    #[arg(long)]
    pub privileged_only: bool,
    #[command(flatten)]
    pub ebpf: ebpf::Options,
    /// Test name filter (and any other test-binary arguments), after `--`; given to both tiers.
    #[arg(last = true, value_name = "FILTER")]
    pub filter: Vec<String>,
}

/// Runs the test tiers in order and stops at the first that fails; the last line is the
/// total, `xtask: N passed, M failed`.
pub fn test(opts: &TestOptions) -> Result<()> {
    let mut counts = cmd::TestCounts::default();
    let result = tiers(opts, &mut counts);
    println!("xtask: {} passed, {} failed", counts.passed, counts.failed);
    result
}

fn tiers(opts: &TestOptions, counts: &mut cmd::TestCounts) -> Result<()> {
    if !opts.privileged_only {
        step("running the unprivileged tests (every crate but the kernel and privileged ones)...");
        cmd::run_tests(
            cmd::cargo()
                .args([
                    "test",
                    "--workspace",
                    "--exclude",
                    PRIVILEGED,
                    "--exclude",
                    "sensor-ebpf",
                    "--",
                ])
                .args(&opts.filter),
            counts,
        )?;
    }
    if !opts.privileged_only && opts.filter.is_empty() {
        verify_unit(counts)?;
    }
    if opts.unit_only {
        return Ok(());
    }
    ebpf::build(&opts.ebpf)?;
    // The command-line tests run the agent binary itself, with the object just built.
    step("building the agent binary for the command-line tests...");
    cmd::run(cmd::cargo().args(["build", "--package", "homeserver-sensor", "--bins"]))?;
    // No tracefs needed: the programs are cgroup, BTF-tracepoint and raw-tracepoint
    // programs, which attach by BTF id or name through bpf(2), not through tracefs.
    let root = Root::get("the privileged tests")?;
    step(match root {
        Root::Already => "running the privileged tests, one at a time...".to_owned(),
        Root::Sudo => {
            "running the privileged tests as root through sudo, one at a time...".to_owned()
        }
    });
    let mut cargo = cmd::cargo();
    if root == Root::Sudo {
        // Build as the user, run only the test binaries as root: cargo starts them through
        // the target's runner.
        cargo.env(runner_var()?, "sudo -E");
    }
    // One test at a time: the tests share kernel state (programs, maps, cgroups).
    cargo
        .args(["test", "--package", PRIVILEGED, "--", "--test-threads=1"])
        .args(&opts.filter);
    cmd::run_tests(&mut cargo, counts)
}

/// The systemd unit: `systemd-analyze verify` and its exposure score
/// (`deploy/verify-unit.sh`), counted as one test.
fn verify_unit(counts: &mut cmd::TestCounts) -> Result<()> {
    step("checking the systemd unit (deploy/verify-unit.sh)...");
    let result =
        cmd::run(Command::new("sh").arg(cmd::workspace_root().join("deploy/verify-unit.sh")));
    match result {
        Ok(()) => {
            counts.passed += 1;
            Ok(())
        }
        Err(e) => {
            counts.failed += 1;
            Err(e.context(
                "the systemd unit does not pass deploy/verify-unit.sh (it needs systemd-analyze: \
                 apt-get install systemd)",
            ))
        }
    }
}

/// `CARGO_TARGET_<HOST>_RUNNER`, the variable that sets how cargo starts host test binaries.
fn runner_var() -> Result<String> {
    let info = cmd::output(Command::new("rustc").arg("-vV"))?;
    let host = info
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .context("`rustc -vV` printed no host triple")?;
    Ok(format!(
        "CARGO_TARGET_{}_RUNNER",
        host.to_uppercase().replace(['-', '.'], "_")
    ))
}
