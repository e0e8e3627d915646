//! End-to-end scenarios on the real homeserver (a seeded Synapse behind nginx, in a cgroup
//! the agent watches), with clients no part of the sensor knows about
//! (`tests/src/scenario.rs`): a scraper on one stolen account, a token-less media harvester,
//! an admin token used from an unexpected address, three benign users, and a client talking
//! to Synapse directly on keep-alive connections, all at once.
//!
//! What it asserts, against the agent's records and Synapse's own access log:
//! 1. every breadth rule the scraper's traffic crosses fires for its token (user, token
//!    fingerprint, client address), within 2 s of the request that crossed the threshold;
//! 2. the harvester is flagged by address (`tokenless_media`), the abuser by address
//!    (`admin_api.address`, critical) and the admin token on its first admin call
//!    (`admin_api.new_token`), in time too;
//! 3. no alert names a benign user, the direct client's user, or their addresses;
//! 4. the sensor's `request` records and Synapse's access log list the same requests, with
//!    the same user (except on the legacy media API, which Synapse never authenticates)
//!    and client address, and `bytes_out` is Synapse's body bytes plus a response head
//!    (and the chunk framing of chunked bodies);
//! 5. the direct client's requests have its own address, its user, and share the cookie of
//!    their keep-alive connection, with exact bytes.
//!
//! Every discrepancy is collected and reported at the end (one run shows them all).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use homeserver_sensor::{
    config::Config,
    detect::{Limit, Windowed},
};
use homeserver_sensor_tests::{
    AccessLogEntry, Agent, Breadth, Cgroup, Exchange, Homeserver, HomeserverOptions, Milestone,
    Role, abuse_admin, benign, direct_keepalive, harvest, require_root, scrape,
};
use serde_json::Value;

// One loopback address per client, so each is told apart in every record and log line.
const SCRAPER: &str = "127.0.0.31";
const HARVESTER: &str = "127.0.0.51";
const ABUSER: &str = "127.0.0.66";
const DIRECT: &str = "127.0.0.41";
const BENIGN: [(&str, &str); 3] = [
    ("alice", "127.0.0.21"),
    ("bob", "127.0.0.22"),
    ("carol", "127.0.0.23"),
];
/// The direct client's account: a room member none of the other scenarios drives.
const DIRECT_USER: &str = "dave";

/// The scraper walks the room directory this many rooms per page (8 public rooms: 4 pages).
const DIRECTORY_PAGE: u32 = 2;

// Thresholds for a test-sized homeserver: 10 users, 8 public rooms, 10 media files (8 of them
// posted in rooms, 4 legacy). Each keeps the meaning of its default (README, "Detection")
// at this scale: above what the benign users here do (a person's session), below what the
// scraper does (a walk of the whole server).
const WINDOW_S: u64 = 600;
/// Default 100 rooms / 10 min: "a heavy user opens a few dozen rooms in a session", against
/// a scrape of every room. Here a benign user reads 2 of the 5 to 7 rooms it is in and the
/// scraper all 8 public rooms: 5 is more rooms than anyone here opens, and fewer than the
/// whole directory.
const ROOMS_READ: u64 = 5;
/// Default 30 joins / 10 min: "a newcomer joins a dozen or two of a curated list", nobody
/// joins most of a large directory by hand. Here the directory is 8 rooms: joining 5 of
/// them in 10 minutes is joining most of it.
const ROOMS_JOINED: u64 = 5;
/// Default 1,000 media / 10 min, far above a session's few hundred thumbnails. Here 8 files
/// are posted in rooms and a benign user fetches 2 of them: 6 distinct files is most of what
/// the server has, which only a harvest does.
const MEDIA: u64 = 6;
/// Default 300 searches and profiles / 10 min: an invitation costs a few dozen keystroke
/// searches. Here no benign user searches; the server has 10 accounts, so 10 lookups is as
/// many as there are users to look up, a directory walk.
const DIRECTORY: u64 = 10;
/// Default 100 `publicRooms` pages / 10 min: browsing by hand looks at a few dozen pages of
/// a large directory. Here, at 2 rooms a page, the 8-room directory is 4 pages: 3 pages is
/// walking most of it.
const ROOM_DIRECTORY: u64 = 3;
/// Default 500 token-less media / 10 min per address, against old clients and mail proxies
/// fetching a few each. Here 4 files are legacy (served without a token): 3 distinct ones
/// from one address is most of them.
const TOKENLESS_MEDIA: u64 = 3;

