//! The open ledger: the lines pending for the next flush, what the agent knows of each
//! segment, and the writing, retention and compaction the module documentation describes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::thread::JoinHandle;

use super::line::{self, Line, NONE};
use super::segment::{self, Compacted, HOUR_MS};
use super::{
    EARLY_FLUSH_REQUESTS, LedgerConfig, LedgerError, LedgerStats, MAX_PENDING_REQUESTS, coverage,
};
use crate::identity::Fingerprint;
use crate::output::RequestRecord;

const DAY_MS: u64 = 24 * HOUR_MS;

/// A closed hour is compacted once nothing was appended to it for this long (10 min):
/// requests that finish shortly after the hour do not make it compacted twice.
const QUIET_MS: u64 = 10 * 60 * 1000;

/// After a compaction fails, the hour is tried again after this long (1 h).
const COMPACT_RETRY_MS: u64 = HOUR_MS;

/// The pending lines of one hour.
#[derive(Default)]
pub(super) struct Pending {
    tokens: HashMap<Fingerprint, Line>,
    addresses: HashMap<String, Line>,
    requests: u64,
}

/// What the agent knows of one segment file.
#[derive(Debug, Default)]
pub(super) struct Segment {
    pub(super) bytes: u64,
    /// Its header says compacted (an append turns it off).
    pub(super) compacted: bool,
    /// This process has looked at its end and header.
    pub(super) checked: bool,
    pub(super) last_append_ms: u64,
    /// Do not try to compact it before this time (after a failure).
    pub(super) retry_after_ms: u64,
}

/// Why a segment is deleted.
#[derive(Clone, Copy)]
enum Prune {
    Age,
    Size,
}

impl Prune {
    fn reason(self) -> &'static str {
        match self {
            Prune::Age => "older than ledger.retention_days",
            Prune::Size => "the ledger is over ledger.max_bytes",
        }
    }
}

pub(super) struct Compaction {
    hour: u64,
    handle: JoinHandle<io::Result<Compacted>>,
}

/// The open ledger's state.
pub(super) struct Inner {
    pub(super) config: LedgerConfig,
    /// Holds the `flock` on `<dir>/.lock` while open.
    pub(super) _lock: File,
    pub(super) pending: BTreeMap<u64, Pending>,
    pub(super) pending_requests: u64,
    pub(super) segments: BTreeMap<u64, Segment>,
    pub(super) compacting: Option<Compaction>,
    /// When the agent ran and whether it saw requests (`coverage.jsonl`).
    pub(super) coverage: coverage::Writer,
    /// The latest time given to `tick`.
    pub(super) clock_ms: u64,
    pub(super) last_flush_ms: Option<u64>,
    pub(super) stats: LedgerStats,
}

impl Inner {
    pub(super) fn observe(&mut self, req: &RequestRecord, ts_ms: u64) {
        if req.token.is_none() && req.client_ip.is_none() {
            self.stats.unattributed += 1;
            return;
        }
        let retention_ms = u64::from(self.config.retention_days) * DAY_MS;
        if ts_ms.saturating_add(retention_ms) < self.clock_ms {
            self.stats.stale += 1;
            return;
        }
        if self.pending_requests >= MAX_PENDING_REQUESTS {
            self.stats.lost += 1;
            return;
        }
        let (hour, t) = (ts_ms / HOUR_MS, ts_ms % HOUR_MS);
        let items = line::items_of(req);
        let pending = self.pending.entry(hour).or_default();
        let mut left_out = 0;
        if let Some(token) = req.token {
            let peer = req.client_ip.as_deref().unwrap_or(NONE);
            let line = pending
                .tokens
                .entry(token)
                .or_insert_with(|| Line::for_token(token));
            left_out += line.record(req, t, &items, peer);
        }
        if let Some(ip) = &req.client_ip {
            if !pending.addresses.contains_key(ip.as_str()) {
                pending.addresses.insert(ip.clone(), Line::for_address(ip));
            }
            let peer = req.token.map(|t| t.text());
            if let Some(line) = pending.addresses.get_mut(ip.as_str()) {
                left_out += line.record(req, t, &items, peer.as_ref().map_or(NONE, |p| p.as_str()));
            }
        }
        pending.requests += 1;
        self.pending_requests += 1;
        self.stats.requests += 1;
        self.stats.items_over_cap += left_out;
    }

