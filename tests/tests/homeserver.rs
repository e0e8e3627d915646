//! Privileged test of the real-homeserver fixture, without the sensor: a seeded Synapse
//! behind nginx lists its public rooms, serves the seeded history and media, leaks the
//! legacy media without a token (and only those), logs every request with the client
//! address nginx forwarded and the user, and leaves no process behind.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use homeserver_sensor_tests::{
    AccessLogEntry, Cgroup, Homeserver, HomeserverOptions, Role, Room, http_request, require_root,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// `!` and `:` of a room id, percent-encoded for a path.
fn encode(id: &str) -> String {
    id.replace('!', "%21")
        .replace(':', "%3A")
        .replace('#', "%23")
}

/// Counts a room's `m.room.message` events by paginating `/messages` backwards from the
/// end, 100 at a time, as `token`'s user.
fn count_messages(hs: &Homeserver, room: &Room, token: &str) -> u64 {
    let mut count = 0;
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            encode(&room.room_id)
        );
        if let Some(f) = &from {
            path.push_str(&format!("&from={f}"));
        }
        let r = hs.synapse_request("GET", &path, Some(token), b"");
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let page = r.json();
        let chunk = page["chunk"].as_array().expect("chunk");
        count += chunk
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .count() as u64;
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_string()),
            _ => return count,
        }
    }
    panic!("more than 100 pages of history in {}", room.room_id);
}

/// The access log lines of requests for exactly `path` from `client`.
fn logged(hs: &Homeserver, client: &str, path: &str) -> AccessLogEntry {
    let found = hs.wait_for_access_log(|e| e.client_ip == client && e.path == path);
    assert_eq!(
        found.len(),
        1,
        "one request for {path} from {client}: {found:#?}"
    );
    found.into_iter().next().expect("one entry")
}

