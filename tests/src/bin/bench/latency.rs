//! Alert latency: from the request that crosses a detection threshold, and from the byte
//! that crosses the single-transfer threshold, to the alert record in the agent's output.
//!
//! Method. The agent is the `homeserver-sensor` binary writing JSON lines to a file, with
//! `breadth.rooms_read` lowered to 3 rooms in 10 min and `single_transfer` to 8 MiB; the
//! server is the test HTTP server in the watched cgroup. A thread reads what the agent
//! appends every half millisecond and notes when each alert line appears.
//! - Threshold rule: a new user (token) reads the history of three rooms, one request per
//!   connection with `Connection: close` (as nginx talks to Synapse); the clock starts
//!   when the third request is sent.
//! - Single transfer: a new user downloads 64 MiB from a sender in the watched cgroup
//!   (`bench worker sender`), which writes 64 KiB at a time and notes the clock just
//!   before the write that crosses 8 MiB; the clock starts there.

use std::{
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use homeserver_sensor_tests::{Cgroup, Process, Server, synapse_token};
use serde_json::{Value, json};

use crate::{Opts, agent_proc::AgentProcess, stats::Spread};

const THRESHOLD_ROOMS: u64 = 3;
const SINGLE_TRANSFER: u64 = 8 << 20;
const DOWNLOAD: u64 = 64 << 20;

pub struct Latency {
    /// Milliseconds from the crossing request to the alert line.
    pub threshold_ms: Spread,
    /// Milliseconds from the write of the crossing byte to the alert line.
    pub single_transfer_ms: Spread,
}

pub fn run(opts: &Opts) -> Option<Latency> {
    if !opts.selects("latency", "alert latency") {
        return None;
    }
    eprintln!("bench: alert latency");
    let cgroup = Cgroup::new("bench-latency");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let agent = AgentProcess::start(
        &cgroup,
        &format!(
            "[detect.breadth.rooms_read]\nlimits = [{{ window_s = 600, threshold = {THRESHOLD_ROOMS} }}]\n\
             [detect.single_transfer]\nthreshold_bytes = {SINGLE_TRANSFER}\n"
        ),
        None,
    );
    let alerts = tail_alerts(agent.events.clone());
    let samples = if opts.quick { 2 } else { 9 };
    let addr = server.addrs[0];
    // The sender of the large responses, in the watched cgroup: it notes when it writes
    // the byte that crosses the threshold.
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.args([
        "worker",
        "sender",
        &SINGLE_TRANSFER.to_string(),
        &DOWNLOAD.to_string(),
    ]);
    let mut sender = Process::spawn(cmd, Some(&cgroup));
    let mut sender_out = BufReader::new(sender.child.stdout.take().expect("sender stdout"));
    let mut line = String::new();
    sender_out.read_line(&mut line).expect("sender output");
    let sender_addr: SocketAddr = line
        .strip_prefix("listening ")
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("the sender printed {line:?}"));
    let mut threshold = Vec::new();
    let mut single = Vec::new();
    for s in 0..samples {
        // A threshold rule: the third distinct room read by a new token.
        let user = format!("lat{s}");
        let token = synapse_token(&user, "latencyLatencyLatency");
        let mut start = None;
        for k in 0..THRESHOLD_ROOMS {
            let mut c = TcpStream::connect(addr).expect("connect");
            let head = format!(
                "GET /_matrix/client/v3/rooms/%21{user}r{k}%3Atest.example/messages?dir=b&limit=10&bytes=100 HTTP/1.1\r\n\
                 Host: matrix.test.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            );
            if k + 1 == THRESHOLD_ROOMS {
                start = Some(monotonic_ns());
            }
            c.write_all(head.as_bytes()).expect("request");
            let mut body = Vec::new();
            c.read_to_end(&mut body).expect("response");
            assert!(body.starts_with(b"HTTP/1.1 200"), "the test server failed");
        }
        let seen = wait_alert(&alerts, &agent.events, |a| {
            a["rule"] == "breadth.rooms_read"
                && a["subject"]["user"] == format!("@{user}:test.example").as_str()
        });
        threshold.push(ms(seen, start.expect("start")));

        // A single transfer: the clock starts when the sender writes the crossing byte.
        let user = format!("big{s}");
        let token = synapse_token(&user, "latencyLatencyLatency");
        let mut c = TcpStream::connect(sender_addr).expect("connect");
        let peer = c.local_addr().expect("local").to_string();
        let head = format!(
            "GET /_matrix/client/v1/media/download/test.example/{user} HTTP/1.1\r\n\
             Host: matrix.test.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        c.write_all(head.as_bytes()).expect("request");
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        loop {
            let n = c.read(&mut buf).expect("download");
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        assert!(got > DOWNLOAD, "the download stopped after {got} bytes");
        let mut line = String::new();
        sender_out.read_line(&mut line).expect("sender output");
        let crossed: u64 = line
            .strip_prefix("crossed ")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("the sender printed {line:?}"));
        let seen = wait_alert(&alerts, &agent.events, |a| {
            a["rule"] == "single_transfer" && a["evidence"]["connection"]["peer"] == peer.as_str()
        });
        single.push(ms(seen, crossed));
    }
    drop(agent);
    drop(sender);
    Some(Latency {
        threshold_ms: Spread::of(&threshold),
        single_transfer_ms: Spread::of(&single),
    })
}

/// Signed milliseconds from `start` to `seen` (CLOCK_MONOTONIC nanoseconds).
fn ms(seen: u64, start: u64) -> f64 {
    (seen as f64 - start as f64) / 1e6
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine.
pub use homeserver_sensor::time::monotonic_ns;

/// Alerts as they appear in the events file, with the instant each line was seen.
fn tail_alerts(path: PathBuf) -> mpsc::Receiver<(u64, Value)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut file = std::fs::File::open(&path).expect("open the agent's events");
        file.seek(SeekFrom::End(0)).expect("seek");
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).unwrap_or(0);
            if n == 0 {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            let now = monotonic_ns();
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                const ALERT: &[u8] = b"\"kind\":\"alert\"";
                if line.windows(ALERT.len()).any(|w| w == ALERT) {
                    let v: Value = serde_json::from_slice(&line).expect("alert JSON");
                    if tx.send((now, v)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Waits (at most 10 s) for an alert matching `pred`; other alerts are skipped.
fn wait_alert(
    alerts: &mpsc::Receiver<(u64, Value)>,
    events: &Path,
    pred: impl Fn(&Value) -> bool,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match alerts.recv_timeout(left) {
            Ok((at, a)) if pred(&a) => return at,
            Ok(_) => {}
            Err(_) => {
                let text = std::fs::read_to_string(events).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                panic!("no matching alert within 10 s; the agent's last records: {tail:#?}")
            }
        }
    }
}

impl Latency {
    pub fn print(&self) {
        println!(
            "Alert latency (ms, median (min..max) over {} samples):",
            self.threshold_ms.samples.len()
        );
        println!(
            "  threshold rule (breadth.rooms_read, 3 rooms), from the crossing request sent: {}",
            self.threshold_ms.show(1)
        );
        println!(
            "  single_transfer (8 MiB), from the write of the crossing byte:              {}",
            self.single_transfer_ms.show(1)
        );
    }

    pub fn json(&self) -> Value {
        json!({
            "method": "homeserver-sensor binary, events to a file read every 0.5 ms; breadth.rooms_read threshold 3 rooms \
                       (one request per connection, Connection: close), clock from the third request sent; \
                       single_transfer threshold 8 MiB on a 64 MiB download, clock from the sender's write of the crossing byte",
            "threshold_rule_ms": self.threshold_ms.json(),
            "single_transfer_ms": self.single_transfer_ms.json(),
        })
    }
}
