//! Types and constants shared by the kernel programs (`sensor-ebpf`) and the agent
//! (`sensor-user`). Everything here is `#[repr(C)]` and plain data, so both sides agree on
//! the byte layout; map names are constants so there is never a second spelling.
#![no_std]

pub mod conn;
pub mod drops;
pub mod event;
pub mod head_end;
pub mod syscall;

/// Names of the maps in the kernel object. The kernel side declares its statics with these
/// exact names (checked by a unit test in `sensor-user` against the embedded object).
pub mod maps {
    /// `LruHashMap<u64 socket cookie, ConnStats>`: live per-connection counters.
    pub const CONNS: &str = "CONNS";
    /// `RingBuf`: connection lifecycle events (`ConnEvent`).
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<HeadEvent>` of one entry: scratch space to build a head chunk (too big
    /// for the 512-byte BPF stack) before it is copied, cut to its length, to `EVENTS`.
    pub const HEAD_SCRATCH: &str = "HEAD_SCRATCH";
    /// `Array<u64>` indexed by `event::settings::*`: values the agent sets at run time.
    pub const SETTINGS: &str = "SETTINGS";
    /// `PerCpuArray<u64>`, indexed by `drops::Drop`: every place that loses data.
    pub const DROPS: &str = "DROPS";
    /// `HashMap<u32 tgid, u32 watch::*>`: processes watched by the tracepoint mechanisms.
    pub const WATCHED_PIDS: &str = "WATCHED_PIDS";
    /// `HashMap<u64 cgroup id, u32>`: cgroups watched by the cgroup mechanisms (used by the
    /// tracepoint programs to recognise a watched task by its cgroup).
    pub const WATCHED_CGROUPS: &str = "WATCHED_CGROUPS";
    /// `PerCpuHashMap<SyscallKey, u64>`: syscall counts per watched process.
    pub const SYSCALLS: &str = "SYSCALLS";
    /// `PerCpuHashMap<u32 tgid, ProcIo>`: bytes read from files per watched process.
    pub const PROC_IO: &str = "PROC_IO";
    /// `HashMap<u32 syscall nr, u32>`: which syscall numbers are reads (arch-specific, filled
    /// by the agent at load time because the object is the same for every architecture).
    pub const READ_SYSCALLS: &str = "READ_SYSCALLS";
    /// `HashMap<u64 pid_tgid, u32>`: read-family syscalls in progress in watched threads;
    /// the value becomes 1 when a socket receive happens inside the call.
    pub const PENDING_READS: &str = "PENDING_READS";
}

/// Default sizes of the maps; the agent may override them at load time.
pub mod sizes {
    /// Live connections tracked at once. An LRU map: when full, the least recently used
    /// entry is evicted. The kernel does not report evictions; the agent counts them when an
    /// evicted connection shows up again (a second open event for its cookie) or closes
    /// (`drops::Drop::CloseUntracked`).
    pub const CONNS_MAX: u32 = 131_072;
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub const EVENTS_BYTES: u32 = 4 << 20;
    pub const WATCHED_PIDS_MAX: u32 = 1024;
    pub const WATCHED_CGROUPS_MAX: u32 = 64;
    /// (process, syscall) pairs.
    pub const SYSCALLS_MAX: u32 = 16_384;
    pub const PROC_IO_MAX: u32 = 1024;
    pub const READ_SYSCALLS_MAX: u32 = 16;
    /// Watched threads inside a read-family syscall at once.
    pub const PENDING_READS_MAX: u32 = 16_384;
}

/// Names of the programs in the kernel object (the Rust function names).
pub mod programs {
    pub const SKB_INGRESS: &str = "conn_ingress";
    /// `conn_ingress` without request heads, for kernels without `bpf_loop` (before 5.17).
    pub const SKB_INGRESS_BASIC: &str = "conn_ingress_basic";
    /// A twin of `conn_ingress` that every kernel's verifier refuses, loaded in its place
    /// only when a test asks (`HOMESERVER_SENSOR_TEST_REFUSE_HEADS`), to show how the agent
    /// answers a refused request-head program. Never attached.
    pub const SKB_INGRESS_REFUSED: &str = "conn_ingress_refused";
    pub const SKB_EGRESS: &str = "conn_egress";
    pub const SOCK_OPS: &str = "conn_sockops";
    pub const SOCK_SEND: &str = "sock_send_length";
    pub const SOCK_RECV: &str = "sock_recv_length";
    pub const SOCK_STATE: &str = "inet_sock_set_state";
    pub const SYS_ENTER: &str = "sys_enter";
    pub const SYS_EXIT: &str = "sys_exit";
}

/// Values of the `WATCHED_PIDS` map.
pub mod watch {
    /// The process is watched by the tracepoint mechanism: the socket tracepoints create
    /// its connections and count their bytes (no cgroup program sees them).
    pub const OWNS_CONNS: u32 = 1 << 0;
}

/// Kernel constants the programs rely on, from the uapi headers.
pub mod kernel {
    pub const AF_INET: u16 = 2;
    pub const AF_INET6: u16 = 10;
    /// `TCP_CLOSE` from `include/net/tcp_states.h`.
    pub const TCP_CLOSE: u32 = 7;
    pub const IPPROTO_TCP: u8 = 6;
}
