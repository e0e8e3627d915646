//! `homeserver-sensor report` on the real homeserver: a scraper on a stolen account walks the
//! server while the agent watches; the agent is stopped and started again half-way (after
//! the rooms, before the user directory and the media), as a package upgrade or a reboot
//! would. The report for the scraper's user, read from the ledger both runs wrote, must
//! list exactly the rooms, media and profiles the scraper reached, with exactly the requests
//! and bytes the scraper sent and received for each.
//!
//! The scraper talks to Synapse directly here (its address comes from the connection, not
//! from X-Forwarded-For), so that what it received is exactly what Synapse sent: through
//! nginx the totals differ by nginx's own response heads, which `scenarios.rs` checks
//! request by request against Synapse's access log.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use homeserver_sensor::config::Config;
use homeserver_sensor_tests::{
    Agent, Cgroup, Exchange, Homeserver, HomeserverOptions, Role, TempDir, require_root,
    scrape_with, sibling_binary,
};
use serde_json::Value;

const SCRAPER: &str = "127.0.0.32";
/// 8 public rooms, 2 a page: 4 directory pages.
const DIRECTORY_PAGE: u32 = 2;

/// Requests, bytes in, bytes out.
type Totals = (u64, u64, u64);

fn add(t: &mut Totals, e: &Exchange) {
    t.0 += 1;
    t.1 += e.sent;
    t.2 += e.received();
}

fn totals<'a>(exchanges: impl IntoIterator<Item = &'a Exchange>) -> Totals {
    let mut t = Totals::default();
    for e in exchanges {
        add(&mut t, e);
    }
    t
}

