//! `sensor_health`, memory bounds (`expire`, `max_subjects`), `reload`, and time order.

use std::collections::BTreeMap;

use super::*;
use crate::detect::{Blind, Health, HealthIssue, Severity, Windowed};

fn drops(place: &str, total: u64) -> Health {
    Health {
        drops: BTreeMap::from([(place.to_owned(), total)]),
        ..Health::default()
    }
}

#[test]
fn rising_drop_counters_alert_and_held_back_drops_are_reported_later() {
    let mut d = detector(|_| {});
    assert!(d.observe_health(T0, &drops("ringbuf", 0)).is_empty());
    let alerts = d.observe_health(T0 + SECOND, &drops("ringbuf", 5));
    assert_eq!(brief(&alerts), [("sensor_health", 0, 5)]);
    assert_eq!(alerts[0].severity, Severity::Warning);
    assert_eq!(
        alerts[0].summary,
        "the sensor lost 5 events at ringbuf (5 since start)"
    );
    let issue = HealthIssue::Drops {
        place: "ringbuf".into(),
        lost: 5,
        total: 5,
    };
    assert_eq!(alerts[0].evidence.health, Some(issue));
    // Held back by the re-alert interval, then reported together.
    assert!(
        d.observe_health(T0 + 2 * SECOND, &drops("ringbuf", 9))
            .is_empty()
    );
    assert!(
        d.observe_health(T0 + 3 * SECOND, &drops("ringbuf", 9))
            .is_empty()
    );
    let alerts = d.observe_health(T0 + 601 * SECOND, &drops("ringbuf", 12));
    assert_eq!(brief(&alerts), [("sensor_health", 0, 7)]);
    // Another place is another alert; a counter that went down was reset.
    assert_eq!(
        d.observe_health(T0 + 602 * SECOND, &drops("heads", 1))
            .len(),
        1
    );
    d.expire(T0 + 1_300 * SECOND);
    let alerts = d.observe_health(T0 + 1_300 * SECOND, &drops("ringbuf", 2));
    assert_eq!(brief(&alerts), [("sensor_health", 0, 2)]);
}

#[test]
fn a_missing_capability_alerts_at_once_and_again_each_interval_while_it_lasts() {
    let mut d = detector(|_| {});
    let h = Health {
        blind: vec![Blind {
            capability: "request_heads".into(),
            severity: Severity::Warning,
            why: "the kernel refused conn_ingress".into(),
        }],
        ..Health::default()
    };
    let alerts = d.observe_health(T0, &h);
    assert_eq!(brief(&alerts), [("sensor_health", 0, 1)]);
    assert_eq!(alerts[0].severity, Severity::Warning);
    assert_eq!(
        alerts[0].summary,
        "the sensor runs without request_heads: the kernel refused conn_ingress"
    );
    assert_eq!(
        alerts[0].evidence.health,
        Some(HealthIssue::Unavailable {
            capability: "request_heads".into(),
            why: "the kernel refused conn_ingress".into(),
        })
    );
    assert!(d.observe_health(T0 + SECOND, &h).is_empty(), "deduplicated");
    assert_eq!(d.observe_health(T0 + 600 * SECOND, &h).len(), 1);
    // Gone: nothing more.
    assert!(
        d.observe_health(T0 + 1_200 * SECOND, &Health::default())
            .is_empty()
    );
}

#[test]
fn a_detached_program_is_critical_and_a_gone_process_a_warning() {
    let mut d = detector(|_| {});
    let h = Health {
        detached: vec!["cgroup_skb/egress".into()],
        gone: vec![4242],
        ..Health::default()
    };
    let alerts = d.observe_health(T0, &h);
    let got: Vec<(Severity, &str)> = alerts
        .iter()
        .map(|a| (a.severity, a.summary.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Severity::Critical,
                "the sensor's program cgroup_skb/egress was detached by someone else: traffic is not counted until the agent attaches it again (next rescan)"
            ),
            (Severity::Warning, "watched process 4242 is gone"),
        ]
    );
    assert!(d.observe_health(T0 + SECOND, &h).is_empty(), "deduplicated");
    assert_eq!(
        d.observe_health(T0 + 600 * SECOND, &h).len(),
        2,
        "re-alerted"
    );
}

#[test]
fn health_alerts_can_be_turned_off() {
    let mut d = detector(|c| c.sensor_health.enabled = false);
    assert!(d.observe_health(T0, &drops("ringbuf", 100)).is_empty());
}

#[test]
fn expire_forgets_subjects_once_their_windows_have_passed() {
    let mut d = detector(|_| {});
    // 1,000 tokens from 1,000 addresses, one request each.
    let stream = (0..1_000u64).map(|i| {
        let ip = format!("10.0.{}.{}", i / 256, i % 256);
        (T0 + i, req("client.sync", Class::Sync).by(i).at_ip(&ip))
    });
    assert!(feed(&mut d, stream).is_empty());
    assert_eq!(d.tracked_subjects(), 2_000);
    d.expire(T0 + 3_000 * SECOND);
    assert_eq!(d.tracked_subjects(), 2_000, "still inside the 1 h window");
    // The longest window is 1 h of one-minute slots.
    d.expire(T0 + 3_600 * SECOND + 2 * SECOND);
    assert_eq!(d.tracked_subjects(), 0);
}

