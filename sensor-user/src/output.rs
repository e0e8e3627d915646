//! Records and where they go. Every record is one JSON object on one line, with `kind` and
//! `ts` (RFC 3339 UTC with milliseconds). The schema is documented in docs/events.md and
//! versioned by `SCHEMA_VERSION`, carried in every `sensor` record.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    path::PathBuf,
};

use serde::Serialize;

pub mod webhook;

use crate::{
    client_ip::AddressSource, decode::Mechanism, endpoint::Class, identity::Fingerprint,
    identity::TokenSource,
};

/// Version of the record schema. Bump on any change that is not an added field.
pub const SCHEMA_VERSION: u32 = 1;

/// One output record.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Connection(ConnectionRecord),
    Request(RequestRecord),
    Alert(crate::detect::AlertRecord),
    Process(ProcessRecord),
    Sensor(SensorRecord),
}

/// A TCP connection of a watched process: emitted when it closes, and for every connection
/// still open when the agent stops (`closed: false`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub ts: String,
    /// The watched process that owns the connection; null if it could not be resolved.
    pub pid: Option<u32>,
    /// `"ip:port"`, IPv6 as `"[addr]:port"`; IPv4-mapped IPv6 is shown as IPv4.
    pub local: Option<String>,
    pub peer: Option<String>,
    /// Payload bytes received from the peer.
    pub bytes_in: u64,
    /// Payload bytes sent to the peer.
    pub bytes_out: u64,
    /// Successful send/receive calls; null when the mechanism in use does not count calls
    /// (cgroup mode without `accounting.call_counts`).
    pub sends: Option<u64>,
    pub recvs: Option<u64>,
    /// Packets carrying payload (cgroup mode), else null.
    pub segs_in: Option<u64>,
    pub segs_out: Option<u64>,
    pub closed: bool,
    /// False when the connection was already open when the sensor started: the counts then
    /// cover only what happened since.
    pub complete: bool,
    /// When the sensor first saw the connection.
    pub opened: String,
    pub mechanism: Mechanism,
    /// The kernel's socket cookie: unique per connection for the life of the host.
    pub cookie: u64,
}

/// An HTTP request on a watched server connection, written when its exchange is over (the
/// next request started on the connection, or the connection closed).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    /// When its head arrived.
    pub ts: String,
    pub pid: Option<u32>,
    pub local: Option<String>,
    /// The connection's peer (the proxy, on a proxied homeserver).
    pub peer: Option<String>,
    pub cookie: u64,
    /// Null when the head could not be parsed (see `head`).
    pub method: Option<String>,
    /// The request-target with every `access_token` value replaced by `<redacted>`.
    pub path: Option<String>,
    /// The endpoint's stable name (`client.messages`, `media.download`, ...), or
    /// `unparsed`.
    pub endpoint: &'static str,
    pub class: Option<Class>,
    /// The real client: the peer, or what a trusted proxy says in X-Forwarded-For or
    /// Forwarded.
    pub client_ip: Option<String>,
    pub client_ip_source: Option<AddressSource>,
    /// A forwarding header came from a peer that is not a trusted proxy and was ignored.
    pub forwarding_ignored: bool,
    /// The access token's keyed fingerprint (`tfp_` + 16 hex digits); never the token.
    pub token: Option<Fingerprint>,
    pub token_source: Option<TokenSource>,
    /// `@localpart:server_name`, read from a Synapse token (`syt_`/`syr_`).
    pub user: Option<String>,
    /// Bytes from the client for this request (head and body).
    pub bytes_in: u64,
    /// Bytes to the client for this request (the response, head and body).
    pub bytes_out: u64,
    pub room: Option<String>,
    pub event_id: Option<String>,
    /// A user the request is about (profile lookups, admin user endpoints).
    pub target_user: Option<String>,
    pub media_server: Option<String>,
    pub media_id: Option<String>,
    pub full_state: Option<bool>,
    pub since: Option<bool>,
    /// `parsed`, or why the head was not: `incomplete`, `cut`, `too_many_headers`,
    /// `malformed`.
    pub head: &'static str,
    /// False when head chunks of this request were lost or arrived out of order.
    pub complete: bool,
}

/// Per-process accounting (syscall mechanism): at stop and when a watched process exits.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcessRecord {
    pub ts: String,
    pub pid: u32,
    pub exited: bool,
    /// Syscall counts by name since the sensor started watching the process.
    pub syscalls: BTreeMap<String, u64>,
    /// Bytes returned by read-family syscalls that were not socket receives.
    pub file_read_bytes: u64,
    pub file_reads: u64,
}

/// A mechanism chosen for a group of processes.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct WatchRecord {
    pub cgroup: String,
    pub pids: Vec<u32>,
    pub mechanism: String,
    pub why: String,
}

