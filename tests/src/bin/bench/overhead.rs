//! What the sensor costs the processes it watches and everyone else, against no sensor,
//! interleaved (every mode once per round, the order rotating), and the kernel's run time
//! per program in one extra round.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{SocketAddr, TcpListener},
    process::Command,
};

use homeserver_sensor_tests::{Cgroup, Nginx, Process, Server};
use serde_json::{Value, json};

use crate::{
    Opts,
    modes::Mode,
    stats::{Spread, num},
    tools,
};

/// A synapse-like request head with a token (about 250 bytes).
pub const REQUEST_PATH: &str =
    "/_matrix/client/v3/rooms/%21abc%3Aexample.org/messages?dir=b&limit=10&bytes=100";
pub const TOKEN: &str = "syt_YWxpY2U_qWkcnDhFoCFbYgMTpbRk_0JrhLt";

/// How a workload runs.
enum Kind {
    /// A worker process (`bench worker ARGS`), in the watched cgroup or not; it prints its
    /// figure and the number of operations it did.
    Worker { args: Vec<String>, watched: bool },
    /// `wrk` against nginx in the watched cgroup, one new connection per request.
    WrkClose { secs: u32 },
}

pub struct Workload {
    pub name: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// What one operation of the worker is, for BPF time per operation.
    pub op: &'static str,
    kind: Kind,
}

fn workloads(quick: bool) -> Vec<Workload> {
    let scale = if quick { 10 } else { 1 };
    let n = |x: u64| (x / scale).to_string();
    let worker = |args: Vec<String>, watched| Kind::Worker { args, watched };
    vec![
        Workload {
            name: "unwatched read(/dev/zero, 1)",
            unit: "ns/call",
            higher_is_better: false,
            op: "read",
            kind: worker(vec!["read-zero".into(), n(2_000_000)], false),
        },
        Workload {
            name: "unwatched write(/dev/null, 1)",
            unit: "ns/call",
            higher_is_better: false,
            op: "write",
            kind: worker(vec!["write-null".into(), n(2_000_000)], false),
        },
        Workload {
            name: "unwatched TCP ping-pong, 1 byte",
            unit: "ns/round trip",
            higher_is_better: false,
            op: "round trip",
            kind: worker(vec!["pingpong".into(), n(100_000)], false),
        },
        Workload {
            name: "watched HTTP server, keep-alive",
            unit: "requests/s",
            higher_is_better: true,
            op: "request",
            kind: worker(vec!["http".into(), n(20_000)], false),
        },
        Workload {
            name: "watched nginx, new connection per request (wrk)",
            unit: "requests/s",
            higher_is_better: true,
            op: "request",
            kind: Kind::WrkClose {
                secs: if quick { 1 } else { 5 },
            },
        },
        Workload {
            name: "watched sender, 1 KiB writes",
            unit: "MB/s",
            higher_is_better: true,
            op: "send",
            kind: worker(vec!["stream".into(), "1024".into(), n(1_000_000_000)], true),
        },
        Workload {
            name: "watched sender, 64 KiB writes",
            unit: "MB/s",
            higher_is_better: true,
            op: "send",
            kind: worker(
                vec!["stream".into(), "65536".into(), n(4_000_000_000)],
                true,
            ),
        },
    ]
}

/// Figures of one workload: samples per mode.
pub struct Measured {
    pub workload: Workload,
    pub samples: BTreeMap<Mode, Vec<f64>>,
}

/// BPF run time of one (workload, mode, program), and the operations the worker did.
pub struct BpfTime {
    pub workload: &'static str,
    pub op: &'static str,
    pub mode: Mode,
    pub program: String,
    pub ns: u64,
    pub runs: u64,
    pub ops: u64,
}

pub struct Overhead {
    pub measured: Vec<Measured>,
    pub bpf: Vec<BpfTime>,
}

/// The servers the workloads talk to, started once. Fields drop in order: the servers are
/// killed before their cgroup is removed.
struct Fixtures {
    server: Server,
    nginx: Nginx,
    sink: SocketAddr,
    cgroup: Cgroup,
}

