//! The breadth rules and `tokenless_media`, each driven through the same checks: below,
//! at and over the threshold, window expiry, dedup, escalation, re-alert, isolation.

use super::*;
use crate::detect::{DetectConfig, Severity, Windowed};

/// One windowed rule under test: its name, how to set its limits, and its `i`-th
/// distinct request (for counting rules, any request that counts).
struct Case {
    rule: &'static str,
    set: fn(&mut DetectConfig, &[Limit]),
    make: fn(u64) -> Observation,
    distinct: bool,
    /// Subjects are client addresses (else tokens).
    by_address: bool,
}

const CASES: [Case; 7] = [
    Case {
        rule: "breadth.rooms_read",
        set: |c, l| c.breadth.rooms_read = Windowed::with_limits(l),
        make: |i| {
            let class = [Class::RoomHistory, Class::RoomMembers, Class::RoomState][i as usize % 3];
            Observation {
                class: Some(class),
                ..messages(&format!("!room{i}:example.org"))
            }
        },
        distinct: true,
        by_address: false,
    },
    Case {
        rule: "breadth.rooms_joined",
        set: |c, l| c.breadth.rooms_joined = Windowed::with_limits(l),
        make: |i| join(&format!("!room{i}:example.org")),
        distinct: true,
        by_address: false,
    },
    Case {
        rule: "breadth.media",
        set: |c, l| c.breadth.media = Windowed::with_limits(l),
        make: |i| match i % 2 {
            0 => download(&format!("m{i}")),
            _ => Observation {
                class: Some(Class::MediaThumbnail),
                ..download(&format!("m{i}"))
            },
        },
        distinct: true,
        by_address: false,
    },
    Case {
        rule: "breadth.directory",
        set: |c, l| c.breadth.directory = Windowed::with_limits(l),
        make: |i| match i % 2 {
            0 => profile(&format!("@u{i}:example.org")),
            _ => req("client.user_directory_search", Class::UserDirectory),
        },
        distinct: true,
        by_address: false,
    },
    Case {
        rule: "breadth.room_directory",
        set: |c, l| c.breadth.room_directory = Windowed::with_limits(l),
        make: |_| req("client.public_rooms", Class::RoomDirectory),
        distinct: false,
        by_address: false,
    },
    Case {
        rule: "breadth.full_syncs",
        set: |c, l| c.breadth.full_syncs = Windowed::with_limits(l),
        // Initial syncs (no `since`) and full-state syncs alternate.
        make: |i| sync(i % 2 == 1, i % 2 == 1),
        distinct: false,
        by_address: false,
    },
    Case {
        rule: "tokenless_media",
        set: |c, l| c.tokenless_media = Windowed::with_limits(l),
        make: |i| download(&format!("m{i}")).tokenless(),
        distinct: true,
        by_address: true,
    },
];

impl Case {
    /// A detector where this rule has `limits`.
    fn detector(&self, limits: &[Limit]) -> Detector {
        detector(|c| (self.set)(c, limits))
    }

    /// Requests `from..to` of this case, one a second from `start`.
    fn stream(&self, start: u64, from: u64, to: u64) -> Vec<(u64, Observation)> {
        (from..to)
            .map(|i| (start + (i - from) * SECOND, (self.make)(i)))
            .collect()
    }

    fn run(&self, d: &mut Detector, start: u64, from: u64, to: u64) -> Vec<Alert> {
        let alerts = feed(d, self.stream(start, from, to));
        alerts.into_iter().filter(|a| a.rule == self.rule).collect()
    }
}

#[test]
fn every_rule_fires_at_its_threshold_and_not_below() {
    for case in &CASES {
        let mut d = case.detector(&[limit(600, 10)]);
        let below = case.run(&mut d, T0, 0, 9);
        assert!(below.is_empty(), "{}: fired below: {below:?}", case.rule);
        let at = case.run(&mut d, T0 + 9 * SECOND, 9, 10);
        assert_eq!(brief_of(&at), [(case.rule, 600, 10)], "{}", case.rule);
        let a = &at[0];
        assert_eq!(
            (a.threshold, a.severity),
            (10, Severity::Warning),
            "{}",
            case.rule
        );
        assert_eq!(
            (a.first_seen_ms, a.last_seen_ms),
            (T0, T0 + 9 * SECOND),
            "{}",
            case.rule
        );
        assert_eq!(a.evidence.requests, 10, "{}", case.rule);
        assert_eq!(a.evidence.bytes_out, 10 * 1024, "{}", case.rule);
        assert!(!a.evidence.saturated, "{}", case.rule);
        assert_eq!(a.subject.client_ip.as_deref(), Some(IP), "{}", case.rule);
        if case.by_address {
            assert_eq!(
                (&a.subject.token, &a.subject.user),
                (&None, &None),
                "{}",
                case.rule
            );
        } else {
            assert_eq!(a.subject.token, Some(fp(1)), "{}", case.rule);
            assert_eq!(a.subject.user.as_deref(), Some(USER), "{}", case.rule);
            assert_eq!(a.evidence.addresses, [IP], "{}", case.rule);
        }
        assert!(a.summary.contains("10 min (threshold 10)"), "{}", a.summary);
    }
}

