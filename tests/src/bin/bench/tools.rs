//! The outside tools the benchmark drives: Debian's `wrk` (the load generator) and
//! `bpftrace` (the peer it is compared with), installed with apt-get when missing.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Installs the Debian `package` that provides `program` when it is not on the path, with
/// a line saying so; panics when that fails (the workload cannot run without it).
pub fn ensure_installed(program: &str, package: &str) {
    if on_path(program) {
        return;
    }
    eprintln!("bench: {program} is missing: installing it (apt-get install -y {package})...");
    let install = || {
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        eprintln!("bench: refreshing the package lists (apt-get update) and trying again...");
        let _ = Command::new("apt-get").args(["-q", "update"]).status();
        assert!(
            install(),
            "cannot install {package} with apt-get: install it yourself (it provides {program})"
        );
    }
    assert!(
        on_path(program),
        "{package} installed but {program} is not on the path"
    );
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// What `wrk` reports for one run.
#[derive(Clone, Debug)]
pub struct WrkRun {
    pub requests: u64,
    pub requests_per_s: f64,
}

/// Runs `wrk` (one thread, `connections` connections) for `secs` seconds against `url` with
/// extra request headers; panics when a request failed or was answered with an error: a
/// workload that does not run must not give a figure.
pub fn wrk(url: &str, connections: u32, secs: u32, headers: &[&str]) -> WrkRun {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{secs}s"),
        "--timeout",
        "10s",
    ]);
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    cmd.arg(url);
    let out = cmd.output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk {url} failed: {text}");
    let parse = |prefix: &str| -> Option<f64> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("wrk printed no request count: {text}"));
    let rate = parse("Requests/sec:").unwrap_or_else(|| panic!("wrk printed no rate: {text}"));
    let errors = parse("Non-2xx or 3xx responses:").unwrap_or(0.0);
    assert!(
        requests > 0 && errors == 0.0,
        "wrk {url}: {requests} requests, {errors} answered with an error: {text}"
    );
    // Socket errors (connect, read, write, timeout) mean the workload did not run as meant.
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors:")) {
        let total: u64 = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u64>().ok())
            .sum();
        assert!(
            total * 1000 <= requests,
            "wrk {url}: more than 0.1 % socket errors: {text}"
        );
    }
    WrkRun {
        requests,
        requests_per_s: rate,
    }
}

/// The peer: a bpftrace script doing the same per-connection counting as our cgroup
/// programs (bytes and calls per socket, each direction, for the watched cgroup's
/// processes) on the socket tracepoints, deleting a socket's entries when it closes. It
/// runs until dropped (SIGINT, then its maps are printed and discarded).
pub struct Bpftrace {
    child: Child,
}

/// The script; `CGROUP` is replaced by the watched cgroup's absolute path.
const SCRIPT: &str = r#"
BEGIN { printf("ready\n"); }
tracepoint:sock:sock_send_length /cgroup == cgroupid("CGROUP")/ {
    if (args->ret > 0) { @bytes_out[args->sk] = sum(args->ret); }
    @sends[args->sk] = count();
}
tracepoint:sock:sock_recv_length /cgroup == cgroupid("CGROUP")/ {
    if (args->ret > 0) { @bytes_in[args->sk] = sum(args->ret); }
    @recvs[args->sk] = count();
}
tracepoint:sock:inet_sock_set_state /args->newstate == 7/ {
    delete(@bytes_out[args->skaddr]);
    delete(@bytes_in[args->skaddr]);
    delete(@sends[args->skaddr]);
    delete(@recvs[args->skaddr]);
}
"#;

impl Bpftrace {
    /// Starts the script on `cgroup` (an absolute cgroup v2 path) and waits until its
    /// probes are attached (its `BEGIN` probe runs after them).
    pub fn start(cgroup: &Path) -> Self {
        mount_tracefs();
        let script = SCRIPT.replace("CGROUP", &cgroup.display().to_string());
        let mut child = Command::new("bpftrace")
            .arg("-e")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bpftrace");
        let stdout = child.stdout.take().expect("bpftrace stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.trim() == "ready" => break,
                Some(Ok(_)) => {}
                _ => {
                    let status = child.wait().expect("bpftrace");
                    panic!("bpftrace stopped before attaching its probes ({status})");
                }
            }
        }
        // Drain what it prints (its maps, at exit) so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self { child }
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// bpftrace reads tracepoint formats from tracefs, which this machine does not mount at
/// boot.
fn mount_tracefs() {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        return;
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "tracefs"])
        .arg(tracing)
        .status()
        .expect("run mount");
    assert!(
        status.success() && tracing.join("events").exists(),
        "bpftrace needs tracefs: mount -t tracefs tracefs /sys/kernel/tracing failed"
    );
}