/// The sensor's own state: at start, at stop, and when what is watched changes.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SensorRecord {
    pub ts: String,
    pub schema: u32,
    /// `start`, `watch` (what is watched changed), `reload` (SIGHUP), or `stop`.
    pub phase: String,
    pub version: String,
    pub kernel: String,
    /// Programs attached now, as `type/name`.
    pub attached: Vec<String>,
    pub watched: Vec<WatchRecord>,
    /// Programs the kernel refused, with its reason (mechanisms not available here).
    pub unavailable: BTreeMap<String, String>,
    /// Every program loaded (or refused) at start, with the instructions the verifier
    /// processed for it (its limit is 1,000,000).
    pub programs: BTreeMap<String, crate::load::ProgramLoad>,
    /// The embedded kernel object: its SHA-256 and the toolchain that built it.
    pub object: crate::load::ObjectBuild,
    /// Data lost, by place: kernel counters and the agent's own.
    pub drops: BTreeMap<String, u64>,
    /// Request heads by outcome: `parsed`, or why not.
    pub heads: BTreeMap<String, u64>,
    /// Where Prometheus metrics are served (`GET /metrics`), if they are.
    pub metrics: Option<String>,
    /// The ledger's state (`[ledger]`): size on disk, requests, pruning, errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<crate::ledger::LedgerStats>,
    /// `phase: "reload"` only: what the reload changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadRecord>,
}

/// What a configuration reload (SIGHUP) changed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReloadRecord {
    /// Keys whose new value is in force.
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their running value until a restart.
    pub needs_restart: Vec<String>,
    /// Why the file was not applied at all (unreadable or invalid), if it was not.
    pub rejected: Option<String>,
}

/// Output buffer size: a drain of a busy ring buffer writes many records at once.
const BUFFER: usize = 256 * 1024;

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    File(PathBuf),
}

impl Sink {
    pub fn parse(arg: &str) -> Self {
        if arg == "-" {
            Sink::Stdout
        } else {
            Sink::File(PathBuf::from(arg))
        }
    }
}

/// Writes records as JSON lines. The agent flushes after each batch (one drain of the ring
/// buffer, or one record written outside a drain), so lines reach the file promptly without
/// a write syscall per record. Each line is serialised whole into a buffer of its own, then
/// handed to the output in one write: the buffered writer never flushes half a line, so a
/// reader (or a crash) never sees one, and serialisation costs no call through the output
/// per JSON token.
pub struct JsonLines {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
}

impl JsonLines {
    pub fn open(sink: &Sink) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match sink {
            Sink::Stdout => Box::new(BufWriter::with_capacity(BUFFER, io::stdout())),
            Sink::File(path) => Box::new(BufWriter::with_capacity(
                BUFFER,
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        };
        Ok(Self::to_writer(out))
    }

    /// For tests: write into any writer.
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            line: Vec::with_capacity(1024),
        }
    }

    /// Buffers one record; `flush` sends the batch.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnectionRecord {
        ConnectionRecord {
            ts: "2026-11-22T06:00:00.000Z".into(),
            pid: Some(42),
            local: Some("127.0.0.1:8008".into()),
            peer: Some("[::1]:5000".into()),
            bytes_in: 10,
            bytes_out: 20,
            sends: None,
            recvs: None,
            segs_in: Some(1),
            segs_out: Some(2),
            closed: true,
            complete: true,
            opened: "2026-11-22T05:59:59.000Z".into(),
            mechanism: Mechanism::Cgroup,
            cookie: 7,
        }
    }

    #[test]
    fn connection_record_has_the_contract_fields() {
        let v = serde_json::to_value(Record::Connection(conn())).unwrap();
        for key in [
            "kind",
            "ts",
            "pid",
            "local",
            "peer",
            "bytes_in",
            "bytes_out",
            "sends",
            "recvs",
            "closed",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["kind"], "connection");
        assert_eq!(v["peer"], "[::1]:5000");
        assert_eq!(v["mechanism"], "cgroup");
        assert!(v["sends"].is_null());
    }

    #[test]
    fn json_lines_are_one_object_per_line() {
        #[derive(Clone, Default)]
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Shared::default();
        let mut w = JsonLines::to_writer(Box::new(buf.clone()));
        w.write(&Record::Connection(conn())).unwrap();
        w.write(&Record::Connection(conn())).unwrap();
        w.flush().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["kind"], "connection");
        }
    }

    #[test]
    fn a_buffered_output_is_never_handed_half_a_line() {
        // Every write that reaches the file, as it came.
        #[derive(Clone, Default)]
        struct Writes(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);
        impl Write for Writes {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().push(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let writes = Writes::default();
        // A buffer smaller than two lines: it must flush between them, never inside one.
        let line_len = serde_json::to_vec(&Record::Connection(conn()))
            .unwrap()
            .len()
            + 1;
        let buffered = BufWriter::with_capacity(line_len * 3 / 2, writes.clone());
        let mut w = JsonLines::to_writer(Box::new(buffered));
        for _ in 0..5 {
            w.write(&Record::Connection(conn())).unwrap();
        }
        w.flush().unwrap();
        let writes = writes.0.lock().unwrap();
        assert!(
            writes.len() >= 4,
            "the small buffer flushed: {} writes",
            writes.len()
        );
        for chunk in writes.iter() {
            assert!(chunk.ends_with(b"\n"), "a write ended inside a line");
        }
        assert_eq!(writes.iter().map(Vec::len).sum::<usize>(), 5 * line_len);
    }

    #[test]
    fn sink_parses_dash_as_stdout() {
        assert_eq!(Sink::parse("-"), Sink::Stdout);
        assert_eq!(Sink::parse("/tmp/x"), Sink::File(PathBuf::from("/tmp/x")));
    }
}
