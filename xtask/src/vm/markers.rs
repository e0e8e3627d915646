//! What the guest's `/init` (xtask/vm/init) reports on the serial console: lines that
//! contain `@@vmtest <what> ...`, between the kernel's and the tests' own output.

use serde_json::Value;

const MARK: &str = "@@vmtest ";

/// One test run by `/init`.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRun {
    /// `binary::test`.
    pub id: String,
    /// Guest uptime at its start and end, in seconds.
    pub start: f64,
    pub end: Option<f64>,
    /// Exit status: 0 passed, 101 a failed assertion, 137 killed at the per-test timeout.
    pub status: Option<i32>,
    /// Everything the console showed while it ran.
    pub output: Vec<String>,
}

impl TestRun {
    pub fn passed(&self) -> bool {
        self.status == Some(0)
    }

    pub fn secs(&self) -> Option<f64> {
        self.end.map(|end| end - self.start)
    }

    /// The features the test found unavailable on this kernel (it checked the agent's
    /// refusal instead): what the tests print after `homeserver-sensor-tests: unavailable on
    /// <release>: `, up to the reason.
    pub fn unavailable(&self) -> Vec<String> {
        const TAG: &str = "homeserver-sensor-tests: unavailable on ";
        self.output
            .iter()
            .filter_map(|l| l.split_once(TAG))
            .filter_map(|(_, rest)| rest.split(": ").nth(1))
            .map(str::to_owned)
            .collect()
    }

    /// `ok`, `FAILED`, `KILLED (timeout)`, or `UNFINISHED`.
    pub fn verdict(&self) -> String {
        match self.status {
            Some(0) => "ok".into(),
            Some(137) => "KILLED (per-test timeout)".into(),
            Some(101) => "FAILED".into(),
            Some(code) => format!("FAILED (exit status {code})"),
            None => "UNFINISHED".into(),
        }
    }
}

/// What the agent said at start in a probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Its `sensor` start record.
    Started(Value),
    /// It refused to start: its one-line error.
    Refused(String),
}

