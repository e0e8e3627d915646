//! `volume` per token and per address, and `single_transfer`.

use super::*;
use crate::detect::{ByteLimit, Severity, Transfer};

fn bytes(window_s: u64, threshold_bytes: u64) -> ByteLimit {
    ByteLimit {
        window_s,
        threshold_bytes,
    }
}

/// `n` downloads of `size` bytes by token 1, one every `every_ms` from `start`.
fn downloads(start: u64, n: u64, every_ms: u64, size: u64) -> Vec<(u64, Observation)> {
    (0..n)
        .map(|i| {
            (
                start + i * every_ms,
                download(&format!("v{start}-{i}")).bytes(size),
            )
        })
        .collect()
}

#[test]
fn token_volume_fires_at_the_default_minute_limit() {
    let mut d = detector(|_| {});
    // 64 MiB files, one every 5 s: the eighth makes 512 MiB within a minute.
    let alerts = feed(&mut d, downloads(T0, 7, 5 * SECOND, 64 * MIB));
    assert!(alerts.is_empty(), "{alerts:?}");
    let alerts = feed(
        &mut d,
        [(T0 + 35 * SECOND, download("big").bytes(64 * MIB))],
    );
    assert_eq!(brief(&alerts), [("volume", 60, 512 * MIB)]);
    let a = &alerts[0];
    assert_eq!(a.threshold, 512 * MIB);
    assert_eq!((a.first_seen_ms, a.last_seen_ms), (T0, T0 + 35 * SECOND));
    assert_eq!((a.evidence.requests, a.evidence.bytes_out), (8, 512 * MIB));
    assert_eq!(a.subject.token, Some(fp(1)));
    // The top items come from the token's media window.
    assert_eq!(a.evidence.top.len(), 5);
    assert_eq!(a.evidence.top[0].bytes_out, 64 * MIB);
    assert!(
        a.evidence.top[0].item.starts_with("mxc://example.org/"),
        "{a:?}"
    );
    assert_eq!(
        a.summary,
        "@mallory:example.org (tfp_0000000000000001) from 203.0.113.7 received 512 MiB in \
         1 min (threshold 512 MiB)"
    );
}

#[test]
fn a_minute_old_transfer_no_longer_counts() {
    let mut d = detector(|c| {
        c.volume.token = vec![bytes(60, 1000)];
        c.volume.address = vec![bytes(60, 1 << 40)];
    });
    let alerts = feed(&mut d, [(T0, req("client.sync", Class::Sync).bytes(600))]);
    assert!(alerts.is_empty());
    // One-second slots: the first request leaves the window at T0 + 60 s.
    let next = req("client.sync", Class::Sync).bytes(400);
    assert!(feed(&mut d, [(T0 + 60 * SECOND, next.clone())]).is_empty());
    let alerts = feed(&mut d, [(T0 + 60 * SECOND + 1, next.bytes(600))]);
    assert_eq!(brief(&alerts), [("volume", 60, 1000)]);
    assert_eq!(alerts[0].first_seen_ms, T0 + 60 * SECOND);
}

#[test]
fn volume_dedups_then_escalates_then_realerts() {
    let mut d = detector(|c| {
        c.volume.token = vec![bytes(3_600, 1000)];
        c.volume.address = vec![bytes(3_600, 1 << 40)];
    });
    let r = || req("client.messages", Class::RoomHistory);
    let mut stream = vec![(T0, r().bytes(1000)), (T0 + SECOND, r().bytes(900))];
    stream.push((T0 + 2 * SECOND, r().bytes(100)));
    stream.push((T0 + 602 * SECOND, r().bytes(1)));
    let got: Vec<u64> = feed(&mut d, stream).iter().map(|a| a.observed).collect();
    assert_eq!(got, [1000, 2000, 2001]);
}

#[test]
fn address_volume_adds_up_many_tokens() {
    let mut d = detector(|c| {
        c.volume.token = vec![bytes(600, 10_000)];
        c.volume.address = vec![bytes(600, 20_000)];
    });
    // Five tokens from one address, 5,000 bytes each: no token passes 10,000.
    let stream = (0..5u64).map(|i| {
        (
            T0 + i * SECOND,
            req("client.sync", Class::Sync).by(i + 10).bytes(5_000),
        )
    });
    let alerts = feed(&mut d, stream);
    assert_eq!(brief(&alerts), [("volume", 600, 20_000)]);
    let a = &alerts[0];
    assert_eq!((a.subject.token, a.subject.user.as_deref()), (None, None));
    assert_eq!(a.subject.client_ip.as_deref(), Some(IP));
    assert_eq!(a.evidence.requests, 4);
    assert_eq!(
        a.summary,
        "203.0.113.7 received 19.5 KiB in 10 min (threshold 19.5 KiB)"
    );
}

