use std::collections::BTreeMap;

use super::{MAX_SERIES_PER_FAMILY, Metrics, OVERFLOW_LABEL};

/// One sample of a text exposition: its name and its labels (values unescaped).
type Series = (String, BTreeMap<String, String>);

/// Parses the samples of an OpenMetrics text exposition, independent of their order.
/// Panics on a line it cannot read: the exposition must be well formed.
pub(super) fn samples(text: &str) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value on line {line:?}"));
        let name = line[..name_end].to_string();
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(label_set) => parse_labels(label_set, line),
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let value: f64 = rest
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad value on line {line:?}: {e}"));
        assert!(
            out.insert((name, labels), value).is_none(),
            "duplicate series on line {line:?}"
        );
    }
    out
}

/// Parses `key="value",...}` (what follows the `{`), undoing the escapes; returns the
/// labels and what follows the `}`.
fn parse_labels<'a>(mut rest: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, quoted) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without value on line {line:?}"));
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => panic!("bad escape {other:?} on line {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value on line {line:?}"),
            }
        };
        assert!(
            labels.insert(key.to_string(), value).is_none(),
            "label {key} twice on line {line:?}"
        );
        rest = &quoted[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

pub(super) fn value(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    *samples
        .get(&key)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {samples:#?}"))
}

fn type_of<'a>(text: &'a str, family: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# TYPE {family} ")))
        .unwrap_or_else(|| panic!("no TYPE line for {family} in\n{text}"))
}

#[test]
fn requests_connections_alerts_and_gauges() {
    let m = Metrics::new();
    m.request("room_history", 412, 50_085);
    m.request("room_history", 400, 49_000);
    m.request("sync", 900, 10);
    m.request("unparsed", 7, 0);
    m.connection_closed("cgroup", 87, 3_145_933);
    m.connection_closed("cgroup", 13, 67);
    m.connection_closed("tracepoint", 1, 2);
    m.alert("bulk_history");
    m.alert("bulk_history");
    m.alert("media_sweep");
    m.set_watched_processes(3);
    m.set_tracked_connections(41);
    m.set_tracked_connections(40);

    let text = m.render();
    let s = samples(&text);
    let requests = "homeserver_sensor_requests_total";
    assert_eq!(value(&s, requests, &[("class", "room_history")]), 2.0);
    assert_eq!(value(&s, requests, &[("class", "sync")]), 1.0);
    assert_eq!(value(&s, requests, &[("class", "unparsed")]), 1.0);
    let bytes = "homeserver_sensor_request_bytes_total";
    let rh_in = [("class", "room_history"), ("direction", "in")];
    let rh_out = [("class", "room_history"), ("direction", "out")];
    assert_eq!(value(&s, bytes, &rh_in), 812.0);
    assert_eq!(value(&s, bytes, &rh_out), 99_085.0);
    assert_eq!(
        value(&s, bytes, &[("class", "sync"), ("direction", "in")]),
        900.0
    );
    assert_eq!(
        value(&s, bytes, &[("class", "sync"), ("direction", "out")]),
        10.0
    );
    let closed = "homeserver_sensor_connections_closed_total";
    assert_eq!(value(&s, closed, &[("mechanism", "cgroup")]), 2.0);
    assert_eq!(value(&s, closed, &[("mechanism", "tracepoint")]), 1.0);
    let conn_bytes = "homeserver_sensor_connection_bytes_total";
    assert_eq!(value(&s, conn_bytes, &[("direction", "in")]), 101.0);
    assert_eq!(value(&s, conn_bytes, &[("direction", "out")]), 3_146_002.0);
    let alerts = "homeserver_sensor_alerts_total";
    assert_eq!(value(&s, alerts, &[("rule", "bulk_history")]), 2.0);
    assert_eq!(value(&s, alerts, &[("rule", "media_sweep")]), 1.0);
    assert_eq!(value(&s, "homeserver_sensor_watched_processes", &[]), 3.0);
    assert_eq!(
        value(&s, "homeserver_sensor_tracked_connections", &[]),
        40.0
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&s, "homeserver_sensor_build_info", &[("version", version)]),
        1.0
    );

    assert_eq!(type_of(&text, "homeserver_sensor_requests"), "counter");
    assert_eq!(type_of(&text, "homeserver_sensor_request_bytes"), "counter");
    assert_eq!(
        type_of(&text, "homeserver_sensor_watched_processes"),
        "gauge"
    );
    assert!(text.contains("\n# UNIT homeserver_sensor_request_bytes bytes\n"));
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
}

