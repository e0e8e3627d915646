//! Whole streams with the default configuration: what people do must stay silent, what
//! the Tchap scraper did must alert, quickly and without flooding.

use super::*;
use crate::detect::Severity;

/// Runs a stream through a default detector, calling `expire` every simulated second.
fn run_default(mut stream: Vec<(u64, Observation)>) -> (Detector, Vec<Alert>) {
    stream.sort_by_key(|(t, _)| *t);
    let mut d = detector(|_| {});
    let mut alerts = Vec::new();
    let mut next_expire = T0;
    for (t, obs) in stream {
        while next_expire <= t {
            d.expire(next_expire);
            next_expire += SECOND;
        }
        alerts.extend(d.observe_request(t, &obs));
    }
    (d, alerts)
}

/// An hour of a heavy Element user: an initial sync, then /sync long-polls with `since`
/// every 30 s, 200 messages sent, 30 media files opened (10 MiB each) and 60 thumbnails,
/// 3 rooms joined, 10 rooms' history paged back 5 times with their member lists, a few
/// invite searches and profile lookups, and the room directory browsed.
fn heavy_user(token: u64, ip: &str, start: u64) -> Vec<(u64, Observation)> {
    let me = |o: Observation| o.by(token).at_ip(ip);
    let mut s = vec![(start, me(sync(false, false).bytes(15 * MIB)))];
    s.extend((1..120).map(|i| {
        (
            start + i * 30 * SECOND,
            me(sync(true, false).bytes(2_000 + i * 300)),
        )
    }));
    s.extend((0..200).map(|i| {
        (
            start + i * 18 * SECOND + 7,
            me(req("client.send", Class::Send)),
        )
    }));
    s.extend((0..30).map(|i| {
        (
            start + i * 2 * MINUTE + 11,
            me(download(&format!("f{token}-{i}")).bytes(10 * MIB)),
        )
    }));
    s.extend((0..60).map(|i| {
        let thumb = Observation {
            class: Some(Class::MediaThumbnail),
            ..download(&format!("avatar{i}"))
        };
        (start + i * SECOND + 13, me(thumb.bytes(20_000)))
    }));
    s.extend((0..3).map(|i| {
        (
            start + (10 + i) * MINUTE,
            me(join(&format!("!new{i}:example.org"))),
        )
    }));
    for room in 0..10u64 {
        let at = start + 5 * MINUTE * room + 17;
        let name = format!("!room{room}:example.org");
        let members = Observation {
            class: Some(Class::RoomMembers),
            ..messages(&name)
        };
        s.push((at, me(members.bytes(100_000))));
        s.extend((0..5).map(|page| (at + page * 3 * SECOND, me(messages(&name).bytes(60_000)))));
    }
    s.extend((0..15).map(|i| {
        (
            start + 20 * MINUTE + i * 400,
            me(req("client.user_directory_search", Class::UserDirectory)),
        )
    }));
    s.extend((0..20).map(|i| {
        (
            start + 25 * MINUTE + i * SECOND,
            me(profile(&format!("@colleague{i}:example.org"))),
        )
    }));
    s.extend((0..8).map(|i| {
        (
            start + 40 * MINUTE + i * 2 * SECOND,
            me(req("client.public_rooms", Class::RoomDirectory)),
        )
    }));
    s
}

#[test]
fn a_heavy_user_for_an_hour_raises_nothing() {
    let (d, alerts) = run_default(heavy_user(1, IP, T0));
    assert!(alerts.is_empty(), "{:#?}", alerts);
    assert_eq!(d.tracked_subjects(), 2);
}