/// How long the benign users keep going, alongside the others.
const BENIGN_FOR: Duration = Duration::from_secs(25);
/// The latency the sensor must meet: the alert within this of the crossing request.
const MAX_ALERT_LATENCY: Duration = Duration::from_secs(2);
/// Synapse's response heads are a few hundred bytes; bytes_out minus the body is one.
const MAX_HEAD: u64 = 2048;

fn config() -> Config {
    let mut c = Config::default();
    // attribution.server_name stays unset: the agent must learn `test.example` from the
    // configuration file on Synapse's command line (`-c .../homeserver.yaml`). Trusted
    // proxies stay the default (loopback): nginx connects from 127.0.0.1, and the clients'
    // own loopback addresses arrive in X-Forwarded-For.
    let limit = |threshold| {
        [Limit {
            window_s: WINDOW_S,
            threshold,
        }]
    };
    let b = &mut c.detect.breadth;
    b.rooms_read = Windowed::with_limits(&limit(ROOMS_READ));
    b.rooms_joined = Windowed::with_limits(&limit(ROOMS_JOINED));
    b.media = Windowed::with_limits(&limit(MEDIA));
    b.directory = Windowed::with_limits(&limit(DIRECTORY));
    b.room_directory = Windowed::with_limits(&limit(ROOM_DIRECTORY));
    c.detect.tokenless_media = Windowed::with_limits(&limit(TOKENLESS_MEDIA));
    // Operators run admin tools on the host itself (127.0.0.1); every other loopback address
    // here stands for a remote client.
    c.detect.admin_api.allow = vec!["127.0.0.1/32".into()];
    c
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn rfc3339_to_system(ts: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("bad timestamp {ts}: {e}"));
    SystemTime::UNIX_EPOCH + Duration::from_nanos(t.unix_timestamp_nanos() as u64)
}

/// `b - a` in milliseconds, signed.
fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

fn s(v: &Value) -> Option<&str> {
    v.as_str()
}

/// (client address, method, path): how a request is named in every source.
type Key = (String, String, String);

fn record_key(r: &Value) -> Key {
    (
        s(&r["client_ip"]).unwrap_or("-").to_string(),
        s(&r["method"]).unwrap_or("-").to_string(),
        s(&r["path"]).unwrap_or("-").to_string(),
    )
}

fn log_key(e: &AccessLogEntry) -> Key {
    (e.client_ip.clone(), e.method.clone(), e.path.clone())
}

fn exchange_key(from: &str, e: &Exchange) -> Key {
    (from.to_string(), e.method.clone(), e.path.clone())
}

/// The harness's own readiness polls (before the agent started) are no scenario's.
fn harness(key: &Key) -> bool {
    key.0 == "127.0.0.1" && key.2 == "/_matrix/client/versions"
}

/// Multiset difference, both ways: what `a` has more of than `b`, and the reverse.
/// Keys with a count.
type Counted = Vec<(Key, i64)>;

fn multiset_diff(a: &[Key], b: &[Key]) -> (Counted, Counted) {
    let mut counts: BTreeMap<&Key, i64> = BTreeMap::new();
    for k in a {
        *counts.entry(k).or_default() += 1;
    }
    for k in b {
        *counts.entry(k).or_default() -= 1;
    }
    let more_a = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| ((*k).clone(), *n))
        .collect();
    let more_b = counts
        .iter()
        .filter(|(_, n)| **n < 0)
        .map(|(k, n)| ((*k).clone(), -*n))
        .collect();
    (more_a, more_b)
}

/// Discrepancies, by kind: each kind is reported with its count and first examples.
#[derive(Default)]
struct Problems(BTreeMap<String, Vec<String>>);

