//! Privileged tests of the `homeserver-sensor` binary as a user runs it: exit codes, one
//! clear sentence per error (never a backtrace), `--duration`, and SIGTERM.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use homeserver_sensor::identity::FingerprintKey;
use homeserver_sensor_tests::{
    Cgroup, Client, FakeSynapse, Server, TempDir, cgroup_program_count, read_records, require_root,
    sibling_binary, wait_for_records,
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
    // The agent makes a key only at the default location.
    if !key.exists() {
        FingerprintKey::create(&key).expect("create the key file");
    }
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
        let records = wait_for_records(&events, Duration::from_secs(30), |records| {
            records.iter().filter(|r| r["phase"] == "reload").count() >= n
        });
        records
            .into_iter()
            .filter(|r| r["phase"] == "reload")
            .collect::<Vec<_>>()
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
    // The connection stays open: the sensor's own `--duration` ends the run.
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

/// The lines a run wrote on stderr, without empty ones.
fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Writes `text` as `dir/name` and returns its path.
fn write_file(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// Every error an operator meets names what failed, where, and what to do, and says its
/// cause once (the issue listed four that said it twice, one in Rust debug formatting).
#[test]
fn each_error_says_its_cause_once() {
    require_root();
    let out = sensor()
        .args(["check-config", "/nonexistent.toml"])
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr_lines(&out),
        [
            "homeserver-sensor: cannot read the configuration file /nonexistent.toml: No such \
          file or directory (os error 2); check the path given with -c"
        ]
    );

    let dir = TempDir::new("once");
    let out = run_in(&dir)
        .args(["--events", "/nonexistent/x.jsonl", "--duration", "1"])
        .output()
        .expect("run sensor");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr_lines(&out),
        [
            "homeserver-sensor: cannot write events to /nonexistent/x.jsonl: its directory \
          /nonexistent does not exist; create the directory or give another path (--events or \
          output.events; \"-\" writes to stdout)"
        ]
    );

    // A metrics port in use: found after the programs are loaded.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap();
    let key = dir.path.join("fingerprint.key");
    let config = write_file(
        &dir,
        "port.toml",
        &format!(
            "[attribution]\nkey_file = {:?}\n[metrics]\nlisten = \"{addr}\"\n[ledger]\ndir = {:?}\n",
            key.display().to_string(),
            dir.path.join("ledger").display().to_string()
        ),
    );
    let out = sensor()
        .args(["run", "--duration", "5", "-c"])
        .arg(&config)
        .output()
        .expect("run sensor");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let last = stderr_lines(&out).pop().unwrap_or_default();
    // The C library's words for EADDRINUSE: glibc's and musl's (`vm-test`) differ.
    let in_use = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
    assert_eq!(
        last,
        format!(
            "homeserver-sensor: cannot listen for metrics on {addr}: {in_use}; another process \
             holds this port: stop it, or give the metrics listener another address \
             (`[metrics] listen` in the configuration)"
        )
    );
    drop(taken);

    // A ledger directory that cannot be created (procfs takes no new directory, although
    // root may write there): found when the agent opens the ledger.
    let config = write_file(
        &dir,
        "ledger.toml",
        &format!(
            "[attribution]\nkey_file = {:?}\n[metrics]\nlisten = \"127.0.0.1:0\"\n[ledger]\ndir = \"/proc/hs-test-ledger\"\n",
            key.display().to_string()
        ),
    );
    let out = sensor()
        .args(["run", "--duration", "5", "-c"])
        .arg(&config)
        .output()
        .expect("run sensor");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let last = stderr_lines(&out).pop().unwrap_or_default();
    assert_eq!(
        last,
        "homeserver-sensor: cannot create the ledger directory /proc/hs-test-ledger: No such \
         file or directory (os error 2); create it (mode 0700, owned by the agent's user) or \
         set [ledger] dir to a directory the agent can write"
    );
}

