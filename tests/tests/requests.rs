//! Privileged tests of request attribution: request heads captured in the kernel, behind a
//! real nginx (Debian's, with Synapse's documented reverse-proxy configuration) and from a
//! direct keep-alive client; the right client address, token fingerprint and user, and
//! exact bytes per request.

use std::{net::IpAddr, time::Duration};

use homeserver_sensor::config::{Config, RequestHeads};
use homeserver_sensor_tests::{
    Agent, Cgroup, Client, Nginx, Server, kernel, require_root, sensor_record, synapse_token,
    test_server_response_len,
};
use serde_json::Value;

fn config() -> Config {
    let mut c = Config::default();
    // nginx talks to the upstream from 127.0.0.1; the test's clients use other loopback
    // addresses, which must count as real clients.
    c.attribution.trusted_proxies = vec!["127.0.0.1/32".into()];
    c.attribution.server_name = Some("test.example".into());
    c
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn requests(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["kind"] == "request").collect()
}

/// The one request record whose path starts with `prefix`.
fn request<'a>(records: &'a [Value], prefix: &str) -> &'a Value {
    let found: Vec<&Value> = requests(records)
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .collect();
    assert_eq!(found.len(), 1, "one request for {prefix}: {records:#?}");
    found[0]
}

#[test]
fn proxied_requests_name_the_client_the_token_and_the_user() {
    require_root();
    let cgroup = Cgroup::new("proxied");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let nginx = Nginx::start(server.addrs[0]);
    let mut agent = Agent::for_cgroup(&cgroup, config());
    let alice = synapse_token("alice", "qWkcnDhFoCFbYgMTpbRk");
    let bob = synapse_token("bob.smith", "ZZkcnDhFoCFbYgMTpbRk");

    let get = |from: &str, target: &str, extra: &str| {
        let mut c = Client::connect_from(ip(from), nginx.addr);
        c.send(
            format!("GET {target} HTTP/1.1\r\nHost: matrix.test.example\r\n{extra}\r\n").as_bytes(),
        );
        c.read_response();
        c.finish_reading();
    };
    let messages =
        "/_matrix/client/v3/rooms/%21room1%3Atest.example/messages?dir=b&limit=10&bytes=50000";
    get(
        "127.0.0.5",
        messages,
        &format!("Authorization: Bearer {alice}\r\n"),
    );
    // The same token in the query string: same fingerprint, path redacted.
    get(
        "127.0.0.5",
        &format!(
            "/_matrix/media/v3/download/test.example/AbCdEf123?access_token={alice}&bytes=300000"
        ),
        "",
    );
    get(
        "127.0.0.6",
        "/_matrix/client/v3/profile/%40carol%3Atest.example?bytes=100",
        &format!("Authorization: Bearer {bob}\r\n"),
    );
    get(
        "127.0.0.7",
        "/_matrix/media/v3/thumbnail/test.example/XyZ?width=96&bytes=7000",
        "",
    );
    // A client forging X-Forwarded-For through nginx: nginx replaces the header.
    get(
        "127.0.0.8",
        "/_matrix/client/v3/sync?full_state=true&bytes=10",
        "X-Forwarded-For: 203.0.113.66\r\n",
    );
    // nginx reaches the server on a new connection per request (its address is nginx's
    // choice): each request's record is written when that connection closes.
    agent.wait_for(Duration::from_secs(60), |records| {
        requests(records).len() >= 5
    });
    let records = agent.stop();

    let m = request(&records, "/_matrix/client/v3/rooms/");
    assert_eq!(m["client_ip"], "127.0.0.5", "{m}");
    assert_eq!(m["client_ip_source"], "x_forwarded_for", "{m}");
    assert_eq!(m["user"], "@alice:test.example", "{m}");
    assert_eq!(m["endpoint"], "client.messages", "{m}");
    assert_eq!(m["room"], "!room1:test.example", "{m}");
    assert_eq!(
        m["peer"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
    // Through nginx, the upstream's response is what the request sent out, exactly.
    assert_eq!(
        m["bytes_out"],
        test_server_response_len(50_000, true),
        "{m}"
    );
    assert!(m["bytes_in"].as_u64().unwrap() > 0);
    let fp_alice = m["token"].as_str().expect("a fingerprint").to_string();
    assert!(
        fp_alice.starts_with("tfp_") && fp_alice.len() == 20,
        "{fp_alice}"
    );

    let d = request(&records, "/_matrix/media/v3/download/");
    assert_eq!(
        d["token"],
        fp_alice.as_str(),
        "same token, same fingerprint: {d}"
    );
    assert_eq!(d["token_source"], "query");
    assert_eq!(d["user"], "@alice:test.example");
    assert_eq!(d["media_server"], "test.example");
    assert_eq!(d["media_id"], "AbCdEf123");
    assert!(
        d["path"]
            .as_str()
            .unwrap()
            .contains("access_token=<redacted>"),
        "{d}"
    );
    assert_eq!(d["bytes_out"], test_server_response_len(300_000, true));

    let p = request(&records, "/_matrix/client/v3/profile/");
    assert_eq!(p["client_ip"], "127.0.0.6");
    assert_eq!(p["user"], "@bob.smith:test.example");
    assert_ne!(
        p["token"],
        fp_alice.as_str(),
        "different tokens, different fingerprints"
    );
    assert_eq!(p["target_user"], "@carol:test.example");

    let t = request(&records, "/_matrix/media/v3/thumbnail/");
    assert_eq!(t["client_ip"], "127.0.0.7");
    assert!(t["token"].is_null() && t["user"].is_null(), "{t}");

    let s = request(&records, "/_matrix/client/v3/sync");
    assert_eq!(
        s["client_ip"], "127.0.0.8",
        "nginx's X-Forwarded-For, not the forged one: {s}"
    );
    assert_eq!(s["full_state"], true);

    for r in requests(&records) {
        assert_eq!(r["head"], "parsed", "{r}");
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(r["pid"], server.pid(), "{r}");
    }
    assert_eq!(requests(&records).len(), 5);
}

#[test]
fn direct_keepalive_client_gets_exact_bytes_per_request() {
    require_root();
    let cgroup = Cgroup::new("direct");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut agent = Agent::for_cgroup(&cgroup, config());
    if !kernel::request_heads(&agent.start_record()) {
        return;
    }
    let token = synapse_token("dave", "AAAAAAAAAAAAAAAAAAAA");
    let mut c = Client::connect_from(ip("127.0.0.9"), server.addrs[0]);
    // (path, sent, received) for each request, measured by the client.
    let mut expected = Vec::new();
    let exchange = |c: &mut Client, head: String, body: &[u8]| {
        let (s0, r0) = (c.sent, c.received);
        c.send(head.as_bytes());
        c.send(body);
        c.read_response();
        (c.sent - s0, c.received - r0)
    };
    for (i, size) in [0u64, 1, 1000, 65_536, 1_000_000].into_iter().enumerate() {
        let target =
            format!("/_matrix/client/v3/rooms/%21r{i}%3Atest.example/context/%24ev?bytes={size}");
        let head =
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
        let (s, r) = exchange(&mut c, head, b"");
        expected.push((format!("/_matrix/client/v3/rooms/%21r{i}%3A"), s, r));
    }
    // An upload: its body is counted in bytes_in, never captured as a head.
    let body = vec![b'B'; 250_000];
    let head = format!(
        "POST /_matrix/media/v3/upload?filename=a.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        body.len()
    );
    let (s, r) = exchange(&mut c, head, &body);
    expected.push(("/_matrix/media/v3/upload".to_string(), s, r));
    // A forged X-Forwarded-For from a client that is not a trusted proxy: not believed.
    let head = "GET /_matrix/client/v3/publicRooms?bytes=5 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.66\r\n\r\n".to_string();
    let (s, r) = exchange(&mut c, head, b"");
    expected.push(("/_matrix/client/v3/publicRooms".to_string(), s, r));
    // A head sent in three pieces, with pauses (part of the traffic: each piece its own
    // segment): several segments, one head.
    let (s0, r0) = (c.sent, c.received);
    c.stream.set_nodelay(true).unwrap();
    c.send(b"GET /_matrix/client/v3/user_directory/search?bytes=321 HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"Host: x\r\nAuthorization: Bearer ");
    std::thread::sleep(Duration::from_millis(50));
    c.send(format!("{token}\r\n\r\n").as_bytes());
    c.read_response();
    expected.push((
        "/_matrix/client/v3/user_directory/search".to_string(),
        c.sent - s0,
        c.received - r0,
    ));
    // A head whose end is split between two segments (`\r\n\r`, then `\n` and a body
    // longer than the capture budget): the kernel finds the end from the bytes it kept of
    // the first segment; were it to miss it, it would take the body as more head and cut
    // it at 4 KiB (the record would say "cut", and `head_cut` would count it).
    let (s0, r0) = (c.sent, c.received);
    let body = vec![b'B'; 5000];
    c.send(
        format!("PUT /_matrix/client/v3/rooms/%21split%3Atest.example/send/m.room.message/t1?bytes=12 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nAuthorization: Bearer {token}\r\n\r", body.len())
            .as_bytes(),
    );
    // The pause makes it two segments (part of the traffic).
    std::thread::sleep(Duration::from_millis(50));
    c.send(&[b"\n".as_slice(), &body].concat());
    c.read_response();
    expected.push((
        "/_matrix/client/v3/rooms/%21split%3A".to_string(),
        c.sent - s0,
        c.received - r0,
    ));
    // The last request closes the connection.
    let (s0, r0) = (c.sent, c.received);
    c.request(
        "GET",
        "/_matrix/client/v3/sync?since=s1&bytes=77",
        b"",
        true,
    );
    c.finish_reading();
    expected.push((
        "/_matrix/client/v3/sync".to_string(),
        c.sent - s0,
        c.received - r0,
    ));
    // Its end, and so the record of its last request.
    agent.wait_for_closed(&[c.local()], Duration::from_secs(60));
    let records = agent.stop();

    assert_eq!(requests(&records).len(), expected.len(), "{records:#?}");
    for (prefix, sent, received) in &expected {
        let r = request(&records, prefix);
        assert_eq!(r["bytes_in"], *sent, "bytes_in of {prefix}: {r}");
        assert_eq!(r["bytes_out"], *received, "bytes_out of {prefix}: {r}");
        assert_eq!(r["client_ip"], "127.0.0.9", "{r}");
        assert_eq!(r["head"], "parsed", "{r}");
    }
    // No head was cut: the kernel found the end split between two segments (see above).
    let stop = records.iter().rev().find(|r| r["kind"] == "sensor");
    let stop = stop.expect("the agent's last sensor record");
    assert_eq!(stop["drops"]["head_cut"], 0, "{stop}");
    let forged = request(&records, "/_matrix/client/v3/publicRooms");
    assert_eq!(forged["client_ip_source"], "peer");
    assert_eq!(forged["forwarding_ignored"], true, "{forged}");
    let split = request(&records, "/_matrix/client/v3/user_directory/search");
    assert_eq!(split["user"], "@dave:test.example", "{split}");
    let ctx = request(&records, "/_matrix/client/v3/rooms/%21r2%3A");
    assert_eq!(ctx["endpoint"], "client.context");
    assert_eq!(ctx["event_id"], "$ev");
    // The sum of the requests is the connection.
    let conn = records
        .iter()
        .find(|r| r["kind"] == "connection" && r["peer"] == c.local().to_string().as_str())
        .expect("connection record");
    let total_out: u64 = requests(&records)
        .iter()
        .map(|r| r["bytes_out"].as_u64().unwrap())
        .sum();
    assert_eq!(conn["bytes_out"], total_out);
}

#[test]
fn heads_that_cannot_be_parsed_are_counted_and_explained() {
    require_root();
    let cgroup = Cgroup::new("bad");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut agent = Agent::for_cgroup(&cgroup, config());
    if !kernel::request_heads(&agent.start_record()) {
        return;
    }
    // Longer than the 4 KiB capture budget: cut.
    let mut c = Client::connect_from(ip("127.0.0.10"), server.addrs[0]);
    let long = "x".repeat(5000);
    c.send(
        format!("GET /_matrix/client/v3/sync?bytes=3 HTTP/1.1\r\nX-Long: {long}\r\n\r\n")
            .as_bytes(),
    );
    c.read_response();
    // Not valid HTTP/1.x (a bad header line): malformed.
    c.send(b"GET /_matrix/client/v3/sync?bytes=4 HTTP/1.1\r\nno colon here\r\n\r\n");
    c.read_response();
    c.finish_reading();
    agent.wait_for_closed(&[c.local()], Duration::from_secs(60));
    let records = agent.stop();
    let heads: Vec<&str> = requests(&records)
        .iter()
        .map(|r| r["head"].as_str().unwrap())
        .collect();
    assert_eq!(heads, ["cut", "malformed"], "{records:#?}");
    let stop = records
        .iter()
        .rev()
        .find(|r| r["kind"] == "sensor")
        .unwrap();
    assert_eq!(stop["heads"]["cut"], 1, "{stop}");
    assert_eq!(stop["heads"]["malformed"], 1, "{stop}");
    assert_eq!(stop["drops"]["head_cut"], 1, "{stop}");
}

/// Searches everything the sensor wrote (events, its log at trace level, its state
/// directory) for the raw tokens a client used: none may appear.
#[test]
fn raw_tokens_never_leave_the_agent() {
    use std::process::{Command, Stdio};

    use homeserver_sensor_tests::{
        TempDir, all_closed, read_records, sibling_binary, wait_for_records,
    };
    require_root();
    let cgroup = Cgroup::new("leak");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let dir = TempDir::new("leak");
    let events = dir.path.join("events.jsonl");
    let log = dir.path.join("stderr.log");
    let config = dir.path.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[attribution]\ntrusted_proxies = [\"127.0.0.1/32\"]\nserver_name = \"test.example\"\nkey_file = {:?}\n[metrics]\nlisten = \"127.0.0.1:0\"\n[ledger]\ndir = {:?}\n",
            dir.path.join("state/fingerprint.key").display().to_string(),
            dir.path.join("state/ledger").display().to_string()
        ),
    )
    .unwrap();
    homeserver_sensor::identity::FingerprintKey::create(&dir.path.join("state/fingerprint.key"))
        .expect("create the key file");
    // Stopped with SIGTERM once its records are written; `--duration` only bounds its life
    // should the test fail before that.
    let mut child = Command::new(sibling_binary("homeserver-sensor"))
        .args(["run", "-c"])
        .arg(&config)
        .args(["--cgroup", &cgroup.rel, "--duration", "120", "--events"])
        .arg(&events)
        .env("HOMESERVER_SENSOR_LOG", "trace")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("start sensor");
    wait_for_records(&events, Duration::from_secs(30), |records| {
        records.iter().any(|r| r["phase"] == "start")
    });
    let mut clients = Vec::new();
    let tokens = [
        synapse_token("eve", "LeakLeakLeakLeakLeak"),
        "mat_SecretMasTokenValue12345".to_string(),
        "MDAxY2xvY2F0aW9uIHRlc3QuZXhhbXBsZQ".to_string(),
    ];
    for (i, t) in tokens.iter().enumerate() {
        let mut c = Client::connect_from(ip("127.0.0.11"), server.addrs[0]);
        c.request(
            "GET",
            &format!("/_matrix/client/v3/sync?bytes={i}"),
            b"",
            false,
        );
        c.send(format!("GET /_matrix/client/v3/rooms/%21a%3Ab/messages?bytes=9 HTTP/1.1\r\nAuthorization: Bearer {t}\r\n\r\n").as_bytes());
        c.read_response();
        // In the query string too, and in a head that cannot be parsed.
        c.request(
            "GET",
            &format!("/_matrix/media/v3/download/b/c?access_token={t}&bytes=5"),
            b"",
            false,
        );
        c.send(format!("GET /x?access_token={t} HTTP/1.1\r\nbroken header {t}\r\n\r\n").as_bytes());
        c.read_response();
        c.finish_reading();
        clients.push(c.local());
    }
    // Every connection's end, and so the records of all its requests.
    wait_for_records(&events, Duration::from_secs(60), |records| {
        all_closed(records, &clients)
    });
    // SAFETY: a signal to our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("sensor");
    assert!(status.success());
    let mut written = std::fs::read(&events).unwrap();
    written.extend(std::fs::read(&log).unwrap());
    // Every file of the state directory, the ledger's segments included.
    let mut dirs = vec![dir.path.join("state")];
    let mut files = 0;
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files += 1;
                written.extend(std::fs::read(path).unwrap());
            }
        }
    }
    let text = String::from_utf8_lossy(&written);
    let records = read_records(&events);
    // Without heads (no bpf_loop) nothing is attributed, and nothing may leak either.
    if kernel::request_heads(sensor_record(&records, "start")) {
        assert!(files >= 2, "the key and at least one ledger segment");
        assert!(
            text.contains("\"kind\":\"request\""),
            "no request records: {text}"
        );
        assert!(text.contains("tfp_"), "no fingerprints");
    }
    for t in &tokens {
        assert!(
            !text.contains(t.as_str()),
            "raw token {t} found in the sensor's output"
        );
        // Nor a long piece of it.
        assert!(!text.contains(&t[4..t.len() - 4]), "part of {t} found");
    }
}