#[test]
fn element_initial_sync_once_raises_nothing() {
    let (_, alerts) = run_default(vec![(T0, sync(false, false).bytes(40 * MIB))]);
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn a_returning_user_catching_up_raises_nothing() {
    // Back from holiday on an empty cache: a large initial sync, 40 rooms opened in ten
    // minutes with their history and members, 400 avatars and images thumbnailed.
    let mut s = vec![(T0, sync(false, false).bytes(60 * MIB))];
    for room in 0..40u64 {
        let name = format!("!r{room}:example.org");
        let at = T0 + room * 15 * SECOND;
        s.extend((0..3).map(|p| (at + p * SECOND, messages(&name).bytes(80_000))));
    }
    s.extend((0..400u64).map(|i| (T0 + i * 1_500, download(&format!("t{i}")).bytes(30_000))));
    let (_, alerts) = run_default(s);
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn an_office_behind_one_address_raises_nothing() {
    // Thirty heavy users behind one NAT address for an hour: about 9.3 GiB from it.
    let stream: Vec<_> = (0..30)
        .flat_map(|u| heavy_user(100 + u, "192.0.2.1", T0 + u * 97))
        .collect();
    let (_, alerts) = run_default(stream);
    assert!(alerts.is_empty(), "{:#?}", brief(&alerts));
}

/// The rule's alerts and how long after `T0` the first one came.
fn first(alerts: &[Alert], rule: &str) -> (Vec<Alert>, u64) {
    let mine = of(alerts, rule);
    let first = mine
        .first()
        .unwrap_or_else(|| panic!("no {rule} alert in {:?}", brief(alerts)));
    let after = first.last_seen_ms - T0;
    (mine, after)
}

#[test]
fn joining_300_rooms_alerts_within_seconds() {
    let s = (0..300u64)
        .map(|i| (T0 + i * 500, join(&format!("!pub{i}:example.org"))))
        .collect();
    let (_, alerts) = run_default(s);
    let (joins, after) = first(&alerts, "breadth.rooms_joined");
    assert_eq!((joins[0].window_s, joins[0].observed), (600, 30));
    assert!(after <= 15 * SECOND, "first alert after {after} ms");
    assert!(joins.len() <= 6, "flooded: {:?}", brief(&joins));
    assert_eq!(joins[0].subject.user.as_deref(), Some(USER));
}

#[test]
fn paging_300_rooms_back_alerts() {
    let mut s = Vec::new();
    for room in 0..300u64 {
        let name = format!("!pub{room}:example.org");
        s.extend((0..5).map(|p| (T0 + (room * 5 + p) * 100, messages(&name).bytes(200_000))));
    }
    let (_, alerts) = run_default(s);
    let (rooms, after) = first(&alerts, "breadth.rooms_read");
    assert_eq!(rooms[0].observed, 100);
    assert!(after <= 60 * SECOND, "first alert after {after} ms");
    assert_eq!(rooms[0].evidence.requests, 496, "{:?}", rooms[0].evidence);
    assert!(rooms.len() <= 4, "flooded: {:?}", brief(&rooms));
}

#[test]
fn downloading_5000_media_alerts_without_flooding() {
    let s = (0..5_000u64)
        .map(|i| (T0 + i * 50, download(&format!("m{i}")).bytes(300_000)))
        .collect();
    let (_, alerts) = run_default(s);
    let (media, after) = first(&alerts, "breadth.media");
    assert!(after <= 60 * SECOND, "first alert after {after} ms");
    let seen: Vec<(u64, u64)> = media.iter().map(|a| (a.window_s, a.observed)).collect();
    assert_eq!(
        seen,
        [(600, 1_000), (600, 2_000), (3_600, 3_000), (600, 4_000)]
    );
    assert_eq!(media[3].severity, Severity::Critical);
    assert_eq!(media[0].evidence.top.len(), 5);
}

#[test]
fn the_tchap_media_haul_spread_over_three_hours_alerts() {
    // 59,386 files and 13.5 GB in three hours is 5.5 files and 1.25 MB a second: under the
    // hourly volume limit, far over the media breadth. The first 10 minutes suffice here.
    let s = (0..3_300u64)
        .map(|i| (T0 + i * 182, download(&format!("m{i}")).bytes(227_000)))
        .collect();
    let (_, alerts) = run_default(s);
    let (_, after) = first(&alerts, "breadth.media");
    assert!(after <= 200 * SECOND, "first alert after {after} ms");
}

#[test]
fn enumerating_profiles_alerts() {
    let s = (0..3_000u64)
        .map(|i| (T0 + i * 100, profile(&format!("@u{i}:example.org"))))
        .collect();
    let (_, alerts) = run_default(s);
    let (dir, after) = first(&alerts, "breadth.directory");
    assert_eq!(dir[0].observed, 300);
    assert!(after <= 30 * SECOND, "first alert after {after} ms");
}

#[test]
fn a_tokenless_harvester_is_named_by_its_address() {
    let s = (0..2_000u64)
        .map(|i| {
            (
                T0 + i * 100,
                download(&format!("m{i}"))
                    .tokenless()
                    .at_ip("198.51.100.66")
                    .bytes(200_000),
            )
        })
        .collect();
    let (_, alerts) = run_default(s);
    let (harvest, after) = first(&alerts, "tokenless_media");
    assert!(after <= 60 * SECOND, "first alert after {after} ms");
    let a = &harvest[0];
    assert_eq!((a.observed, a.threshold), (500, 500));
    assert_eq!(a.subject.client_ip.as_deref(), Some("198.51.100.66"));
    assert_eq!((a.subject.token, a.subject.user.as_deref()), (None, None));
    assert!(
        a.summary
            .starts_with("198.51.100.66 requested 500 distinct media files without a token"),
        "{}",
        a.summary
    );
    assert!(
        of(&alerts, "breadth.media").is_empty(),
        "no token, no token rule"
    );
}

#[test]
fn a_scraper_beside_normal_users_is_the_only_one_named() {
    let mut s: Vec<_> = (0..5)
        .flat_map(|u| heavy_user(10 + u, &format!("192.0.2.{u}"), T0))
        .collect();
    s.extend((0..300u64).map(|i| (T0 + i * 500, join(&format!("!pub{i}:example.org")))));
    let (_, alerts) = run_default(s);
    assert!(!alerts.is_empty());
    for a in &alerts {
        assert_eq!(a.subject.token, Some(fp(1)), "{a:?}");
    }
}
