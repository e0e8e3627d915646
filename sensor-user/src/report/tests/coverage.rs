//! What the report says when the ledger's coverage log shows the sensor ran without request
//! heads: in the text, in the JSON, and nothing at all for a ledger without the log.

use super::*;
use crate::ledger::Coverage;
use crate::ledger::coverage::{End, Heads};

const OFF: &str = "turned off by attribution.request_heads = \"off\"";
const TOKEN: &str = "tfp_0000000000000001";

fn blind() -> Coverage {
    Coverage::Blind { why: OFF.into() }
}

/// A ledger where one run was blind from H0 for an hour, then saw everything (the scraper's
/// download at H0 + 90 min) until its stop at H0 + 2 h.
fn blind_then_full() -> Fixture {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger.note_coverage(H0, blind()).expect("note");
    ledger
        .note_coverage(H0 + HOUR, Coverage::Full)
        .expect("note");
    ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), H0 + 90 * MINUTE);
    ledger.note_stop(H0 + 2 * HOUR).expect("stop");
    ledger.flush().expect("flush");
    fx
}

fn report(fx: &Fixture, argv: &[&str]) -> Report {
    let mut argv = argv.to_vec();
    argv.push("--json");
    serde_json::from_str(&output(fx, &argv, H0 + DAY)).expect("a report")
}

const BLIND_SENTENCE: &str = "The sensor ran without request heads from \
    2026-09-21T14:00:00.000Z to 2026-09-21T15:00:00.000Z (turned off by \
    attribution.request_heads = \"off\"): requests of that time are not in the ledger.";

#[test]
fn a_range_wholly_blind_says_so_instead_of_no_requests() {
    let fx = blind_then_full();
    let argv = [
        "--token-fingerprint",
        TOKEN,
        "--since",
        "2026-09-21T14:10:00Z",
        "--until",
        "2026-09-21T14:50:00Z",
    ];
    let text = output(&fx, &argv, H0 + DAY);
    assert!(
        text.contains(
            "No requests of this token in the ledger for that range, but the sensor ran without \
             request heads for all of it: it saw no requests at all, so the ledger cannot say \
             whether this token made any (0 hour segments read).\n\n"
        ),
        "{text}"
    );
    assert!(text.contains(BLIND_SENTENCE), "{text}");
    let r = report(&fx, &argv);
    assert!(!r.found && r.coverage.known && r.coverage.blind_throughout);
    assert_eq!(r.coverage.gaps.len(), 1);
    let gap = &r.coverage.gaps[0];
    assert_eq!(
        (
            gap.heads,
            gap.since.as_str(),
            gap.until.as_deref(),
            gap.ended
        ),
        (
            Heads::Blind,
            "2026-09-21T14:00:00.000Z",
            Some("2026-09-21T15:00:00.000Z"),
            End::Change
        )
    );
    assert_eq!(gap.why, OFF);
}

#[test]
fn a_range_partly_blind_says_so_with_or_without_requests() {
    let fx = blind_then_full();
    // The whole ledger: the download is found, and the blind hour is named.
    let text = output(&fx, &["--token-fingerprint", TOKEN], H0 + DAY);
    assert!(text.contains("Totals:    1 requests,"), "{text}");
    let at = text.find(BLIND_SENTENCE).expect(&text);
    assert!(
        at < text.find("\nEndpoints").unwrap(),
        "before the sections"
    );
    let r = report(&fx, &["--token-fingerprint", TOKEN]);
    assert!(r.found && !r.coverage.blind_throughout);
    assert_eq!(r.coverage.gaps.len(), 1);

    // Another subject, in a range half blind: no requests, but not because it was idle.
    let argv = [
        "--client-ip",
        "192.0.2.1",
        "--since",
        "2026-09-21T14:30:00Z",
    ];
    let text = output(&fx, &argv, H0 + DAY);
    assert!(
        text.contains(
            "No requests of this client address in the ledger for that range, but the sensor \
             could not see every request for some of that time (below): requests of those \
             periods are not in the ledger (1 hour segments read)."
        ),
        "{text}"
    );
    assert!(text.contains(BLIND_SENTENCE), "{text}");
    assert!(!report(&fx, &argv).coverage.blind_throughout);
}

