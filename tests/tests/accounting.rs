//! Privileged tests of per-connection accounting: real programs, a real HTTP server, real
//! clients, and byte counts that must equal exactly what the clients sent and received.
//! Run as root, one at a time: `cargo xtask test`.

use std::{net::SocketAddr, time::Duration};

use homeserver_sensor::{agent::Targets, config::Config};
use homeserver_sensor_tests::{
    Agent, Cgroup, Client, Server, TempDir, agent_start_error, agent_start_error_with,
    connection_of, kernel, require_root, sensor_record,
};
use serde_json::Value;

/// The traffic every mechanism must count exactly.
struct Traffic {
    /// Closed connections: (client address, bytes sent, bytes received, responses).
    closed: Vec<(SocketAddr, u64, u64, u64)>,
    /// A keep-alive connection left open when the agent stops.
    open: Client,
}

/// Drives the traffic, then waits for the agent's record of each closed connection (its end
/// is the kernel's TCP_CLOSE, on the peer's last ACK, after the client returns).
fn drive(agent: &mut Agent, v4: SocketAddr, v6: SocketAddr) -> Traffic {
    let mut closed = Vec::new();
    let mut done = |c: &Client| closed.push((c.local(), c.sent, c.received, c.responses));

    // A 30 MB download on its own connection.
    let mut big = Client::connect(v4);
    assert_eq!(big.request("GET", "/bytes/30000000", b"", true), 30_000_000);
    big.finish_reading();
    done(&big);

    // Many small requests, one connection each.
    for i in 0..40 {
        let mut c = Client::connect(v4);
        c.request("GET", &format!("/bytes/{}", 100 + i), b"", true);
        c.finish_reading();
        done(&c);
    }

    // Keep-alive: several requests of different sizes on one connection, then an upload.
    let mut ka = Client::connect(v4);
    for size in [0, 1, 1000, 65_536, 1_000_000, 7] {
        assert_eq!(
            ka.request("GET", &format!("/bytes/{size}"), b"", false),
            size
        );
    }
    ka.request("POST", "/upload", &vec![b'u'; 1_500_000], false);
    ka.request("GET", "/bytes/10", b"", true);
    ka.finish_reading();
    done(&ka);

    // IPv6, keep-alive.
    let mut six = Client::connect(v6);
    six.request("GET", "/bytes/200000", b"", false);
    six.request("GET", "/bytes/3", b"", true);
    six.finish_reading();
    done(&six);

    // A client that half-closes right after its request: the server answers after our FIN.
    let mut half = Client::connect(v4);
    half.send(b"GET /bytes/50000 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    half.finish_reading();
    assert!(
        half.received > 50_000,
        "half-closed client got {}",
        half.received
    );
    half.responses = 1;
    done(&half);

    // Left open at stop.
    let mut open = Client::connect(v6);
    open.request("GET", "/bytes/4096", b"", false);
    open.request("POST", "/upload", b"still open", false);

    let clients: Vec<SocketAddr> = closed.iter().map(|c| c.0).collect();
    agent.wait_for_closed(&clients, Duration::from_secs(60));
    Traffic { closed, open }
}

/// Asserts exact bytes for every connection of the traffic; returns the open one's record.
fn assert_exact(records: &[Value], traffic: &Traffic, pid: u32, mechanism: &str) {
    for (client, sent, received, _) in &traffic.closed {
        let found = connection_of(records, *client);
        assert_eq!(found.len(), 1, "one record for {client}, got {found:#?}");
        let r = found[0];
        assert_eq!(r["closed"], true, "{r}");
        assert_eq!(r["bytes_in"], *sent, "bytes_in of {client}: {r}");
        assert_eq!(r["bytes_out"], *received, "bytes_out of {client}: {r}");
        assert_eq!(r["pid"], pid, "{r}");
        assert_eq!(r["mechanism"], mechanism, "{r}");
        assert_eq!(r["complete"], true, "{r}");
    }
    let client = traffic.open.local();
    let found = connection_of(records, client);
    assert_eq!(
        found.len(),
        1,
        "one record for the open {client}: {found:#?}"
    );
    let r = found[0];
    assert_eq!(r["closed"], false, "{r}");
    assert_eq!(r["bytes_in"], traffic.open.sent, "{r}");
    assert_eq!(r["bytes_out"], traffic.open.received, "{r}");
}

fn assert_no_drops(records: &[Value]) {
    let stop = sensor_record(records, "stop");
    for (place, n) in stop["drops"].as_object().expect("drops") {
        assert_eq!(n, 0, "drops at {place}: {stop}");
    }
}

#[test]
fn cgroup_mechanism_counts_exact_bytes() {
    require_root();
    let cgroup = Cgroup::new("cg");
    let server = Server::start(&["127.0.0.1:0", "[::1]:0"], Some(&cgroup));
    // Watching the PID: the agent finds that its cgroup holds nothing else.
    let mut agent = Agent::for_pid(server.pid(), Config::default());
    let traffic = drive(&mut agent, server.addrs[0], server.addrs[1]);
    let records = agent.stop();

    let start = sensor_record(&records, "start");
    assert_eq!(start["watched"][0]["mechanism"], "cgroup", "{start}");
    assert_eq!(
        start["watched"][0]["cgroup"],
        cgroup.rel.as_str(),
        "{start}"
    );
    assert!(
        start["attached"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| !a.as_str().unwrap().starts_with("tp_btf")),
        "cgroup mode attaches no system-wide hook by default: {start}"
    );
    assert_exact(&records, &traffic, server.pid(), "cgroup");
    // Without call counting, calls are not claimed.
    let any = connection_of(&records, traffic.closed[0].0)[0];
    assert!(any["sends"].is_null() && any["recvs"].is_null(), "{any}");
    assert_no_drops(&records);
}

/// With request heads required (the default), a homeserver in a cgroup it shares with other
/// processes is refused at start, with how to give it one of its own: watching it by byte
/// counts alone would look healthy and see no request.
#[test]
fn a_shared_cgroup_is_refused_while_request_heads_are_required() {
    require_root();
    let server = Server::start(&["127.0.0.1:0"], None);
    let err = agent_start_error_with(
        Targets {
            pids: vec![server.pid()],
            cgroups: vec![],
        },
        Config::default(),
    );
    for part in [
        "is shared",
        "read only by cgroup programs on a cgroup of the homeserver's own",
        "systemd-run --unit=synapse",
        "--cgroup",
        "attribution.request_heads = \"optional\"",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
}

#[test]
fn tracepoint_mechanism_counts_exact_bytes_and_calls() {
    require_root();
    // The server stays in the test's own cgroup, shared with the test itself: the agent
    // must fall back to the socket tracepoints filtered by PID.
    let server = Server::start(&["127.0.0.1:0", "[::1]:0"], None);
    if !kernel::has_sock_length_tracepoints() {
        kernel::refuses_shared_cgroup(server.pid());
        return;
    }
    // Bytes only: request heads are read by the cgroup programs alone.
    let mut agent = Agent::for_pid(server.pid(), kernel::heads_optional(Config::default()));
    let traffic = drive(&mut agent, server.addrs[0], server.addrs[1]);
    let records = agent.stop();

    let start = sensor_record(&records, "start");
    assert_eq!(start["watched"][0]["mechanism"], "tracepoint", "{start}");
    // Running without heads for it is a health alert, not a silence.
    let blind = records
        .iter()
        .find(|r| r["rule"] == "sensor_health" && r["evidence"]["health"]["issue"] == "unavailable")
        .unwrap_or_else(|| panic!("no sensor_health alert for the bytes-only watch: {records:#?}"));
    assert!(
        blind["evidence"]["health"]["capability"]
            .as_str()
            .is_some_and(|c| c.starts_with("request_heads")),
        "{blind}"
    );
    assert!(
        start["watched"][0]["why"]
            .as_str()
            .unwrap()
            .contains("shared"),
        "{start}"
    );
    assert_exact(&records, &traffic, server.pid(), "tracepoint");
    // The server answers each request with exactly one write.
    for (client, _, _, responses) in &traffic.closed {
        let r = connection_of(&records, *client)[0];
        assert_eq!(r["sends"], *responses, "sends of {client}: {r}");
        assert!(r["recvs"].as_u64().unwrap() >= 1, "{r}");
    }
    // The test process (the clients) is not watched: none of its sockets has a record as
    // the local side.
    for (client, ..) in &traffic.closed {
        assert!(
            !records
                .iter()
                .any(|r| r["local"] == client.to_string().as_str()),
            "a record for the unwatched client {client}"
        );
    }
    assert_no_drops(&records);
}

/// On a kernel without the socket-length tracepoints, an opt-in accounting key that needs
/// them must stop the agent at start, naming the key.
fn refuses_opt_in(key: &str, config: Config, pid: u32) {
    let err = agent_start_error_with(
        Targets {
            pids: vec![pid],
            cgroups: vec![],
        },
        config,
    );
    for part in [
        format!("{key} = true needs the socket tracepoints sock:sock_send_length"),
        "(Linux 6.3 or later), which this kernel does not offer".to_string(),
        format!("set `{key} = false`"),
    ] {
        assert!(err.contains(&part), "{part:?} not in: {err}");
    }
    kernel::unavailable(key, &err);
}

#[test]
fn call_counts_in_cgroup_mode() {
    require_root();
    let cgroup = Cgroup::new("calls");
    let server = Server::start(&["127.0.0.1:0", "[::1]:0"], Some(&cgroup));
    let mut config = Config::default();
    config.accounting.call_counts = true;
    if !kernel::has_sock_length_tracepoints() {
        refuses_opt_in("accounting.call_counts", config, server.pid());
        return;
    }
    let mut agent = Agent::for_cgroup(&cgroup, config);
    let traffic = drive(&mut agent, server.addrs[0], server.addrs[1]);
    let records = agent.stop();
    assert_exact(&records, &traffic, server.pid(), "cgroup");
    for (client, _, _, responses) in &traffic.closed {
        let r = connection_of(&records, *client)[0];
        assert_eq!(r["sends"], *responses, "sends of {client}: {r}");
    }
    assert_no_drops(&records);
}

#[test]
fn syscall_counts_and_file_bytes() {
    require_root();
    let cgroup = Cgroup::new("sys");
    let dir = TempDir::new("files");
    let file = dir.path.join("media.bin");
    let size = 2_345_678usize;
    std::fs::write(&file, vec![7u8; size]).expect("write media file");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut config = Config::default();
    config.accounting.syscalls = true;
    if !kernel::has_sock_length_tracepoints() {
        refuses_opt_in("accounting.syscalls", config, server.pid());
        return;
    }
    let mut agent = Agent::for_pid(server.pid(), config);
    let fetches = 3;
    let mut total_sent = 0;
    let mut clients = Vec::new();
    for _ in 0..fetches {
        let mut c = Client::connect(server.addrs[0]);
        let got = c.request("GET", &format!("/file{}", file.display()), b"", true);
        assert_eq!(got, size as u64);
        c.finish_reading();
        total_sent += c.received;
        clients.push(c.local());
    }
    agent.wait_for_closed(&clients, Duration::from_secs(60));
    let records = agent.stop();
    let p = records
        .iter()
        .find(|r| r["kind"] == "process" && r["pid"] == server.pid())
        .unwrap_or_else(|| panic!("no process record: {records:#?}"));
    // Exactly the file's bytes: the socket reads of the same read() syscalls are excluded.
    assert_eq!(p["file_read_bytes"], (size * fetches) as u64, "{p}");
    let syscalls = p["syscalls"].as_object().expect("syscalls");
    assert_eq!(
        syscalls.get("accept4").and_then(Value::as_u64),
        Some(fetches as u64),
        "{p}"
    );
    // glibc opens with openat; a static musl build on x86_64 (as in `cargo xtask vm-test`)
    // uses open, which arm64 does not have.
    let opens = syscalls.get("openat").and_then(Value::as_u64).unwrap_or(0)
        + syscalls.get("open").and_then(Value::as_u64).unwrap_or(0);
    assert!(opens >= fetches as u64, "{p}");
    let writes = syscalls.get("write").and_then(Value::as_u64).unwrap_or(0)
        + syscalls.get("sendto").and_then(Value::as_u64).unwrap_or(0);
    assert!(writes >= fetches as u64, "{p}");
    let out: u64 = records
        .iter()
        .filter(|r| r["kind"] == "connection")
        .map(|r| r["bytes_out"].as_u64().unwrap())
        .sum();
    assert_eq!(out, total_sent);
    assert_no_drops(&records);
}

#[test]
fn unwatched_processes_produce_nothing() {
    require_root();
    let cgroup = Cgroup::new("watched");
    let watched = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let other_cgroup = Cgroup::new("other");
    let other = Server::start(&["127.0.0.1:0"], Some(&other_cgroup));
    let mut agent = Agent::for_pid(watched.pid(), Config::default());
    let mut a = Client::connect(other.addrs[0]);
    a.request("GET", "/bytes/100000", b"", true);
    a.finish_reading();
    let mut b = Client::connect(watched.addrs[0]);
    b.request("GET", "/bytes/100", b"", true);
    b.finish_reading();
    // The watched connection's end, after the unwatched one's: had the agent counted the
    // unwatched one, its record would be written by then.
    agent.wait_for_closed(&[b.local()], Duration::from_secs(60));
    let records = agent.stop();
    assert!(
        connection_of(&records, a.local()).is_empty(),
        "unwatched server counted"
    );
    assert_eq!(connection_of(&records, b.local()).len(), 1);
    let conns = records.iter().filter(|r| r["kind"] == "connection").count();
    assert_eq!(conns, 1, "only the watched connection: {records:#?}");
}

#[test]
fn a_missing_pid_is_one_clear_sentence() {
    require_root();
    let err = agent_start_error(Targets {
        pids: vec![999_999_999],
        cgroups: vec![],
    });
    assert!(err.contains("no process with PID 999999999"), "{err}");
    let err = agent_start_error(Targets {
        pids: vec![],
        cgroups: vec!["/no-such-cgroup-here".into()],
    });
    assert!(err.contains("no-such-cgroup-here"), "{err}");
}

#[test]
fn stop_detaches_everything() {
    require_root();
    let cgroup = Cgroup::new("detach");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let agent = Agent::for_pid(server.pid(), Config::default());
    let _ = agent.stop();
    // No program is left on the cgroup: bpftool is not needed, the kernel lists them.
    let fd = std::fs::File::open(&cgroup.abs).expect("open cgroup");
    let attached = homeserver_sensor_tests::cgroup_program_count(&fd);
    assert_eq!(attached, 0, "programs still attached to {}", cgroup.rel);
}
