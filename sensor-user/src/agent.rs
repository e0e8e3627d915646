//! The agent: discovery, planning and the event loop, with shutdown passed in (so tests run
//! it in-process) and everything detached when it returns.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use sensor_common::{
    conn::{ConnStats, flags},
    drops::Drop,
    watch,
};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    attribute::Connections,
    client_ip::{ClientIpError, TrustedProxies},
    config::Config,
    decode,
    discover::{self, DiscoverError},
    identity::{self, FingerprintKey, IdentityError},
    load::{LoadError, Sensor},
    output::{JsonLines, ProcessRecord, Record, SCHEMA_VERSION, SensorRecord, Sink, WatchRecord},
    plan::{self, Decision, Group, PlanError},
    requests::{Attribution, Requests},
    syscalls,
    time::{KernelClock, monotonic_ns, now_rfc3339},
};

/// How often the ring buffer is drained without a wakeup: the most a request head waits.
const HEAD_DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// What to watch. Empty means: discover the homeserver's processes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub pids: Vec<u32>,
    pub cgroups: Vec<String>,
}

impl Targets {
    pub fn is_discovery(&self) -> bool {
        self.pids.is_empty() && self.cgroups.is_empty()
    }
}

/// Everything `run` needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: Config,
    pub targets: Targets,
    pub events: Sink,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub proc_root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot write events to {sink:?}: {source}")]
    Output {
        sink: Sink,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot poll the kernel ring buffer: {0}")]
    Poll(#[source] std::io::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("the endpoint table is inconsistent (a bug, please report it): {0}")]
    EndpointTable(String),
    #[error("attribution.trusted_proxies: {0}")]
    TrustedProxies(#[from] ClientIpError),
}

/// What a run did, for callers and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub connections_reported: u64,
    pub decode_errors: u64,
}

/// A group of processes and how it is watched now.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Watched {
    group: Group,
    decision: Decision,
    cgroup_abs: PathBuf,
    cgroup_id: u64,
}

struct Agent {
    opts: RunOptions,
    sensor: Sensor,
    out: JsonLines,
    conns: Connections,
    requests: Requests,
    attribution: Attribution,
    clock: KernelClock,
    /// `-c`/`--config-path` of the first watched Synapse process, for its `server_name`.
    synapse_config: Vec<PathBuf>,
    cgroup_mount: PathBuf,
    watched: BTreeMap<String, Watched>,
    /// Processes watched by the tracepoint mechanism now.
    tp_pids: BTreeSet<u32>,
    summary: Summary,
    last_plan_error: Option<String>,
    /// The kernel's `ringbuf_full_close` count at the last sweep.
    close_drops_swept: u64,
}

