//! BTF tracepoints on the socket layer: send/receive calls of watched processes and, in
//! tracepoint mode, connection lifecycle.
//!
//! - `sock:sock_send_length` and `sock:sock_recv_length` (Linux 6.3+,
//!   include/trace/events/sock.h, `TP_PROTO(struct sock *sk, int ret, int flags)`), fired
//!   from `sock_sendmsg_nosec()` / `sock_recvmsg_nosec()` (net/socket.c) after every socket
//!   send or receive, whatever the syscall (send, write, sendmsg, writev, sendfile, recv,
//!   read, ...). `ret` is what the call returned; `flags & MSG_PEEK` marks a peek. The format
//!   file on this machine: `void *sk @8; __u16 family @16; __u16 protocol @18; int ret @20;
//!   int flags @24`; as tp_btf programs we get the raw arguments instead.
//! - `sock:inet_sock_set_state` (include/trace/events/sock.h,
//!   `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)`), fired by
//!   `inet_sk_set_state()` / `inet_sk_state_store()` on every TCP state change; used only in
//!   tracepoint mode, where no sock_ops program reports closes.
//!
//! In tracepoint mode the send tracepoint also reports a connection crossing the
//! single-transfer threshold (transfer.rs), as the egress program does in cgroup mode.
//!
//! These run for every process's socket calls (they are not scoped to a cgroup), so the
//! first thing they do is the watched check: one helper and at most two map lookups.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_probe_read_kernel, bpf_skc_to_tcp_sock,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sensor_common::{
    conn::{ConnStats, Tuple, source},
    kernel::{AF_INET, AF_INET6, TCP_CLOSE},
    watch,
};

use crate::{
    conn::{close, emit_open_once, get_or_create},
    maps::{CONNS, PENDING_READS, watch_of},
    transfer,
};

/// `MSG_PEEK` from include/linux/socket.h: a peek returns data without consuming it.
const MSG_PEEK: i32 = 2;

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sock_io(&ctx, Direction::Out);
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sock_io(&ctx, Direction::In);
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

fn try_sock_io(ctx: &BtfTracePointContext, dir: Direction) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(watch_flags) = watch_of(tgid) else {
        return Ok(());
    };
    let owns = watch_flags & watch::OWNS_CONNS != 0;
    let sk: *mut c_void = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let call_flags: i32 = ctx.arg(2);
    if ret < 0 || call_flags & MSG_PEEK != 0 {
        return Ok(());
    }
    if dir == Direction::In {
        // Tell sys_exit (when the syscall programs are attached) that this read-family call
        // read a socket, not a file.
        if let Some(pending) = PENDING_READS.get_ptr_mut(pid_tgid) {
            // SAFETY: points into a live map value.
            unsafe { *pending = 1 };
        }
    }
    // SAFETY: `sk` is the tracepoint's BTF-typed socket argument.
    if unsafe { bpf_skc_to_tcp_sock(sk) }.is_null() {
        return Ok(());
    }
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let stats = if owns {
        let Some(stats) = get_or_create(cookie, source::TRACEPOINT, 0, tgid) else {
            return Ok(());
        };
        emit_open_once(cookie, tgid, &read_tuple(sk), stats);
        stats
    } else {
        // The cgroup programs own the entry; we only add the call counts.
        let Some(stats) = CONNS.get_ptr_mut(cookie) else {
            return Ok(());
        };
        stats
    };
    // SAFETY: `stats` points into a live map value.
    unsafe { count_call(&mut *stats, dir, ret as u64, owns) };
    if owns && dir == Direction::Out {
        // Tracepoint mode has no request heads: the count runs from the connection's start,
        // so the single-transfer rule sees the connection's bytes out.
        // SAFETY: as above.
        transfer::on_bytes_out(cookie, unsafe { &mut *stats });
    }
    Ok(())
}

#[inline(always)]
fn count_call(stats: &mut ConnStats, dir: Direction, bytes: u64, owns_bytes: bool) {
    match dir {
        Direction::In => {
            stats.recvs += 1;
            stats.call_bytes_in += bytes;
            if owns_bytes {
                stats.bytes_in += bytes;
            }
        }
        Direction::Out => {
            stats.sends += 1;
            stats.call_bytes_out += bytes;
            if owns_bytes {
                stats.bytes_out += bytes;
            }
        }
    }
}

fn try_inet_sock_set_state(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let newstate: i32 = ctx.arg(2);
    if newstate as u32 != TCP_CLOSE {
        return Ok(());
    }
    let sk: *mut c_void = ctx.arg(0);
    // SAFETY: `sk` is the tracepoint's BTF-typed socket argument.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    // Most state changes on the host are not ours: one lookup and out.
    if CONNS.get_ptr(cookie).is_none() {
        return Ok(());
    }
    close(cookie, &read_tuple(sk), (0, 0));
    Ok(())
}

/// The head of `struct sock_common` (include/net/sock.h), which starts `struct sock`:
/// `skc_daddr` @0, `skc_rcv_saddr` @4, `skc_hash` @8, `skc_dport` (network order) @12,
/// `skc_num` (host order) @14, `skc_family` @16. These offsets have not moved since Linux
/// 3.x on 64-bit kernels.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockCommonHead {
    daddr: [u8; 4],
    rcv_saddr: [u8; 4],
    hash: u32,
    dport: u16,
    num: u16,
    family: u16,
    _pad: u16,
}

/// `skc_v6_daddr` @56 and `skc_v6_rcv_saddr` @72 follow `skc_bind_node` (@24, 16 bytes),
/// `skc_prot` (@40) and `skc_net` (@48) when CONFIG_IPV6 is set (every distribution kernel).
const SKC_V6_DADDR_OFFSET: usize = 56;

fn read_tuple(sk: *mut c_void) -> Tuple {
    let mut t = Tuple::default();
    // SAFETY: a probe read of kernel memory; a failure is returned as an error.
    let Ok(head) = (unsafe { bpf_probe_read_kernel(sk as *const SockCommonHead) }) else {
        return t;
    };
    t.local_port = head.num;
    t.remote_port = u16::from_be(head.dport);
    if head.family == AF_INET {
        t.family = AF_INET;
        t.local_addr[..4].copy_from_slice(&head.rcv_saddr);
        t.remote_addr[..4].copy_from_slice(&head.daddr);
    } else if head.family == AF_INET6 {
        t.family = AF_INET6;
        // SAFETY: as above; the addresses stay zero if the read fails.
        let v6 = unsafe {
            bpf_probe_read_kernel((sk as *const u8).add(SKC_V6_DADDR_OFFSET) as *const [u8; 32])
        }
        .unwrap_or([0; 32]);
        t.remote_addr.copy_from_slice(&v6[..16]);
        t.local_addr.copy_from_slice(&v6[16..]);
    }
    t
}
