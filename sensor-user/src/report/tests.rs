//! Unit tests for the report: arguments, times, the text and JSON outputs, errors. The
//! ledger fixtures come from `ledger/tests.rs`.

mod coverage;

use std::fs;

use clap::Parser;

use super::render::{human_bytes, thousands};
use super::*;
use crate::ledger::tests::{
    DAY, Fixture, H0, HOUR, MINUTE, SCRAPER, SCRAPER_IP, T0, benign, download, expected, feed, fp,
    scraper, seen,
};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ReportArgs,
}

fn parse(argv: &[&str]) -> Result<ReportArgs, clap::Error> {
    let argv = std::iter::once("report").chain(argv.iter().copied());
    Cli::try_parse_from(argv).map(|c| c.args)
}

fn args(argv: &[&str]) -> ReportArgs {
    parse(argv).unwrap_or_else(|e| panic!("{e}"))
}

/// The report's output for `argv` against the fixture's ledger, at `now`.
fn output(fx: &Fixture, argv: &[&str], now: u64) -> String {
    let mut out = Vec::new();
    run_at(&args(argv), fx.dir(), &mut out, now).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8(out).expect("UTF-8")
}

/// A ledger with a scraper (from T0, 300 rooms, 600 media) and four benign clients.
fn scraped() -> (Fixture, Vec<(crate::output::RequestRecord, u64)>) {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    let mut all = scraper(T0, 150, 300, 600);
    all.extend(benign(H0, 2 * HOUR, 4));
    all.sort_by_key(|(_, t)| *t);
    feed(&mut ledger, &all);
    ledger.flush().expect("flush");
    (fx, all)
}

#[test]
fn exactly_one_subject_is_required() {
    assert!(parse(&[]).is_err());
    assert!(parse(&["--user", "@a:x", "--client-ip", "10.0.0.1"]).is_err());
    let a = args(&["--token-fingerprint", "tfp_0000000000000001"]);
    assert_eq!((a.top, a.json, a.since.as_deref()), (25, false, None));
    // Callers that build the arguments themselves get the same rule.
    let err = Query::from_args(&ReportArgs::default(), T0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "give exactly one of --user, --token-fingerprint and --client-ip"
    );
}

#[test]
fn subjects_are_checked_and_addresses_canonical() {
    let q = |argv: &[&str]| Query::from_args(&args(argv), T0);
    assert_eq!(
        q(&["--client-ip", "::ffff:203.0.113.7"]).unwrap().subject,
        Subject::Address("203.0.113.7".into())
    );
    assert_eq!(
        q(&["--client-ip", "2001:DB8::1"]).unwrap().subject,
        Subject::Address("2001:db8::1".into())
    );
    let err = q(&["--client-ip", "example.org"]).unwrap_err().to_string();
    assert_eq!(err, "--client-ip \"example.org\" is not an IP address");
    // A pasted raw token is never echoed.
    let err = q(&["--token-fingerprint", "syt_c2VjcmV0_abcdef_123"])
        .unwrap_err()
        .to_string();
    assert!(!err.contains("syt_"), "{err}");
    assert!(err.contains("tfp_"), "{err}");
    assert!(q(&["--token-fingerprint", "TFP_0000000000000001"]).is_err());
    assert_eq!(
        q(&["--token-fingerprint", "tfp_00000000000000AB"])
            .unwrap()
            .subject,
        Subject::Token("tfp_00000000000000ab".parse().unwrap())
    );
    let err = q(&["--user", "alice"]).unwrap_err().to_string();
    assert!(err.contains("@alice:example.org"), "{err}");
}

