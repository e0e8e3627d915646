//! What `cargo xtask test` makes of `cargo test`'s output: per test binary, its passed and
//! failed counts and the names of its failed tests, for the summary at the end.
//!
//! It reads cargo's stdout and stderr merged into one stream, in the order they were
//! written: cargo says on stderr which binary it starts (`     Running tests/foo.rs
//! (target/debug/deps/foo-HASH)`, `   Doc-tests crate`), then the binary's libtest output
//! follows on stdout. From libtest it reads `test NAME ... FAILED`, the `failures:` list
//! printed before the result (which holds names only when it is the last one before
//! `test result:`: a failed test's own output may print such a list too), and the
//! `test result:` counts. A binary that dies (a signal, an abort) prints no result: cargo
//! then says `error: test failed, to rerun pass ...`, and the test that was running when it
//! died is counted as failed.

use std::path::Path;

/// One test binary's results.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Binary {
    /// `name (source)`: `homeserver_sensor (unittests src/lib.rs)`, `cli (tests/cli.rs)`,
    /// `sensor_user (doc-tests)`.
    pub label: String,
    /// From the `test result:` line, else the `... ok` lines seen.
    passed: u64,
    /// From the `test result:` line.
    failed: u64,
    /// From the `test result:` line.
    ignored: u64,
    /// Names of `test NAME ... FAILED` lines.
    failed_lines: Vec<String>,
    /// The `failures:` list libtest printed last, taken when `test result:` comes.
    listed: Vec<String>,
    /// A `test NAME ... ` line with no result yet (libtest prints the name first when tests
    /// run one at a time): the test that was running if the binary died.
    running: Option<String>,
    /// A `test result:` line was seen.
    finished: bool,
    /// cargo said the binary failed (`error: test failed, to rerun pass ...`).
    cargo_failed: bool,
}

impl Binary {
    /// A binary that is not one of cargo's (the systemd unit's check), counted as one test.
    pub fn single(label: &str, passed: bool, failure: Option<String>) -> Self {
        Binary {
            label: label.to_owned(),
            passed: u64::from(passed),
            failed: u64::from(!passed),
            listed: failure.into_iter().collect(),
            finished: true,
            ..Binary::default()
        }
    }

    fn named(label: String) -> Self {
        Binary {
            label,
            ..Binary::default()
        }
    }

    pub fn passed(&self) -> u64 {
        self.passed
    }

    /// Failed tests; a binary that cargo says failed with none counted (it died before its
    /// result, or exited with an error after its tests passed) counts one.
    pub fn failed(&self) -> u64 {
        let failed = if self.finished {
            self.failed
        } else {
            self.failed_lines.len() as u64 + u64::from(self.running.is_some())
        };
        if failed == 0 && self.cargo_failed {
            1
        } else {
            failed
        }
    }

    /// The names of the failed tests, and what happened when no test is to blame.
    pub fn failures(&self) -> Vec<String> {
        let mut names = if self.finished && !self.listed.is_empty() {
            self.listed.clone()
        } else {
            self.failed_lines.clone()
        };
        if !self.finished {
            if let Some(test) = &self.running {
                names.push(format!(
                    "{test} (the test binary died while it ran, with no test result)"
                ));
            } else if self.cargo_failed {
                names.push("(the test binary died before any test, with no test result)".into());
            }
        } else if self.failed == 0 && self.cargo_failed {
            names.push("(the test binary exited with an error after its tests passed)".into());
        }
        names
    }

    fn ran_nothing(&self) -> bool {
        self.passed == 0 && self.failed() == 0 && self.ignored == 0
    }
}

/// Reads `cargo test`'s merged output line by line.
#[derive(Default)]
pub struct Parser {
    binaries: Vec<Binary>,
    /// Inside a `failures:` list, with the names read so far.
    list: Option<Vec<String>>,
    /// The last complete `failures:` list, for the next `test result:`.
    last_list: Vec<String>,
}

