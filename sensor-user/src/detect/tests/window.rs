//! The window primitives on their own.

use super::{SECOND, T0};
use crate::detect::TopItem;
use crate::detect::window::{DistinctWindow, SumWindow, item_key, top_items};

#[test]
fn a_one_minute_sum_expires_on_the_second() {
    let mut w = SumWindow::new(60);
    assert!(w.add(T0, T0, 100));
    assert!(w.add(T0 + 999, T0 + 999, 10));
    w.advance(T0 + 59_999);
    assert_eq!((w.bytes(), w.requests()), (110, 2));
    w.advance(T0 + 60 * SECOND);
    assert_eq!((w.bytes(), w.requests()), (0, 0));
    assert!(w.is_empty());
}

#[test]
fn an_event_already_outside_the_window_is_refused() {
    let mut w = SumWindow::new(60);
    assert!(!w.add(T0 + 60 * SECOND, T0, 100));
    assert!(w.add(T0 + 60 * SECOND, T0 + SECOND, 100));
    assert_eq!(w.bytes(), 100);
}

#[test]
fn late_events_are_slotted_in_order() {
    let mut w = SumWindow::new(60);
    for t in [10, 30, 20, 5, 30] {
        assert!(w.add(T0 + 40 * SECOND, T0 + t * SECOND, t));
    }
    assert_eq!(
        (w.bytes(), w.requests(), w.first_ms()),
        (95, 5, T0 + 5 * SECOND)
    );
    // The slots leave in time order: 5 s, then 10 s.
    w.advance(T0 + 65 * SECOND);
    assert_eq!(w.bytes(), 90);
    w.advance(T0 + 70 * SECOND);
    assert_eq!(w.bytes(), 80);
}

#[test]
fn long_windows_keep_at_most_sixty_slots() {
    let mut w = SumWindow::new(3_600);
    // One request a second for two hours.
    for s in 0..7_200u64 {
        let t = T0 + s * SECOND;
        w.add(t, t, 1);
        assert!(w.slots() <= 61, "{} slots at {s} s", w.slots());
    }
    // Minute slots: the hour holds between 59 and 60 minutes of requests.
    assert!((3_540..=3_600).contains(&w.requests()), "{}", w.requests());
}

#[test]
fn distinct_items_expire_to_the_millisecond_unless_touched_again() {
    let mut w = DistinctWindow::new(60, 100);
    assert!(w.add(T0, T0, item_key(&"a"), Some("a"), 10));
    assert!(w.add(T0, T0, item_key(&"b"), Some("b"), 10));
    assert!(w.add(
        T0 + 30 * SECOND,
        T0 + 30 * SECOND,
        item_key(&"a"),
        Some("a"),
        10
    ));
    assert_eq!(w.count(), 2);
    w.advance(T0 + 60 * SECOND - 1);
    assert_eq!(w.count(), 2);
    w.advance(T0 + 60 * SECOND);
    assert_eq!(w.count(), 1, "b left; a was touched again");
    assert_eq!(w.totals(), (2, 20));
    w.advance(T0 + 90 * SECOND);
    assert!(w.is_empty());
}

#[test]
fn a_full_distinct_window_saturates_until_items_expire() {
    let mut w = DistinctWindow::new(60, 3);
    for (i, t) in [0u64, 1, 2, 3, 4].into_iter().enumerate() {
        assert!(w.add(T0 + t, T0 + t, item_key(&i), None, 1));
    }
    assert_eq!((w.count(), w.saturated()), (3, true));
    // Known items still count their requests at the cap.
    assert!(w.add(T0 + 5, T0 + 5, item_key(&0usize), None, 1));
    assert_eq!(w.totals().0, 4);
    w.advance(T0 + 60 * SECOND + 2);
    assert_eq!((w.count(), w.saturated()), (1, false));
}

#[test]
fn top_items_are_the_biggest_once_each() {
    let item = |name: &str, requests, bytes_out| TopItem {
        item: name.into(),
        requests,
        bytes_out,
    };
    let rows = vec![
        item("a", 1, 10),
        item("b", 5, 50),
        item("a", 2, 70),
        item("c", 9, 50),
        item("d", 1, 1),
    ];
    let names: Vec<String> = top_items(rows.into_iter(), 3)
        .into_iter()
        .map(|t| t.item)
        .collect();
    assert_eq!(names, ["a", "c", "b"]);
}

#[test]
fn item_keys_are_stable_and_distinct() {
    assert_eq!(item_key(&("room", "!a:x")), item_key(&("room", "!a:x")));
    assert_ne!(item_key(&("room", "!a:x")), item_key(&("room", "!b:x")));
    assert_ne!(item_key(&("room", "!a:x")), item_key(&("media", "!a:x")));
}
