//! Loading the kernel object, attaching programs, and reading the kernel maps.
//!
//! Every program is loaded once at start; loading is how the agent learns what the kernel
//! offers (`plan::Features`). Attaching follows the plan, and is undone when the `Sensor`
//! is dropped (aya detaches every link it owns).

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError,
        RawTracePoint, SockOps, cgroup_skb::CgroupSkbLinkId, sock_ops::SockOpsLinkId,
    },
    util::KernelVersion,
};
use sensor_common::{
    conn::ConnStats,
    drops::Drop,
    maps, programs,
    syscall::{ProcIo, SyscallKey},
};

use crate::{config::Config, plan::Features};

mod object;
pub mod query;
mod verify;

pub use object::ObjectBuild;

pub use verify::{
    BPF_LOOP_SINCE, ProgramLoad, TEST_REFUSE_HEADS_ENV, VERIFIED_INSNS_BUDGET, VERIFIER_LIMIT,
};

/// The kernel object this agent was built with (`cargo xtask build-ebpf`).
#[cfg(ebpf_object)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor.bpf.o"));
#[cfg(not(ebpf_object))]
static OBJECT: &[u8] = &[];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this agent was built without its eBPF object; build it with `cargo xtask build-ebpf` and rebuild the agent (or use `cargo xtask run`)"
    )]
    NoObject,
    #[error(
        "not enough privilege to load eBPF programs: run as root, or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (see the systemd unit)"
    )]
    NotPrivileged,
    #[error("cannot load the eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} named {name}: agent and kernel object disagree")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error(
        "the kernel (Linux {kernel}) refused program {program}, {purpose}; it said: \"{reason}\"{hint}"
    )]
    Refused {
        program: &'static str,
        purpose: &'static str,
        kernel: String,
        /// The verifier's reason (the last line of its log), or the error.
        reason: String,
        hint: &'static str,
    },
    #[error("the kernel refused program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot open cgroup {path}: {source}")]
    CgroupOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// `map_err` for a map's errors.
fn map_error(name: &'static str) -> impl FnOnce(MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

/// `map_err` for a program's errors.
fn program_error(name: &'static str) -> impl FnOnce(ProgramError) -> LoadError {
    move |source| LoadError::Program { name, source }
}

/// Links of the cgroup programs attached to one cgroup.
struct CgroupLinks {
    ingress: CgroupSkbLinkId,
    egress: CgroupSkbLinkId,
    sockops: SockOpsLinkId,
}

/// The loaded kernel side.
pub struct Sensor {
    ebpf: Ebpf,
    features: Features,
    /// The ingress program in use: with request heads, or the basic one.
    ingress: &'static str,
    /// What the verifier made of each program the agent loaded.
    loads: BTreeMap<&'static str, ProgramLoad>,
    cgroups: StdHashMap<String, CgroupLinks>,
    sock_io_attached: bool,
    sock_state_attached: bool,
    syscalls_attached: bool,
}

/// Turns on the kernel's per-program run time and count for as long as the returned fd is
/// open (`BPF_ENABLE_STATS`, Linux 5.8+). Every BPF program on the host then pays two clock
/// reads per run (tens of ns): off unless `[metrics] program_stats` asks for it.
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd, String> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| e.to_string())
}

/// Raises RLIMIT_MEMLOCK for kernels before 5.11, which charge BPF maps to it.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure only matters on old kernels,
    // where the map creation error that follows says so.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on Linux 5.11 and later");
    }
}

/// Whether this process may load BPF programs: root, CAP_SYS_ADMIN, or CAP_BPF+CAP_PERFMON.
pub fn privileged() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_PERFMON: u64 = 1 << 38;
    const CAP_BPF: u64 = 1 << 39;
    cap_eff & CAP_SYS_ADMIN != 0 || (cap_eff & CAP_BPF != 0 && cap_eff & CAP_PERFMON != 0)
}

impl Sensor {
    /// Loads the object and every program. Programs the kernel refuses are recorded in
    /// `features()`, not fatal: the plan picks among those that loaded.
    pub fn load(config: &Config) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        if !privileged() {
            return Err(LoadError::NotPrivileged);
        }
        raise_memlock();
        let btf = Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            .btf(btf.as_ref())
            .map_max_entries(maps::CONNS, config.kernel.max_connections)
            .map_max_entries(maps::EVENTS, config.kernel.ring_buffer_bytes)
            .load(OBJECT)
            .map_err(|e| match &e {
                aya::EbpfError::MapError(MapError::CreateError { io_error, .. })
                    if io_error.raw_os_error() == Some(libc::EPERM) =>
                {
                    LoadError::NotPrivileged
                }
                _ => LoadError::Object(e),
            })?;

