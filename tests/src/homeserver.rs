//! A real Synapse homeserver behind Debian's nginx, seeded with users, public and private
//! rooms, message history and media, for the end-to-end tests.
//!
//! What is built once and cached under `$XDG_CACHE_HOME/homeserver-sensor` (default
//! `~/.cache/homeserver-sensor`):
//! 1. `synapse-<version>/`: a Python venv with `matrix-synapse` pinned to [`SYNAPSE_VERSION`]
//!    (about 30 s to build). Built in a temporary directory and renamed into place, so a
//!    half-built venv is never used; rebuilt when it no longer imports.
//! 2. `seeded-<version>-<hash>/`: the database, media store, signing key and `seed.json` of a
//!    homeserver seeded by `tests/homeserver/seed.py` (about 25 s). The hash covers the seed
//!    script, the config templates and the constants below, so editing any of them reseeds.
//!    Seeding runs its own Synapse twice: first with `enable_authenticated_media: false` (the
//!    "legacy" media uploaded then stay downloadable without a token), then with the default
//!    `true`.
//!
//! Each [`Homeserver::start`] copies the seeded state into a fresh directory (on `/dev/shm`
//! when it exists: SQLite's fsyncs on a disk double the time of every write), starts
//! `<venv>/bin/python -m synapse.app.homeserver -c <config>` (in the test's cgroup if given)
//! and nginx in front of it, and stops both by PID on drop. Seeding is deterministic except
//! for what Synapse generates (ids, tokens), which the tests read from [`Seed`].

use std::{
    hash::{Hash, Hasher},
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{Cgroup, Client, Nginx, Process, SEQ, TempDir};

/// The Synapse release the tests run (the newest 1.163.x on PyPI when this was written).
pub const SYNAPSE_VERSION: &str = "1.163.2";
/// The homeserver's `server_name`: user ids are `@alice:test.example`.
pub const SERVER_NAME: &str = "test.example";
/// `registration_shared_secret` of the test config (the admin registration API).
pub const REGISTRATION_SHARED_SECRET: &str = "homeserver-sensor-test-registration-secret";
/// The `Host` header the HTTP helpers send (nginx's `server_name`).
const HOST: &str = "matrix.test.example";

const HOMESERVER_YAML: &str = include_str!("../homeserver/homeserver.yaml");
const LOG_YAML: &str = include_str!("../homeserver/log.yaml");
const SEED_PY: &str = include_str!("../homeserver/seed.py");
/// Bump to invalidate every seeded cache when the layout of the cache itself changes.
const SEED_CACHE_FORMAT: u32 = 1;

/// How long Synapse may take to answer `/_matrix/client/versions` after it was started (the
/// first start after a venv build also compiles the venv's bytecode).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped Synapse may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of [`Homeserver::start`].
#[derive(Default, Clone, Copy)]
pub struct HomeserverOptions<'a> {
    /// Start Synapse in this cgroup (nginx and the seeding servers stay outside it).
    pub cgroup: Option<&'a Cgroup>,
}

/// A running, seeded Synapse with nginx in front of it. Both are killed by PID on drop; the
/// data directory is removed (its logs are kept and their path printed if the test panics).
pub struct Homeserver {
    /// Synapse's own HTTP listener (plain HTTP on 127.0.0.1, `x_forwarded: true`).
    pub synapse_addr: SocketAddr,
    /// nginx, proxying `/_matrix`, `/_synapse/client` and `/_synapse/admin` to Synapse.
    pub nginx_addr: SocketAddr,
    pub server_name: &'static str,
    /// The command line Synapse was started with: `<venv>/bin/python -m
    /// synapse.app.homeserver -c <config>`.
    pub synapse_cmdline: Vec<String>,
    /// The data directory: config, database, media store, logs.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// Synapse's main log.
    pub log_path: PathBuf,
    /// Synapse's access log (the `synapse.access.http.<port>` loggers only).
    pub access_log_path: PathBuf,
    /// `media_store_path`: files live at `local_content/AB/CD/rest-of-media-id`.
    pub media_store: PathBuf,
    /// Users, rooms and media the seeding created.
    pub seed: Seed,
    started_pids: Vec<u32>,
    // Dropped in this order: nginx, Synapse, then the directory.
    nginx: Nginx,
    synapse: Process,
    _data: DataDir,
}