/// With request heads turned off, the basic ingress program counts connections and nothing
/// of the HTTP traffic leaves the kernel (also what a kernel without `bpf_loop` runs).
#[test]
fn request_heads_can_be_turned_off() {
    require_root();
    let cgroup = Cgroup::new("noheads");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut c = config();
    c.attribution.request_heads = RequestHeads::Off;
    let mut agent = Agent::for_cgroup(&cgroup, c);
    let mut client = Client::connect_from(ip("127.0.0.12"), server.addrs[0]);
    client.request("GET", "/_matrix/client/v3/sync?bytes=4321", b"", false);
    client.request("GET", "/_matrix/client/v3/sync?bytes=1", b"", true);
    client.finish_reading();
    let local = client.local();
    agent.wait_for(Duration::from_secs(30), |records| {
        records
            .iter()
            .any(|r| r["kind"] == "connection" && r["peer"] == local.to_string().as_str())
    });
    let records = agent.stop();
    // Said, not silent: an info-level health alert names what the sensor runs without.
    let off = records
        .iter()
        .find(|r| {
            r["rule"] == "sensor_health" && r["evidence"]["health"]["capability"] == "request_heads"
        })
        .unwrap_or_else(|| panic!("no sensor_health alert for heads turned off: {records:#?}"));
    assert_eq!(off["severity"], "info", "{off}");
    assert!(requests(&records).is_empty(), "{records:#?}");
    let conn = records
        .iter()
        .find(|r| r["kind"] == "connection")
        .expect("a connection record");
    assert_eq!(conn["bytes_out"], client.received);
    assert_eq!(conn["bytes_in"], client.sent);
    let start = records.iter().find(|r| r["phase"] == "start").unwrap();
    assert!(
        start["unavailable"]["request_heads"]
            .as_str()
            .is_some_and(|w| w.contains("turned off")),
        "{start}"
    );
    assert_eq!(
        start["attached"][0],
        "cgroup_skb/ingress (without request heads)"
    );
}

