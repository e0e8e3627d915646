//! Privileged tests of the listeners the sensor cannot see. Its programs see TCP connections
//! in plain HTTP: a Synapse whose configuration has an HTTP listener on a UNIX socket (no
//! bytes, no requests for the sensor) or one with Synapse's own TLS (encrypted heads: bytes
//! only) must not look healthy and idle. The agent reads the watched Synapse's configuration
//! (its `-c` paths) and says so, with a `sensor_health` alert per listener.

use std::{
    io::{Read, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use homeserver_sensor::{config::Config, discover};
use homeserver_sensor_tests::{Agent, Cgroup, FakeSynapse, require_root};
use serde_json::Value;

/// A configuration with the listener shapes of Synapse's documentation: a UNIX-socket HTTP
/// listener serving clients (what nginx would proxy to), Synapse's own TLS on 8448 for
/// federation, and two the sensor sees or has no need to (plain HTTP on loopback, metrics).
const CONFIG: &str = r#"server_name: test.example
listeners:
  - path: /run/hs-test-listeners/main.sock
    type: http
    x_forwarded: true
    resources:
      - names: [client, federation]
  - port: 8448
    type: http
    tls: true
    resources:
      - names: [federation]
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    bind_addresses: ['127.0.0.1']
    resources:
      - names: [client, federation]
        compress: false
  - port: 9000
    type: metrics
    bind_addresses: ['127.0.0.1']
registration_shared_secret: "not-a-real-secret"
"#;

const UNIX: &str = "listener:unix:/run/hs-test-listeners/main.sock";
const TLS: &str = "listener:tls:8448";

/// The stand-in Synapse's configuration file, found as the agent finds it: the `-c`
/// argument of its command line.
fn config_of(pid: u32) -> PathBuf {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read the cmdline");
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let paths = discover::config_paths(&args);
    assert_eq!(paths.len(), 1, "{args:?}");
    paths[0].clone()
}

/// The `sensor_health` alerts about listeners, by capability.
fn listener_alerts(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| {
            r["kind"] == "alert"
                && r["rule"] == "sensor_health"
                && r["evidence"]["health"]["capability"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("listener:"))
        })
        .collect()
}

fn alert_for<'a>(records: &'a [Value], capability: &str) -> Option<&'a Value> {
    listener_alerts(records)
        .into_iter()
        .find(|r| r["evidence"]["health"]["capability"] == capability)
}

/// `homeserver_sensor_capability{capability="every_listener_visible"}`, polled until it is
/// `want` (the agent sets its gauges just after its start record, then every second).
fn wait_for_listener_gauge(agent: &Agent, want: u32) {
    let addr = agent.start_record()["metrics"]
        .as_str()
        .expect("the start record names the metrics address")
        .to_string();
    let line =
        format!("homeserver_sensor_capability{{capability=\"every_listener_visible\"}} {want}\n");
    let start = Instant::now();
    loop {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect to metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send the metrics request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read the metrics");
        if text.contains(&line) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {line:?} in: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_unix_socket_and_synapses_own_tls_are_health_alerts() {
    require_root();
    let cgroup = Cgroup::new("listeners");
    let synapse = FakeSynapse::start("homeserver", Some(&cgroup));
    // Written before the agent starts: it reads the configuration when it finds Synapse.
    let config = config_of(synapse.pid());
    std::fs::write(&config, CONFIG).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));

    let mut agent = Agent::for_cgroup(&cgroup, Config::default());
    // The first health check (within a second of the start) raises one per listener.
    agent.wait_for(Duration::from_secs(30), |records| {
        alert_for(records, UNIX).is_some() && alert_for(records, TLS).is_some()
    });
    wait_for_listener_gauge(&agent, 0);
    let records = agent.stop();

    let unix = alert_for(&records, UNIX).expect("the UNIX-socket alert");
    assert_eq!(unix["severity"], "critical", "{unix:#}");
    let health = &unix["evidence"]["health"];
    assert_eq!(health["issue"], "unavailable", "{unix:#}");
    let why = health["why"].as_str().expect("why");
    for part in [
        "the client, federation resources on the UNIX socket /run/hs-test-listeners/main.sock",
        "no bytes, requests",
        "plain HTTP on a loopback TCP listener",
    ] {
        assert!(why.contains(part), "{part:?} not in {why:?}");
    }

    let tls = alert_for(&records, TLS).expect("the TLS alert");
    assert_eq!(tls["severity"], "warning", "{tls:#}");
    let health = &tls["evidence"]["health"];
    assert_eq!(health["issue"], "unavailable", "{tls:#}");
    let why = health["why"].as_str().expect("why");
    for part in [
        "its own TLS on port 8448",
        "request heads are encrypted",
        "TLS terminated in the proxy",
    ] {
        assert!(why.contains(part), "{part:?} not in {why:?}");
    }

    // The plain loopback listener and the metrics one are seen (or need not be): no alert,
    // and none of the two above twice within a run shorter than `realert_s`.
    let capabilities: Vec<&str> = listener_alerts(&records)
        .iter()
        .filter_map(|r| r["evidence"]["health"]["capability"].as_str())
        .collect();
    assert_eq!(capabilities, [UNIX, TLS], "{records:#?}");
    // Nothing secret from the configuration reaches the records.
    assert!(
        !records
            .iter()
            .any(|r| r.to_string().contains("not-a-real-secret")),
        "{records:#?}"
    );
}

#[test]
fn plain_tcp_listeners_raise_nothing() {
    require_root();
    let cgroup = Cgroup::new("listeners-plain");
    let synapse = FakeSynapse::start("homeserver", Some(&cgroup));
    let config = config_of(synapse.pid());
    let plain = "server_name: test.example\nlisteners:\n  - port: 8008\n    type: http\n    \
                 resources: [{names: [client, federation]}]\n";
    std::fs::write(&config, plain).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));

    let agent = Agent::for_pid(synapse.pid(), Config::default());
    wait_for_listener_gauge(&agent, 1);
    let records = agent.stop();
    assert!(listener_alerts(&records).is_empty(), "{records:#?}");
}
