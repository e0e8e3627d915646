//! What the demo prints: one line per step or alert, each starting with the time (UTC, as
//! in the records), then the report and a footer on how to read it all.

use serde_json::Value;

/// A step of the demo: `08:01:23.755  demo      the text`.
pub fn step(text: &str) {
    println!("{}  {:<8}  {text}", now(), "demo");
}

/// An alert record: time, severity, rule, and the sensor's summary (which names the
/// subject: user, token fingerprint, client address).
pub fn alert(record: &Value) {
    let time = record["ts"]
        .as_str()
        .and_then(|ts| ts.get(11..23))
        .unwrap_or("??:??:??.???");
    let severity = record["severity"].as_str().unwrap_or("?").to_uppercase();
    let rule = record["rule"].as_str().unwrap_or("?");
    let summary = record["summary"].as_str().unwrap_or("");
    println!("{time}  {severity:<8}  {rule:<22}  {summary}");
}

/// A section title.
pub fn title(text: &str) {
    println!("\n== {text}\n");
}

/// `HH:MM:SS.mmm`, UTC.
fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in MiB with one decimal (the scenario clients' totals).
pub fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

/// How to read the demo's output; `scraper` is the stolen account's user id, `lowered` the
/// lowered thresholds.
pub fn footer(scraper: &str, lowered: &str) {
    title("How to read this");
    println!(
        "\
- Each line with a severity (WARNING, CRITICAL) is one `alert` record of the sensor
  (docs/events.md), printed as it arrived: time (UTC), severity, rule, and the sensor's
  one-sentence summary, which names the subject: the user, the token's keyed fingerprint
  (tfp_..., never the token) and the client's address (nginx passes it in
  X-Forwarded-For; the sensor believes that header only from trusted proxies).
- Severity is WARNING at a rule's threshold and CRITICAL from four times it. The same rule
  fires again for the same subject when its count doubles, so a scrape that speeds up is
  not hidden; otherwise once per 10 minutes.
- The thresholds are lowered for this tiny homeserver, as the end-to-end test
  tests/tests/scenarios.rs lowers them (counts per 10 minutes):
    {lowered}
  On a real server keep the defaults (100 rooms read, 30 joined, 1,000 media files per 10
  minutes, ...): the README's \"Detection\" section gives the reason for each.
- alice, bob and carol synced, chatted, read recent history and opened a few files the
  whole time: no alert names them. The scraper's token (one valid session, as in the
  Tchap incident) crossed one breadth rule after the other as it walked the server. The
  harvester, with no token at all, was caught by its address: tokenless_media counts the
  media asked for, served or refused (the sensor reads requests, not responses).
- The report is what the ledger holds for the stolen account:
    homeserver-sensor report --user {scraper}
  every room read and joined, every file, every profile looked up, with requests, bytes
  and first and last times. --token-fingerprint and --client-ip answer the same for one
  session or one address, --since and --until narrow the range, --json is for tools."
    );
}