pub fn run(opts: &Opts) -> Option<Overhead> {
    let loads: Vec<Workload> = workloads(opts.quick)
        .into_iter()
        .filter(|w| opts.selects("overhead", w.name))
        .collect();
    if loads.is_empty() {
        return None;
    }
    tools::ensure_installed("wrk", "wrk");
    tools::ensure_installed("bpftrace", "bpftrace");
    let cgroup = Cgroup::new("bench");
    let fx = Fixtures {
        server: Server::start(&["127.0.0.1:0"], Some(&cgroup)),
        nginx: nginx_static(&cgroup),
        sink: start_sink(),
        cgroup,
    };
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| opts.modes.as_ref().is_none_or(|k| k.contains(&m.key())))
        .collect();
    let mut measured: Vec<Measured> = loads
        .into_iter()
        .map(|workload| Measured {
            workload,
            samples: BTreeMap::new(),
        })
        .collect();
    let mut bpf: BTreeMap<(usize, Mode, String), (u64, u64, u64)> = BTreeMap::new();
    // The last round only measures BPF run time per program: the kernel times programs
    // only while statistics are enabled, and timing them slows them, so the rounds that
    // give the ratios run without.
    for round in 0..=opts.rounds {
        let timing = round == opts.rounds;
        let _stats = if timing {
            eprintln!("bench: overhead, BPF run-time round");
            Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF stats"))
        } else {
            eprintln!("bench: overhead, round {}/{}", round + 1, opts.rounds);
            None
        };
        // Rotate the order each round so no mode always runs first (or after a given one).
        let mut order = modes.clone();
        order.rotate_left(round % modes.len());
        for &mode in &order {
            let running = mode.start(&fx.cgroup);
            for (i, m) in measured.iter_mut().enumerate() {
                let before = running.program_stats();
                let (value, ops) = run_workload(&m.workload, &fx);
                if !timing {
                    m.samples.entry(mode).or_default().push(value);
                    continue;
                }
                for (name, (ns, runs)) in running.program_stats() {
                    let (ns0, runs0) = before.get(&name).copied().unwrap_or((0, 0));
                    let slot = bpf.entry((i, mode, name)).or_default();
                    slot.0 += ns.saturating_sub(ns0);
                    slot.1 += runs.saturating_sub(runs0);
                    slot.2 += ops;
                }
            }
        }
    }
    let bpf = bpf
        .into_iter()
        .map(|((i, mode, program), (ns, runs, ops))| BpfTime {
            workload: measured[i].workload.name,
            op: measured[i].workload.op,
            mode,
            program,
            ns,
            runs,
            ops,
        })
        .collect();
    Some(Overhead { measured, bpf })
}

fn run_workload(w: &Workload, fx: &Fixtures) -> (f64, u64) {
    match &w.kind {
        Kind::Worker { args, watched } => {
            let mut args = args.clone();
            match args[0].as_str() {
                "stream" => args.push(fx.sink.to_string()),
                "http" => args.push(fx.server.addrs[0].to_string()),
                _ => {}
            }
            run_worker(&args, watched.then_some(&fx.cgroup))
        }
        Kind::WrkClose { secs } => {
            let url = format!("http://{}{REQUEST_PATH}", fx.nginx.addr);
            let auth = format!("Authorization: Bearer {TOKEN}");
            let r = tools::wrk(&url, 8, *secs, &["Connection: close", &auth]);
            (r.requests_per_s, r.requests)
        }
    }
}

/// Runs `bench worker ARGS` (in `cgroup` if given) and returns the figure and operation
/// count it prints.
pub fn run_worker(args: &[String], cgroup: Option<&Cgroup>) -> (f64, u64) {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.arg("worker").args(args);
    let mut p = Process::spawn(cmd, cgroup);
    let mut out = String::new();
    p.child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("worker output");
    let status = p.child.wait().expect("worker");
    assert!(status.success(), "worker {args:?} failed");
    let mut parts = out.split_whitespace();
    let value = parts.next().and_then(|v| v.parse().ok());
    let ops = parts.next().and_then(|v| v.parse().ok());
    match (value, ops) {
        (Some(v), Some(o)) => (v, o),
        _ => panic!("worker {args:?} printed {out:?}"),
    }
}

