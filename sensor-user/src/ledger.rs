//! The ledger: a durable, bounded record of what each access token and each client address
//! reached, for `homeserver-sensor report` to answer "what did this token (this user, this
//! address) touch, when, and how much" after the fact, across agent restarts.
//!
//! # What is kept
//! For every subject, a token fingerprint or a client address, and every UTC hour in which
//! it made requests: requests, bytes in and out, first and last request, by endpoint name
//! (`client.messages`, `media.download`, ...: every request counts there once, so these
//! sum to the totals); the rooms it read (history, members, state, context), joined, or
//! touched otherwise; the media it fetched (downloads and thumbnails, as
//! `server/media_id`) or touched otherwise; the users it looked up (profiles, admin user
//! endpoints); for a token, the users it belonged to and the client addresses it came
//! from; for an address, the tokens used from it (`-`: none) and their users. Each entry has
//! its own counts and first and last request, to the millisecond. A request with no token
//! counts for its address only, one with no address for its token only, one with neither
//! for neither (counted in [`LedgerStats::unattributed`]). User-directory searches count
//! under their endpoint (`client.user_directory`): the search terms are in the request body,
//! which the sensor never sees.
//!
//! # On disk
//! A directory (`[ledger] dir`, created `0700`; the agent refuses one open to group or
//! others, since it says who read what) of segment files, one per UTC hour of request time,
//! `YYYY-MM-DDTHH.jsonl`, mode `0600`, each a header line then JSON lines:
//!
//! ```text
//! {"ledger":1,"hour":"2026-09-21T14:00:00.000Z","compacted":true }
//! {"token":"tfp_3f1c9a0b27d4e865","users":{"@mallory:example.org":[212,63600,10645000,800000,3599000]},"addresses":{"203.0.113.7":[212,...]},"endpoints":{"client.messages":[200,60000,10045000,800000,3599000],"media.download":[12,3600,600000,801000,812000]},"rooms_read":{"!a:example.org":[200,60000,10045000,800000,3599000]},"media":{"example.org/abc":[1,300,50000,801000,801000],...}}
//! {"address":"203.0.113.7","tokens":{"tfp_3f1c9a0b27d4e865":[212,...]},"users":{...},"endpoints":{...},...}
//! ```
//!
//! Every entry is `[requests, bytes_in, bytes_out, first, last]`, the times in milliseconds
//! from the start of the hour. A line lists at most [`ITEM_CAP`] items (every kind
//! together); past that an item's requests still count in `over` and `over_items` ("N more
//! items not listed"), so totals stay exact. Peers (users, addresses, tokens) are capped at
//! [`PEER_CAP`] per line in the same way (`over_users`, `over_peers`).
//!
//! Readers sum every line of a subject: a segment may hold several lines per subject.
//!
//! # Writing, and what a crash loses
//! [`Ledger::observe`] adds a request to the pending lines of its (hour, subject), in
//! memory. Every `flush_s` seconds (5) [`Ledger::tick`] appends the pending lines to their
//! hour's segment in one write, `fsync`s it and forgets them: a crash loses at most the
//! requests of the last `flush_s` seconds (and a line cut by the crash, which stays in the
//! file as one unreadable line that readers skip and count); [`Ledger::flush`] at a clean
//! stop loses nothing. A write that fails is cut back to the file's previous length and
//! retried at the next flush; if it cannot be cut back, its requests are dropped and counted
//! as `lost` rather than risk counting them twice.
//!
//! A closed hour (nothing appended to it for ten minutes after its end) is compacted in a
//! background thread: its lines are merged to one per subject, written to a temporary file,
//! `fsync`ed and renamed over the segment, so a crash leaves the old file or the new one.
//! A request that finishes after its hour was compacted is appended as usual and the hour
//! is compacted again. A lock on `<dir>/.lock` keeps a second agent out.
//!
//! # Coverage: when the sensor could see requests
//! Without request heads (the kernel refused the request-head program and
//! `attribution.request_heads` is `"optional"`, or it is `"off"`) no request reaches the
//! ledger; in a shared cgroup some watched processes are counted by bytes only and their
//! requests are missing. So that a report on such a period says the sensor was blind rather
//! than that the subject was idle, the agent keeps `<dir>/coverage.jsonl` (mode `0600`), one
//! record a line:
//!
//! ```text
//! {"coverage":1,"at":"2026-09-21T14:13:20.000Z","event":"start","heads":"blind","why":"turned off by attribution.request_heads = \"off\": ..."}
//! {"coverage":1,"at":"2026-09-21T15:02:11.250Z","event":"change","heads":"partial","why":"/system.slice/synapse.service: PIDs [812] are watched by byte counts only: ..."}
//! {"coverage":1,"at":"2026-09-21T15:40:00.000Z","event":"change","heads":"full"}
//! {"coverage":1,"at":"2026-09-21T18:00:00.000Z","event":"stop"}
//! ```
//!
//! `heads` is `full` (every watched process's requests seen), `partial` (some watched
//! processes without heads: their requests are not in the ledger) or `blind` (no request
//! heads at all); `why` says why, for the last two (cut to [`coverage::WHY_MAX`] bytes). The
//! agent notes its coverage once a second ([`Ledger::note_coverage`]): a run's first note
//! writes a `start` record, a note that differs from the run's last one a `change`, any other
//! nothing; [`Ledger::note_stop`] at a clean stop writes `stop` (so does a ledger dropped
//! without it, as when the agent ends with an error). Each append is one `write` then
//! `fdatasync`; a failed one is cut back and its records kept (at most 64) for the next note
//! or flush. A line cut by a crash is ended by the next append and skipped (and counted) by
//! readers, as in segments.
//!
//! A period runs from a `start` or `change` record to the next record: a `change`, a `stop`,
//! or the next run's `start`. A crash (or `SIGKILL`) writes no `stop`, so the period the
//! crashed run was in extends to the next run's start record: the report says the sensor saw
//! that way until then, though it saw nothing from the crash on. With no record after it, a
//! period is open: the agent is still running (or stopped without a record and never ran
//! again). A ledger without the file (written by an older agent) reports as before, with
//! nothing said about coverage.
//!
//! # Time granularity
//! Times are exact to the millisecond for every entry (first and last request); counts are
//! per hour once the hour is compacted (per flush before that). A report range cuts entries
//! by their own times: an entry counts when its first-to-last span overlaps the range. One
//! that lies wholly inside is exact; one that straddles an edge of the range (it has
//! requests on both sides of the edge within one hour) is counted whole, and the report
//! says how many such entries there were (`straddling`). An item fetched once is always
//! exact, and a range on whole hours is always exact.
//!
//! # Retention
//! - Age: a segment whose hour ended more than `retention_days` (90) ago is deleted.
//! - Size: while the segments add up to more than `max_bytes` (1 GiB), the oldest is
//!   deleted. The current and the previous hour are never deleted for size, so the budget
//!   can be exceeded by at most those two hours.
//! - The coverage log drops, at the same tick, the records whose period ended more than
//!   `retention_days` ago (the one whose period runs across that horizon stays), and the
//!   oldest past [`coverage::MAX_RECORDS`] (4,096): a rewrite to
//!   `.coverage.jsonl.tmp`, `fsync`ed and renamed over it. It is bounded by age rather than
//!   by the oldest segment: a blind period has no segments, and is what it must tell.
//! - Every deletion is logged and counted ([`LedgerStats`]: `pruned_segments_age`,
//!   `pruned_segments_size`, `pruned_bytes`); requests older than the retention when they
//!   are observed are counted as `stale` and not kept.
//!
//! # Memory
//! Only the lines pending for the next flush are in memory (a few seconds of traffic; a
//! tick that finds [`EARLY_FLUSH_REQUESTS`] pending flushes before `flush_s` is up). If
//! writes keep failing they are kept for retry up to [`MAX_PENDING_REQUESTS`] requests;
//! past that new requests are counted as `lost`. Compaction reads one hour at a time.
//!
//! # Measured
//! The `sizes` test (`cargo test --release -p homeserver-sensor --lib ledger::tests::sizes
//! -- --nocapture`) feeds synthetic streams and prints, per 1,000 requests on disk:
//!
//! | stream | open hour (one line per subject and flush) | compacted hour |
//! | --- | --- | --- |
//! | scraper: every request a distinct room or piece of media | 81 KB | 65 KB |
//! | benign: 40 clients, a /sync every 30 s, a few rooms and avatars | 134 KB | 8.3 KB |
//!
//! So 1 GiB holds about 16 million scraper requests or 130 million benign ones once
//! compacted: ninety days of a homeserver averaging 15 requests a second. A busier one
//! reaches `max_bytes` first and keeps less than `retention_days` (raise `max_bytes`).
//! Each item is listed twice, under the token and under the address, so that both reports
//! stand alone. `observe` costs about 1 µs per request in a release build (0.75 to 1.9 µs
//! measured, the scraper's new items costing most); a flush costs one `write` and one
//! `fdatasync` per hour written to.