    pub(super) fn tick(&mut self, now_ms: u64) -> Result<(), LedgerError> {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.collect_compaction(false);
        let flush_ms = self.config.flush_s.saturating_mul(1000);
        // A wall clock set back also makes a flush due, rather than none for that long; so
        // does a busy second that left many requests pending.
        let due = self.pending_requests >= EARLY_FLUSH_REQUESTS
            || self
                .last_flush_ms
                .is_none_or(|last| now_ms < last || now_ms >= last.saturating_add(flush_ms));
        let mut result = Ok(());
        if due {
            let hold = self.compacting.as_ref().map(|c| c.hour);
            result = self.flush(hold);
            self.last_flush_ms = Some(now_ms);
        }
        let pruned = self.prune(self.clock_ms);
        let horizon = self
            .clock_ms
            .saturating_sub(u64::from(self.config.retention_days) * DAY_MS);
        let pruned = pruned.and(self.prune_coverage(horizon));
        self.start_compaction(self.clock_ms);
        result.and(pruned)
    }

    /// Counts what a coverage append did, and names the file in its error.
    pub(super) fn coverage_written(
        &mut self,
        appended: io::Result<coverage::writer::Appended>,
    ) -> Result<(), LedgerError> {
        match appended {
            Ok(done) => {
                if done.torn {
                    self.stats.torn_lines += 1;
                    tracing::warn!(log = %self.coverage.path().display(),
                        "ledger: a partial coverage record (a crash during a write) was \
                         ended; reports skip it and count it");
                }
                Ok(())
            }
            Err(source) => {
                self.stats.write_errors += 1;
                Err(LedgerError::Coverage {
                    path: self.coverage.path(),
                    source,
                })
            }
        }
    }

    /// Drops the coverage records of periods that ended before `horizon_ms` (the age
    /// retention: a blind period has no segments, so the oldest segment is no bound).
    fn prune_coverage(&mut self, horizon_ms: u64) -> Result<(), LedgerError> {
        match self.coverage.prune(horizon_ms) {
            Ok(0) => Ok(()),
            Ok(dropped) => {
                tracing::info!(
                    dropped,
                    "ledger: dropped coverage records older than \
                    ledger.retention_days"
                );
                Ok(())
            }
            Err(source) => {
                self.stats.write_errors += 1;
                Err(LedgerError::CoveragePrune {
                    path: self.coverage.path(),
                    source,
                })
            }
        }
    }