/// Runs the agent until `shutdown` completes or the duration elapses.
pub async fn run(
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, AgentError> {
    let mut sensor = Sensor::load(&opts.config)?;
    let events = sensor.take_events()?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long
    // as the AsyncFd owns the ring buffer.
    let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| AgentError::Poll(e.into_parts().1))?;
    let out = JsonLines::open(&opts.events).map_err(|source| AgentError::Output {
        sink: opts.events.clone(),
        source,
    })?;
    let cgroup_mount = match &opts.config.discovery.cgroup_root {
        Some(root) => root.clone(),
        None => discover::cgroup2_mount(&opts.proc_root)?,
    };
    check_targets(&opts, &cgroup_mount)?;
    // The endpoint table is code: a bad row is a bug to report at start, not a silent
    // fallback to family names.
    if let Err(e) = crate::endpoint::check_table() {
        return Err(AgentError::EndpointTable(e.to_string()));
    }
    let clock = KernelClock::new();
    let attribution = Attribution {
        trusted: TrustedProxies::try_from(opts.config.attribution.trusted_proxies.as_slice())?,
        key: FingerprintKey::load_or_create(&opts.config.attribution.key_file)?,
        server_name: opts.config.attribution.server_name.clone(),
    };
    let mut agent = Agent {
        conns: Connections::new(
            opts.proc_root.clone(),
            clock,
            opts.config.accounting.call_counts,
        ),
        requests: Requests::default(),
        attribution,
        clock,
        synapse_config: Vec::new(),
        opts,
        sensor,
        out,
        cgroup_mount,
        watched: BTreeMap::new(),
        tp_pids: BTreeSet::new(),
        summary: Summary::default(),
        last_plan_error: None,
        close_drops_swept: 0,
    };
    if agent.opts.config.accounting.syscalls {
        agent.sensor.attach_syscalls(&syscalls::read_family())?;
    }
    // Explicit targets must all be watchable at start; discovery may find nothing yet.
    agent.rescan(true)?;
    agent.sensor_record("start")?;
    agent.flush()?;

    let rescan_every = Duration::from_millis(agent.opts.config.discovery.rescan_ms);
    let mut rescan = tokio::time::interval(rescan_every);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    // Request heads do not wake the agent (see sensor-ebpf/src/head.rs): drain this often.
    let mut drain_tick = tokio::time::interval(HEAD_DRAIN_INTERVAL);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let duration = agent.opts.duration;
    let deadline = async move {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut deadline => break,
            guard = events.readable_mut() => {
                let mut guard = guard.map_err(AgentError::Poll)?;
                agent.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            _ = drain_tick.tick() => agent.drain(events.get_mut())?,
            _ = rescan.tick() => agent.rescan(false)?,
            _ = sweep.tick() => agent.sweep_closed()?,
        }
        agent.flush()?;
    }
    agent.stop(events.get_mut())?;
    agent.flush()?;
    Ok(agent.summary)
}

impl Agent {
    fn write(&mut self, record: &Record) -> Result<(), AgentError> {
        self.out.write(record).map_err(|source| AgentError::Output {
            sink: self.opts.events.clone(),
            source,
        })
    }

    /// Sends the records written since the last flush.
    fn flush(&mut self) -> Result<(), AgentError> {
        self.out.flush().map_err(|source| AgentError::Output {
            sink: self.opts.events.clone(),
            source,
        })
    }

