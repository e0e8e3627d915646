//! Static (musl) builds of the privileged test executables and the binaries they start, for
//! one guest architecture.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::arch::Arch;
use crate::cmd::{self, step};

/// The package of the privileged tests.
const TESTS_PACKAGE: &str = "homeserver-sensor-tests";
/// Binaries the tests start, found next to the test executable (`sibling_binary`).
const SIBLINGS: &[(&str, &str)] = &[
    (TESTS_PACKAGE, "test-server"),
    ("homeserver-sensor", "homeserver-sensor"),
];

/// What goes into the initramfs's `/t`.
pub struct Binaries {
    /// Integration test executables by test target name (`accounting`, `cli`, ...).
    pub tests: Vec<(String, PathBuf)>,
    /// `test-server` and `homeserver-sensor`.
    pub siblings: Vec<(String, PathBuf)>,
}

/// Builds the integration tests and their sibling binaries for `arch` in release mode
/// (TCG runs code 10 to 50 times slower than the host: unoptimised tests would spend most of
/// their time in their own loops), with the kernel object at `object` embedded in the agent.
pub fn build(arch: Arch, object: &Path) -> Result<Binaries> {
    let target = arch.rust_target();
    step(format!(
        "building the privileged tests and the agent for {target} (release, static)..."
    ));
    // One cargo run, so both packages share one feature resolution and one build of their
    // dependencies. `--test '*'` builds every integration test of the selected packages
    // (the agent's own are left out below) and the binaries they start.
    let artifacts = cargo_json(
        arch,
        object,
        &[
            "build",
            "--package",
            TESTS_PACKAGE,
            "--package",
            "homeserver-sensor",
            "--test",
            "*",
            "--bin",
            "homeserver-sensor",
            "--bin",
            "test-server",
        ],
    )?;
    let mut tests = Vec::new();
    let mut built_bins = Vec::new();
    for artifact in &artifacts {
        let Some(exe) = artifact["executable"].as_str() else {
            continue;
        };
        let name = artifact["target"]["name"].as_str().unwrap_or_default();
        let package = package_name(artifact["package_id"].as_str().unwrap_or_default());
        let kinds = &artifact["target"]["kind"];
        let test_profile = artifact["profile"]["test"].as_bool().unwrap_or(false);
        if kinds == &serde_json::json!(["test"]) && test_profile && package == TESTS_PACKAGE {
            tests.push((name.to_owned(), PathBuf::from(exe)));
        } else if kinds == &serde_json::json!(["bin"]) && !test_profile {
            built_bins.push((package, name.to_owned(), PathBuf::from(exe)));
        }
    }
    ensure!(
        !tests.is_empty(),
        "cargo built no integration test of {TESTS_PACKAGE} for {target}"
    );
    tests.sort();
    let mut siblings = Vec::new();
    for (package, bin) in SIBLINGS {
        let path = built_bins
            .iter()
            .find(|(p, b, _)| p == package && b == bin)
            .map(|(_, _, path)| path.clone())
            .with_context(|| format!("cargo did not report the binary {bin} for {target}"))?;
        siblings.push(((*bin).to_owned(), path));
    }
    Ok(Binaries { tests, siblings })
}

/// Runs a cargo command for the musl target with JSON messages; returns the
/// `compiler-artifact` messages. Diagnostics and progress go to the terminal.
fn cargo_json(arch: Arch, object: &Path, args: &[&str]) -> Result<Vec<Value>> {
    let mut cargo = cmd::cargo();
    cargo
        .args(args)
        .args([
            "--release",
            "--target",
            arch.rust_target(),
            "--message-format=json-render-diagnostics",
        ])
        // The object `ebpf::build` just made, whatever CARGO_TARGET_DIR says.
        .env("HOMESERVER_SENSOR_EBPF_OBJECT", object)
        .stdout(Stdio::piped());
    for (var, value) in arch.cross_env() {
        cargo.env(var, value);
    }
    collect_artifacts(&mut cargo)
}

fn collect_artifacts(cargo: &mut Command) -> Result<Vec<Value>> {
    let shown = cmd::show(cargo);
    let mut child = cargo
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut artifacts = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("cannot read the output of `{shown}`"))?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            // Not a message: a build script or the test harness printed it.
            println!("{line}");
            continue;
        };
        if message["reason"] == "compiler-artifact" {
            artifacts.push(message);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{shown}`"))?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    Ok(artifacts)
}

/// The package name in a cargo package id: `path+file:///w/tests#homeserver-sensor-tests@0.1.0`
/// (cargo 1.77+) or `homeserver-sensor-tests 0.1.0 (path+file:///w/tests)` (older).
fn package_name(id: &str) -> String {
    if let Some((_, fragment)) = id.rsplit_once('#') {
        let name = fragment.split('@').next().unwrap_or(fragment);
        // `#0.1.0` alone: the name is the last path segment.
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            let path = id.rsplit_once('#').map_or(id, |(p, _)| p);
            return path.rsplit('/').next().unwrap_or(path).to_owned();
        }
        return name.to_owned();
    }
    id.split_whitespace().next().unwrap_or(id).to_owned()
}

#[cfg(test)]
mod tests {
    use super::package_name;

    #[test]
    fn package_names_from_ids() {
        assert_eq!(
            package_name("path+file:///work/main/tests#homeserver-sensor-tests@0.1.0"),
            "homeserver-sensor-tests"
        );
        assert_eq!(package_name("path+file:///work/main/xtask#0.1.0"), "xtask");
        assert_eq!(
            package_name("homeserver-sensor 0.1.0 (path+file:///work/main/sensor-user)"),
            "homeserver-sensor"
        );
    }
}
