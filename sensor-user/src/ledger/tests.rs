//! Unit tests for the ledger: synthetic request streams with explicit times, written to a
//! temporary directory, read back through the report. The fixtures here are shared with
//! `report/tests.rs`.

mod config;
mod coverage;
mod durability;
mod format;
mod retention;
mod scenarios;
mod sizes;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::line::{Counts, ITEM_CAP, ItemKind, Line};
use super::segment::{self, HOUR_MS};
use super::*;
use crate::client_ip::AddressSource;
use crate::endpoint::Class;
use crate::identity::{Fingerprint, TokenSource};
use crate::output::RequestRecord;
use crate::report::{Query, Report, Subject, query};

/// 2026-09-21T14:13:20Z, in milliseconds.
pub(crate) const T0: u64 = 1_790_000_000_000;
pub(crate) const HOUR: u64 = HOUR_MS;
/// 2026-09-21T14:00:00Z: the start of T0's hour.
pub(crate) const H0: u64 = T0 / HOUR * HOUR;
pub(crate) const SECOND: u64 = 1_000;
pub(crate) const MINUTE: u64 = 60 * SECOND;
pub(crate) const DAY: u64 = 24 * HOUR;

pub(crate) const SCRAPER_IP: &str = "203.0.113.7";
pub(crate) const SCRAPER: &str = "@mallory:example.org";

/// Token number `n`.
pub(crate) fn fp(n: u64) -> Fingerprint {
    format!("tfp_{n:016x}").parse().expect("valid fingerprint")
}

/// A temporary ledger directory (`<tmp>/ledger`, created by the ledger), removed at drop.
pub(crate) struct Fixture {
    tmp: tempfile::TempDir,
    pub config: LedgerConfig,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("hs-ledger-test-")
            .tempdir_in(std::env::temp_dir())
            .expect("temporary directory");
        let config = LedgerConfig {
            dir: tmp.path().join("ledger"),
            ..LedgerConfig::default()
        };
        Fixture { tmp, config }
    }

    pub(crate) fn open(&self) -> Ledger {
        Ledger::open(&self.config).unwrap_or_else(|e| panic!("open: {e}"))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.config.dir
    }

    pub(crate) fn report(
        &self,
        subject: Subject,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Report {
        let q = Query {
            subject,
            since_ms: since,
            until_ms: until,
        };
        query(self.dir(), &q).unwrap_or_else(|e| panic!("report: {e}"))
    }

    pub(crate) fn segment_path(&self, hour_start_ms: u64) -> PathBuf {
        self.dir().join(segment::name(hour_start_ms / HOUR_MS))
    }

    /// Bytes of every segment file.
    pub(crate) fn bytes_on_disk(&self) -> u64 {
        segment::list(self.dir())
            .expect("list")
            .values()
            .map(|(_, len)| len)
            .sum()
    }

    #[allow(dead_code)]
    pub(crate) fn tmp(&self) -> &Path {
        self.tmp.path()
    }
}

/// A request of token `token` (user `@u{token}:example.org`, or `SCRAPER` for token 1)
/// from `ip`, of `endpoint`, 300 bytes in and `out` bytes out.
pub(crate) fn req(
    token: Option<u64>,
    ip: Option<&str>,
    endpoint: &'static str,
    class: Class,
    out: u64,
) -> RequestRecord {
    let user = token.map(|n| {
        if n == 1 {
            SCRAPER.to_owned()
        } else {
            format!("@u{n}:example.org")
        }
    });
    RequestRecord {
        ts: "2026-09-21T14:13:20.000Z".into(),
        pid: Some(42),
        local: Some("127.0.0.1:8008".into()),
        peer: Some("127.0.0.1:50000".into()),
        cookie: 7,
        method: Some("GET".into()),
        path: Some("/_matrix/client/v3/sync".into()),
        endpoint,
        class: Some(class),
        client_ip: ip.map(str::to_owned),
        client_ip_source: ip.map(|_| AddressSource::XForwardedFor),
        forwarding_ignored: false,
        token: token.map(fp),
        token_source: token.map(|_| TokenSource::Header),
        user,
        bytes_in: 300,
        bytes_out: out,
        room: None,
        event_id: None,
        target_user: None,
        media_server: None,
        media_id: None,
        full_state: None,
        since: None,
        head: "parsed",
        complete: true,
    }
}

