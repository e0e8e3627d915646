//! The verdict per kernel, the failing tests' output, and the summary table.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use super::{
    kernels::Kernel,
    markers::{Probe, TestRun},
    qemu::{End, Outcome},
};

/// Lines of a failing test's output shown on the terminal: its first lines (the panic
/// message) and its last; the log has all of them.
const HEAD_LINES: usize = 40;
const TAIL_LINES: usize = 15;

/// One kernel's run.
pub struct KernelResult {
    pub kernel: Kernel,
    pub outcome: Outcome,
    pub log: PathBuf,
}

impl KernelResult {
    pub fn failed_tests(&self) -> impl Iterator<Item = &TestRun> {
        self.outcome.session.tests.iter().filter(|t| !t.passed())
    }

    fn passed_count(&self) -> usize {
        self.outcome
            .session
            .tests
            .iter()
            .filter(|t| t.passed())
            .count()
    }

    /// Why the kernel failed apart from failing tests: the VM did not finish, could not be
    /// set up, or ran nothing.
    pub fn run_problem(&self) -> Option<String> {
        let s = &self.outcome.session;
        if let Some(fatal) = &s.fatal {
            return Some(format!("the guest could not be set up: {fatal}"));
        }
        match &self.outcome.end {
            End::TimedOut => {
                let during = s
                    .tests
                    .last()
                    .filter(|t| t.status.is_none())
                    .map(|t| format!(" during {}", t.id))
                    .unwrap_or_default();
                return Some(format!(
                    "timed out after {}{during}",
                    duration(self.outcome.total)
                ));
            }
            End::Stopped(status) => {
                return Some(if s.init_uptime.is_none() {
                    format!("the VM stopped before /init ran (qemu: {status}; a kernel panic?)")
                } else {
                    format!("the VM stopped before the tests finished (qemu: {status})")
                });
            }
            End::PoweredOff => {}
        }
        if let Some(booted) = s.env_value("kernel")
            && booted != self.kernel.release
        {
            return Some(format!(
                "the guest runs {booted}, not {}",
                self.kernel.release
            ));
        }
        if !s.list_failures.is_empty() {
            let bins: Vec<&str> = s.list_failures.iter().map(|(b, _)| b.as_str()).collect();
            return Some(format!(
                "test executables failed to start: {}",
                bins.join(", ")
            ));
        }
        if s.tests.is_empty() {
            return Some("no test ran".into());
        }
        None
    }

    pub fn passed(&self) -> bool {
        self.run_problem().is_none() && self.failed_tests().next().is_none()
    }

    /// `own cgroup / shared cgroup`: what the agent picked in each probe.
    pub fn mechanisms(&self) -> String {
        let pick = |label: &str| {
            self.outcome
                .session
                .probe(label)
                .map_or_else(|| "?".to_owned(), Probe::mechanism)
        };
        format!("{} / {}", pick("dedicated"), pick("shared"))
    }

    /// `N passed, M failed, K skipped`.
    pub fn counts(&self) -> String {
        let s = &self.outcome.session;
        let failed = s.tests.len() - self.passed_count();
        let mut text = format!("{} passed", self.passed_count());
        let refusals = s
            .tests
            .iter()
            .filter(|t| t.passed() && !t.unavailable().is_empty())
            .count();
        if refusals > 0 {
            write!(text, " ({refusals} of them checked a refusal)").unwrap();
        }
        if failed > 0 {
            write!(text, ", {failed} failed").unwrap();
        }
        if !s.skipped.is_empty() {
            write!(text, ", {} skipped", s.skipped.len()).unwrap();
        }
        text
    }