#[test]
fn times_are_rfc3339_dates_or_durations_before_now() {
    let t = |v: &str| parse_time("since", v, T0);
    assert_eq!(t("2026-09-21T14:13:20Z").unwrap(), T0);
    assert_eq!(t("2026-09-21T16:13:20.000+02:00").unwrap(), T0);
    assert_eq!(t("2026-09-21").unwrap(), T0 / (24 * HOUR) * (24 * HOUR));
    assert_eq!(t("now").unwrap(), T0);
    assert_eq!(t("30s").unwrap(), T0 - 30_000);
    assert_eq!(t("90m").unwrap(), T0 - 90 * MINUTE);
    assert_eq!(t("24h").unwrap(), T0 - 24 * HOUR);
    assert_eq!(t("7d").unwrap(), T0 - 7 * 24 * HOUR);
    assert_eq!(t("2w").unwrap(), T0 - 14 * 24 * HOUR);
    for bad in [
        "",
        "h",
        "24",
        "-1h",
        "1.5h",
        "yesterday",
        "2026-09-21T14:13",
        "9999999999w",
    ] {
        let err = t(bad).unwrap_err().to_string();
        assert!(err.starts_with("--since "), "{bad}: {err}");
        assert!(err.contains("RFC 3339"), "{err}");
    }
    let err = Query::from_args(
        &args(&["--user", "@a:x", "--since", "1h", "--until", "2h"]),
        T0,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "empty time range: --since 2026-09-21T13:13:20.000Z is not before --until \
         2026-09-21T12:13:20.000Z"
    );
}

#[test]
fn the_text_report_has_the_totals_and_every_section_biggest_first() {
    let (fx, all) = scraped();
    let want = expected(&all, |r, _| r.token == Some(fp(1)));
    let text = output(
        &fx,
        &["--token-fingerprint", "tfp_0000000000000001"],
        T0 + 3 * HOUR,
    );
    assert!(
        text.starts_with(
            "Ledger report for token tfp_0000000000000001\nRange:     the whole ledger\n"
        ),
        "{text}"
    );
    let totals = format!(
        "Totals:    {} requests, {} bytes in, {} bytes out (",
        thousands(want.requests),
        thousands(want.bytes_in),
        thousands(want.bytes_out)
    );
    assert!(text.contains(&totals), "{text}");
    for section in [
        "\nUsers (1)\n",
        "\nClient addresses (1)\n",
        "\nEndpoints (",
        "\nRooms read (history, members, state) (300)\n",
        "\nRooms joined (30)\n",
        "\nMedia requested (600)\n",
        "\nUsers looked up (75)\n",
    ] {
        assert!(text.contains(section), "{section:?} missing:\n{text}");
    }
    assert!(text.contains(&format!("  {SCRAPER}")));
    assert!(text.contains("  ... and 575 more (--top 0 or --json lists them all)"));
    assert!(!text.contains("Note:"), "{text}");
    // The biggest piece of media comes first.
    let biggest = want.sections["media"]
        .iter()
        .max_by_key(|(id, (_, out))| (*out, std::cmp::Reverse(id.as_str())))
        .map(|(id, _)| id.clone())
        .unwrap();
    let media = &text[text.find("\nMedia requested").unwrap()..];
    let first_row = media.lines().nth(3).unwrap();
    assert!(first_row.trim_start().starts_with(&biggest), "{first_row}");

    // --top 0 lists everything.
    let all_rows = output(
        &fx,
        &["--token-fingerprint", "tfp_0000000000000001", "--top", "0"],
        T0,
    );
    assert_eq!(all_rows.matches("mxc://example.org/").count(), 600);
    assert!(!all_rows.contains("more (--top 0"));
}

#[test]
fn json_lists_every_entry_and_reads_back() {
    let (fx, all) = scraped();
    let text = output(&fx, &["--user", SCRAPER, "--json"], T0 + 3 * HOUR);
    let report: Report = serde_json::from_str(&text).expect("a report");
    let want = expected(&all, |r, _| r.user.as_deref() == Some(SCRAPER));
    assert_eq!(seen(&report), want);
    assert_eq!(report.subject.kind, "user");
    assert_eq!(report.media.len(), 600);
    assert_eq!(report.granularity_s, 3600);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value["media"][0]["id"].as_str().map(|s| &s[..6]),
        Some("mxc://")
    );
    assert_eq!(value["tokens"][0]["id"], "tfp_0000000000000001");
}