#[test]
fn a_subject_that_fired_is_kept_until_the_realert_interval_passes() {
    let mut d = detector(|c| {
        c.breadth.rooms_joined = Windowed::with_limits(&[limit(60, 2)]);
        c.volume.enabled = false;
    });
    let joins = [(T0, join("!a:x")), (T0 + 1, join("!b:x"))];
    assert_eq!(feed(&mut d, joins.clone()).len(), 1);
    d.expire(T0 + 120 * SECOND);
    assert_eq!(d.tracked_subjects(), 1, "dedup state outlives the window");
    let again = [
        (T0 + 130 * SECOND, join("!a:x")),
        (T0 + 131 * SECOND, join("!b:x")),
    ];
    assert!(
        feed(&mut d, again).is_empty(),
        "no second alert within 10 min"
    );
    d.expire(T0 + 800 * SECOND);
    assert_eq!(d.tracked_subjects(), 0);
}

#[test]
fn the_subject_table_is_bounded_and_keeps_the_active() {
    let mut d = detector(|c| {
        c.max_subjects = 100;
        c.breadth.rooms_read = Windowed::with_limits(&[limit(600, 50)]);
    });
    let mut alerts = Vec::new();
    for i in 0..1_000u64 {
        let t = T0 + i * 100;
        // A different address every time, and the scraper (token 1, from IP) in between.
        let visitor = req("client.sync", Class::Sync).tokenless().at_ip(&format!(
            "10.1.{}.{}",
            i / 256,
            i % 256
        ));
        alerts.extend(d.observe_request(t, &visitor));
        alerts.extend(d.observe_request(t, &messages(&format!("!r{i}:example.org"))));
        assert!(d.tracked_subjects() <= 100);
    }
    assert!(d.evicted_subjects() >= 900, "{}", d.evicted_subjects());
    assert_eq!(
        brief(&of(&alerts, "breadth.rooms_read"))[0],
        ("breadth.rooms_read", 600, 50)
    );
}

#[test]
fn reload_keeps_window_state() {
    let mut d = detector(|c| {
        c.breadth.rooms_read = Windowed::with_limits(&[limit(600, 10), limit(3_600, 30)])
    });
    let rooms =
        |from: u64, to: u64| (from..to).map(|i| (T0 + i * SECOND, messages(&format!("!r{i}:x"))));
    assert!(feed(&mut d, rooms(0, 9)).is_empty());
    let mut config = DetectConfig::default();
    config.breadth.rooms_read = Windowed::with_limits(&[limit(600, 12), limit(86_400, 11)]);
    config.validate().unwrap();
    d.reload(config);
    // The 10 min window kept its nine rooms; the new 24 h window started empty.
    assert!(feed(&mut d, rooms(9, 11)).is_empty());
    assert_eq!(
        brief(&feed(&mut d, rooms(11, 12))),
        [("breadth.rooms_read", 600, 12)]
    );
}

#[test]
fn reload_keeps_dedup_state() {
    let mut d = detector(|c| c.breadth.rooms_joined = Windowed::with_limits(&[limit(600, 2)]));
    assert_eq!(
        feed(&mut d, [(T0, join("!a:x")), (T0, join("!b:x"))]).len(),
        1
    );
    d.reload(d_config_with_joins(&[limit(600, 2)]));
    assert!(feed(&mut d, [(T0 + SECOND, join("!c:x"))]).is_empty());
}

fn d_config_with_joins(limits: &[Limit]) -> DetectConfig {
    let mut c = DetectConfig::default();
    c.breadth.rooms_joined = Windowed::with_limits(limits);
    c
}

#[test]
fn late_events_count_in_the_windows_they_still_fall_in() {
    let mut d = detector(|c| c.breadth.rooms_joined = Windowed::with_limits(&[limit(60, 3)]));
    // A request that finished late: 30 s older than the clock still counts...
    assert!(
        feed(
            &mut d,
            [
                (T0 + 100 * SECOND, join("!a:x")),
                (T0 + 70 * SECOND, join("!b:x"))
            ]
        )
        .is_empty()
    );
    // ...one older than the window does not.
    assert!(feed(&mut d, [(T0 + 30 * SECOND, join("!c:x"))]).is_empty());
    let alerts = feed(&mut d, [(T0 + 101 * SECOND, join("!d:x"))]);
    assert_eq!(brief(&alerts), [("breadth.rooms_joined", 60, 3)]);
    assert_eq!(
        (alerts[0].first_seen_ms, alerts[0].last_seen_ms),
        (T0 + 70 * SECOND, T0 + 101 * SECOND)
    );
}

#[test]
fn a_disabled_detector_says_nothing() {
    let mut d = detector(|c| c.enabled = false);
    assert!(
        d.observe_transfer(
            T0,
            &crate::detect::Transfer {
                bytes_out: 1 << 40,
                ..Default::default()
            }
        )
        .is_empty()
    );
    assert!(d.observe_health(T0, &drops("ringbuf", 9)).is_empty());
    assert!(d.observe_request(T0, &admin_from_outside()).is_empty());
    assert_eq!(d.tracked_subjects(), 0);
}

fn admin_from_outside() -> Observation {
    req("admin.users", Class::Admin).at_ip("198.51.100.9")
}
