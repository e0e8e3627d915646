//! Per-connection counters, the value of the `CONNS` map.

/// Which mechanism created the entry (and so whose byte counts are authoritative).
pub mod source {
    /// Created by the cgroup_skb or sock_ops programs of a watched cgroup.
    pub const CGROUP: u32 = 1;
    /// Created by the socket tracepoints for a watched process.
    pub const TRACEPOINT: u32 = 2;
}

/// Bits of `ConnStats::flags`.
pub mod flags {
    /// `seq_out_next` holds a valid sequence number.
    pub const SEQ_OUT_VALID: u32 = 1 << 0;
    /// `seq_in_next` holds a valid sequence number.
    pub const SEQ_IN_VALID: u32 = 1 << 1;
    /// The connection's start was seen (SYN or establishment), so the counts cover it all;
    /// without this bit the connection was already open when the sensor started and the
    /// counts run from the sensor's start.
    pub const FROM_START: u32 = 1 << 2;
    /// An open event was emitted for this entry.
    pub const OPEN_SENT: u32 = 1 << 3;
    /// The connection closed but its close event could not be sent (ring buffer full): the
    /// entry stays in `CONNS` with its final counters and the agent reports it from there.
    pub const CLOSED: u32 = 1 << 4;
    /// A FIN was received / sent (tracked only for connections open before the sensor).
    pub const FIN_IN: u32 = 1 << 5;
    pub const FIN_OUT: u32 = 1 << 6;
    /// Established by our side (`connect()`): the peer is a server, its data is never
    /// captured as request heads.
    pub const ACTIVE: u32 = 1 << 7;
    /// Accepted by a watched listener: the peer is a client sending requests.
    pub const PASSIVE: u32 = 1 << 8;
}

/// Values of `ConnStats::head_state`: where the connection is in the request/response
/// cycle of HTTP/1.x (no pipelining: a client sends its next request after the response).
pub mod head_state {
    /// The next payload from the peer starts a request head.
    pub const EXPECT: u32 = 0;
    /// A head has started and its end (`\r\n\r\n`) has not been seen yet.
    pub const PARTIAL: u32 = 1;
    /// The head ended (or its capture budget ran out): what follows is a body, until our
    /// side sends a response.
    pub const DONE: u32 = 2;
}

/// Live counters of one TCP connection, keyed by its socket cookie.
///
/// Byte counts are stream bytes: in cgroup mode they are the advance of the highest TCP
/// sequence number seen in each direction (so retransmitted segments are not counted twice);
/// in tracepoint mode they are the sum of the `ret` values of `sock_sendmsg`/`sock_recvmsg`
/// (exactly what the syscalls returned).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Payload bytes received by the watched side.
    pub bytes_in: u64,
    /// Payload bytes sent by the watched side.
    pub bytes_out: u64,
    /// Successful send calls on this socket (tracepoint mechanisms only, else 0).
    pub sends: u64,
    /// Successful receive calls on this socket (tracepoint mechanisms only, else 0).
    pub recvs: u64,
    /// Packets carrying payload, received (cgroup mode; a GRO/GSO packet counts once).
    pub segs_in: u64,
    /// Packets carrying payload, sent (cgroup mode; a GSO packet counts once).
    pub segs_out: u64,
    /// Bytes counted by the send/recv tracepoints, whatever the mode (cross-check).
    pub call_bytes_in: u64,
    pub call_bytes_out: u64,
    /// `bpf_ktime_get_ns()` when the entry was created.
    pub start_ns: u64,
    /// Next expected sequence number in each direction (cgroup mode).
    pub seq_in_next: u32,
    pub seq_out_next: u32,
    /// `flags::*`.
    pub flags: u32,
    /// `source::*`.
    pub source: u32,
    /// Process that created the entry when known in the kernel (tracepoint mode), else 0.
    pub tgid: u32,
    /// `head_state::*`.
    pub head_state: u32,
    /// Bytes of the current head captured so far.
    pub head_captured: u32,
    /// The last four bytes captured, to find a `\r\n\r\n` split across segments.
    pub head_window: u32,
    /// Head chunks of this connection lost because the ring buffer was full.
    pub heads_lost: u32,
    /// 1 once a transfer event was sent for the current response (reset at each head).
    pub transfer_reported: u32,
    /// `bytes_out` when the current request's head arrived: the response's start.
    pub response_base: u64,
}

/// A connection's addresses. IPv4 addresses are in the first four bytes of the arrays;
/// everything is in network byte order except the ports, which are host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// `AF_INET` or `AF_INET6`; 0 when unknown.
    pub family: u16,
    pub _pad: u16,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding fields, valid for any bytes.
    unsafe impl aya::Pod for super::ConnStats {}
    unsafe impl aya::Pod for super::Tuple {}
}