pub(crate) fn messages(token: Option<u64>, ip: &str, room: &str, out: u64) -> RequestRecord {
    RequestRecord {
        room: Some(room.into()),
        ..req(token, Some(ip), "client.messages", Class::RoomHistory, out)
    }
}

pub(crate) fn members(token: Option<u64>, ip: &str, room: &str, out: u64) -> RequestRecord {
    RequestRecord {
        room: Some(room.into()),
        ..req(token, Some(ip), "client.members", Class::RoomMembers, out)
    }
}

pub(crate) fn join(token: Option<u64>, ip: &str, room: &str) -> RequestRecord {
    RequestRecord {
        method: Some("POST".into()),
        room: Some(room.into()),
        ..req(token, Some(ip), "client.join", Class::Join, 120)
    }
}

pub(crate) fn download(token: Option<u64>, ip: &str, media_id: &str, out: u64) -> RequestRecord {
    RequestRecord {
        media_server: Some("example.org".into()),
        media_id: Some(media_id.into()),
        ..req(token, Some(ip), "media.download", Class::MediaDownload, out)
    }
}

pub(crate) fn thumbnail(token: Option<u64>, ip: &str, media_id: &str, out: u64) -> RequestRecord {
    RequestRecord {
        media_server: Some("example.org".into()),
        media_id: Some(media_id.into()),
        ..req(
            token,
            Some(ip),
            "media.thumbnail",
            Class::MediaThumbnail,
            out,
        )
    }
}

pub(crate) fn profile(token: Option<u64>, ip: &str, user: &str) -> RequestRecord {
    RequestRecord {
        target_user: Some(user.into()),
        ..req(token, Some(ip), "client.profile", Class::Profile, 250)
    }
}

pub(crate) fn sync(token: Option<u64>, ip: &str, out: u64) -> RequestRecord {
    RequestRecord {
        since: Some(true),
        full_state: Some(false),
        ..req(token, Some(ip), "client.sync", Class::Sync, out)
    }
}

/// A small deterministic generator of sizes.
pub(crate) struct Sizes(u64);

impl Sizes {
    pub(crate) fn next(&mut self, min: u64, spread: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        min + (self.0 >> 33) % spread
    }
}

/// A scraper (token 1, `SCRAPER`, from `SCRAPER_IP`) starting at `start`, a request every
/// `step` ms: joins `rooms / 10` rooms, pages the history of `rooms` rooms (3 pages each),
/// reads the members of every tenth, fetches `media` pieces of media (every fifth as a
/// thumbnail too), looks up `rooms / 4` profiles and syncs every 50 requests.
pub(crate) fn scraper(
    start: u64,
    step: u64,
    rooms: usize,
    media: usize,
) -> Vec<(RequestRecord, u64)> {
    let mut sizes = Sizes(1);
    let mut out = Vec::new();
    let t = Some(1);
    let ip = SCRAPER_IP;
    for r in 0..rooms {
        let room = format!("!room{r:05}:example.org");
        if r % 10 == 0 {
            out.push(join(t, ip, &room));
            out.push(members(t, ip, &room, sizes.next(2_000, 20_000)));
        }
        for _ in 0..3 {
            out.push(messages(t, ip, &room, sizes.next(5_000, 60_000)));
        }
        if r % 4 == 0 {
            out.push(profile(t, ip, &format!("@p{r}:example.org")));
        }
    }
    for m in 0..media {
        let id = format!("M{m:06}abcdefghij");
        out.push(download(t, ip, &id, sizes.next(10_000, 2_000_000)));
        if m % 5 == 0 {
            out.push(thumbnail(t, ip, &id, sizes.next(2_000, 30_000)));
        }
    }
    let mut with_syncs = Vec::new();
    for (i, r) in out.into_iter().enumerate() {
        if i % 50 == 0 {
            with_syncs.push(sync(t, ip, sizes.next(500, 3_000)));
        }
        with_syncs.push(r);
    }
    with_syncs
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, start + i as u64 * step))
        .collect()
}

