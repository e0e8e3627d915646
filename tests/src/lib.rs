//! Fixtures for the privileged integration tests: a cgroup, the test HTTP server, the agent
//! running in-process, and clients that count every byte they send and receive.
//!
//! Everything a fixture starts is stopped on drop (processes by PID, cgroups removed).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use homeserver_sensor::{
    agent::{self, RunOptions, Summary, Targets},
    config::{Config, DEFAULT_KEY_FILE},
    discover,
    output::Sink,
};
use serde_json::Value;

/// Fails the test early, with a clear message, when not run as root.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the privileged tests load eBPF programs: run them as root with `cargo xtask test`"
    );
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A cgroup v2 directory created for one test and removed at the end.
pub struct Cgroup {
    pub mount: PathBuf,
    /// Relative to the mount, with a leading slash.
    pub rel: String,
    pub abs: PathBuf,
}

impl Cgroup {
    pub fn new(name: &str) -> Self {
        let mount = discover::cgroup2_mount(Path::new("/proc")).expect("cgroup v2 mount");
        let rel = format!(
            "/hs-test-{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let abs = mount.join(rel.trim_start_matches('/'));
        std::fs::create_dir(&abs).unwrap_or_else(|e| panic!("mkdir {}: {e}", abs.display()));
        Self { mount, rel, abs }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes must have left (been killed) before the directory can go.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.abs).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove cgroup {}", self.abs.display());
    }
}

/// The path of a binary built next to the test executable (the test server).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Test executables live in `target/<profile>/deps`, binaries in `target/<profile>`.
    let dir = exe.parent().expect("exe dir");
    let candidates = [dir.join(name), dir.parent().unwrap_or(dir).join(name)];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} not built next to {}: run the tests with `cargo xtask test`",
                exe.display()
            )
        })
}

/// A process started by a test, killed by PID on drop.
pub struct Process {
    pub child: Child,
}

