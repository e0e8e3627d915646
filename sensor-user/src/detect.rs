//! Detection: finished requests, big transfers and the sensor's own health become alerts
//! that say "this token (this user), from this address, is pulling data no person pulls",
//! and nothing about normal users.
//!
//! [`Detector`] is pure and deterministic: no I/O, no clock. Every input carries its time
//! as milliseconds since the Unix epoch (`now_ms`, wall clock). The detector's clock is the
//! latest `now_ms` it has been given; windows end there. Inputs may come a little out of
//! order (requests finish out of order): an event counts in every window it still falls in.
//! The clock given should not jump back: `time::KernelClock`, which maps kernel timestamps
//! with one fixed offset, fits; a request's `ts` or its completion time both work.
//!
//! # Rules
//! Defaults and their reasoning are documented in [`config`](DetectConfig).
//! - `single_transfer`: one response (or connection) over `single_transfer.threshold_bytes`.
//! - `volume`: bytes out per token and per client address, over several windows.
//! - `breadth.*` per token: distinct rooms read (`rooms_read`: history, members, state),
//!   distinct rooms joined (`rooms_joined`), distinct media (`media`), user-directory
//!   searches and distinct profiles (`directory`), room-directory requests
//!   (`room_directory`), full-state or initial syncs (`full_syncs`).
//! - `tokenless_media`: distinct media fetched without a token, per client address.
//! - `admin_api.address`: an admin call from outside `admin_api.allow` (or from an unknown
//!   address); `admin_api.new_token`: the first admin call of a token.
//! - `sensor_health`: drop counters rose, a program detached, a watched process went away.
//!
//! # Alerts
//! A windowed rule fires for a (rule, subject, window) when the value reaches the
//! threshold, then not again until `realert_s` has passed or the value has doubled since
//! the last alert (escalation), whichever comes first. Subjects are a token (the alert
//! also names its user and latest address) or a client address. Windows and their memory
//! bounds are described in `detect/window.rs`; at `max_items` a distinct count saturates,
//! and the alert says "at least" and `saturated: true`; at `max_subjects` the least recently
//! active subjects are forgotten (see [`Detector::evicted_subjects`]).
//!
//! Severity: `warning` at the threshold and `critical` from four times it (volume,
//! breadth, tokenless media, single transfer); `admin_api.address` is `critical`;
//! `admin_api.new_token` is `info` from an allowed address, else `warning`; health alerts
//! are `warning` for drops and gone processes, `critical` for a detached program.
//!
//! `single_transfer` is deduplicated per connection (socket cookie): the kernel's report
//! while the response runs and the finished request make one alert, or two when the final
//! size is at least double the reported one.

mod alert;
mod config;
/// Sizes in configuration files: bytes, or digits and a unit (`"512 MiB"`, `"2 GB"`).
pub(crate) use config::size;
mod events;
mod rules;
mod subjects;
#[cfg(test)]
mod tests;
mod window;

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::client_ip::TrustedProxies;
use crate::endpoint::{Class, MediaRef};
use crate::identity::Fingerprint;
use crate::output::RequestRecord;

pub use config::{
    AdminApi, Breadth, ByteLimit, DetectConfig, DetectConfigError, Directory, FullSyncs, Limit,
    MAX_LIMITS, MAX_WINDOW_S, Media, RoomDirectory, RoomsJoined, RoomsRead, RuleDefaults,
    SensorHealth, SingleTransfer, TokenlessMedia, Volume, Windowed,
};

/// One finished request, as the rules need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The connection's socket cookie (dedups `single_transfer` with [`Transfer`]).
    pub cookie: u64,
    pub client_ip: Option<String>,
    pub token: Option<Fingerprint>,
    pub user: Option<String>,
    /// The endpoint's stable name (`client.messages`, ...).
    pub endpoint: &'static str,
    pub class: Option<Class>,
    pub room: Option<String>,
    pub media: Option<MediaRef>,
    pub target_user: Option<String>,
    pub full_state: Option<bool>,
    pub since: Option<bool>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Everything but the time: `RequestRecord::ts` is text; pass its time as `now_ms`.
impl From<&RequestRecord> for Observation {
    fn from(r: &RequestRecord) -> Self {
        let media = match (&r.media_server, &r.media_id) {
            (Some(server), Some(media_id)) => Some(MediaRef {
                server: server.clone(),
                media_id: media_id.clone(),
            }),
            _ => None,
        };
        Observation {
            cookie: r.cookie,
            client_ip: r.client_ip.clone(),
            token: r.token,
            user: r.user.clone(),
            endpoint: r.endpoint,
            class: r.class,
            room: r.room.clone(),
            media,
            target_user: r.target_user.clone(),
            full_state: r.full_state,
            since: r.since,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
        }
    }
}