#[test]
fn relative_ranges_count_back_from_now() {
    let (fx, all) = scraped();
    // The scraper runs from 14:13:20 for about four and a half minutes, its media from
    // about 14:15:55. Now is 14:16:50; the last minute.
    let now = T0 + 3 * MINUTE + 30_000;
    let text = output(
        &fx,
        &[
            "--client-ip",
            SCRAPER_IP,
            "--since",
            "1m",
            "--until",
            "now",
            "--json",
        ],
        now,
    );
    let report: Report = serde_json::from_str(&text).unwrap();
    let since = now - MINUTE;
    assert_eq!(report.since.as_deref(), Some("2026-09-21T14:15:50.000Z"));
    // The range cuts the 14:00 hour: an entry with requests on both sides of the edges counts
    // whole (the endpoints do), one whose requests are all on one side is exact (the
    // media: a download and maybe a thumbnail, one after the other).
    let want = expected(&all, |r, t| {
        r.client_ip.as_deref() == Some(SCRAPER_IP) && (since..now).contains(&t)
    });
    assert!(report.requests > want.requests, "endpoints counted whole");
    let got = seen(&report);
    let (got, want) = (&got.sections["media"], &want.sections["media"]);
    assert!(want.len() > 100 && want.len() < 600, "{}", want.len());
    assert!(got.keys().eq(want.keys()), "the same media");
    // Exact but for a piece of media downloaded just inside and thumbnailed just outside.
    let straddles = |id: &str| {
        let times: Vec<u64> = all
            .iter()
            .filter(|(r, _)| r.media_id.as_deref() == id.strip_prefix("mxc://example.org/"))
            .map(|(_, t)| *t)
            .collect();
        times.iter().any(|t| (since..now).contains(t))
            && times.iter().any(|t| !(since..now).contains(t))
    };
    for (id, counts) in got {
        if !straddles(id) {
            assert_eq!(counts, &want[id], "{id}");
        }
    }
    assert!(report.straddling > 0);
}

#[test]
fn an_unknown_subject_is_an_empty_report_that_says_so() {
    let (fx, _) = scraped();
    let text = output(&fx, &["--client-ip", "192.0.2.200"], T0);
    assert!(
        text.contains("No requests of this client address in the ledger for that range ("),
        "{text}"
    );
    let text = output(&fx, &["--user", "@nobody:example.org", "--json"], T0);
    let report: Report = serde_json::from_str(&text).unwrap();
    assert!(!report.found);
    assert_eq!((report.requests, report.first_seen), (0, None));
}

#[test]
fn skipped_lines_are_reported() {
    let fx = Fixture::new();
    let mut ledger = fx.open();
    ledger.observe(&download(Some(1), SCRAPER_IP, "a", 1_000), T0);
    ledger.flush().expect("flush");
    let path = fx.segment_path(T0);
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("{\"token\":\"tfp_0000000000000001\",\"media\":{\"example.org/x\":[1,2,3]}}\n");
    text.push_str("{\"address\":\"10.0.0.1\",\"endp\n");
    fs::write(&path, text).unwrap();
    let out = output(&fx, &["--token-fingerprint", "tfp_0000000000000001"], T0);
    assert!(
        out.contains(
            "Note: 2 ledger lines could not be read (damaged, or being written) and were skipped."
        ),
        "{out}"
    );
    assert!(
        out.contains("Totals:    1 requests, 300 bytes in, 1,000 bytes out (1000 B)"),
        "{out}"
    );
}

#[test]
fn a_missing_or_unreadable_ledger_is_an_error() {
    let fx = Fixture::new();
    let a = args(&["--user", "@a:x"]);
    let mut out = Vec::new();
    let err = run_at(&a, fx.dir(), &mut out, T0).unwrap_err().to_string();
    assert!(err.starts_with("the ledger directory "), "{err}");
    assert!(err.contains("does not exist: is [ledger] enabled"), "{err}");
    fs::write(fx.tmp().join("file"), "x").unwrap();
    let err = run_at(&a, &fx.tmp().join("file"), &mut out, T0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a directory"), "{err}");
    assert!(out.is_empty());
}

#[test]
fn numbers_for_people() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_000), "1,000");
    assert_eq!(thousands(13_510_234_112), "13,510,234,112");
    assert_eq!(human_bytes(1000), "1000 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(13_510_234_112), "12.6 GiB");
}
