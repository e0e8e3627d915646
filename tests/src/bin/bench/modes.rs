//! What runs while a workload is measured: nothing, our agent in one of its
//! configurations, or the bpftrace peer; and the kernel's run-time statistics of the
//! programs each of them loaded.

use std::collections::{BTreeMap, BTreeSet};

use homeserver_sensor::config::Config;
use homeserver_sensor_tests::{Agent, Cgroup};

use crate::tools::Bpftrace;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Mode {
    NoSensor,
    Default,
    CallCounts,
    Syscalls,
    Bpftrace,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::NoSensor,
        Mode::Default,
        Mode::CallCounts,
        Mode::Syscalls,
        Mode::Bpftrace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::NoSensor => "no sensor",
            Mode::Default => "sensor (default: cgroup programs)",
            Mode::CallCounts => "sensor + call_counts",
            Mode::Syscalls => "sensor + syscalls",
            Mode::Bpftrace => "bpftrace peer (socket tracepoints)",
        }
    }

    /// A short key for the JSON and for `--modes`.
    pub fn key(self) -> &'static str {
        match self {
            Mode::NoSensor => "none",
            Mode::Default => "default",
            Mode::CallCounts => "call_counts",
            Mode::Syscalls => "syscalls",
            Mode::Bpftrace => "bpftrace",
        }
    }

    fn config(self) -> Option<Config> {
        let mut c = Config::default();
        match self {
            Mode::NoSensor | Mode::Bpftrace => return None,
            Mode::Default => {}
            Mode::CallCounts => c.accounting.call_counts = true,
            Mode::Syscalls => c.accounting.syscalls = true,
        }
        Some(c)
    }

    /// Starts what this mode runs on `cgroup`; it stops when the guard is dropped.
    pub fn start(self, cgroup: &Cgroup) -> Running {
        let before = program_ids();
        let bpftrace = (self == Mode::Bpftrace).then(|| Bpftrace::start(&cgroup.abs));
        let agent = self
            .config()
            .map(|config| Box::new(Agent::for_cgroup(cgroup, config)));
        let programs = program_ids().difference(&before).copied().collect();
        Running {
            programs,
            _agent: agent,
            _bpftrace: bpftrace,
        }
    }
}

/// A mode running (stopped on drop): the ids of the BPF programs it loaded.
pub struct Running {
    pub programs: BTreeSet<u32>,
    _agent: Option<Box<Agent>>,
    _bpftrace: Option<Bpftrace>,
}

impl Running {
    /// Run time (ns) and run count of each of this mode's programs, summed by name (the
    /// kernel keeps the first 15 characters of a name).
    pub fn program_stats(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out = BTreeMap::new();
        for info in aya::programs::loaded_programs().flatten() {
            if !self.programs.contains(&info.id()) {
                continue;
            }
            let name = info.name_as_str().unwrap_or("?").to_string();
            let e = out.entry(name).or_insert((0, 0));
            e.0 += info.run_time().as_nanos() as u64;
            e.1 += info.run_count();
        }
        out
    }
}

fn program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .flatten()
        .map(|p| p.id())
        .collect()
}