impl Parser {
    pub fn line(&mut self, line: &str) {
        if let Some(label) = binary_label(line) {
            self.binaries.push(Binary::named(label));
            self.list = None;
            self.last_list.clear();
            return;
        }
        // cargo's verdict on a binary that failed; after a binary that died, on the same line
        // as the `test NAME ... ` it was running.
        if line.contains("failed, to rerun pass `") {
            self.current().cargo_failed = true;
        }
        if let Some(names) = &mut self.list {
            if let Some(name) = line.strip_prefix("    ").filter(|n| !n.starts_with(' ')) {
                names.push(name.trim_end().to_owned());
                return;
            }
            if line.trim().is_empty() && names.is_empty() {
                return;
            }
            self.last_list = self.list.take().unwrap_or_default();
        }
        if line == "failures:" {
            self.list = Some(Vec::new());
            return;
        }
        if let Some(result) = line.strip_prefix("test result: ") {
            let listed = std::mem::take(&mut self.last_list);
            let binary = self.current();
            let (passed, failed, ignored) = result_counts(result);
            binary.passed = passed;
            binary.failed = failed;
            binary.ignored = ignored;
            binary.finished = true;
            binary.running = None;
            if failed > 0 {
                binary.listed = listed;
            }
            return;
        }
        if let Some((name, outcome)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        {
            let binary = self.current();
            binary.running = None;
            if outcome.starts_with("ok") {
                binary.passed += 1;
            } else if outcome.starts_with("FAILED") {
                binary.failed_lines.push(name.to_owned());
            } else if !outcome.starts_with("ignored") {
                // The result follows later (the test's children printed in between), or
                // never (the binary died).
                binary.running = Some(name.to_owned());
            }
        }
    }

    /// The binaries read, in the order they ran.
    pub fn finish(self) -> Vec<Binary> {
        self.binaries
    }

    fn current(&mut self) -> &mut Binary {
        if self.binaries.is_empty() {
            self.binaries
                .push(Binary::named("(a test binary cargo did not name)".into()));
        }
        self.binaries.last_mut().expect("just pushed")
    }
}

/// The binary that cargo's status line says it starts: `     Running SOURCE (PATH)` (the
/// path of the executable, whose name is the crate's or test's name and a hash) or
/// `   Doc-tests CRATE`. Only cargo's own right-aligned status lines, not a test's output.
fn binary_label(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("     Running ") {
        let (source, path) = rest.strip_suffix(')')?.rsplit_once(" (")?;
        let file = Path::new(path).file_name()?.to_str()?;
        let name = match file.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name,
            _ => file,
        };
        return Some(format!("{name} ({source})"));
    }
    let krate = line.strip_prefix("   Doc-tests ")?;
    Some(format!("{} (doc-tests)", krate.trim()))
}

/// Passed, failed and ignored counts of a libtest summary
/// (`ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.06s`).
fn result_counts(result: &str) -> (u64, u64, u64) {
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    for part in result.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(what), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else {
            continue;
        };
        match what {
            "passed" => passed += n,
            "failed" => failed += n,
            "ignored" => ignored += n,
            _ => {}
        }
    }
    (passed, failed, ignored)
}

/// One part of the run: a tier of tests, or a check counted as tests.
pub struct Section {
    pub title: String,
    pub binaries: Vec<Binary>,
    /// What went wrong outside any test binary (the tier could not run, cargo failed with no
    /// failing test); each counts as one failed test.
    pub problems: Vec<String>,
}