/// Benign clients 2..2+clients, each from its own address `198.51.100.N`: a /sync every
/// 30 s, now and then a page of one of three rooms or a piece of media; plus token-less
/// thumbnails from `192.0.2.9`. Runs for `duration` ms from `start`.
pub(crate) fn benign(start: u64, duration: u64, clients: u64) -> Vec<(RequestRecord, u64)> {
    let mut sizes = Sizes(7);
    let mut out = Vec::new();
    for c in 0..clients {
        let token = Some(2 + c);
        let ip = format!("198.51.100.{}", 10 + c);
        let mut t = start + c * 997;
        let mut n = 0u64;
        while t < start + duration {
            out.push((sync(token, &ip, sizes.next(300, 4_000)), t));
            if n % 7 == 3 {
                let room = format!("!team{}:example.org", n % 3);
                out.push((
                    messages(token, &ip, &room, sizes.next(2_000, 10_000)),
                    t + 200,
                ));
            }
            if n % 23 == 5 {
                let id = format!("avatar{}", n % 2);
                out.push((
                    thumbnail(token, &ip, &id, sizes.next(3_000, 5_000)),
                    t + 400,
                ));
            }
            n += 1;
            t += 30 * SECOND;
        }
    }
    for i in 0..20 {
        let id = format!("public{}", i % 4);
        out.push((thumbnail(None, "192.0.2.9", &id, 4_000), start + i * MINUTE));
    }
    out.sort_by_key(|(_, t)| *t);
    out
}

/// What a report should say about the requests `pick` selects, computed without the
/// ledger: totals and, per section, id → (requests, bytes out).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub sections: BTreeMap<&'static str, BTreeMap<String, (u64, u64)>>,
}

pub(crate) fn expected(
    stream: &[(RequestRecord, u64)],
    pick: impl Fn(&RequestRecord, u64) -> bool,
) -> Expected {
    let mut e = Expected::default();
    for (r, t) in stream {
        if !pick(r, *t) {
            continue;
        }
        e.requests += 1;
        e.bytes_in += r.bytes_in;
        e.bytes_out += r.bytes_out;
        let mut add = |section: &'static str, id: String| {
            let entry = e
                .sections
                .entry(section)
                .or_default()
                .entry(id)
                .or_default();
            entry.0 += 1;
            entry.1 += r.bytes_out;
        };
        add("endpoints", r.endpoint.to_owned());
        if let Some(room) = &r.room {
            let section = match r.class {
                Some(Class::RoomHistory | Class::RoomMembers | Class::RoomState) => "rooms_read",
                Some(Class::Join) => "rooms_joined",
                _ => "rooms_other",
            };
            add(section, room.clone());
        }
        if let (Some(server), Some(id)) = (&r.media_server, &r.media_id) {
            add("media", format!("mxc://{server}/{id}"));
        }
        if let Some(user) = &r.target_user {
            add("users_looked_up", user.clone());
        }
    }
    e
}

/// The same view of a report.
pub(crate) fn seen(report: &Report) -> Expected {
    let mut e = Expected {
        requests: report.requests,
        bytes_in: report.bytes_in,
        bytes_out: report.bytes_out,
        sections: BTreeMap::new(),
    };
    for (name, entries) in [
        ("endpoints", &report.endpoints),
        ("rooms_read", &report.rooms_read),
        ("rooms_joined", &report.rooms_joined),
        ("rooms_other", &report.rooms_other),
        ("media", &report.media),
        ("media_other", &report.media_other),
        ("users_looked_up", &report.users_looked_up),
    ] {
        if entries.is_empty() {
            continue;
        }
        let section = e.sections.entry(name).or_default();
        for entry in entries {
            let id = entry.id.clone().expect("items have ids");
            assert!(
                section
                    .insert(id, (entry.requests, entry.bytes_out))
                    .is_none(),
                "{name} lists an item twice"
            );
        }
    }
    e
}

/// Feeds a stream, ticking the ledger once per second of stream time.
pub(crate) fn feed(ledger: &mut Ledger, stream: &[(RequestRecord, u64)]) {
    let mut next_tick = stream.first().map_or(0, |(_, t)| *t);
    for (r, t) in stream {
        while *t >= next_tick {
            ledger.tick(next_tick).expect("tick");
            next_tick += SECOND;
        }
        ledger.observe(r, *t);
    }
}

/// Ticks at `now` (and a second later, and so on) until no compaction is left to do: each
/// tick starts at most one, which `flush` waits for.
pub(crate) fn settle(ledger: &mut Ledger, now: u64) {
    for i in 0..50 {
        let before = ledger.stats().compactions;
        ledger.tick(now + i * SECOND).expect("tick");
        ledger.flush().expect("flush");
        if ledger.stats().compactions == before && i > 0 {
            return;
        }
    }
}

pub(crate) fn token(n: u64) -> Subject {
    Subject::Token(fp(n))
}
