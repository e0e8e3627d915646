//! Privileged tests of discovery: the agent finds Synapse processes by their command line,
//! picks up new ones within a second, drops the ones that exit, and counts connections that
//! were open before it started.

use std::time::{Duration, Instant};

use homeserver_sensor::{agent::Targets, config::Config};
use homeserver_sensor_tests::{
    Agent, Cgroup, Client, FakeSynapse, Server, connection_of, require_root, synapse_token,
};
use serde_json::Value;

fn watches(records: &[Value], pid: u32) -> bool {
    records
        .iter()
        .rev()
        .find(|r| r["kind"] == "sensor")
        .is_some_and(|r| {
            r["watched"].as_array().is_some_and(|w| {
                w.iter().any(|g| {
                    g["pids"]
                        .as_array()
                        .is_some_and(|p| p.contains(&pid.into()))
                })
            })
        })
}

#[test]
fn new_synapse_workers_are_watched_within_a_second_and_dropped_when_gone() {
    require_root();
    let mut agent = Agent::start(Targets::default(), Config::default());
    let cgroup = Cgroup::new("synapse");
    let spawned = Instant::now();
    let worker = FakeSynapse::start("generic_worker", Some(&cgroup));
    let records = agent.wait_for(Duration::from_secs(30), |r| watches(r, worker.pid()));
    let latency = spawned.elapsed();
    assert!(
        latency < Duration::from_millis(1500),
        "picked up after {latency:?}"
    );
    let sensor = records
        .iter()
        .rev()
        .find(|r| r["kind"] == "sensor")
        .unwrap();
    assert_eq!(sensor["phase"], "watch");
    assert_eq!(sensor["watched"][0]["mechanism"], "cgroup", "{sensor}");
    assert_eq!(sensor["watched"][0]["cgroup"], cgroup.rel.as_str());

    let mut c = Client::connect(worker.addr);
    c.request("GET", "/bytes/123456", b"", false);
    // The user's server name comes from the worker's own configuration (`-c`).
    let token = synapse_token("frank", "FrankFrankFrankFrank");
    c.send(format!("GET /bytes/7 HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes());
    c.read_response();
    c.finish_reading();
    // Its end (and so its last request's record) before the worker goes.
    agent.wait_for_closed(&[c.local()], Duration::from_secs(60));

    let pid = worker.pid();
    drop(worker);
    agent.wait_for(Duration::from_secs(30), |r| !watches(r, pid));
    let records = agent.stop();
    let found = connection_of(&records, c.local());
    assert_eq!(found.len(), 1, "{records:#?}");
    assert_eq!(found[0]["pid"], pid);
    assert_eq!(found[0]["bytes_in"], c.sent);
    assert_eq!(found[0]["bytes_out"], c.received);
    let requests: Vec<&Value> = records.iter().filter(|r| r["kind"] == "request").collect();
    assert_eq!(requests.len(), 2, "{records:#?}");
    assert_eq!(
        requests[1]["user"], "@frank:test.example",
        "{:#}",
        requests[1]
    );
    assert!(requests[0]["user"].is_null());
}

#[test]
fn connections_open_before_the_agent_are_counted_from_its_start() {
    require_root();
    let cgroup = Cgroup::new("pre");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let mut early = Client::connect(server.addrs[0]);
    early.request("GET", "/bytes/5000", b"", false);
    let (sent_before, received_before) = (early.sent, early.received);

    let mut agent = Agent::for_pid(server.pid(), Config::default());
    early.request("GET", "/bytes/70000", b"", false);
    early.request("POST", "/upload", &[b'p'; 3000], true);
    early.finish_reading();
    // Its end is seen from its packets, a FIN each way: wait for the record that says so
    // (an emulated CPU in `cargo xtask vm-test` can take longer than any fixed pause).
    let local = early.local();
    agent.wait_for(Duration::from_secs(60), |records| {
        connection_of(records, local)
            .iter()
            .any(|r| r["closed"] == true)
    });
    let records = agent.stop();
    let found = connection_of(&records, early.local());
    assert_eq!(found.len(), 1, "{records:#?}");
    let r = found[0];
    assert_eq!(r["complete"], false, "{r}");
    // Its end is seen from the packets (no sock_ops callbacks for it).
    assert_eq!(r["closed"], true, "{r}");
    assert_eq!(r["pid"], server.pid(), "{r}");
    assert_eq!(r["local"], server.addrs[0].to_string().as_str(), "{r}");
    assert_eq!(r["bytes_in"], early.sent - sent_before, "{r}");
    assert_eq!(r["bytes_out"], early.received - received_before, "{r}");
}
