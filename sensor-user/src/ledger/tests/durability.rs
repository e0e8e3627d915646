//! What survives: flushes, crashes, damaged lines, failed writes, compaction, the lock.

use super::*;

#[test]
fn a_dropped_ledger_writes_what_it_holds_and_a_crash_loses_only_the_last_flush_interval() {
    let fx = Fixture::new();
    {
        let mut ledger = fx.open();
        ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), T0);
        // Dropped without flush: Drop writes it.
    }
    let mut ledger = fx.open();
    ledger.tick(T0 + SECOND).expect("tick");
    ledger.observe(&download(Some(1), SCRAPER_IP, "b", 2_000), T0 + 2 * SECOND);
    ledger.tick(T0 + 7 * SECOND).expect("tick flushes");
    ledger.observe(&download(Some(1), SCRAPER_IP, "c", 4_000), T0 + 8 * SECOND);
    ledger.crash();
    let report = fx.report(token(1), None, None);
    let media: Vec<_> = report.media.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(media, ["mxc://example.org/b", "mxc://example.org/a"]);
    assert_eq!(report.bytes_out, 3_000);
}

#[test]
fn a_busy_second_is_flushed_before_flush_s_is_up_and_nothing_is_lost() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger.tick(T0).expect("first tick");
    // More than EARLY_FLUSH_REQUESTS within one second, then again: with only the
    // 5-second flush, the second burst would pass MAX_PENDING_REQUESTS.
    let burst = EARLY_FLUSH_REQUESTS + 1_000;
    for second in 1..=2 {
        for i in 0..burst {
            let r = download(Some(1 + i % 64), SCRAPER_IP, "m", 10);
            ledger.observe(&r, T0 + (second - 1) * SECOND + i % 1_000);
        }
        ledger.tick(T0 + second * SECOND).expect("tick");
        assert_eq!(
            ledger.stats().pending_requests,
            0,
            "flushed at second {second}"
        );
    }
    let stats = ledger.stats();
    assert_eq!((stats.requests, stats.lost), (2 * burst, 0));
    assert_eq!(
        fx.report(token(1), None, None).requests,
        2 * burst.div_ceil(64)
    );
}

#[test]
fn compaction_merges_an_hour_into_one_line_per_subject_and_changes_no_answer() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    let stream = scraper(H0 + MINUTE, 500, 50, 100);
    let normal = benign(H0, HOUR, 3);
    let mut all: Vec<_> = stream.into_iter().chain(normal).collect();
    all.sort_by_key(|(_, t)| *t);
    feed(&mut ledger, &all);
    ledger.tick(H0 + HOUR - 1).expect("tick");
    ledger.flush().expect("flush");
    let path = fx.segment_path(H0);
    let before = fs::read_to_string(&path).expect("segment");
    assert!(
        before.lines().count() > 20,
        "one line per subject and flush"
    );
    let subjects = [token(1), token(2), Subject::Address(SCRAPER_IP.into())];
    let reports: Vec<Report> = subjects
        .iter()
        .map(|s| fx.report(s.clone(), None, None))
        .collect();

    // Not yet: the hour ended less than ten minutes ago.
    ledger.tick(H0 + HOUR + 5 * MINUTE).expect("tick");
    ledger.flush().expect("flush");
    assert_eq!(ledger.stats().compactions, 0);
    ledger.tick(H0 + HOUR + 11 * MINUTE).expect("tick");
    ledger.flush().expect("flush");
    assert_eq!(ledger.stats().compactions, 1);
    let after = fs::read_to_string(&path).expect("segment");
    let mut lines = after.lines();
    assert_eq!(
        lines.next(),
        Some(r#"{"ledger":1,"hour":"2026-09-21T14:00:00.000Z","compacted":true }"#)
    );
    // Tokens 1..=4, addresses: the scraper's, three clients', the token-less one.
    assert_eq!(lines.count(), 4 + 5);
    assert!(after.len() < before.len());
    for (s, r) in subjects.iter().zip(&reports) {
        assert_eq!(&fx.report(s.clone(), None, None), r);
    }
    assert_eq!(ledger.stats().bytes, fx.bytes_on_disk());

    // A late request (its head in the compacted hour) reopens it, and the next
    // compaction folds it in.
    ledger.observe(&download(Some(1), SCRAPER_IP, "late", 5_000), H0 + HOUR - 2);
    ledger.tick(H0 + HOUR + 12 * MINUTE).expect("tick");
    let reopened = fs::read_to_string(&path).expect("segment");
    assert!(
        reopened.starts_with(r#"{"ledger":1,"hour":"2026-09-21T14:00:00.000Z","compacted":false}"#)
    );
    ledger.tick(H0 + HOUR + 30 * MINUTE).expect("tick");
    ledger.flush().expect("flush");
    assert_eq!(ledger.stats().compactions, 2);
    let r = fx.report(token(1), None, None);
    assert_eq!(r.bytes_out, reports[0].bytes_out + 5_000);
    assert_eq!(
        fs::read_to_string(&path).expect("segment").lines().count(),
        1 + 9
    );
}

#[test]
fn unreadable_lines_are_skipped_counted_and_kept_by_compaction() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), T0);
    ledger.flush().expect("flush");
    let path = fx.segment_path(T0);
    let mut text = fs::read_to_string(&path).expect("segment");
    text.push_str("{\"token\":\"tfp_0000000000000001\",\"endpoints\":{\"x\":[1,2]}}\n");
    text.push_str("this is not json\n");
    fs::write(&path, text).expect("write");
    ledger.observe(&download(Some(1), SCRAPER_IP, "b", 2_000), T0 + SECOND);
    ledger.flush().expect("flush");
    let r = fx.report(token(1), None, None);
    assert_eq!((r.bytes_out, r.media.len(), r.skipped_lines), (3_000, 2, 2));

    // Compaction keeps them as they are (evidence is not thrown away), still skipped.
    ledger.tick(T0 + 2 * HOUR).expect("tick");
    ledger.flush().expect("flush");
    assert_eq!(ledger.stats().compactions, 1);
    let r = fx.report(token(1), None, None);
    assert_eq!((r.bytes_out, r.media.len(), r.skipped_lines), (3_000, 2, 2));
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .contains("this is not json\n")
    );
}

