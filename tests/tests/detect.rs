//! Privileged tests of detection: the single-transfer alert arrives while the download is
//! still running, and ordinary use raises no alert.

use std::{
    io::Read,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime},
};

use homeserver_sensor::config::Config;
use homeserver_sensor_tests::{
    Agent, Cgroup, Client, Server, kernel, require_root, sensor_record, synapse_token,
};
use serde_json::Value;

fn config() -> Config {
    let mut c = Config::default();
    c.attribution.trusted_proxies = vec!["127.0.0.1/32".into()];
    c.attribution.server_name = Some("test.example".into());
    c
}

/// Every alert but the one a kernel without `bpf_loop` (5.10) raises at start and again
/// every `realert_s`: that the sensor runs without request heads (checked where it is the
/// subject: `verifier::`, `requests::request_heads_can_be_turned_off`).
fn alerts(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| {
            r["kind"] == "alert"
                && !(r["rule"] == "sensor_health"
                    && r["evidence"]["health"]["capability"] == "request_heads")
        })
        .collect()
}

/// Waits until the agent has read everything the kernel reported before now: a new
/// connection to `server` makes one request and closes, and its record comes after every
/// event the kernel sent before it (one ring buffer, read in order).
fn caught_up(agent: &mut Agent, server: SocketAddr) {
    let mut c = Client::connect(server);
    c.request("GET", "/bytes/1", b"", true);
    c.finish_reading();
    agent.wait_for_closed(&[c.local()], Duration::from_secs(60));
}

fn rfc3339_to_system(ts: &str) -> SystemTime {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("bad timestamp {ts}: {e}"));
    SystemTime::UNIX_EPOCH + Duration::from_nanos(t.unix_timestamp_nanos() as u64)
}