        let mut loads = BTreeMap::new();
        let cgroup =
            verify::load_cgroup_programs(&mut ebpf, config.attribution.request_heads, &mut loads)?;
        let sock_tracepoints = match &btf {
            None => Err("the kernel exposes no BTF at /sys/kernel/btf/vmlinux".to_string()),
            Some(btf) => verify::load_btf_tracepoints(&mut ebpf, btf, &mut loads),
        };
        let syscall_tracepoints = verify::load_syscall_tracepoints(&mut ebpf, &mut loads);
        Ok(Self {
            ebpf,
            features: Features {
                request_heads: cgroup.request_heads,
                sock_tracepoints,
                syscall_tracepoints,
            },
            ingress: cgroup.ingress,
            loads,
            cgroups: StdHashMap::new(),
            sock_io_attached: false,
            sock_state_attached: false,
            syscalls_attached: false,
        })
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Every program loaded (or refused) at start, with the verifier's instruction count.
    pub fn program_loads(&self) -> &BTreeMap<&'static str, ProgramLoad> {
        &self.loads
    }

    /// Takes the ring buffer of lifecycle events (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self.ebpf.take_map(maps::EVENTS).ok_or(LoadError::Missing {
            what: "map",
            name: maps::EVENTS,
        })?;
        RingBuf::try_from(map).map_err(map_error(maps::EVENTS))
    }

    /// Attaches the cgroup programs to a cgroup v2 directory and marks its id as watched.
    pub fn attach_cgroup(&mut self, rel: &str, abs: &Path, id: u64) -> Result<(), LoadError> {
        if self.cgroups.contains_key(rel) {
            return Ok(());
        }
        let dir = File::open(abs).map_err(|source| LoadError::CgroupOpen {
            path: abs.to_owned(),
            source,
        })?;
        let ingress_name = self.ingress;
        let ingress = self.skb(ingress_name)?.attach(
            &dir,
            CgroupSkbAttachType::Ingress,
            CgroupAttachMode::Single,
        );
        let ingress = ingress.map_err(program_error(ingress_name))?;
        let egress = self
            .skb(programs::SKB_EGRESS)?
            .attach(&dir, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .map_err(program_error(programs::SKB_EGRESS));
        let egress = match egress {
            Ok(l) => l,
            Err(e) => {
                let _ = self.skb(ingress_name)?.detach(ingress);
                return Err(e);
            }
        };
        let sockops = self
            .sockops()?
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(program_error(programs::SOCK_OPS));
        let sockops = match sockops {
            Ok(l) => l,
            Err(e) => {
                let _ = self.skb(ingress_name)?.detach(ingress);
                let _ = self.skb(programs::SKB_EGRESS)?.detach(egress);
                return Err(e);
            }
        };
        self.cgroups.insert(
            rel.to_owned(),
            CgroupLinks {
                ingress,
                egress,
                sockops,
            },
        );
        self.watched_cgroups()?
            .insert(id, 1, 0)
            .map_err(map_error(maps::WATCHED_CGROUPS))
    }

    /// Detaches the cgroup programs from a cgroup (its processes are gone).
    pub fn detach_cgroup(&mut self, rel: &str, id: u64) -> Result<(), LoadError> {
        if let Some(links) = self.cgroups.remove(rel) {
            let detach = |r: Result<(), ProgramError>, name| r.map_err(program_error(name));
            let ingress_name = self.ingress;
            detach(self.skb(ingress_name)?.detach(links.ingress), ingress_name)?;
            detach(
                self.skb(programs::SKB_EGRESS)?.detach(links.egress),
                programs::SKB_EGRESS,
            )?;
            detach(self.sockops()?.detach(links.sockops), programs::SOCK_OPS)?;
        }
        let _ = self.watched_cgroups()?.remove(&id);
        Ok(())
    }

    /// Our cgroup programs that are no longer attached to the cgroup at `abs` (watched as
    /// `rel`), as `type/name`: someone detached them. Empty when the cgroup is not ours or
    /// its directory is gone (a service restart: the rescan follows the new cgroup).
    pub fn detached_cgroup_programs(
        &mut self,
        rel: &str,
        abs: &Path,
    ) -> Result<Vec<String>, LoadError> {
        if !self.cgroups.contains_key(rel) {
            return Ok(Vec::new());
        }
        let Ok(dir) = File::open(abs) else {
            return Ok(Vec::new());
        };
        let ingress = self.ingress;
        let expected = [
            (query::CGROUP_INET_INGRESS, "cgroup_skb", ingress),
            (
                query::CGROUP_INET_EGRESS,
                "cgroup_skb",
                programs::SKB_EGRESS,
            ),
            (query::CGROUP_SOCK_OPS, "sock_ops", programs::SOCK_OPS),
        ];
        let mut detached = Vec::new();
        for (attach_type, kind, name) in expected {
            let id = match name {
                programs::SOCK_OPS => self.sockops()?.info(),
                _ => self.skb(name)?.info(),
            }
            .map_err(program_error(name))?
            .id();
            let Ok(ids) = query::cgroup_program_ids(&dir, attach_type) else {
                continue;
            };
            if !ids.contains(&id) {
                detached.push(format!("{kind}/{name}"));
            }
        }
        Ok(detached)
    }

    /// Forgets the links of a cgroup whose programs were detached behind our back, so that
    /// the next rescan attaches them again.
    /// Detaching what is already detached may fail (an attachment made without a BPF link
    /// on an old kernel): that is not an error here.
    pub fn forget_cgroup(&mut self, rel: &str, id: u64) -> Result<(), LoadError> {
        if let Some(links) = self.cgroups.remove(rel) {
            let ingress = self.ingress;
            let _ = self.skb(ingress)?.detach(links.ingress);
            let _ = self.skb(programs::SKB_EGRESS)?.detach(links.egress);
            let _ = self.sockops()?.detach(links.sockops);
        }
        let _ = self.watched_cgroups()?.remove(&id);
        Ok(())
    }

    /// The cgroups the cgroup programs are attached to.
    pub fn attached_cgroups(&self) -> Vec<String> {
        let mut v: Vec<String> = self.cgroups.keys().cloned().collect();
        v.sort();
        v
    }

    /// Attaches the socket send/receive tracepoints (and, for tracepoint mode, the state
    /// tracepoint that reports closes).
    pub fn attach_sock_tracepoints(&mut self, with_state: bool) -> Result<(), LoadError> {
        if !self.sock_io_attached {
            for name in [programs::SOCK_SEND, programs::SOCK_RECV] {
                self.btf_tp(name)?.attach().map_err(program_error(name))?;
            }
            self.sock_io_attached = true;
        }
        if with_state && !self.sock_state_attached {
            self.btf_tp(programs::SOCK_STATE)?
                .attach()
                .map_err(program_error(programs::SOCK_STATE))?;
            self.sock_state_attached = true;
        }
        Ok(())
    }

    /// Attaches the syscall tracepoints, telling the kernel which numbers are reads.
    pub fn attach_syscalls(&mut self, read_nrs: &[u32]) -> Result<(), LoadError> {
        if self.syscalls_attached {
            return Ok(());
        }
        {
            let map = self.map_mut(maps::READ_SYSCALLS)?;
            let mut reads: HashMap<_, u32, u32> =
                HashMap::try_from(map).map_err(map_error(maps::READ_SYSCALLS))?;
            for nr in read_nrs {
                reads
                    .insert(nr, 1, 0)
                    .map_err(map_error(maps::READ_SYSCALLS))?;
            }
        }
        for (name, tp) in [
            (programs::SYS_ENTER, "sys_enter"),
            (programs::SYS_EXIT, "sys_exit"),
        ] {
            let prog: &mut RawTracePoint = self.program(name)?;
            prog.attach(tp).map_err(program_error(name))?;
        }
        self.syscalls_attached = true;
        Ok(())
    }

    /// Names of the mechanisms attached now, for the sensor record.
    pub fn attached_mechanisms(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.cgroups.is_empty() {
            v.push(if self.ingress == programs::SKB_INGRESS {
                "cgroup_skb/ingress"
            } else {
                "cgroup_skb/ingress (without request heads)"
            });
            v.extend(["cgroup_skb/egress", "sock_ops"]);
        }
        if self.sock_io_attached {
            v.extend(["tp_btf/sock_send_length", "tp_btf/sock_recv_length"]);
        }
        if self.sock_state_attached {
            v.push("tp_btf/inet_sock_set_state");
        }
        if self.syscalls_attached {
            v.extend(["raw_tp/sys_enter", "raw_tp/sys_exit"]);
        }
        v
    }

    /// Run time (ns) and run count of each loaded program that has run since the kernel's
    /// statistics were on (`kernel.bpf_stats_enabled`, or [`enable_run_time_stats`]):
    /// `(name, run_time_ns, run_count)`. Empty when they never were.
    pub fn program_stats(&self) -> Vec<(String, u64, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                let runs = info.run_count();
                (runs > 0).then(|| (name.to_owned(), info.run_time().as_nanos() as u64, runs))
            })
            .collect()
    }

    /// Sets one of the kernel's run-time settings (`event::settings::*`).
    pub fn set_setting(&mut self, index: u32, value: u64) -> Result<(), LoadError> {
        let map = self.map_mut(maps::SETTINGS)?;
        let mut settings: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(map).map_err(map_error(maps::SETTINGS))?;
        settings
            .set(index, value, 0)
            .map_err(map_error(maps::SETTINGS))
    }

    /// Watches a process with the tracepoint mechanisms.
    pub fn watch_pid(&mut self, pid: u32, flags: u32) -> Result<(), LoadError> {
        self.watched_pids()?
            .insert(pid, flags, 0)
            .map_err(map_error(maps::WATCHED_PIDS))
    }

    pub fn unwatch_pid(&mut self, pid: u32) -> Result<(), LoadError> {
        let _ = self.watched_pids()?.remove(&pid);
        Ok(())
    }

    /// The drop counters, summed over CPUs, by name.
    pub fn drops(&self) -> Result<BTreeMap<&'static str, u64>, LoadError> {
        let map = self.map(maps::DROPS)?;
        let drops: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(map_error(maps::DROPS))?;
        let mut out = BTreeMap::new();
        for place in Drop::ALL {
            let values = drops
                .get(&(place as u32), 0)
                .map_err(map_error(maps::DROPS))?;
            out.insert(place.name(), values.iter().sum());
        }
        Ok(out)
    }

    /// Every connection entry in the kernel now.
    pub fn connections(&self) -> Result<Vec<(u64, ConnStats)>, LoadError> {
        let map = self.map(maps::CONNS)?;
        let conns: HashMap<_, u64, ConnStats> =
            HashMap::try_from(map).map_err(map_error(maps::CONNS))?;
        // Entries deleted while we iterate end the walk early in the kernel's view; that
        // only loses entries that are gone anyway.
        Ok(conns.iter().filter_map(Result::ok).collect())
    }

    /// Forgets a connection whose final counters were reported from the map.
    pub fn remove_connection(&mut self, cookie: u64) -> Result<(), LoadError> {
        let map = self.map_mut(maps::CONNS)?;
        let mut conns: HashMap<_, u64, ConnStats> =
            HashMap::try_from(map).map_err(map_error(maps::CONNS))?;
        let _ = conns.remove(&cookie);
        Ok(())
    }

    /// Syscall counts per (process, syscall number), summed over CPUs.
    pub fn syscall_counts(&self) -> Result<Vec<(SyscallKey, u64)>, LoadError> {
        let map = self.map(maps::SYSCALLS)?;
        let counts: PerCpuHashMap<_, SyscallKey, u64> =
            PerCpuHashMap::try_from(map).map_err(map_error(maps::SYSCALLS))?;
        Ok(counts
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.iter().sum()))
            .collect())
    }

    /// File reads per process, summed over CPUs.
    pub fn proc_io(&self) -> Result<Vec<(u32, ProcIo)>, LoadError> {
        let map = self.map(maps::PROC_IO)?;
        let io: PerCpuHashMap<_, u32, ProcIo> =
            PerCpuHashMap::try_from(map).map_err(map_error(maps::PROC_IO))?;
        Ok(io
            .iter()
            .filter_map(Result::ok)
            .map(|(pid, per_cpu)| {
                let sum = per_cpu.iter().fold(ProcIo::default(), |a, b| ProcIo {
                    file_read_bytes: a.file_read_bytes + b.file_read_bytes,
                    file_reads: a.file_reads + b.file_reads,
                });
                (pid, sum)
            })
            .collect())
    }

    /// Forgets the syscall accounting of a process that exited (after it was reported), so
    /// restarts do not fill the maps.
    pub fn forget_process(&mut self, pid: u32) -> Result<(), LoadError> {
        let map = self.map_mut(maps::SYSCALLS)?;
        let mut counts: PerCpuHashMap<_, SyscallKey, u64> =
            PerCpuHashMap::try_from(map).map_err(map_error(maps::SYSCALLS))?;
        let keys: Vec<SyscallKey> = counts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == pid)
            .collect();
        for key in keys {
            let _ = counts.remove(&key);
        }
        let map = self.map_mut(maps::PROC_IO)?;
        let mut io: PerCpuHashMap<_, u32, ProcIo> =
            PerCpuHashMap::try_from(map).map_err(map_error(maps::PROC_IO))?;
        let _ = io.remove(&pid);
        Ok(())
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, LoadError> {
        self.ebpf
            .map(name)
            .ok_or(LoadError::Missing { what: "map", name })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, LoadError> {
        self.ebpf
            .map_mut(name)
            .ok_or(LoadError::Missing { what: "map", name })
    }

    fn watched_pids(&mut self) -> Result<HashMap<&mut MapData, u32, u32>, LoadError> {
        let map = self.map_mut(maps::WATCHED_PIDS)?;
        HashMap::try_from(map).map_err(map_error(maps::WATCHED_PIDS))
    }

    fn watched_cgroups(&mut self) -> Result<HashMap<&mut MapData, u64, u32>, LoadError> {
        let map = self.map_mut(maps::WATCHED_CGROUPS)?;
        HashMap::try_from(map).map_err(map_error(maps::WATCHED_CGROUPS))
    }

    fn program<'a, T>(&'a mut self, name: &'static str) -> Result<&'a mut T, LoadError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        program_mut(&mut self.ebpf, name)
    }

    fn skb(&mut self, name: &'static str) -> Result<&mut CgroupSkb, LoadError> {
        self.program(name)
    }

    fn sockops(&mut self) -> Result<&mut SockOps, LoadError> {
        self.program(programs::SOCK_OPS)
    }

    fn btf_tp(&mut self, name: &'static str) -> Result<&mut BtfTracePoint, LoadError> {
        self.program(name)
    }
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(LoadError::Missing {
        what: "program",
        name,
    })?;
    prog.try_into().map_err(program_error(name))
}