impl Problems {
    fn check(&mut self, ok: bool, kind: &str, detail: impl FnOnce() -> String) {
        if !ok {
            self.0.entry(kind.to_string()).or_default().push(detail());
        }
    }

    fn report(&self) -> String {
        let mut out = String::new();
        for (kind, details) in &self.0 {
            out.push_str(&format!("\n== {kind}: {} time(s)\n", details.len()));
            for d in details.iter().take(3) {
                out.push_str(&format!("  - {d}\n"));
            }
        }
        out
    }
}

#[test]
fn scenarios_on_a_real_homeserver_with_the_sensor_watching() {
    require_root();
    let t0 = Instant::now();
    let cgroup = Cgroup::new("scenarios");
    let hs = Homeserver::start(HomeserverOptions {
        cgroup: Some(&cgroup),
    });
    let hs_up = t0.elapsed();
    let agent = Agent::for_cgroup(&cgroup, config());
    let agent_started = SystemTime::now();
    // Everything Synapse logged so far (its readiness polls) came before the agent.
    let log_start = hs.access_log().len();
    let seed = &hs.seed;
    let scraper = seed.users_with(Role::Scraper)[0].clone();
    let admin = seed.users_with(Role::Admin)[0].clone();
    let direct_user = seed.user(DIRECT_USER).clone();
    assert_eq!(direct_user.role, Role::Member);

    // Everyone at once: the benign users and the direct client for about 25 s, the scraper,
    // the harvester and the abuser among them. The pauses below place them in that traffic
    // (part of the scenario, not waits).
    let (scrape_report, harvest_report, admin_report, benign_reports, direct_report) =
        std::thread::scope(|sc| {
            let benign_threads: Vec<_> = BENIGN
                .iter()
                .map(|(name, addr)| {
                    let user = seed.user(name).clone();
                    let hs = &hs;
                    sc.spawn(move || benign(hs, &user, ip(addr), BENIGN_FOR))
                })
                .collect();
            let direct_thread = {
                let hs = &hs;
                let user = direct_user.clone();
                sc.spawn(move || direct_keepalive(hs, &user, ip(DIRECT), 5, Duration::from_secs(4)))
            };
            std::thread::sleep(Duration::from_secs(3));
            let t = Instant::now();
            let scrape_report = scrape(&hs, &scraper, ip(SCRAPER), DIRECTORY_PAGE);
            eprintln!(
                "scraper: {} requests, {} bytes received, in {:.1} s",
                scrape_report.exchanges.len(),
                scrape_report.received(),
                t.elapsed().as_secs_f64()
            );
            std::thread::sleep(Duration::from_secs(1));
            let harvest_report = harvest(&hs, ip(HARVESTER), &seed.media);
            std::thread::sleep(Duration::from_secs(1));
            let admin_report = abuse_admin(&hs, &admin, ip(ABUSER));
            let benign_reports: Vec<_> = benign_threads
                .into_iter()
                .map(|t| t.join().expect("benign client"))
                .collect();
            let direct_report = direct_thread.join().expect("direct client");
            (
                scrape_report,
                harvest_report,
                admin_report,
                benign_reports,
                direct_report,
            )
        });
    let traffic_done = t0.elapsed();

    // What the clients did, keyed as the sensor and Synapse name requests.
    let mut client_keys: Vec<Key> = Vec::new();
    client_keys.extend(
        scrape_report
            .exchanges
            .iter()
            .map(|e| exchange_key(SCRAPER, e)),
    );
    client_keys.extend(
        harvest_report
            .exchanges
            .iter()
            .map(|e| exchange_key(HARVESTER, e)),
    );
    client_keys.extend(admin_report.calls.iter().map(|e| exchange_key(ABUSER, e)));
    for (b, (_, addr)) in benign_reports.iter().zip(BENIGN) {
        client_keys.extend(b.exchanges.iter().map(|e| exchange_key(addr, e)));
    }
    client_keys.extend(direct_report.exchanges().map(|e| exchange_key(DIRECT, e)));
    let expected = client_keys.len();

    // Synapse logs a request once its response is sent; the agent writes its record once
    // the exchange is over (the connection closed, through nginx): wait for both, each
    // request of the clients (the harness's own polls are not theirs). Past the bound the
    // checks below say what is missing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let logged = hs.access_log()[log_start..]
            .iter()
            .filter(|e| !harness(&log_key(e)))
            .count();
        let recorded = agent
            .records()
            .iter()
            .filter(|r| r["kind"] == "request" && !harness(&record_key(r)))
            .count();
        if logged >= expected && recorded >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let records = agent.stop();
    let log: Vec<AccessLogEntry> = hs
        .access_log()
        .split_off(log_start)
        .into_iter()
        .filter(|e| !harness(&log_key(e)))
        .collect();
    let mut p = Problems::default();

    let requests: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "request")
        .filter(|r| !harness(&record_key(r)))
        .collect();
    let alerts: Vec<&Value> = records.iter().filter(|r| r["kind"] == "alert").collect();
    eprintln!(
        "{expected} client requests, {} access log lines, {} request records, {} alerts",
        log.len(),
        requests.len(),
        alerts.len()
    );
    for a in &alerts {
        eprintln!("alert: {a}");
    }
    for r in &requests {
        let ts = rfc3339_to_system(s(&r["ts"]).expect("ts"));
        p.check(
            ts + Duration::from_millis(1) >= agent_started,
            "request record from before the agent started",
            || format!("{r}"),
        );
    }

    // Preconditions: the scenarios did what they claim, and the benign ones stay below every
    // threshold (else an alert naming them would be right).
    assert_eq!(scrape_report.rooms.len(), seed.public_rooms().len());
    for b in &benign_reports {
        assert!(b.tally.count(Breadth::RoomsRead) < ROOMS_READ, "{b:?}");
        assert!(b.tally.count(Breadth::Media) < MEDIA, "{b:?}");
        assert!(
            b.exchanges.len() >= 15,
            "{}: too little activity",
            b.user_id
        );
    }
    let t = &scrape_report.tally;
    for (kind, threshold) in [
        (Breadth::RoomsRead, ROOMS_READ),
        (Breadth::RoomsJoined, ROOMS_JOINED),
        (Breadth::Media, MEDIA),
        (Breadth::Directory, DIRECTORY),
        (Breadth::RoomDirectory, ROOM_DIRECTORY),
    ] {
        assert!(
            t.count(kind) >= threshold,
            "scraper {kind:?}: {}",
            t.count(kind)
        );
        // Below twice the threshold: one alert per rule (it fires again on doubling).
        assert!(t.count(kind) < 2 * threshold, "scraper {kind:?}");
    }
    assert!(harvest_report.tally.count(Breadth::TokenlessMedia) >= TOKENLESS_MEDIA);

    // The tokens' fingerprints (a keyed hash the test cannot compute), from the records of
    // the one client that used each token.
    let fingerprints = |addr: &str| -> BTreeSet<String> {
        requests
            .iter()
            .filter(|r| r["client_ip"] == addr)
            .filter_map(|r| s(&r["token"]).map(str::to_string))
            .collect()
    };
    let scraper_fps = fingerprints(SCRAPER);
    p.check(scraper_fps.len() == 1, "fingerprints", || {
        format!("the scraper's token has one fingerprint, not {scraper_fps:?}")
    });
    let scraper_fp = scraper_fps.into_iter().next().unwrap_or_default();
    let admin_fps = fingerprints(ABUSER);
    p.check(admin_fps.len() == 1, "fingerprints", || {
        format!("the admin token has one fingerprint, not {admin_fps:?}")
    });
    let admin_fp = admin_fps.into_iter().next().unwrap_or_default();

    // 1 and 2: the alerts, and how long after the crossing request each came.
    let mut latencies: Vec<String> = Vec::new();
    let mut timed = |p: &mut Problems, name: &str, alert: &Value, m: Option<&Milestone>| {
        let Some(m) = m else {
            p.check(false, "threshold not reached by the client", || {
                name.to_string()
            });
            return;
        };
        let ts = rfc3339_to_system(s(&alert["ts"]).expect("ts"));
        let after_done = ms_between(m.reached, ts);
        let after_start = ms_between(m.started, ts);
        latencies.push(format!(
            "{name}: {after_done:+.0} ms after the crossing request completed \
             ({after_start:+.0} ms after it was sent: {} {}, #{} {})",
            m.method, m.path, m.count, m.item
        ));
        // The alert's ts has millisecond precision (truncated): 1 ms of slack before.
        p.check(
            after_start >= -1.0,
            "alert before the crossing request",
            || {
                format!(
                    "{name}: alert at {} before {} {} was even sent: counted on an earlier \
                 request? {alert}",
                    alert["ts"], m.method, m.path
                )
            },
        );
        p.check(
            after_done <= MAX_ALERT_LATENCY.as_secs_f64() * 1000.0,
            "alert late",
            || {
                format!(
                    "{name}: alert {after_done:.0} ms after {} {} completed, more than \
                     {MAX_ALERT_LATENCY:?}: {alert}",
                    m.method, m.path
                )
            },
        );
    };
    let first = |rule: &str, pred: &dyn Fn(&Value) -> bool| -> Option<Value> {
        alerts
            .iter()
            .filter(|a| a["rule"] == rule && pred(a))
            .min_by_key(|a| s(&a["ts"]).unwrap_or_default().to_string())
            .map(|a| (*a).clone())
    };
    for (rule, kind, threshold) in [
        ("breadth.rooms_read", Breadth::RoomsRead, ROOMS_READ),
        ("breadth.rooms_joined", Breadth::RoomsJoined, ROOMS_JOINED),
        ("breadth.media", Breadth::Media, MEDIA),
        ("breadth.directory", Breadth::Directory, DIRECTORY),
        (
            "breadth.room_directory",
            Breadth::RoomDirectory,
            ROOM_DIRECTORY,
        ),
    ] {
        let Some(a) = first(rule, &|a| a["subject"]["token"] == scraper_fp.as_str()) else {
            p.check(false, "missing alert", || {
                format!("no {rule} alert for the scraper's token {scraper_fp}")
            });
            continue;
        };
        p.check(
            a["subject"]["user"] == scraper.user_id.as_str(),
            "alert subject.user",
            || format!("{rule}: subject.user is not {}: {a}", scraper.user_id),
        );
        p.check(
            a["subject"]["client_ip"] == SCRAPER,
            "alert subject.client_ip",
            || format!("{rule}: subject.client_ip is not {SCRAPER}: {a}"),
        );
        p.check(
            a["threshold"] == threshold && a["window_s"] == WINDOW_S,
            "alert threshold",
            || format!("{rule}: threshold/window not {threshold}/{WINDOW_S}: {a}"),
        );
        // It fires on the request that reaches the threshold, so it counts exactly that.
        p.check(a["observed"] == threshold, "alert observed", || {
            format!("{rule}: observed is not the threshold {threshold}: {a}")
        });
        p.check(a["severity"] == "warning", "alert severity", || {
            format!("{rule}: severity is not warning: {a}")
        });
        timed(&mut p, rule, &a, t.reached(kind, threshold));
    }

    match first("tokenless_media", &|a| {
        a["subject"]["client_ip"] == HARVESTER
    }) {
        None => p.check(false, "missing alert", || {
            format!("no tokenless_media alert for the harvester {HARVESTER}")
        }),
        Some(a) => {
            p.check(
                a["subject"]["token"].is_null() && a["subject"]["user"].is_null(),
                "alert subject",
                || format!("tokenless_media names a token or user: {a}"),
            );
            p.check(a["observed"] == TOKENLESS_MEDIA, "alert observed", || {
                format!("tokenless_media: observed is not {TOKENLESS_MEDIA}: {a}")
            });
            let m = harvest_report
                .tally
                .reached(Breadth::TokenlessMedia, TOKENLESS_MEDIA);
            timed(&mut p, "tokenless_media", &a, m);
        }
    }
    match first("admin_api.address", &|a| {
        a["subject"]["client_ip"] == ABUSER
    }) {
        None => p.check(false, "missing alert", || {
            format!("no admin_api.address alert for {ABUSER}")
        }),
        Some(a) => {
            p.check(a["severity"] == "critical", "alert severity", || {
                format!("admin_api.address is not critical: {a}")
            });
            p.check(a["subject"]["token"].is_null(), "alert subject", || {
                format!("admin_api.address is an address's alert: {a}")
            });
            let m = admin_report.tally.reached(Breadth::AdminCalls, 1);
            timed(&mut p, "admin_api.address", &a, m);
        }
    }
    match first("admin_api.new_token", &|a| {
        a["subject"]["token"] == admin_fp.as_str()
    }) {
        None => p.check(false, "missing alert", || {
            format!("no admin_api.new_token alert for the admin token {admin_fp}")
        }),
        Some(a) => {
            p.check(
                a["subject"]["user"] == admin.user_id.as_str(),
                "alert subject.user",
                || {
                    format!(
                        "admin_api.new_token: subject.user is not {}: {a}",
                        admin.user_id
                    )
                },
            );
            p.check(
                a["subject"]["client_ip"] == ABUSER,
                "alert subject.client_ip",
                || format!("admin_api.new_token: subject.client_ip is not {ABUSER}: {a}"),
            );
            p.check(a["severity"] == "warning", "alert severity", || {
                format!("admin_api.new_token from outside `allow` is not a warning: {a}")
            });
            let m = admin_report.tally.reached(Breadth::AdminCalls, 1);
            timed(&mut p, "admin_api.new_token", &a, m);
        }
    }
    for l in &latencies {
        eprintln!("latency: {l}");
    }

    // 3: nothing names the benign users or the direct client, and nothing else fires.
    let innocent_users: Vec<String> = BENIGN
        .iter()
        .map(|(n, _)| seed.user(n).user_id.clone())
        .chain([direct_user.user_id.clone()])
        .collect();
    let innocent_ips: Vec<&str> = BENIGN.iter().map(|(_, a)| *a).chain([DIRECT]).collect();
    for a in &alerts {
        let user = s(&a["subject"]["user"]).unwrap_or_default();
        let addr = s(&a["subject"]["client_ip"]).unwrap_or_default();
        p.check(
            !innocent_users.iter().any(|u| u == user) && !innocent_ips.contains(&addr),
            "alert names a benign client",
            || format!("{a}"),
        );
        let listed = a["evidence"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|x| innocent_ips.contains(&x));
        p.check(!listed, "alert lists a benign address", || format!("{a}"));
        let expected_subject = a["subject"]["token"] == scraper_fp.as_str()
            || a["subject"]["token"] == admin_fp.as_str()
            || (a["subject"]["token"].is_null()
                && (addr == SCRAPER || addr == HARVESTER || addr == ABUSER));
        p.check(
            expected_subject && a["rule"] != "sensor_health",
            "unexpected alert",
            || format!("{a}"),
        );
    }

    // 4: the sensor's request records, Synapse's access log and the clients agree on the set
    // of requests, matched one to one by (client address, method, path with the token
    // redacted) as multisets. Within a key (it repeats only when one client asks the same
    // thing twice, e.g. a media file), records are paired with log lines in the order the
    // requests started, preferring a line that leaves a plausible head size.
    let record_keys: Vec<Key> = requests.iter().map(|r| record_key(r)).collect();
    let log_keys: Vec<Key> = log.iter().map(log_key).collect();
    let (only_records, only_log) = multiset_diff(&record_keys, &log_keys);
    for (k, n) in only_records {
        p.check(false, "request record with no access log line", || {
            format!("{n} x {k:?}")
        });
    }
    for (k, n) in only_log {
        p.check(false, "access log line with no request record", || {
            format!("{n} x {k:?}")
        });
    }
    let (only_records, only_clients) = multiset_diff(&record_keys, &client_keys);
    for (k, n) in only_records {
        p.check(false, "request record no client sent", || {
            format!("{n} x {k:?}")
        });
    }
    for (k, n) in only_clients {
        p.check(false, "request sent with no record", || {
            format!("{n} x {k:?}")
        });
    }

    let mut unused: BTreeMap<Key, Vec<&AccessLogEntry>> = BTreeMap::new();
    for e in &log {
        unused.entry(log_key(e)).or_default().push(e);
    }
    let mut pairs: Vec<(&Value, &AccessLogEntry)> = Vec::new();
    let mut by_ts = requests.clone();
    by_ts.sort_by_key(|r| s(&r["ts"]).unwrap_or_default().to_string());
    for r in by_ts {
        let Some(candidates) = unused.get_mut(&record_key(r)) else {
            continue;
        };
        let good = |e: &AccessLogEntry| {
            let head = r["bytes_out"].as_u64().unwrap_or(0) as i64 - e.response_bytes as i64;
            head > 0 && head < MAX_HEAD as i64
        };
        let i = candidates.iter().position(|e| good(e)).unwrap_or(0);
        if !candidates.is_empty() {
            pairs.push((r, candidates.remove(i)));
        }
    }
    let mut heads: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (r, e) in &pairs {
        // Synapse never authenticates the legacy media API (`/_matrix/media/v3/download`):
        // it logs no requester even when a token is sent, while the sensor names the user
        // the token claims (README: "what the token claims"). Everywhere else Synapse checked
        // the token, and the two must agree.
        let legacy_media = s(&r["path"]).is_some_and(|x| x.starts_with("/_matrix/media/"));
        let user_agrees = if legacy_media {
            e.requester.is_none()
        } else {
            s(&r["user"]) == e.requester.as_deref()
        };
        p.check(user_agrees, "user differs from Synapse's requester", || {
            format!("record {r}\n    log {e:?}")
        });
        p.check(
            r["head"] == "parsed" && r["complete"] == true,
            "request head not parsed whole",
            || format!("{r}"),
        );
        // bytes_out is every byte Synapse sent for the request; Synapse logs the body alone
        // (Twisted's `sentLength`, what the handler wrote). The difference is the response
        // head (status line, Date, Server, Content-Type, CORS and cache headers: a few
        // hundred bytes), plus, for the JSON responses Synapse sends with
        // `Transfer-Encoding: chunked`, the chunk framing (a size line and CRLF per chunk,
        // and the 5-byte last chunk: a dozen bytes for these responses). Never empty, never
        // near 2 KiB.
        let head = r["bytes_out"].as_u64().unwrap_or(0) as i64 - e.response_bytes as i64;
        p.check(
            e.finished && head > 0 && head < MAX_HEAD as i64,
            "bytes_out - sentLength not a response head",
            || {
                format!(
                    "bytes_out {} - sentLength {} = {head}: record {r}\n    log {e:?}",
                    r["bytes_out"], e.response_bytes
                )
            },
        );
        let endpoint = s(&r["endpoint"]).unwrap_or("?").to_string();
        let h = heads.entry(endpoint).or_insert((i64::MAX, i64::MIN));
        h.0 = h.0.min(head);
        h.1 = h.1.max(head);
        // Through nginx the address comes from X-Forwarded-For; directly, from the peer.
        let via = if r["client_ip"] == DIRECT {
            "peer"
        } else {
            "x_forwarded_for"
        };
        p.check(r["client_ip_source"] == via, "client_ip_source", || {
            format!("not {via}: {r}")
        });
    }
    eprintln!(
        "{} request records paired one to one with access log lines; bytes_out - sentLength \
         by endpoint (min, max): {heads:?}",
        pairs.len()
    );

    // What the detection rules read from the scraper's records matches what it did.
    let scraper_records: Vec<&Value> = requests
        .iter()
        .filter(|r| r["client_ip"] == SCRAPER)
        .copied()
        .collect();
    for r in &scraper_records {
        p.check(r["token"] == scraper_fp.as_str(), "scraper token", || {
            format!("a scraper request without its token: {r}")
        });
        let query_token = s(&r["path"]).is_some_and(|x| x.contains("access_token=<redacted>"));
        let source = if query_token { "query" } else { "header" };
        p.check(r["token_source"] == source, "token_source", || {
            format!("not {source}: {r}")
        });
    }
    let distinct = |classes: &[&str], field: &str| -> u64 {
        scraper_records
            .iter()
            .filter(|r| classes.iter().any(|c| r["class"] == *c))
            .filter_map(|r| s(&r[field]))
            .collect::<BTreeSet<_>>()
            .len() as u64
    };
    for (what, n, want) in [
        (
            "rooms read",
            distinct(&["room_history", "room_members"], "room"),
            t.count(Breadth::RoomsRead),
        ),
        (
            "rooms joined",
            distinct(&["join"], "room"),
            t.count(Breadth::RoomsJoined),
        ),
        (
            "media",
            distinct(&["media_download", "media_thumbnail"], "media_id"),
            t.count(Breadth::Media),
        ),
        (
            "profiles",
            distinct(&["profile"], "target_user"),
            scrape_report.profiles.len() as u64,
        ),
    ] {
        p.check(n == want, "scraper's items in the records", || {
            format!("the records name {n} distinct {what}, the scraper did {want}")
        });
    }

    // 5: the direct client: its address from the peer, its user, one cookie per keep-alive
    // connection, and exact bytes (nothing between it and Synapse): bytes_out is what it
    // received, bytes_in what it sent, and bytes_out minus Synapse's sentLength is exactly
    // the response head it read plus the chunk framing of the body.
    for conn in &direct_report.connections {
        let local = conn[0].local.to_string();
        let mut on_conn: Vec<&Value> = requests
            .iter()
            .filter(|r| r["peer"] == local.as_str())
            .copied()
            .collect();
        on_conn.sort_by_key(|r| s(&r["ts"]).unwrap_or_default().to_string());
        p.check(
            on_conn.len() == conn.len(),
            "direct: records per connection",
            || {
                format!(
                    "{local}: {} requests sent, {} records: {on_conn:?}",
                    conn.len(),
                    on_conn.len()
                )
            },
        );
        let cookies: BTreeSet<u64> = on_conn
            .iter()
            .filter_map(|r| r["cookie"].as_u64())
            .collect();
        p.check(
            cookies.len() == 1,
            "direct: one cookie per connection",
            || format!("{local}: cookies {cookies:?}"),
        );
        for (ex, r) in conn.iter().zip(&on_conn) {
            p.check(
                r["method"] == ex.method.as_str()
                    && r["path"] == ex.path.as_str()
                    && r["client_ip"] == DIRECT
                    && r["client_ip_source"] == "peer"
                    && r["user"] == direct_user.user_id.as_str(),
                "direct: request attribution",
                || format!("{} {}: record {r}", ex.method, ex.path),
            );
            p.check(
                r["bytes_out"] == ex.received() && r["bytes_in"] == ex.sent,
                "direct: exact bytes",
                || {
                    format!(
                        "{} {}: client sent {} and received {}, record {r}",
                        ex.method,
                        ex.path,
                        ex.sent,
                        ex.received()
                    )
                },
            );
            if let Some((_, e)) = pairs.iter().find(|(x, _)| std::ptr::eq(*x, *r)) {
                let extra = r["bytes_out"].as_u64().unwrap_or(0) as i64 - e.response_bytes as i64;
                let framing = ex.body_bytes as i64 - ex.content_bytes as i64;
                p.check(
                    extra == ex.head_bytes as i64 + framing,
                    "direct: bytes_out - sentLength is not head + framing",
                    || {
                        format!(
                            "{}: bytes_out - sentLength = {extra}, the client read a {} byte \
                             head and {framing} bytes of chunk framing",
                            ex.path, ex.head_bytes
                        )
                    },
                );
            }
        }
    }

    eprintln!(
        "homeserver up in {:.1} s, traffic done at {:.1} s, test done in {:.1} s",
        hs_up.as_secs_f64(),
        traffic_done.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(p.0.is_empty(), "discrepancies:{}", p.report());
}
