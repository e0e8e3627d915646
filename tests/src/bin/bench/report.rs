//! The printed table, the targets with how far each is, and the JSON document.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    Opts,
    capacity::{Capacity, Memory},
    latency::Latency,
    modes::Mode,
    overhead::Overhead,
    stats::{Spread, num},
    synapse::Synapse,
};

pub struct Results {
    pub overhead: Option<Overhead>,
    pub synapse: Option<Synapse>,
    pub capacity: Option<Capacity>,
    pub memory: Option<Memory>,
    pub latency: Option<Latency>,
}

/// One target of the benchmark issue and where this run stands.
struct Target {
    goal: String,
    measured: String,
    met: bool,
    how_far: String,
}

impl Results {
    pub fn print(&self, opts: &Opts, took: Duration) {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!(
            "homeserver-sensor bench: {} interleaved rounds{}, kernel {}, {} CPUs, {:.0} s",
            opts.rounds,
            if opts.quick { " (quick)" } else { "" },
            kernel.trim(),
            cpus(),
            took.as_secs_f64()
        );
        println!(
            "load generators: wrk (Debian) for nginx and Synapse, in-house workers for the rest"
        );
        println!();
        if let Some(o) = &self.overhead {
            o.print();
            println!();
        }
        if let Some(s) = &self.synapse {
            s.print();
            println!();
        }
        if let Some(c) = &self.capacity {
            c.print();
            println!();
        }
        if let Some(m) = &self.memory {
            m.print();
            println!();
        }
        if let Some(l) = &self.latency {
            l.print();
            println!();
        }
        println!("Targets:");
        println!(
            "  {:<58} {:<44} {:<6} how far",
            "target", "measured (median)", "met"
        );
        for t in self.targets() {
            println!(
                "  {:<58} {:<44} {:<6} {}",
                t.goal,
                t.measured,
                if t.met { "yes" } else { "NO" },
                t.how_far
            );
        }
    }

    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        if let Some(o) = &self.overhead {
            for (workload, goal) in [("64 KiB writes", 99.0), ("1 KiB writes", 95.0)] {
                if let Some(m) = o.figure(workload) {
                    let base = Spread::of(&m.samples[&Mode::NoSensor]).median;
                    if m.samples.contains_key(&Mode::Default) {
                        let s = m.speed(Mode::Default, base);
                        out.push(ratio_target(
                            format!("watched sender, {workload}: >= {goal} % of no sensor"),
                            s,
                            goal,
                        ));
                    }
                }
            }
            for m in o
                .measured
                .iter()
                .filter(|m| m.workload.name.starts_with("unwatched"))
            {
                let Some(with) = m.samples.get(&Mode::Default) else {
                    continue;
                };
                let none = Spread::of(&m.samples[&Mode::NoSensor]);
                let with = Spread::of(with);
                let within = with.median >= none.min && with.median <= none.max;
                let s = m.speed(Mode::Default, none.median);
                out.push(Target {
                    goal: format!("{}: 100 % within noise", m.workload.name),
                    measured: format!("{s:.1} %"),
                    met: within || s >= 100.0,
                    how_far: if within {
                        "inside no sensor's min..max".into()
                    } else {
                        format!("{:+.1} points, outside no sensor's min..max", s - 100.0)
                    },
                });
            }
            let per_send = o.bpf_per_op("1 KiB writes", Mode::Default);
            let per_request = o.bpf_per_op("keep-alive", Mode::Default);
            if let (Some(send), Some(req)) = (per_send, per_request) {
                // A keep-alive request is one receive and one send on the server's socket.
                let worst = send.max(req / 2.0);
                out.push(Target {
                    goal: "<= 150 ns BPF per send or receive, watched socket".into(),
                    measured: format!(
                        "{} ns/send (1 KiB); {} ns/(recv or send) (HTTP)",
                        num(send, 0),
                        num(req / 2.0, 0)
                    ),
                    met: worst <= 150.0,
                    how_far: format!("{:+.0} ns (worst of the two)", worst - 150.0),
                });
            }
            let mut cheaper = 0;
            let mut compared = 0;
            let mut worst: Option<(f64, &str)> = None;
            for m in &o.measured {
                let (Some(_), Some(_)) = (
                    m.samples.get(&Mode::Default),
                    m.samples.get(&Mode::Bpftrace),
                ) else {
                    continue;
                };
                let base = Spread::of(&m.samples[&Mode::NoSensor]).median;
                let gap = m.speed(Mode::Default, base) - m.speed(Mode::Bpftrace, base);
                compared += 1;
                if gap >= 0.0 {
                    cheaper += 1;
                }
                if worst.is_none_or(|(g, _)| gap < g) {
                    worst = Some((gap, m.workload.name));
                }
            }
            if let Some((gap, name)) = worst {
                out.push(Target {
                    goal: "cheaper than bpftrace on every workload".into(),
                    measured: format!("as cheap or cheaper on {cheaper} of {compared}"),
                    met: cheaper == compared,
                    how_far: format!("least margin {gap:+.1} points ({name})"),
                });
            }
        }
        if let Some(s) = &self.synapse {
            for e in &s.endpoints {
                out.push(ratio_target(
                    format!("{}: >= 99 %", e.name),
                    e.speed(),
                    99.0,
                ));
            }
        }
        if let Some(c) = &self.capacity {
            let best = c.zero_drop_max().map_or(0.0, |s| s.achieved);
            out.push(Target {
                goal: ">= 50,000 request heads/s on one core, 0 drops".into(),
                measured: format!("{} heads/s with 0 drops", num(best, 0)),
                met: best >= 50_000.0,
                how_far: format!("{:+.0} % ({})", (best / 50_000.0 - 1.0) * 100.0, c.stopped),
            });
        }
        if let Some(m) = &self.memory {
            let c = &m.connections;
            out.push(Target {
                goal: format!(
                    "agent RSS <= 64 MiB at {} connections",
                    num(c.count as f64, 0)
                ),
                measured: format!("{:.1} MiB (peak {:.1})", c.rss_mib, c.hwm_mib),
                met: c.hwm_mib <= 64.0,
                how_far: format!("{:+.1} MiB (peak)", c.hwm_mib - 64.0),
            });
            let f = &m.fingerprints;
            out.push(Target {
                goal: format!(
                    "agent RSS with {} token fingerprints (no target; 64 MiB for scale)",
                    num(f.count as f64, 0)
                ),
                measured: format!("{:.1} MiB (peak {:.1})", f.rss_mib, f.hwm_mib),
                met: f.hwm_mib <= 64.0,
                how_far: format!("{:+.1} MiB (peak)", f.hwm_mib - 64.0),
            });
        }
        if let Some(l) = &self.latency {
            out.push(Target {
                goal: "alert latency < 1 s (threshold rule)".into(),
                measured: format!("{} ms", l.threshold_ms.show(1)),
                met: l.threshold_ms.max < 1000.0,
                how_far: format!("{:.0} ms of margin (max)", 1000.0 - l.threshold_ms.max),
            });
            out.push(Target {
                goal: "single transfer alert < 100 ms after the crossing byte".into(),
                measured: format!("{} ms", l.single_transfer_ms.show(1)),
                met: l.single_transfer_ms.max < 100.0,
                how_far: format!("{:.0} ms of margin (max)", 100.0 - l.single_transfer_ms.max),
            });
        }
        out
    }

    pub fn json(&self, opts: &Opts, took: Duration) -> Value {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| json!({"target": t.goal, "measured": t.measured, "met": t.met, "how_far": t.how_far}))
            .collect();
        json!({
            "date": homeserver_sensor::time::now_rfc3339(),
            "kernel": kernel.trim(), "cpus": cpus(), "rounds": opts.rounds, "quick": opts.quick,
            "only": opts.only, "seconds": took.as_secs_f64(),
            "load_generators": {"nginx_and_synapse": "wrk (Debian package wrk)", "others": "in-house workers (bench worker ...)"},
            "overhead": self.overhead.as_ref().map(Overhead::json),
            "synapse": self.synapse.as_ref().map(Synapse::json),
            "capacity": self.capacity.as_ref().map(Capacity::json),
            "memory": self.memory.as_ref().map(Memory::json),
            "alert_latency": self.latency.as_ref().map(Latency::json),
            "targets": targets,
        })
    }
}

fn ratio_target(goal: String, speed: f64, want: f64) -> Target {
    Target {
        goal,
        measured: format!("{speed:.1} %"),
        met: speed >= want,
        how_far: format!("{:+.1} points", speed - want),
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