#[test]
fn single_transfer_alert_arrives_while_the_download_runs() {
    require_root();
    let cgroup = Cgroup::new("transfer");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut c = config();
    c.detect.single_transfer.threshold_bytes = 8 << 20;
    let agent = Agent::for_cgroup(&cgroup, c);
    let token = synapse_token("mallory", "MalloryMalloryMallor");
    let mut client = Client::connect_from("127.0.0.13".parse::<IpAddr>().unwrap(), server.addrs[0]);
    // 64 MB, read slowly: the transfer lasts several seconds.
    let size: u64 = 64 << 20;
    client.send(
        format!(
            "GET /_matrix/media/v3/download/test.example/big?bytes={size} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let mut alert_seen_at = None;
    let mut crossed_at = None;
    while got < size {
        let n = client.stream.read(&mut buf).expect("read");
        assert!(n > 0, "server closed early");
        got += n as u64;
        if crossed_at.is_none() && got > 8 << 20 {
            crossed_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_micros(300));
        if alert_seen_at.is_none()
            && agent
                .records()
                .iter()
                .any(|r| r["kind"] == "alert" && r["rule"] == "single_transfer")
        {
            alert_seen_at = Some((Instant::now(), got));
        }
    }
    let finished = SystemTime::now();
    let (seen, bytes_when_seen) =
        alert_seen_at.expect("no single_transfer alert during the download");
    assert!(bytes_when_seen < size, "alert seen only at the end");
    // The client sees the crossing after the server sent it (socket buffers), so this is an
    // upper bound on the sensor's latency, printed for the record.
    let latency = seen.saturating_duration_since(crossed_at.expect("crossed"));
    eprintln!(
        "single_transfer: alert read by the client {latency:?} after it received the 8 MiB threshold, with {bytes_when_seen} of {size} bytes received"
    );
    let records = agent.stop();
    let a = alerts(&records)
        .into_iter()
        .find(|a| a["rule"] == "single_transfer")
        .unwrap()
        .clone();
    assert!(
        rfc3339_to_system(a["ts"].as_str().unwrap()) < finished,
        "{a}"
    );
    eprintln!("single_transfer alert: {a}");
    // A direct client: its address is known from the connection itself, heads or not.
    assert_eq!(a["subject"]["client_ip"], "127.0.0.13", "{a}");
    assert_eq!(a["threshold"], 8u64 << 20, "{a}");
    if !kernel::request_heads(sensor_record(&records, "start")) {
        assert_eq!(a["subject"]["user"], Value::Null, "{a}");
        return;
    }
    assert_eq!(a["subject"]["user"], "@mallory:test.example", "{a}");
    assert!(
        a["subject"]["token"].as_str().unwrap().starts_with("tfp_"),
        "{a}"
    );
    assert_eq!(a["threshold"], 8u64 << 20, "{a}");
    assert!(a["observed"].as_u64().unwrap() > 8 << 20, "{a}");
}

#[test]
fn ordinary_use_raises_no_alert() {
    require_root();
    let cgroup = Cgroup::new("benign");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut agent = Agent::for_cgroup(&cgroup, config());
    let users = [
        ("alice", "127.0.0.21"),
        ("bob", "127.0.0.22"),
        ("carol", "127.0.0.23"),
    ];
    // For about 20 s each user long-polls /sync, sends messages, reads a few rooms' history
    // and fetches a few media files, as a chat client does.
    let start = Instant::now();
    let mut round = 0;
    let mut clients = Vec::new();
    while start.elapsed() < Duration::from_secs(20) {
        for (name, ip) in users {
            let token = synapse_token(name, "BenignBenignBenignBe");
            let mut c = Client::connect_from(ip.parse().unwrap(), server.addrs[0]);
            let get = |c: &mut Client, target: &str| {
                c.send(
                    format!("GET {target} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n")
                        .as_bytes(),
                );
                c.read_response();
            };
            get(
                &mut c,
                &format!("/_matrix/client/v3/sync?since=s{round}_1&timeout=30000&bytes=2000"),
            );
            get(
                &mut c,
                &format!(
                    "/_matrix/client/v3/rooms/%21r{}%3Atest.example/send/m.room.message/t{round}?bytes=60",
                    round % 3
                ),
            );
            if round % 5 == 0 {
                get(
                    &mut c,
                    &format!(
                        "/_matrix/client/v3/rooms/%21r{}%3Atest.example/messages?dir=b&limit=30&bytes=20000",
                        round % 4
                    ),
                );
                get(
                    &mut c,
                    &format!(
                        "/_matrix/client/v1/media/download/test.example/m{}?bytes=300000",
                        round % 6
                    ),
                );
            }
            c.finish_reading();
            clients.push(c.local());
        }
        round += 1;
        // The users' pace (part of the traffic, not a wait).
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every connection's end, and so every request and alert of it.
    agent.wait_for_closed(&clients, Duration::from_secs(60));
    let records = agent.stop();
    assert!(alerts(&records).is_empty(), "{:#?}", alerts(&records));
    if !kernel::request_heads(sensor_record(&records, "start")) {
        // Without heads there are no request records to judge: the connections were seen.
        let conns = records.iter().filter(|r| r["kind"] == "connection").count();
        assert!(
            conns > 150,
            "too little traffic to matter: {conns} connections"
        );
        return;
    }
    let requests = records.iter().filter(|r| r["kind"] == "request").count();
    assert!(
        requests > 150,
        "too little traffic to matter: {requests} requests"
    );
    assert!(alerts(&records).is_empty(), "{:#?}", alerts(&records));
}

/// SIGHUP's path: a new threshold applies to a connection opened before the reload, a
/// restart-only key is reported and left alone, a bad file changes nothing, and the
/// connection's counts run on across reloads.
#[test]
fn reload_applies_live_keys_and_keeps_state() {
    require_root();
    let cgroup = Cgroup::new("reload");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut c = config();
    c.detect.single_transfer.threshold_bytes = 512 << 20;
    let mut agent = Agent::for_cgroup(&cgroup, c.clone());
    let token = synapse_token("mallory", "MalloryMalloryMallor");
    let mut client = Client::connect_from("127.0.0.14".parse::<IpAddr>().unwrap(), server.addrs[0]);
    let download = |client: &mut Client| {
        client.send(
            format!(
                "GET /_matrix/media/v3/download/test.example/big?bytes={} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n",
                16 << 20
            )
            .as_bytes(),
        );
        client.read_response();
    };
    download(&mut client);
    caught_up(&mut agent, server.addrs[0]);
    assert!(
        alerts(&agent.records()).is_empty(),
        "16 MiB is under the 512 MiB threshold"
    );

    c.detect.single_transfer.threshold_bytes = 8 << 20;
    c.kernel.max_connections = 1000;
    let r = agent.reload(c.clone());
    assert_eq!(r["reload"]["applied"], serde_json::json!(["detect"]), "{r}");
    assert_eq!(
        r["reload"]["needs_restart"],
        serde_json::json!(["kernel.max_connections"]),
        "{r}"
    );
    assert_eq!(r["reload"]["rejected"], Value::Null, "{r}");

    // The same connection, opened before the reload, under the new threshold.
    download(&mut client);
    agent.wait_for(Duration::from_secs(30), |records| {
        records
            .iter()
            .any(|r| r["kind"] == "alert" && r["rule"] == "single_transfer")
    });

    let r = agent.reload_rejected("invalid configuration in /etc/x.toml: bad");
    assert_eq!(
        r["reload"]["rejected"], "invalid configuration in /etc/x.toml: bad",
        "{r}"
    );
    assert_eq!(r["reload"]["applied"], serde_json::json!([]), "{r}");
    // Still the reloaded threshold: a third download alerts again on this connection only
    // if it doubles the reported size, so use a new connection.
    let mut second = Client::connect_from("127.0.0.15".parse::<IpAddr>().unwrap(), server.addrs[0]);
    download(&mut second);
    second.finish_reading();
    client.finish_reading();
    agent.wait_for_closed(&[second.local(), client.local()], Duration::from_secs(60));
    let records = agent.stop();
    let transfer_alerts: Vec<_> = alerts(&records)
        .into_iter()
        .filter(|a| a["rule"] == "single_transfer")
        .collect();
    assert_eq!(transfer_alerts.len(), 2, "{transfer_alerts:#?}");
    for a in &transfer_alerts {
        assert_eq!(a["threshold"], 8u64 << 20, "{a}");
    }
    assert_eq!(transfer_alerts[0]["subject"]["client_ip"], "127.0.0.14");
    assert_eq!(transfer_alerts[1]["subject"]["client_ip"], "127.0.0.15");
    // Counting ran on across both reloads: the connection's totals are exact.
    let found = homeserver_sensor_tests::connection_of(&records, client.local());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["bytes_in"], client.sent, "{}", found[0]);
    assert_eq!(found[0]["bytes_out"], client.received, "{}", found[0]);
}

/// Someone detaches one of the agent's cgroup programs (`bpftool link detach`): a
/// critical `sensor_health` alert names it, the agent attaches it again, and traffic after
/// that is counted exactly.
#[test]
fn a_detached_program_is_an_alert_and_is_attached_again() {
    require_root();
    let cgroup = Cgroup::new("detach");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut agent = Agent::for_cgroup(&cgroup, config());
    let dir = std::fs::File::open(&cgroup.abs).unwrap();
    let ids = homeserver_sensor_tests::cgroup_program_ids(&dir);
    assert_eq!(ids.len(), 3, "{ids:?}");
    // The egress program: ids are ingress, egress, sock_ops.
    homeserver_sensor_tests::detach_link_of(ids[1]);
    let records = agent.wait_for(Duration::from_secs(30), |records| {
        records.iter().any(|r| {
            r["kind"] == "alert"
                && r["rule"] == "sensor_health"
                && r["evidence"]["health"]["issue"] == "detached"
        })
    });
    let alert = records
        .iter()
        .find(|r| r["rule"] == "sensor_health" && r["evidence"]["health"]["issue"] == "detached")
        .unwrap();
    assert_eq!(alert["severity"], "critical", "{alert}");
    let program = alert["evidence"]["health"]["program"].as_str().unwrap();
    assert_eq!(
        program,
        format!("cgroup_skb/conn_egress on {}", cgroup.rel),
        "{alert}"
    );
    // Attached again within a rescan.
    let start = Instant::now();
    while homeserver_sensor_tests::cgroup_program_count(&dir) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "not attached again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = Client::connect(server.addrs[0]);
    c.request("GET", "/bytes/100000", b"", true);
    c.finish_reading();
    agent.wait_for_closed(&[c.local()], Duration::from_secs(60));
    let records = agent.stop();
    let found = homeserver_sensor_tests::connection_of(&records, c.local());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["bytes_out"], c.received, "{}", found[0]);
    assert_eq!(found[0]["bytes_in"], c.sent, "{}", found[0]);
}

/// In tracepoint mode (a process in no cgroup of its own) the send tracepoint reports the
/// crossing while the download runs, as the egress program does in cgroup mode.
#[test]
fn single_transfer_in_tracepoint_mode() {
    require_root();
    let server = Server::start(&["127.0.0.1:0"], None);
    if !kernel::has_sock_length_tracepoints() {
        kernel::refuses_shared_cgroup(server.pid());
        return;
    }
    // Bytes only: request heads are read by the cgroup programs alone.
    let mut c = kernel::heads_optional(config());
    c.detect.single_transfer.threshold_bytes = 8 << 20;
    let agent = Agent::for_pid(server.pid(), c);
    let mut client = Client::connect(server.addrs[0]);
    let size: u64 = 48 << 20;
    client.send(format!("GET /bytes/{size} HTTP/1.1\r\n\r\n").as_bytes());
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let mut seen_with = None;
    while got < size {
        let n = client.stream.read(&mut buf).expect("read");
        assert!(n > 0, "server closed early");
        got += n as u64;
        // Read slowly (part of the traffic): the transfer lasts while the alert is looked for.
        std::thread::sleep(Duration::from_micros(300));
        if seen_with.is_none()
            && agent
                .records()
                .iter()
                .any(|r| r["kind"] == "alert" && r["rule"] == "single_transfer")
        {
            seen_with = Some(got);
        }
    }
    let seen_with = seen_with.expect("no single_transfer alert during the download");
    assert!(seen_with < size, "alert seen only at the end");
    let records = agent.stop();
    let watch = records
        .iter()
        .find(|r| r["phase"] == "start")
        .map(|r| r["watched"][0]["mechanism"].clone());
    assert_eq!(watch, Some(Value::from("tracepoint")), "{records:#?}");
    let a = alerts(&records)
        .into_iter()
        .find(|a| a["rule"] == "single_transfer")
        .unwrap();
    assert_eq!(a["evidence"]["connection"]["pid"], server.pid(), "{a}");
    assert_eq!(
        a["evidence"]["connection"]["peer"],
        client.local().to_string(),
        "{a}"
    );
}
