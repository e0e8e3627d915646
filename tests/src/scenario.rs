//! End-to-end scenarios against the real homeserver ([`Homeserver`]): clients that no part
//! of the sensor knows about, speaking plain HTTP/1.1 over `TcpStream`, each bound to its own
//! loopback address so its traffic can be told apart, and reporting exactly what they sent
//! and received, request by request.
//!
//! - [`scrape`]: one stolen account walks the room directory, joins every public room, pages
//!   each room's history back to its start, lists its members, searches the user directory,
//!   fetches profiles and downloads every media file it saw (authenticated and legacy
//!   endpoints), on one keep-alive connection through nginx, as a script does;
//! - [`harvest`]: media fetched with no token on the legacy endpoint;
//! - [`abuse_admin`]: an admin token used from an unexpected address;
//! - [`benign`]: an ordinary user (long-polled `/sync`, messages sent, recent history read,
//!   a few media files) for a while;
//! - [`direct_keepalive`]: a client talking to Synapse itself (no proxy), several requests
//!   per keep-alive connection.
//!
//! Every client counts, for each request, the bytes it sent and the response head and body
//! bytes it received (on the wire: chunk framing included), and when it started and
//! finished, so a test can compare them with the sensor's records and Synapse's access log,
//! and [`Tally`] notes when each breadth count (distinct rooms, media, ...) was reached, so a
//! test can time the sensor's alerts against the request that crossed a threshold.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};

use crate::{Client, Homeserver, Media, User};

/// The `Host` header every scenario client sends (nginx's `server_name`).
const HOST: &str = "matrix.test.example";

/// How a request carries its access token.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    None,
    /// `Authorization: Bearer <token>`.
    Header(&'a str),
    /// `?access_token=<token>` (older clients, media links).
    Query(&'a str),
}

/// One request and its response, as the client saw them.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    /// The request-target sent, with the `access_token` value replaced by `<redacted>` (as
    /// both Synapse's access log and the sensor write it).
    pub path: String,
    /// The client's side of the connection that carried it.
    pub local: SocketAddr,
    /// Index of that connection among the session's connections (0, 1, ...).
    pub connection: usize,
    pub status: u16,
    /// Bytes of the request sent: head and body.
    pub sent: u64,
    /// Bytes of the response head received, through its final `\r\n\r\n`.
    pub head_bytes: u64,
    /// Bytes of the response body received on the wire (with any chunk framing).
    pub body_bytes: u64,
    /// Length of the body once de-chunked.
    pub content_bytes: u64,
    /// When the request's first byte was sent.
    pub started: SystemTime,
    /// When the response's last byte was received.
    pub finished: SystemTime,
}

impl Exchange {
    /// Everything received for this request: response head and body.
    pub fn received(&self) -> u64 {
        self.head_bytes + self.body_bytes
    }
}

/// A response: the exchange and the de-chunked body.
#[derive(Debug)]
pub struct Response {
    pub exchange: Exchange,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.exchange.status
    }

    /// The body as JSON, `Value::Null` if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A client of one server address, from one local address, over HTTP/1.1 keep-alive
/// connections (a new one when the server closed the previous, or after [`Session::close`]).
/// Every exchange is kept in `exchanges`.
pub struct Session {
    pub from: IpAddr,
    pub target: SocketAddr,
    pub user_agent: String,
    pub exchanges: Vec<Exchange>,
    stream: Option<TcpStream>,
    /// Bytes read past the end of the last response (none, as nothing is pipelined).
    buf: Vec<u8>,
    connections: usize,
}

impl Session {
    pub fn new(from: IpAddr, target: SocketAddr, user_agent: &str) -> Self {
        Self {
            from,
            target,
            user_agent: user_agent.to_string(),
            exchanges: Vec::new(),
            stream: None,
            buf: Vec::new(),
            connections: 0,
        }
    }

