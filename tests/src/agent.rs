//! The agent, run in-process by a test, and reading what it wrote.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use homeserver_sensor::{
    agent::{self, RunOptions, Summary, Targets},
    config::{Config, DEFAULT_KEY_FILE},
    identity::FingerprintKey,
    output::Sink,
};
use serde_json::Value;

use crate::{Cgroup, TempDir};

/// The agent, running in-process on its own thread until `stop`.
pub struct Agent {
    events: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    reload: tokio::sync::mpsc::UnboundedSender<Result<Config, String>>,
    /// The key file and metrics address the fixture chose, kept across reloads.
    key_file: PathBuf,
    ledger_dir: PathBuf,
    metrics_listen: String,
    thread: Option<JoinHandle<Result<Summary, String>>>,
    _dir: TempDir,
}

impl Agent {
    /// Starts the agent and waits for its start record.
    pub fn start(targets: Targets, config: Config) -> Self {
        let dir = TempDir::new("agent");
        let events = dir.path.join("events.jsonl");
        let mut config = config;
        if config.metrics.listen == homeserver_sensor::metrics::DEFAULT_LISTEN {
            // Any free port: the start record names it.
            config.metrics.listen = "127.0.0.1:0".into();
        }
        if config.attribution.key_file == Path::new(DEFAULT_KEY_FILE) {
            // Tests never touch the installation's key.
            config.attribution.key_file = dir.path.join("fingerprint.key");
        }
        if config.ledger.dir == Path::new(homeserver_sensor::ledger::DEFAULT_DIR) {
            config.ledger.dir = dir.path.join("ledger");
        }
        // The agent makes a key only at the default location; a test's new state directory
        // gets one here (a test that restarts the agent finds it there the second time).
        if !config.attribution.key_file.exists() {
            FingerprintKey::create(&config.attribution.key_file).expect("create the key file");
        }
        let opts = RunOptions {
            config,
            targets,
            events: Sink::File(events.clone()),
            duration: None,
            proc_root: PathBuf::from("/proc"),
        };
        let key_file = opts.config.attribution.key_file.clone();
        let ledger_dir = opts.config.ledger.dir.clone();
        let metrics_listen = opts.config.metrics.listen.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let shutdown = async {
                let _ = rx.await;
            };
            rt.block_on(agent::run_reloadable(opts, shutdown, Some(reloads)))
                .map_err(|e| format!("{e:#}"))
        });
        let mut agent = Self {
            events,
            stop: Some(tx),
            reload,
            key_file,
            ledger_dir,
            metrics_listen,
            thread: Some(thread),
            _dir: dir,
        };
        agent.wait_for(Duration::from_secs(30), |records| {
            records
                .iter()
                .any(|r| r["kind"] == "sensor" && r["phase"] == "start")
        });
        agent
    }

    /// The agent's `start` record (what it attached, what the kernel refused).
    pub fn start_record(&self) -> Value {
        sensor_record(&self.records(), "start").clone()
    }

    /// Starts the agent watching one process.
    pub fn for_pid(pid: u32, config: Config) -> Self {
        Self::start(
            Targets {
                pids: vec![pid],
                cgroups: vec![],
            },
            config,
        )
    }

    /// Starts the agent watching one cgroup.
    pub fn for_cgroup(cgroup: &Cgroup, config: Config) -> Self {
        Self::start(
            Targets {
                pids: vec![],
                cgroups: vec![cgroup.rel.clone()],
            },
            config,
        )
    }

    /// Applies `config` as SIGHUP does (the fixture's key file and metrics address are
    /// kept) and waits for the agent's `reload` record, which it returns.
    pub fn reload(&mut self, config: Config) -> Value {
        let mut config = config;
        config.attribution.key_file = self.key_file.clone();
        config.ledger.dir = self.ledger_dir.clone();
        config.metrics.listen = self.metrics_listen.clone();
        self.send_reload(Ok(config))
    }

    /// Sends a reload that failed to read (as SIGHUP with a bad file does); returns the
    /// `reload` record.
    pub fn reload_rejected(&mut self, why: &str) -> Value {
        self.send_reload(Err(why.to_owned()))
    }

    fn send_reload(&mut self, reload: Result<Config, String>) -> Value {
        let before = self.reload_records().len();
        self.reload.send(reload).expect("the agent is running");
        self.wait_for(Duration::from_secs(30), |records| {
            records
                .iter()
                .filter(|r| r["kind"] == "sensor" && r["phase"] == "reload")
                .count()
                > before
        });
        self.reload_records().pop().expect("a reload record")
    }

    fn reload_records(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["kind"] == "sensor" && r["phase"] == "reload")
            .collect()
    }

    /// The records written so far.
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.events)
    }

    /// Polls the records until `pred` holds; panics with the records after `timeout`, or if
    /// the agent stopped with an error.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let records = self.records();
            if pred(&records) {
                return records;
            }
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = self.join();
                panic!("the agent stopped: {result:?}; records: {records:#?}");
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?}; records: {records:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the connection of each of `clients` (the client's own address: the
    /// agent's peer) has its record with `closed: true`, the kernel's TCP_CLOSE as the agent
    /// saw it; returns the records. Everything the agent wrote about those connections before
    /// (their requests, the alerts they raised) is then written too.
    pub fn wait_for_closed(&mut self, clients: &[SocketAddr], timeout: Duration) -> Vec<Value> {
        self.wait_for(timeout, |records| all_closed(records, clients))
    }

    /// Stops the agent (like SIGTERM) and returns every record it wrote.
    pub fn stop(mut self) -> Vec<Value> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Err(e) = self.join() {
            panic!("the agent failed: {e}");
        }
        self.records()
    }

    /// Waits for the agent's thread and returns what `run` returned.
    fn join(&mut self) -> Result<Summary, String> {
        self.thread
            .take()
            .expect("thread")
            .join()
            .expect("agent thread")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The agent's `sensor` record of `phase` (`start`, `stop`, ...) among `records`.
pub fn sensor_record<'a>(records: &'a [Value], phase: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["kind"] == "sensor" && r["phase"] == phase)
        .unwrap_or_else(|| panic!("no sensor {phase} record in {records:#?}"))
}