#[test]
fn seeded_homeserver_serves_its_rooms_and_media_and_logs_the_client() {
    require_root();
    let started = Instant::now();
    let cgroup = Cgroup::new("homeserver");
    let hs = Homeserver::start(HomeserverOptions {
        cgroup: Some(&cgroup),
    });
    eprintln!(
        "homeserver: seeded Synapse and nginx up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let seed = &hs.seed;
    let alice = seed.user("alice");
    let scraper = seed.user("scraper");
    assert_eq!(seed.users_with(Role::Admin).len(), 1);
    assert_eq!(seed.users_with(Role::Benign).len(), 3);
    assert!(seed.user("admin").admin);
    // Requests through nginx come from this address; direct ones from another.
    let via_nginx = "127.0.0.7";
    let direct = "127.0.0.8";

    // The process the sensor finds by its command line.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", hs.synapse_pid()))
        .expect("Synapse's /proc cmdline");
    let cmdline: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(cmdline, hs.synapse_cmdline);
    assert_eq!(cmdline[1..3], ["-m", "synapse.app.homeserver"]);
    // Started in the test's cgroup (cgroup v2 line "0::<path>").
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", hs.synapse_pid()))
        .expect("Synapse's /proc cgroup");
    assert!(
        cgroups.lines().any(|l| l == format!("0::{}", cgroup.rel)),
        "Synapse is not in {}: {cgroups}",
        cgroup.rel
    );

    // The room directory, as the scraper through nginx: every public room, no private one.
    let r = hs.nginx_request(
        ip(via_nginx),
        "GET",
        "/_matrix/client/v3/publicRooms?limit=100",
        Some(&scraper.access_token),
        b"",
    );
    assert_eq!(r.status, 200);
    let listed: BTreeSet<String> = r.json()["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|room| room["room_id"].as_str().expect("room_id").to_string())
        .collect();
    let public: BTreeSet<String> = seed
        .public_rooms()
        .iter()
        .map(|r| r.room_id.clone())
        .collect();
    assert!(public.len() >= 8, "{public:?}");
    assert_eq!(listed, public);
    let private = seed.private_rooms();
    assert!(!private.is_empty());
    for room in &private {
        assert!(!listed.contains(&room.room_id));
        assert!(!room.members.contains(&scraper.user_id));
        // Not in it, so not allowed to read it.
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
            encode(&room.room_id)
        );
        let r = hs.synapse_request("GET", &path, Some(&scraper.access_token), b"");
        assert_eq!(r.status, 403, "the scraper read the private room");
    }

    // The whole seeded history of every room, as its creator.
    for room in &seed.rooms {
        let creator = seed
            .users
            .iter()
            .find(|u| u.user_id == room.creator)
            .expect("creator");
        assert!(room.messages >= 40, "{room:?}");
        assert_eq!(
            count_messages(&hs, room, &creator.access_token),
            room.messages,
            "{}",
            room.name
        );
    }

    // Media with a token, through nginx: exactly the seeded sizes.
    let sizes: BTreeSet<u64> = seed.media.iter().map(|m| m.size).collect();
    assert!(
        sizes.contains(&1024) && sizes.contains(&(24 << 20)),
        "{sizes:?}"
    );
    for m in &seed.media {
        let r = hs.nginx_request(
            ip(via_nginx),
            "GET",
            &m.download_path(),
            Some(&alice.access_token),
            b"",
        );
        assert_eq!(r.status, 200, "{}", m.name);
        assert_eq!(r.body.len() as u64, m.size, "{}", m.name);
        let e = logged(&hs, via_nginx, &m.download_path());
        assert_eq!(e.requester.as_deref(), Some(alice.user_id.as_str()));
        assert_eq!((e.method.as_str(), e.status), ("GET", 200));
        assert_eq!(e.response_bytes, m.size, "{e:?}");
        assert!(e.finished && e.logged_at.is_some(), "{e:?}");
    }

    // Without a token on the legacy endpoint: the legacy media, and only those.
    assert!(seed.media.iter().any(|m| m.legacy) && seed.media.iter().any(|m| !m.legacy));
    for m in &seed.media {
        let r = hs.nginx_request(ip(via_nginx), "GET", &m.legacy_download_path(), None, b"");
        let e = logged(&hs, via_nginx, &m.legacy_download_path());
        assert_eq!(e.requester, None);
        if m.legacy {
            assert_eq!(r.status, 200, "{}", m.name);
            assert_eq!(r.body.len() as u64, m.size, "{}", m.name);
            assert_eq!((e.status, e.response_bytes), (200, m.size));
        } else {
            assert_eq!(r.status, 404, "{} served without a token", m.name);
            assert_eq!(e.status, 404);
        }
    }
    // Posted media are in their rooms.
    for m in seed.media.iter().filter(|m| m.room_id.is_some()) {
        let room = seed.room(m.room_id.as_deref().expect("room"));
        assert!(room.is_public, "{m:?}");
    }

    // A token in the query string: Synapse redacts it in the log, and still names the user.
    let whoami = "/_matrix/client/v3/account/whoami";
    let r = hs.nginx_request(
        ip(via_nginx),
        "GET",
        &format!("{whoami}?access_token={}", alice.access_token),
        None,
        b"",
    );
    assert_eq!(r.json()["user_id"], alice.user_id.as_str());
    let e = logged(&hs, via_nginx, &format!("{whoami}?access_token=<redacted>"));
    assert_eq!(e.requester.as_deref(), Some(alice.user_id.as_str()));
    assert_eq!(e.response_bytes, r.body.len() as u64);

    // Straight to Synapse from another address: the peer address, no proxy in between.
    let bob = seed.user("bob");
    let r = http_request(
        hs.synapse_addr,
        Some(ip(direct)),
        "GET",
        whoami,
        Some(&bob.access_token),
        b"",
    );
    assert_eq!(r.json()["user_id"], bob.user_id.as_str());
    let e = logged(&hs, direct, whoami);
    assert_eq!(e.requester.as_deref(), Some(bob.user_id.as_str()));
    assert_eq!(e.site_tag, hs.synapse_addr.port().to_string());

    // Everything the fixture started is gone after drop, and so is its directory.
    let pids = hs.started_pids();
    assert!(pids.contains(&hs.synapse_pid()) && pids.contains(&hs.nginx_pid()));
    let dir = hs.dir.clone();
    drop(hs);
    // Each is killed on drop; wait for the kernel to have removed them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} started by the fixture is still alive"
        );
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
    eprintln!(
        "homeserver: test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
