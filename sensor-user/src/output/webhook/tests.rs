//! The webhook against a local HTTP endpoint that records what it receives.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use super::*;
use crate::detect::{Alert, Evidence, Severity, Subject};

fn alert(severity: Severity) -> AlertRecord {
    Alert {
        rule: "volume",
        severity,
        subject: Subject {
            user: Some("@mallory:example.org".into()),
            token: None,
            client_ip: Some("203.0.113.9".into()),
        },
        window_s: 60,
        observed: 600 << 20,
        threshold: 512 << 20,
        first_seen_ms: 1_780_000_000_000,
        last_seen_ms: 1_780_000_050_000,
        evidence: Evidence::default(),
        summary: "@mallory:example.org pulled 600 MiB in 1 min".into(),
    }
    .to_record(1_780_000_050_100)
}

/// An HTTP endpoint answering `status` to every request; returns its address and the
/// bodies it received.
fn endpoint(status: u16) -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            assert!(
                request_line.starts_with("POST /hook/secret "),
                "{request_line}"
            );
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if lower.starts_with("content-type:") {
                    assert!(lower.contains("application/json"), "{line}");
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            seen.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let reply =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    (addr, bodies)
}

fn config(url: String) -> config::Webhook {
    config::Webhook {
        url: Some(url),
        url_file: None,
        min_severity: Severity::Warning,
        timeout_ms: 2000,
    }
}

fn start(url: String, counters: &Arc<Counters>) -> Webhook {
    let c = config(url);
    let url = resolve_url(&c).unwrap();
    Webhook::start(&c, url, counters.clone()).unwrap()
}

#[test]
fn posts_the_alert_record_with_a_text_line() {
    let (addr, bodies) = endpoint(200);
    let counters = Arc::new(Counters::default());
    let hook = start(format!("http://{addr}/hook/secret"), &counters);
    hook.send(&alert(Severity::Critical));
    hook.send(&alert(Severity::Info)); // under min_severity: not sent, not a loss
    hook.stop(Duration::from_secs(5));
    assert_eq!(counters.sent.load(Ordering::Relaxed), 1);
    assert_eq!(counters.failed.load(Ordering::Relaxed), 0);
    assert_eq!(counters.queue_full.load(Ordering::Relaxed), 0);
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1);
    let b = &bodies[0];
    assert_eq!(b["kind"], "alert");
    assert_eq!(b["rule"], "volume");
    assert_eq!(b["severity"], "critical");
    assert_eq!(b["subject"]["user"], "@mallory:example.org");
    assert_eq!(b["observed"], 600u64 << 20);
    assert_eq!(
        b["text"],
        "homeserver-sensor [critical] @mallory:example.org pulled 600 MiB in 1 min"
    );
}

#[test]
fn an_endpoint_that_refuses_counts_as_failed_after_every_attempt() {
    let (addr, bodies) = endpoint(500);
    let counters = Arc::new(Counters::default());
    let hook = start(format!("http://{addr}/hook/secret"), &counters);
    hook.send(&alert(Severity::Warning));
    hook.stop(Duration::from_secs(10));
    assert_eq!(counters.sent.load(Ordering::Relaxed), 0);
    assert_eq!(counters.failed.load(Ordering::Relaxed), 1);
    assert_eq!(bodies.lock().unwrap().len(), ATTEMPTS as usize);
}

#[test]
fn a_dead_endpoint_is_given_up_at_stop_and_counted() {
    // Nothing listens there (bound, then closed).
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let counters = Arc::new(Counters::default());
    let hook = start(format!("http://{addr}/hook/secret"), &counters);
    for _ in 0..3 {
        hook.send(&alert(Severity::Warning));
    }
    let start = std::time::Instant::now();
    hook.stop(Duration::from_millis(300));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(counters.failed.load(Ordering::Relaxed), 3);
    assert_eq!(counters.sent.load(Ordering::Relaxed), 0);
}

#[test]
fn a_full_queue_is_counted() {
    let (addr, _bodies) = endpoint(200);
    let counters = Arc::new(Counters::default());
    let hook = start(format!("http://{addr}/hook/secret"), &counters);
    let n = QUEUE + 50;
    for _ in 0..n {
        hook.send(&alert(Severity::Warning));
    }
    hook.stop(Duration::from_secs(20));
    let sent = counters.sent.load(Ordering::Relaxed);
    let full = counters.queue_full.load(Ordering::Relaxed);
    assert!(full > 0, "sent {sent}");
    assert_eq!(
        sent + full + counters.failed.load(Ordering::Relaxed),
        n as u64,
        "every alert is sent or counted"
    );
}

#[test]
fn the_url_can_come_from_a_file_and_errors_never_show_it() {
    let dir = std::env::temp_dir().join(format!("hs-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("webhook-url");
    std::fs::write(&file, "https://hookshot.example.org/webhook/s3cr3t\n").unwrap();
    let mut c = config(String::new());
    c.url = None;
    c.url_file = Some(file.clone());
    assert_eq!(
        resolve_url(&c).unwrap(),
        "https://hookshot.example.org/webhook/s3cr3t"
    );
    std::fs::write(&file, "ftp://s3cr3t/\n").unwrap();
    let err = resolve_url(&c).unwrap_err();
    assert!(err.contains("http") && !err.contains("s3cr3t"), "{err}");
    c.url_file = Some(dir.join("missing"));
    assert!(resolve_url(&c).unwrap_err().contains("cannot read"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn urls_are_checked() {
    assert!(check_url("https://hookshot.example.org/webhook/abc").is_ok());
    assert!(check_url("http://127.0.0.1:9000/x").is_ok());
    assert!(
        check_url("ftp://example.org/")
            .unwrap_err()
            .contains("http")
    );
    assert!(check_url("example.org/hook").is_err());
    assert!(check_url("https:///nohost").is_err());
    assert!(check_url("not a url").is_err());
}