impl Homeserver {
    /// Builds (or reuses) the venv and the seeded state, then starts Synapse and nginx.
    pub fn start(opts: HomeserverOptions<'_>) -> Self {
        let venv = synapse_venv();
        let (seeded, mut started_pids) = seeded_state(&venv);
        let data = DataDir::new("homeserver");
        let dir = data.path().to_path_buf();
        for entry in read_dir(&seeded) {
            let name = entry.file_name();
            if name != "seed.json" {
                copy_recursively(&entry.path(), &dir.join(&name));
            }
        }
        let seed_json = std::fs::read_to_string(seeded.join("seed.json"))
            .unwrap_or_else(|e| panic!("read {}/seed.json: {e}", seeded.display()));
        let seed: Seed = serde_json::from_str(&seed_json)
            .unwrap_or_else(|e| panic!("parse {}/seed.json: {e}", seeded.display()));

        let port = free_port();
        let config_path = write_config(&dir, port, true);
        let (mut synapse, synapse_cmdline) = spawn_synapse(&venv, &dir, &config_path, opts.cgroup);
        started_pids.push(synapse.pid());
        let synapse_addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_ready(&mut synapse, synapse_addr, &dir);
        let nginx = Nginx::start(synapse_addr);
        started_pids.push(nginx.process.pid());
        Self {
            synapse_addr,
            nginx_addr: nginx.addr,
            server_name: SERVER_NAME,
            synapse_cmdline,
            config_path,
            log_path: dir.join("homeserver.log"),
            access_log_path: dir.join("access.log"),
            media_store: dir.join("media"),
            dir,
            seed,
            started_pids,
            nginx,
            synapse,
            _data: data,
        }
    }

    pub fn synapse_pid(&self) -> u32 {
        self.synapse.pid()
    }

    pub fn nginx_pid(&self) -> u32 {
        self.nginx.process.pid()
    }

    /// Every process this fixture started, including the seeding servers and scripts when
    /// this call seeded (those have exited already): none of them is alive after drop.
    pub fn started_pids(&self) -> Vec<u32> {
        self.started_pids.clone()
    }

    /// A request straight to Synapse, from 127.0.0.1.
    pub fn synapse_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> HttpResponse {
        http_request(self.synapse_addr, None, method, path, token, body)
    }

    /// A request through nginx, from the loopback address `from` (nginx passes it to Synapse
    /// in `X-Forwarded-For`).
    pub fn nginx_request(
        &self,
        from: IpAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> HttpResponse {
        http_request(self.nginx_addr, Some(from), method, path, token, body)
    }

    /// Every request line of Synapse's access log so far.
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        let text = std::fs::read_to_string(&self.access_log_path).unwrap_or_else(|e| {
            panic!(
                "read the access log {}: {e}",
                self.access_log_path.display()
            )
        });
        text.lines().filter_map(parse_access_log_line).collect()
    }

    /// The access log entries that match `pred`, waiting up to 10 s for at least one
    /// (Synapse writes a line once it has finished sending the response).
    pub fn wait_for_access_log(
        &self,
        pred: impl Fn(&AccessLogEntry) -> bool,
    ) -> Vec<AccessLogEntry> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<_> = self.access_log().into_iter().filter(&pred).collect();
            if !found.is_empty() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no matching line in the access log {} after 10 s",
                self.access_log_path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Homeserver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = keep_logs(&self.dir);
            eprintln!(
                "homeserver: logs of the failed test kept in {}",
                kept.display()
            );
        }
    }
}