fn brief_of(alerts: &[Alert]) -> Vec<(&'static str, u64, u64)> {
    brief(alerts)
}

#[test]
fn events_that_left_the_window_stop_counting() {
    for case in &CASES {
        let mut d = case.detector(&[limit(60, 10)]);
        assert!(case.run(&mut d, T0, 0, 9).is_empty(), "{}", case.rule);
        // 9 requests in T0..T0+8 s; the tenth comes when the first has left the window.
        let late = T0 + 61 * SECOND;
        assert!(
            case.run(&mut d, late, 9, 10).is_empty(),
            "{}: expired events counted",
            case.rule
        );
        // Expiry of the second and later requests too: only what is in the window counts.
        let later = T0 + 130 * SECOND;
        assert!(case.run(&mut d, later, 10, 19).is_empty(), "{}", case.rule);
        let fired = case.run(&mut d, later + 9 * SECOND, 19, 20);
        assert_eq!(brief(&fired), [(case.rule, 60, 10)], "{}", case.rule);
        assert_eq!(fired[0].first_seen_ms, later, "{}", case.rule);
    }
}

#[test]
fn no_second_alert_within_the_realert_interval() {
    for case in &CASES {
        let mut d = case.detector(&[limit(3_600, 10)]);
        assert_eq!(case.run(&mut d, T0, 0, 19).len(), 1, "{}", case.rule);
    }
}

#[test]
fn a_doubled_value_fires_again() {
    for case in &CASES {
        let mut d = case.detector(&[limit(3_600, 10)]);
        let alerts = case.run(&mut d, T0, 0, 40);
        let seen: Vec<u64> = alerts.iter().map(|a| a.observed).collect();
        assert_eq!(seen, [10, 20, 40], "{}", case.rule);
        assert_eq!(
            alerts[2].severity,
            Severity::Critical,
            "{}: 4x is critical",
            case.rule
        );
    }
}

#[test]
fn the_realert_interval_lets_an_ongoing_pattern_fire_again() {
    for case in &CASES {
        let mut d = case.detector(&[limit(3_600, 10)]);
        assert_eq!(case.run(&mut d, T0, 0, 10).len(), 1, "{}", case.rule);
        let next = T0 + 9 * SECOND + 600 * SECOND;
        assert!(
            case.run(&mut d, next - SECOND, 10, 11).is_empty(),
            "{}",
            case.rule
        );
        let again = case.run(&mut d, next, 11, 12);
        assert_eq!(brief(&again), [(case.rule, 3_600, 12)], "{}", case.rule);
    }
}

#[test]
fn subjects_are_counted_apart() {
    for case in &CASES {
        let mut d = case.detector(&[limit(600, 10)]);
        let (a, b) = if case.by_address {
            let a = |i| (case.make)(i).at_ip("198.51.100.1");
            let b = |i| (case.make)(i).at_ip("198.51.100.2");
            (
                (0..6).map(a).collect::<Vec<_>>(),
                (6..12).map(b).collect::<Vec<_>>(),
            )
        } else {
            let a = |i| (case.make)(i).by(2);
            let b = |i| (case.make)(i).by(3);
            ((0..6).map(a).collect(), (6..12).map(b).collect())
        };
        let stream = a.into_iter().chain(b).enumerate();
        let alerts = feed(&mut d, stream.map(|(i, o)| (T0 + i as u64 * SECOND, o)));
        assert!(
            of(&alerts, case.rule).is_empty(),
            "{}: {alerts:?}",
            case.rule
        );
    }
}

#[test]
fn repeating_one_item_counts_it_once() {
    for case in CASES.iter().filter(|c| c.distinct) {
        let mut d = case.detector(&[limit(600, 3)]);
        let same = (0..50).map(|i| (T0 + i * SECOND, (case.make)(0)));
        assert!(
            of(&feed(&mut d, same), case.rule).is_empty(),
            "{}",
            case.rule
        );
    }
}

#[test]
fn a_disabled_rule_never_fires() {
    for case in &CASES {
        let mut d = detector(|c| {
            (case.set)(c, &[limit(600, 1)]);
            match case.rule {
                "breadth.rooms_read" => c.breadth.rooms_read.enabled = false,
                "breadth.rooms_joined" => c.breadth.rooms_joined.enabled = false,
                "breadth.media" => c.breadth.media.enabled = false,
                "breadth.directory" => c.breadth.directory.enabled = false,
                "breadth.room_directory" => c.breadth.room_directory.enabled = false,
                "breadth.full_syncs" => c.breadth.full_syncs.enabled = false,
                _ => c.tokenless_media.enabled = false,
            }
        });
        assert!(case.run(&mut d, T0, 0, 20).is_empty(), "{}", case.rule);
    }
}