/// `check-config` names every error of a file, each on its own line with its line number,
/// and exits with status 1.
#[test]
fn check_config_names_every_error_of_a_file() {
    require_root();
    let dir = TempDir::new("several");
    let file = write_file(
        &dir,
        "several.toml",
        "[kernel]\nmax_connections = 0\nring_bufer_bytes = 4096\n\n[discovery]\nrescan_ms = \"fast\"\n\n[metrics]\nlisten = \"localhost\"\n",
    );
    let out = sensor()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let f = file.display();
    assert_eq!(
        stderr_lines(&out),
        [
            format!(
                "homeserver-sensor: invalid configuration in {f}, line 2: \
                 kernel.max_connections = 0: must be at least 1"
            ),
            format!(
                "homeserver-sensor: invalid configuration in {f}, line 3: \
                 kernel.ring_bufer_bytes: unknown field `ring_bufer_bytes`, expected \
                 `max_connections` or `ring_buffer_bytes`"
            ),
            format!(
                "homeserver-sensor: invalid configuration in {f}, line 6: discovery.rescan_ms: \
                 invalid type: string \"fast\", expected u64"
            ),
            format!(
                "homeserver-sensor: invalid configuration in {f}, line 9: metrics.listen = \
                 localhost: must be an address and port, such as 127.0.0.1:9465 or [::1]:9465"
            ),
        ]
    );
}

/// What `run` refuses at start without a kernel, `check-config` refuses too, every one at
/// once; `run` names the same ones before it loads anything, and neither creates anything.
#[test]
fn check_config_refuses_what_run_refuses() {
    require_root();
    let dir = TempDir::new("paths");
    let d = dir.path.display().to_string();
    FingerprintKey::create(&dir.path.join("state/fingerprint.key")).expect("create key");
    std::fs::write(dir.path.join("file"), "").unwrap();
    let file = write_file(
        &dir,
        "paths.toml",
        &format!(
            "[attribution]\nkey_file = \"{d}/stat/fingerprint.key\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [output]\nevents = \"{d}/nonexistent/events.jsonl\"\n\n\
             [output.webhook]\nurl_file = \"webhook-url\"\n\n\
             [ledger]\ndir = \"{d}/file/ledger\"\n"
        ),
    );
    let expected = [
        format!(
            "homeserver-sensor: cannot write events to {d}/nonexistent/events.jsonl: its \
             directory {d}/nonexistent does not exist; create the directory or give another \
             path (--events or output.events; \"-\" writes to stdout)"
        ),
        format!(
            "homeserver-sensor: no fingerprint key at {d}/stat/fingerprint.key: fix \
             attribution.key_file if the path is wrong, or create the key there (32 random \
             bytes, mode 0600: `(umask 077; head -c 32 /dev/urandom > \
             {d}/stat/fingerprint.key)`); only the default location, \
             /var/lib/homeserver-sensor/fingerprint.key, is created automatically"
        ),
        format!(
            "homeserver-sensor: cannot create the ledger directory {d}/file/ledger: Not a \
             directory (os error 20); create it (mode 0700, owned by the agent's user) or set \
             [ledger] dir to a directory the agent can write"
        ),
        "homeserver-sensor: output.webhook.url_file = \"webhook-url\" is a bare name, which \
         is read from systemd's credentials ($CREDENTIALS_DIRECTORY), but there are none: add \
         LoadCredential=webhook-url:/etc/homeserver-sensor/webhook-url to the unit, or give an \
         absolute path"
            .to_string(),
    ];
    let out = sensor()
        .arg("check-config")
        .arg(&file)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr_lines(&out), expected);
    let out = sensor()
        .args(["run", "--duration", "1", "-c"])
        .arg(&file)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run sensor");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr_lines(&out), expected, "run refuses the same, first");
    for created in ["stat", "nonexistent"] {
        assert!(!dir.path.join(created).exists(), "{created} was created");
    }

    // Once each is fixed, the file is fine.
    std::fs::write(
        dir.path.join("webhook-url"),
        "https://hooks.example.org/hook/1\n",
    )
    .unwrap();
    let file = write_file(
        &dir,
        "fixed.toml",
        &format!(
            "[attribution]\nkey_file = \"{d}/state/fingerprint.key\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n\
             [output]\nevents = \"{d}/events.jsonl\"\n\n\
             [output.webhook]\nurl_file = \"{d}/webhook-url\"\n\n\
             [ledger]\ndir = \"{d}/state/ledger\"\n"
        ),
    );
    let out = sensor()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run check-config");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: OK\n", file.display())
    );
    assert!(
        !dir.path.join("events.jsonl").exists() && !dir.path.join("state/ledger").exists(),
        "check-config created something"
    );
}