    /// Closes the current connection; the next request opens a new one.
    pub fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.buf.clear();
    }

    /// Sends one request (a JSON body if `body` is given, or for any method but GET) and
    /// reads its whole response. Panics on a network error.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Response {
        let target = match auth {
            Auth::Query(token) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}access_token={token}")
            }
            _ => path.to_string(),
        };
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: {}\r\nAccept: */*\r\n",
            self.user_agent
        );
        if let Auth::Header(token) = auth {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = match body {
            Some(v) => serde_json::to_vec(v).expect("JSON"),
            None if method != "GET" => b"{}".to_vec(),
            None => Vec::new(),
        };
        if method != "GET" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");

        if self.stream.is_none() {
            let stream = Client::connect_from(self.from, self.target).stream;
            stream
                .set_read_timeout(Some(Duration::from_secs(120)))
                .expect("read timeout");
            self.stream = Some(stream);
            self.connections += 1;
        }
        let connection = self.connections - 1;
        let stream = self.stream.as_mut().expect("a connection");
        let local = stream.local_addr().expect("local address");
        let started = SystemTime::now();
        let mut request = head.into_bytes();
        request.extend_from_slice(&body);
        stream
            .write_all(&request)
            .unwrap_or_else(|e| panic!("{method} {path} to {}: send: {e}", self.target));
        let what = format!("{method} {path} to {} from {local}", self.target);
        let parsed = read_response(stream, &mut self.buf, method == "HEAD", &what);
        let finished = SystemTime::now();
        if parsed.close {
            self.close();
        }
        let exchange = Exchange {
            method: method.to_string(),
            path: redact(&target),
            local,
            connection,
            status: parsed.status,
            sent: request.len() as u64,
            head_bytes: parsed.head_bytes,
            body_bytes: parsed.body_bytes,
            content_bytes: parsed.body.len() as u64,
            started,
            finished,
        };
        self.exchanges.push(exchange.clone());
        Response {
            exchange,
            headers: parsed.headers,
            body: parsed.body,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

struct Parsed {
    status: u16,
    headers: Vec<(String, String)>,
    head_bytes: u64,
    body_bytes: u64,
    body: Vec<u8>,
    /// The server will close the connection after this response.
    close: bool,
}

/// Fills `buf` from `stream` until it holds at least `n` bytes; false at end of stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize, what: &str) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    while buf.len() < n {
        let got = stream
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("{what}: read: {e}"));
        if got == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    true
}

/// Reads one response from `stream` (`buf` holds bytes already read); leaves what follows
/// it in `buf`.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool, what: &str) -> Parsed {
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let want = buf.len() + 1;
        assert!(
            fill(stream, buf, want, what),
            "{what}: connection closed before a response head ({} bytes)",
            buf.len()
        );
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let http10 = status_line.starts_with("HTTP/1.0");
    let mut close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
        || (http10 && !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
    let mut body = Vec::new();
    let mut body_bytes = 0u64;
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if chunked {
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                let want = buf.len() + 1;
                assert!(fill(stream, buf, want, what), "{what}: truncated chunk");
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size_hex = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .unwrap_or_else(|_| panic!("{what}: bad chunk size {size_text:?}"));
            if size == 0 {
                // The last chunk, trailers (none expected), the final CRLF.
                let trailer_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    let want = buf.len() + 1;
                    assert!(fill(stream, buf, want, what), "{what}: truncated trailer");
                };
                body_bytes += trailer_end as u64;
                buf.drain(..trailer_end);
                break;
            }
            let whole = line_end + 2 + size + 2;
            assert!(fill(stream, buf, whole, what), "{what}: truncated chunk");
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            body_bytes += whole as u64;
            buf.drain(..whole);
        }
    } else if let Some(len) = length {
        // Large bodies: read straight through, keeping them.
        assert!(fill(stream, buf, len, what), "{what}: truncated body");
        body.extend(buf.drain(..len));
        body_bytes = len as u64;
    } else {
        // Delimited by the end of the connection.
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{what}: read: {e}"));
        buf.append(&mut rest);
        body_bytes = buf.len() as u64;
        body.append(buf);
        close = true;
    }
    Parsed {
        status,
        headers,
        head_bytes: end as u64,
        body_bytes,
        body,
        close,
    }
}

/// `target` with every `access_token` value replaced by `<redacted>`.
pub fn redact(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k == "access_token" => format!("{k}=<redacted>"),
            _ => p.to_string(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a path segment or query
/// value: `!room:test.example` becomes `%21room%3Atest.example`).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Breadth counts, as the detection rules count them.

/// What a client counts, the way the sensor's rules count it (README, "Detection").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Breadth {
    /// Distinct rooms whose history or members were read (`breadth.rooms_read`).
    RoomsRead,
    /// Distinct rooms joined (`breadth.rooms_joined`).
    RoomsJoined,
    /// Distinct media downloaded with a token, any endpoint (`breadth.media`).
    Media,
    /// User-directory searches (each) and distinct profiles (`breadth.directory`).
    Directory,
    /// Room-directory requests (`breadth.room_directory`).
    RoomDirectory,
    /// Distinct media requested with no token (`tokenless_media`, per address).
    TokenlessMedia,
    /// Admin API calls (`admin_api.address`).
    AdminCalls,
}

/// The moment a count was reached: the request that made it `count`.
#[derive(Clone, Debug)]
pub struct Milestone {
    pub count: u64,
    /// The item that request added (room id, media id, user id, ...).
    pub item: String,
    pub method: String,
    pub path: String,
    /// When that request was sent and when its response had been received in full.
    pub started: SystemTime,
    pub reached: SystemTime,
}

/// Distinct items per [`Breadth`], and when each count was first reached.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    seen: BTreeMap<Breadth, BTreeSet<String>>,
    pub milestones: BTreeMap<Breadth, Vec<Milestone>>,
    requests: u64,
}

impl Tally {
    /// Counts `item` (if new to `kind`) for the request `ex`.
    pub fn add(&mut self, kind: Breadth, item: &str, ex: &Exchange) {
        if self.seen.entry(kind).or_default().insert(item.to_string()) {
            let count = self.seen[&kind].len() as u64;
            self.milestones.entry(kind).or_default().push(Milestone {
                count,
                item: item.to_string(),
                method: ex.method.clone(),
                path: ex.path.clone(),
                started: ex.started,
                reached: ex.finished,
            });
        }
    }

    /// Counts the request `ex` itself (a rule that counts requests, not distinct items).
    pub fn add_request(&mut self, kind: Breadth, ex: &Exchange) {
        self.requests += 1;
        let item = format!("request {}", self.requests);
        self.add(kind, &item, ex);
    }

    /// How many distinct items of `kind` were counted.
    pub fn count(&self, kind: Breadth) -> u64 {
        self.seen.get(&kind).map_or(0, |s| s.len() as u64)
    }

    /// The request that made the count of `kind` reach `n`.
    pub fn reached(&self, kind: Breadth, n: u64) -> Option<&Milestone> {
        self.milestones.get(&kind)?.iter().find(|m| m.count == n)
    }
}

// ---------------------------------------------------------------------------------------
// The scraper.

/// One room the scraper took: its join, every page of its history, its member list.
#[derive(Clone, Debug)]
pub struct RoomReport {
    pub room_id: String,
    pub join: Exchange,
    /// `/messages` pages, newest first, back to the room's start.
    pub history: Vec<Exchange>,
    pub members: Exchange,
    /// Events in all pages, and of them `m.room.message` events.
    pub events: u64,
    pub messages: u64,
    /// Member user ids.
    pub member_ids: Vec<String>,
}

impl RoomReport {
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        std::iter::once(&self.join)
            .chain(&self.history)
            .chain(std::iter::once(&self.members))
    }

    /// Response bytes (heads and bodies) received for this room: join, history, members.
    pub fn received(&self) -> u64 {
        self.exchanges().map(Exchange::received).sum()
    }

    /// Response bytes received for its history and members only (what reading it cost).
    pub fn read_received(&self) -> u64 {
        self.history
            .iter()
            .chain(std::iter::once(&self.members))
            .map(Exchange::received)
            .sum()
    }
}

/// One media file the scraper saw in a room's history, and its downloads.
#[derive(Clone, Debug)]
pub struct MediaReport {
    /// `mxc://server/id`.
    pub mxc: String,
    pub server: String,
    pub media_id: String,
    /// The room whose history named it.
    pub room_id: String,
    /// `/_matrix/client/v1/media/download/...` with `Authorization`.
    pub authenticated: Exchange,
    /// `/_matrix/media/v3/download/...?access_token=...` (404 for media uploaded since
    /// authenticated media was turned on).
    pub legacy: Exchange,
}

impl MediaReport {
    /// Response bytes (heads and bodies) received for this file, both downloads.
    pub fn received(&self) -> u64 {
        self.authenticated.received() + self.legacy.received()
    }
}

/// Everything the scraper did, in the order it did it (`exchanges`), and by kind.
#[derive(Clone, Debug)]
pub struct ScrapeReport {
    pub from: IpAddr,
    pub user_id: String,
    /// `publicRooms` pages.
    pub directory_pages: Vec<Exchange>,
    /// Room ids the directory listed.
    pub listed: Vec<String>,
    pub rooms: Vec<RoomReport>,
    /// User-directory searches: the term and the exchange.
    pub searches: Vec<(String, Exchange)>,
    /// Profiles fetched: the user id and the exchange.
    pub profiles: Vec<(String, Exchange)>,
    pub media: Vec<MediaReport>,
    pub tally: Tally,
    pub exchanges: Vec<Exchange>,
}

impl ScrapeReport {
    /// Every response byte received (heads and bodies).
    pub fn received(&self) -> u64 {
        self.exchanges.iter().map(Exchange::received).sum()
    }
}

/// Search terms a scraper tries on the user directory.
pub const SEARCH_TERMS: [&str; 5] = ["a", "e", "r", "test", "o"];

/// The scraper: `user`'s token (stolen) walks the room directory `page_size` rooms at a time,
/// joins every listed room, pages each room's history backwards to its start (`/messages`,
/// 50 events a page), lists its members, searches the user directory for
/// [`SEARCH_TERMS`], fetches the profile of every member it saw, then downloads every media
/// file named in the history, on the authenticated endpoint and on the legacy one (token in
/// the query string). One keep-alive connection through nginx, from `from`.
pub fn scrape(hs: &Homeserver, user: &User, from: IpAddr, page_size: u32) -> ScrapeReport {
    scrape_with(hs.nginx_addr, user, from, page_size, |_| {})
}

/// [`scrape`] against `target` (nginx, or Synapse itself), calling `after_rooms` with the
/// scraper's session once every room is read, before the user directory and the media: a
/// test stops and restarts the sensor there (closing the session first if it wants no
/// connection open across the gap).
pub fn scrape_with(
    target: SocketAddr,
    user: &User,
    from: IpAddr,
    page_size: u32,
    mut after_rooms: impl FnMut(&mut Session),
) -> ScrapeReport {
    let token = user.access_token.as_str();
    let mut s = Session::new(from, target, "python-requests/2.32.3");
    let mut tally = Tally::default();
    let expect = |r: &Response, status: u16| {
        assert_eq!(
            r.status(),
            status,
            "scraper: {} {}: {}",
            r.exchange.method,
            r.exchange.path,
            String::from_utf8_lossy(&r.body)
        );
    };

    // The room directory, page by page.
    let mut directory_pages = Vec::new();
    let mut listed = Vec::new();
    let mut since: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/_matrix/client/v3/publicRooms?limit={page_size}");
        if let Some(b) = &since {
            path.push_str(&format!("&since={}", encode(b)));
        }
        let r = s.request("GET", &path, Auth::Header(token), None);
        expect(&r, 200);
        tally.add_request(Breadth::RoomDirectory, &r.exchange);
        directory_pages.push(r.exchange.clone());
        let page = r.json();
        for room in page["chunk"].as_array().into_iter().flatten() {
            if let Some(id) = room["room_id"].as_str() {
                listed.push(id.to_string());
            }
        }
        match page["next_batch"].as_str() {
            Some(next) if !page["chunk"].as_array().is_none_or(Vec::is_empty) => {
                since = Some(next.to_string())
            }
            _ => break,
        }
    }

    // Join, read back to the start, list the members.
    let mut rooms = Vec::new();
    let mut media_seen: Vec<(String, String)> = Vec::new();
    let mut people: Vec<String> = Vec::new();
    for room_id in &listed {
        let room = encode(room_id);
        let r = s.request(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Auth::Header(token),
            Some(&json!({})),
        );
        expect(&r, 200);
        tally.add(Breadth::RoomsJoined, room_id, &r.exchange);
        let join = r.exchange;

        let mut history = Vec::new();
        let (mut events, mut messages) = (0, 0);
        let mut from_token: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
            if let Some(f) = &from_token {
                path.push_str(&format!("&from={}", encode(f)));
            }
            let r = s.request("GET", &path, Auth::Header(token), None);
            expect(&r, 200);
            tally.add(Breadth::RoomsRead, room_id, &r.exchange);
            history.push(r.exchange.clone());
            let page = r.json();
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            for e in &chunk {
                events += 1;
                if e["type"] == "m.room.message" {
                    messages += 1;
                }
                if let Some(url) = e["content"]["url"].as_str()
                    && url.starts_with("mxc://")
                    && !media_seen.iter().any(|(u, _)| u == url)
                {
                    media_seen.push((url.to_string(), room_id.clone()));
                }
            }
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() => from_token = Some(end.to_string()),
                _ => break,
            }
        }

        let r = s.request(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/members"),
            Auth::Header(token),
            None,
        );
        expect(&r, 200);
        tally.add(Breadth::RoomsRead, room_id, &r.exchange);
        let member_ids: Vec<String> = r.json()["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["content"]["membership"] == "join")
            .filter_map(|e| e["state_key"].as_str().map(str::to_string))
            .collect();
        for m in &member_ids {
            if !people.contains(m) && *m != user.user_id {
                people.push(m.clone());
            }
        }
        rooms.push(RoomReport {
            room_id: room_id.clone(),
            join,
            history,
            members: r.exchange,
            events,
            messages,
            member_ids,
        });
    }

    after_rooms(&mut s);

    // The user directory, then every profile.
    let mut searches = Vec::new();
    for term in SEARCH_TERMS {
        let r = s.request(
            "POST",
            "/_matrix/client/v3/user_directory/search",
            Auth::Header(token),
            Some(&json!({"search_term": term, "limit": 50})),
        );
        expect(&r, 200);
        tally.add_request(Breadth::Directory, &r.exchange);
        for u in r.json()["results"].as_array().into_iter().flatten() {
            if let Some(id) = u["user_id"].as_str()
                && !people.iter().any(|p| p == id)
                && id != user.user_id
            {
                people.push(id.to_string());
            }
        }
        searches.push((term.to_string(), r.exchange));
    }
    let mut profiles = Vec::new();
    for id in &people {
        let r = s.request(
            "GET",
            &format!("/_matrix/client/v3/profile/{}", encode(id)),
            Auth::Header(token),
            None,
        );
        expect(&r, 200);
        tally.add(Breadth::Directory, &format!("profile {id}"), &r.exchange);
        profiles.push((id.clone(), r.exchange));
    }

    // Every media file of the history, both ways.
    let mut media = Vec::new();
    for (mxc, room_id) in media_seen {
        let (server, media_id) = mxc
            .trim_start_matches("mxc://")
            .split_once('/')
            .unwrap_or_else(|| panic!("scraper: bad media URL {mxc}"));
        let (server, media_id) = (server.to_string(), media_id.to_string());
        let r = s.request(
            "GET",
            &format!("/_matrix/client/v1/media/download/{server}/{media_id}"),
            Auth::Header(token),
            None,
        );
        expect(&r, 200);
        tally.add(Breadth::Media, &media_id, &r.exchange);
        let authenticated = r.exchange;
        let r = s.request(
            "GET",
            &format!("/_matrix/media/v3/download/{server}/{media_id}"),
            Auth::Query(token),
            None,
        );
        assert!(
            matches!(r.status(), 200 | 404),
            "scraper: legacy download of {mxc}: {}",
            r.status()
        );
        tally.add(Breadth::Media, &media_id, &r.exchange);
        media.push(MediaReport {
            mxc,
            server,
            media_id,
            room_id,
            authenticated,
            legacy: r.exchange,
        });
    }
    s.close();
    ScrapeReport {
        from,
        user_id: user.user_id.clone(),
        directory_pages,
        listed,
        rooms,
        searches,
        profiles,
        media,
        tally,
        exchanges: std::mem::take(&mut s.exchanges),
    }
}

// ---------------------------------------------------------------------------------------
// The token-less harvester.

/// The harvester's downloads: the media, and the exchange (200 for legacy media, 404 for the
/// others).
#[derive(Clone, Debug)]
pub struct HarvestReport {
    pub from: IpAddr,
    pub fetches: Vec<(Media, Exchange)>,
    pub tally: Tally,
    pub exchanges: Vec<Exchange>,
}

/// Downloads each of `media` on the legacy endpoint with no token at all, as a link
/// harvester does, one keep-alive connection through nginx, from `from`.
pub fn harvest(hs: &Homeserver, from: IpAddr, media: &[Media]) -> HarvestReport {
    let mut s = Session::new(from, hs.nginx_addr, "curl/7.88.1");
    let mut tally = Tally::default();
    let mut fetches = Vec::new();
    for m in media {
        let r = s.request("GET", &m.legacy_download_path(), Auth::None, None);
        let want = if m.legacy { 200 } else { 404 };
        assert_eq!(r.status(), want, "harvester: {}", m.name);
        if m.legacy {
            assert_eq!(r.exchange.content_bytes, m.size, "harvester: {}", m.name);
        }
        tally.add(Breadth::TokenlessMedia, &m.media_id, &r.exchange);
        fetches.push((m.clone(), r.exchange));
    }
    s.close();
    HarvestReport {
        from,
        fetches,
        tally,
        exchanges: std::mem::take(&mut s.exchanges),
    }
}

// ---------------------------------------------------------------------------------------
// The admin-token abuser.

#[derive(Clone, Debug)]
pub struct AdminReport {
    pub from: IpAddr,
    pub user_id: String,
    pub calls: Vec<Exchange>,
    /// The account it created.
    pub created: String,
    pub tally: Tally,
}

/// An exposed admin token used from `from` through nginx: lists users and rooms, looks at a
/// private room's members and a user's sessions, and creates an account.
pub fn abuse_admin(hs: &Homeserver, admin: &User, from: IpAddr) -> AdminReport {
    let token = admin.access_token.as_str();
    let mut s = Session::new(from, hs.nginx_addr, "python-requests/2.32.3");
    let mut tally = Tally::default();
    let mut call = |s: &mut Session, method: &str, path: &str, body: Option<&Value>| {
        let r = s.request(method, path, Auth::Header(token), body);
        assert!(
            matches!(r.status(), 200 | 201),
            "admin abuser: {method} {path}: {} {}",
            r.status(),
            String::from_utf8_lossy(&r.body)
        );
        tally.add_request(Breadth::AdminCalls, &r.exchange);
        r
    };
    call(
        &mut s,
        "GET",
        "/_synapse/admin/v2/users?from=0&limit=100",
        None,
    );
    let rooms = call(&mut s, "GET", "/_synapse/admin/v1/rooms?limit=100", None).json();
    let private = rooms["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["public"] == false)
        .and_then(|r| r["room_id"].as_str())
        .map(str::to_string);
    if let Some(room) = private {
        call(
            &mut s,
            "GET",
            &format!("/_synapse/admin/v1/rooms/{}/members", encode(&room)),
            None,
        );
    }
    let victim = hs.seed.user("alice").user_id.clone();
    call(
        &mut s,
        "GET",
        &format!("/_synapse/admin/v2/users/{}", encode(&victim)),
        None,
    );
    call(
        &mut s,
        "GET",
        &format!("/_synapse/admin/v1/whois/{}", encode(&victim)),
        None,
    );
    let created = format!("@misere:{}", hs.server_name);
    call(
        &mut s,
        "PUT",
        &format!("/_synapse/admin/v2/users/{}", encode(&created)),
        Some(&json!({"password": "misere-test-password", "admin": false})),
    );
    s.close();
    AdminReport {
        from,
        user_id: admin.user_id.clone(),
        calls: std::mem::take(&mut s.exchanges),
        created,
        tally,
    }
}

// ---------------------------------------------------------------------------------------
// Benign users.

#[derive(Clone, Debug)]
pub struct BenignReport {
    pub from: IpAddr,
    pub user_id: String,
    /// Messages sent (event ids).
    pub sent: Vec<String>,
    pub tally: Tally,
    pub exchanges: Vec<Exchange>,
}

/// A sync filter keeping each room's timeline short, as a client that only renders the
/// latest messages asks for.
const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":5}}}"#;

/// An ordinary user for `duration`, on one keep-alive connection through nginx from `from`,
/// as a chat client behaves: an initial sync, then long-polled syncs (`since`, 2 s timeout),
/// a message now and then to the lobby (unique transaction ids), the recent history of one
/// of two rooms it is in, and one of two or three media files of its rooms (one as a
/// thumbnail).
pub fn benign(hs: &Homeserver, user: &User, from: IpAddr, duration: Duration) -> BenignReport {
    let token = user.access_token.as_str();
    let seed = &hs.seed;
    let mut s = Session::new(
        from,
        hs.nginx_addr,
        "Mozilla/5.0 (X11; Linux x86_64) Element/1.11.90",
    );
    let mut tally = Tally::default();
    let mine: Vec<_> = seed
        .rooms
        .iter()
        .filter(|r| r.is_public && r.members.contains(&user.user_id))
        .collect();
    let lobby = seed.room("lobby").room_id.clone();
    let mut read: Vec<String> = vec![lobby.clone()];
    if let Some(other) = mine.iter().find(|r| r.room_id != lobby) {
        read.push(other.room_id.clone());
    }
    let media: Vec<&Media> = seed
        .media
        .iter()
        .filter(|m| {
            m.size <= 1 << 20
                && m.room_id
                    .as_ref()
                    .is_some_and(|r| mine.iter().any(|x| &x.room_id == r))
        })
        .take(2)
        .collect();
    let filter = encode(SYNC_FILTER);
    let check = |r: &Response| {
        assert_eq!(
            r.status(),
            200,
            "{}: {} {}: {}",
            user.localpart,
            r.exchange.method,
            r.exchange.path,
            String::from_utf8_lossy(&r.body)
        );
    };

    let started = Instant::now();
    let r = s.request(
        "GET",
        &format!("/_matrix/client/v3/sync?filter={filter}&timeout=0"),
        Auth::Header(token),
        None,
    );
    check(&r);
    let mut next = r.json()["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_string();
    let mut sent = Vec::new();
    let mut round = 0u32;
    while started.elapsed() < duration {
        let r = s.request(
            "GET",
            &format!(
                "/_matrix/client/v3/sync?filter={filter}&since={}&timeout=2000",
                encode(&next)
            ),
            Auth::Header(token),
            None,
        );
        check(&r);
        next = r.json()["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_string();
        if round.is_multiple_of(2) {
            let txn = format!(
                "{}-{round}-{}",
                user.localpart,
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .expect("clock")
                    .as_nanos()
            );
            let r = s.request(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    encode(&lobby)
                ),
                Auth::Header(token),
                Some(&json!({"msgtype": "m.text", "body": format!("hello from {} ({round})", user.localpart)})),
            );
            check(&r);
            sent.push(
                r.json()["event_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        if round % 3 == 1 {
            let room = &read[(round as usize / 3) % read.len()];
            let r = s.request(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
                    encode(room)
                ),
                Auth::Header(token),
                None,
            );
            check(&r);
            tally.add(Breadth::RoomsRead, room, &r.exchange);
        }
        if round % 4 == 3 && !media.is_empty() {
            let m = media[(round as usize / 4) % media.len()];
            let path = if round == 3 && m.kind == crate::MediaKind::Image {
                format!(
                    "/_matrix/client/v1/media/thumbnail/{}/{}?width=32&height=32&method=scale",
                    hs.server_name, m.media_id
                )
            } else {
                m.download_path()
            };
            let r = s.request("GET", &path, Auth::Header(token), None);
            check(&r);
            tally.add(Breadth::Media, &m.media_id, &r.exchange);
        }
        round += 1;
    }
    s.close();
    BenignReport {
        from,
        user_id: user.user_id.clone(),
        sent,
        tally,
        exchanges: std::mem::take(&mut s.exchanges),
    }
}

// ---------------------------------------------------------------------------------------
// A direct client on keep-alive connections.

#[derive(Clone, Debug)]
pub struct DirectReport {
    pub from: IpAddr,
    pub user_id: String,
    /// The exchanges of each connection, in order.
    pub connections: Vec<Vec<Exchange>>,
}

impl DirectReport {
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.connections.iter().flatten()
    }
}

/// A client talking to Synapse itself (no proxy: the peer is the client) from `from`:
/// `connections` keep-alive connections, `pause` apart, each carrying a sync (the first an
/// initial one, then `since` with a 1 s timeout), a page of recent history, a message sent
/// and a `whoami`.
pub fn direct_keepalive(
    hs: &Homeserver,
    user: &User,
    from: IpAddr,
    connections: usize,
    pause: Duration,
) -> DirectReport {
    let token = user.access_token.as_str();
    let room = hs
        .seed
        .rooms
        .iter()
        .find(|r| r.is_public && r.members.contains(&user.user_id))
        .unwrap_or_else(|| panic!("{} is in no public room", user.user_id))
        .room_id
        .clone();
    let filter = encode(SYNC_FILTER);
    let mut next: Option<String> = None;
    let mut out = Vec::new();
    for c in 0..connections {
        if c > 0 {
            std::thread::sleep(pause);
        }
        let mut s = Session::new(from, hs.synapse_addr, "Dart/3.5 (dart:io) FluffyChat");
        let check = |r: Response| {
            assert_eq!(
                r.status(),
                200,
                "direct: {} {}: {}",
                r.exchange.method,
                r.exchange.path,
                String::from_utf8_lossy(&r.body)
            );
            r.json()
        };
        let path = match &next {
            None => format!("/_matrix/client/v3/sync?filter={filter}&timeout=0"),
            Some(n) => format!(
                "/_matrix/client/v3/sync?filter={filter}&since={}&timeout=1000",
                encode(n)
            ),
        };
        let sync = check(s.request("GET", &path, Auth::Header(token), None));
        next = sync["next_batch"].as_str().map(str::to_string);
        check(s.request(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
                encode(&room)
            ),
            Auth::Header(token),
            None,
        ));
        check(s.request(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/direct-{c}-{}",
                encode(&room),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .expect("clock")
                    .as_nanos()
            ),
            Auth::Header(token),
            Some(&json!({"msgtype": "m.text", "body": format!("direct {c}")})),
        ));
        check(s.request(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Auth::Header(token),
            None,
        ));
        s.close();
        out.push(std::mem::take(&mut s.exchanges));
    }
    DirectReport {
        from,
        user_id: user.user_id.clone(),
        connections: out,
    }
}
