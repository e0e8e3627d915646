//! The coverage log, `<dir>/coverage.jsonl`: when the agent ran and whether it could see
//! requests, so that a report on a period recorded without request heads says the sensor
//! was blind rather than that the subject was idle. The format, the write rules and what a
//! crash loses are in the `ledger` module's documentation; the writer is in `coverage/writer.rs`.

pub(crate) mod writer;

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use writer::MAX_RECORDS;
pub(crate) use writer::Writer;

use crate::detect::Blind;

/// The file's name in the ledger directory.
pub const FILE: &str = "coverage.jsonl";
/// Format version, in every record (`"coverage":1`).
pub const VERSION: u32 = 1;
/// A `why` longer than this (bytes) is cut, at a character boundary, and ends in `…`.
pub const WHY_MAX: usize = 1_000;

/// Whether the agent can see requests (their heads: endpoint, token, user, address) of the
/// processes it watches. Without heads it counts bytes only, and no request reaches the
/// ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Every watched process's requests are seen.
    Full,
    /// Some watched processes are watched by byte counts only (a shared cgroup, a
    /// homeserver it cannot watch as asked): their requests are not in the ledger.
    Partial { why: String },
    /// No request heads at all (the kernel refused the program, or
    /// `attribution.request_heads = "off"`): no request is in the ledger.
    Blind { why: String },
}

impl Coverage {
    /// What the agent's health check finds it runs without (`Agent::blind`): `request_heads`
    /// is `Blind`; `request_heads:CGROUP`, `unwatchable:CGROUP` and `listener:WHICH` (a
    /// Synapse listener the sensor cannot read) are `Partial`, their reasons joined;
    /// anything else (or nothing) is `Full`.
    pub fn from_blind(blind: &[Blind]) -> Coverage {
        if let Some(b) = blind.iter().find(|b| b.capability == "request_heads") {
            return Coverage::Blind { why: b.why.clone() };
        }
        let partial: Vec<String> = blind
            .iter()
            .filter_map(|b| {
                let cgroup = b
                    .capability
                    .strip_prefix("request_heads:")
                    .or_else(|| b.capability.strip_prefix("unwatchable:"))
                    .or_else(|| b.capability.strip_prefix("listener:"))?;
                Some(format!("{cgroup}: {}", b.why))
            })
            .collect();
        if partial.is_empty() {
            Coverage::Full
        } else {
            Coverage::Partial {
                why: partial.join("; "),
            }
        }
    }

    pub fn heads(&self) -> Heads {
        match self {
            Coverage::Full => Heads::Full,
            Coverage::Partial { .. } => Heads::Partial,
            Coverage::Blind { .. } => Heads::Blind,
        }
    }

    /// Why heads are missing (empty for `Full`).
    pub fn why(&self) -> &str {
        match self {
            Coverage::Full => "",
            Coverage::Partial { why } | Coverage::Blind { why } => why,
        }
    }

    /// The same, its `why` cut to [`WHY_MAX`] bytes, as it is written.
    fn bounded(self) -> Coverage {
        let cut = |why: String| {
            if why.len() <= WHY_MAX {
                return why;
            }
            let mut end = WHY_MAX;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &why[..end])
        };
        match self {
            Coverage::Full => Coverage::Full,
            Coverage::Partial { why } => Coverage::Partial { why: cut(why) },
            Coverage::Blind { why } => Coverage::Blind { why: cut(why) },
        }
    }

    fn from_parts(heads: Heads, why: Option<String>) -> Coverage {
        let why = why.unwrap_or_default();
        match heads {
            Heads::Full => Coverage::Full,
            Heads::Partial => Coverage::Partial { why },
            Heads::Blind => Coverage::Blind { why },
        }
    }
}

/// [`Coverage`] without its reason: the `heads` field of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Heads {
    Full,
    Partial,
    Blind,
}

/// What a record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An agent run started (its first note), seeing this much.
    Start(Coverage),
    /// What the running agent sees changed.
    Change(Coverage),
    /// The agent stopped (cleanly, or with an error it could still record).
    Stop,
}

/// One record of the log, at `at_ms` (milliseconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub at_ms: u64,
    pub event: Event,
}