/// Runs the agent with `targets` and expects it to fail at start; returns its error.
pub fn agent_start_error(targets: Targets) -> String {
    agent_start_error_with(targets, Config::default())
}

/// [`agent_start_error`] with a configuration (its state paths are put in a temporary
/// directory).
pub fn agent_start_error_with(targets: Targets, mut config: Config) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new("err");
    config.attribution.key_file = dir.path.join("fingerprint.key");
    FingerprintKey::create(&config.attribution.key_file).expect("create the key file");
    config.ledger.dir = dir.path.join("ledger");
    config.metrics.listen = "127.0.0.1:0".into();
    let opts = RunOptions {
        config,
        targets,
        events: Sink::File(PathBuf::from("/dev/null")),
        duration: Some(Duration::from_secs(2)),
        proc_root: PathBuf::from("/proc"),
    };
    match rt.block_on(agent::run(opts, std::future::pending())) {
        Ok(s) => panic!("the agent started, expected an error (summary {s:?})"),
        Err(e) => e.to_string(),
    }
}

pub fn read_records(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Polls the records in `events` (an agent run as its own process) until `pred` holds;
/// panics with the records after `timeout`.
pub fn wait_for_records(
    events: &Path,
    timeout: Duration,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let records = read_records(events);
        if pred(&records) {
            return records;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting on {}; records: {records:#?}",
            events.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the connection of every one of `clients` (the client's own address) has its
/// record with `closed: true` among `records`.
pub fn all_closed(records: &[Value], clients: &[SocketAddr]) -> bool {
    let closed: HashSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "connection" && r["closed"] == true)
        .filter_map(|r| r["peer"].as_str())
        .collect();
    clients.iter().all(|c| {
        let peer = SocketAddr::new(c.ip().to_canonical(), c.port()).to_string();
        closed.contains(peer.as_str())
    })
}

/// The connection records whose peer is this client address.
pub fn connection_of(records: &[Value], client: SocketAddr) -> Vec<&Value> {
    let peer = SocketAddr::new(client.ip().to_canonical(), client.port()).to_string();
    records
        .iter()
        .filter(|r| r["kind"] == "connection" && r["peer"] == peer.as_str())
        .collect()
}
