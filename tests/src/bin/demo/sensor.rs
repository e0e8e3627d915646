//! The real `homeserver-sensor` binary as a child process: its configuration (thresholds
//! lowered for the small seeded homeserver), its records read line by line as they come, and
//! `homeserver-sensor report`.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{
    signals::{self, KillOnSignal, On},
    view,
};

/// How long the sensor may take to load and attach its programs.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to stop after SIGTERM (it flushes open connections and the ledger).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The window and thresholds of tests/tests/scenarios.rs, for a homeserver of 10 users,
/// 8 public rooms and 10 media files (4 of them legacy, served without a token); each
/// constant there says why. Each keeps its default's meaning at this scale: above what a
/// benign user here does, below what a walk of the whole server does.
const LOWERED: [(&str, u64); 6] = [
    ("breadth.rooms_read", 5),
    ("breadth.rooms_joined", 5),
    ("breadth.media", 6),
    ("breadth.directory", 10),
    ("breadth.room_directory", 3),
    ("tokenless_media", 3),
];
const WINDOW_S: u64 = 600;

/// The demo's configuration file: every default but the thresholds above, the key file and
/// the ledger in `dir`, the ledger flushed every second, no metrics listener, no webhook.
pub fn write_config(dir: &Path) -> Result<PathBuf> {
    let mut toml = String::from(
        "# Written by the demo (tests/src/bin/demo.rs): the defaults, except what follows.\n",
    );
    let path_of = |name: &str| -> Result<String> {
        let path = dir.join(name);
        let path = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        // A TOML basic string: the path has no quote or backslash (a temporary directory).
        ensure!(
            !path.contains(['"', '\\']),
            "{path} has a quote or backslash"
        );
        Ok(format!("\"{path}\""))
    };
    toml.push_str(&format!(
        "[attribution]\nkey_file = {}\n\n[metrics]\nenabled = false\n\n\
         [ledger]\ndir = {}\nflush_s = 1\n\n",
        path_of("fingerprint.key")?,
        path_of("ledger")?
    ));
    toml.push_str(
        "# Thresholds lowered for the seeded test homeserver (10 users, 8 public rooms, 10\n\
         # media files), as tests/tests/scenarios.rs lowers them.\n",
    );
    for (rule, threshold) in LOWERED {
        let table = match rule.strip_prefix("breadth.") {
            Some(kind) => format!("detect.breadth.{kind}"),
            None => format!("detect.{rule}"),
        };
        toml.push_str(&format!(
            "[{table}]\nlimits = [{{ window_s = {WINDOW_S}, threshold = {threshold} }}]\n"
        ));
    }
    // The agent makes a key only at the default location: the demo's is made here.
    let key = dir.join("fingerprint.key");
    if !key.exists() {
        homeserver_sensor::identity::FingerprintKey::create(&key)
            .with_context(|| format!("cannot create {}", key.display()))?;
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, toml).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The lowered thresholds, for the footer: three a line, lines indented by four spaces.
pub fn lowered() -> String {
    LOWERED
        .chunks(3)
        .map(|line| {
            line.iter()
                .map(|(rule, t)| format!("{rule} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join(",\n    ")
}

/// What the sensor's records said, counted by the thread that reads them.
#[derive(Default)]
pub struct Seen {
    /// Request records per client address.
    pub requests: BTreeMap<String, u64>,
    /// Alerts per subject client address (`-` for alerts about the sensor itself).
    pub alerts: BTreeMap<String, u64>,
    /// The drop counters of the last `sensor` record that had them.
    pub drops: BTreeMap<String, u64>,
    /// How the cgroup is watched (`cgroup` mechanism), from the start record.
    pub mechanism: Option<String>,
}

/// `homeserver-sensor run` on a cgroup, its records read and shown as they come.
pub struct Sensor {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Child,
    reader: Option<JoinHandle<Seen>>,
    /// A second Ctrl-C kills the sensor (the first has the demo stop it with SIGTERM).
    kill: Option<KillOnSignal>,
    /// Set once [`Sensor::terminate`] ran: the child is reaped.
    stopped: bool,
}

impl Sensor {
    /// Starts `binary run -c config --cgroup cgroup` with its stdout (JSON lines) read by a
    /// thread that prints each alert and copies every line to `events`, and its log in
    /// `log`; returns once the sensor wrote its start record.
    pub fn start(
        binary: &Path,
        config: &Path,
        cgroup: &str,
        events: &Path,
        log: &Path,
    ) -> Result<Self> {
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let events_file =
            File::create(events).with_context(|| format!("cannot create {}", events.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .arg("-c")
            .arg(config)
            .args(["--cgroup", cgroup])
            .env("HOMESERVER_SENSOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own process group: Ctrl-C in the terminal reaches the demo, which stops
            // the sensor itself (SIGTERM), after the clients.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (started_tx, started) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("records".into())
            .spawn(move || read_records(stdout, events_file, started_tx))?;
        let mut sensor = Self {
            binary: binary.to_owned(),
            config: config.to_owned(),
            log: log.to_owned(),
            kill: Some(signals::kill_on_signal(&[child.id()], On::Second)),
            child,
            reader: Some(reader),
            stopped: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match started.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok(sensor),
                // The reader is gone: the sensor closed its stdout, it is exiting.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = sensor.terminate();
                    bail!(
                        "the sensor exited at start ({}); its log ({}):\n{}",
                        status.map_or("killed".to_owned(), |s| s.to_string()),
                        sensor.log.display(),
                        sensor.log_tail()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() > deadline || signals::interrupted() {
                bail!(
                    "the sensor did not start within {} s; its log ({}):\n{}",
                    START_TIMEOUT.as_secs(),
                    sensor.log.display(),
                    sensor.log_tail()
                );
            }
        }
    }

    /// `homeserver-sensor report --user USER`, human form: its standard output.
    pub fn report_for_user(&self, user: &str) -> Result<String> {
        let out = Command::new(&self.binary)
            .arg("report")
            .args(["--user", user])
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start {} report", self.binary.display()))?;
        ensure!(
            out.status.success(),
            "`homeserver-sensor report --user {user}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGTERM, then up to STOP_TIMEOUT for a clean stop (programs detached, the ledger
    /// flushed, a `sensor` record with `phase: "stop"`); returns what its records said.
    pub fn stop(mut self) -> Result<Seen> {
        let status = self.terminate();
        let seen = self
            .reader
            .take()
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default();
        match status {
            Some(status) if status.success() => Ok(seen),
            Some(status) => bail!(
                "the sensor stopped with {status}; its log ({}):\n{}",
                self.log.display(),
                self.log_tail()
            ),
            None => bail!(
                "the sensor did not stop within {} s of SIGTERM and was killed",
                STOP_TIMEOUT.as_secs()
            ),
        }
    }

    /// SIGTERM and the wait; SIGKILL after STOP_TIMEOUT (then None).
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if std::mem::replace(&mut self.stopped, true) {
            // Reaped already: its status is kept.
            return self.child.try_wait().ok().flatten();
        }
        // SAFETY: kill(2) on our own child, not yet reaped (an exited one ignores it).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        // It stops by itself now, and must leave the signal thread's list before it is
        // reaped.
        self.kill = None;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        // Not stopped through `stop` (an error or Ctrl-C on the way): stop it all the same.
        self.terminate();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Reads the sensor's records until it closes its stdout: copies each line to `events`,
/// prints each alert, tells `started` when the start record came, and counts the rest.
fn read_records(
    stdout: std::process::ChildStdout,
    mut events: File,
    started: mpsc::Sender<()>,
) -> Seen {
    let mut seen = Seen::default();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(events, "{line}");
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match record["kind"].as_str() {
            Some("request") => {
                let ip = record["client_ip"].as_str().unwrap_or("-").to_owned();
                *seen.requests.entry(ip).or_default() += 1;
            }
            Some("alert") => {
                let ip = record["subject"]["client_ip"].as_str().unwrap_or("-");
                *seen.alerts.entry(ip.to_owned()).or_default() += 1;
                view::alert(&record);
            }
            Some("sensor") => {
                if record["phase"] == "start" {
                    seen.mechanism = record["watched"][0]["mechanism"]
                        .as_str()
                        .map(str::to_owned);
                    let _ = started.send(());
                }
                if let Some(drops) = record["drops"].as_object() {
                    seen.drops = drops
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect();
                }
            }
            _ => {}
        }
    }
    seen
}