/// A connection whose bytes out crossed the single-transfer threshold, reported by the
/// kernel while the transfer runs. Not added to `volume` (the finished request is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    pub cookie: u64,
    pub pid: Option<u32>,
    pub local: Option<String>,
    pub peer: Option<String>,
    /// Bytes sent so far.
    pub bytes_out: u64,
    /// The request in progress on the connection, when known.
    pub endpoint: Option<&'static str>,
    pub client_ip: Option<String>,
    pub token: Option<Fingerprint>,
    pub user: Option<String>,
}

/// The sensor's own state, as last read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Cumulative drop counters by place (as in the `sensor` record's `drops`).
    pub drops: BTreeMap<String, u64>,
    /// Programs found detached since the last report, as `type/name`.
    pub detached: Vec<String>,
    /// Watched processes that went away since the last report.
    pub gone: Vec<u32>,
    /// What the sensor runs without now (request heads refused and optional, a homeserver
    /// it cannot watch as asked, a listener it cannot read), by capability.
    pub blind: Vec<Blind>,
}

/// Something the sensor cannot see, for as long as it lasts: a `sensor_health` alert at
/// once, then again every re-alert interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blind {
    /// What is missing, a short fixed name (`request_heads`, `unwatchable`, `listener`),
    /// with what it is about after a colon where there are several (`listener:/run/s.sock`).
    pub capability: String,
    pub severity: Severity,
    /// What is missing and why, in a sentence.
    pub why: String,
}

#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// Who an alert is about; any part may be unknown.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Subject {
    pub user: Option<String>,
    pub token: Option<Fingerprint>,
    pub client_ip: Option<String>,
}

/// One item (room, media as `mxc://server/id`, user) in an alert's evidence.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TopItem {
    pub item: String,
    pub requests: u64,
    pub bytes_out: u64,
}

/// The connection of a `single_transfer` alert.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ConnectionEvidence {
    pub cookie: u64,
    pub pid: Option<u32>,
    pub local: Option<String>,
    pub peer: Option<String>,
}

/// What a `sensor_health` alert is about.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "issue", rename_all = "snake_case")]
pub enum HealthIssue {
    /// `lost` more were dropped at `place` (`total` since start).
    Drops {
        place: String,
        lost: u64,
        total: u64,
    },
    Detached {
        program: String,
    },
    ProcessGone {
        pid: u32,
    },
    /// The sensor runs without `capability` (see [`Blind`]).
    Unavailable {
        capability: String,
        why: String,
    },
}

/// Why an alert fired.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Evidence {
    /// Requests counted in the window.
    pub requests: u64,
    /// Bytes sent for them.
    pub bytes_out: u64,
    /// The distinct count hit `max_items`: `observed` is a lower bound.
    pub saturated: bool,
    /// Up to 5 items (rooms, media, users), biggest first by bytes, then requests. For
    /// `volume`, drawn from the subject's distinct windows.
    pub top: Vec<TopItem>,
    /// Token alerts: the client addresses it used in the window, most recent first (≤ 5).
    pub addresses: Vec<String>,
    /// The endpoint of the request that raised the alert.
    pub endpoint: Option<&'static str>,
    pub connection: Option<ConnectionEvidence>,
    pub health: Option<HealthIssue>,
}

/// One alert. Times are milliseconds since the epoch; see [`Alert::to_record`].
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Alert {
    /// `single_transfer`, `volume`, `breadth.rooms_read`, `breadth.rooms_joined`,
    /// `breadth.media`, `breadth.directory`, `breadth.room_directory`, `breadth.full_syncs`,
    /// `tokenless_media`, `admin_api.address`, `admin_api.new_token`, `sensor_health`.
    pub rule: &'static str,
    pub severity: Severity,
    pub subject: Subject,
    /// The window, in seconds (0 for rules without one).
    pub window_s: u64,
    pub observed: u64,
    pub threshold: u64,
    /// The earliest and latest request still counted in the window.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub evidence: Evidence,
    /// One sentence for a human.
    pub summary: String,
}

/// An alert as an output record: the agent wraps it as `kind: "alert"` (e.g. an
/// `output::Record::Alert` variant), with `ts` the time it was raised.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertRecord {
    pub ts: String,
    pub rule: &'static str,
    pub severity: Severity,
    pub subject: Subject,
    pub window_s: u64,
    pub observed: u64,
    pub threshold: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub evidence: Evidence,
    pub summary: String,
}

