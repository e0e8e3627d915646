//! Records sent through the `EVENTS` ring buffer.

use crate::conn::{ConnStats, Tuple};

/// `ConnEvent::kind` values.
pub mod kind {
    /// A watched connection was established (or first seen).
    pub const CONN_OPEN: u32 = 1;
    /// A watched connection reached `TCP_CLOSE`; the event carries its final counters.
    pub const CONN_CLOSE: u32 = 2;
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
}
