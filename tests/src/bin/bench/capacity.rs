//! The agent's capacity: request heads per second it processes on one CPU without losing
//! any, where losses begin, its CPU and memory at that load; and its memory with many
//! tracked connections and distinct token fingerprints.
//!
//! Method. The agent is the `homeserver-sensor` binary pinned with `taskset` to CPU 1, with
//! its default configuration (detection, ledger, metrics on; JSON lines to a file). The
//! load runs on CPU 0: a responder in the watched cgroup (`bench worker responder`) and a
//! generator outside it (`bench worker heads`) driving 64 keep-alive connections in
//! lockstep (a 330-byte head forwarded as nginx does, with one of 4,096 tokens, then a
//! 40-byte response), paced to a target rate. The kernel side (capturing heads, on CPU 0 where the
//! packets are processed) is not the agent's cost: the agent's CPU is only its own. Each
//! step offers a rate for a few seconds; the agent's Prometheus counters give the heads it
//! parsed and every drop by cause, /proc its CPU time and RSS. The ramp stops at the first
//! step with drops, or when the generator cannot reach its target (its own limit on one
//! CPU), which is then said.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use homeserver_sensor_tests::{Cgroup, Process};
use serde_json::{Value, json};

use crate::{
    Opts,
    agent_proc::{AgentProcess, clock_tick_seconds, sum},
    overhead::run_worker,
    stats::num,
};

const CONNS: usize = 64;
/// Connections per holder process in the memory workload.
const SHARD: usize = 15_000;

pub struct Step {
    pub target: u64,
    pub achieved: f64,
    pub sent: u64,
    pub parsed: f64,
    pub drops: Vec<(String, f64)>,
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// Over the load: the hypervisor's steal time on the agent's CPU, in % of the load's
    /// duration, and the time the agent's threads waited runnable for a CPU (ms).
    pub steal_percent: f64,
    pub runqueue_wait_ms: f64,
}

pub struct Capacity {
    pub steps: Vec<Step>,
    /// Why the ramp stopped.
    pub stopped: String,
}

impl Capacity {
    /// The highest achieved rate with zero drops, and its step.
    pub fn zero_drop_max(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.drops.is_empty())
            .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
    }

    /// The first step with drops.
    pub fn first_drops(&self) -> Option<&Step> {
        self.steps.iter().find(|s| !s.drops.is_empty())
    }
}

pub fn run(opts: &Opts) -> Option<Capacity> {
    if !opts.selects("capacity", "agent capacity") {
        return None;
    }
    eprintln!("bench: agent capacity (heads per second on one CPU)");
    let cgroup = Cgroup::new("bench-capacity");
    let mut agent = AgentProcess::start(&cgroup, "", Some(AGENT_CPU));
    let (secs, rates): (u64, &[u64]) = if opts.quick {
        (1, &[20_000, 0])
    } else {
        (
            4,
            &[
                10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 125_000, 150_000,
                200_000, 0,
            ],
        )
    };
    let mut steps = Vec::new();
    let mut stopped = String::from("every step ran without drops");
    for &target in rates {
        let before = agent.scrape();
        let cpu0 = agent.cpu_seconds();
        let (responder, addr) = start_responder(&cgroup, CONNS, true, 0, true);
        let (steal0, wait0, t0) = (
            steal_seconds(AGENT_CPU),
            agent.runqueue_wait_seconds(),
            Instant::now(),
        );
        let args: Vec<String> = [
            "heads".to_string(),
            target.to_string(),
            secs.to_string(),
            CONNS.to_string(),
            addr.to_string(),
            "4096".to_string(),
        ]
        .into();
        let (achieved, sent) = run_worker(&args, None);
        let load_s = t0.elapsed().as_secs_f64();
        let steal_percent = (steal_seconds(AGENT_CPU) - steal0) / load_s * 100.0;
        let runqueue_wait_ms = (agent.runqueue_wait_seconds() - wait0) * 1e3;
        drop(responder);
        // The agent drains heads every 10 ms and publishes its totals once a second.
        std::thread::sleep(Duration::from_millis(2_200));
        agent.check_alive();
        let cpu = agent.cpu_seconds() - cpu0;
        let after = agent.scrape();
        let heads = "homeserver_sensor_request_heads_total";
        let parsed = sum(&after, heads, "parsed") - sum(&before, heads, "parsed");
        let drops: Vec<(String, f64)> = after
            .iter()
            .filter(|(k, _)| k.starts_with("homeserver_sensor_events_dropped_total"))
            .filter_map(|(k, v)| {
                let d = v - before.get(k).copied().unwrap_or(0.0);
                (d > 0.0).then(|| (label(k), d))
            })
            .collect();
        let (rss, hwm) = agent.rss_mib();
        // The agent's CPU time over the window (the load, then any backlog it worked
        // through), per second of load.
        let step = Step {
            target,
            achieved,
            sent,
            parsed,
            drops,
            cpu_percent: cpu / secs as f64 * 100.0,
            rss_mib: rss,
            hwm_mib: hwm,
            steal_percent,
            runqueue_wait_ms,
        };
        eprintln!(
            "bench:   offered {} heads/s, achieved {}, agent parsed {} of {}, drops {:?}, agent CPU {:.0} %, steal {:.1} %, agent waited {:.0} ms for a CPU",
            if target == 0 {
                "max".to_string()
            } else {
                num(target as f64, 0)
            },
            num(achieved, 0),
            num(parsed, 0),
            num(sent as f64, 0),
            step.drops,
            step.cpu_percent,
            step.steal_percent,
            step.runqueue_wait_ms
        );
        let had_drops = !step.drops.is_empty();
        let short = target > 0 && achieved < 0.9 * target as f64;
        steps.push(step);
        if had_drops {
            stopped = format!(
                "drops began at {} heads/s offered",
                num(target.max(achieved as u64) as f64, 0)
            );
            break;
        }
        if short {
            stopped = format!(
                "the generator reached only {} heads/s on its CPU (its own limit), without drops",
                num(achieved, 0)
            );
            break;
        }
    }
    Some(Capacity { steps, stopped })
}

