//! `cargo xtask test`: installs the Debian packages the tests need when missing, then runs
//! the unprivileged tier, the systemd unit's check and the privileged tier as root, each to
//! its end whatever failed before it, and prints a summary per test binary.

mod summary;

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{
    cmd::{self, Root, step},
    ebpf,
};

use summary::{Binary, Parser, Section};

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

/// How to tell that a Debian package the tests need is installed.
enum Installed {
    /// A program on PATH.
    Program(&'static str),
    /// A file at a fixed path (nginx is in /usr/sbin, which a user's PATH may lack).
    File(&'static str),
    /// A Python module (`python3 -c 'import MODULE'`): python3-venv is what makes `ensurepip`
    /// importable on Debian, and a venv with pip needs it (`python3 -m venv --help` works
    /// without it).
    PythonModule(&'static str),
}

impl Installed {
    fn check(&self) -> bool {
        match self {
            Installed::Program(name) => cmd::find_on_path(name).is_some(),
            Installed::File(path) => Path::new(path).is_file(),
            Installed::PythonModule(module) => Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success()),
        }
    }
}

/// The Debian packages the tests need, how to tell each is installed, and whether only the
/// privileged tier needs it (else the systemd unit's check, in the unprivileged tier, does).
/// `.ci/run` installs the same list up front.
const PACKAGES: [(&str, Installed, bool); 5] = [
    // The reverse proxy of the request tests and the real homeserver's.
    ("nginx-light", Installed::File("/usr/sbin/nginx"), true),
    // The stand-in Synapse and the real one.
    ("python3", Installed::Program("python3"), true),
    // The venv that the real homeserver (tests/src/homeserver.rs) pip-installs Synapse into.
    ("python3-venv", Installed::PythonModule("ensurepip"), true),
    // setpriv, for the unprivileged-error test.
    ("util-linux", Installed::Program("setpriv"), true),
    // systemd-analyze, which checks the unit in deploy/.
    ("systemd", Installed::Program("systemd-analyze"), false),
];

/// Runs every selected tier to its end, whatever failed before, then prints the summary and
/// the total, `xtask: N passed, M failed`, as the last line (CI reads it); fails if any test
/// failed or a tier could not run.
pub fn test(opts: &TestOptions) -> Result<()> {
    let mut sections = Vec::new();
    run_all(opts, &mut sections);
    let passed: u64 = sections.iter().map(Section::passed).sum();
    let failed: u64 = sections.iter().map(Section::failed).sum();
    print!("{}", summary::render(&sections));
    println!("xtask: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} failed (see the summary above)");
    }
    Ok(())
}

fn run_all(opts: &TestOptions, sections: &mut Vec<Section>) {
    let unit = !opts.privileged_only;
    let unit_check = unit && opts.filter.is_empty();
    let privileged = !opts.unit_only;
    if let Err(e) = install_packages(unit_check, privileged) {
        let mut setup = Section::new("setup");
        setup.problems.push(format!("{e:#}"));
        sections.push(setup);
        return;
    }
    if unit {
        step("running the unprivileged tests (every crate but the kernel and privileged ones)...");
        let mut cargo = cmd::cargo();
        cargo
            .args([
                "test",
                "--no-fail-fast",
                "--workspace",
                "--exclude",
                PRIVILEGED,
                "--exclude",
                "sensor-ebpf",
                "--",
            ])
            .args(&opts.filter);
        sections.push(run_tier("unprivileged tests", &mut cargo));
    }
    if unit_check {
        sections.push(verify_unit());
    }
    if privileged {
        sections.push(privileged_tier(opts).unwrap_or_else(|e| {
            let mut section = Section::new("privileged tests");
            section.problems.push(format!("not run: {e:#}"));
            section
        }));
    }
}

/// `apt-get install` of the packages the selected parts need that are missing, once.
fn install_packages(unit_check: bool, privileged: bool) -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, _, privileged_only)| {
            if *privileged_only {
                privileged
            } else {
                unit_check
            }
        })
        .filter(|(_, installed, _)| !installed.check())
        .map(|(package, _, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    cmd::apt_install("what the tests need", &missing)
}

/// Runs one tier's `cargo test`, echoing its output (stdout and stderr, in order, to stdout),
/// and reads its binaries' results. A cargo that fails with no failing test (a build error)
/// is a problem of the tier.
fn run_tier(title: &str, cargo: &mut Command) -> Section {
    let mut section = Section::new(title);
    let mut parser = Parser::default();
    let status = cmd::run_merged(cargo, |line| {
        println!("{line}");
        parser.line(line);
    });
    section.binaries = parser.finish();
    match status {
        Ok(status) if !status.success() && section.failed() == 0 => section.problems.push(format!(
            "`{}` failed ({status}) with no failing test: see its output above",
            cmd::show(cargo)
        )),
        Ok(_) => {}
        Err(e) => section.problems.push(format!("{e:#}")),
    }
    section
}

/// The kernel programs, the agent binary, then the privileged tests as root, one at a time.
/// An error is a tier that could not run.
fn privileged_tier(opts: &TestOptions) -> Result<Section> {
    ebpf::build(&opts.ebpf).context("cannot build the kernel programs")?;
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
        .args([
            "test",
            "--no-fail-fast",
            "--package",
            PRIVILEGED,
            "--",
            "--test-threads=1",
        ])
        .args(&opts.filter);
    Ok(run_tier("privileged tests", &mut cargo))
}

/// The systemd unit: `systemd-analyze verify` and its exposure score
/// (`deploy/verify-unit.sh`), counted as one test.
fn verify_unit() -> Section {
    step("checking the systemd unit (deploy/verify-unit.sh)...");
    let result =
        cmd::run(Command::new("sh").arg(cmd::workspace_root().join("deploy/verify-unit.sh")));
    let mut section = Section::new("systemd unit");
    section.binaries.push(match result {
        Ok(()) => Binary::single("deploy/verify-unit.sh", true, None),
        Err(e) => Binary::single(
            "deploy/verify-unit.sh",
            false,
            Some(format!("{e:#} (see its output above)")),
        ),
    });
    section
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