impl Probe {
    /// The mechanism it picked, or `none`.
    pub fn mechanism(&self) -> String {
        match self {
            Probe::Started(record) => record["watched"][0]["mechanism"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
            Probe::Refused(_) => "none".to_owned(),
        }
    }

    /// Why: the start record's reason, or the error.
    pub fn why(&self) -> String {
        match self {
            Probe::Started(record) => record["watched"][0]["why"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            Probe::Refused(error) => error.clone(),
        }
    }
}

/// Something worth a line on the terminal while the VM runs.
#[derive(Debug, PartialEq)]
pub enum Event {
    Init,
    Env,
    Probe(String),
    Begin(String),
    End(usize),
    Skip(String),
    Fatal(String),
    Done,
}

/// Everything `/init` reported so far.
#[derive(Debug, Default)]
pub struct Session {
    /// Guest uptime when `/init` started.
    pub init_uptime: Option<f64>,
    /// `key=value` facts about the guest (kernel, cpus, memory, BTF, date).
    pub env: Option<String>,
    pub probes: Vec<(String, Probe)>,
    /// `/init` could not set up the guest.
    pub fatal: Option<String>,
    /// Test executables that could not even list their tests.
    pub list_failures: Vec<(String, String)>,
    /// Tests not run here, with the reason.
    pub skipped: Vec<(String, String)>,
    pub tests: Vec<TestRun>,
    /// Kernel messages logged while the tests ran (`dmesg` at the end).
    pub dmesg: Vec<String>,
    in_dmesg: bool,
    pub done: bool,
}

impl Session {
    /// Takes one console line.
    pub fn line(&mut self, line: &str) -> Option<Event> {
        let Some(at) = line.find(MARK) else {
            if self.in_dmesg {
                self.dmesg.push(line.to_owned());
            } else if let Some(test) = self.running() {
                test.output.push(line.to_owned());
            }
            return None;
        };
        // Output of a test that did not end its last line shares the marker's line.
        if at > 0
            && let Some(test) = self.running()
        {
            test.output.push(line[..at].to_owned());
        }
        let rest = &line[at + MARK.len()..];
        let (what, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let args = args.trim_end();
        match what {
            "init" => {
                self.init_uptime = args.parse().ok();
                Some(Event::Init)
            }
            "env" => {
                self.env = Some(args.to_owned());
                Some(Event::Env)
            }
            "probe" => {
                let mut words = args.splitn(3, ' ');
                let label = words.next().unwrap_or("").to_owned();
                let kind = words.next().unwrap_or("");
                let body = words.next().unwrap_or("").trim();
                let probe = match (kind, serde_json::from_str::<Value>(body)) {
                    ("start", Ok(record)) => Probe::Started(record),
                    _ => Probe::Refused(body.to_owned()),
                };
                self.probes.push((label.clone(), probe));
                Some(Event::Probe(label))
            }
            "fatal" => {
                self.fatal = Some(args.to_owned());
                Some(Event::Fatal(args.to_owned()))
            }
            "listfail" => {
                let (bin, why) = args.split_once(' ').unwrap_or((args, ""));
                self.list_failures.push((bin.to_owned(), why.to_owned()));
                Some(Event::Fatal(format!("{bin} cannot list its tests: {why}")))
            }
            "skip" => {
                let (id, why) = args.split_once(' ').unwrap_or((args, ""));
                self.skipped.push((id.to_owned(), why.to_owned()));
                Some(Event::Skip(id.to_owned()))
            }
            "begin" => {
                let (id, uptime) = args.split_once(' ').unwrap_or((args, ""));
                self.tests.push(TestRun {
                    id: id.to_owned(),
                    start: uptime.parse().unwrap_or(0.0),
                    end: None,
                    status: None,
                    output: Vec::new(),
                });
                Some(Event::Begin(id.to_owned()))
            }
            "end" => {
                let mut words = args.split(' ');
                let id = words.next().unwrap_or("");
                let status = words.next().and_then(|s| s.parse().ok());
                let uptime = words.next().and_then(|s| s.parse().ok());
                let index = self.tests.iter().rposition(|t| t.id == id)?;
                let test = &mut self.tests[index];
                test.status = status;
                test.end = uptime;
                Some(Event::End(index))
            }
            "dmesg-begin" => {
                self.in_dmesg = true;
                None
            }
            "dmesg-end" => {
                self.in_dmesg = false;
                None
            }
            "done" => {
                self.done = true;
                Some(Event::Done)
            }
            _ => None,
        }
    }

    /// The test that began and has not ended.
    fn running(&mut self) -> Option<&mut TestRun> {
        self.tests.last_mut().filter(|t| t.status.is_none())
    }

    /// A value from the `env` line.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .as_deref()?
            .split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    pub fn probe(&self, label: &str) -> Option<&Probe> {
        self.probes.iter().find(|(l, _)| l == label).map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::{Event, Probe, Session};

    #[test]
    fn a_session() {
        let mut s = Session::default();
        assert_eq!(s.line("[    0.000000] Linux version 6.1.0"), None);
        assert_eq!(s.line("@@vmtest init 2.51"), Some(Event::Init));
        assert_eq!(s.init_uptime, Some(2.51));
        s.line("@@vmtest env kernel=6.1.0-41-cloud-amd64 machine=x86_64 btf=yes");
        assert_eq!(s.env_value("btf"), Some("yes"));
        assert_eq!(s.env_value("kernel"), Some("6.1.0-41-cloud-amd64"));
        s.line(r#"@@vmtest probe dedicated start {"kind":"sensor","watched":[{"mechanism":"cgroup","why":"alone"}]}"#);
        s.line("@@vmtest probe shared error homeserver-sensor: cannot watch PIDs [9] ");
        assert_eq!(s.probe("dedicated").unwrap().mechanism(), "cgroup");
        assert_eq!(s.probe("shared").unwrap().mechanism(), "none");
        assert_eq!(
            s.probe("shared"),
            Some(&Probe::Refused(
                "homeserver-sensor: cannot watch PIDs [9]".into()
            ))
        );
        s.line("@@vmtest skip cli::needs_setpriv needs setpriv (util-linux)");
        assert_eq!(s.skipped[0].1, "needs setpriv (util-linux)");
        s.line("@@vmtest begin accounting::a 10.00");
        s.line("running 1 test");
        s.line("thread 'a' panicked at tests/tests/accounting.rs:1:1:");
        s.line("test a ... FAILED@@vmtest end accounting::a 101 12.50");
        s.line("@@vmtest begin accounting::b 12.60");
        s.line("homeserver-sensor-tests: unavailable on 6.1.0-56-cloud-amd64: accounting.call_counts: accounting.call_counts = true needs ...");
        assert_eq!(
            s.line("@@vmtest end accounting::b 0 13.00"),
            Some(Event::End(1))
        );
        s.line("@@vmtest dmesg-begin");
        s.line("[   20.1] something");
        s.line("@@vmtest dmesg-end");
        assert_eq!(s.line("@@vmtest done 21.0"), Some(Event::Done));
        let a = &s.tests[0];
        assert_eq!(a.status, Some(101));
        assert_eq!(a.secs(), Some(2.5));
        assert_eq!(a.output.len(), 3);
        assert_eq!(a.output[2], "test a ... FAILED");
        assert!(s.tests[1].passed());
        assert!(a.unavailable().is_empty());
        assert_eq!(s.tests[1].unavailable(), ["accounting.call_counts"]);
        assert_eq!(s.dmesg, ["[   20.1] something"]);
        assert!(s.done);
    }
}
