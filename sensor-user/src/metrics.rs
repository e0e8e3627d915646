//! Prometheus metrics: what the agent counts, in the OpenMetrics text format, served on
//! `GET /metrics` (loopback by default, [`DEFAULT_LISTEN`]).
//!
//! Every name starts with `homeserver_sensor_`; counters end in `_total`; bytes and seconds
//! are base units. The families:
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `homeserver_sensor_requests_total` | counter | `class` |
//! | `homeserver_sensor_request_bytes_total` | counter | `class`, `direction` (`in`, `out`) |
//! | `homeserver_sensor_request_heads_total` | counter | `outcome` |
//! | `homeserver_sensor_connections_closed_total` | counter | `mechanism` |
//! | `homeserver_sensor_connection_bytes_total` | counter | `direction` (`in`, `out`) |
//! | `homeserver_sensor_alerts_total` | counter | `rule` |
//! | `homeserver_sensor_events_dropped_total` | counter | `cause` |
//! | `homeserver_sensor_owner_scans_total` | counter | `thread` (`event_loop`, `own_thread`) |
//! | `homeserver_sensor_bpf_program_run_seconds_total` | counter | `program` |
//! | `homeserver_sensor_bpf_program_runs_total` | counter | `program` |
//! | `homeserver_sensor_watched_processes` | gauge | |
//! | `homeserver_sensor_tracked_connections` | gauge | |
//! | `homeserver_sensor_capability` | gauge | `capability` (1: the sensor has it for everything it watches) |
//! | `homeserver_sensor_bpf_program_verified_instructions` | gauge | `program` |
//! | `homeserver_sensor_build_info` | info | `version` |
//!
//! **Labels carry only values from small sets the agent defines** (endpoint classes, rule
//! names, mechanisms, drop causes, program names, head outcomes). Never an access token or
//! its fingerprint, a user, a client address, a room, a media ID or a path: each would make
//! one time series per value (a scraper's thousands of rooms become thousands of series, in
//! every Prometheus that scrapes the host and for as long as it keeps data), and would copy
//! what the JSON ledger guards (who read what) into a system with other readers and other
//! retention. Per-user and per-token questions are answered from the ledger. As a last
//! guard, a family that reaches [`MAX_SERIES_PER_FAMILY`] label values folds any new value
//! into `other`.

mod server;
mod totals;

#[cfg(test)]
mod tests;

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::{Registry, Unit},
};

pub use server::{bind, serve, serve_listener};

use totals::Totals;

/// Where metrics are served unless configured otherwise: loopback only, so that nothing
/// off the host can read them until an operator decides who may (a Prometheus on the same
/// host, or a reverse proxy with authentication in front).
///
/// The port: the Prometheus project's list of default exporter ports (its wiki, "Default
/// port allocations") has run out of free ports in 9100-9999, so every port there is some
/// exporter's. 9465 is listed for a GoCD (CI server) exporter marked work in progress, which
/// has no reason to run on a homeserver; it is none of the ports of the exporters a Matrix
/// host usually runs (node 9100, nginx 9113, PostgreSQL 9187, Synapse's own metrics
/// listener, commonly 9000 and up), and it is below Linux's ephemeral port range
/// (32768-60999), so an outgoing connection never holds it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

/// The most label sets one family takes before new label values are counted as `other`:
/// a guard against a caller passing an unbounded value (see the module documentation).
/// The largest set the agent uses, endpoint classes, has about twenty values.
pub const MAX_SERIES_PER_FAMILY: usize = 128;

