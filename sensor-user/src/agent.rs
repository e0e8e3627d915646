//! The agent: discovery, planning and the event loop, with shutdown passed in (so tests run
//! it in-process) and everything detached when it returns.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use sensor_common::{
    conn::{ConnStats, flags},
    drops::Drop,
    event::{TransferEvent, settings},
};
use tokio::io::{Interest, unix::AsyncFd};

mod health;
mod reload;
mod targets;

pub use reload::{Outcome as ReloadOutcome, merge as merge_reload};
use targets::check_targets;

use crate::{
    attribute::Connections,
    client_ip::{ClientIpError, TrustedProxies},
    config::Config,
    decode,
    detect::{Alert, Detector, Observation, Transfer},
    discover::{self, DiscoverError},
    identity::{FingerprintKey, IdentityError},
    load::{LoadError, Sensor},
    metrics::Metrics,
    output::{
        ConnectionRecord, JsonLines, ProcessRecord, Record, ReloadRecord, RequestRecord,
        SCHEMA_VERSION, SensorRecord, Sink, WatchRecord,
        webhook::{self, Webhook},
    },
    plan::{Decision, Group, PlanError},
    requests::{Attribution, Requests},
    syscalls,
    time::{KernelClock, monotonic_ns, now_rfc3339},
};

/// How often the ring buffer is drained without a wakeup while events flow: the most a
/// request head or a connection event waits then.
const DRAIN_MIN: Duration = Duration::from_millis(10);
/// The longest the timer backs off to when nothing came (events filling a quarter of the
/// ring, and single-transfer events, still wake the agent at once).
const DRAIN_MAX: Duration = Duration::from_millis(250);

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
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("the endpoint table is inconsistent (a bug, please report it): {0}")]
    EndpointTable(String),
    #[error("attribution.trusted_proxies: {0}")]
    TrustedProxies(#[from] ClientIpError),
    #[error("cannot start the webhook sender thread: {0}")]
    Webhook(#[source] std::io::Error),
    #[error("{0}")]
    WebhookUrl(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(
        "{key} = true needs {needs}, which this kernel does not offer ({why}); set `{key} = false` in the configuration, or run on a newer kernel"
    )]
    Unavailable {
        key: &'static str,
        needs: &'static str,
        why: String,
    },
}

/// Configurations to apply while running, in order (the binary sends one per SIGHUP), or
/// why the file could not be read (the running configuration stays; the `reload` record
/// says why).
pub type Reloads = tokio::sync::mpsc::UnboundedReceiver<Result<Config, String>>;

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
    detector: Detector,
    metrics: Arc<Metrics>,
    /// Where metrics are served.
    metrics_addr: Option<std::net::SocketAddr>,
    clock: KernelClock,
    /// `-c`/`--config-path` of the first watched Synapse process, for its `server_name`.
    synapse_config: Vec<PathBuf>,
    /// The listeners that configuration declares (`Agent::unseen_listeners` names those the
    /// sensor cannot see).
    synapse_listeners: Vec<discover::synapse_config::Listener>,
    cgroup_mount: PathBuf,
    watched: BTreeMap<String, Watched>,
    /// Processes watched by the tracepoint mechanism now.
    tp_pids: BTreeSet<u32>,
    summary: Summary,
    last_plan_error: Option<String>,
    /// Discovery found no homeserver at start (said once, at warning level): say so when
    /// it finds one.
    nothing_found: bool,
    /// Groups found but not watchable as asked, with why (after start: at start that stops
    /// the agent).
    unwatchable: BTreeMap<String, String>,
    /// The kernel's `ringbuf_full_close` count at the last sweep.
    close_drops_swept: u64,
    /// Watched processes that exited since the last health report.
    gone: Vec<u32>,
    webhook: Option<Webhook>,
    /// Alerts sent and lost by every webhook of this run.
    webhook_counters: Arc<webhook::Counters>,
    /// Keeps the kernel's BPF statistics on (`metrics.program_stats`).
    stats: Option<std::os::fd::OwnedFd>,
    /// What each token and address reached, kept on disk (`[ledger]`).
    ledger: crate::ledger::Ledger,
}