#[test]
fn one_token_from_two_addresses_is_one_subject() {
    let mut d = detector(|c| c.volume.token = vec![bytes(600, 2_000)]);
    let r = req("client.sync", Class::Sync).bytes(1_000);
    let alerts = feed(
        &mut d,
        [(T0, r.clone()), (T0 + SECOND, r.at_ip("198.51.100.4"))],
    );
    assert_eq!(brief(&alerts), [("volume", 600, 2_000)]);
    let a = &alerts[0];
    assert_eq!(
        a.subject.client_ip.as_deref(),
        Some("198.51.100.4"),
        "latest first"
    );
    assert_eq!(a.evidence.addresses, ["198.51.100.4", IP]);
}

#[test]
fn four_times_the_threshold_is_critical() {
    let mut d = detector(|c| c.volume.token = vec![bytes(600, 1_000)]);
    let alerts = feed(&mut d, [(T0, req("client.sync", Class::Sync).bytes(4_000))]);
    assert_eq!(alerts[0].severity, Severity::Critical);
}

fn transfer(cookie: u64, bytes_out: u64) -> Transfer {
    Transfer {
        cookie,
        pid: Some(4242),
        local: Some("127.0.0.1:8008".into()),
        peer: Some("127.0.0.1:51000".into()),
        bytes_out,
        endpoint: Some("media.download"),
        client_ip: Some(IP.into()),
        token: Some(fp(1)),
        user: Some(USER.into()),
    }
}

#[test]
fn single_transfer_fires_while_the_transfer_runs() {
    let mut d = detector(|_| {});
    assert!(
        d.observe_transfer(T0, &transfer(7, 512 * MIB - 1))
            .is_empty()
    );
    let alerts = d.observe_transfer(T0, &transfer(7, 512 * MIB + 4096));
    assert_eq!(brief(&alerts), [("single_transfer", 0, 512 * MIB + 4096)]);
    let a = &alerts[0];
    assert_eq!((a.threshold, a.severity), (512 * MIB, Severity::Warning));
    assert_eq!(a.subject.user.as_deref(), Some(USER));
    let conn = a.evidence.connection.as_ref().expect("connection evidence");
    assert_eq!((conn.cookie, conn.pid), (7, Some(4242)));
    assert_eq!(conn.peer.as_deref(), Some("127.0.0.1:51000"));
    assert_eq!(
        a.summary,
        "@mallory:example.org (tfp_0000000000000001) from 203.0.113.7 received 512 MiB on one \
         connection (cookie 7, media.download) (threshold 512 MiB)"
    );
}

#[test]
fn single_transfer_is_deduplicated_per_connection() {
    let mut d = detector(|c| c.single_transfer.threshold_bytes = 1_000);
    assert_eq!(d.observe_transfer(T0, &transfer(7, 1_500)).len(), 1);
    assert!(
        d.observe_transfer(T0 + SECOND, &transfer(7, 2_999))
            .is_empty()
    );
    // The finished response on the same connection: no new alert unless it doubled.
    let done = Observation {
        cookie: 7,
        ..download("big").bytes(2_000)
    };
    assert!(
        of(
            &d.observe_request(T0 + 2 * SECOND, &done),
            "single_transfer"
        )
        .is_empty()
    );
    let done = done.bytes(3_000);
    let alerts = d.observe_request(T0 + 3 * SECOND, &done);
    assert_eq!(
        brief(&of(&alerts, "single_transfer")),
        [("single_transfer", 0, 3_000)]
    );
    // Another connection is another transfer.
    assert_eq!(
        d.observe_transfer(T0 + 4 * SECOND, &transfer(8, 1_000))
            .len(),
        1
    );
    // The connection's dedup entry goes with the re-alert interval.
    d.expire(T0 + 3 * SECOND + 600 * SECOND);
    assert_eq!(
        d.observe_transfer(T0 + 604 * SECOND, &transfer(7, 1_000))
            .len(),
        1
    );
}

#[test]
fn single_transfer_from_a_finished_response() {
    let mut d = detector(|c| c.single_transfer.threshold_bytes = 1_000);
    let alerts = d.observe_request(T0, &download("m").bytes(999));
    assert!(alerts.is_empty());
    let alerts = d.observe_request(
        T0,
        &Observation {
            cookie: 9,
            ..download("m").bytes(1_000)
        },
    );
    let single = of(&alerts, "single_transfer");
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].evidence.endpoint, Some("media.download"));
}

#[test]
fn single_transfer_can_be_turned_off() {
    let mut d = detector(|c| c.single_transfer.enabled = false);
    assert!(d.observe_transfer(T0, &transfer(7, 1 << 40)).is_empty());
    let alerts = d.observe_request(T0, &download("m").bytes(1 << 40));
    assert!(of(&alerts, "single_transfer").is_empty());
}

#[test]
fn volume_can_be_turned_off() {
    let mut d = detector(|c| c.volume.enabled = false);
    let alerts = feed(&mut d, downloads(T0, 100, SECOND, 64 * MIB));
    assert!(of(&alerts, "volume").is_empty(), "{alerts:?}");
}