#[test]
fn a_line_cut_by_a_crash_is_ended_before_the_next_write() {
    let fx = Fixture::new();
    {
        let mut ledger = fx.open();
        ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), T0);
        ledger.flush().expect("flush");
    }
    // The crash: half a line at the end.
    let path = fx.segment_path(T0);
    let mut text = fs::read_to_string(&path).expect("segment");
    text.push_str("{\"token\":\"tfp_0000000000000001\",\"endpoi");
    fs::write(&path, text).expect("write");
    let r = fx.report(token(1), None, None);
    assert_eq!((r.bytes_out, r.skipped_lines), (1_000, 1));

    let mut ledger = fx.open();
    ledger.observe(&download(Some(1), SCRAPER_IP, "b", 2_000), T0 + SECOND);
    ledger.flush().expect("flush");
    assert_eq!(ledger.stats().torn_lines, 1);
    let r = fx.report(token(1), None, None);
    assert_eq!((r.bytes_out, r.media.len(), r.skipped_lines), (3_000, 2, 1));
}

#[test]
fn a_failed_write_is_undone_and_retried_at_the_next_flush() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: root writes to a read-only directory");
        return;
    }
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), T0);
    fs::set_permissions(fx.dir(), fs::Permissions::from_mode(0o500)).expect("chmod");
    let err = ledger.tick(T0).expect_err("cannot create the segment");
    assert!(
        err.to_string().contains("written again at the next flush"),
        "{err}"
    );
    assert_eq!(ledger.stats().write_errors, 1);
    assert_eq!(ledger.stats().pending_requests, 1);
    fs::set_permissions(fx.dir(), fs::Permissions::from_mode(0o700)).expect("chmod");
    ledger.tick(T0 + 5 * SECOND).expect("written now");
    assert_eq!(ledger.stats().pending_requests, 0);
    assert_eq!(fx.report(token(1), None, None).bytes_out, 1_000);
}

#[test]
fn one_agent_per_directory_and_the_directory_stays_private() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let mode = fs::metadata(fx.dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let err = Ledger::open(&fx.config).err().expect("locked");
    assert!(matches!(err, LedgerError::Locked { .. }), "{err}");
    drop(ledger);
    fs::set_permissions(fx.dir(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = Ledger::open(&fx.config).err().expect("refused");
    assert!(err.to_string().contains("chmod 700"), "{err}");
    fs::set_permissions(fx.dir(), fs::Permissions::from_mode(0o700)).expect("chmod");
    // Segments are private too.
    let mut ledger = fx.open();
    ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), T0);
    ledger.flush().expect("flush");
    let mode = fs::metadata(fx.segment_path(T0))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_compaction_cut_by_a_crash_leaves_the_segment_whole() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), T0);
    ledger.flush().expect("flush");
    drop(ledger);
    // The temporary file of a compaction that never reached its rename.
    let tmp = fx.dir().join(segment::tmp_name(T0 / HOUR_MS));
    fs::write(
        &tmp,
        "{\"ledger\":1,\"hour\":\"x\",\"compacted\":true }\n{\"tok",
    )
    .unwrap();
    let other = fx.dir().join("notes.txt");
    fs::write(&other, "kept").unwrap();
    let _ledger = fx.open();
    assert!(!tmp.exists());
    assert!(
        other.exists(),
        "files that are not the ledger's are left alone"
    );
    let r = fx.report(token(1), None, None);
    assert_eq!((r.bytes_out, r.skipped_lines), (1_000, 0));
}

#[test]
fn a_disabled_ledger_does_nothing() {
    let fx = Fixture::new();
    let config = LedgerConfig {
        enabled: false,
        ..fx.config.clone()
    };
    let mut ledger = Ledger::open(&config).expect("open");
    ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), T0);
    ledger.tick(T0 + HOUR).expect("tick");
    ledger.flush().expect("flush");
    assert!(!fx.dir().exists());
    assert_eq!(ledger.stats(), LedgerStats::default());
    assert_eq!(ledger.reload(&fx.config), ["ledger.enabled"]);
}
