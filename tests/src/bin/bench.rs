//! `cargo xtask bench`: what the sensor costs, as ratios against "no sensor" measured in the
//! same run, interleaved (A B A B ...) because the machine is shared and noisy.
//!
//! Figures (ns per operation, lower is better, or throughput, higher is better):
//! - unwatched process: `read(/dev/zero, 1)`, `write(/dev/null, 1)`, and a 1-byte loopback
//!   TCP ping-pong (two sends, two receives per round trip), in a process outside every
//!   watched cgroup;
//! - watched process: loopback TCP throughput of a sender inside the watched cgroup, with
//!   1 KiB and 64 KiB writes; requests per second of an HTTP server inside it (keep-alive,
//!   small requests with a token: every request's head is captured and sent to the agent);
//! - BPF run time per program invocation, from the kernel's statistics.
//!
//! Modes: no sensor; the sensor with its defaults (cgroup programs only); with
//! `accounting.call_counts`; with `accounting.syscalls`.
//!
//! Usage: `bench [--rounds N] [--quick] [--only TEXT] [--json PATH]` (as root). Never
//! asserts on timings.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Instant,
};

use homeserver_sensor::config::Config;
use homeserver_sensor_tests::{Agent, Cgroup, Process, Server, require_root};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    NoSensor,
    Default,
    CallCounts,
    Syscalls,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::NoSensor,
        Mode::Default,
        Mode::CallCounts,
        Mode::Syscalls,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::NoSensor => "no sensor",
            Mode::Default => "sensor (default: cgroup programs)",
            Mode::CallCounts => "sensor + call_counts",
            Mode::Syscalls => "sensor + syscalls",
        }
    }

    fn config(self) -> Option<Config> {
        let mut c = Config::default();
        match self {
            Mode::NoSensor => return None,
            Mode::Default => {}
            Mode::CallCounts => c.accounting.call_counts = true,
            Mode::Syscalls => c.accounting.syscalls = true,
        }
        Some(c)
    }
}

/// One workload: a name, the unit of its figure, whether higher is better, and the
/// command-line arguments of its worker.
struct Workload {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    watched: bool,
    args: Vec<String>,
}

fn workloads(quick: bool) -> Vec<Workload> {
    let scale = if quick { 10 } else { 1 };
    let n = |x: u64| (x / scale).to_string();
    vec![
        Workload {
            name: "unwatched read(/dev/zero, 1)",
            unit: "ns/call",
            higher_is_better: false,
            watched: false,
            args: vec!["read-zero".into(), n(2_000_000)],
        },
        Workload {
            name: "unwatched write(/dev/null, 1)",
            unit: "ns/call",
            higher_is_better: false,
            watched: false,
            args: vec!["write-null".into(), n(2_000_000)],
        },
        Workload {
            name: "unwatched TCP ping-pong, 1 byte",
            unit: "ns/round trip",
            higher_is_better: false,
            watched: false,
            args: vec!["pingpong".into(), n(100_000)],
        },
        Workload {
            name: "watched HTTP server, keep-alive",
            unit: "requests/s",
            higher_is_better: true,
            watched: false,
            args: vec!["http".into(), n(20_000)],
        },
        Workload {
            name: "watched sender, 1 KiB writes",
            unit: "MB/s",
            higher_is_better: true,
            watched: true,
            args: vec!["stream".into(), "1024".into(), n(1_000_000_000)],
        },
        Workload {
            name: "watched sender, 64 KiB writes",
            unit: "MB/s",
            higher_is_better: true,
            watched: true,
            args: vec!["stream".into(), "65536".into(), n(4_000_000_000)],
        },
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        worker(&args[1..]);
        return;
    }
    let mut rounds = 5;
    let mut quick = false;
    let mut json_path = None;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--quick" => quick = true,
            "--json" => json_path = it.next().cloned(),
            "--only" => only = it.next().cloned(),
            other => panic!(
                "unknown argument {other}; usage: bench [--rounds N] [--quick] [--json PATH]"
            ),
        }
    }
    require_root();
    run(rounds, quick, only.as_deref(), json_path);
}

