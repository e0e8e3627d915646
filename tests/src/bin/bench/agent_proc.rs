//! The agent as operators run it: the `homeserver-sensor` binary in its own process
//! (optionally pinned to one CPU with `taskset`), with a TOML configuration, writing JSON
//! lines to a file; its CPU time and memory from /proc, its counters from its Prometheus
//! endpoint.

use std::{
    collections::BTreeMap,
    fs::File,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use homeserver_sensor_tests::{Cgroup, TempDir, http_request, read_records, sibling_binary};

pub struct AgentProcess {
    child: Child,
    pub events: PathBuf,
    pub metrics: SocketAddr,
    pub dir: TempDir,
}

impl AgentProcess {
    /// Starts the agent on `cgroup` with `extra` appended to its configuration (TOML tables
    /// other than `[attribution]`, `[ledger]` and `[metrics]`, which this sets), pinned to
    /// `cpu` if given; waits for its start record.
    pub fn start(cgroup: &Cgroup, extra: &str, cpu: Option<usize>) -> Self {
        let dir = TempDir::new("bench-agent");
        let d = dir.path.display();
        let config = dir.path.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[attribution]\nkey_file = \"{d}/fingerprint.key\"\nserver_name = \"test.example\"\n\
                 [ledger]\ndir = \"{d}/ledger\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n{extra}"
            ),
        )
        .expect("write agent config");
        // The agent makes a key only at the default location.
        homeserver_sensor::identity::FingerprintKey::create(&dir.path.join("fingerprint.key"))
            .expect("create the key file");
        let events = dir.path.join("events.jsonl");
        let binary = sibling_binary("homeserver-sensor");
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("run")
            .arg("--cgroup")
            .arg(&cgroup.rel)
            .arg("-c")
            .arg(&config)
            .arg("--events")
            .arg(&events)
            .env("HOMESERVER_SENSOR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(File::create(dir.path.join("agent.log")).expect("agent log"));
        let mut child = cmd.spawn().expect("start homeserver-sensor");
        let start = Instant::now();
        let metrics = loop {
            let records = read_records(&events);
            if let Some(r) = records
                .iter()
                .find(|r| r["kind"] == "sensor" && r["phase"] == "start")
            {
                break r["metrics"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("no metrics address in {r}"));
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path.join("agent.log")).unwrap_or_default();
                panic!("homeserver-sensor exited at start ({status}): {log}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "homeserver-sensor wrote no start record in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            events,
            metrics,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The Prometheus samples, `name{labels}` to value.
    pub fn scrape(&self) -> BTreeMap<String, f64> {
        let r = http_request(self.metrics, None, "GET", "/metrics", None, b"");
        assert_eq!(r.status, 200, "GET /metrics");
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// User plus system CPU time of the agent's process, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // Fields after the command (which may hold spaces) and its closing parenthesis:
        // state is field 3, utime 14 and stime 15.
        let rest = &stat[stat.rfind(')').expect("stat comm") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
        ticks as f64 * clock_tick_seconds()
    }

    /// Time the agent's threads spent runnable but waiting for a CPU, in seconds (the
    /// second field of each `/proc/PID/task/TID/schedstat`; threads that ended are not
    /// counted).
    pub fn runqueue_wait_seconds(&self) -> f64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("task dir");
        let ns: u64 = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        ns as f64 / 1e9
    }

    /// Resident memory now and its peak (VmRSS, VmHWM), in MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        (self.status_mib("VmRSS:"), self.status_mib("VmHWM:"))
    }

    /// The anonymous part of the resident memory (RssAnon: heap and stacks, what the agent
    /// allocates), in MiB; the rest is the binary, libc and the ring buffer's mapping.
    pub fn anon_mib(&self) -> f64 {
        self.status_mib("RssAnon:")
    }

    /// A kB field of /proc/PID/status, in MiB.
    fn status_mib(&self, name: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
            / 1024.0
    }

    /// Asserts the agent is still running (a workload that killed it gives no figure).
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(self.dir.path.join("agent.log")).unwrap_or_default();
            panic!("homeserver-sensor stopped ({status}): {log}");
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of a metric family's samples whose labels contain `label` (empty: all).
pub fn sum(samples: &BTreeMap<String, f64>, family: &str, label: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            k.split('{').next() == Some(family) && (label.is_empty() || k.contains(label))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The length of a clock tick (`USER_HZ`, the unit of `/proc/PID/stat` and `/proc/stat`
/// times), in seconds.
pub fn clock_tick_seconds() -> f64 {
    // SAFETY: sysconf has no preconditions.
    1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}