/// What the seed script made (`tests/homeserver/seed.py` prints it as JSON).
#[derive(Debug, Clone, Deserialize)]
pub struct Seed {
    pub server_name: String,
    pub users: Vec<User>,
    pub rooms: Vec<Room>,
    pub media: Vec<Media>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A server admin (registered with `admin: true`).
    Admin,
    /// The account a scraping test drives; in no room.
    Scraper,
    /// alice, bob and carol: ordinary users a test drives as benign clients.
    Benign,
    /// Other room members.
    Member,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub localpart: String,
    /// `@localpart:test.example`.
    pub user_id: String,
    pub password: String,
    /// From a password login (device `device_id`).
    pub access_token: String,
    pub device_id: String,
    pub role: Role,
    pub admin: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Room {
    pub room_id: String,
    /// `#alias:test.example` for public rooms; the private room has none.
    pub alias: Option<String>,
    pub name: String,
    /// Public (joinable by anyone, published in the room directory) or invite-only.
    pub is_public: bool,
    /// `shared` or `world_readable`.
    pub history_visibility: String,
    pub creator: String,
    /// User ids of the joined members, creator first.
    pub members: Vec<String>,
    /// Number of `m.room.message` events (text, m.image and m.file).
    pub messages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// A valid PNG (Synapse generates thumbnails), posted as `m.image`.
    Image,
    /// Random bytes, posted as `m.file`.
    File,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Media {
    /// The upload's file name.
    pub name: String,
    /// `mxc://test.example/<media_id>`.
    pub mxc: String,
    pub media_id: String,
    /// Exact size in bytes.
    pub size: u64,
    pub content_type: String,
    pub kind: MediaKind,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Uploaded while `enable_authenticated_media` was false: downloadable without a token
    /// on `/_matrix/media/v3/download`.
    pub legacy: bool,
    /// User id of the uploader.
    pub uploader: String,
    /// The room it was posted in (as `m.image`/`m.file`), if any, and the event.
    pub room_id: Option<String>,
    pub event_id: Option<String>,
}

impl Seed {
    /// The user with this localpart (panics if there is none).
    pub fn user(&self, localpart: &str) -> &User {
        self.users
            .iter()
            .find(|u| u.localpart == localpart)
            .unwrap_or_else(|| panic!("no seeded user {localpart:?}"))
    }

    pub fn users_with(&self, role: Role) -> Vec<&User> {
        self.users.iter().filter(|u| u.role == role).collect()
    }

    /// The room with this alias localpart (`lobby`), full alias, room id or name.
    pub fn room(&self, key: &str) -> &Room {
        let alias = format!("#{key}:{}", self.server_name);
        self.rooms
            .iter()
            .find(|r| {
                r.alias.as_deref() == Some(alias.as_str())
                    || r.alias.as_deref() == Some(key)
                    || r.room_id == key
                    || r.name == key
            })
            .unwrap_or_else(|| panic!("no seeded room {key:?}"))
    }

    pub fn public_rooms(&self) -> Vec<&Room> {
        self.rooms.iter().filter(|r| r.is_public).collect()
    }

    pub fn private_rooms(&self) -> Vec<&Room> {
        self.rooms.iter().filter(|r| !r.is_public).collect()
    }

    /// The media with this upload file name (panics if there is none).
    pub fn media(&self, name: &str) -> &Media {
        self.media
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no seeded media {name:?}"))
    }
}

impl Media {
    /// The authenticated download path (`/_matrix/client/v1/media/download/...`).
    pub fn download_path(&self) -> String {
        format!(
            "/_matrix/client/v1/media/download/{SERVER_NAME}/{}",
            self.media_id
        )
    }

    /// The legacy, unauthenticated download path (`/_matrix/media/v3/download/...`).
    pub fn legacy_download_path(&self) -> String {
        format!("/_matrix/media/v3/download/{SERVER_NAME}/{}", self.media_id)
    }
}

// ---------------------------------------------------------------------------------------
// Synapse's access log.

/// One line of Synapse's access log, as written by `SynapseRequest._finished_processing`
/// (synapse/http/site.py, 1.163.2):
///
/// ```text
/// "%s - %s - {%s} Processed request: %.3fsec/%.3fsec ru=(%.3fsec, %.3fsec) db=(%.3fsec/%.3fsec/%d) %sB %s \"%s %s %s\" \"%s\" [%d dbevts]"
/// ```
///
/// with client IP, site tag, requester, processing time, response send time, CPU user/system
/// time, DB scheduling/transaction time and count, bytes sent, status (`!` appended when the
/// response was not finished), method, redacted URI, protocol, user agent, events fetched.
/// Synapse's `precise` formatter (its generated log config, and ours) puts `%(asctime)s -
/// %(name)s - %(lineno)d - %(levelname)s - %(request)s - ` in front.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogEntry {
    /// When the line was logged (the formatter's `asctime`, local time), if present.
    pub logged_at: Option<time::PrimitiveDateTime>,
    /// Synapse's request id (`GET-42`), if present.
    pub request_id: Option<String>,
    /// The client's address: the peer, or the leftmost `X-Forwarded-For` entry when the
    /// listener has `x_forwarded: true`.
    pub client_ip: String,
    /// The listener's tag, its port when it has none.
    pub site_tag: String,
    /// The user the request acted as, None when unauthenticated.
    pub requester: Option<String>,
    /// The user who authenticated, when it differs from `requester` (an admin puppeting).
    pub authenticated_entity: Option<String>,
    /// Seconds from receiving the request to the handler finishing.
    pub processing_secs: f64,
    /// Seconds from the handler finishing to the response being sent (may be negative).
    pub response_send_secs: f64,
    /// Response body bytes written (Twisted's `sentLength`: headers not included).
    pub response_bytes: u64,
    pub status: u16,
    /// False when the connection was lost before the whole response was sent.
    pub finished: bool,
    pub method: String,
    /// Path and query as Synapse logs them: `access_token=<redacted>`.
    pub path: String,
    pub protocol: String,
    pub user_agent: String,
}

/// Parses one access log line; None for any other line.
pub fn parse_access_log_line(line: &str) -> Option<AccessLogEntry> {
    let (left, right) = line.split_once(" Processed request: ")?;
    // left: [asctime - logger - lineno - level - request_id - ]client_ip - site_tag - {requester}
    let (left, requester) = left.rsplit_once(" - {")?;
    let requester = requester.strip_suffix('}')?;
    let (left, site_tag) = left.rsplit_once(" - ")?;
    let (prefix, client_ip) = match left.rsplit_once(" - ") {
        Some((prefix, ip)) => (Some(prefix), ip),
        None => (None, left),
    };
    let prefix: Vec<&str> = prefix.map(|p| p.split(" - ").collect()).unwrap_or_default();
    let (logged_at, request_id) = if prefix.len() == 5 {
        let format = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second],[subsecond digits:3]"
        );
        (
            time::PrimitiveDateTime::parse(prefix[0], format).ok(),
            Some(prefix[4].to_string()),
        )
    } else {
        (None, None)
    };
    let (requester, authenticated_entity) = match requester {
        "None" => (None, None),
        r => match r.split_once('|') {
            // Logged as "{authenticated_entity}|{requester}".
            Some((auth, req)) => (Some(req.to_string()), Some(auth.to_string())),
            None => (Some(r.to_string()), None),
        },
    };

    // right: P.PPPsec/S.SSSsec ru=(...) db=(...) NB CODE "METHOD URI PROTO" "UA" [N dbevts]
    let (times, rest) = right.split_once(" ru=(")?;
    let (processing, send) = times.split_once('/')?;
    let processing_secs = processing.strip_suffix("sec")?.parse().ok()?;
    let response_send_secs = send.strip_suffix("sec")?.parse().ok()?;
    let (_, rest) = rest.split_once(" db=(")?;
    let (_, rest) = rest.split_once(") ")?;
    let (bytes, rest) = rest.split_once(' ')?;
    let response_bytes = bytes.strip_suffix('B')?.parse().ok()?;
    let (code, rest) = rest.split_once(' ')?;
    let (code, finished) = match code.strip_suffix('!') {
        Some(c) => (c, false),
        None => (code, true),
    };
    let status = code.parse().ok()?;
    let rest = rest.strip_prefix('"')?;
    // The request line has no spaces but the two separating its parts, so the first `" "`
    // ends it; the user agent may contain anything.
    let (request, rest) = rest.split_once("\" \"")?;
    let (user_agent, _) = rest.rsplit_once("\" [")?;
    let (method, request) = request.split_once(' ')?;
    let (path, protocol) = request.rsplit_once(' ')?;
    Some(AccessLogEntry {
        logged_at,
        request_id,
        client_ip: client_ip.to_string(),
        site_tag: site_tag.to_string(),
        requester,
        authenticated_entity,
        processing_secs,
        response_send_secs,
        response_bytes,
        status,
        finished,
        method: method.to_string(),
        path: path.to_string(),
        protocol: protocol.to_string(),
        user_agent: user_agent.to_string(),
    })
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client (one request per connection).