    /// The PASS/FAIL line and, for a failure, what failed with its output.
    pub fn verdict(&self) -> String {
        let k = &self.kernel;
        let mut text = format!(
            "{} {} ({}, Debian {}, {}): {} in {}; log {}",
            if self.passed() { "PASS" } else { "FAIL" },
            k.release,
            k.arch.name(),
            k.suite,
            k.package,
            self.counts(),
            duration(self.outcome.total),
            self.log.display()
        );
        if let Some(problem) = self.run_problem() {
            write!(text, "\n  {problem}").unwrap();
        }
        for test in self.outcome.session.tests.iter().filter(|t| t.passed()) {
            let features = test.unavailable();
            if !features.is_empty() {
                write!(
                    text,
                    "\n  unavailable here, refusal checked by {}: {}",
                    test.id,
                    features.join(", ")
                )
                .unwrap();
            }
        }
        for (bin, why) in &self.outcome.session.list_failures {
            write!(text, "\n  {bin}: {why}").unwrap();
        }
        for test in self.failed_tests() {
            write!(
                text,
                "\n  --- {} {} ({}) ---",
                test.id,
                test.verdict(),
                test.secs().map_or("-".into(), |s| format!("{s:.1} s"))
            )
            .unwrap();
            let out = &test.output;
            if out.len() <= HEAD_LINES + TAIL_LINES {
                for line in out {
                    write!(text, "\n  | {line}").unwrap();
                }
            } else {
                for line in &out[..HEAD_LINES] {
                    write!(text, "\n  | {line}").unwrap();
                }
                write!(
                    text,
                    "\n  | ... {} lines, in the log ...",
                    out.len() - HEAD_LINES - TAIL_LINES
                )
                .unwrap();
                for line in &out[out.len() - TAIL_LINES..] {
                    write!(text, "\n  | {line}").unwrap();
                }
            }
        }
        if !self.passed() && !self.outcome.session.dmesg.is_empty() {
            write!(text, "\n  kernel messages during the tests:").unwrap();
            for line in self.outcome.session.dmesg.iter().take(30) {
                write!(text, "\n  | {line}").unwrap();
            }
        }
        text
    }

    /// What the agent said about the mechanisms, for the terminal.
    pub fn probes(&self) -> String {
        let mut text = String::new();
        for (label, probe) in &self.outcome.session.probes {
            let who = match label.as_str() {
                "dedicated" => "a process alone in its cgroup",
                "shared" => "a process in a shared cgroup",
                other => other,
            };
            write!(
                text,
                "\n  agent for {who}: {}: {}",
                probe.mechanism(),
                probe.why()
            )
            .unwrap();
            if let Probe::Started(record) = probe
                && let Some(unavailable) = record["unavailable"].as_object()
                && !unavailable.is_empty()
                && label == "dedicated"
            {
                for (what, why) in unavailable {
                    write!(
                        text,
                        "\n    unavailable here: {what}: {}",
                        why.as_str().unwrap_or("?")
                    )
                    .unwrap();
                }
            }
        }
        text
    }
}

/// The summary table (Markdown, aligned), one row per kernel.
pub fn table(results: &[KernelResult]) -> String {
    let header = [
        "kernel",
        "arch",
        "Debian",
        "mechanism (own cgroup / shared)",
        "result",
        "tests",
        "boot",
        "time",
    ];
    let rows: Vec<[String; 8]> = results
        .iter()
        .map(|r| {
            [
                r.kernel.release.clone(),
                r.kernel.arch.name().to_owned(),
                r.kernel.suite.to_owned(),
                r.mechanisms(),
                if r.passed() { "PASS" } else { "FAIL" }.to_owned(),
                r.counts(),
                r.outcome.boot.map_or("-".into(), duration),
                duration(r.outcome.total),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::from("|");
        for (cell, w) in cells.iter().zip(widths) {
            write!(s, " {cell:<w$} |").unwrap();
        }
        s.push('\n');
        s
    };
    let mut text = line(&header);
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    text.push_str(&line(
        &dashes.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    for row in &rows {
        text.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    text
}

/// `41.2 s` or `12 min 05 s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::duration;

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_millis(41_250)), "41.2 s");
        assert_eq!(duration(Duration::from_secs(725)), "12 min 05 s");
    }
}