/// Runs the agent until `shutdown` completes or the duration elapses.
pub async fn run(
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, AgentError> {
    run_reloadable(opts, shutdown, None).await
}

/// The opt-in accounting keys ask for programs that older kernels refuse: say so at start,
/// by key, rather than failing at the first attach (or counting nothing).
fn check_opt_in_features(
    config: &Config,
    features: &crate::plan::Features,
) -> Result<(), AgentError> {
    const SOCK: &str = "the socket tracepoints sock:sock_send_length and sock:sock_recv_length (Linux 6.3 or later)";
    let sock_why = |e: &String| match crate::load::kernel_older_than(crate::load::SOCK_LENGTH_SINCE)
    {
        Some(release) => format!("this kernel is {release}: {e}"),
        None => e.clone(),
    };
    if config.accounting.call_counts
        && let Err(e) = &features.sock_tracepoints
    {
        return Err(AgentError::Unavailable {
            key: "accounting.call_counts",
            needs: SOCK,
            why: sock_why(e),
        });
    }
    if config.accounting.syscalls {
        if let Err(e) = &features.syscall_tracepoints {
            return Err(AgentError::Unavailable {
                key: "accounting.syscalls",
                needs: "the raw syscall tracepoints sys_enter and sys_exit",
                why: e.clone(),
            });
        }
        // File reads are told from socket reads by the receive tracepoint.
        if let Err(e) = &features.sock_tracepoints {
            return Err(AgentError::Unavailable {
                key: "accounting.syscalls",
                needs: SOCK,
                why: sock_why(e),
            });
        }
    }
    Ok(())
}

/// [`run`], applying each configuration received on `reloads` (see `agent/reload.rs` for
/// what changes live), and writing a `sensor` record with `phase: "reload"` for each.
pub async fn run_reloadable(
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
    mut reloads: Option<Reloads>,
) -> Result<Summary, AgentError> {
    tune_heap();
    let mut sensor = Sensor::load(&opts.config)?;
    release_freed_memory();
    check_opt_in_features(&opts.config, sensor.features())?;
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
    let metrics = Arc::new(Metrics::new());
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let (metrics_addr, metrics_task) = if opts.config.metrics.enabled {
        let addr = opts
            .config
            .metrics
            .listen
            .parse()
            .expect("validated with the configuration");
        let listener = crate::metrics::bind(addr).await?;
        let bound = listener.local_addr().ok();
        let task = tokio::spawn(crate::metrics::serve_listener(
            listener,
            metrics.clone(),
            async move {
                let _ = metrics_stopped.await;
            },
        ));
        (bound, Some(task))
    } else {
        (None, None)
    };
    let ledger = crate::ledger::Ledger::open(&opts.config.ledger)?;
    let mut agent = Agent {
        ledger,
        conns: Connections::new(
            opts.proc_root.clone(),
            clock,
            opts.config.accounting.call_counts,
        ),
        requests: Requests::default(),
        detector: Detector::new(opts.config.detect.clone()),
        metrics: metrics.clone(),
        metrics_addr,
        attribution,
        clock,
        synapse_config: Vec::new(),
        synapse_listeners: Vec::new(),
        opts,
        sensor,
        out,
        cgroup_mount,
        watched: BTreeMap::new(),
        tp_pids: BTreeSet::new(),
        summary: Summary::default(),
        last_plan_error: None,
        nothing_found: false,
        unwatchable: BTreeMap::new(),
        close_drops_swept: 0,
        gone: Vec::new(),
        webhook: None,
        webhook_counters: Arc::default(),
        stats: None,
    };
    agent.start_webhook()?;
    agent.program_stats();
    agent.set_transfer_threshold()?;
    if agent.opts.config.accounting.syscalls {
        agent.sensor.attach_syscalls(&syscalls::read_family())?;
    }
    // Explicit targets must all be watchable at start; discovery may find nothing yet.
    agent.rescan(true)?;
    agent.sensor_record("start")?;
    agent.flush()?;
    agent.report_start();

    let rescan_every = Duration::from_millis(agent.opts.config.discovery.rescan_ms);
    let mut rescan = tokio::time::interval(rescan_every);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    // Request heads and connection events do not wake the agent until they fill a quarter
    // of the ring (`lazy_wakeup`, sensor-ebpf/src/maps.rs): drain on a timer, every 10 ms
    // while events flow, backing off to 250 ms when none came (an idle agent must not wake
    // a hundred times a second: on a small machine that moves the homeserver's threads
    // around). Any wakeup brings the timer back to 10 ms.
    let mut drain_every = DRAIN_MIN;
    let drain_timer = tokio::time::sleep(drain_every);
    tokio::pin!(drain_timer);
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
                // A wakeup means traffic: events filled a quarter of the ring, or a
                // transfer crossed its threshold. Drain soon, not after a backed-off timer.
                drain_every = DRAIN_MIN;
                drain_timer.as_mut().reset(tokio::time::Instant::now() + drain_every);
            }
            _ = &mut drain_timer => {
                drain_every = if agent.drain(events.get_mut())? > 0 {
                    DRAIN_MIN
                } else {
                    (drain_every * 2).min(DRAIN_MAX)
                };
                drain_timer.as_mut().reset(tokio::time::Instant::now() + drain_every);
            }
            _ = rescan.tick() => agent.rescan(false)?,
            Some(reload) = next_reload(&mut reloads) => {
                let before = agent.opts.config.discovery.rescan_ms;
                match reload {
                    Ok(config) => agent.reload(config)?,
                    Err(why) => agent.reload_rejected(why)?,
                }
                if agent.opts.config.discovery.rescan_ms != before {
                    let every = Duration::from_millis(agent.opts.config.discovery.rescan_ms);
                    rescan = tokio::time::interval(every);
                    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
            }
            _ = sweep.tick() => {
                // One read of the drop counters serves both.
                let drops = agent.drop_totals()?;
                agent.sweep_closed(&drops)?;
                agent.housekeeping(drops)?;
            }
        }
        agent.flush()?;
    }
    agent.stop(events.get_mut())?;
    agent.flush()?;
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    Ok(agent.summary)
}

