//! Measurements: bytes on disk per 1,000 requests, and the cost of `observe`.

use super::*;

/// Measures the ledger's size per 1,000 requests and the cost of `observe`. Prints, asserts
/// nothing about time. Run with `-- --nocapture` to see the figures.
#[test]
fn sizes() {
    fn measure(name: &str, stream: &[(RequestRecord, u64)]) {
        let fx = Fixture::new();
        let mut ledger = fx.open();
        let started = std::time::Instant::now();
        feed(&mut ledger, stream);
        let elapsed = started.elapsed();
        let end = stream.last().map_or(0, |(_, t)| *t);
        ledger.tick(end + SECOND).expect("tick");
        ledger.flush().expect("flush");
        let open = fx.bytes_on_disk();
        ledger.tick(end + 2 * HOUR).expect("compacts");
        ledger.flush().expect("flush");
        let compacted = fx.bytes_on_disk();
        let per_k = |b: u64| b as f64 * 1000.0 / stream.len() as f64;
        println!(
            "{name}: {} requests: {:.0} bytes per 1,000 requests before compaction, {:.0} \
             after; feeding (observe + a tick per second of stream time): {:.2} µs per \
             request",
            stream.len(),
            per_k(open),
            per_k(compacted),
            elapsed.as_secs_f64() * 1e6 / stream.len() as f64,
        );
    }
    // A scraper: a request every 100 ms, nearly every one a distinct room or media.
    measure("scraper", &scraper(H0, 100, 1_000, 2_000));
    // Benign: 40 clients syncing every 30 s for three hours.
    measure("benign", &benign(H0, 3 * HOUR, 40));

    // observe alone.
    for (name, stream) in [
        ("scraper", scraper(H0, 10, 1_000, 4_000)),
        ("benign", benign(H0, HOUR, 100)),
    ] {
        let fx = Fixture::new();
        let mut ledger = fx.open();
        let started = std::time::Instant::now();
        for (r, t) in &stream {
            ledger.observe(r, *t);
        }
        let elapsed = started.elapsed();
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        println!(
            "observe: {:.2} µs per request ({name} stream, {} requests, {build} build)",
            elapsed.as_secs_f64() * 1e6 / stream.len() as f64,
            stream.len(),
        );
        ledger.crash();
    }
}
