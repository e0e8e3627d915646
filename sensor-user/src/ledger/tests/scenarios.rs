//! Request streams through the ledger and back out through the report: exact item lists
//! and totals, restarts, time ranges.

use super::*;

#[test]
fn a_scraper_report_lists_exactly_the_rooms_and_media_it_reached() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    let scrape = scraper(T0, 150, 300, 600);
    let normal = benign(T0 - 10 * MINUTE, 2 * HOUR, 4);
    let mut all: Vec<_> = scrape.iter().chain(&normal).cloned().collect();
    all.sort_by_key(|(_, t)| *t);
    feed(&mut ledger, &all);
    ledger.flush().expect("flush");

    let want = expected(&all, |r, _| r.token == Some(fp(1)));
    let report = fx.report(token(1), None, None);
    assert_eq!(seen(&report), want);
    assert_eq!(report.rooms_read.len(), 300);
    assert_eq!(report.rooms_joined.len(), 30);
    assert_eq!(report.media.len(), 600);
    assert_eq!(report.users_looked_up.len(), 75);
    assert_eq!(report.users.len(), 1);
    assert_eq!(report.users[0].id.as_deref(), Some(SCRAPER));
    assert_eq!(report.addresses.len(), 1);
    assert_eq!(report.addresses[0].id.as_deref(), Some(SCRAPER_IP));
    assert_eq!(report.addresses[0].bytes_out, want.bytes_out);
    assert_eq!((report.skipped_lines, report.straddling), (0, 0));
    assert_eq!(
        report.first_seen.as_deref(),
        Some("2026-09-21T14:13:20.000Z")
    );
    // Sorted biggest first.
    assert!(
        report
            .media
            .windows(2)
            .all(|w| w[0].bytes_out >= w[1].bytes_out)
    );

    // By user and by address: the same requests (the scraper used one token from one
    // address), the address report also naming the token.
    let by_user = fx.report(Subject::User(SCRAPER.into()), None, None);
    assert_eq!(seen(&by_user), want);
    assert_eq!(by_user.tokens.len(), 1);
    assert_eq!(
        by_user.tokens[0].id.as_deref(),
        Some(fp(1).to_string().as_str())
    );
    let by_ip = fx.report(Subject::Address(SCRAPER_IP.into()), None, None);
    assert_eq!(seen(&by_ip), want);
    assert_eq!(by_ip.tokens[0].requests, want.requests);

    // A benign client: its own three rooms and nothing of the scraper's.
    let benign_report = fx.report(token(3), None, None);
    assert_eq!(
        seen(&benign_report),
        expected(&all, |r, _| r.token == Some(fp(3)))
    );
    assert!(benign_report.rooms_read.len() <= 3);
    // Token-less requests count for their address only.
    let tokenless = fx.report(Subject::Address("192.0.2.9".into()), None, None);
    assert_eq!(
        seen(&tokenless),
        expected(&all, |r, _| r.client_ip.as_deref() == Some("192.0.2.9"))
    );
    assert_eq!(tokenless.tokens.len(), 1);
    assert_eq!(tokenless.tokens[0].id, None, "no token");
    assert_eq!(tokenless.media.len(), 4);
    assert_eq!(ledger.stats().requests, all.len() as u64);
}

#[test]
fn a_restart_mid_way_loses_nothing_and_the_report_covers_both_runs() {
    let fx = Fixture::new();
    // 14:13 to about 16:13; the agent restarts at 15:30.
    let scrape = scraper(T0, 6_000, 200, 400);
    let restart = H0 + HOUR + 30 * MINUTE;
    let cut = scrape.partition_point(|(_, t)| *t < restart);
    let (first, second) = scrape.split_at(cut);
    {
        let mut ledger = fx.open();
        feed(&mut ledger, first);
        ledger.flush().expect("flush");
        assert_eq!(ledger.stats().compactions, 1, "14:00 closed at 15:10");
    }
    let mut ledger = fx.open();
    feed(&mut ledger, second);
    let end = second.last().expect("requests").1;
    ledger.flush().expect("flush");
    settle(&mut ledger, end + 2 * HOUR);
    assert_eq!(ledger.stats().compactions, 2, "15:00 (both runs) and 16:00");

    let want = expected(&scrape, |_, _| true);
    assert_eq!(seen(&fx.report(token(1), None, None)), want);
    // By hour: 14:00 from the first run alone, 15:00 from both.
    let hour = |h: u64| {
        let since = H0 + h * HOUR;
        let report = fx.report(token(1), Some(since), Some(since + HOUR));
        assert_eq!(report.straddling, 0);
        assert_eq!(
            seen(&report),
            expected(&scrape, |_, t| (since..since + HOUR).contains(&t))
        );
    };
    hour(0);
    hour(1);
}