/// The agent serves Prometheus metrics on the address its start record names, with the
/// requests it attributed, by endpoint class.
#[test]
fn metrics_are_served() {
    use std::io::{Read, Write};
    require_root();
    let cgroup = Cgroup::new("metrics");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut c = config();
    c.metrics.program_stats = true;
    let mut agent = Agent::for_cgroup(&cgroup, c);
    if !kernel::request_heads(&agent.start_record()) {
        return;
    }
    let mut c = Client::connect_from(ip("127.0.0.14"), server.addrs[0]);
    c.request("GET", "/_matrix/client/v3/sync?bytes=1000", b"", false);
    c.request(
        "GET",
        "/_matrix/media/v3/download/a/b?bytes=2000",
        b"",
        true,
    );
    c.finish_reading();
    let records = agent.wait_for(Duration::from_secs(60), |r| {
        r.iter().filter(|r| r["kind"] == "request").count() == 2
    });
    let addr = records
        .iter()
        .find(|r| r["phase"] == "start")
        .and_then(|r| r["metrics"].as_str())
        .expect("the start record names the metrics address")
        .to_string();
    let scrape = || {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect to metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    // Housekeeping (gauges, drops, program statistics) runs every second: wait for the run
    // that has seen both heads, whose count only it copies into the metrics.
    let parsed = "homeserver_sensor_request_heads_total{outcome=\"parsed\"} 2\n";
    let start = std::time::Instant::now();
    let text = loop {
        let text = scrape();
        if text.contains(parsed) {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no housekeeping has seen both heads: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
    };
    assert_eq!(
        value("homeserver_sensor_requests_total{class=\"sync\"}"),
        1.0
    );
    assert_eq!(
        value("homeserver_sensor_requests_total{class=\"media_download\"}"),
        1.0
    );
    assert_eq!(value("homeserver_sensor_watched_processes"), 1.0);
    // With `program_stats`, the kernel's run time and count of our programs.
    let runs = value("homeserver_sensor_bpf_program_runs_total{program=\"conn_egress\"}");
    assert!(runs >= 2.0, "one run per packet sent at least: {runs}");
    let seconds = value("homeserver_sensor_bpf_program_run_seconds_total{program=\"conn_egress\"}");
    assert!(seconds > 0.0 && seconds < 1.0, "{seconds}");
    // Nothing identifying goes into labels.
    assert!(
        !text.contains("127.0.0.14") && !text.contains("tfp_"),
        "{text}"
    );
    drop(agent);
}
