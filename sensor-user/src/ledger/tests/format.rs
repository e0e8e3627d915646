//! The on-disk format: lines, caps, counts, item kinds, segment names.

use super::*;

#[test]
fn a_line_lists_at_most_item_cap_items_and_counts_the_rest() {
    let base = download(Some(1), SCRAPER_IP, "x", 0);
    let mut line = Line::for_token(fp(1));
    let extra = 3;
    for i in 0..(ITEM_CAP + extra) {
        let r = RequestRecord {
            media_id: Some(format!("m{i}")),
            bytes_out: 1 + i as u64,
            ..base.clone()
        };
        let items = line::items_of(&r);
        line.record(&r, 0, &items, SCRAPER_IP);
    }
    assert_eq!(line.item_count(), ITEM_CAP);
    assert_eq!(line.over_items, extra as u64);
    let over = line.over.expect("over");
    assert_eq!(over.requests, extra as u64);
    let listed: u64 = line.media.values().map(|c| c.bytes_out).sum();
    let total = (1..=(ITEM_CAP + extra) as u64).sum::<u64>();
    assert_eq!(listed + over.bytes_out, total);

    // Merging two capped lines keeps the biggest items listed and the totals exact.
    let mut other = Line::for_token(fp(1));
    let r = RequestRecord {
        media_id: Some("huge".into()),
        bytes_out: u64::from(u32::MAX),
        ..base.clone()
    };
    other.record(&r, 5, &line::items_of(&r), SCRAPER_IP);
    line.merge(other);
    assert_eq!(line.apply_caps(), 1);
    assert!(line.media.contains_key("example.org/huge"));
    assert!(
        !line.media.contains_key("example.org/m0"),
        "the smallest goes"
    );
    assert_eq!(line.over_items, extra as u64 + 1);
}

#[test]
fn peers_are_capped_too() {
    let mut line = Line::for_token(fp(1));
    for i in 0..(PEER_CAP + 2) {
        let ip = format!("10.0.0.{i}");
        let r = sync(Some(1), &ip, 1);
        line.record(&r, 0, &[], &ip);
    }
    assert_eq!(line.addresses.len(), PEER_CAP);
    assert_eq!(line.over_peers, 2);
}

#[test]
fn counts_are_arrays_on_disk() {
    let c = Counts {
        requests: 2,
        bytes_in: 600,
        bytes_out: 9_000,
        first: 5,
        last: 3_599_999,
    };
    assert_eq!(serde_json::to_string(&c).unwrap(), "[2,600,9000,5,3599999]");
    let back: Counts = serde_json::from_str("[2,600,9000,5,3599999]").unwrap();
    assert_eq!(back, c);
    assert!(serde_json::from_str::<Counts>("[2,600]").is_err());
}

#[test]
fn item_kinds_follow_the_endpoint_class() {
    let kinds = |r: &RequestRecord| -> Vec<ItemKind> {
        line::items_of(r).into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(
        kinds(&messages(Some(1), "::1", "!r:x", 1)),
        [ItemKind::RoomRead]
    );
    assert_eq!(
        kinds(&members(Some(1), "::1", "!r:x", 1)),
        [ItemKind::RoomRead]
    );
    assert_eq!(kinds(&join(Some(1), "::1", "!r:x")), [ItemKind::RoomJoined]);
    assert_eq!(kinds(&download(Some(1), "::1", "m", 1)), [ItemKind::Media]);
    assert_eq!(kinds(&thumbnail(Some(1), "::1", "m", 1)), [ItemKind::Media]);
    assert_eq!(
        kinds(&profile(Some(1), "::1", "@b:x")),
        [ItemKind::UserLookedUp]
    );
    let send = RequestRecord {
        room: Some("!r:x".into()),
        ..req(Some(1), Some("::1"), "client.send", Class::Send, 1)
    };
    assert_eq!(kinds(&send), [ItemKind::RoomOther]);
    let admin_media = RequestRecord {
        media_server: Some("x".into()),
        media_id: Some("m".into()),
        ..req(Some(1), Some("::1"), "admin.media", Class::Admin, 1)
    };
    assert_eq!(kinds(&admin_media), [ItemKind::MediaOther]);
    assert!(kinds(&sync(Some(1), "::1", 1)).is_empty());
}

#[test]
fn segment_names_round_trip() {
    let hour = T0 / HOUR_MS;
    assert_eq!(segment::name(hour), "2026-09-21T14.jsonl");
    assert_eq!(segment::parse_name("2026-09-21T14.jsonl"), Some(hour));
    for bad in [
        "2026-09-21T14.json",
        "2026-13-21T14.jsonl",
        "2026-09-21T24.jsonl",
        ".2026-09-21T14.jsonl.tmp",
        "x",
    ] {
        assert_eq!(segment::parse_name(bad), None, "{bad}");
    }
    assert_eq!(record_time_ms("2026-09-21T14:13:20.000Z"), Some(T0));
    assert_eq!(record_time_ms("yesterday"), None);
}