/// A record as one JSON line.
#[derive(Serialize, Deserialize)]
struct Wire {
    coverage: u32,
    at: String,
    event: WireEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heads: Option<Heads>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireEvent {
    Start,
    Change,
    Stop,
}

impl Record {
    /// The record as one line, `\n` included.
    pub fn line(&self) -> String {
        let (event, coverage) = match &self.event {
            Event::Start(c) => (WireEvent::Start, Some(c)),
            Event::Change(c) => (WireEvent::Change, Some(c)),
            Event::Stop => (WireEvent::Stop, None),
        };
        let wire = Wire {
            coverage: VERSION,
            at: rfc3339(self.at_ms),
            event,
            heads: coverage.map(Coverage::heads),
            why: coverage
                .map(Coverage::why)
                .filter(|w| !w.is_empty())
                .map(str::to_owned),
        };
        // Strings and plain enums: serialising cannot fail.
        let mut line = serde_json::to_string(&wire).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Parses one line (without its `\n`); `None` when it is not a valid record.
    pub fn parse(line: &[u8]) -> Option<Record> {
        let wire: Wire = serde_json::from_slice(line).ok()?;
        if wire.coverage != VERSION {
            return None;
        }
        let at_ms = crate::ledger::record_time_ms(&wire.at)?;
        let event = match (wire.event, wire.heads) {
            (WireEvent::Start, Some(h)) => Event::Start(Coverage::from_parts(h, wire.why)),
            (WireEvent::Change, Some(h)) => Event::Change(Coverage::from_parts(h, wire.why)),
            (WireEvent::Stop, None) => Event::Stop,
            _ => return None,
        };
        Some(Record { at_ms, event })
    }
}

/// The log as read: its records in file order, and the lines that could not be read (a
/// line cut by a crash during a write).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub records: Vec<Record>,
    pub skipped: u64,
}

/// Parses the bytes of a log.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match Record::parse(line) {
            Some(r) => out.records.push(r),
            None => out.skipped += 1,
        }
    }
    out
}

/// Reads the log of the ledger in `dir`; `None` when there is none (a ledger written by an
/// agent older than the log, or one that never noted its coverage).
pub fn read(dir: &Path) -> io::Result<Option<Parsed>> {
    let path = dir.join(FILE);
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(parse(&bytes)))
}

/// How a period ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// What the agent saw changed.
    Change,
    /// The agent stopped and said so.
    Stop,
    /// The next run started without a stop before it: the agent was killed or crashed
    /// somewhere in between, so the period is known to end by this time, not at it.
    Restart,
    /// No later record: the agent is still running, or stopped without recording it.
    Open,
}

/// What the agent saw from `since_ms` to `until_ms` (`None`: open, see [`End::Open`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub since_ms: u64,
    pub until_ms: Option<u64>,
    pub ended: End,
    pub coverage: Coverage,
}

impl Period {
    /// Overlaps `[since, until)` (either end open).
    pub fn overlaps(&self, since: Option<u64>, until: Option<u64>) -> bool {
        until.is_none_or(|u| self.since_ms < u)
            && match (self.until_ms, since) {
                (Some(end), Some(s)) => end > s,
                _ => true,
            }
    }
}

/// The periods the records describe, in order: each start or change runs to the next record
/// (a change, a stop, or the next run's start) or, with none, stays open. Successive periods
/// that say the same and touch (a run killed while blind, started again blind) are one.
pub fn periods(records: &[Record]) -> Vec<Period> {
    let mut out: Vec<Period> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let coverage = match &record.event {
            Event::Start(c) | Event::Change(c) => c,
            Event::Stop => continue,
        };
        let (until_ms, ended) = match records.get(i + 1) {
            None => (None, End::Open),
            // A clock set back: the period is empty, not negative.
            Some(next) => (
                Some(next.at_ms.max(record.at_ms)),
                match next.event {
                    Event::Start(_) => End::Restart,
                    Event::Change(_) => End::Change,
                    Event::Stop => End::Stop,
                },
            ),
        };
        if let Some(prev) = out.last_mut()
            && prev.coverage == *coverage
            && prev.until_ms == Some(record.at_ms)
        {
            prev.until_ms = until_ms;
            prev.ended = ended;
            continue;
        }
        out.push(Period {
            since_ms: record.at_ms,
            until_ms,
            ended,
            coverage: coverage.clone(),
        });
    }
    out
}

/// Milliseconds since the epoch as `2026-09-21T14:13:20.000Z`.
fn rfc3339(ms: u64) -> String {
    let t = ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    crate::time::rfc3339_ms(t)
}