mod config;
pub mod coverage;
pub(crate) mod line;
pub(crate) mod segment;
#[cfg(test)]
pub(crate) mod tests;
mod writer;

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use config::{DEFAULT_DIR, LedgerConfig, LedgerConfigError};
pub use coverage::Coverage;
pub use line::{ITEM_CAP, PEER_CAP};

use writer::{Inner, Segment};

use crate::output::RequestRecord;

/// Requests kept in memory, not yet written, at most: while writes fail (a full disk),
/// four minutes of a homeserver serving a thousand requests a second, about 50 MB at worst
/// (every request a new item). Past it, requests are counted as lost.
pub const MAX_PENDING_REQUESTS: u64 = 250_000;

/// Pending requests that make the next tick flush before `flush_s` is up: at 70,000
/// requests a second, five seconds of them would pass `MAX_PENDING_REQUESTS` and the rest
/// would be lost although every write succeeds.
pub const EARLY_FLUSH_REQUESTS: u64 = MAX_PENDING_REQUESTS / 4;

/// The ledger cannot be opened, written or pruned. Each message says what failed and what
/// the agent does about it. The errors of opening carry their cause in the message (a
/// `cause` field, not `source()`), so printing the error chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "cannot create the ledger directory {}: {cause}; create it (mode 0700, owned by the \
         agent's user) or set [ledger] dir to a directory the agent can write",
        path.display()
    )]
    CreateDir { path: PathBuf, cause: io::Error },
    #[error(
        "the ledger directory {} is not a directory; set [ledger] dir to a directory",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "the ledger directory {} has mode {mode:04o}, open to group or others, and the ledger \
         says who read what; run `chmod 700 {}`",
        path.display(), path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "the ledger directory {} is in use by another homeserver-sensor (it holds {}); stop \
         that one or give this one another [ledger] dir",
        path.display(), path.join(".lock").display()
    )]
    Locked { path: PathBuf },
    #[error(
        "cannot read the ledger directory {}: {cause}; it must belong to the agent's user",
        path.display()
    )]
    ReadDir { path: PathBuf, cause: io::Error },
    #[error(
        "cannot open and lock {}: {cause}; make the ledger directory writable by the agent's \
         user, or set [ledger] dir to one it can write",
        path.join(".lock").display()
    )]
    Lock { path: PathBuf, cause: io::Error },
    #[error(
        "cannot write ledger segment {}: {source}; its lines stay in memory and are written \
         again at the next flush", path.display()
    )]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "cannot write ledger segment {}: {source}, and the partial write could not be undone; \
         {requests} requests are dropped from the ledger (counted as lost) rather than \
         counted twice", path.display()
    )]
    WriteLost {
        path: PathBuf,
        source: io::Error,
        requests: u64,
    },
    #[error("cannot delete ledger segment {} ({why}): {source}", path.display())]
    Prune {
        path: PathBuf,
        why: &'static str,
        source: io::Error,
    },
    #[error(
        "cannot write the ledger's coverage log {}: {source}; its records stay in memory and \
         are written again at the next note or flush", path.display()
    )]
    Coverage { path: PathBuf, source: io::Error },
    #[error("cannot prune the ledger's coverage log {}: {source}", path.display())]
    CoveragePrune { path: PathBuf, source: io::Error },
}

