//! Reading the ledger for one subject and range: every segment whose hour overlaps the
//! range, every line of the subject, every entry whose own first-to-last span overlaps it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::coverage::{self, SensorCoverage};
use super::{Query, ReportError, Subject, rfc3339};
use crate::ledger::line::{Counts, Entries, ItemKind, Line, NONE, biggest_first};
use crate::ledger::segment::{self, HOUR_MS};

/// Who the report is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectOut {
    /// `user`, `token` or `client_ip`.
    pub kind: String,
    pub id: String,
}

/// One line of a section: a user, token, address, endpoint, room, media (as
/// `mxc://server/id`) or user looked up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Null for "no token" (in `tokens`) and "no address" (in `addresses`).
    pub id: Option<String>,
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// What the ledger counted but does not list (a line reached its item or peer cap).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotListed {
    /// Item entries not listed (an item left out in several hours counts once per hour).
    pub items: u64,
    /// Their requests and bytes.
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests whose token or address is not listed.
    pub peer_requests: u64,
    /// Requests whose user is not listed.
    pub user_requests: u64,
}

/// A report, as `--json` writes it. Sections are sorted biggest first (bytes out, then
/// requests, then name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub subject: SubjectOut,
    /// The range asked for (null: open).
    pub since: Option<String>,
    pub until: Option<String>,
    /// The ledger has requests of the subject in the range.
    pub found: bool,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// Totals (the sum over `endpoints`).
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The users of the requests.
    pub users: Vec<Entry>,
    /// User and address reports: the tokens used.
    pub tokens: Vec<Entry>,
    /// User and token reports: the client addresses they came from.
    pub addresses: Vec<Entry>,
    pub endpoints: Vec<Entry>,
    /// Rooms whose history, members or state were read.
    pub rooms_read: Vec<Entry>,
    /// Rooms joined (or knocked on).
    pub rooms_joined: Vec<Entry>,
    /// Rooms named by other requests (send, leave, hierarchy, admin room endpoints...).
    pub rooms_other: Vec<Entry>,
    /// Media downloaded or thumbnailed.
    pub media: Vec<Entry>,
    /// Media named by other requests (upload to an ID, admin media endpoints).
    pub media_other: Vec<Entry>,
    /// Users whose profile (or admin record) was requested.
    pub users_looked_up: Vec<Entry>,
    pub not_listed: NotListed,
    /// Entries (endpoints and items) with requests on both sides of an edge of the range
    /// within one hour: counted whole.
    pub straddling: u64,
    /// The ledger's counting period, in seconds.
    pub granularity_s: u64,
    pub segments_read: u64,
    /// Ledger lines that could not be read (damaged, or being written) and were skipped.
    pub skipped_lines: u64,
    /// When the sensor could not see every request, over the range (absent from reports
    /// written before the coverage log: then unknown).
    #[serde(default)]
    pub coverage: SensorCoverage,
}

/// Builds the report for `q` from the ledger in `dir`.
pub fn query(dir: &Path, q: &Query) -> Result<Report, ReportError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ReportError::ReadDir {
                path: dir.to_owned(),
                source: io::Error::other("not a directory"),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ReportError::NoLedger {
                path: dir.to_owned(),
            });
        }
        Err(source) => {
            return Err(ReportError::ReadDir {
                path: dir.to_owned(),
                source,
            });
        }
    }
    let segments = segment::list(dir).map_err(|source| ReportError::ReadDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut acc = Acc::new(q);
    for (hour, (path, _)) in segments {
        let start = hour * HOUR_MS;
        let outside = q.until_ms.is_some_and(|u| start >= u)
            || q.since_ms.is_some_and(|s| start + HOUR_MS <= s);
        if outside {
            continue;
        }
        let bytes = match segment::read(&path) {
            Ok(bytes) => bytes,
            // Deleted by the agent's retention since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ReportError::ReadSegment { path, source }),
        };
        acc.segments += 1;
        for raw in segment::data_lines(&bytes) {
            acc.line(raw, start);
        }
    }
    let mut report = acc.finish(q);
    report.coverage = coverage::read(dir, q.since_ms, q.until_ms)?;
    Ok(report)
}

/// The report being built.
struct Acc {
    subject: Subject,
    /// A string every line of the subject contains (a JSON string), to skip other lines
    /// without parsing them.
    needle: String,
    since: Option<u64>,
    until: Option<u64>,
    endpoints: Entries,
    items: HashMap<ItemKind, Entries>,
    users: Entries,
    tokens: Entries,
    addresses: Entries,
    totals: Counts,
    not_listed: NotListed,
    straddling: u64,
    segments: u64,
    skipped: u64,
}

impl Acc {
    fn new(q: &Query) -> Self {
        let needle = match &q.subject {
            Subject::User(user) => serde_json::to_string(user).unwrap_or_default(),
            Subject::Token(token) => format!("\"{token}\""),
            Subject::Address(address) => serde_json::to_string(address).unwrap_or_default(),
        };
        Acc {
            subject: q.subject.clone(),
            needle,
            since: q.since_ms,
            until: q.until_ms,
            endpoints: Entries::new(),
            items: HashMap::new(),
            users: Entries::new(),
            tokens: Entries::new(),
            addresses: Entries::new(),
            totals: Counts::default(),
            not_listed: NotListed::default(),
            straddling: 0,
            segments: 0,
            skipped: 0,
        }
    }