#[test]
fn what_does_not_count() {
    let mut d = detector(|c| {
        c.breadth.rooms_read = Windowed::with_limits(&[limit(600, 1)]);
        c.breadth.full_syncs = Windowed::with_limits(&[limit(600, 1)]);
        c.tokenless_media = Windowed::with_limits(&[limit(600, 1)]);
    });
    let stream = [
        // History without a room (server-wide search), an incremental sync, media with a
        // token, and sends: none of them is breadth.
        req("client.search", Class::RoomHistory),
        sync(true, false),
        download("m1"),
        Observation {
            room: Some("!a:example.org".into()),
            ..req("client.send", Class::Send)
        },
    ];
    let alerts = feed(&mut d, stream.into_iter().map(|o| (T0, o)));
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn thumbnails_and_downloads_of_one_file_count_once() {
    let mut d = detector(|c| c.breadth.media = Windowed::with_limits(&[limit(600, 2)]));
    let thumb = Observation {
        class: Some(Class::MediaThumbnail),
        ..download("m1")
    };
    let alerts = feed(&mut d, [(T0, download("m1")), (T0 + 1, thumb)]);
    assert!(alerts.is_empty(), "{alerts:?}");
    let alerts = feed(&mut d, [(T0 + 2, download("m2"))]);
    assert_eq!(brief(&alerts), [("breadth.media", 600, 2)]);
}

#[test]
fn evidence_names_the_biggest_items() {
    let mut d = detector(|c| c.breadth.rooms_read = Windowed::with_limits(&[limit(600, 7)]));
    let stream = (0..7u64).map(|i| {
        let room = format!("!r{i}:example.org");
        (T0 + i * SECOND, messages(&room).bytes((i + 1) * 1000))
    });
    let alerts = feed(&mut d, stream);
    let top: Vec<(&str, u64)> = alerts[0]
        .evidence
        .top
        .iter()
        .map(|t| (t.item.as_str(), t.bytes_out))
        .collect();
    assert_eq!(
        top,
        [
            ("!r6:example.org", 7000),
            ("!r5:example.org", 6000),
            ("!r4:example.org", 5000),
            ("!r3:example.org", 4000),
            ("!r2:example.org", 3000),
        ]
    );
}

#[test]
fn a_full_window_saturates_and_says_so() {
    let mut d = detector(|c| {
        c.max_items = 5;
        c.breadth.media = Windowed::with_limits(&[limit(3_600, 5)]);
        c.breadth.rooms_read.enabled = false;
        c.breadth.rooms_joined.enabled = false;
        c.breadth.directory.enabled = false;
        c.tokenless_media.enabled = false;
    });
    let stream = (0..9u64).map(|i| (T0 + i * SECOND, download(&format!("m{i}"))));
    let alerts = of(&feed(&mut d, stream), "breadth.media");
    assert_eq!(brief(&alerts), [("breadth.media", 3_600, 5)]);
    assert!(!alerts[0].evidence.saturated, "the fifth item still fit");
    let at_cap = feed(&mut d, [(T0 + 10 * SECOND, download("m99"))]);
    assert!(at_cap.is_empty(), "the count stays at the cap: {at_cap:?}");
    // After the re-alert interval the alert says the count is a lower bound.
    let later = feed(&mut d, [(T0 + 604 * SECOND, download("m100"))]);
    assert_eq!(brief(&later), [("breadth.media", 3_600, 5)]);
    assert!(later[0].evidence.saturated);
    assert!(
        later[0].summary.contains("at least 5"),
        "{}",
        later[0].summary
    );
}

#[test]
fn summary_names_user_token_and_address() {
    let mut d = detector(|c| c.breadth.rooms_read = Windowed::with_limits(&[limit(600, 3)]));
    let stream = (0..3u64).map(|i| (T0 + i, messages(&format!("!r{i}:example.org"))));
    let alerts = feed(&mut d, stream);
    assert_eq!(
        alerts[0].summary,
        "@mallory:example.org (tfp_0000000000000001) from 203.0.113.7 read 3 distinct rooms \
         in 10 min (threshold 3)"
    );
}

#[test]
fn every_window_of_a_rule_fires_on_its_own() {
    let limits = [limit(60, 5), limit(3_600, 8)];
    let mut d = detector(|c| c.breadth.rooms_joined = Windowed::with_limits(&limits));
    // Five joins a minute apart: never five in one minute, eight in the hour.
    let stream = (0..8u64).map(|i| (T0 + i * 61 * SECOND, join(&format!("!r{i}:example.org"))));
    assert_eq!(
        brief(&feed(&mut d, stream)),
        [("breadth.rooms_joined", 3_600, 8)]
    );
    let burst = (8..13u64).map(|i| (T0 + 600 * SECOND + i, join(&format!("!r{i}:example.org"))));
    assert_eq!(
        brief(&feed(&mut d, burst)),
        [("breadth.rooms_joined", 60, 5)]
    );
}