/// Heap policy for an agent whose big tables come and go (glibc only; musl, the static
/// builds' libc, has neither knob):
/// - One heap arena for all threads. glibc gives a new thread an arena of its own and keeps
///   what is freed there: the tables an owner scan builds on its own thread would stay in
///   that arena for nothing else to reuse. The agent's other threads (compaction, metrics)
///   allocate little, so they have nothing to gain from arenas of their own.
/// - A fixed mmap threshold of 256 KiB. By default glibc raises the threshold each time a
///   mapped block is freed (up to 32 MiB), after which tables of several MiB (an owner
///   scan's, a grown hash map's old buckets) come from the heap and stay resident once
///   freed; steady memory at 100,000 connections moved between 57 and 73 MiB from run to
///   run. A fixed threshold keeps every large block mapped, so freeing one returns it.
fn tune_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's policy for later allocations.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Gives the heap freed so far back to the system. Loading parses the kernel's BTF (several
/// MiB of type information, dropped once the programs are loaded); glibc keeps freed heap
/// for reuse, which would leave the idle agent's resident memory that much higher for its
/// whole life. (musl, the static builds' libc, has no `malloc_trim`: not measured there.)
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; no pointer is invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The next configuration to apply; never, without a reload channel (or once it closed).
async fn next_reload(reloads: &mut Option<Reloads>) -> Option<Result<Config, String>> {
    match reloads {
        Some(rx) => match rx.recv().await {
            Some(config) => Some(config),
            None => {
                *reloads = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

impl Agent {
    /// The kernel reports responses crossing `single_transfer.threshold_bytes` (0: none).
    fn set_transfer_threshold(&mut self) -> Result<(), AgentError> {
        let detect = &self.opts.config.detect;
        let threshold = if detect.enabled && detect.single_transfer.enabled {
            detect.single_transfer.threshold_bytes
        } else {
            0
        };
        self.sensor
            .set_setting(settings::TRANSFER_THRESHOLD, threshold)?;
        Ok(())
    }

    /// Starts the webhook of the configuration, if it has one; the previous one (reload)
    /// finishes its queue in the background.
    fn start_webhook(&mut self) -> Result<(), AgentError> {
        self.webhook = match &self.opts.config.output.webhook {
            Some(config) => {
                let url = webhook::resolve_url(config).map_err(AgentError::WebhookUrl)?;
                Some(
                    Webhook::start(config, url, self.webhook_counters.clone())
                        .map_err(AgentError::Webhook)?,
                )
            }
            None => None,
        };
        Ok(())
    }

    /// Turns the kernel's BPF statistics on or off as `metrics.program_stats` says.
    fn program_stats(&mut self) {
        let want = self.opts.config.metrics.program_stats;
        if !want {
            self.stats = None;
        } else if self.stats.is_none() {
            match crate::load::enable_run_time_stats() {
                Ok(fd) => self.stats = Some(fd),
                Err(e) => tracing::warn!(
                    "metrics.program_stats: the kernel refused to turn on BPF statistics \
                     ({e}); per-program run time is not exported"
                ),
            }
        }
    }

    /// Applies what can change live of `new` and reports the rest as needing a restart.
    fn reload(&mut self, new: Config) -> Result<(), AgentError> {
        // A webhook URL file that cannot be read rejects the whole reload, before anything
        // changes.
        if let Some(hook) = &new.output.webhook
            && new.output.webhook != self.opts.config.output.webhook
            && let Err(why) = webhook::resolve_url(hook)
        {
            return self.reload_rejected(why);
        }
        let (merged, outcome) = merge_reload(&self.opts.config, &new);
        let old = std::mem::replace(&mut self.opts.config, merged);
        if self.opts.config.detect != old.detect {
            self.detector.reload(self.opts.config.detect.clone());
            self.set_transfer_threshold()?;
        }
        let config = &self.opts.config;
        if config.attribution.trusted_proxies != old.attribution.trusted_proxies {
            self.attribution.trusted =
                TrustedProxies::try_from(config.attribution.trusted_proxies.as_slice())?;
        }
        if config.attribution.server_name.is_some() {
            self.attribution.server_name = config.attribution.server_name.clone();
        }
        let restart = self.ledger.reload(&self.opts.config.ledger);
        if !restart.is_empty() {
            tracing::warn!("{restart:?} changed: the ledger keeps its place until a restart");
        }
        let (webhook, stats) = (
            config.output.webhook != old.output.webhook,
            config.metrics.program_stats != old.metrics.program_stats,
        );
        if webhook {
            self.start_webhook()?;
        }
        if stats {
            self.program_stats();
        }
        if outcome.needs_restart.is_empty() {
            tracing::info!("configuration reloaded: changed {:?}", outcome.applied);
        } else {
            tracing::warn!(
                "configuration reloaded: changed {:?}; {:?} changed too but take effect only \
                 after a restart",
                outcome.applied,
                outcome.needs_restart
            );
        }
        self.reload_record(outcome)
    }

    /// The new configuration could not be read: everything stays as it runs.
    fn reload_rejected(&mut self, why: String) -> Result<(), AgentError> {
        tracing::error!("configuration not reloaded, the running one stays: {why}");
        let mut record = self.sensor_state("reload")?;
        record.reload = Some(ReloadRecord {
            applied: Vec::new(),
            needs_restart: Vec::new(),
            rejected: Some(why),
        });
        self.write(&Record::Sensor(record))
    }

    fn reload_record(&mut self, outcome: ReloadOutcome) -> Result<(), AgentError> {
        let mut record = self.sensor_state("reload")?;
        record.reload = Some(ReloadRecord {
            applied: outcome.applied.iter().map(|k| k.to_string()).collect(),
            needs_restart: outcome
                .needs_restart
                .iter()
                .map(|k| k.to_string())
                .collect(),
            rejected: None,
        });
        self.write(&Record::Sensor(record))
    }

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

    /// Reads every pending ring buffer record; returns how many there were.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<usize, AgentError> {
        let mut records = 0;
        // A socket-owner scan that ran on its own thread may be done.
        self.conns.poll_scan();
        while let Some(item) = ring.next() {
            let decoded = decode::event(&item);
            drop(item);
            records += 1;
            match decoded {
                Ok(decode::Event::Conn(ev)) => {
                    if ev.lifecycle == decode::Lifecycle::Close {
                        self.finish_request(ev.cookie, &ev.stats)?;
                    }
                    if let Some(record) = self.conns.on_event(&ev) {
                        self.summary.connections_reported += 1;
                        self.connection_record(record)?;
                    }
                }
                Ok(decode::Event::Head(chunk)) => {
                    let view = self.conns.view(chunk.cookie);
                    let record =
                        self.requests
                            .on_chunk(chunk, view, &self.attribution, &self.clock);
                    if let Some(record) = record {
                        self.finished_request(record)?;
                    }
                }
                Ok(decode::Event::Transfer(ev)) => self.transfer(&ev)?,
                Err(e) => {
                    self.summary.decode_errors += 1;
                    tracing::warn!("{e}");
                }
            }
        }
        Ok(records)
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
            Some(record) => self.finished_request(record),
            None => Ok(()),
        }
    }

    /// A connection record, counted in the metrics when the connection is over.
    fn connection_record(&mut self, record: ConnectionRecord) -> Result<(), AgentError> {
        if record.closed {
            let mechanism = match record.mechanism {
                decode::Mechanism::Cgroup => "cgroup",
                decode::Mechanism::Tracepoint => "tracepoint",
            };
            self.metrics
                .connection_closed(mechanism, record.bytes_in, record.bytes_out);
        }
        self.write(&Record::Connection(record))
    }

    /// A request's exchange is over: its record, then what the rules make of it.
    fn finished_request(&mut self, record: RequestRecord) -> Result<(), AgentError> {
        self.metrics.request(
            record.class.map_or("unparsed", |c| c.as_str()),
            record.bytes_in,
            record.bytes_out,
        );
        let alerts = self
            .detector
            .observe_request(now_ms(), &Observation::from(&record));
        let ts = crate::ledger::record_time_ms(&record.ts).unwrap_or_else(now_ms);
        self.ledger.observe(&record, ts);
        self.write(&Record::Request(record))?;
        self.alerts(alerts)
    }

    /// The kernel says a response crossed the single-transfer threshold while it runs.
    fn transfer(&mut self, ev: &TransferEvent) -> Result<(), AgentError> {
        let view = self.conns.view(ev.cookie);
        let request = self.requests.in_progress(ev.cookie);
        let t = Transfer {
            cookie: ev.cookie,
            pid: view.pid,
            local: view.local.map(|a| a.to_string()),
            peer: view.peer.map(|a| a.to_string()),
            bytes_out: ev.response_bytes,
            endpoint: request.as_ref().map(|r| r.endpoint),
            // Without the request's head (heads off, or a kernel without bpf_loop), the
            // connection's peer is the client when it is not a trusted proxy; written as
            // request records write it (an IPv4-mapped peer as its IPv4 address).
            client_ip: request
                .as_ref()
                .and_then(|r| r.client_ip.clone())
                .or_else(|| {
                    view.peer
                        .map(|p| p.ip().to_canonical())
                        .filter(|ip| !self.attribution.trusted.contains(*ip))
                        .map(|ip| ip.to_string())
                }),
            token: request.as_ref().and_then(|r| r.token),
            user: request.and_then(|r| r.user),
        };
        let alerts = self.detector.observe_transfer(now_ms(), &t);
        self.alerts(alerts)
    }

    /// Writes alert records (flushed at once: an alert must not wait in a buffer).
    fn alerts(&mut self, alerts: Vec<Alert>) -> Result<(), AgentError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        for a in alerts {
            tracing::warn!(rule = a.rule, "{}", a.summary);
            self.metrics.alert(a.rule);
            let record = a.to_record(now);
            if let Some(hook) = &self.webhook {
                hook.send(&record);
            }
            self.write(&Record::Alert(record))?;
        }
        self.flush()
    }

    /// Reports connections whose close event could not be sent (ring buffer full). Walking
    /// the map costs a syscall per entry, so it is done only after such a drop.
    fn sweep_closed(&mut self, drops: &BTreeMap<String, u64>) -> Result<(), AgentError> {
        let close_drops = drops.get(Drop::RingbufClose.name()).copied().unwrap_or(0);
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
                self.connection_record(record)?;
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

    /// Every drop counter, kernel and agent, by place.
    fn drop_totals(&self) -> Result<BTreeMap<String, u64>, AgentError> {
        let mut drops: BTreeMap<String, u64> = self
            .sensor
            .drops()?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        drops.insert("decode_error".into(), self.summary.decode_errors);
        drops.insert("owner_unresolved".into(), self.conns.unresolved);
        drops.insert("conn_evicted".into(), self.conns.evicted);
        drops.insert("ledger_lost".into(), self.ledger.stats().lost);
        let hook = &self.webhook_counters;
        let (failed, full) = (
            hook.failed.load(std::sync::atomic::Ordering::Relaxed),
            hook.queue_full.load(std::sync::atomic::Ordering::Relaxed),
        );
        if self.webhook.is_some() || failed + full > 0 {
            drops.insert("webhook_failed".into(), failed);
            drops.insert("webhook_queue_full".into(), full);
        }
        Ok(drops)
    }

    fn sensor_record(&mut self, phase: &str) -> Result<(), AgentError> {
        let record = self.sensor_state(phase)?;
        self.write(&Record::Sensor(record))
    }

    fn sensor_state(&mut self, phase: &str) -> Result<SensorRecord, AgentError> {
        let features = self.sensor.features().clone();
        let mut unavailable = BTreeMap::new();
        for (name, r) in [
            ("request_heads", &features.request_heads),
            ("tracepoint", &features.sock_tracepoints),
            ("syscalls", &features.syscall_tracepoints),
        ] {
            if let Err(e) = r {
                unavailable.insert(name.to_string(), e.clone());
            }
        }
        let drops = self.drop_totals()?;
        let record = SensorRecord {
            ts: now_rfc3339(),
            schema: SCHEMA_VERSION,
            phase: phase.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: crate::load::kernel_release(),
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
            programs: self
                .sensor
                .program_loads()
                .iter()
                .map(|(name, load)| (name.to_string(), load.clone()))
                .collect(),
            object: crate::load::ObjectBuild::embedded(),
            drops,
            metrics: self.metrics_addr.map(|a| a.to_string()),
            heads: self
                .requests
                .outcomes
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .chain([("damaged".to_string(), self.requests.damaged)])
                .collect(),
            reload: None,
            ledger: Some(self.ledger.stats()),
        };
        Ok(record)
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
            self.connection_record(record)?;
        }
        if self.opts.config.accounting.syscalls {
            let pids: Vec<u32> = self
                .watched
                .values()
                .flat_map(|w| w.group.pids.clone())
                .collect();
            self.process_records(&pids, false)?;
        }
        if let Err(e) = self.ledger.note_stop(now_ms()) {
            tracing::warn!("{e}");
        }
        if let Err(e) = self.ledger.flush() {
            tracing::warn!("{e}");
        }
        // Alerts still queued get one timeout's grace; what is left is counted as lost.
        if let Some(hook) = self.webhook.take() {
            let grace = Duration::from_millis(hook.config().timeout_ms);
            hook.stop(grace);
        }
        self.sensor_record("stop")
    }
}

/// Wall-clock milliseconds since the epoch, the detector's time.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The proc root used by default.
pub fn default_proc_root() -> &'static Path {
    Path::new("/proc")
}