impl Process {
    /// Starts `cmd`, first moving the new process into `cgroup` if given (before it creates
    /// any socket: sockets keep the cgroup they were created in).
    pub fn spawn(mut cmd: Command, cgroup: Option<&Cgroup>) -> Self {
        if let Some(cg) = cgroup {
            use std::os::unix::ffi::OsStrExt;
            let procs = std::ffi::CString::new(cg.abs.join("cgroup.procs").as_os_str().as_bytes())
                .expect("cgroup path without NUL");
            // SAFETY: only async-signal-safe calls between fork and exec (open, write,
            // close), with the path allocated before the fork. Writing "0" moves the
            // writing process itself.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test process");
        Self { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test HTTP server (`test-server`), listening on the given addresses.
pub struct Server {
    pub process: Process,
    pub addrs: Vec<SocketAddr>,
}

impl Server {
    pub fn start(listen: &[&str], cgroup: Option<&Cgroup>) -> Self {
        let mut cmd = Command::new(sibling_binary("test-server"));
        cmd.args(listen);
        // glibc reads one byte of /proc/sys/vm/overcommit_memory whenever a thread gets a
        // new malloc arena: a real file read that the syscall accounting rightly counts.
        // One arena keeps the server's file reads exactly the files it serves.
        cmd.env("MALLOC_ARENA_MAX", "1");
        let mut process = Process::spawn(cmd, cgroup);
        let stdout = process.child.stdout.take().expect("server stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addrs = (0..listen.len())
            .map(|_| {
                let line = lines.next().expect("server line").expect("server output");
                line.strip_prefix("listening ")
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected server output {line:?}"))
            })
            .collect();
        Self { process, addrs }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// The agent, running in-process on its own thread until `stop`.
pub struct Agent {
    events: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<Summary, String>>>,
    _dir: TempDir,
}

impl Agent {
    /// Starts the agent and waits for its start record.
    pub fn start(targets: Targets, config: Config) -> Self {
        let dir = TempDir::new("agent");
        let events = dir.path.join("events.jsonl");
        let mut config = config;
        if config.attribution.key_file == Path::new(DEFAULT_KEY_FILE) {
            // Tests never touch the installation's key.
            config.attribution.key_file = dir.path.join("fingerprint.key");
        }
        let opts = RunOptions {
            config,
            targets,
            events: Sink::File(events.clone()),
            duration: None,
            proc_root: PathBuf::from("/proc"),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(agent::run(opts, async {
                let _ = rx.await;
            }))
            .map_err(|e| format!("{e:#}"))
        });
        let mut agent = Self {
            events,
            stop: Some(tx),
            thread: Some(thread),
            _dir: dir,
        };
        agent.wait_for(Duration::from_secs(30), |records| {
            records
                .iter()
                .any(|r| r["kind"] == "sensor" && r["phase"] == "start")
        });
        agent
    }

    /// Starts the agent watching one process.
    pub fn for_pid(pid: u32, config: Config) -> Self {
        Self::start(
            Targets {
                pids: vec![pid],
                cgroups: vec![],
            },
            config,
        )
    }

    /// Starts the agent watching one cgroup.
    pub fn for_cgroup(cgroup: &Cgroup, config: Config) -> Self {
        Self::start(
            Targets {
                pids: vec![],
                cgroups: vec![cgroup.rel.clone()],
            },
            config,
        )
    }

    /// The records written so far.
    pub fn records(&self) -> Vec<Value> {
        read_records(&self.events)
    }

    /// Polls the records until `pred` holds; panics with the records after `timeout`, or if
    /// the agent stopped with an error.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let records = self.records();
            if pred(&records) {
                return records;
            }
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = self
                    .thread
                    .take()
                    .expect("thread")
                    .join()
                    .expect("agent thread");
                panic!("the agent stopped: {result:?}; records: {records:#?}");
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?}; records: {records:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the agent (like SIGTERM) and returns every record it wrote.
    pub fn stop(mut self) -> Vec<Value> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let result = self
            .thread
            .take()
            .expect("thread")
            .join()
            .expect("agent thread");
        if let Err(e) = result {
            panic!("the agent failed: {e}");
        }
        self.records()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the agent with `targets` and expects it to fail at start; returns its error.
pub fn agent_start_error(targets: Targets) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new("err");
    let mut config = Config::default();
    config.attribution.key_file = dir.path.join("fingerprint.key");
    let opts = RunOptions {
        config,
        targets,
        events: Sink::File(PathBuf::from("/dev/null")),
        duration: Some(Duration::from_secs(2)),
        proc_root: PathBuf::from("/proc"),
    };
    match rt.block_on(agent::run(opts, std::future::pending())) {
        Ok(s) => panic!("the agent started, expected an error (summary {s:?})"),
        Err(e) => e.to_string(),
    }
}

pub fn read_records(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The connection records whose peer is this client address.
pub fn connection_of(records: &[Value], client: SocketAddr) -> Vec<&Value> {
    let peer = SocketAddr::new(client.ip().to_canonical(), client.port()).to_string();
    records
        .iter()
        .filter(|r| r["kind"] == "connection" && r["peer"] == peer.as_str())
        .collect()
}

/// A client connection that counts every byte it sends and receives.
pub struct Client {
    pub stream: TcpStream,
    pub sent: u64,
    pub received: u64,
    pub responses: u64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Self {
            stream,
            sent: 0,
            received: 0,
            responses: 0,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
        self.sent += bytes.len() as u64;
    }

    /// Sends one request and reads its whole response; returns the body length.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8], close: bool) -> u64 {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        self.send(head.as_bytes());
        self.send(body);
        self.read_response()
    }

    /// Reads one response (headers, then `Content-Length` bytes of body).
    pub fn read_response(&mut self) -> u64 {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.stream.read(&mut byte).expect("read head");
            assert_eq!(n, 1, "connection closed inside a response head");
            head.push(byte[0]);
        }
        self.received += head.len() as u64;
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        let mut remaining = len;
        let mut buf = vec![0u8; 256 * 1024];
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            let n = self.stream.read(&mut buf[..want]).expect("read body");
            assert!(n > 0, "connection closed inside a body");
            remaining -= n as u64;
        }
        self.received += len;
        self.responses += 1;
        len
    }

    /// Half-closes (no more sends), then reads until the server closes.
    pub fn finish_reading(&mut self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => self.received += n as u64,
                Err(e) => panic!("read after shutdown: {e}"),
            }
        }
    }
}

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "hs-test-{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Waits until the kernel has finished closing the connections the test closed (their
/// TCP_CLOSE state change happens on the peer's last ACK, after the client returns).
pub fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Number of BPF programs attached to a cgroup (ingress, egress and sock_ops), from the
/// kernel's `BPF_PROG_QUERY` (include/uapi/linux/bpf.h, `union bpf_attr` query layout).
pub fn cgroup_program_count(cgroup: &std::fs::File) -> u32 {
    use std::os::fd::AsRawFd;
    const BPF_PROG_QUERY: libc::c_long = 16;
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        rest: [u64; 4],
    }
    // BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS, BPF_CGROUP_SOCK_OPS.
    [0u32, 1, 3]
        .iter()
        .map(|&attach_type| {
            let mut q = Query {
                target_fd: cgroup.as_raw_fd() as u32,
                attach_type,
                ..Query::default()
            };
            // SAFETY: a valid bpf_attr prefix for BPF_PROG_QUERY, with its size.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_PROG_QUERY,
                    &mut q as *mut Query,
                    std::mem::size_of::<Query>() as u32,
                )
            };
            assert_eq!(r, 0, "BPF_PROG_QUERY: {}", std::io::Error::last_os_error());
            q.prog_cnt
        })
        .sum()
}

/// A stand-in Synapse: `python3 -m synapse.app.<role> -c CONFIG`, from a module written to a
/// temporary directory, serving `GET /bytes/N` over HTTP/1.1 keep-alive. The agent must find
/// it by its command line, exactly as it finds the real one.
pub struct FakeSynapse {
    pub process: Process,
    pub addr: SocketAddr,
    _dir: TempDir,
}