/// Starts `bench worker responder` in the watched cgroup (the server side: its sockets are
/// watched; the clients run outside); returns it and its address.
fn start_responder(
    cgroup: &Cgroup,
    conns: usize,
    round_robin: bool,
    per_conn: usize,
    agent_running: bool,
) -> (Process, SocketAddr) {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.arg("worker")
        .arg("responder")
        .arg(conns.to_string())
        .arg(if round_robin { "round-robin" } else { "each" })
        .arg(per_conn.to_string());
    let mut p = Process::spawn(cmd, Some(cgroup));
    let mut line = String::new();
    BufReader::new(p.child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("responder output");
    let addr = line
        .strip_prefix("listening ")
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("the responder printed {line:?}"));
    // The agent finds a cgroup's new processes at its next rescan (every 500 ms); until
    // then it cannot name the owner of their connections.
    if agent_running {
        std::thread::sleep(Duration::from_millis(1_100));
    }
    (p, addr)
}

/// The CPU the agent is pinned to.
const AGENT_CPU: usize = 1;

/// Steal time of one CPU so far (`/proc/stat`, the eighth value of its `cpuN` line: time a
/// hypervisor ran something else while this vCPU wanted to run), in seconds.
fn steal_seconds(cpu: usize) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("no {name} line in /proc/stat"));
    let ticks: u64 = line
        .split_whitespace()
        .nth(8)
        .and_then(|v| v.parse().ok())
        .expect("steal field");
    ticks as f64 * clock_tick_seconds()
}

/// The `cause` label of a drop counter sample.
fn label(key: &str) -> String {
    key.split('"').nth(1).unwrap_or(key).to_string()
}