    /// Reads every pending lifecycle event.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<(), AgentError> {
        while let Some(item) = ring.next() {
            let decoded = decode::event(&item);
            drop(item);
            match decoded {
                Ok(decode::Event::Conn(ev)) => {
                    if ev.lifecycle == decode::Lifecycle::Close {
                        self.finish_request(ev.cookie, &ev.stats)?;
                    }
                    if let Some(record) = self.conns.on_event(&ev) {
                        self.summary.connections_reported += 1;
                        self.write(&Record::Connection(record))?;
                    }
                }
                Ok(decode::Event::Head(chunk)) => {
                    let view = self.conns.view(chunk.cookie);
                    let record =
                        self.requests
                            .on_chunk(chunk, view, &self.attribution, &self.clock);
                    if let Some(record) = record {
                        self.write(&Record::Request(record))?;
                    }
                }
                Err(e) => {
                    self.summary.decode_errors += 1;
                    tracing::warn!("{e}");
                }
            }
        }
        Ok(())
    }

    /// The connection is over (closed, or the agent stops): its last request's exchange is
    /// complete with these counters.
    fn finish_request(&mut self, cookie: u64, stats: &ConnStats) -> Result<(), AgentError> {
        let view = self.conns.view(cookie);
        let record = self.requests.on_close(
            cookie,
            (stats.bytes_in, stats.bytes_out),
            view,
            &self.attribution,
            &self.clock,
        );
        match record {
            Some(record) => self.write(&Record::Request(record)),
            None => Ok(()),
        }
    }

    /// Reports connections whose close event could not be sent (ring buffer full). Walking
    /// the map costs a syscall per entry, so it is done only after such a drop.
    fn sweep_closed(&mut self) -> Result<(), AgentError> {
        let close_drops = self
            .sensor
            .drops()?
            .get(Drop::RingbufClose.name())
            .copied()
            .unwrap_or(0);
        if close_drops == self.close_drops_swept {
            return Ok(());
        }
        self.close_drops_swept = close_drops;
        let now = monotonic_ns();
        for (cookie, stats) in self.sensor.connections()? {
            if stats.flags & flags::CLOSED != 0 {
                self.finish_request(cookie, &stats)?;
                let record = self.conns.from_map(cookie, &stats, now);
                self.sensor.remove_connection(cookie)?;
                self.summary.connections_reported += 1;
                self.write(&Record::Connection(record))?;
            }
        }
        Ok(())
    }

    /// The groups to watch now, and the configuration paths of the first Synapse process.
    fn groups(&self, at_start: bool) -> Result<(Vec<Group>, Vec<PathBuf>), AgentError> {
        let mut configs = Vec::new();
        let proc_root = &self.opts.proc_root;
        let targets = &self.opts.targets;
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for arg in &targets.cgroups {
            let (rel, _) = discover::resolve_cgroup_arg(&self.cgroup_mount, arg)?;
            let pids = discover::cgroup_procs(&self.cgroup_mount, &rel)?;
            groups.insert(
                rel.clone(),
                Group {
                    cgroup: rel,
                    pids,
                    explicit_cgroup: true,
                    not_dedicated: None,
                },
            );
        }
        let mut by_cgroup: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        if targets.is_discovery() {
            for p in discover::find_synapse(proc_root)? {
                if configs.is_empty() {
                    configs = absolute_configs(proc_root, p.pid, &p.config_paths);
                }
                by_cgroup
                    .entry(p.cgroup.unwrap_or_else(|| "/".into()))
                    .or_default()
                    .push(p.pid);
            }
        }
        for &pid in &targets.pids {
            match discover::describe_pid(proc_root, pid) {
                Ok(info) => {
                    if configs.is_empty() {
                        configs = absolute_configs(proc_root, pid, &info.config_paths);
                    }
                    by_cgroup
                        .entry(info.cgroup.unwrap_or_else(|| "/".into()))
                        .or_default()
                        .push(info.tgid.unwrap_or(pid));
                }
                // A PID given on the command line must exist at start; later it may exit.
                Err(e) if at_start => return Err(e.into()),
                Err(_) => {}
            }
        }
        for (cgroup, mut pids) in by_cgroup {
            if groups.contains_key(&cgroup) {
                continue;
            }
            pids.sort_unstable();
            pids.dedup();
            let dedication = discover::is_dedicated(proc_root, &self.cgroup_mount, &cgroup, &pids)?;
            groups.insert(
                cgroup.clone(),
                Group {
                    not_dedicated: (!dedication.is_dedicated()).then(|| dedication.to_string()),
                    cgroup,
                    pids,
                    explicit_cgroup: false,
                },
            );
        }
        Ok((groups.into_values().collect(), configs))
    }

    /// Finds what to watch and brings the kernel side in line with it.
    fn rescan(&mut self, at_start: bool) -> Result<(), AgentError> {
        let (groups, configs) = self.groups(at_start)?;
        self.learn_server_name(configs);
        let mut next: BTreeMap<String, Watched> = BTreeMap::new();
        for group in groups {
            let decision = match plan::decide(&group, self.sensor.features()) {
                Ok(d) => d,
                Err(e) if at_start && !self.opts.targets.is_discovery() => return Err(e.into()),
                Err(e) => {
                    let msg = e.to_string();
                    if self.last_plan_error.as_deref() != Some(&msg) {
                        tracing::error!("{msg}");
                        self.last_plan_error = Some(msg);
                    }
                    continue;
                }
            };
            let cgroup_abs = self.cgroup_mount.join(group.cgroup.trim_start_matches('/'));
            let cgroup_id = match &decision {
                Decision::Cgroup { .. } => discover::cgroup_id(&cgroup_abs)?,
                Decision::Tracepoint { .. } => 0,
            };
            next.insert(
                group.cgroup.clone(),
                Watched {
                    group,
                    decision,
                    cgroup_abs,
                    cgroup_id,
                },
            );
        }
        if next == self.watched {
            return Ok(());
        }
        self.apply(next)?;
        if !at_start {
            self.sensor_record("watch")?;
        }
        Ok(())
    }

    /// Reads `server_name` from the watched Synapse's configuration, unless configured.
    fn learn_server_name(&mut self, configs: Vec<PathBuf>) {
        if self.opts.config.attribution.server_name.is_some()
            || configs.is_empty()
            || configs == self.synapse_config
        {
            return;
        }
        match identity::server_name_from_synapse_config(&configs) {
            Ok(Some(name)) => {
                tracing::info!("server_name {name} (from {configs:?})");
                self.attribution.server_name = Some(name);
            }
            Ok(None) => tracing::warn!(
                "no server_name in {configs:?}: users are not named; set attribution.server_name"
            ),
            Err(e) => tracing::warn!("{e}; set attribution.server_name to name users"),
        }
        self.synapse_config = configs;
    }

    fn apply(&mut self, next: BTreeMap<String, Watched>) -> Result<(), AgentError> {
        // Detach what is no longer watched (or changed mechanism).
        let old = std::mem::take(&mut self.watched);
        for (rel, w) in &old {
            let kept = next.get(rel).is_some_and(|n| {
                n.decision.name() == w.decision.name() && n.cgroup_id == w.cgroup_id
            });
            if !kept && matches!(w.decision, Decision::Cgroup { .. }) {
                self.sensor.detach_cgroup(rel, w.cgroup_id)?;
            }
        }
        let mut tp_pids = BTreeSet::new();
        let mut all_pids = Vec::new();
        for (rel, w) in &next {
            all_pids.extend(&w.group.pids);
            match &w.decision {
                Decision::Cgroup { why } => {
                    if !self.sensor.attached_cgroups().contains(rel) {
                        self.sensor.attach_cgroup(rel, &w.cgroup_abs, w.cgroup_id)?;
                        tracing::info!("watching cgroup {rel} with cgroup programs: {why}");
                    }
                }
                Decision::Tracepoint { why } => {
                    tp_pids.extend(&w.group.pids);
                    if !old.contains_key(rel) {
                        tracing::warn!("watching PIDs {:?} with tracepoints: {why}", w.group.pids);
                    }
                }
            }
        }
        let any_cgroup = next
            .values()
            .any(|w| matches!(w.decision, Decision::Cgroup { .. }));
        let call_counts = self.opts.config.accounting.call_counts && any_cgroup;
        // The syscall programs tell file reads from socket reads by the receive tracepoint.
        let syscalls = self.opts.config.accounting.syscalls && !next.is_empty();
        if !tp_pids.is_empty() || call_counts || syscalls {
            self.sensor.attach_sock_tracepoints(!tp_pids.is_empty())?;
        }
        let new_tp_pids: Vec<u32> = tp_pids.difference(&self.tp_pids).copied().collect();
        for pid in &new_tp_pids {
            self.sensor.watch_pid(*pid, watch::OWNS_CONNS)?;
        }
        // Connections these processes already had are counted only from now on: remember
        // them so their records say `complete: false`.
        if !new_tp_pids.is_empty() {
            self.conns.note_preexisting(&new_tp_pids);
        }
        let gone: Vec<u32> = self.tp_pids.difference(&tp_pids).copied().collect();
        for pid in &gone {
            self.sensor.unwatch_pid(*pid)?;
        }
        // Processes that left are reported once with their final accounting.
        let before: BTreeSet<u32> = old.values().flat_map(|w| w.group.pids.clone()).collect();
        let after: BTreeSet<u32> = all_pids.iter().copied().collect();
        let exited: Vec<u32> = before.difference(&after).copied().collect();
        self.tp_pids = tp_pids;
        all_pids.sort_unstable();
        self.conns.set_watched_pids(all_pids);
        self.watched = next;
        if self.opts.config.accounting.syscalls && !exited.is_empty() {
            self.process_records(&exited, true)?;
            for pid in &exited {
                self.sensor.forget_process(*pid)?;
            }
        }
        Ok(())
    }

    fn process_records(&mut self, pids: &[u32], exited: bool) -> Result<(), AgentError> {
        let counts = self.sensor.syscall_counts()?;
        let io = self.sensor.proc_io()?;
        for &pid in pids {
            let syscalls: BTreeMap<String, u64> = counts
                .iter()
                .filter(|(k, _)| k.tgid == pid)
                .map(|(k, n)| (syscalls::name(k.nr), *n))
                .collect();
            let file = io
                .iter()
                .find(|(p, _)| *p == pid)
                .map(|(_, io)| *io)
                .unwrap_or_default();
            self.write(&Record::Process(ProcessRecord {
                ts: now_rfc3339(),
                pid,
                exited,
                syscalls,
                file_read_bytes: file.file_read_bytes,
                file_reads: file.file_reads,
            }))?;
        }
        Ok(())
    }

    fn sensor_record(&mut self, phase: &str) -> Result<(), AgentError> {
        let features = self.sensor.features().clone();
        let mut unavailable = BTreeMap::new();
        for (name, r) in [
            ("cgroup", &features.cgroup_programs),
            ("request_heads", &features.request_heads),
            ("tracepoint", &features.sock_tracepoints),
            ("syscalls", &features.syscall_tracepoints),
        ] {
            if let Err(e) = r {
                unavailable.insert(name.to_string(), e.clone());
            }
        }
        let mut drops: BTreeMap<String, u64> = self
            .sensor
            .drops()?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        drops.insert("decode_error".into(), self.summary.decode_errors);
        drops.insert("owner_unresolved".into(), self.conns.unresolved);
        drops.insert("conn_evicted".into(), self.conns.evicted);
        let record = SensorRecord {
            ts: now_rfc3339(),
            schema: SCHEMA_VERSION,
            phase: phase.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: kernel_release(),
            attached: self
                .sensor
                .attached_mechanisms()
                .into_iter()
                .map(String::from)
                .collect(),
            watched: self
                .watched
                .values()
                .map(|w| WatchRecord {
                    cgroup: w.group.cgroup.clone(),
                    pids: w.group.pids.clone(),
                    mechanism: w.decision.name().to_string(),
                    why: w.decision.why().to_string(),
                })
                .collect(),
            unavailable,
            drops,
            heads: self
                .requests
                .outcomes
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .chain([("damaged".to_string(), self.requests.damaged)])
                .collect(),
        };
        self.write(&Record::Sensor(record))
    }

    /// Final drain, a record for every connection still open, per-process accounting, and
    /// the stop record. The caller drops the sensor, which detaches everything.
    fn stop(&mut self, ring: &mut RingBuf<MapData>) -> Result<(), AgentError> {
        self.drain(ring)?;
        let now = monotonic_ns();
        for (cookie, stats) in self.sensor.connections()? {
            self.finish_request(cookie, &stats)?;
            let record = self.conns.from_map(cookie, &stats, now);
            self.summary.connections_reported += 1;
            self.write(&Record::Connection(record))?;
        }
        if self.opts.config.accounting.syscalls {
            let pids: Vec<u32> = self
                .watched
                .values()
                .flat_map(|w| w.group.pids.clone())
                .collect();
            self.process_records(&pids, false)?;
        }
        self.sensor_record("stop")
    }
}

/// Synapse's `-c` paths, relative ones resolved against Synapse's working directory (as
/// Synapse itself resolved them), not the sensor's.
fn absolute_configs(proc_root: &Path, pid: u32, paths: &[PathBuf]) -> Vec<PathBuf> {
    let cwd = std::fs::read_link(proc_root.join(pid.to_string()).join("cwd")).ok();
    paths
        .iter()
        .map(|p| match &cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p.clone(),
        })
        .collect()
}

/// Checks the operator's `--pid` and `--cgroup` before anything is created on disk, so a
/// typo gets its one-sentence error first.
fn check_targets(opts: &RunOptions, cgroup_mount: &Path) -> Result<(), AgentError> {
    for &pid in &opts.targets.pids {
        discover::describe_pid(&opts.proc_root, pid)?;
    }
    for arg in &opts.targets.cgroups {
        discover::resolve_cgroup_arg(cgroup_mount, arg)?;
    }
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The proc root used by default.
pub fn default_proc_root() -> &'static Path {
    Path::new("/proc")
}