const FAKE_SYNAPSE: &str = r#"
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        n = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/bytes/") else 2
        body = b"x" * n
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("listening 127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
"#;

impl FakeSynapse {
    pub fn start(role: &str, cgroup: Option<&Cgroup>) -> Self {
        let dir = TempDir::new("synapse");
        let app = dir.path.join("synapse/app");
        std::fs::create_dir_all(&app).expect("module dir");
        std::fs::write(dir.path.join("synapse/__init__.py"), "").expect("write module");
        std::fs::write(app.join("__init__.py"), "").expect("write module");
        std::fs::write(app.join(format!("{role}.py")), FAKE_SYNAPSE).expect("write module");
        let config = dir.path.join("homeserver.yaml");
        std::fs::write(&config, "server_name: test.example\n").expect("write config");
        let mut cmd = Command::new("python3");
        cmd.arg("-m")
            .arg(format!("synapse.app.{role}"))
            .arg("-c")
            .arg(&config)
            .current_dir(&dir.path)
            .env("PYTHONPATH", &dir.path);
        let mut process = Process::spawn(cmd, cgroup);
        let stdout = process.child.stdout.take().expect("stdout");
        let line = BufReader::new(stdout)
            .lines()
            .next()
            .expect("fake synapse output")
            .expect("read fake synapse output");
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected fake synapse output {line:?}"));
        Self {
            process,
            addr,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Debian's nginx in front of an upstream, with the reverse-proxy configuration of Synapse's
/// documentation (docs/reverse_proxy.md): `proxy_set_header X-Forwarded-For $remote_addr`,
/// `X-Forwarded-Proto`, `Host`, `proxy_http_version 1.1`, no upstream keepalive (so every
/// request reaches the upstream on a new connection with `Connection: close`).
pub struct Nginx {
    pub process: Process,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Nginx {
    pub fn start(upstream: SocketAddr) -> Self {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("nginx is not installed: apt-get install nginx-light (.ci/run does)");
        let dir = TempDir::new("nginx");
        // A free port: bind, note it, release it for nginx.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let d = dir.path.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        server_name matrix.test.example;
        location ~ ^(/_matrix|/_synapse/client|/_synapse/admin) {{
            proxy_pass http://{upstream};
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Host $host:$server_port;
            client_max_body_size 50M;
            proxy_http_version 1.1;
        }}
    }}
}}
"#
        );
        let conf_path = dir.path.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut cmd = Command::new(nginx);
        cmd.arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path.join("error.log"));
        let process = Process::spawn(cmd, None);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        for _ in 0..200 {
            if TcpStream::connect(addr).is_ok() {
                return Self {
                    process,
                    addr,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not start on {addr}");
    }
}

impl Client {
    /// Connects from a chosen local address (any 127.0.0.0/8 address is on loopback), so a
    /// test can tell clients apart by address.
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Self {
        let socket = match from {
            std::net::IpAddr::V4(_) => libc::AF_INET,
            std::net::IpAddr::V6(_) => libc::AF_INET6,
        };
        // std has no bind-before-connect; a raw socket, then into a TcpStream.
        // SAFETY: plain socket calls on a descriptor we own.
        let fd = unsafe { libc::socket(socket, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let bind = SocketAddr::new(from, 0);
        let (sa, len) = sockaddr(&bind);
        // SAFETY: `sa` is a valid sockaddr of `len` bytes.
        let r = unsafe { libc::bind(fd, (&raw const sa).cast(), len) };
        assert_eq!(r, 0, "bind {bind}: {}", std::io::Error::last_os_error());
        let (sa, len) = sockaddr(&addr);
        // SAFETY: as above.
        let r = unsafe { libc::connect(fd, (&raw const sa).cast(), len) };
        assert_eq!(r, 0, "connect {addr}: {}", std::io::Error::last_os_error());
        use std::os::fd::FromRawFd;
        // SAFETY: `fd` is a connected TCP socket that nothing else owns.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        Self {
            stream,
            sent: 0,
            received: 0,
            responses: 0,
        }
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// The exact response of `test-server` for a body of `n` bytes.
pub fn test_server_response_len(n: u64, close: bool) -> u64 {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Type: application/octet-stream\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    head.len() as u64 + n
}

/// A Synapse access token for `localpart`, built as Synapse's
/// `AuthHandler.generate_access_token` does: `syt_<unpadded standard base64 of the
/// localpart>_<random letters>_<base62 of the CRC-32 of what precedes, 6 digits>`.
pub fn synapse_token(localpart: &str, random: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const B62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut b64 = String::new();
    for chunk in localpart.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    let base = format!("syt_{b64}_{random}");
    // zlib's CRC-32 (reflected, polynomial 0xEDB88320).
    let mut crc = !0u32;
    for b in base.bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut crc = !crc;
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = B62[(crc % 62) as usize];
        crc /= 62;
    }
    format!("{base}_{}", String::from_utf8_lossy(&digits))
}
