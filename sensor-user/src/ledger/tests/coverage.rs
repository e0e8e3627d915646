//! The coverage log: its format, de-duplication, torn lines, periods, retention.

use std::os::unix::fs::MetadataExt;

use super::*;
use crate::detect::{Blind, Severity};
use crate::ledger::coverage::writer::MAX_RECORDS;
use crate::ledger::coverage::{self, End, Event, Parsed, Period, Record, WHY_MAX};

const OFF: &str = "turned off by attribution.request_heads = \"off\"";

fn blind(why: &str) -> Coverage {
    Coverage::Blind { why: why.into() }
}

fn partial(why: &str) -> Coverage {
    Coverage::Partial { why: why.into() }
}

fn log_text(fx: &Fixture) -> String {
    fs::read_to_string(fx.dir().join(coverage::FILE)).expect("coverage log")
}

fn log(fx: &Fixture) -> Parsed {
    coverage::read(fx.dir()).expect("read").expect("a log")
}

fn record(at_ms: u64, event: Event) -> Record {
    Record { at_ms, event }
}

#[test]
fn records_are_one_json_line_each_and_read_back() {
    let records = [
        record(T0, Event::Start(blind(OFF))),
        record(T0 + 1_250, Event::Change(partial("cg: PIDs [7]"))),
        record(T0 + MINUTE, Event::Change(Coverage::Full)),
        record(T0 + HOUR, Event::Stop),
    ];
    let text: String = records.iter().map(Record::line).collect();
    assert_eq!(
        text,
        "{\"coverage\":1,\"at\":\"2026-09-21T14:13:20.000Z\",\"event\":\"start\",\
         \"heads\":\"blind\",\"why\":\"turned off by attribution.request_heads = \\\"off\\\"\"}\n\
         {\"coverage\":1,\"at\":\"2026-09-21T14:13:21.250Z\",\"event\":\"change\",\
         \"heads\":\"partial\",\"why\":\"cg: PIDs [7]\"}\n\
         {\"coverage\":1,\"at\":\"2026-09-21T14:14:20.000Z\",\"event\":\"change\",\
         \"heads\":\"full\"}\n\
         {\"coverage\":1,\"at\":\"2026-09-21T15:13:20.000Z\",\"event\":\"stop\"}\n"
    );
    let back = coverage::parse(text.as_bytes());
    assert_eq!(back.records, records);
    assert_eq!(back.skipped, 0);
    // Not records: another version, a stop with heads, a start without, not JSON.
    for bad in [
        "{\"coverage\":2,\"at\":\"2026-09-21T14:13:20.000Z\",\"event\":\"stop\"}",
        "{\"coverage\":1,\"at\":\"2026-09-21T14:13:20.000Z\",\"event\":\"stop\",\"heads\":\"full\"}",
        "{\"coverage\":1,\"at\":\"2026-09-21T14:13:20.000Z\",\"event\":\"start\"}",
        "{\"coverage\":1,\"at\":\"yesterday\",\"event\":\"stop\"}",
        "{\"coverage\":1,\"at\":\"2026-09-21T14:13:",
    ] {
        assert_eq!(coverage::parse(bad.as_bytes()).skipped, 1, "{bad}");
    }
}

#[test]
fn a_run_writes_its_start_then_only_changes_then_its_stop() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    assert!(
        coverage::read(fx.dir()).unwrap().is_none(),
        "no note, no log"
    );
    for (second, c) in [
        (0, blind(OFF)),
        (1, blind(OFF)),
        (2, blind(OFF)),
        (3, Coverage::Full),
        (4, Coverage::Full),
        (5, partial("cg")),
        (6, partial("cg")),
        (7, partial("cg2")),
    ] {
        ledger.note_coverage(T0 + second * SECOND, c).expect("note");
    }
    ledger.note_stop(T0 + 10 * SECOND).expect("stop");
    ledger
        .note_stop(T0 + 11 * SECOND)
        .expect("a second stop writes nothing");
    // The next run (same process, after the stop) starts again, even seeing the same.
    ledger
        .note_coverage(T0 + MINUTE, partial("cg2"))
        .expect("note");
    let want = [
        record(T0, Event::Start(blind(OFF))),
        record(T0 + 3 * SECOND, Event::Change(Coverage::Full)),
        record(T0 + 5 * SECOND, Event::Change(partial("cg"))),
        record(T0 + 7 * SECOND, Event::Change(partial("cg2"))),
        record(T0 + 10 * SECOND, Event::Stop),
        record(T0 + MINUTE, Event::Start(partial("cg2"))),
    ];
    assert_eq!(log(&fx).records, want);
    let meta = fs::metadata(fx.dir().join(coverage::FILE)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    ledger.crash();
    assert_eq!(log(&fx).records.len(), want.len(), "a crash writes no stop");
}