/// The sink of the watched sender's stream: outside the watched cgroup.
fn start_sink() -> SocketAddr {
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let addr = sink.local_addr().expect("sink addr");
    std::thread::spawn(move || {
        for s in sink.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Debian's nginx as a small real HTTP server, in the watched cgroup: one worker process,
/// a fixed 13-byte JSON answer for every path, no access log.
/// nginx answering every request with a small static JSON body, in the watched cgroup.
fn nginx_static(cgroup: &Cgroup) -> Nginx {
    Nginx::serving(1024, Some(cgroup), |port| {
        format!(
            r#"listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{{"chunk":[]}}';
        }}"#
        )
    })
}

impl Overhead {
    pub fn print(&self) {
        println!(
            "{:<50} {:<36} {:>26} {:>9}",
            "workload", "mode", "median (min..max)", "vs none"
        );
        for m in &self.measured {
            let base = Spread::of(&m.samples[&Mode::NoSensor]).median;
            for (mode, samples) in &m.samples {
                let s = Spread::of(samples);
                println!(
                    "{:<50} {:<36} {:>26} {:>8.1}% {}",
                    m.workload.name,
                    mode.name(),
                    s.show(1),
                    m.speed(*mode, base),
                    m.workload.unit
                );
            }
        }
        println!();
        println!("BPF run time per invocation (kernel statistics, one extra round):");
        println!(
            "{:<50} {:<36} {:<16} {:>11} {:>8} {:>14}",
            "workload", "mode", "program", "runs", "ns/run", "BPF ns per op"
        );
        for b in &self.bpf {
            if b.runs == 0 {
                continue;
            }
            println!(
                "{:<50} {:<36} {:<16} {:>11} {:>8.1} {:>9.1}/{}",
                b.workload,
                b.mode.name(),
                b.program,
                b.runs,
                b.ns as f64 / b.runs as f64,
                b.ns as f64 / b.ops.max(1) as f64,
                b.op
            );
        }
        println!();
        println!("BPF ns per invocation, per program (range over the workloads):");
        for (mode, program, lo, hi) in self.per_program() {
            println!(
                "  {:<36} {:<16} {:>8} .. {:<8} ns",
                mode.name(),
                program,
                num(lo, 0),
                num(hi, 0)
            );
        }
    }

    /// For each (mode, program): the lowest and highest ns per invocation over the
    /// workloads where it ran.
    pub fn per_program(&self) -> Vec<(Mode, String, f64, f64)> {
        let mut by: BTreeMap<(Mode, String), (f64, f64)> = BTreeMap::new();
        for b in self.bpf.iter().filter(|b| b.runs > 0) {
            let per = b.ns as f64 / b.runs as f64;
            let e = by
                .entry((b.mode, b.program.clone()))
                .or_insert((f64::MAX, 0.0));
            e.0 = e.0.min(per);
            e.1 = e.1.max(per);
        }
        by.into_iter()
            .map(|((m, p), (lo, hi))| (m, p, lo, hi))
            .collect()
    }

    /// All BPF ns of `mode` during `workload`, per operation of the worker.
    pub fn bpf_per_op(&self, workload: &str, mode: Mode) -> Option<f64> {
        let rows: Vec<&BpfTime> = self
            .bpf
            .iter()
            .filter(|b| b.workload.contains(workload) && b.mode == mode)
            .collect();
        let ops = rows.first()?.ops;
        let ns: u64 = rows.iter().map(|b| b.ns).sum();
        Some(ns as f64 / ops.max(1) as f64)
    }

    pub fn figure(&self, workload: &str) -> Option<&Measured> {
        self.measured
            .iter()
            .find(|m| m.workload.name.contains(workload))
    }

    pub fn json(&self) -> Value {
        let mut results = Vec::new();
        for m in &self.measured {
            let base = Spread::of(&m.samples[&Mode::NoSensor]);
            for (mode, samples) in &m.samples {
                let s = Spread::of(samples);
                results.push(json!({
                    "workload": m.workload.name, "unit": m.workload.unit,
                    "higher_is_better": m.workload.higher_is_better,
                    "mode": mode.key(), "mode_name": mode.name(),
                    "median": s.median, "min": s.min, "max": s.max, "samples": s.samples,
                    "baseline": base.json(),
                    "speed_vs_no_sensor_percent": m.speed(*mode, base.median),
                }));
            }
        }
        let bpf: Vec<Value> = self
            .bpf
            .iter()
            .map(|b| {
                json!({
                    "workload": b.workload, "mode": b.mode.key(), "program": b.program,
                    "invocations": b.runs, "run_time_ns": b.ns,
                    "ns_per_invocation": if b.runs > 0 { b.ns as f64 / b.runs as f64 } else { 0.0 },
                    "operations": b.ops, "operation": b.op,
                    "ns_per_operation": b.ns as f64 / b.ops.max(1) as f64,
                })
            })
            .collect();
        let per_program: Vec<Value> = self
            .per_program()
            .into_iter()
            .map(|(m, p, lo, hi)| {
                json!({"mode": m.key(), "program": p, "min_ns_per_invocation": lo,
                       "max_ns_per_invocation": hi})
            })
            .collect();
        json!({"results": results, "bpf": bpf, "bpf_per_program": per_program})
    }
}

impl Measured {
    /// Speed relative to no sensor, in percent (100 % = as fast).
    pub fn speed(&self, mode: Mode, base: f64) -> f64 {
        let m = Spread::of(&self.samples[&mode]).median;
        if self.workload.higher_is_better {
            m / base * 100.0
        } else {
            base / m * 100.0
        }
    }
}
