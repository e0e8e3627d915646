//! Decoding: raw ring buffer records and map values into typed Rust values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sensor_common::{
    conn::{ConnStats, Tuple, flags, source},
    event::{ConnEvent, HEAD_CAPTURE, HeadEvent, TransferEvent, head_flags, kind},
    kernel::{AF_INET, AF_INET6},
};

/// Why a ring buffer record could not be decoded. Each is counted and reported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "ring buffer record of {got} bytes, expected {expected}: agent and kernel object disagree"
    )]
    Size { got: usize, expected: usize },
    #[error("ring buffer record of unknown kind {0}")]
    Kind(u32),
    #[error(
        "request head chunk of {len} bytes in a record of {got}: agent and kernel object disagree"
    )]
    HeadLength { len: usize, got: usize },
}

/// Any record of the ring buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Conn(ConnEventView),
    Head(HeadChunk),
    Transfer(TransferEvent),
}

/// Decodes one ring buffer record, whatever its kind.
pub fn event(bytes: &[u8]) -> Result<Event, DecodeError> {
    let Some(kind) = bytes
        .get(..4)
        .map(|k| u32::from_ne_bytes([k[0], k[1], k[2], k[3]]))
    else {
        return Err(DecodeError::Size {
            got: bytes.len(),
            expected: 4,
        });
    };
    match kind {
        kind::HEAD => head_chunk(bytes).map(Event::Head),
        kind::TRANSFER => transfer(bytes).map(Event::Transfer),
        _ => conn_event(bytes).map(Event::Conn),
    }
}

/// Decodes a transfer-threshold event.
pub fn transfer(bytes: &[u8]) -> Result<TransferEvent, DecodeError> {
    if bytes.len() != TransferEvent::SIZE {
        return Err(DecodeError::Size {
            got: bytes.len(),
            expected: TransferEvent::SIZE,
        });
    }
    // SAFETY: the length was checked; plain data valid for any bytes, read unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// A chunk of a request head. Its bytes may hold an access token: no Debug of them.
#[derive(Clone, PartialEq, Eq)]
pub struct HeadChunk {
    pub cookie: u64,
    pub ts_ns: u64,
    /// Starts a new request head.
    pub first: bool,
    /// The head's end is in this chunk.
    pub end: bool,
    /// The kernel cut the head at its capture budget.
    pub cut: bool,
    /// The connection's counters when the chunk arrived (`bytes_in` is the stream offset of
    /// the chunk's data).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Offset of the chunk within its head.
    pub offset: u32,
    pub heads_lost: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for HeadChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadChunk")
            .field("cookie", &self.cookie)
            .field("first", &self.first)
            .field("end", &self.end)
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// Decodes a head chunk: a `HeadEvent` header followed by `len` bytes of data.
pub fn head_chunk(bytes: &[u8]) -> Result<HeadChunk, DecodeError> {
    if bytes.len() < HeadEvent::HEADER {
        return Err(DecodeError::Size {
            got: bytes.len(),
            expected: HeadEvent::HEADER,
        });
    }
    let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let flags = u32_at(std::mem::offset_of!(HeadEvent, flags));
    let len = u32_at(std::mem::offset_of!(HeadEvent, len)) as usize;
    let got = bytes.len() - HeadEvent::HEADER;
    if len > HEAD_CAPTURE || len != got {
        return Err(DecodeError::HeadLength { len, got });
    }
    Ok(HeadChunk {
        cookie: u64_at(std::mem::offset_of!(HeadEvent, cookie)),
        ts_ns: u64_at(std::mem::offset_of!(HeadEvent, ts_ns)),
        first: flags & head_flags::FIRST != 0,
        end: flags & head_flags::END != 0,
        cut: flags & head_flags::CUT != 0,
        bytes_in: u64_at(std::mem::offset_of!(HeadEvent, bytes_in)),
        bytes_out: u64_at(std::mem::offset_of!(HeadEvent, bytes_out)),
        offset: u32_at(std::mem::offset_of!(HeadEvent, offset)),
        heads_lost: u32_at(std::mem::offset_of!(HeadEvent, heads_lost)),
        data: bytes[HeadEvent::HEADER..].to_vec(),
    })
}

/// What happened to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Open,
    Close,
}

/// Which mechanism counted a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// cgroup_skb + sock_ops on the watched cgroup.
    Cgroup,
    /// Socket tracepoints filtered by process.
    Tracepoint,
}

/// A decoded connection event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEventView {
    pub lifecycle: Lifecycle,
    pub cookie: u64,
    /// The process in whose context the event ran, if the kernel knew it.
    pub tgid: Option<u32>,
    pub ts_ns: u64,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub stats: ConnStats,
    pub tcp_bytes_received: u64,
    pub tcp_bytes_acked: u64,
}

/// Decodes one ring buffer record.
pub fn conn_event(bytes: &[u8]) -> Result<ConnEventView, DecodeError> {
    if bytes.len() != ConnEvent::SIZE {
        return Err(DecodeError::Size {
            got: bytes.len(),
            expected: ConnEvent::SIZE,
        });
    }
    // SAFETY: the length was checked; ConnEvent is plain data valid for any bytes, and
    // read_unaligned does not require the ring buffer's alignment.
    let ev: ConnEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let lifecycle = match ev.kind {
        kind::CONN_OPEN => Lifecycle::Open,
        kind::CONN_CLOSE => Lifecycle::Close,
        other => return Err(DecodeError::Kind(other)),
    };
    let (local, peer) = addresses(&ev.tuple);
    Ok(ConnEventView {
        lifecycle,
        cookie: ev.cookie,
        tgid: (ev.tgid != 0).then_some(ev.tgid),
        ts_ns: ev.ts_ns,
        local,
        peer,
        stats: ev.stats,
        tcp_bytes_received: ev.tcp_bytes_received,
        tcp_bytes_acked: ev.tcp_bytes_acked,
    })
}