/// The label value that stands for every value past [`MAX_SERIES_PER_FAMILY`].
pub const OVERFLOW_LABEL: &str = "other";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}; {hint}")]
    Bind {
        addr: SocketAddr,
        /// What to do about it, depending on the error.
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot use the metrics listener: {0}")]
    Listener(#[source] io::Error),
    #[error(
        "the metrics listener on {addr} failed: {source}; metrics are no longer served (restart the agent)"
    )]
    Accept {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl MetricsError {
    fn bind(addr: SocketAddr, source: io::Error) -> Self {
        let hint = match source.kind() {
            io::ErrorKind::AddrInUse => {
                "another process holds this port: stop it, or give the metrics listener another \
                 address (`[metrics] listen` in the configuration)"
            }
            io::ErrorKind::AddrNotAvailable => {
                "no interface of this host has that address: use 127.0.0.1 or an address of \
                 this host"
            }
            io::ErrorKind::PermissionDenied => {
                "ports below 1024 need CAP_NET_BIND_SERVICE: use a port above 1024"
            }
            _ => "check the metrics listen address in the configuration",
        };
        MetricsError::Bind { addr, hint, source }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassDirectionLabels {
    class: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MechanismLabels {
    mechanism: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapabilityLabels {
    capability: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

const IN: &str = "in";
const OUT: &str = "out";

/// The agent's metrics: counters it increments as records go out, gauges and kernel totals
/// it sets, and the registry that renders them. Cheap to update from any thread (atomics,
/// and a short lock for a label set seen for the first time); share it with an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Capped<ClassLabels>,
    request_bytes: Family<ClassDirectionLabels, Counter>,
    connections_closed: Capped<MechanismLabels>,
    connection_bytes: Family<DirectionLabels, Counter>,
    alerts: Capped<RuleLabels>,
    watched_processes: Gauge<u64, AtomicU64>,
    tracked_connections: Gauge<u64, AtomicU64>,
    capabilities: Family<CapabilityLabels, Gauge<u64, AtomicU64>>,
    verified_instructions: Family<ProgramLabels, Gauge<u64, AtomicU64>>,
    totals: Arc<Totals>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("homeserver_sensor");
        let requests = Capped::<ClassLabels>::default();
        registry.register(
            "requests",
            "HTTP requests to the watched homeserver, by endpoint class (\"unparsed\": heads \
             that could not be parsed)",
            requests.family.clone(),
        );
        let request_bytes = Family::<ClassDirectionLabels, Counter>::default();
        registry.register_with_unit(
            "request",
            "Bytes of HTTP requests: in, from the client (head and body); out, to the client \
             (the response)",
            Unit::Bytes,
            request_bytes.clone(),
        );
        let connections_closed = Capped::<MechanismLabels>::default();
        registry.register(
            "connections_closed",
            "TCP connections of watched processes that closed, by the mechanism that watched \
             them",
            connections_closed.family.clone(),
        );
        let connection_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register_with_unit(
            "connection",
            "Payload bytes of closed TCP connections of watched processes: in, received; out, \
             sent",
            Unit::Bytes,
            connection_bytes.clone(),
        );
        let alerts = Capped::<RuleLabels>::default();
        registry.register(
            "alerts",
            "Alerts raised, by detection rule",
            alerts.family.clone(),
        );
        let watched_processes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "watched_processes",
            "Homeserver processes watched now",
            watched_processes.clone(),
        );
        let tracked_connections = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "tracked_connections",
            "TCP connections of watched processes open and tracked now",
            tracked_connections.clone(),
        );
        let capabilities = Family::<CapabilityLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "capability",
            "1 when the sensor has this capability for every process it watches, 0 when it \
             runs without it (request_heads, socket_tracepoints, syscall_tracepoints, \
             every_homeserver_watched, every_listener_visible)",
            capabilities.clone(),
        );
        let verified_instructions = Family::<ProgramLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "bpf_program_verified_instructions",
            "Instructions the kernel's verifier processed to accept each loaded program (its \
             limit is 1,000,000; the sensor keeps every program under 200,000)",
            verified_instructions.clone(),
        );
        registry.register(
            "build",
            "The agent's version",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let totals = Arc::new(Totals::default());
        registry.register_collector(Box::new(Arc::clone(&totals)));
        Self {
            registry,
            requests,
            request_bytes,
            connections_closed,
            connection_bytes,
            alerts,
            watched_processes,
            tracked_connections,
            capabilities,
            verified_instructions,
            totals,
        }
    }

    /// A finished request: its endpoint class (`room_history`, `media_download`, `sync`, ...,
    /// or `unparsed`) and its bytes in and out. `class` must come from the agent's fixed set
    /// of classes, never from the request itself.
    pub fn request(&self, class: &str, bytes_in: u64, bytes_out: u64) {
        let labels = self.requests.admit(
            ClassLabels {
                class: class.into(),
            },
            || ClassLabels {
                class: OVERFLOW_LABEL.into(),
            },
        );
        self.requests.family.get_or_create(&labels).inc();
        let class = labels.class;
        for (direction, bytes) in [(IN, bytes_in), (OUT, bytes_out)] {
            let labels = ClassDirectionLabels {
                class: class.clone(),
                direction,
            };
            self.request_bytes.get_or_create(&labels).inc_by(bytes);
        }
    }

    /// An alert raised by detection rule `rule` (the rule's name, not anything it matched).
    pub fn alert(&self, rule: &str) {
        let labels = self
            .alerts
            .admit(RuleLabels { rule: rule.into() }, || RuleLabels {
                rule: OVERFLOW_LABEL.into(),
            });
        self.alerts.family.get_or_create(&labels).inc();
    }

    /// A closed connection, with the mechanism that watched it (`cgroup`, `tracepoint`) and
    /// its payload bytes.
    pub fn connection_closed(&self, mechanism: &str, bytes_in: u64, bytes_out: u64) {
        let labels = self.connections_closed.admit(
            MechanismLabels {
                mechanism: mechanism.into(),
            },
            || MechanismLabels {
                mechanism: OVERFLOW_LABEL.into(),
            },
        );
        self.connections_closed.family.get_or_create(&labels).inc();
        for (direction, bytes) in [(IN, bytes_in), (OUT, bytes_out)] {
            self.connection_bytes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(bytes);
        }
    }

    pub fn set_watched_processes(&self, n: u64) {
        self.watched_processes.set(n);
    }

    pub fn set_tracked_connections(&self, n: u64) {
        self.tracked_connections.set(n);
    }

    /// Which capabilities the sensor has now (fixed names the agent defines).
    pub fn set_capabilities(&self, capabilities: &[(&'static str, bool)]) {
        for &(capability, on) in capabilities {
            self.capabilities
                .get_or_create(&CapabilityLabels { capability })
                .set(u64::from(on));
        }
    }

    /// The verifier's instruction count of each program loaded at start.
    pub fn set_verified_instructions(&self, programs: &[(&'static str, u32)]) {
        for &(program, insns) in programs {
            self.verified_instructions
                .get_or_create(&ProgramLabels { program })
                .set(u64::from(insns));
        }
    }

    /// Events dropped, by cause, as the absolute totals the kernel and the agent keep (they
    /// only grow while the agent runs). Exported as the counter
    /// `homeserver_sensor_events_dropped_total{cause}`. A cause missing from a later call
    /// keeps its last total.
    pub fn set_drops(&self, totals: &[(String, u64)]) {
        self.totals.set_drops(totals);
    }

    /// Scans of /proc for connection owners, absolute totals by where they ran:
    /// `homeserver_sensor_owner_scans_total{thread}` (`event_loop`, `own_thread`).
    pub fn set_owner_scans(&self, on_loop: u64, own_thread: u64) {
        self.totals.set_owner_scans(&[
            ("event_loop".to_string(), on_loop),
            ("own_thread".to_string(), own_thread),
        ]);
    }

    /// Per-program BPF run time (nanoseconds) and run count, absolute totals from the
    /// kernel (`kernel.bpf_stats_enabled`), for the programs that have them:
    /// `homeserver_sensor_bpf_program_run_seconds_total{program}` and
    /// `homeserver_sensor_bpf_program_runs_total{program}`. A program missing from a later
    /// call keeps its last totals.
    pub fn set_program_stats(&self, stats: &[(String, u64, u64)]) {
        self.totals.set_program_stats(stats);
    }

    /// Request heads by parse outcome (`parsed`, `incomplete`, `cut`, `too_many_headers`,
    /// `malformed`), absolute totals: `homeserver_sensor_request_heads_total{outcome}`.
    pub fn set_head_outcomes(&self, totals: &[(String, u64)]) {
        self.totals.set_head_outcomes(totals);
    }

    /// The OpenMetrics text exposition of every metric, ending in `# EOF`. Families with no
    /// value yet (no request of any class, say) are left out.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail, and neither can our collector: an error here
        // would be a bug in an encoder.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// A counter family with at most [`MAX_SERIES_PER_FAMILY`] label sets of its own.
#[derive(Debug)]
struct Capped<S> {
    family: Family<S, Counter>,
    /// Label sets admitted so far (a concurrent first use of one set may count it twice,
    /// which only lowers the cap a little).
    admitted: AtomicUsize,
}

impl<S: Clone + std::hash::Hash + Eq> Default for Capped<S> {
    fn default() -> Self {
        Self {
            family: Family::default(),
            admitted: AtomicUsize::new(0),
        }
    }
}

impl<S: Clone + std::hash::Hash + Eq> Capped<S> {
    /// `labels` if the family has them already or has room for them, else `overflow()`.
    fn admit(&self, labels: S, overflow: impl FnOnce() -> S) -> S {
        if self.family.get(&labels).is_some() {
            return labels;
        }
        if self.admitted.fetch_add(1, Ordering::Relaxed) < MAX_SERIES_PER_FAMILY {
            labels
        } else {
            self.admitted.fetch_sub(1, Ordering::Relaxed);
            overflow()
        }
    }
}