/// Formats a program error with its cause chain. A verifier log is cut to its last lines,
/// where the verifier says why it refused (the whole log goes to the debug log).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    shorten_verifier_log(s)
}

/// Keeps the text before `Verifier output:` and the last lines of the log.
fn shorten_verifier_log(s: String) -> String {
    const KEEP: usize = 8;
    let Some(at) = s.find("Verifier output:") else {
        return s;
    };
    tracing::debug!("{s}");
    let (head, log) = s.split_at(at);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(KEEP)..].join(" | ");
    format!("{head}Verifier output (last lines): {tail}")
}

/// `sock:sock_send_length` and `sock:sock_recv_length`.
pub const SOCK_LENGTH_SINCE: (u8, u8) = (6, 3);

/// The running kernel's release when it is older than `since` (None when it is not, or
/// when its version cannot be read: the load error then speaks for itself).
pub fn kernel_older_than(since: (u8, u8)) -> Option<String> {
    let current = KernelVersion::current().ok()?;
    (current < KernelVersion::new(since.0, since.1, 0)).then(|| current.to_string())
}

/// The running kernel's release (`uname -r`), for records and messages.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::shorten_verifier_log;

    #[test]
    fn verifier_logs_are_cut_to_their_reason() {
        let log = format!(
            "prog: the BPF_PROG_LOAD syscall returned Permission denied. Verifier output: 0: R1=ctx()\n{}817: call bpf_skb_load_bytes#26\nR4 invalid zero-sized read\nverification time 7454 usec\nprocessed 1151 insns\n",
            "1: r1 = r2\n".repeat(1000)
        );
        let short = shorten_verifier_log(log);
        assert!(short.len() < 300, "{short}");
        assert!(short.starts_with("prog: the BPF_PROG_LOAD syscall returned Permission denied."));
        assert!(short.contains("R4 invalid zero-sized read"), "{short}");
        assert_eq!(shorten_verifier_log("plain".into()), "plain");
    }
}
