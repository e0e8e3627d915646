//! Helpers shared by the connection hooks: find or create a `CONNS` entry, emit lifecycle
//! events with their counters.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use sensor_common::{
    conn::{ConnStats, Tuple, flags},
    drops::Drop,
    event::{ConnEvent, kind},
    kernel::{AF_INET, AF_INET6},
};

use crate::maps::{CONNS, EVENTS, count_drop, lazy_wakeup};

/// Returns the entry of `cookie`, creating it (with `source`, `flags` and `tgid`) when absent.
#[inline(always)]
pub fn get_or_create(
    cookie: u64,
    source: u32,
    new_flags: u32,
    tgid: u32,
) -> Option<*mut ConnStats> {
    if let Some(stats) = CONNS.get_ptr_mut(cookie) {
        return Some(stats);
    }
    let fresh = ConnStats {
        // SAFETY: helper without arguments.
        start_ns: unsafe { bpf_ktime_get_ns() },
        source,
        flags: new_flags,
        tgid,
        ..ConnStats::default()
    };
    // BPF_NOEXIST: another CPU may have created it meanwhile; then we use theirs.
    if CONNS.insert(cookie, fresh, 1).is_err() && CONNS.get_ptr_mut(cookie).is_none() {
        count_drop(Drop::ConnInsert);
        return None;
    }
    CONNS.get_ptr_mut(cookie)
}

/// Sends a lifecycle event; counts `drop_place` if the ring buffer is full.
#[inline(always)]
pub fn emit(
    event_kind: u32,
    cookie: u64,
    tgid: u32,
    tuple: &Tuple,
    stats: &ConnStats,
    tcp_counts: (u64, u64),
) -> bool {
    let drop_place = if event_kind == kind::CONN_OPEN {
        Drop::RingbufOpen
    } else {
        Drop::RingbufClose
    };
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count_drop(drop_place);
        return false;
    };
    // Field by field into the reserved record: a `ConnEvent` built on the stack first
    // (200 bytes) would push the callers past the 512-byte combined stack limit of kernels
    // without per-subprogram stacks (before 6.13 on x86_64; Debian 12's 6.1 refused
    // the ingress program with "combined stack size of 3 calls is 544").
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to the reserved, writable record of the right size.
    unsafe {
        (*event).kind = event_kind;
        (*event).tgid = tgid;
        (*event).cookie = cookie;
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).tuple = *tuple;
        (*event).stats = *stats;
        (*event).tcp_bytes_received = tcp_counts.0;
        (*event).tcp_bytes_acked = tcp_counts.1;
    }
    // Drained by the agent's timer (see `lazy_wakeup`).
    entry.submit(lazy_wakeup());
    true
}

/// Emits the open event of an entry once.
#[inline(always)]
pub fn emit_open_once(cookie: u64, tgid: u32, tuple: &Tuple, stats: *mut ConnStats) {
    // SAFETY: `stats` points into a live map value.
    unsafe {
        if (*stats).flags & flags::OPEN_SENT != 0 {
            return;
        }
        (*stats).flags |= flags::OPEN_SENT;
        emit(kind::CONN_OPEN, cookie, tgid, tuple, &*stats, (0, 0));
    }
}

/// Emits the close event with the final counters and forgets the connection.
#[inline(always)]
pub fn close(cookie: u64, tuple: &Tuple, tcp_counts: (u64, u64)) {
    let Some(stats) = CONNS.get_ptr(cookie) else {
        count_drop(Drop::CloseUntracked);
        return;
    };
    // SAFETY: `stats` points into a live map value, deleted only after the event has its
    // copy of the counters.
    let sent = unsafe {
        emit(
            kind::CONN_CLOSE,
            cookie,
            (*stats).tgid,
            tuple,
            &*stats,
            tcp_counts,
        )
    };
    if sent {
        let _ = CONNS.remove(cookie);
    } else {
        // Keep the final counters where the agent's sweep will find them.
        // SAFETY: as above; the entry is still live.
        unsafe { (*(stats as *mut ConnStats)).flags |= flags::CLOSED };
    }
}

/// The socket fields that the sock_ops and cgroup_skb contexts both expose, with the same
/// conventions (`sock_ops_convert_ctx_access()` and `bpf_convert_ctx_access()`,
/// net/core/filter.c): addresses in network order, `local_port` in host order,
/// `remote_port` the network-order port shifted left by 16 on little-endian.
pub struct CtxSocket {
    pub family: u32,
    pub local_ip4: u32,
    pub remote_ip4: u32,
    /// Pointers to the context's IPv6 address fields.
    pub local_ip6: *const [u32; 4],
    pub remote_ip6: *const [u32; 4],
    pub local_port: u32,
    pub remote_port: u32,
}

impl CtxSocket {
    /// The 4-tuple. The verifier allows only 4-byte loads of the IPv6 address fields, so
    /// their words are read one by one.
    #[inline(always)]
    pub fn tuple(&self) -> Tuple {
        let mut t = Tuple {
            local_port: self.local_port as u16,
            remote_port: u16::from_be((self.remote_port >> 16) as u16),
            ..Tuple::default()
        };
        match self.family as u16 {
            AF_INET => {
                t.family = AF_INET;
                t.local_addr[..4].copy_from_slice(&self.local_ip4.to_ne_bytes());
                t.remote_addr[..4].copy_from_slice(&self.remote_ip4.to_ne_bytes());
            }
            AF_INET6 => {
                t.family = AF_INET6;
                for i in 0..4 {
                    // SAFETY: in-bounds 4-byte loads of context fields.
                    let (l, r) = unsafe {
                        (
                            core::ptr::read_volatile(self.local_ip6.cast::<u32>().add(i)),
                            core::ptr::read_volatile(self.remote_ip6.cast::<u32>().add(i)),
                        )
                    };
                    t.local_addr[i * 4..i * 4 + 4].copy_from_slice(&l.to_ne_bytes());
                    t.remote_addr[i * 4..i * 4 + 4].copy_from_slice(&r.to_ne_bytes());
                }
            }
            _ => {}
        }
        t
    }
}