#[test]
fn a_range_cut_outside_the_blind_period_says_nothing_of_it() {
    let fx = blind_then_full();
    let argv = [
        "--token-fingerprint",
        TOKEN,
        "--since",
        "2026-09-21T15:00:00Z",
    ];
    let text = output(&fx, &argv, H0 + DAY);
    assert!(!text.contains("without request heads"), "{text}");
    let r = report(&fx, &argv);
    assert!(r.found && r.coverage.known && r.coverage.gaps.is_empty());
    // Before the blind period: nothing either (the log starts there).
    let argv = ["--user", SCRAPER, "--until", "2026-09-21T14:00:00Z"];
    let text = output(&fx, &argv, H0 + DAY);
    assert!(
        text.contains("No requests of this user in the ledger for that range (0 hour"),
        "{text}"
    );
    assert!(!text.contains("without request heads"), "{text}");
}

#[test]
fn a_crash_runs_the_period_to_the_next_start_and_an_open_one_says_so() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger
        .note_coverage(
            H0,
            Coverage::Partial {
                why: "/system.slice/synapse.service: PIDs [812] are watched by byte counts only"
                    .into(),
            },
        )
        .expect("note");
    ledger.crash();
    let mut ledger = fx.open();
    ledger.note_coverage(H0 + HOUR, blind()).expect("note");
    ledger.crash();
    let text = output(&fx, &["--user", SCRAPER, "--since", "2026-09-21"], H0 + DAY);
    assert!(
        text.contains(
            "The sensor ran without request heads for some watched processes from \
             2026-09-21T14:00:00.000Z to 2026-09-21T15:00:00.000Z (/system.slice/synapse.service: \
             PIDs [812] are watched by byte counts only): their requests of that time are not \
             in the ledger. 2026-09-21T15:00:00.000Z is the agent's next start: it stopped \
             before, without recording when (killed or crashed).\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "The sensor ran without request heads from 2026-09-21T15:00:00.000Z on (turned off \
             by attribution.request_heads = \"off\"): requests of that time are not in the \
             ledger. That is the last record: the agent still runs so, or stopped without \
             recording it.\n"
        ),
        "{text}"
    );
    // Part of the range (from midnight) was seen, or not recorded: not "all of it".
    assert!(text.contains("for some of that time (below)"), "{text}");
    let r = report(&fx, &["--user", SCRAPER, "--since", "2026-09-21T15:30:00Z"]);
    assert!(
        r.coverage.blind_throughout,
        "an open blind period covers an open range"
    );
    let gaps: Vec<(Heads, End)> = report(&fx, &["--user", SCRAPER])
        .coverage
        .gaps
        .iter()
        .map(|g| (g.heads, g.ended))
        .collect();
    assert_eq!(
        gaps,
        [(Heads::Partial, End::Restart), (Heads::Blind, End::Open)]
    );
}

#[test]
fn a_ledger_without_a_coverage_log_reports_as_before() {
    let (fx, _) = scraped();
    assert!(!fx.dir().join(crate::ledger::coverage::FILE).exists());
    let text = output(&fx, &["--client-ip", "192.0.2.200"], T0);
    assert!(
        text.contains("No requests of this client address in the ledger for that range (2 hour"),
        "{text}"
    );
    assert!(!text.contains("sensor"), "{text}");
    let r = report(&fx, &["--client-ip", "192.0.2.200"]);
    assert_eq!(r.coverage, SensorCoverage::default());
    // A report written before the log reads back, its coverage unknown.
    let mut value: serde_json::Value = serde_json::to_value(&r).unwrap();
    value.as_object_mut().unwrap().remove("coverage");
    let old: Report = serde_json::from_value(value).expect("an old report");
    assert!(!old.coverage.known);
}

#[test]
fn unreadable_coverage_lines_are_noted() {
    let fx = blind_then_full();
    let path = fx.dir().join(crate::ledger::coverage::FILE);
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("{\"coverage\":1,\"at\":\"2026-09-21T16:");
    fs::write(&path, text).unwrap();
    let out = output(&fx, &["--token-fingerprint", TOKEN], H0 + DAY);
    assert!(
        out.contains(
            "\nNote: 1 lines of the ledger's coverage log could not be read (damaged, or being \
             written) and were skipped.\n"
        ),
        "{out}"
    );
    assert!(out.contains(BLIND_SENTENCE), "{out}");
}