/// A report section as `id -> (requests, bytes_in, bytes_out)`.
fn section(report: &Value, name: &str) -> BTreeMap<String, Totals> {
    report[name]
        .as_array()
        .unwrap_or_else(|| panic!("no section {name}: {report}"))
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("-").to_string(),
                (
                    e["requests"].as_u64().unwrap(),
                    e["bytes_in"].as_u64().unwrap(),
                    e["bytes_out"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// The scraper's connections (its own addresses) that `exchanges` went over.
fn connections(exchanges: &[Exchange]) -> Vec<SocketAddr> {
    let mut locals: Vec<SocketAddr> = exchanges.iter().map(|e| e.local).collect();
    locals.sort();
    locals.dedup();
    locals
}

fn requests_of(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "request" && r["client_ip"] == SCRAPER)
        .collect()
}

#[test]
fn report_lists_exactly_what_the_scraper_reached_across_an_agent_restart() {
    require_root();
    let cgroup = Cgroup::new("report");
    let hs = Homeserver::start(HomeserverOptions {
        cgroup: Some(&cgroup),
    });
    // The state directory outlives both runs of the agent: the ledger, and the key that
    // makes a token's fingerprint the same in both.
    let state = TempDir::new("state");
    let mut config = Config::default();
    config.attribution.key_file = state.path.join("fingerprint.key");
    config.ledger.dir = state.path.join("ledger");
    let scraper = hs.seed.users_with(Role::Scraper)[0].clone();
    let from: IpAddr = SCRAPER.parse().unwrap();

    let mut agent = Some(Agent::for_cgroup(&cgroup, config.clone()));
    let mut before = Vec::new();
    // How many exchanges the first run saw.
    let mut gap = 0;
    let report = scrape_with(hs.synapse_addr, &scraper, from, DIRECTORY_PAGE, |session| {
        // No connection stays open across the gap: the scraper reconnects afterwards, as
        // any client does when its server restarts.
        session.close();
        gap = session.exchanges.len();
        let mut first = agent.take().expect("first agent");
        // Every connection's end, and so the records of all its requests.
        first.wait_for_closed(&connections(&session.exchanges), Duration::from_secs(60));
        before = first.stop();
        agent = Some(Agent::for_cgroup(&cgroup, config.clone()));
    });
    // The scrape closed its last connection: wait for the records of those after the gap.
    let mut second = agent.take().expect("second agent");
    second.wait_for_closed(
        &connections(&report.exchanges[gap..]),
        Duration::from_secs(60),
    );
    let after = second.stop();

    // Both runs saw part of the scrape, and together all of it.
    let (n_before, n_after) = (requests_of(&before).len(), requests_of(&after).len());
    let rooms_part: usize = report.directory_pages.len()
        + report
            .rooms
            .iter()
            .map(|r| r.exchanges().count())
            .sum::<usize>();
    assert_eq!(
        n_before, rooms_part,
        "first run: the directory and the rooms"
    );
    assert_eq!(
        n_before + n_after,
        report.exchanges.len(),
        "both runs together: every request"
    );
    let fingerprints: BTreeSet<&str> = requests_of(&before)
        .into_iter()
        .chain(requests_of(&after))
        .filter_map(|r| r["token"].as_str())
        .collect();
    assert_eq!(
        fingerprints.len(),
        1,
        "one token, one fingerprint: {fingerprints:?}"
    );

    let out = Command::new(sibling_binary("homeserver-sensor"))
        .args([
            "report",
            "--user",
            &scraper.user_id,
            "--json",
            "--ledger-dir",
        ])
        .arg(&config.ledger.dir)
        .output()
        .expect("run homeserver-sensor report");
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    eprintln!(
        "report: {} requests, {} bytes out, {} segments read",
        r["requests"], r["bytes_out"], r["segments_read"]
    );
    let ledger_bytes: u64 = std::fs::read_dir(&config.ledger.dir)
        .expect("ledger dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    eprintln!(
        "ledger: {ledger_bytes} bytes on disk for {} requests ({:.1} KB per 1,000, open hour, two runs)",
        report.exchanges.len(),
        ledger_bytes as f64 / report.exchanges.len() as f64
    );
    assert_eq!(r["found"], true, "{r}");
    assert_eq!(r["skipped_lines"], 0, "{r}");
    assert_eq!(r["not_listed"]["items"], 0, "{r}");
    // The agent had request heads throughout, and said so in the ledger: no period
    // without them in the range.
    assert_eq!(r["coverage"]["known"], true, "{r}");
    assert_eq!(
        r["coverage"]["gaps"].as_array().map(Vec::len),
        Some(0),
        "{r}"
    );

    // Totals: every request and byte of the scrape.
    let all = totals(&report.exchanges);
    assert_eq!(
        (
            r["requests"].as_u64().unwrap(),
            r["bytes_in"].as_u64().unwrap(),
            r["bytes_out"].as_u64().unwrap()
        ),
        all,
        "report totals (requests, bytes in, bytes out) against what the scraper sent and received"
    );
    let one = |id: &str| BTreeMap::from([(id.to_string(), all)]);
    assert_eq!(section(&r, "users"), one(&scraper.user_id));
    assert_eq!(section(&r, "addresses"), one(SCRAPER));
    let fp = fingerprints.into_iter().next().unwrap();
    assert_eq!(section(&r, "tokens"), one(fp));

    // Rooms read: history pages and the member list of each, exactly.
    let rooms_read: BTreeMap<String, Totals> = report
        .rooms
        .iter()
        .map(|room| {
            let t = totals(room.history.iter().chain(std::iter::once(&room.members)));
            (room.room_id.clone(), t)
        })
        .collect();
    assert_eq!(rooms_read.len(), hs.seed.public_rooms().len());
    assert_eq!(section(&r, "rooms_read"), rooms_read, "rooms read");
    let rooms_joined: BTreeMap<String, Totals> = report
        .rooms
        .iter()
        .map(|room| (room.room_id.clone(), totals([&room.join])))
        .collect();
    assert_eq!(section(&r, "rooms_joined"), rooms_joined, "rooms joined");
    // No private room, nothing the scraper did not reach.
    for room in hs.seed.private_rooms() {
        assert!(!r.to_string().contains(&room.room_id), "{}", room.room_id);
    }

    // Media (after the restart): both downloads of each file.
    assert!(!report.media.is_empty());
    let media: BTreeMap<String, Totals> = report
        .media
        .iter()
        .map(|m| (m.mxc.clone(), totals([&m.authenticated, &m.legacy])))
        .collect();
    assert_eq!(section(&r, "media"), media, "media");

    // Users looked up (after the restart): one profile request each.
    let profiles: BTreeMap<String, Totals> = report
        .profiles
        .iter()
        .map(|(id, e)| (id.clone(), totals([e])))
        .collect();
    assert!(!profiles.is_empty());
    assert_eq!(section(&r, "users_looked_up"), profiles, "users looked up");

    // The text form names the same user and says how much.
    let text = Command::new(sibling_binary("homeserver-sensor"))
        .args(["report", "--user", &scraper.user_id, "--ledger-dir"])
        .arg(&config.ledger.dir)
        .output()
        .expect("run homeserver-sensor report");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&scraper.user_id), "{text}");
    assert!(text.contains(SCRAPER), "{text}");
    assert!(!text.contains("without request heads"), "{text}");
    for room in &report.rooms {
        assert!(
            text.contains(&room.room_id),
            "{} not in: {text}",
            room.room_id
        );
    }
}
