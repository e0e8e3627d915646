//! Privileged tests of the `homeserver-sensor` binary as a user runs it: exit codes, one
//! clear sentence per error (never a backtrace), `--duration`, and SIGTERM.

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use homeserver_sensor_tests::{
    Cgroup, Client, Server, TempDir, cgroup_program_count, read_records, require_root, settle,
    sibling_binary,
};

fn sensor() -> Command {
    let mut cmd = Command::new(sibling_binary("homeserver-sensor"));
    // A user's shell may have it set; errors must still be one sentence.
    cmd.env("RUST_BACKTRACE", "1");
    cmd
}

/// `homeserver-sensor run -c CONFIG` with the fingerprint key in `dir`, not the
/// installation's.
fn run_in(dir: &TempDir) -> Command {
    let config = dir.path.join("config.toml");
    let key = dir.path.join("fingerprint.key");
    std::fs::write(
        &config,
        format!(
            "[attribution]\nkey_file = {:?}\n[metrics]\nlisten = \"127.0.0.1:0\"\n[ledger]\ndir = {:?}\n",
            key.display().to_string(),
            dir.path.join("ledger").display().to_string()
        ),
    )
    .expect("write config");
    let mut cmd = sensor();
    cmd.arg("run").arg("-c").arg(config);
    cmd
}

fn assert_one_sentence(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line of error, got {stderr:?}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr:?}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn without_privilege_says_what_to_do() {
    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(sibling_binary("homeserver-sensor"))
        .args(["run", "--duration", "1"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run setpriv");
    assert_one_sentence(
        &out,
        "not enough privilege to load eBPF programs: run as root",
    );
}

#[test]
fn a_missing_pid_is_one_sentence() {
    require_root();
    let dir = TempDir::new("pid");
    let out = run_in(&dir)
        .args(["--pid", "999999999", "--duration", "1"])
        .output()
        .expect("run sensor");
    assert_one_sentence(&out, "no process with PID 999999999");
}

#[test]
fn bad_arguments_and_config_are_explained() {
    require_root();
    let out = sensor()
        .args(["run", "--duration", "-3"])
        .output()
        .expect("run sensor");
    assert!(!out.status.success());
    let dir = TempDir::new("cfg");
    let file = dir.path.join("bad.toml");
    std::fs::write(
        &file,
        "[kernel]\nmax_connections = 10\nring_bufer_bytes = 4096\n",
    )
    .unwrap();
    let out = sensor()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run check-config");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ring_bufer_bytes") && stderr.contains("line 3"),
        "{stderr}"
    );
    // A value of the right type but out of range: named with its key and line.
    std::fs::write(
        &file,
        "[detect.single_transfer]\nthreshold_bytes = \"512 MiB\"\n\n[detect.volume]\ntoken = [{ window_s = 0, threshold_bytes = \"1 GiB\" }]\n",
    )
    .unwrap();
    let out = sensor().arg("check-config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("detect.volume.token[0].window_s") && stderr.contains("line 5"),
        "{stderr}"
    );
    std::fs::write(&file, "[kernel]\nmax_connections = 10\n").unwrap();
    let out = sensor().arg("check-config").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn sighup_reloads_the_file_and_a_bad_file_changes_nothing() {
    require_root();
    let cgroup = Cgroup::new("hup");
    let _server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let dir = TempDir::new("hup");
    let (mut child, events) = start_for_cgroup(&dir, &cgroup);
    let config = dir.path.join("config.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    let reloads = |n: usize| {
        for _ in 0..500 {
            let found: Vec<_> = read_records(&events)
                .into_iter()
                .filter(|r| r["phase"] == "reload")
                .collect();
            if found.len() >= n {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no reload record {n}");
    };
    std::fs::write(
        &config,
        format!("{original}[detect]\nrealert_s = 60\n[kernel]\nmax_connections = 1000\n"),
    )
    .unwrap();
    signal(&child, libc::SIGHUP);
    let r = &reloads(1)[0];
    assert_eq!(r["reload"]["applied"], serde_json::json!(["detect"]), "{r}");
    assert_eq!(
        r["reload"]["needs_restart"],
        serde_json::json!(["kernel.max_connections"]),
        "{r}"
    );
    std::fs::write(&config, format!("{original}[discovery]\nrescan_ms = 1\n")).unwrap();
    signal(&child, libc::SIGHUP);
    let r = &reloads(2)[1];
    let why = r["reload"]["rejected"].as_str().unwrap_or_default();
    assert!(
        why.contains("discovery.rescan_ms") && why.contains("between 50 and 60000"),
        "{r}"
    );
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "a bad file must not stop the sensor"
    );
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("wait sensor");
    assert!(status.success(), "{status:?}");
}

#[test]
fn duration_flushes_open_connections_then_stops() {
    require_root();
    let cgroup = Cgroup::new("cli");
    let server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let dir = TempDir::new("cli");
    let events = dir.path.join("events.jsonl");
    let mut child = run_in(&dir)
        .args(["--duration", "3", "--events"])
        .arg(&events)
        .args(["--pid", &server.pid().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .expect("start sensor");
    wait_for_start(&events);
    let mut c = Client::connect(server.addrs[0]);
    c.request("GET", "/bytes/12345", b"", false);
    settle();
    let status = child.wait().expect("wait sensor");
    assert!(status.success(), "{status:?}");
    let records = read_records(&events);
    let conn = records
        .iter()
        .find(|r| r["kind"] == "connection")
        .unwrap_or_else(|| panic!("no connection record: {records:#?}"));
    assert_eq!(conn["closed"], false);
    assert_eq!(conn["bytes_out"], c.received);
    assert_eq!(conn["bytes_in"], c.sent);
    assert!(
        records
            .last()
            .is_some_and(|r| r["kind"] == "sensor" && r["phase"] == "stop")
    );
}

#[test]
fn sigterm_stops_cleanly_and_detaches() {
    require_root();
    let cgroup = Cgroup::new("term");
    let _server = Server::start(&["127.0.0.1:0"], Some(&cgroup));
    let dir = TempDir::new("term");
    let (mut child, events) = start_for_cgroup(&dir, &cgroup);
    let fd = std::fs::File::open(&cgroup.abs).unwrap();
    assert_eq!(
        cgroup_program_count(&fd),
        3,
        "ingress, egress and sock_ops attached"
    );
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("wait sensor");
    assert!(status.success(), "{status:?}");
    assert_eq!(cgroup_program_count(&fd), 0, "programs left attached");
    let records = read_records(&events);
    assert!(
        records.last().is_some_and(|r| r["phase"] == "stop"),
        "{records:#?}"
    );
}

/// `homeserver-sensor run --cgroup` for `cgroup`, writing events in `dir`, once started.
fn start_for_cgroup(dir: &TempDir, cgroup: &Cgroup) -> (std::process::Child, std::path::PathBuf) {
    let events = dir.path.join("events.jsonl");
    let child = run_in(dir)
        .args(["--events"])
        .arg(&events)
        .args(["--cgroup", &cgroup.rel])
        .stderr(Stdio::null())
        .spawn()
        .expect("start sensor");
    wait_for_start(&events);
    (child, events)
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: sending a signal to our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn wait_for_start(events: &std::path::Path) {
    for _ in 0..500 {
        if read_records(events).iter().any(|r| r["phase"] == "start") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the sensor did not start");
}