#[test]
fn time_ranges_on_hour_boundaries_are_exact() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    let h1 = H0 + HOUR;
    let stream = vec![
        (messages(Some(1), SCRAPER_IP, "!a:x", 100), h1 - 1),
        (messages(Some(1), SCRAPER_IP, "!b:x", 200), h1),
        (messages(Some(1), SCRAPER_IP, "!c:x", 400), h1 + HOUR - 1),
        (messages(Some(1), SCRAPER_IP, "!d:x", 800), h1 + HOUR),
    ];
    for (r, t) in &stream {
        ledger.observe(r, *t);
    }
    ledger.flush().expect("flush");
    // Compacted or not, the answer is the same.
    for compact in [false, true] {
        if compact {
            settle(&mut ledger, h1 + 3 * HOUR);
            assert_eq!(ledger.stats().compactions, 3);
        }
        let rooms = |since, until| {
            let r = fx.report(token(1), since, until);
            assert_eq!(r.straddling, 0, "{since:?}..{until:?}");
            let ids: Vec<String> = r.rooms_read.iter().filter_map(|e| e.id.clone()).collect();
            (ids, r.bytes_out)
        };
        assert_eq!(
            rooms(Some(h1), None),
            (vec!["!d:x".into(), "!c:x".into(), "!b:x".into()], 1400)
        );
        assert_eq!(rooms(None, Some(h1)), (vec!["!a:x".into()], 100));
        assert_eq!(
            rooms(Some(h1), Some(h1 + HOUR)),
            (vec!["!c:x".into(), "!b:x".into()], 600)
        );
        // Inclusive start, exclusive end, to the millisecond, for entries of one request.
        assert_eq!(rooms(Some(h1 - 1), Some(h1)), (vec!["!a:x".into()], 100));
        assert_eq!(rooms(Some(h1 - 2), Some(h1 - 1)), (vec![], 0));
        assert_eq!(
            rooms(Some(h1 + HOUR), Some(h1 + 2 * HOUR)),
            (vec!["!d:x".into()], 800)
        );
        assert_eq!(rooms(Some(h1 + 2 * HOUR), None), (vec![], 0));
    }
}

#[test]
fn a_range_that_cuts_an_hour_is_exact_for_entries_on_one_side_and_says_how_many_straddle() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    // Room a at 14:10 and 14:50; room b at 14:50 only; media m at 14:10 only.
    ledger.observe(
        &messages(Some(1), SCRAPER_IP, "!a:x", 100),
        H0 + 10 * MINUTE,
    );
    ledger.observe(&download(Some(1), SCRAPER_IP, "m", 1_000), H0 + 10 * MINUTE);
    ledger.observe(
        &messages(Some(1), SCRAPER_IP, "!a:x", 200),
        H0 + 50 * MINUTE,
    );
    ledger.observe(
        &messages(Some(1), SCRAPER_IP, "!b:x", 400),
        H0 + 50 * MINUTE,
    );
    ledger.flush().expect("flush");
    ledger.tick(H0 + 2 * HOUR).expect("compacts");
    ledger.flush().expect("flush");
    let r = fx.report(token(1), Some(H0 + 30 * MINUTE), None);
    let rooms: Vec<_> = r
        .rooms_read
        .iter()
        .map(|e| (e.id.clone().unwrap(), e.bytes_out))
        .collect();
    // b exactly; a counted whole (one of its requests is before the range); m left out.
    assert_eq!(rooms, [("!b:x".to_owned(), 400), ("!a:x".to_owned(), 300)]);
    assert!(r.media.is_empty());
    // The straddling entries: room a and the client.messages endpoint.
    assert_eq!(r.straddling, 2);
    assert_eq!(
        r.bytes_out, 700,
        "the endpoint client.messages counted whole"
    );
    assert_eq!(r.first_seen.as_deref(), Some("2026-09-21T14:10:00.000Z"));
}

#[test]
fn requests_without_token_or_address() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger.observe(&req(None, None, "client.sync", Class::Sync, 10), T0);
    ledger.observe(&req(Some(1), None, "client.sync", Class::Sync, 20), T0);
    ledger.flush().expect("flush");
    let stats = ledger.stats();
    assert_eq!((stats.unattributed, stats.requests), (1, 1));
    let r = fx.report(token(1), None, None);
    assert_eq!(r.bytes_out, 20);
    assert_eq!(r.addresses.len(), 1);
    assert_eq!(r.addresses[0].id, None, "no address");
}
