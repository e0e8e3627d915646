//! Indexes of the `DROPS` per-CPU array: every place in the kernel programs that can lose
//! data increments one of these, and the agent exports them.

/// A place where data can be lost.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The ring buffer was full when a connection open event was due.
    RingbufOpen = 0,
    /// The ring buffer was full when a connection close event was due: the connection's
    /// final counters stay in `CONNS` until the LRU evicts them.
    RingbufClose = 1,
    /// Inserting into `CONNS` failed.
    ConnInsert = 2,
    /// A packet of a watched cgroup could not be parsed (truncated or unknown headers).
    SkbUnparsed = 3,
    /// Inserting into `SYSCALLS` failed (map full).
    SyscallInsert = 4,
    /// Inserting into `PROC_IO` failed (map full).
    ProcIoInsert = 5,
    /// Inserting into `PENDING_READS` failed: that read's bytes are not counted.
    PendingReadInsert = 6,
    /// A close was seen for a connection that has no entry (evicted from the LRU, or open
    /// before the sensor started and never active since).
    CloseUntracked = 7,
    /// The ring buffer was full when a request head chunk was due.
    RingbufHead = 8,
    /// A request head was longer than the capture budget (`HEAD_CAPTURE`) and was cut.
    HeadCut = 9,
    /// The ring buffer was full when a transfer event was due: the transfer is still
    /// reported when its connection closes, just not while it runs.
    RingbufTransfer = 10,
    /// Data arrived on the segment that completed a connection's handshake, so the kernel
    /// ran the ingress program on the listening socket, not the new connection: its request
    /// head is not captured (sock_ops counts its bytes at establishment). Happens on
    /// loopback when the client's last ACK and first data are processed out of order on two
    /// CPUs, and for TCP Fast Open data (whose bytes are then missing too).
    HandshakeData = 11,
}

impl Drop {
    /// Number of entries in `DROPS`.
    pub const COUNT: u32 = 12;
    pub const ALL: [Drop; Self::COUNT as usize] = [
        Drop::RingbufOpen,
        Drop::RingbufClose,
        Drop::ConnInsert,
        Drop::SkbUnparsed,
        Drop::SyscallInsert,
        Drop::ProcIoInsert,
        Drop::PendingReadInsert,
        Drop::CloseUntracked,
        Drop::RingbufHead,
        Drop::HeadCut,
        Drop::RingbufTransfer,
        Drop::HandshakeData,
    ];

    /// The name used in records and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Drop::RingbufOpen => "ringbuf_full_open",
            Drop::RingbufClose => "ringbuf_full_close",
            Drop::ConnInsert => "conn_map_insert",
            Drop::SkbUnparsed => "skb_unparsed",
            Drop::SyscallInsert => "syscall_map_insert",
            Drop::ProcIoInsert => "proc_io_map_insert",
            Drop::PendingReadInsert => "pending_read_insert",
            Drop::CloseUntracked => "close_untracked",
            Drop::RingbufHead => "ringbuf_full_head",
            Drop::HeadCut => "head_cut",
            Drop::RingbufTransfer => "ringbuf_full_transfer",
            Drop::HandshakeData => "handshake_data",
        }
    }
}