impl Alert {
    /// The record for this alert, raised at `now_ms`, with RFC 3339 times.
    pub fn to_record(&self, now_ms: u64) -> AlertRecord {
        let rfc = |ms: u64| {
            let ns = i128::from(ms) * 1_000_000;
            let t = ::time::OffsetDateTime::from_unix_timestamp_nanos(ns)
                .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
            crate::time::rfc3339_ms(t)
        };
        AlertRecord {
            ts: rfc(now_ms),
            rule: self.rule,
            severity: self.severity,
            subject: self.subject.clone(),
            window_s: self.window_s,
            observed: self.observed,
            threshold: self.threshold,
            first_seen: rfc(self.first_seen_ms),
            last_seen: rfc(self.last_seen_ms),
            evidence: self.evidence.clone(),
            summary: self.summary.clone(),
        }
    }
}

/// The detection engine. Feed it requests, transfers and health reports; call
/// [`expire`](Self::expire) about once a second.
pub struct Detector {
    config: DetectConfig,
    /// `admin_api.allow`, parsed (entries that do not parse are left out: `validate`
    /// rejects them).
    admin_allow: TrustedProxies,
    exempt: HashSet<String>,
    subjects: subjects::Subjects,
    events: events::Events,
    /// The latest time given: windows end here.
    clock_ms: u64,
    /// Numbers user-directory searches, each of which counts as a distinct item.
    searches: u64,
}

impl Detector {
    /// A detector with `config`, which should have passed [`DetectConfig::validate`].
    pub fn new(config: DetectConfig) -> Self {
        let mut detector = Detector {
            config: DetectConfig::default(),
            admin_allow: TrustedProxies::none(),
            exempt: HashSet::new(),
            subjects: subjects::Subjects::default(),
            events: events::Events::default(),
            clock_ms: 0,
            searches: 0,
        };
        detector.reload(config);
        detector
    }

    /// Replaces the configuration (SIGHUP) and keeps the state: windows whose rule and
    /// length are unchanged keep counting, new ones start empty, removed ones are dropped;
    /// dedup state and the first-seen admin tokens are kept.
    pub fn reload(&mut self, config: DetectConfig) {
        let nets: Vec<ipnet::IpNet> = config
            .admin_api
            .allow
            .iter()
            .filter_map(|e| TrustedProxies::try_from(std::slice::from_ref(e)).ok())
            .flat_map(|p| p.networks().to_vec())
            .collect();
        self.admin_allow = TrustedProxies::new(nets);
        self.exempt = config.exempt_users.iter().cloned().collect();
        self.subjects.reconfigure(&config);
        self.events.reconfigure(&config.admin_api);
        self.config = config;
    }

    /// One finished request at `now_ms`; returns the alerts it raises.
    pub fn observe_request(&mut self, now_ms: u64, req: &Observation) -> Vec<Alert> {
        self.clock_ms = self.clock_ms.max(now_ms);
        if !self.config.enabled {
            return Vec::new();
        }
        rules::observe(self, now_ms, req)
    }

    /// A connection crossed the single-transfer threshold (fires `single_transfer`).
    pub fn observe_transfer(&mut self, now_ms: u64, t: &Transfer) -> Vec<Alert> {
        self.clock_ms = self.clock_ms.max(now_ms);
        if !self.config.enabled || !self.config.single_transfer.enabled {
            return Vec::new();
        }
        let threshold = self.config.single_transfer.threshold_bytes;
        let realert_ms = self.config.realert_s.saturating_mul(1000);
        self.events
            .transfer(self.clock_ms, realert_ms, threshold, t)
            .into_iter()
            .collect()
    }

    /// The sensor's health (fires `sensor_health`).
    pub fn observe_health(&mut self, now_ms: u64, h: &Health) -> Vec<Alert> {
        self.clock_ms = self.clock_ms.max(now_ms);
        if !self.config.enabled || !self.config.sensor_health.enabled {
            return Vec::new();
        }
        let realert_ms = self.config.realert_s.saturating_mul(1000);
        self.events.health(self.clock_ms, realert_ms, h)
    }

    /// Forgets what has left every window, and subjects left with nothing to remember.
    pub fn expire(&mut self, now_ms: u64) {
        self.clock_ms = self.clock_ms.max(now_ms);
        let realert_ms = self.config.realert_s.saturating_mul(1000);
        self.subjects.expire(self.clock_ms, realert_ms);
        self.events.expire(self.clock_ms, realert_ms);
    }

    /// The configuration in force (the agent writes `single_transfer` to the kernel).
    pub fn config(&self) -> &DetectConfig {
        &self.config
    }

    /// Tokens and client addresses with state.
    pub fn tracked_subjects(&self) -> usize {
        self.subjects.len()
    }

    /// Subjects forgotten early because `max_subjects` was reached (for the metrics).
    pub fn evicted_subjects(&self) -> u64 {
        self.subjects.evicted()
    }
}
