//! Retention: by age and by size, every deletion counted.

use super::*;

#[test]
fn retention_deletes_old_segments_then_the_oldest_over_the_size_budget_and_counts_both() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    // One request in each of 10 consecutive days, 00:xx, then a busy day.
    let day0 = H0 / DAY * DAY;
    for d in 0..10 {
        ledger.observe(
            &download(Some(1), SCRAPER_IP, &format!("d{d}"), 10),
            day0 + d * DAY,
        );
    }
    ledger.flush().expect("flush");
    assert_eq!(ledger.stats().segments, 10);
    let mut small = fx.config.clone();
    small.retention_days = 5;
    assert!(ledger.reload(&small).is_empty());
    // Day 10, 00:30: the hours of days 0 to 4 ended more than five days ago.
    let now = day0 + 10 * DAY + 30 * MINUTE;
    ledger.tick(now).expect("tick");
    let stats = ledger.stats();
    assert_eq!((stats.pruned_segments_age, stats.segments), (5, 5));
    assert!(stats.pruned_bytes > 0);
    let r = fx.report(token(1), None, None);
    let media: Vec<String> = r.media.iter().filter_map(|e| e.id.clone()).collect();
    let want: Vec<String> = (5..10).map(|d| format!("mxc://example.org/d{d}")).collect();
    assert_eq!(media, want);
    // Requests older than the retention are not kept, and say so.
    ledger.observe(&download(Some(1), SCRAPER_IP, "old", 10), day0);
    assert_eq!(ledger.stats().stale, 1);

    // Size: a budget of three small segments keeps the newest three, never the current
    // or the previous hour.
    let each = fx.bytes_on_disk() / 5;
    small.max_bytes = each * 3;
    ledger.reload(&small);
    // (A segment being compacted is not deleted: let the one started at `now` finish.)
    ledger.flush().expect("flush");
    ledger.tick(now + SECOND).expect("tick");
    let stats = ledger.stats();
    assert_eq!(
        (stats.pruned_segments_size, stats.segments),
        (2, 3),
        "{stats:?}"
    );
    assert_eq!(stats.bytes, fx.bytes_on_disk());
    small.max_bytes = 1;
    ledger.reload(&small);
    ledger.observe(&download(Some(1), SCRAPER_IP, "now", 10), now);
    ledger.observe(&download(Some(1), SCRAPER_IP, "previous", 10), now - HOUR);
    ledger.flush().expect("flush");
    ledger.tick(now + 6 * SECOND).expect("tick");
    let stats = ledger.stats();
    assert_eq!(
        stats.segments, 2,
        "the current and previous hour stay: {stats:?}"
    );
    assert_eq!(stats.pruned_segments_size, 5);
}