/// The mechanism that created a `CONNS` entry.
pub fn mechanism(stats: &ConnStats) -> Mechanism {
    if stats.source == source::TRACEPOINT {
        Mechanism::Tracepoint
    } else {
        Mechanism::Cgroup
    }
}

/// Whether the counters cover the whole connection (its start was seen).
pub fn from_start(stats: &ConnStats) -> bool {
    stats.flags & flags::FROM_START != 0
}

/// Converts a kernel tuple to socket addresses; `None` when the family is unknown.
/// IPv4-mapped IPv6 addresses (a dual-stack socket talking IPv4) become IPv4.
pub fn addresses(t: &Tuple) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let ip = |raw: &[u8; 16]| -> Option<IpAddr> {
        match t.family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*raw)).to_canonical()),
            _ => None,
        }
    };
    (
        ip(&t.local_addr).map(|a| SocketAddr::new(a, t.local_port)),
        ip(&t.remote_addr).map(|a| SocketAddr::new(a, t.remote_port)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ev: &ConnEvent) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe {
            std::slice::from_raw_parts((ev as *const ConnEvent).cast::<u8>(), ConnEvent::SIZE)
        }
        .to_vec()
    }

    #[test]
    fn decodes_an_ipv4_close() {
        let mut ev = ConnEvent {
            kind: kind::CONN_CLOSE,
            tgid: 0,
            cookie: 42,
            ts_ns: 7,
            ..ConnEvent::default()
        };
        ev.tuple.family = AF_INET;
        ev.tuple.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.tuple.remote_addr[..4].copy_from_slice(&[10, 1, 2, 3]);
        ev.tuple.local_port = 8008;
        ev.tuple.remote_port = 40_000;
        ev.stats.bytes_out = 1234;
        let v = conn_event(&raw(&ev)).unwrap();
        assert_eq!(v.lifecycle, Lifecycle::Close);
        assert_eq!(v.tgid, None);
        assert_eq!(v.local.unwrap().to_string(), "127.0.0.1:8008");
        assert_eq!(v.peer.unwrap().to_string(), "10.1.2.3:40000");
        assert_eq!(v.stats.bytes_out, 1234);
    }

    #[test]
    fn ipv6_and_v4_mapped_addresses() {
        let mut t = Tuple {
            family: AF_INET6,
            local_port: 443,
            remote_port: 5000,
            ..Tuple::default()
        };
        t.local_addr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        t.remote_addr = "::ffff:192.0.2.7".parse::<Ipv6Addr>().unwrap().octets();
        let (l, p) = addresses(&t);
        assert_eq!(l.unwrap().to_string(), "[::1]:443");
        assert_eq!(p.unwrap().to_string(), "192.0.2.7:5000");
    }

    #[test]
    fn unknown_family_has_no_address() {
        assert_eq!(addresses(&Tuple::default()), (None, None));
    }

    #[test]
    fn decodes_a_head_chunk_cut_to_its_length() {
        let mut ev = HeadEvent {
            kind: kind::HEAD,
            flags: head_flags::FIRST | head_flags::END,
            cookie: 9,
            ts_ns: 5,
            bytes_in: 100,
            bytes_out: 2000,
            offset: 0,
            len: 4,
            heads_lost: 1,
            _pad: 0,
            data: [0; HEAD_CAPTURE],
        };
        ev.data[..4].copy_from_slice(b"GET ");
        // SAFETY: reading the bytes of a plain repr(C) value.
        let all = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const HeadEvent).cast::<u8>(),
                std::mem::size_of::<HeadEvent>(),
            )
        };
        let raw = &all[..HeadEvent::HEADER + 4];
        let Event::Head(c) = event(raw).unwrap() else {
            panic!("not a head")
        };
        assert_eq!(c.data, b"GET ");
        assert!(c.first && c.end && !c.cut);
        assert_eq!(
            (c.cookie, c.bytes_in, c.bytes_out, c.heads_lost),
            (9, 100, 2000, 1)
        );
        assert!(!format!("{c:?}").contains("GET"));
        // A length that disagrees with the record is an error, not a panic.
        assert!(matches!(
            head_chunk(&all[..HeadEvent::HEADER + 3]),
            Err(DecodeError::HeadLength { .. })
        ));
        assert!(event(&[1, 2]).is_err());
    }

    #[test]
    fn decodes_a_transfer_event() {
        let ev = TransferEvent {
            kind: kind::TRANSFER,
            cookie: 3,
            response_bytes: 600 << 20,
            threshold: 512 << 20,
            ..TransferEvent::default()
        };
        // SAFETY: reading the bytes of a plain repr(C) value.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const TransferEvent).cast::<u8>(),
                TransferEvent::SIZE,
            )
        };
        assert_eq!(event(raw), Ok(Event::Transfer(ev)));
        assert!(transfer(&raw[..8]).is_err());
    }

    #[test]
    fn rejects_wrong_size_and_kind() {
        assert_eq!(
            conn_event(&[0u8; 3]),
            Err(DecodeError::Size {
                got: 3,
                expected: ConnEvent::SIZE
            })
        );
        let ev = ConnEvent {
            kind: 99,
            ..ConnEvent::default()
        };
        assert_eq!(conn_event(&raw(&ev)), Err(DecodeError::Kind(99)));
    }
}
