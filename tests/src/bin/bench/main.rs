//! `cargo xtask bench`: what the sensor costs, against "no sensor" measured in the same run,
//! interleaved (A B A B ..., the order rotating each round) because the machine is shared
//! and noisy; what the agent can take; how fast it alerts; and what a bpftrace script doing
//! the same counting costs.
//!
//! Sections (each can be picked with `--only TEXT`, matched against section and workload
//! names):
//! - `overhead` (`overhead.rs`): unwatched syscalls and TCP ping-pong, a watched HTTP server
//!   (keep-alive), watched nginx under `wrk` with a new connection per request, a watched
//!   sender with 1 KiB and 64 KiB writes; modes: no sensor, the sensor's defaults, with
//!   call counts, with syscall accounting, the bpftrace peer; plus BPF run time per
//!   program from the kernel's statistics in one extra round;
//! - `synapse` (`synapse.rs`): a real seeded Synapse behind nginx, media and `/messages`;
//! - `capacity` and `memory` (`capacity.rs`): request heads per second the agent takes on
//!   one CPU, and its memory with 100,000 connections and token fingerprints;
//! - `latency` (`latency.rs`): from threshold crossing to alert line.
//!
//! Usage: `bench [--rounds N] [--quick] [--only TEXT] [--modes none,default,...]
//! [--json PATH]` (as root). Never asserts on timings; panics (exit status 101) when a
//! workload cannot run.

mod agent_proc;
mod capacity;
mod latency;
mod modes;
mod overhead;
mod report;
mod stats;
mod synapse;
mod tools;
mod workers;

use std::time::Instant;

use homeserver_sensor_tests::require_root;

/// The command line.
pub struct Opts {
    pub rounds: usize,
    pub quick: bool,
    pub only: Option<String>,
    /// Mode keys to run in the overhead section (no sensor always runs).
    pub modes: Option<Vec<&'static str>>,
    pub json: Option<String>,
}

impl Opts {
    /// Whether `--only` keeps this section or workload.
    pub fn selects(&self, section: &str, name: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| section.contains(o) || name.contains(o))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        workers::worker(&args[1..]);
        return;
    }
    let usage = "usage: bench [--rounds N] [--quick] [--only TEXT] [--modes KEY,...] [--json PATH]";
    let mut opts = Opts {
        rounds: 5,
        quick: false,
        only: None,
        modes: None,
        json: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                opts.rounds = it.next().and_then(|v| v.parse().ok()).expect(usage);
                assert!(opts.rounds > 0, "{usage}");
            }
            "--quick" => opts.quick = true,
            "--json" => opts.json = it.next().cloned(),
            "--only" => opts.only = it.next().cloned(),
            "--modes" => {
                let list = it.next().expect(usage);
                let mut keys = vec![modes::Mode::NoSensor.key()];
                for k in list.split(',') {
                    let mode = modes::Mode::ALL
                        .into_iter()
                        .find(|m| m.key() == k)
                        .unwrap_or_else(|| {
                            panic!(
                                "unknown mode {k}: none, default, call_counts, syscalls, bpftrace"
                            )
                        });
                    keys.push(mode.key());
                }
                opts.modes = Some(keys);
            }
            other => panic!("unknown argument {other}; {usage}"),
        }
    }
    require_root();
    let started = Instant::now();
    let results = report::Results {
        overhead: overhead::run(&opts),
        synapse: synapse::run(&opts),
        capacity: capacity::run(&opts),
        memory: capacity::memory(&opts),
        latency: latency::run(&opts),
    };
    results.print(&opts, started.elapsed());
    if let Some(path) = &opts.json {
        let doc = results.json(&opts, started.elapsed());
        std::fs::write(path, serde_json::to_string_pretty(&doc).expect("json"))
            .unwrap_or_else(|e| panic!("write {path}: {e}"));
        eprintln!("bench: results written to {path}");
    }
}