fn run(rounds: usize, quick: bool, only: Option<&str>, json_path: Option<String>) {
    let cgroup = Cgroup::new("bench");
    // The HTTP server the request workload talks to, watched (its cgroup is).
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut bpf: BTreeMap<(&'static str, Mode, String), (u64, u64)> = BTreeMap::new();
    // The sink of the watched sender's stream: outside the watched cgroup.
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let sink_addr = sink.local_addr().expect("sink addr");
    std::thread::spawn(move || {
        for s in sink.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    // `--only TEXT` keeps the workloads whose name contains TEXT (profiling one figure).
    let loads: Vec<Workload> = workloads(quick)
        .into_iter()
        .filter(|w| only.is_none_or(|o| w.name.contains(o)))
        .collect();
    // results[workload][mode] = samples
    let mut results: Vec<BTreeMap<Mode, Vec<f64>>> = vec![BTreeMap::new(); loads.len()];
    // The last round only measures BPF run time per program: the kernel times programs
    // only while statistics are enabled, and timing them slows them, so the rounds that
    // give the ratios run without.
    let mut stats = None;
    for round in 0..=rounds {
        let timing = round == rounds;
        if timing {
            eprintln!("bench: BPF run-time round");
            stats =
                Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF stats"));
        } else {
            eprintln!("bench: round {}/{rounds}", round + 1);
        }
        // Rotate the order each round so no mode always runs first (or after a given one).
        let mut order = Mode::ALL;
        order.rotate_left(round % Mode::ALL.len());
        for mode in order {
            let agent = mode
                .config()
                .map(|config| Agent::for_cgroup(&cgroup, config));
            for (i, w) in loads.iter().enumerate() {
                let mut args = w.args.clone();
                match w.args[0].as_str() {
                    "stream" => args.push(sink_addr.to_string()),
                    "http" => args.push(server.addrs[0].to_string()),
                    _ => {}
                }
                if !timing {
                    let value = run_worker(&args, w.watched.then_some(&cgroup));
                    results[i].entry(mode).or_default().push(value);
                    continue;
                }
                let before = program_stats();
                run_worker(&args, w.watched.then_some(&cgroup));
                for (name, (ns, count)) in program_stats() {
                    let (ns0, count0) = before.get(&name).copied().unwrap_or((0, 0));
                    let slot = bpf.entry((w.name, mode, name)).or_default();
                    slot.0 += ns.saturating_sub(ns0);
                    slot.1 += count.saturating_sub(count0);
                }
            }
            drop(agent);
        }
    }
    drop(stats);
    report(&loads, &results, &bpf, rounds, json_path);
}

/// Run time and run count of the sensor's loaded programs, by name (the kernel keeps the
/// first 15 characters).
fn program_stats() -> BTreeMap<String, (u64, u64)> {
    const OURS: [&str; 8] = [
        "conn_ingress",
        "conn_egress",
        "conn_sockops",
        "sock_send_lengt",
        "sock_recv_lengt",
        "inet_sock_set_s",
        "sys_enter",
        "sys_exit",
    ];
    let mut out = BTreeMap::new();
    for info in aya::programs::loaded_programs().flatten() {
        let Some(name) = info.name_as_str() else {
            continue;
        };
        if OURS.contains(&name) {
            let e = out.entry(name.to_string()).or_insert((0, 0));
            e.0 += info.run_time().as_nanos() as u64;
            e.1 += info.run_count();
        }
    }
    out
}

fn run_worker(args: &[String], cgroup: Option<&Cgroup>) -> f64 {
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
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("worker {args:?} printed {out:?}"))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn report(
    loads: &[Workload],
    results: &[BTreeMap<Mode, Vec<f64>>],
    bpf: &BTreeMap<(&'static str, Mode, String), (u64, u64)>,
    rounds: usize,
    json_path: Option<String>,
) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "homeserver-sensor bench: {rounds} interleaved rounds, kernel {}, {} CPUs",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:<36} {:>14} {:>20} {:>10}",
        "workload", "mode", "median", "min..max", "vs none"
    );
    let mut json = Vec::new();
    for (w, by_mode) in loads.iter().zip(results) {
        let base = median(&by_mode[&Mode::NoSensor]);
        for (mode, samples) in by_mode {
            let m = median(samples);
            let (lo, hi) = samples
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            // A ratio where 100 % means "as fast as without the sensor".
            let ratio = if w.higher_is_better {
                m / base
            } else {
                base / m
            } * 100.0;
            println!(
                "{:<34} {:<36} {:>9.1} {:<4} {:>9.1}..{:<9.1} {:>9.1}%",
                w.name,
                mode.name(),
                m,
                w.unit,
                lo,
                hi,
                ratio
            );
            json.push(serde_json::json!({
                "workload": w.name, "mode": mode.name(), "unit": w.unit,
                "median": m, "min": lo, "max": hi, "samples": samples,
                "speed_vs_no_sensor_percent": ratio,
            }));
        }
    }
    println!();
    println!("BPF run time per invocation (kernel statistics, one extra round):");
    println!(
        "{:<34} {:<36} {:<16} {:>12} {:>9}",
        "workload", "mode", "program", "invocations", "ns/run"
    );
    let mut bpf_json = Vec::new();
    for ((workload, mode, name), (ns, count)) in bpf {
        if *count == 0 {
            continue;
        }
        let per = *ns as f64 / *count as f64;
        println!(
            "{:<34} {:<36} {:<16} {:>12} {:>9.1}",
            workload,
            mode.name(),
            name,
            count,
            per
        );
        bpf_json.push(serde_json::json!({
            "workload": workload, "mode": mode.name(), "program": name,
            "invocations": count, "ns_per_run": per,
        }));
    }
    if let Some(path) = json_path {
        let doc = serde_json::json!({
            "kernel": kernel.trim(), "rounds": rounds, "results": json, "bpf": bpf_json,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json"))
            .unwrap_or_else(|e| panic!("write {path}: {e}"));
        eprintln!("bench: results written to {path}");
    }
}

/// The measured workloads, each in its own process; prints one number.
fn worker(args: &[String]) {
    let n = |i: usize| -> u64 { args[i].parse().expect("count") };
    match args[0].as_str() {
        "read-zero" => print_ns_per_op(n(1), syscall_loop(n(1), "/dev/zero", false)),
        "write-null" => print_ns_per_op(n(1), syscall_loop(n(1), "/dev/null", true)),
        "pingpong" => {
            let count = n(1);
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let echo = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().expect("accept");
                s.set_nodelay(true).expect("nodelay");
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() {
                    s.write_all(&b).expect("echo");
                }
            });
            let mut c = TcpStream::connect(addr).expect("connect");
            c.set_nodelay(true).expect("nodelay");
            let mut b = [1u8; 1];
            let start = Instant::now();
            for _ in 0..count {
                c.write_all(&b).expect("ping");
                c.read_exact(&mut b).expect("pong");
            }
            let elapsed = start.elapsed();
            drop(c);
            let _ = echo.join();
            print_ns_per_op(count, elapsed.as_nanos() as f64);
        }
        "stream" => {
            let size: usize = args[1].parse().expect("size");
            let total = n(2);
            let mut c = TcpStream::connect(&args[3]).expect("connect sink");
            let buf = vec![0x5au8; size];
            let mut sent = 0u64;
            let start = Instant::now();
            while sent < total {
                c.write_all(&buf).expect("send");
                sent += size as u64;
            }
            let secs = start.elapsed().as_secs_f64();
            println!("{:.1}", sent as f64 / secs / 1e6);
        }
        "http" => {
            let count = n(1);
            let mut c = TcpStream::connect(&args[2]).expect("connect server");
            c.set_nodelay(true).expect("nodelay");
            // A request as Synapse receives it from a client with a token: about 250 bytes.
            let req = b"GET /_matrix/client/v3/rooms/%21abc%3Aexample.org/messages?dir=b&limit=10&bytes=100 HTTP/1.1\r\nHost: matrix.example.org\r\nUser-Agent: bench\r\nAccept: application/json\r\nAuthorization: Bearer syt_YWxpY2U_qWkcnDhFoCFbYgMTpbRk_0JrhLt\r\n\r\n";
            let mut buf = vec![0u8; 4096];
            let start = Instant::now();
            for _ in 0..count {
                c.write_all(req).expect("request");
                // The response: a fixed head and 100 bytes; read until both are in.
                let mut got = 0;
                while got < 180 {
                    let k = c.read(&mut buf).expect("response");
                    assert!(k > 0, "server closed");
                    got += k;
                }
            }
            println!("{:.1}", count as f64 / start.elapsed().as_secs_f64());
        }
        other => panic!("unknown worker {other}"),
    }
}

fn syscall_loop(count: u64, path: &str, write: bool) -> f64 {
    let mut f = std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    let start = Instant::now();
    for _ in 0..count {
        if write {
            f.write_all(&b).expect("write");
        } else {
            f.read_exact(&mut b).expect("read");
        }
    }
    start.elapsed().as_nanos() as f64
}

fn print_ns_per_op(count: u64, ns: f64) {
    println!("{:.1}", ns / count as f64);
}