    /// Appends the pending lines of every hour but `hold` (being compacted).
    pub(super) fn flush(&mut self, hold: Option<u64>) -> Result<(), LedgerError> {
        let hours: Vec<u64> = self
            .pending
            .keys()
            .copied()
            .filter(|&h| Some(h) != hold)
            .collect();
        let mut result = Ok(());
        for hour in hours {
            if let Err(e) = self.write_hour(hour)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }

    fn write_hour(&mut self, hour: u64) -> Result<(), LedgerError> {
        let Some(pending) = self.pending.get(&hour) else {
            return Ok(());
        };
        let mut body = Vec::new();
        for line in pending.tokens.values().chain(pending.addresses.values()) {
            // Maps with string keys and plain numbers: serialising cannot fail.
            if serde_json::to_writer(&mut body, line).is_ok() {
                body.push(b'\n');
            }
        }
        let requests = pending.requests;
        let dir = &self.config.dir;
        let path = dir.join(segment::name(hour));
        let seg = self.segments.entry(hour).or_default();
        match segment::append(dir, hour, &body, !seg.checked, seg.compacted) {
            Ok(done) => {
                seg.bytes = done.len;
                seg.checked = true;
                seg.compacted = false;
                seg.last_append_ms = self.clock_ms;
                if done.torn {
                    self.stats.torn_lines += 1;
                    tracing::warn!(segment = %path.display(),
                        "ledger: a partial line (a crash during a write) was ended; reports \
                         skip it and count it");
                }
                self.pending.remove(&hour);
                self.pending_requests -= requests;
                Ok(())
            }
            Err(e) => {
                self.stats.write_errors += 1;
                if e.rolled_back {
                    return Err(LedgerError::Write {
                        path,
                        source: e.source,
                    });
                }
                self.pending.remove(&hour);
                self.pending_requests -= requests;
                self.stats.lost += requests;
                Err(LedgerError::WriteLost {
                    path,
                    source: e.source,
                    requests,
                })
            }
        }
    }

    /// Deletes segments past the retention, then the oldest while over `max_bytes`.
    fn prune(&mut self, now_ms: u64) -> Result<(), LedgerError> {
        let busy = self.compacting.as_ref().map(|c| c.hour);
        let horizon = now_ms.saturating_sub(u64::from(self.config.retention_days) * DAY_MS);
        let old: Vec<u64> = self
            .segments
            .keys()
            .copied()
            .filter(|&h| (h + 1) * HOUR_MS <= horizon && Some(h) != busy)
            .collect();
        let mut result = Ok(());
        for hour in old {
            let r = self.delete(hour, Prune::Age);
            result = result.and(r);
        }
        let mut total: u64 = self.segments.values().map(|s| s.bytes).sum();
        let current = now_ms / HOUR_MS;
        while total > self.config.max_bytes {
            let Some(hour) = self
                .segments
                .keys()
                .copied()
                .find(|&h| h + 1 < current && Some(h) != busy)
            else {
                break;
            };
            total -= self.segments.get(&hour).map_or(0, |s| s.bytes);
            let r = self.delete(hour, Prune::Size);
            result = result.and(r);
        }
        result
    }

    fn delete(&mut self, hour: u64, why: Prune) -> Result<(), LedgerError> {
        let Some(seg) = self.segments.remove(&hour) else {
            return Ok(());
        };
        let path = self.config.dir.join(segment::name(hour));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                // Forgotten until the next start rather than tried every second.
                self.stats.write_errors += 1;
                let why = why.reason();
                return Err(LedgerError::Prune { path, why, source });
            }
        }
        match why {
            Prune::Age => self.stats.pruned_segments_age += 1,
            Prune::Size => self.stats.pruned_segments_size += 1,
        }
        self.stats.pruned_bytes += seg.bytes;
        tracing::info!(segment = %path.display(), bytes = seg.bytes,
            "ledger: deleted a segment: {}", why.reason());
        Ok(())
    }

    /// Starts compacting the oldest closed hour that needs it, if none is running.
    fn start_compaction(&mut self, now_ms: u64) {
        if self.compacting.is_some() {
            return;
        }
        let found = self.segments.iter_mut().find(|(h, s)| {
            !s.compacted
                && now_ms >= (*h + 1) * HOUR_MS + QUIET_MS
                && now_ms.saturating_sub(s.last_append_ms) >= QUIET_MS
                && now_ms >= s.retry_after_ms
        });
        let Some((&hour, seg)) = found else {
            return;
        };
        if self.pending.contains_key(&hour) {
            return;
        }
        let dir = self.config.dir.clone();
        match std::thread::Builder::new()
            .name("ledger-compact".into())
            .spawn(move || segment::compact(&dir, hour))
        {
            Ok(handle) => self.compacting = Some(Compaction { hour, handle }),
            Err(e) => {
                seg.retry_after_ms = now_ms + COMPACT_RETRY_MS;
                self.stats.compaction_errors += 1;
                tracing::warn!(error = %e, "ledger: cannot start a compaction thread");
            }
        }
    }

    /// Collects a finished compaction (or waits for it with `wait`).
    pub(super) fn collect_compaction(&mut self, wait: bool) {
        match &self.compacting {
            Some(c) if wait || c.handle.is_finished() => {}
            _ => return,
        }
        let Some(Compaction { hour, handle }) = self.compacting.take() else {
            return;
        };
        let outcome = handle
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the compaction thread panicked")));
        let seg = self.segments.entry(hour).or_default();
        match outcome {
            Ok(done) => {
                seg.bytes = done.bytes_after;
                seg.compacted = true;
                seg.checked = true;
                self.stats.compactions += 1;
                self.stats.items_over_cap += done.folded;
                tracing::debug!(
                    segment = segment::name(hour),
                    before = done.bytes_before,
                    after = done.bytes_after,
                    unreadable = done.unreadable,
                    "ledger: compacted an hour"
                );
            }
            Err(e) => {
                seg.retry_after_ms = self.clock_ms + COMPACT_RETRY_MS;
                self.stats.compaction_errors += 1;
                tracing::warn!(segment = segment::name(hour), error = %e,
                    "ledger: cannot compact a segment; it stays readable as it is, \
                     and is tried again in an hour");
            }
        }
    }

    pub(super) fn stats(&self) -> LedgerStats {
        let pending_lines = self
            .pending
            .values()
            .map(|p| (p.tokens.len() + p.addresses.len()) as u64)
            .sum();
        LedgerStats {
            bytes: self.segments.values().map(|s| s.bytes).sum(),
            segments: self.segments.len() as u64,
            pending_lines,
            pending_requests: self.pending_requests,
            ..self.stats.clone()
        }
    }
}
