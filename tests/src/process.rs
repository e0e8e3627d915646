//! Processes a test starts: the test HTTP server, a stand-in Synapse, nginx. Each is
//! killed by PID on drop.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{Cgroup, TempDir};

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
        Self::serving(256, None, |port| {
            format!(
                r#"listen 127.0.0.1:{port};
        server_name matrix.test.example;
        location ~ ^(/_matrix|/_synapse/client|/_synapse/admin) {{
            proxy_pass http://{upstream};
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Host $host:$server_port;
            client_max_body_size 50M;
            proxy_http_version 1.1;
        }}"#
            )
        })
    }

    /// One nginx process (no master) with one `server` block, whose body `server` writes
    /// for the free loopback port it is given; in `cgroup` if one is given. Logs and
    /// temporary files go to a directory of its own.
    pub fn serving(
        worker_connections: u32,
        cgroup: Option<&Cgroup>,
        server: impl FnOnce(u16) -> String,
    ) -> Self {
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
        let server = server(port);
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        {server}
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
        let process = Process::spawn(cmd, cgroup);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
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