impl Capacity {
    pub fn print(&self) {
        println!(
            "Agent capacity: homeserver-sensor pinned to CPU {AGENT_CPU}, generator on CPU 0 ({CONNS} keep-alive connections)"
        );
        println!(
            "{:>10} {:>10} {:>12} {:>12} {:>9} {:>9} {:>9} {:>7} {:>9}  drops",
            "offered/s",
            "achieved/s",
            "heads sent",
            "parsed",
            "agent CPU",
            "RSS MiB",
            "peak MiB",
            "steal",
            "CPU wait"
        );
        for s in &self.steps {
            println!(
                "{:>10} {:>10} {:>12} {:>12} {:>8.0}% {:>9.1} {:>9.1} {:>6.1}% {:>6.0} ms  {}",
                if s.target == 0 {
                    "max".to_string()
                } else {
                    num(s.target as f64, 0)
                },
                num(s.achieved, 0),
                num(s.sent as f64, 0),
                num(s.parsed, 0),
                s.cpu_percent,
                s.rss_mib,
                s.hwm_mib,
                s.steal_percent,
                s.runqueue_wait_ms,
                if s.drops.is_empty() {
                    "none".to_string()
                } else {
                    s.drops
                        .iter()
                        .map(|(k, v)| format!("{k} {}", num(*v, 0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        println!("  {}", self.stopped);
        if let Some(us) = self.agent_us_per_head() {
            println!(
                "  agent CPU per head at the highest load without drops: {us:.1} us (if CPU were the only limit, one core would take about {} heads/s)",
                num(1e6 / us, 0)
            );
        }
    }

    /// The agent's CPU microseconds per parsed head at the highest load without drops.
    pub fn agent_us_per_head(&self) -> Option<f64> {
        let s = self.zero_drop_max()?;
        (s.parsed > 0.0).then(|| s.cpu_percent / 100.0 * 1e6 / s.achieved.max(1.0))
    }

    pub fn json(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "offered_per_s": if s.target == 0 { Value::Null } else { s.target.into() },
                    "achieved_per_s": s.achieved, "heads_sent": s.sent,
                    "heads_parsed": s.parsed,
                    "drops": s.drops.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "agent_cpu_percent": s.cpu_percent, "agent_rss_mib": s.rss_mib,
                    "agent_peak_rss_mib": s.hwm_mib,
                    "steal_percent_agent_cpu": s.steal_percent,
                    "agent_runqueue_wait_ms": s.runqueue_wait_ms,
                })
            })
            .collect();
        json!({
            "method": "homeserver-sensor pinned to CPU 1 (taskset), default configuration, events to a file; \
                       generator on CPU 0: 64 keep-alive connections in lockstep, 330-byte forwarded heads with 4,096 tokens, paced per step",
            "steps": steps,
            "zero_drop_max_per_s": self.zero_drop_max().map(|s| s.achieved),
            "agent_cpu_us_per_head": self.agent_us_per_head(),
            "one_core_estimate_per_s": self.agent_us_per_head().map(|us| 1e6 / us),
            "drops_began_at_per_s": self.first_drops().map(|s| s.achieved),
            "stopped": self.stopped,
        })
    }
}

/// The agent's memory in one phase of the memory workload.
pub struct MemPhase {
    pub what: String,
    pub count: usize,
    pub idle_rss_mib: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    /// RssAnon: heap and stacks.
    pub anon_mib: f64,
    pub tracked: f64,
    pub requests: f64,
    pub drops: Vec<(String, f64)>,
    pub secs: f64,
}

/// The agent's memory with many tracked connections, then (another agent) with many
/// distinct token fingerprints.
pub struct Memory {
    pub connections: MemPhase,
    pub fingerprints: MemPhase,
    pub max_subjects: usize,
}

pub fn memory(opts: &Opts) -> Option<Memory> {
    if !opts.selects("memory", "agent memory") {
        return None;
    }
    let count = if opts.quick { 5_000 } else { 100_000 };
    eprintln!("bench: agent memory with {count} open connections (one token)");
    let connections = memory_connections(count);
    eprintln!("bench: agent memory with {count} distinct token fingerprints");
    // Every fingerprint kept: the default `max_subjects` (50,000) would forget half.
    let max_subjects = 2 * count + 1000;
    let fingerprints = memory_fingerprints(count, max_subjects);
    Some(Memory {
        connections,
        fingerprints,
        max_subjects,
    })
}

/// `count` connections open to the watched cgroup, two heads each with one shared token.
/// The responders start before the agent, so that it knows their listeners from its first
/// scan (see the report: a scan of /proc on a host with 100,000 sockets takes seconds).
fn memory_connections(count: usize) -> MemPhase {
    let cgroup = Cgroup::new("bench-memory");
    // Shards of at most 15,000 connections: a process here may not open more than 20,000
    // files (the hard limit, which root cannot raise without CAP_SYS_RESOURCE).
    let mut responders = Vec::new();
    let mut first = 0;
    while first < count {
        let n = SHARD.min(count - first);
        responders.push((first, n, start_responder(&cgroup, n, false, 2, false)));
        first += n;
    }
    let mut agent = AgentProcess::start(&cgroup, "", None);
    std::thread::sleep(Duration::from_secs(2));
    let (idle, _) = agent.rss_mib();
    let t0 = Instant::now();
    let mut holders = Vec::new();
    for (first, n, (_, addr)) in &responders {
        let mut cmd = Command::new(std::env::current_exe().expect("exe"));
        cmd.arg("worker")
            .arg("conns")
            .arg(n.to_string())
            .arg(addr.to_string())
            .arg(first.to_string());
        let mut holder = Process::spawn(cmd, None);
        let mut line = String::new();
        BufReader::new(holder.child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("conns worker output");
        assert!(
            line.starts_with("opened"),
            "the connection holder failed: {line:?}"
        );
        holders.push(holder);
        // Let the agent catch up before the next shard (at most 30 s).
        let want = (first + n) as f64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while sum(&agent.scrape(), "homeserver_sensor_tracked_connections", "") < want
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let phase = settle(&mut agent, count, idle, t0, "open connections (one token)");
    drop(holders);
    drop(responders);
    phase
}

/// `count` distinct tokens, one request head each, over 64 keep-alive connections.
fn memory_fingerprints(count: usize, max_subjects: usize) -> MemPhase {
    let cgroup = Cgroup::new("bench-fingerprints");
    let mut agent = AgentProcess::start(
        &cgroup,
        &format!("[detect]\nmax_subjects = {max_subjects}\n"),
        None,
    );
    std::thread::sleep(Duration::from_secs(2));
    let (idle, _) = agent.rss_mib();
    let t0 = Instant::now();
    let (responder, addr) = start_responder(&cgroup, CONNS, true, 0, true);
    let rate = 20_000;
    let secs = (count as u64).div_ceil(rate) + 1;
    let args: Vec<String> = [
        "heads".to_string(),
        rate.to_string(),
        secs.to_string(),
        CONNS.to_string(),
        addr.to_string(),
        count.to_string(),
    ]
    .into();
    run_worker(&args, None);
    drop(responder);
    settle(&mut agent, count, idle, t0, "distinct token fingerprints")
}

/// Waits until the agent's metrics count `count` requests (at most a minute), then reads
/// its memory.
fn settle(agent: &mut AgentProcess, count: usize, idle: f64, t0: Instant, what: &str) -> MemPhase {
    let secs = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (tracked, requests, drops) = loop {
        std::thread::sleep(Duration::from_millis(1_200));
        agent.check_alive();
        let m = agent.scrape();
        let tracked = sum(&m, "homeserver_sensor_tracked_connections", "");
        let requests = sum(&m, "homeserver_sensor_requests_total", "");
        let drops = m
            .iter()
            .filter(|(k, v)| k.starts_with("homeserver_sensor_events_dropped_total") && **v > 0.0)
            .map(|(k, v)| (label(k), *v))
            .collect::<Vec<_>>();
        if requests >= count as f64 || Instant::now() > deadline {
            break (tracked, requests, drops);
        }
    };
    let (rss, hwm) = agent.rss_mib();
    MemPhase {
        what: what.to_string(),
        count,
        idle_rss_mib: idle,
        rss_mib: rss,
        hwm_mib: hwm,
        anon_mib: agent.anon_mib(),
        tracked,
        requests,
        drops,
        secs,
    }
}

impl MemPhase {
    fn print(&self) {
        println!(
            "  {} {}: agent RSS {:.1} MiB (peak {:.1}; heap and stacks {:.1}), idle before {:.1} MiB; it tracked {} connections, {} completed requests; drops {}; load took {:.1} s",
            num(self.count as f64, 0),
            self.what,
            self.rss_mib,
            self.hwm_mib,
            self.anon_mib,
            self.idle_rss_mib,
            num(self.tracked, 0),
            num(self.requests, 0),
            drops_text(&self.drops),
            self.secs
        );
    }

    fn json(&self) -> Value {
        json!({
            "what": self.what, "count": self.count, "idle_rss_mib": self.idle_rss_mib,
            "rss_mib": self.rss_mib, "peak_rss_mib": self.hwm_mib, "anon_rss_mib": self.anon_mib,
            "tracked_connections": self.tracked, "completed_requests": self.requests,
            "drops": self.drops.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "load_secs": self.secs,
        })
    }
}

fn drops_text(drops: &[(String, f64)]) -> String {
    if drops.is_empty() {
        return "none".into();
    }
    drops
        .iter()
        .map(|(k, v)| format!("{k} {}", num(*v, 0)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Memory {
    pub fn print(&self) {
        println!("Agent memory (homeserver-sensor, default configuration, RSS from /proc):");
        self.connections.print();
        self.fingerprints.print();
        println!(
            "  (fingerprints: detect.max_subjects raised to {} so that none is forgotten; client addresses from X-Forwarded-For, 250 distinct)",
            num(self.max_subjects as f64, 0)
        );
    }

    pub fn json(&self) -> Value {
        json!({
            "method": "connections: the responders (in the watched cgroup, 15,000 connections per process: the open-files hard limit here is 20,000) start before the agent, \
                       then holders outside the cgroup connect from 127.x.0.1 source addresses and send two heads each with one shared token; \
                       fingerprints: another agent with detect.max_subjects raised, 64 keep-alive connections carrying COUNT heads with distinct syt_ tokens at 20,000/s; \
                       RSS from /proc/PID/status once the agent's metrics count every request",
            "connections": self.connections.json(),
            "fingerprints": self.fingerprints.json(),
            "max_subjects": self.max_subjects,
        })
    }
}