#[test]
fn kernel_totals_are_counters_holding_the_latest_totals() {
    let m = Metrics::new();
    m.set_drops(&[("ring_full".into(), 3), ("conns_full".into(), 0)]);
    m.set_drops(&[("ring_full".into(), 5)]);
    m.set_head_outcomes(&[("parsed".into(), 120), ("cut".into(), 2)]);
    m.set_head_outcomes(&[("parsed".into(), 130), ("cut".into(), 2)]);
    m.set_owner_scans(4, 0);
    m.set_owner_scans(5, 2);
    m.set_program_stats(&[
        ("conn_ingress".into(), 1_500_000_000, 7_000_000),
        ("conn_sockops".into(), 250_000, 50),
    ]);
    m.set_program_stats(&[("conn_ingress".into(), 3_000_000_000, 14_000_000)]);

    let text = m.render();
    let s = samples(&text);
    let drops = "homeserver_sensor_events_dropped_total";
    assert_eq!(value(&s, drops, &[("cause", "ring_full")]), 5.0);
    assert_eq!(value(&s, drops, &[("cause", "conns_full")]), 0.0, "kept");
    let heads = "homeserver_sensor_request_heads_total";
    assert_eq!(value(&s, heads, &[("outcome", "parsed")]), 130.0);
    assert_eq!(value(&s, heads, &[("outcome", "cut")]), 2.0);
    let scans = "homeserver_sensor_owner_scans_total";
    assert_eq!(value(&s, scans, &[("thread", "event_loop")]), 5.0);
    assert_eq!(value(&s, scans, &[("thread", "own_thread")]), 2.0);
    let seconds = "homeserver_sensor_bpf_program_run_seconds_total";
    assert_eq!(value(&s, seconds, &[("program", "conn_ingress")]), 3.0);
    assert_eq!(value(&s, seconds, &[("program", "conn_sockops")]), 0.00025);
    let runs = "homeserver_sensor_bpf_program_runs_total";
    assert_eq!(
        value(&s, runs, &[("program", "conn_ingress")]),
        14_000_000.0
    );
    assert_eq!(value(&s, runs, &[("program", "conn_sockops")]), 50.0);

    for family in [
        "homeserver_sensor_events_dropped",
        "homeserver_sensor_request_heads",
        "homeserver_sensor_bpf_program_run_seconds",
        "homeserver_sensor_bpf_program_runs",
    ] {
        assert_eq!(type_of(&text, family), "counter", "{family}");
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
    }
    assert!(text.contains("\n# UNIT homeserver_sensor_bpf_program_run_seconds seconds\n"));
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn a_fresh_registry_has_only_gauges_and_build_info() {
    let text = Metrics::new().render();
    let s = samples(&text);
    let names: Vec<&str> = s.keys().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "homeserver_sensor_build_info",
            "homeserver_sensor_tracked_connections",
            "homeserver_sensor_watched_processes",
        ],
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn names_and_labels_follow_prometheus_conventions() {
    let m = Metrics::new();
    m.request("media_download", 1, 2);
    m.connection_closed("cgroup", 1, 2);
    m.alert("r");
    m.set_drops(&[("c".into(), 1)]);
    m.set_head_outcomes(&[("parsed".into(), 1)]);
    m.set_program_stats(&[("p".into(), 1, 1)]);
    let text = m.render();

    let snake = |s: &str| {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let mut families = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let (family, kind) = line["# TYPE ".len()..]
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
        assert!(family.starts_with("homeserver_sensor_"), "{line}");
        assert!(snake(family), "{line}");
        assert!(!family.ends_with("_total"), "suffix added twice: {line}");
        families.insert(family.to_string(), kind.to_string());
    }
    let counters = families.values().filter(|k| *k == "counter").count();
    assert_eq!(counters, 9, "{families:?}");
    for ((name, labels), _) in samples(&text) {
        // Every sample belongs to a declared family, with the suffix its type requires.
        let belongs = families.iter().any(|(family, kind)| {
            name == match kind.as_str() {
                "counter" => format!("{family}_total"),
                "info" => format!("{family}_info"),
                _ => family.clone(),
            }
        });
        assert!(belongs, "{name} has no family in {families:?}");
        for key in labels.keys() {
            assert!(snake(key), "label {key} of {name}");
        }
    }
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new();
    let odd = "quote\" backslash\\ newline\n end";
    m.alert(odd);
    m.set_drops(&[(odd.to_string(), 9)]);
    let text = m.render();
    let escaped = r#""quote\" backslash\\ newline\n end""#;
    assert!(
        text.contains(&format!(
            "homeserver_sensor_alerts_total{{rule={escaped}}} 1\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "homeserver_sensor_events_dropped_total{{cause={escaped}}} 9\n"
        )),
        "{text}"
    );
    let s = samples(&text);
    assert_eq!(
        value(&s, "homeserver_sensor_alerts_total", &[("rule", odd)]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "homeserver_sensor_events_dropped_total",
            &[("cause", odd)]
        ),
        9.0
    );
}

#[test]
fn unbounded_label_values_fold_into_other() {
    let m = Metrics::new();
    let extra = 30;
    for i in 0..MAX_SERIES_PER_FAMILY + extra {
        m.alert(&format!("rule_{i}"));
        m.request(&format!("class_{i}"), 1, 1);
    }
    // A value seen before the cap keeps counting under its own name.
    m.alert("rule_0");
    m.set_drops(
        &(0..MAX_SERIES_PER_FAMILY + extra)
            .map(|i| (format!("cause_{i}"), 1))
            .collect::<Vec<_>>(),
    );

    let s = samples(&m.render());
    let count = |name: &str| s.keys().filter(|(n, _)| n == name).count();
    assert_eq!(
        count("homeserver_sensor_alerts_total"),
        MAX_SERIES_PER_FAMILY + 1
    );
    assert_eq!(
        value(
            &s,
            "homeserver_sensor_alerts_total",
            &[("rule", OVERFLOW_LABEL)]
        ),
        extra as f64
    );
    assert_eq!(
        value(&s, "homeserver_sensor_alerts_total", &[("rule", "rule_0")]),
        2.0
    );
    assert_eq!(
        count("homeserver_sensor_requests_total"),
        MAX_SERIES_PER_FAMILY + 1
    );
    assert_eq!(
        value(
            &s,
            "homeserver_sensor_request_bytes_total",
            &[("class", OVERFLOW_LABEL), ("direction", "out")]
        ),
        extra as f64
    );
    assert_eq!(
        count("homeserver_sensor_events_dropped_total"),
        MAX_SERIES_PER_FAMILY
    );
}

#[test]
fn metrics_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Metrics>();

    let m = std::sync::Arc::new(Metrics::new());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = std::sync::Arc::clone(&m);
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    m.request("sync", 2, 3);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread panicked");
    }
    let s = samples(&m.render());
    assert_eq!(
        value(&s, "homeserver_sensor_requests_total", &[("class", "sync")]),
        4000.0
    );
    assert_eq!(
        value(
            &s,
            "homeserver_sensor_request_bytes_total",
            &[("class", "sync"), ("direction", "out")]
        ),
        12_000.0
    );
}