impl Section {
    pub fn new(title: &str) -> Self {
        Section {
            title: title.to_owned(),
            binaries: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn passed(&self) -> u64 {
        self.binaries.iter().map(Binary::passed).sum()
    }

    pub fn failed(&self) -> u64 {
        self.binaries.iter().map(Binary::failed).sum::<u64>() + self.problems.len() as u64
    }
}

/// The summary: per section, each binary that ran tests with its counts and failed tests,
/// then how many ran none, then the section's problems. The caller prints the total line.
pub fn render(sections: &[Section]) -> String {
    let mut out = String::from("xtask: summary\n");
    for section in sections {
        out.push_str(&format!("{}:\n", section.title));
        let mut empty = 0;
        for binary in &section.binaries {
            if binary.ran_nothing() {
                empty += 1;
                continue;
            }
            let ignored = match binary.ignored {
                0 => String::new(),
                n => format!(", {n} ignored"),
            };
            out.push_str(&format!(
                "  {:>5} passed {:>3} failed  {}{ignored}\n",
                binary.passed(),
                binary.failed(),
                binary.label
            ));
            for name in binary.failures() {
                out.push_str(&format!("                            failed: {name}\n"));
            }
        }
        if empty > 0 {
            out.push_str(&format!(
                "  ({empty} more test binaries had no tests to run)\n"
            ));
        }
        for problem in &section.problems {
            out.push_str(&format!("  failed: {problem}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Binary, Parser, Section, render};

    fn parse(text: &str) -> Vec<Binary> {
        let mut parser = Parser::default();
        for line in text.lines() {
            parser.line(line);
        }
        parser.finish()
    }

    /// Rows of (label, passed, failed, failures) for compact assertions.
    fn rows(binaries: &[Binary]) -> Vec<(String, u64, u64, Vec<String>)> {
        binaries
            .iter()
            .map(|b| (b.label.clone(), b.passed(), b.failed(), b.failures()))
            .collect()
    }

    fn row(
        label: &str,
        passed: u64,
        failed: u64,
        failures: &[&str],
    ) -> (String, u64, u64, Vec<String>) {
        (
            label.to_owned(),
            passed,
            failed,
            failures.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    /// Captured from `cargo test --no-fail-fast -- --test-threads=1` (cargo 1.95, stdout and
    /// stderr in one pipe) on a crate with a failing test, a should_panic test that did not
    /// panic (whose output prints a `failures:` list of its own), an ignored test, a clean
    /// integration test, one that aborts, and a failing doc test. Backtraces trimmed.
    const CAPTURED: &str = "   Compiling sample v0.1.0 (/var/tmp/sample-tests)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 0.66s
     Running unittests src/lib.rs (target/debug/deps/sample-e6daf73c296d6df0)

running 4 tests
test tests::fails ... FAILED
test tests::ignored ... ignored
test tests::passes ... ok
test tests::should_panic_but_does_not - should panic ... FAILED

failures:

---- tests::fails stdout ----
some output
failures:
    not_a_test

thread 'tests::fails' (26176) panicked at src/lib.rs:8:78:
assertion `left == right` failed
  left: 1
 right: 2
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.

---- tests::should_panic_but_does_not stdout ----
note: test did not panic as expected at src/lib.rs:9:32

failures:
    tests::fails
    tests::should_panic_but_does_not

test result: FAILED. 1 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.07s

error: test failed, to rerun pass `--lib`
     Running tests/clean.rs (target/debug/deps/clean-9ccdf46ba654953e)

running 2 tests
test one ... ok
test two ... ok

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/crash.rs (target/debug/deps/crash-4123a8a96c2e231a)

running 2 tests
test a_ok ... ok
test b_aborts ... error: test failed, to rerun pass `--test crash`

Caused by:
  process didn't exit successfully: `/var/tmp/sample-tests/target/debug/deps/crash-4123a8a96c2e231a --test-threads=1` (signal: 6, SIGABRT: process abort signal)
   Doc-tests sample

running 1 test
test src/lib.rs - (line 1) ... FAILED

failures:

---- src/lib.rs - (line 1) stdout ----
Test executable failed (exit status: 101).

stderr:

thread 'main' (26209) panicked at /tmp/rustdoctestO3AiXD/doctest_bundle_2024.rs:6:1:
assertion `left == right` failed



failures:
    src/lib.rs - (line 1)

test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.06s

all doctests ran in 0.30s; merged doctests compilation took 0.23s
error: doctest failed, to rerun pass `--doc`
error: 3 targets failed:
    `--lib`
    `--test crash`
    `--doc`
";

    #[test]
    fn per_binary_counts_and_failed_names() {
        assert_eq!(
            rows(&parse(CAPTURED)),
            vec![
                row(
                    "sample (unittests src/lib.rs)",
                    1,
                    2,
                    &["tests::fails", "tests::should_panic_but_does_not"]
                ),
                row("clean (tests/clean.rs)", 2, 0, &[]),
                row(
                    "crash (tests/crash.rs)",
                    1,
                    1,
                    &["b_aborts (the test binary died while it ran, with no test result)"]
                ),
                row("sample (doc-tests)", 0, 1, &["src/lib.rs - (line 1)"]),
            ]
        );
    }

    #[test]
    fn a_passing_workspace_run() {
        // Captured from the unprivileged tier (trimmed): binaries with no tests too.
        let text = "    Finished `test` profile [unoptimized + debuginfo] target(s) in 1.02s
     Running unittests src/lib.rs (/work/main/target/debug/deps/homeserver_sensor-0c3f1a2b4d5e6f70)

running 3 tests
test config::tests::defaults ... ok
test config::tests::unknown_key ... ok
test ledger::tests::reopen ... ok

test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running unittests src/main.rs (/work/main/target/debug/deps/homeserver_sensor-a1b2c3d4e5f60718)

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests sensor_common

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        let binaries = parse(text);
        assert_eq!(
            rows(&binaries),
            vec![
                row("homeserver_sensor (unittests src/lib.rs)", 3, 0, &[]),
                row("homeserver_sensor (unittests src/main.rs)", 0, 0, &[]),
                row("sensor_common (doc-tests)", 0, 0, &[]),
            ]
        );
        let mut section = Section::new("unprivileged tests");
        section.binaries = binaries;
        assert_eq!(
            render(&[section]),
            "xtask: summary\n\
             unprivileged tests:\n\
             \x20     3 passed   0 failed  homeserver_sensor (unittests src/lib.rs)\n\
             \x20 (2 more test binaries had no tests to run)\n"
        );
    }

    #[test]
    fn output_of_a_child_between_name_and_result() {
        // One test at a time: libtest prints the name, the test's child processes print to
        // the same pipe, then the result. The `failures:` list still names it.
        let text = "     Running tests/cli.rs (target/debug/deps/cli-0123456789abcdef)

running 2 tests
test reload_keeps_counts ... {\"type\":\"start\"}
FAILED
test stops_on_sigterm ... ok

failures:

---- reload_keeps_counts stdout ----
thread 'reload_keeps_counts' panicked at tests/tests/cli.rs:10:5:
no reload record

failures:
    reload_keeps_counts

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.10s

error: test failed, to rerun pass `-p homeserver-sensor-tests --test cli`
";
        assert_eq!(
            rows(&parse(text)),
            vec![row("cli (tests/cli.rs)", 1, 1, &["reload_keeps_counts"])]
        );
    }

    #[test]
    fn a_binary_that_fails_after_its_tests_passed_counts_one() {
        let text = "     Running tests/leak.rs (target/debug/deps/leak-0123456789abcdef)

running 1 test
test one ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

error: test failed, to rerun pass `--test leak`
";
        assert_eq!(
            rows(&parse(text)),
            vec![row(
                "leak (tests/leak.rs)",
                1,
                1,
                &["(the test binary exited with an error after its tests passed)"]
            )]
        );
    }

    #[test]
    fn sections_count_problems_and_render_them() {
        let mut unit = Section::new("unprivileged tests");
        unit.binaries = parse(CAPTURED);
        let mut unit_check = Section::new("systemd unit");
        unit_check
            .binaries
            .push(Binary::single("deploy/verify-unit.sh", true, None));
        let mut privileged = Section::new("privileged tests");
        privileged
            .problems
            .push("not run: cannot build the kernel programs".into());
        assert_eq!((unit.passed(), unit.failed()), (4, 4));
        assert_eq!((unit_check.passed(), unit_check.failed()), (1, 0));
        assert_eq!((privileged.passed(), privileged.failed()), (0, 1));
        let text = render(&[unit, unit_check, privileged]);
        assert!(text.contains(
            "      1 passed   2 failed  sample (unittests src/lib.rs), 1 ignored\n\
             \x20                           failed: tests::fails\n"
        ));
        assert!(text.contains("      1 passed   0 failed  deploy/verify-unit.sh\n"));
        assert!(
            text.ends_with(
                "privileged tests:\n  failed: not run: cannot build the kernel programs\n"
            )
        );
        assert!(!text.contains("not_a_test"));
    }
}
