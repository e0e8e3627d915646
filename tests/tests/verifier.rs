//! Privileged tests of what the kernel's verifier makes of the programs, on this kernel:
//! every program verifies with a wide margin under the verifier's budget, and a program the
//! kernel refuses stops the agent (or, when the operator made it optional, is an alert).
//! `cargo xtask vm-test` runs them on every kernel of its set; the `verified_insns` lines
//! they print are the figures of the README's kernel table.

use std::process::Command;

use homeserver_sensor::{config::Config, load};
use homeserver_sensor_tests::{
    Agent, Cgroup, Server, TempDir, kernel, read_records, require_root, sibling_binary,
};
use serde_json::Value;

#[test]
fn every_program_verifies_within_a_fifth_of_the_verifier_budget() {
    require_root();
    let cgroup = Cgroup::new("verifier");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let agent = Agent::for_cgroup(&cgroup, Config::default());
    let start = agent.start_record();
    drop(agent);
    drop(server);
    let programs = start["programs"]
        .as_object()
        .unwrap_or_else(|| panic!("no programs in the start record: {start}"));
    let heads = kernel::request_heads(&start);
    for name in ["conn_egress", "conn_sockops"] {
        assert_eq!(programs[name]["loaded"], true, "{name}: {start}");
    }
    let ingress = if heads {
        "conn_ingress"
    } else {
        "conn_ingress_basic"
    };
    assert_eq!(programs[ingress]["loaded"], true, "{ingress}: {start}");
    let release = kernel::release();
    for (name, load) in programs {
        if load["loaded"] != true {
            continue;
        }
        match load["verified_insns"].as_u64() {
            Some(insns) => {
                println!("homeserver-sensor-tests: verified_insns on {release}: {name} {insns}");
                assert!(
                    insns <= u64::from(load::VERIFIED_INSNS_BUDGET),
                    "{name} took {insns} verified instructions on {release}, over the budget of {} (a fifth of the verifier's limit): {start}",
                    load::VERIFIED_INSNS_BUDGET
                );
            }
            // `bpf_prog_info.verified_insns` arrived in Linux 5.16.
            None => {
                assert!(
                    kernel::older_than(5, 16),
                    "{name}: no verified_insns on {release}: {start}"
                );
                println!(
                    "homeserver-sensor-tests: verified_insns on {release}: {name} not reported (Linux 5.16+)"
                );
            }
        }
    }
}

/// `homeserver-sensor run` on a server in a cgroup of its own, with the request-head
/// program replaced by a twin the verifier refuses, and `extra` in the configuration.
fn run_with_refused_heads(
    dir: &TempDir,
    pid: u32,
    extra: &str,
) -> (std::process::Output, Vec<Value>) {
    let config = dir.path.join("config.toml");
    let events = dir.path.join("events.jsonl");
    std::fs::write(
        &config,
        format!(
            "[attribution]\nkey_file = {:?}\n{extra}\n[metrics]\nlisten = \"127.0.0.1:0\"\n[ledger]\ndir = {:?}\n",
            dir.path.join("fingerprint.key").display().to_string(),
            dir.path.join("ledger").display().to_string()
        ),
    )
    .expect("write config");
    // The agent makes a key only at the default location.
    homeserver_sensor::identity::FingerprintKey::create(&dir.path.join("fingerprint.key"))
        .expect("create the key file");
    let out = Command::new(sibling_binary("homeserver-sensor"))
        .env(load::TEST_REFUSE_HEADS_ENV, "1")
        .arg("run")
        .arg("-c")
        .arg(&config)
        .args(["--pid", &pid.to_string(), "--duration", "2", "--events"])
        .arg(&events)
        .output()
        .expect("run homeserver-sensor");
    let records = if events.exists() {
        read_records(&events)
    } else {
        Vec::new()
    };
    (out, records)
}

#[test]
fn a_refused_head_program_stops_the_agent_unless_heads_are_optional() {
    require_root();
    let cgroup = Cgroup::new("refused");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let release = kernel::release();

    let dir = TempDir::new("refused-required");
    let (out, records) = run_with_refused_heads(&dir, server.pid(), "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !kernel::has_bpf_loop() {
        // The kernel lacks what heads need: not a refusal of a program it should take.
        assert!(out.status.success(), "{stderr}");
        let start = homeserver_sensor_tests::sensor_record(&records, "start");
        assert!(!kernel::request_heads(start), "{start}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one sentence, got {stderr:?}");
    for part in [
        format!("the kernel (Linux {release}) refused program conn_ingress_refused"),
        "which reads request heads".to_string(),
        // The verifier's own last line.
        "it said: \"".to_string(),
        "outside of the allowed memory range".to_string(),
        "attribution.request_heads = \"optional\"".to_string(),
    ] {
        assert!(lines[0].contains(&part), "{part:?} not in {stderr:?}");
    }

    let dir = TempDir::new("refused-optional");
    let (out, records) = run_with_refused_heads(&dir, server.pid(), "request_heads = \"optional\"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let start = homeserver_sensor_tests::sensor_record(&records, "start");
    assert!(
        start["unavailable"]["request_heads"]
            .as_str()
            .is_some_and(|why| why.contains("refused program conn_ingress_refused")),
        "{start}"
    );
    assert_eq!(
        start["programs"]["conn_ingress_refused"]["loaded"], false,
        "{start}"
    );
    assert_eq!(
        start["programs"]["conn_ingress_basic"]["loaded"], true,
        "{start}"
    );
    let alert = records
        .iter()
        .find(|r| {
            r["rule"] == "sensor_health" && r["evidence"]["health"]["capability"] == "request_heads"
        })
        .unwrap_or_else(|| panic!("no sensor_health alert for the missing heads: {records:#?}"));
    assert_eq!(alert["severity"], "warning", "{alert}");
    assert!(stderr.contains("running without request_heads"), "{stderr}");
    // Afterwards, the ledger's report on that time says the sensor was blind, rather than
    // that nobody asked for anything.
    let report = Command::new(sibling_binary("homeserver-sensor"))
        .args(["report", "--client-ip", "203.0.113.7", "--ledger-dir"])
        .arg(dir.path.join("ledger"))
        .output()
        .expect("run homeserver-sensor report");
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{report:?}");
    assert!(
        text.contains("The sensor ran without request heads from")
            && text.contains("refused program conn_ingress_refused"),
        "{text}"
    );
    assert!(
        !text.contains("No requests of this client address in the ledger for that range ("),
        "{text}"
    );
}