/// The ledger's own counters, for the `sensor` record and the metrics. Counts are since the
/// agent started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LedgerStats {
    pub enabled: bool,
    /// Bytes of segment files on disk (as far as this agent knows).
    pub bytes: u64,
    pub segments: u64,
    /// Requests added to the ledger.
    pub requests: u64,
    /// Requests with neither a token nor a client address: nothing to file them under.
    pub unattributed: u64,
    /// Requests older than `retention_days` when observed: not kept.
    pub stale: u64,
    /// Requests dropped: too many waiting while writes failed, or a failed write that could
    /// not be undone.
    pub lost: u64,
    /// (hour, subject) lines waiting for the next flush, and their requests.
    pub pending_lines: u64,
    pub pending_requests: u64,
    /// Item entries not listed because a line reached `ITEM_CAP` (their requests and bytes
    /// are still counted).
    pub items_over_cap: u64,
    pub pruned_segments_age: u64,
    pub pruned_segments_size: u64,
    pub pruned_bytes: u64,
    pub write_errors: u64,
    pub compactions: u64,
    pub compaction_errors: u64,
    /// Partial lines found at the end of a segment or of the coverage log (a crash in the
    /// middle of a write), ended so that readers skip them as one unreadable line.
    pub torn_lines: u64,
}

