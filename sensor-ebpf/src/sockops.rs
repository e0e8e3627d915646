//! sock_ops program: connection lifecycle of the watched cgroup.
//!
//! Attached to the watched cgroup only. The kernel calls it from `tcp_call_bpf()`
//! (include/net/tcp.h) at these points, with the `op` values of include/uapi/linux/bpf.h:
//! - `BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB` (4) from `tcp_finish_connect()` and
//!   `BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB` (5) from `tcp_init_transfer()`
//!   (net/ipv4/tcp_input.c): a connection is established. We create its entry, emit the
//!   open event with the 4-tuple and ask for state callbacks.
//! - `BPF_SOCK_OPS_STATE_CB` (10), from `tcp_set_state()` (net/ipv4/tcp.c) once
//!   `BPF_SOCK_OPS_STATE_CB_FLAG` is set, with `args[0]` = old state, `args[1]` = new state.
//!   At `TCP_CLOSE` the socket is done, whether or not its file descriptor is still open
//!   (a peer's FIN after our `shutdown()` closes the socket first), so the close event
//!   carries the final counters.
//!
//! Field semantics of `struct bpf_sock_ops`: `local_port` is in host byte order,
//! `remote_port` is the network-order port shifted left by 16 on little-endian
//! (`sock_ops_convert_ctx_access()` in net/core/filter.c), addresses are network order.

use aya_ebpf::{
    bindings::bpf_sock_ops, helpers::bpf_get_socket_cookie, macros::sock_ops,
    programs::SockOpsContext,
};
use sensor_common::{
    conn::{ConnStats, Tuple, flags, head_state, source},
    kernel::TCP_CLOSE,
};

use crate::conn::{CtxSocket, close, emit_open_once, get_or_create};

const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;
const BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: u32 = 5;
const BPF_SOCK_OPS_STATE_CB: u32 = 10;
const BPF_SOCK_OPS_STATE_CB_FLAG: u32 = 1 << 2;

#[sock_ops]
pub fn conn_sockops(ctx: SockOpsContext) -> u32 {
    let _ = try_conn_sockops(&ctx);
    // sock_ops programs report success with 1; the value is not a verdict here.
    1
}

fn try_conn_sockops(ctx: &SockOpsContext) -> Result<(), i64> {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32)
                .map_err(i64::from)?;
            let cookie = cookie(ctx);
            let tuple = tuple(ctx);
            let side = if ctx.op() == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
                flags::ACTIVE
            } else {
                flags::PASSIVE
            };
            let stats =
                get_or_create(cookie, source::CGROUP, flags::FROM_START | side, 0).ok_or(0i64)?;
            // SAFETY: `stats` points into a live map value.
            unsafe { (*stats).flags |= flags::FROM_START | side };
            if side == flags::PASSIVE {
                // SAFETY: as above.
                count_handshake_data(ctx, unsafe { &mut *stats });
            }
            emit_open_once(cookie, 0, &tuple, stats);
        }
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => {
            let ops = ctx.ops;
            // SAFETY: `ops` is the program's context; these are plain u64 context fields.
            let counts = unsafe { ((*ops).bytes_received, (*ops).bytes_acked) };
            close(cookie(ctx), &tuple(ctx), counts);
        }
        _ => {}
    }
    Ok(())
}

/// The segment that completed the handshake may carry the client's first data: when it is
/// processed before the client's pure ACK (on loopback, the two can be handled on two CPUs
/// out of order), or after that ACK was dropped (accept queue full). The kernel then ran
/// the ingress program on the listening socket (skb.rs counts `handshake_data` there), and
/// this connection's ingress never sees that data: count its bytes here, from the segment
/// `tcp_init_transfer()` passes (`bpf_skops_init_skb()`, net/ipv4/tcp_input.c: `skb_data`
/// is the TCP header, `skb_data_end` its end, `skb_len` header and payload; Linux 5.10+).
/// Its request head is not captured: the head logic waits for the next request.
fn count_handshake_data(ctx: &SockOpsContext, stats: &mut ConnStats) {
    let ops = ctx.ops;
    // SAFETY: `ops` is the program's context; these are its packet pointers and lengths.
    let (data, end, skb_len, rcv_nxt) = unsafe {
        (
            (*ops).__bindgen_anon_3.skb_data as usize,
            (*ops).__bindgen_anon_4.skb_data_end as usize,
            (*ops).skb_len,
            (*ops).rcv_nxt,
        )
    };
    // The data offset is the high nibble of byte 12 of the TCP header (RFC 9293).
    if data + 13 > end {
        return;
    }
    // SAFETY: bounds checked against `skb_data_end` just above.
    let header_len = u32::from(unsafe { *((data + 12) as *const u8) } >> 4) * 4;
    if skb_len <= header_len {
        return;
    }
    let payload = skb_len - header_len;
    // The data starts at rcv_nxt: it is queued only after this callback.
    stats.bytes_in += u64::from(payload);
    stats.segs_in += 1;
    stats.seq_in_next = rcv_nxt.wrapping_add(payload);
    stats.flags |= flags::SEQ_IN_VALID;
    stats.head_state = head_state::DONE;
}

fn cookie(ctx: &SockOpsContext) -> u64 {
    // SAFETY: the context is a valid `bpf_sock_ops` for the helper.
    unsafe { bpf_get_socket_cookie(ctx.ops as *mut _) }
}

fn tuple(ctx: &SockOpsContext) -> Tuple {
    let ops: *const bpf_sock_ops = ctx.ops;
    CtxSocket {
        family: ctx.family(),
        local_ip4: ctx.local_ip4(),
        remote_ip4: ctx.remote_ip4(),
        // SAFETY: addresses of context fields; nothing is read here.
        local_ip6: unsafe { &raw const (*ops).local_ip6 },
        remote_ip6: unsafe { &raw const (*ops).remote_ip6 },
        local_port: ctx.local_port(),
        remote_port: ctx.remote_port(),
    }
    .tuple()
}