/// A typo in `attribution.key_file` stops the agent with one sentence naming the path,
/// rather than start a new key whose fingerprints match nothing in the ledger.
#[test]
fn a_typo_in_the_key_file_is_an_error_not_a_new_key() {
    require_root();
    let dir = TempDir::new("typo");
    let state = dir.path.join("state");
    FingerprintKey::create(&state.join("fingerprint.key")).expect("create key");
    let config = |key: &Path| {
        write_file(
            &dir,
            "config.toml",
            &format!(
                "[attribution]\nkey_file = {:?}\n[metrics]\nlisten = \"127.0.0.1:0\"\n[ledger]\ndir = {:?}\n",
                key.display().to_string(),
                state.join("ledger").display().to_string()
            ),
        )
    };
    let typo = state.join("fingerprnt.key");
    let file = config(&typo);
    let sentence = format!(
        "homeserver-sensor: no fingerprint key at {t}: fix attribution.key_file if the path is \
         wrong, or create the key there (32 random bytes, mode 0600: `(umask 077; head -c 32 \
         /dev/urandom > {t})`); only the default location, \
         /var/lib/homeserver-sensor/fingerprint.key, is created automatically",
        t = typo.display()
    );
    let out = sensor()
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr_lines(&out), std::slice::from_ref(&sentence));
    let events = dir.path.join("events.jsonl");
    let out = sensor()
        .args(["run", "--duration", "1", "-c"])
        .arg(&file)
        .arg("--events")
        .arg(&events)
        .output()
        .expect("run sensor");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stderr_lines(&out), [sentence]);
    assert!(!typo.exists(), "a new key was created at the typo");
    assert!(!events.exists(), "the agent started");
    let in_state: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(in_state, ["fingerprint.key"], "only the real key");

    // With the path right, it runs.
    let file = config(&state.join("fingerprint.key"));
    let out = sensor()
        .args(["run", "--duration", "1", "-c"])
        .arg(&file)
        .arg("--events")
        .arg(&events)
        .output()
        .expect("run sensor");
    assert!(out.status.success(), "{out:?}");
    assert!(
        read_records(&events).iter().any(|r| r["phase"] == "start"),
        "no start record"
    );
}

/// With no Synapse running, `run` says once, as a warning, that nothing is watched and what
/// discovery looks for; when one starts, it says so.
#[test]
fn run_with_nothing_to_watch_says_what_discovery_looks_for() {
    require_root();
    let running =
        homeserver_sensor::discover::find_synapse(Path::new("/proc")).expect("scan /proc");
    assert!(
        running.is_empty(),
        "a Synapse runs on this host ({running:?}): this test needs none"
    );
    let dir = TempDir::new("nothing");
    let events = dir.path.join("events.jsonl");
    let log = dir.path.join("stderr.log");
    let mut child = run_in(&dir)
        .arg("--events")
        .arg(&events)
        .env("HOMESERVER_SENSOR_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("start sensor");
    wait_for_start(&events);
    let warning = "no Synapse process found, so nothing is watched yet: discovery looks for \
                   processes whose command line runs a `synapse.app.` module (python -m \
                   synapse.app.homeserver, synapse.app.generic_worker, ...) and looks again \
                   every 500 ms (discovery.rescan_ms); give --pid or --cgroup to watch other \
                   processes";
    let text = std::fs::read_to_string(&log).unwrap();
    let warned: Vec<&str> = text.lines().filter(|l| l.contains(warning)).collect();
    assert_eq!(warned.len(), 1, "{text}");
    assert!(warned[0].contains(" WARN "), "{text}");

    let cgroup = Cgroup::new("found");
    let worker = FakeSynapse::start("generic_worker", Some(&cgroup));
    let found = format!("discovery found Synapse: watching PIDs [{}]", worker.pid());
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains(&found) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let said: Vec<&str> = text.lines().filter(|l| l.contains(&found)).collect();
    assert_eq!(said.len(), 1, "{found:?} not said once in {text}");
    assert!(said[0].contains(" INFO "), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(warning)).count(),
        1,
        "the warning is not repeated: {text}"
    );
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("wait sensor");
    assert!(status.success(), "{status:?}");
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
    wait_for_records(events, Duration::from_secs(30), |records| {
        records.iter().any(|r| r["phase"] == "start")
    });
}