/// The durable ledger. Feed it finished requests with [`observe`](Self::observe), call
/// [`tick`](Self::tick) about once a second and [`flush`](Self::flush) at stop. With
/// `enabled = false` every call does nothing.
pub struct Ledger {
    inner: Option<Inner>,
}

impl Ledger {
    /// Opens (creating it `0700` if needed) the ledger directory and indexes its segments.
    /// Leftovers of a compaction cut by a crash are removed.
    pub fn open(config: &LedgerConfig) -> Result<Ledger, LedgerError> {
        if !config.enabled {
            return Ok(Ledger { inner: None });
        }
        let dir = &config.dir;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|cause| LedgerError::CreateDir {
                path: dir.clone(),
                cause,
            })?;
        let read_dir = |cause| LedgerError::ReadDir {
            path: dir.clone(),
            cause,
        };
        let meta = fs::metadata(dir).map_err(read_dir)?;
        if !meta.is_dir() {
            return Err(LedgerError::NotADirectory { path: dir.clone() });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(LedgerError::Permissions {
                path: dir.clone(),
                mode,
            });
        }
        let lock = lock(dir)?;
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(read_dir)? {
            let entry = entry.map_err(read_dir)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let leftover = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".tmp"))
                .and_then(segment::parse_name);
            if leftover.is_some() {
                // A compaction cut by a crash: the segment itself is intact.
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), error = %e,
                        "cannot remove a leftover ledger file");
                }
            }
        }
        for (hour, (path, bytes)) in segment::list(dir).map_err(read_dir)? {
            let compacted = segment::is_compacted(&path).unwrap_or(false);
            segments.insert(
                hour,
                Segment {
                    bytes,
                    compacted,
                    ..Segment::default()
                },
            );
        }
        let stats = LedgerStats {
            enabled: true,
            ..LedgerStats::default()
        };
        Ok(Ledger {
            inner: Some(Inner {
                config: config.clone(),
                _lock: lock,
                pending: BTreeMap::new(),
                pending_requests: 0,
                segments,
                compacting: None,
                coverage: coverage::Writer::new(dir),
                clock_ms: 0,
                last_flush_ms: None,
                stats,
            }),
        })
    }

    /// Adds one finished request, made at `ts_ms` (milliseconds since the epoch; the time of
    /// its head, see [`record_time_ms`], is what the report shows).
    pub fn observe(&mut self, req: &RequestRecord, ts_ms: u64) {
        if let Some(inner) = &mut self.inner {
            inner.observe(req, ts_ms);
        }
    }

    /// Once a second: writes the pending lines when `flush_s` has passed, deletes what the
    /// retention says, and starts or collects a compaction. An error is for the log: the
    /// ledger keeps going (and counts it).
    pub fn tick(&mut self, now_ms: u64) -> Result<(), LedgerError> {
        match &mut self.inner {
            Some(inner) => inner.tick(now_ms),
            None => Ok(()),
        }
    }

    /// Writes every pending line now (at stop), after waiting for a running compaction,
    /// and the coverage records a failed write left.
    pub fn flush(&mut self) -> Result<(), LedgerError> {
        match &mut self.inner {
            Some(inner) => {
                inner.collect_compaction(true);
                let written = inner.flush(None);
                let appended = inner.coverage.write_unwritten();
                written.and(inner.coverage_written(appended))
            }
            None => Ok(()),
        }
    }

    /// Notes whether the agent sees requests at `now_ms` (milliseconds since the epoch), in
    /// the coverage log: at a run's first call a start record, then a record only when it
    /// differs from the last note. Cheap when nothing changed: call it once a second. An
    /// error is for the log: the record is kept and written at the next call.
    pub fn note_coverage(&mut self, now_ms: u64, heads: Coverage) -> Result<(), LedgerError> {
        match &mut self.inner {
            Some(inner) => {
                let appended = inner.coverage.note(now_ms, heads);
                inner.coverage_written(appended)
            }
            None => Ok(()),
        }
    }

    /// Notes a stop at `now_ms` in the coverage log (nothing if no coverage was noted). A
    /// ledger dropped without it notes one at its drop.
    pub fn note_stop(&mut self, now_ms: u64) -> Result<(), LedgerError> {
        match &mut self.inner {
            Some(inner) => {
                let appended = inner.coverage.stop(now_ms);
                inner.coverage_written(appended)
            }
            None => Ok(()),
        }
    }

    /// Applies a new configuration (SIGHUP): `retention_days`, `max_bytes` and `flush_s`
    /// take effect at the next tick; `enabled` and `dir` need a restart (the running values
    /// stay). Returns the keys that changed and need a restart.
    pub fn reload(&mut self, config: &LedgerConfig) -> Vec<&'static str> {
        let mut restart = Vec::new();
        let running_enabled = self.inner.is_some();
        if config.enabled != running_enabled {
            restart.push("ledger.enabled");
        }
        if let Some(inner) = &mut self.inner {
            if config.dir != inner.config.dir {
                restart.push("ledger.dir");
            }
            inner.config.retention_days = config.retention_days;
            inner.config.max_bytes = config.max_bytes;
            inner.config.flush_s = config.flush_s;
        }
        restart
    }

    pub fn stats(&self) -> LedgerStats {
        match &self.inner {
            Some(inner) => inner.stats(),
            None => LedgerStats::default(),
        }
    }

    /// A crash, for tests: what is pending is lost, as if the process died.
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        if let Some(inner) = &mut self.inner {
            inner.pending.clear();
            inner.pending_requests = 0;
            inner.coverage.crash();
        }
    }

    /// The directory in use, when enabled.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.as_ref().map(|i| i.config.dir.as_path())
    }
}

impl Drop for Ledger {
    /// A ledger dropped without `flush` still writes what it holds (best effort), and a
    /// stop in the coverage log if the run noted no stop (an agent that ends with an error).
    fn drop(&mut self) {
        if self.inner.as_ref().is_some_and(|i| i.coverage.running()) {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Err(e) = self.note_stop(now_ms) {
                tracing::warn!(error = %e, "ledger: cannot note the stop");
            }
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "ledger: final flush failed");
        }
    }
}

/// The time of a request record (`ts`, the arrival of its head) in milliseconds since the
/// epoch; `None` if it is not RFC 3339.
pub fn record_time_ms(ts: &str) -> Option<u64> {
    let t =
        ::time::OffsetDateTime::parse(ts, &::time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Takes the lock on `<dir>/.lock`, held for as long as the file stays open.
fn lock(dir: &Path) -> Result<File, LedgerError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|cause| LedgerError::Lock {
            path: dir.to_owned(),
            cause,
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.kind() == io::ErrorKind::WouldBlock {
            LedgerError::Locked {
                path: dir.to_owned(),
            }
        } else {
            LedgerError::Lock {
                path: dir.to_owned(),
                cause: e,
            }
        });
    }
    Ok(file)
}