#[test]
fn a_dropped_ledger_notes_its_stop_and_a_disabled_one_writes_nothing() {
    let fx = Fixture::new();
    {
        let mut ledger = fx.open();
        ledger.note_coverage(T0, Coverage::Full).expect("note");
    }
    let records = log(&fx).records;
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].event, Event::Stop);
    assert!(records[1].at_ms >= T0);

    let mut off = Fixture::new();
    off.config.enabled = false;
    let mut ledger = off.open();
    ledger.note_coverage(T0, blind(OFF)).expect("note");
    ledger.note_stop(T0 + 1).expect("stop");
    assert!(!off.dir().exists());
}

#[test]
fn a_torn_last_line_is_ended_by_the_next_append_and_skipped_by_readers() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger.note_coverage(T0, blind(OFF)).expect("note");
    let path = fx.dir().join(coverage::FILE);
    // A crash in the middle of the next write.
    let mut text = log_text(&fx);
    text.push_str("{\"coverage\":1,\"at\":\"2026-09-21T14:");
    fs::write(&path, &text).unwrap();
    let torn = log(&fx);
    assert_eq!((torn.records.len(), torn.skipped), (1, 1));
    ledger.crash();

    let mut ledger = fx.open();
    ledger
        .note_coverage(T0 + MINUTE, Coverage::Full)
        .expect("note");
    assert_eq!(ledger.stats().torn_lines, 1);
    let after = log(&fx);
    assert_eq!(after.skipped, 1);
    assert_eq!(
        after.records,
        [
            record(T0, Event::Start(blind(OFF))),
            record(T0 + MINUTE, Event::Start(Coverage::Full)),
        ]
    );
    assert_eq!(log_text(&fx).lines().count(), 3);
}

#[test]
fn a_long_why_is_cut_at_a_character_boundary() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    let long = "é".repeat(WHY_MAX);
    ledger.note_coverage(T0, partial(&long)).expect("note");
    // The same long reason again is no change.
    ledger
        .note_coverage(T0 + SECOND, partial(&long))
        .expect("note");
    let records = log(&fx).records;
    assert_eq!(records.len(), 1);
    let Event::Start(Coverage::Partial { why }) = &records[0].event else {
        panic!("{records:?}");
    };
    assert!(
        why.len() <= WHY_MAX + '…'.len_utf8() && why.ends_with("é…"),
        "{why}"
    );
}

#[test]
fn periods_run_to_the_next_record_and_a_crash_runs_to_the_next_start() {
    let p = |since_ms, until_ms, ended, coverage| Period {
        since_ms,
        until_ms,
        ended,
        coverage,
    };
    // Blind, then full, then a clean stop.
    let records = [
        record(T0, Event::Start(blind(OFF))),
        record(T0 + HOUR, Event::Change(Coverage::Full)),
        record(T0 + 2 * HOUR, Event::Stop),
    ];
    assert_eq!(
        coverage::periods(&records),
        [
            p(T0, Some(T0 + HOUR), End::Change, blind(OFF)),
            p(T0 + HOUR, Some(T0 + 2 * HOUR), End::Stop, Coverage::Full),
        ]
    );
    // A run killed while partial, then one blind that is still running.
    let records = [
        record(T0, Event::Start(partial("cg"))),
        record(T0 + HOUR, Event::Start(blind(OFF))),
    ];
    assert_eq!(
        coverage::periods(&records),
        [
            p(T0, Some(T0 + HOUR), End::Restart, partial("cg")),
            p(T0 + HOUR, None, End::Open, blind(OFF)),
        ]
    );
    // Killed while blind and started blind again: one period. A clock set back makes an
    // empty period, not a negative one.
    let records = [
        record(T0, Event::Start(blind(OFF))),
        record(T0 + HOUR, Event::Start(blind(OFF))),
        record(T0 + 2 * HOUR, Event::Change(Coverage::Full)),
        record(T0 + HOUR, Event::Change(partial("cg"))),
        record(T0 + 3 * HOUR, Event::Stop),
    ];
    assert_eq!(
        coverage::periods(&records),
        [
            p(T0, Some(T0 + 2 * HOUR), End::Change, blind(OFF)),
            p(
                T0 + 2 * HOUR,
                Some(T0 + 2 * HOUR),
                End::Change,
                Coverage::Full
            ),
            p(T0 + HOUR, Some(T0 + 3 * HOUR), End::Stop, partial("cg")),
        ]
    );
    // Overlap with a range, `since` inclusive, `until` exclusive.
    let closed = p(T0, Some(T0 + HOUR), End::Stop, blind(OFF));
    assert!(closed.overlaps(None, None));
    assert!(closed.overlaps(Some(T0 + HOUR - 1), None));
    assert!(!closed.overlaps(Some(T0 + HOUR), None));
    assert!(!closed.overlaps(None, Some(T0)));
    assert!(closed.overlaps(None, Some(T0 + 1)));
    let open = p(T0, None, End::Open, blind(OFF));
    assert!(open.overlaps(Some(T0 + 100 * DAY), None));
    assert!(!open.overlaps(Some(0), Some(T0)));
}

