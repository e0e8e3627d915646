//! Records sent through the `EVENTS` ring buffer.

use crate::conn::{ConnStats, Tuple};

/// `ConnEvent::kind` values.
pub mod kind {
    /// A watched connection was established (or first seen).
    pub const CONN_OPEN: u32 = 1;
    /// A watched connection reached `TCP_CLOSE`; the event carries its final counters.
    pub const CONN_CLOSE: u32 = 2;
    /// A chunk of a request head (`HeadEvent`).
    pub const HEAD: u32 = 3;
    /// A response (or, before any head, a connection) crossed the single-transfer
    /// threshold while it was being sent (`TransferEvent`).
    pub const TRANSFER: u32 = 4;
}

/// Sent once per response when the bytes it has sent so far cross the single-transfer
/// threshold (`settings::TRANSFER_THRESHOLD`), while the transfer is still running: the
/// agent does not wait for the end to say so. Sent with `BPF_RB_FORCE_WAKEUP`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferEvent {
    /// `kind::TRANSFER`.
    pub kind: u32,
    pub _pad: u32,
    pub cookie: u64,
    pub ts_ns: u64,
    /// Bytes of the current response so far (since its request's head, or since the
    /// connection's start when no head was seen).
    pub response_bytes: u64,
    /// The connection's totals.
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// The threshold that was crossed.
    pub threshold: u64,
}

impl TransferEvent {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Indexes of the `SETTINGS` array, which the agent writes at start and on reload.
pub mod settings {
    /// Bytes of one response above which a `TransferEvent` is sent; 0 turns it off.
    pub const TRANSFER_THRESHOLD: u32 = 0;
    pub const COUNT: u32 = 1;
}

/// How many bytes of a request head are captured at most. Heads that Synapse receives
/// through nginx are a few hundred bytes to about 1.5 KiB (nginx's own headers, then the
/// client's, `Authorization` last); browsers with cookies send more. 4 KiB covers them with
/// room to spare; longer heads are cut and counted (`HEAD_CUT`).
pub const HEAD_CAPTURE: usize = 4096;

/// Bits of `HeadEvent::flags`.
pub mod head_flags {
    /// The chunk starts a new request head (offset 0).
    pub const FIRST: u32 = 1 << 0;
    /// The head's end (`\r\n\r\n`) is inside this chunk.
    pub const END: u32 = 1 << 1;
    /// The capture budget ran out before the head's end: the head is cut.
    pub const CUT: u32 = 1 << 2;
}

/// A chunk of a request head, with the connection's counters when it arrived, so the agent
/// can attribute exact bytes to each request of a keep-alive connection. Only
/// `HEAD_HEADER + len` bytes are sent: `data` is cut to `len`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeadEvent {
    /// `kind::HEAD`.
    pub kind: u32,
    /// `head_flags::*`.
    pub flags: u32,
    pub cookie: u64,
    pub ts_ns: u64,
    /// The connection's `bytes_in` before this chunk's data: the stream offset of the data.
    pub bytes_in: u64,
    /// The connection's `bytes_out` when the chunk arrived.
    pub bytes_out: u64,
    /// Offset of this chunk within the head.
    pub offset: u32,
    /// Bytes of `data` that are valid.
    pub len: u32,
    /// The connection's `heads_lost` when the chunk was sent: an increase since the
    /// previous chunk means chunks of this connection were lost in between.
    pub heads_lost: u32,
    pub _pad: u32,
    pub data: [u8; HEAD_CAPTURE],
}

impl HeadEvent {
    /// Bytes before `data`.
    pub const HEADER: usize = core::mem::offset_of!(HeadEvent, data);
}

/// A connection lifecycle event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    /// `kind::*`.
    pub kind: u32,
    /// The process in whose context the event happened, when that is a watched process;
    /// 0 when the event ran in softirq context (accepted connections) and the agent must
    /// attribute the connection itself.
    pub tgid: u32,
    pub cookie: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub tuple: Tuple,
    /// The counters: at open, whatever was counted so far; at close, the final values.
    pub stats: ConnStats,
    /// The TCP stack's own `bytes_received` / `bytes_acked` (RFC 4898) at close, from
    /// sock_ops (cgroup mode); 0 otherwise. A FIN counts one sequence number in each.
    pub tcp_bytes_received: u64,
    pub tcp_bytes_acked: u64,
}

impl ConnEvent {
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data, valid for any bytes.
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for super::HeadEvent {}
    unsafe impl aya::Pod for super::TransferEvent {}
}