/// A whole HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request with `Connection: close` (from the loopback address `from` if given),
/// with `Authorization: Bearer <token>` if given and a JSON body if not empty, and reads the
/// whole response. Panics on any network error.
pub fn http_request(
    addr: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let stream = match from {
        Some(ip) => Client::connect_from(ip, addr).stream,
        None => TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}")),
    };
    try_http_request(stream, method, path, token, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

fn try_http_request(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response head in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("truncated chunk size")?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]);
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break body;
            }
            if rest.len() < size + 2 {
                return Err("truncated chunk".into());
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    } else {
        let body = rest.to_vec();
        let declared = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        if let Some(len) = declared
            && len != body.len()
        {
            return Err(format!(
                "Content-Length {len} but {} body bytes",
                body.len()
            ));
        }
        body
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------
// The venv.

/// `$XDG_CACHE_HOME/homeserver-sensor`, or `~/.cache/homeserver-sensor`.
fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("neither XDG_CACHE_HOME nor HOME is set: no place for the Synapse cache");
    let root = base.join("homeserver-sensor");
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
    root
}

/// True if the venv imports Synapse at the pinned version.
fn venv_works(venv: &Path) -> bool {
    let python = venv.join("bin/python");
    python.exists()
        && python_command(&python)
            .args([
                "-c",
                &format!(
                    "import sys, synapse; sys.exit(synapse.__version__ != {SYNAPSE_VERSION:?})"
                ),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A command running `python` with no inherited Python environment variables (a PYTHONPATH
/// or PYTHONHOME from the host must not leak into the venv).
fn python_command(python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("VIRTUAL_ENV");
    cmd
}

/// The venv with `matrix-synapse==SYNAPSE_VERSION`, built on first use (about 30 s).
pub fn synapse_venv() -> PathBuf {
    let root = cache_root();
    let venv = root.join(format!("synapse-{SYNAPSE_VERSION}"));
    if venv_works(&venv) {
        return venv;
    }
    eprintln!(
        "homeserver: building a Python venv with matrix-synapse=={SYNAPSE_VERSION} in {} \
         (about 30 s, once)",
        venv.display()
    );
    let tmp = root.join(format!(
        ".synapse-{SYNAPSE_VERSION}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    // Debian's python3 (what CI installs) rather than whatever python3 is first on PATH.
    let base = ["/usr/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("python3"));
    run_checked(
        python_command(&base).arg("-m").arg("venv").arg(&tmp),
        &format!(
            "{} -m venv {} (on Debian: apt-get install python3-venv)",
            base.display(),
            tmp.display()
        ),
    );
    run_checked(
        python_command(&tmp.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            &format!("matrix-synapse=={SYNAPSE_VERSION}"),
        ]),
        &format!(
            "pip install matrix-synapse=={SYNAPSE_VERSION} into {}",
            tmp.display()
        ),
    );
    assert!(
        venv_works(&tmp),
        "the new venv {} does not import synapse {SYNAPSE_VERSION}",
        tmp.display()
    );
    // A venv that exists but does not import (another Python, a broken copy) is replaced.
    // The venv's own scripts (bin/pip) keep the temporary path in their #! line; we only
    // ever run bin/python, which finds its venv from its own location.
    if venv.exists() && !venv_works(&venv) {
        let _ = std::fs::remove_dir_all(&venv);
    }
    rename_into_place(&tmp, &venv, venv_works);
    venv
}

/// Renames a freshly built `tmp` to `dest`; if another process got there first with a good
/// copy, keeps that one.
fn rename_into_place(tmp: &Path, dest: &Path, good: fn(&Path) -> bool) {
    if let Err(e) = std::fs::rename(tmp, dest) {
        let _ = std::fs::remove_dir_all(tmp);
        assert!(
            good(dest),
            "rename {} to {}: {e}",
            tmp.display(),
            dest.display()
        );
    }
}

fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 30),
        tail(&String::from_utf8_lossy(&out.stderr), 30)
    );
}

// ---------------------------------------------------------------------------------------
// The seeded state.

/// The cache directory of a seeded homeserver, seeding it first if needed. Also returns the
/// PIDs of the processes it started.
fn seeded_state(venv: &Path) -> (PathBuf, Vec<u32>) {
    let mut hasher = std::hash::DefaultHasher::new();
    (
        SEED_CACHE_FORMAT,
        SYNAPSE_VERSION,
        SERVER_NAME,
        REGISTRATION_SHARED_SECRET,
        HOMESERVER_YAML,
        LOG_YAML,
        SEED_PY,
    )
        .hash(&mut hasher);
    let root = cache_root();
    let name = format!("seeded-{SYNAPSE_VERSION}-{:016x}", hasher.finish());
    let cached = root.join(&name);
    if cached.join("seed.json").exists() {
        return (cached, Vec::new());
    }
    eprintln!(
        "homeserver: seeding a test homeserver into {} (about 25 s, once per change of \
         tests/homeserver/)",
        cached.display()
    );
    let started = Instant::now();
    let mut pids = Vec::new();
    let work = DataDir::new("seeding");
    let dir = work.path();
    let script = dir.join("seed.py");
    std::fs::write(&script, SEED_PY).unwrap_or_else(|e| panic!("write {}: {e}", script.display()));
    write_signing_key(dir);
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let base_url = format!("http://{addr}");
    let state = dir.join("seed-state.json");
    let seed = |phase: &str, pids: &mut Vec<u32>| -> String {
        let child = python_command(&venv.join("bin/python"))
            .arg(&script)
            .args([phase, &base_url, REGISTRATION_SHARED_SECRET])
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        pids.push(child.id());
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", script.display()));
        if !out.status.success() {
            fail(
                dir,
                &format!(
                    "seeding phase {phase} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Phase 1: users and legacy media, with authenticated media off.
    let config = write_config(dir, port, false);
    let (mut synapse, _) = spawn_synapse(venv, dir, &config, None);
    pids.push(synapse.pid());
    wait_ready(&mut synapse, addr, dir);
    seed("legacy", &mut pids);
    stop_gracefully(synapse);

    // Phase 2: the rest, with authenticated media on (the default).
    let config = write_config(dir, port, true);
    let (mut synapse, _) = spawn_synapse(venv, dir, &config, None);
    pids.push(synapse.pid());
    wait_ready(&mut synapse, addr, dir);
    let json = seed("main", &mut pids);
    if let Err(e) = serde_json::from_str::<Seed>(&json) {
        fail(
            dir,
            &format!("seed.py printed unexpected JSON ({e}): {json}"),
        );
    }
    stop_gracefully(synapse);

    // Into the cache: database (with its WAL files), media, signing key, what was seeded.
    let tmp = root.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("mkdir {}: {e}", tmp.display()));
    for entry in read_dir(dir) {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with("homeserver.db") || file == "media" || file == "signing.key" {
            copy_recursively(&entry.path(), &tmp.join(&*file));
        }
    }
    let seed_json = tmp.join("seed.json");
    std::fs::write(&seed_json, &json)
        .unwrap_or_else(|e| panic!("write {}: {e}", seed_json.display()));
    if cached.exists() {
        // Without seed.json (checked above): not something this code left; replace it.
        let _ = std::fs::remove_dir_all(&cached);
    }
    rename_into_place(&tmp, &cached, |d| d.join("seed.json").exists());
    // Older seeded states (of an older seed script or Synapse) are of no further use.
    for entry in read_dir(&root) {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with("seeded-") && *file != *name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    eprintln!(
        "homeserver: seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (cached, pids)
}

// ---------------------------------------------------------------------------------------
// Running Synapse.

/// Writes homeserver.yaml and log.yaml into `dir` (creating the signing key if missing);
/// returns the config's path.
fn write_config(dir: &Path, port: u16, authenticated_media: bool) -> PathBuf {
    let d = dir.to_str().expect("a UTF-8 data directory path");
    let config = HOMESERVER_YAML
        .replace("@DIR@", d)
        .replace("@PORT@", &port.to_string())
        .replace("@SERVER_NAME@", SERVER_NAME)
        .replace("@REGISTRATION_SECRET@", REGISTRATION_SHARED_SECRET)
        .replace("@AUTHENTICATED_MEDIA@", &authenticated_media.to_string());
    let log = LOG_YAML.replace("@DIR@", d);
    let path = dir.join("homeserver.yaml");
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let log_path = dir.join("log.yaml");
    std::fs::write(&log_path, log).unwrap_or_else(|e| panic!("write {}: {e}", log_path.display()));
    if !dir.join("signing.key").exists() {
        write_signing_key(dir);
    }
    path
}

/// An ed25519 signing key in Synapse's format: `ed25519 <key id> <unpadded base64 seed>`.
fn write_signing_key(dir: &Path) {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .expect("read /dev/urandom");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed);
    let path = dir.join("signing.key");
    std::fs::write(&path, format!("ed25519 a_test {b64}\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Starts `<venv>/bin/python -m synapse.app.homeserver -c <config>` in `dir`, in `cgroup` if
/// given. Its stdout (normally empty: Synapse sends stdio to its log) goes to
/// `synapse.stdout`.
fn spawn_synapse(
    venv: &Path,
    dir: &Path,
    config: &Path,
    cgroup: Option<&Cgroup>,
) -> (Process, Vec<String>) {
    let python = venv.join("bin/python");
    let cmdline: Vec<String> = vec![
        python.display().to_string(),
        "-m".into(),
        "synapse.app.homeserver".into(),
        "-c".into(),
        config.display().to_string(),
    ];
    let mut cmd = python_command(&python);
    cmd.args(&cmdline[1..])
        .current_dir(dir)
        .stdin(Stdio::null());
    let mut process = Process::spawn(cmd, cgroup);
    let mut stdout = process.child.stdout.take().expect("synapse stdout");
    let out_path = dir.join("synapse.stdout");
    let mut out = std::fs::File::create(&out_path)
        .unwrap_or_else(|e| panic!("create {}: {e}", out_path.display()));
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut stdout, &mut out);
    });
    (process, cmdline)
}

/// Waits until Synapse answers `/_matrix/client/versions`; panics with its log's tail if it
/// exits or does not answer in time.
fn wait_ready(synapse: &mut Process, addr: SocketAddr, dir: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = synapse.child.try_wait() {
            fail(dir, &format!("Synapse exited during startup ({status})"));
        }
        let answered = TcpStream::connect(addr)
            .and_then(|s| try_http_request(s, "GET", "/_matrix/client/versions", None, b""))
            .is_ok_and(|r| r.status == 200);
        if answered {
            return;
        }
        if Instant::now() > deadline {
            fail(
                dir,
                &format!(
                    "Synapse did not answer /_matrix/client/versions on {addr} within {} s",
                    START_TIMEOUT.as_secs()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then up to STOP_TIMEOUT for a clean exit (the database is copied afterwards),
/// then SIGKILL (by dropping the process).
fn stop_gracefully(mut synapse: Process) {
    // SAFETY: kill(2) on the PID of our own unreaped child.
    unsafe { libc::kill(synapse.pid() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = synapse.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "homeserver: Synapse (PID {}) did not exit within {} s of SIGTERM: killing it",
        synapse.pid(),
        STOP_TIMEOUT.as_secs()
    );
}

/// Keeps the logs of `dir` and panics with `msg`, the kept path and the tail of Synapse's log.
fn fail(dir: &Path, msg: &str) -> ! {
    let kept = keep_logs(dir);
    let log = std::fs::read_to_string(dir.join("homeserver.log")).unwrap_or_default();
    let log = if log.trim().is_empty() {
        "(empty: Synapse stopped before its logging started; its stderr is in the test output \
         above)"
            .to_string()
    } else {
        tail(&log, 40)
    };
    panic!(
        "{msg}\nSynapse's log is kept at {}/homeserver.log; its last lines:\n{log}",
        kept.display(),
    );
}

/// Copies the logs and config of `dir` to a directory that outlives the test.
fn keep_logs(dir: &Path) -> PathBuf {
    let kept = std::env::temp_dir().join(format!(
        "hs-homeserver-logs-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::create_dir_all(&kept);
    for file in [
        "homeserver.log",
        "access.log",
        "synapse.stdout",
        "homeserver.yaml",
    ] {
        let _ = std::fs::copy(dir.join(file), kept.join(file));
    }
    kept
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Files.

/// A data directory removed on drop: on /dev/shm when it exists (SQLite fsyncs every commit;
/// on tmpfs that costs nothing), otherwise in the temporary directory.
struct DataDir {
    dir: TempDir,
}

impl DataDir {
    fn new(name: &str) -> Self {
        let shm = Path::new("/dev/shm");
        remove_stale_data_dirs(shm);
        let path = shm.join(format!(
            "hs-test-{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let dir = if shm.is_dir() && std::fs::create_dir(&path).is_ok() {
            TempDir { path }
        } else {
            TempDir::new(name)
        };
        Self { dir }
    }

    fn path(&self) -> &Path {
        &self.dir.path
    }
}

/// Removes the data directories that killed test processes left on /dev/shm (it is memory):
/// `hs-test-<pid>-...` of a PID that no longer exists.
fn remove_stale_data_dirs(shm: &Path) {
    let Ok(entries) = std::fs::read_dir(shm) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("hs-test-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn read_dir(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .and_then(|d| d.collect())
        .unwrap_or_else(|e| panic!("read directory {}: {e}", dir.display()))
}

fn copy_recursively(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
        for entry in read_dir(from) {
            copy_recursively(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }
}

/// A free port on 127.0.0.1: bind, note it, release it for the server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from Synapse 1.163.2's access log (with this module's log config): a
    // token in the query string with X-Forwarded-For, and a 404 with quotes in the agent.
    const WHOAMI: &str = "2026-11-22 08:03:20,187 - synapse.access.http.18009 - 643 - INFO - GET-1 - 127.0.0.9 - 18009 - {@alice:test.example} Processed request: 0.005sec/0.000sec ru=(0.002sec, 0.000sec) db=(0.001sec/0.001sec/3) 73B 200 \"GET /_matrix/client/v3/account/whoami?access_token=<redacted> HTTP/1.1\" \"curl/7.88.1\" [0 dbevts]";
    const NOT_FOUND: &str = "2026-11-22 08:03:20,215 - synapse.access.http.18009 - 643 - INFO - GET-2 - 127.0.0.1 - 18009 - {None} Processed request: 0.004sec/0.000sec ru=(0.001sec, 0.000sec) db=(0.002sec/0.000sec/1) 99B 404 \"GET /_matrix/media/v3/download/test.example/nonexistent HTTP/1.1\" \"Mozilla/5.0 \"quoted\" ua\" [0 dbevts]";

    #[test]
    fn parses_an_authenticated_request() {
        let e = parse_access_log_line(WHOAMI).expect("parses");
        assert_eq!(e.client_ip, "127.0.0.9");
        assert_eq!(e.site_tag, "18009");
        assert_eq!(e.requester.as_deref(), Some("@alice:test.example"));
        assert_eq!(e.authenticated_entity, None);
        assert_eq!(e.request_id.as_deref(), Some("GET-1"));
        assert_eq!(e.method, "GET");
        assert_eq!(
            e.path,
            "/_matrix/client/v3/account/whoami?access_token=<redacted>"
        );
        assert_eq!(e.protocol, "HTTP/1.1");
        assert_eq!((e.status, e.finished), (200, true));
        assert_eq!(e.response_bytes, 73);
        assert_eq!(e.processing_secs, 0.005);
        assert_eq!(e.user_agent, "curl/7.88.1");
        let t = e.logged_at.expect("timestamp");
        assert_eq!(
            (t.hour(), t.minute(), t.second(), t.millisecond()),
            (8, 3, 20, 187)
        );
    }

    #[test]
    fn parses_unauthenticated_unfinished_puppeted_and_bare_lines() {
        let e = parse_access_log_line(NOT_FOUND).expect("parses");
        assert_eq!(e.requester, None);
        assert_eq!((e.status, e.response_bytes), (404, 99));
        assert_eq!(e.user_agent, "Mozilla/5.0 \"quoted\" ua");

        // Without the formatter's prefix, a negative send time, a response cut short.
        let bare = &NOT_FOUND[NOT_FOUND.find("127.0.0.1 - ").expect("ip")..]
            .replace("0.000sec ru", "-0.000sec ru")
            .replace(" 404 ", " 200! ");
        let e = parse_access_log_line(bare).expect("parses");
        assert_eq!((e.logged_at, e.request_id.as_deref()), (None, None));
        assert_eq!(e.client_ip, "127.0.0.1");
        assert_eq!(e.response_send_secs, 0.0);
        assert_eq!((e.status, e.finished), (200, false));

        // An admin puppeting a user: "{authenticated_entity}|{requester}".
        let puppet = WHOAMI.replace(
            "{@alice:test.example}",
            "{@admin:test.example|@alice:test.example}",
        );
        let e = parse_access_log_line(&puppet).expect("parses");
        assert_eq!(e.requester.as_deref(), Some("@alice:test.example"));
        assert_eq!(
            e.authenticated_entity.as_deref(),
            Some("@admin:test.example")
        );

        assert_eq!(
            parse_access_log_line(
                "2026-11-22 07:54:53,682 - synapse.app._base - 512 - INFO - \
                 call_when_running - Synapse now listening on TCP port 18008"
            ),
            None
        );
    }

    #[test]
    fn parses_chunked_and_sized_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
            .expect("parses");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
            .expect("parses");
        assert_eq!((r.status, r.header("Content-Length")), (404, Some("2")));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
    }
}