#[test]
fn coverage_comes_from_what_the_health_check_finds_missing() {
    let b = |capability: &str, why: &str| Blind {
        capability: capability.into(),
        severity: Severity::Warning,
        why: why.into(),
    };
    assert_eq!(Coverage::from_blind(&[]), Coverage::Full);
    assert_eq!(
        Coverage::from_blind(&[b("something_else", "x")]),
        Coverage::Full
    );
    // Requests on a listener the sensor cannot read are not in the ledger either.
    assert_eq!(
        Coverage::from_blind(&[b("listener:unix:/run/s.sock", "x")]),
        partial("unix:/run/s.sock: x")
    );
    assert_eq!(
        Coverage::from_blind(&[
            b("request_heads:/a", "PIDs [1] by bytes"),
            b("unwatchable:/b", "no cgroup")
        ]),
        partial("/a: PIDs [1] by bytes; /b: no cgroup")
    );
    assert_eq!(
        Coverage::from_blind(&[b("unwatchable:/b", "no cgroup"), b("request_heads", OFF)]),
        blind(OFF)
    );
}

#[test]
fn retention_drops_records_of_periods_over_before_the_horizon() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    // Day 0 blind, day 1 full, stop on day 2; day 3 a run starts blind and stays so.
    ledger.note_coverage(T0, blind(OFF)).expect("note");
    ledger
        .note_coverage(T0 + DAY, Coverage::Full)
        .expect("note");
    ledger.note_stop(T0 + 2 * DAY).expect("stop");
    ledger
        .note_coverage(T0 + 3 * DAY, blind(OFF))
        .expect("note");
    let retention = DAY * u64::from(fx.config.retention_days);
    // The horizon on day 1.5: the first period is over, the full one runs across it.
    ledger.tick(T0 + DAY + DAY / 2 + retention).expect("tick");
    let times: Vec<u64> = log(&fx).records.iter().map(|r| r.at_ms).collect();
    assert_eq!(times, [T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY]);
    // Horizon on day 10: only the open blind period is left, however old its start.
    ledger.tick(T0 + 10 * DAY + retention).expect("tick");
    assert_eq!(
        log(&fx).records,
        [record(T0 + 3 * DAY, Event::Start(blind(OFF)))]
    );
    // Appends after a prune go on as before, and nothing is left behind.
    ledger
        .note_coverage(T0 + 11 * DAY, Coverage::Full)
        .expect("note");
    assert_eq!(log(&fx).records.len(), 2);
    assert!(!fx.dir().join(".coverage.jsonl.tmp").exists());
}

#[test]
fn a_prune_drops_the_records_of_ended_periods_and_the_oldest_past_max_records() {
    let cut = |times: &[u64], horizon| coverage::writer::cut(times, horizon);
    assert_eq!(cut(&[], T0), 0);
    assert_eq!(cut(&[T0], T0 + DAY), 0, "the last record always stays");
    assert_eq!(cut(&[T0, T0 + 1, T0 + 2], T0 + 1), 1);
    assert_eq!(cut(&[T0, T0 + 1, T0 + 2], T0), 0);
    let many: Vec<u64> = (0..MAX_RECORDS as u64 + 10).map(|i| T0 + i).collect();
    assert_eq!(cut(&many, 0), 10);
    assert_eq!(cut(&many, T0 + 20), 20);
}