    /// One data line of a segment whose hour starts at `base` (ms since the epoch).
    fn line(&mut self, raw: &[u8], base: u64) {
        // Every line is checked for damage (a line cut short by a crash or a write in
        // progress); only lines that can be the subject's are parsed.
        let Ok(text) = std::str::from_utf8(raw) else {
            self.skipped += 1;
            return;
        };
        if !(text.starts_with('{') && text.ends_with('}')) {
            self.skipped += 1;
            return;
        }
        if !text.contains(self.needle.as_str()) {
            return;
        }
        let Some(line) = crate::ledger::segment::parse_line(raw) else {
            self.skipped += 1;
            return;
        };
        let mine = match &self.subject {
            Subject::Token(t) => line.token == Some(*t),
            Subject::Address(a) => line.address.as_deref() == Some(a.as_str()),
            Subject::User(u) => line.token.is_some() && line.users.contains_key(u.as_str()),
        };
        if mine {
            self.add(&line, base);
        }
    }

    /// The part of `c` (hour offsets from `base`) in the range, in epoch milliseconds, and
    /// whether it straddles an edge.
    fn clip(&self, c: &Counts, base: u64) -> Option<(Counts, bool)> {
        let abs = c.shifted(base);
        if abs.requests == 0
            || self.since.is_some_and(|s| abs.last < s)
            || self.until.is_some_and(|u| abs.first >= u)
        {
            return None;
        }
        let straddles =
            self.since.is_some_and(|s| abs.first < s) || self.until.is_some_and(|u| abs.last >= u);
        Some((abs, straddles))
    }

    fn add(&mut self, line: &Line, base: u64) {
        let mut line_total = Counts::default();
        for (name, c) in &line.endpoints {
            if let Some((abs, straddles)) = self.clip(c, base) {
                self.endpoints.entry(name.clone()).or_default().merge(&abs);
                line_total.merge(&abs);
                self.straddling += u64::from(straddles);
            }
        }
        if line_total.requests == 0 {
            return;
        }
        self.totals.merge(&line_total);
        for kind in ItemKind::ALL {
            for (id, c) in line.items(kind) {
                if let Some((abs, straddles)) = self.clip(c, base) {
                    let entries = self.items.entry(kind).or_default();
                    entries.entry(id.clone()).or_default().merge(&abs);
                    self.straddling += u64::from(straddles);
                }
            }
        }
        if let Some((over, _)) = line.over.as_ref().and_then(|o| self.clip(o, base)) {
            self.not_listed.items += line.over_items;
            self.not_listed.requests += over.requests;
            self.not_listed.bytes_in += over.bytes_in;
            self.not_listed.bytes_out += over.bytes_out;
        }
        self.not_listed.peer_requests += line.over_peers;
        self.not_listed.user_requests += line.over_users;
        let peers = [
            (&line.users, &mut self.users),
            (&line.addresses, &mut self.addresses),
            (&line.tokens, &mut self.tokens),
        ];
        let (since, until) = (self.since, self.until);
        for (from, into) in peers {
            for (id, c) in from {
                let abs = c.shifted(base);
                let inside =
                    since.is_none_or(|s| abs.last >= s) && until.is_none_or(|u| abs.first < u);
                if inside {
                    into.entry(id.clone()).or_default().merge(&abs);
                }
            }
        }
        if let (Subject::User(_), Some(token)) = (&self.subject, line.token) {
            self.tokens
                .entry(token.to_string())
                .or_default()
                .merge(&line_total);
        }
    }

    fn finish(mut self, q: &Query) -> Report {
        let (kind, id) = match &q.subject {
            Subject::User(u) => ("user", u.clone()),
            Subject::Token(t) => ("token", t.to_string()),
            Subject::Address(a) => ("client_ip", a.clone()),
        };
        let found = self.totals.requests > 0;
        let mut items = |kind: ItemKind| {
            let prefix = if matches!(kind, ItemKind::Media | ItemKind::MediaOther) {
                "mxc://"
            } else {
                ""
            };
            entries(self.items.remove(&kind).unwrap_or_default(), prefix)
        };
        Report {
            subject: SubjectOut {
                kind: kind.to_owned(),
                id,
            },
            since: q.since_ms.map(rfc3339),
            until: q.until_ms.map(rfc3339),
            found,
            first_seen: found.then(|| rfc3339(self.totals.first)),
            last_seen: found.then(|| rfc3339(self.totals.last)),
            requests: self.totals.requests,
            bytes_in: self.totals.bytes_in,
            bytes_out: self.totals.bytes_out,
            rooms_read: items(ItemKind::RoomRead),
            rooms_joined: items(ItemKind::RoomJoined),
            rooms_other: items(ItemKind::RoomOther),
            media: items(ItemKind::Media),
            media_other: items(ItemKind::MediaOther),
            users_looked_up: items(ItemKind::UserLookedUp),
            users: entries(self.users, ""),
            tokens: entries(self.tokens, ""),
            addresses: entries(self.addresses, ""),
            endpoints: entries(self.endpoints, ""),
            not_listed: self.not_listed,
            straddling: self.straddling,
            granularity_s: HOUR_MS / 1000,
            segments_read: self.segments,
            skipped_lines: self.skipped,
            coverage: SensorCoverage::default(),
        }
    }
}

/// A section, biggest first; the `-` key becomes a null id.
fn entries(map: Entries, prefix: &str) -> Vec<Entry> {
    let mut all: Vec<(String, Counts)> = map.into_iter().collect();
    all.sort_by(|a, b| biggest_first((&a.0, &a.1), (&b.0, &b.1)));
    all.into_iter()
        .map(|(id, c)| Entry {
            id: (id != NONE).then(|| format!("{prefix}{id}")),
            requests: c.requests,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            first_seen: rfc3339(c.first),
            last_seen: rfc3339(c.last),
        })
        .collect()
}
