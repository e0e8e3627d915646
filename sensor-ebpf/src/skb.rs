//! cgroup_skb programs: per-connection stream bytes of the watched cgroup.
//!
//! Attached to the watched cgroup v2 directory only, so processes outside it never run them
//! (the kernel calls them from `__cgroup_bpf_run_filter_skb`, kernel/bpf/cgroup.c, only for
//! sockets whose cgroup has programs). The packet starts at its network header (the kernel
//! pushes `skb->data` back to it before running the program).
//!
//! Bytes are counted as the advance of the highest TCP sequence number seen, so a
//! retransmitted segment is not counted twice and a GSO/GRO packet counts all its payload.

use aya_ebpf::{
    bindings::__sk_buff, helpers::bpf_get_socket_cookie, macros::cgroup_skb,
    programs::SkBuffContext,
};
use sensor_common::{
    conn::{ConnStats, Tuple, flags, source},
    drops::Drop,
    kernel::IPPROTO_TCP,
};

use crate::{
    conn::{CtxSocket, close, emit_open_once, get_or_create},
    head,
    maps::{CONNS, SETTINGS, count_drop},
    transfer,
};

/// Always let the packet through: the sensor observes, it never filters.
const PASS: i32 = 1;

/// TCP flag bits (RFC 9293, byte 13 of the header).
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

/// Counts and captures request heads (head.rs; needs `bpf_loop`, Linux 5.17+).
#[cgroup_skb(ingress)]
pub fn conn_ingress(ctx: SkBuffContext) -> i32 {
    let _ = try_count(&ctx, Direction::In, Heads::Capture);
    PASS
}

/// The same without request heads, for kernels that refuse `conn_ingress`.
#[cgroup_skb(ingress)]
pub fn conn_ingress_basic(ctx: SkBuffContext) -> i32 {
    let _ = try_count(&ctx, Direction::In, Heads::Skip);
    PASS
}

/// Refused by every verifier: it reads past the end of a map value ("invalid access to map
/// value"). The agent loads it instead of `conn_ingress` only for the test of its refusal
/// (`sensor_common::programs::SKB_INGRESS_REFUSED`); it is never attached.
#[cgroup_skb(ingress)]
pub fn conn_ingress_refused(_ctx: SkBuffContext) -> i32 {
    if let Some(value) = SETTINGS.get_ptr(0) {
        // SAFETY: none: the verifier rejects this read, which is the point; the program
        // never runs.
        unsafe { core::ptr::read_volatile(value.cast::<u8>().wrapping_add(4096)) };
    }
    PASS
}

#[cgroup_skb(egress)]
pub fn conn_egress(ctx: SkBuffContext) -> i32 {
    let _ = try_count(&ctx, Direction::Out, Heads::Capture);
    PASS
}

/// Whether the ingress program captures request heads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Heads {
    Capture,
    Skip,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

/// The first 20 bytes of an IPv4 header (RFC 791).
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Head {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    protocol: u8,
    rest: [u8; 10],
}

/// The fixed 40-byte IPv6 header (RFC 8200).
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Head {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    addrs: [u8; 32],
}

/// The fixed 20-byte TCP header (RFC 9293).
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHead {
    ports: [u8; 4],
    seq: [u8; 4],
    ack: [u8; 4],
    data_offset: u8,
    flags: u8,
    rest: [u8; 6],
}

/// Reads a header at `offset` in the packet: straight from its linear part when it lies
/// there (always, for the IP and TCP headers the stack builds or GRO merges: no helper
/// call), else with `bpf_skb_load_bytes`. cgroup_skb programs may read `data` and
/// `data_end` since Linux 4.20 (`cg_skb_is_valid_access()`, net/core/filter.c).
#[inline(always)]
fn header<T: Copy>(ctx: &SkBuffContext, offset: usize) -> Result<T, i64> {
    let skb: *const __sk_buff = ctx.skb.skb;
    // SAFETY: context fields the verifier turns into the packet's bounds.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let start = data + offset;
    if start + core::mem::size_of::<T>() <= end {
        // SAFETY: the bytes lie between `data` and `data_end`, checked just above.
        return Ok(unsafe { (start as *const T).read_unaligned() });
    }
    ctx.load(offset)
}

#[inline(always)]
fn try_count(ctx: &SkBuffContext, dir: Direction, heads: Heads) -> Result<(), i64> {
    // Every IP packet is at least as long as an IPv4 header, whose first nibble is the
    // version in both (a one-byte read would be a bounds check the verifier cannot use:
    // LLVM turns `data + 1 <= end` into `data < end`).
    let ip: Ipv4Head = header(ctx, 0)?;
    let (ip_len, protocol) = match ip.version_ihl >> 4 {
        4 => (u32::from(ip.version_ihl & 0x0f) * 4, ip.protocol),
        6 => {
            // Extension headers before TCP are not followed (none on a proxy hop in
            // practice); such packets are counted as unparsed below.
            let ip: Ipv6Head = header(ctx, 0)?;
            (40, ip.next_header)
        }
        _ => return Ok(()),
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let Ok(tcp) = header::<TcpHead>(ctx, ip_len as usize) else {
        count_drop(Drop::SkbUnparsed);
        return Ok(());
    };
    let header_len = ip_len + u32::from(tcp.data_offset >> 4) * 4;
    let len = ctx.len();
    if len < header_len {
        count_drop(Drop::SkbUnparsed);
        return Ok(());
    }
    let payload = len - header_len;
    // A listening socket has no peer: the kernel runs ingress on the listener for the
    // segment that completes a handshake (tcp_v4_rcv/tcp_v6_rcv, TCP_NEW_SYN_RECV). Data on
    // it belongs to a connection that has no socket (and no cookie) yet: count the loss
    // instead of creating an entry for the listener.
    if dir == Direction::In && payload > 0 && ctx.skb.remote_port() == 0 {
        count_drop(Drop::HandshakeData);
        return Ok(());
    }
    let ends = tcp.flags & (TCP_FIN | TCP_RST) != 0;
    if payload == 0 && !ends {
        // Pure ACKs and SYNs: nothing to count, and no map access on the hot path.
        return Ok(());
    }
    // SAFETY: the context is a valid `__sk_buff` for the helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb as *mut _) };
    if payload > 0 {
        // A SYN consumes one sequence number before the payload (TCP Fast Open).
        let syn = u32::from(tcp.flags & TCP_SYN != 0);
        let start = u32::from_be_bytes(tcp.seq).wrapping_add(syn);
        let Some(stats) = get_or_create(cookie, source::CGROUP, 0, 0) else {
            return Ok(());
        };
        // SAFETY: `stats` points into a live map value.
        let stats_ref = unsafe { &mut *stats };
        match (dir, advance(stats_ref, dir, start, payload)) {
            // The new data is at the end of the segment (a retransmission may overlap it).
            (Direction::In, Some(new)) if heads == Heads::Capture => {
                let at = header_len + payload - new.len;
                head::on_request_data(ctx, cookie, stats_ref, at, new);
            }
            (Direction::Out, Some(_)) => {
                head::on_response_data(stats_ref);
                transfer::on_bytes_out(cookie, stats_ref);
            }
            _ => {}
        }
        // A connection established before the programs were attached has no open event
        // from sock_ops: send one, with the 4-tuple the packet's socket gives.
        // SAFETY: as above.
        if unsafe { (*stats).flags } & flags::OPEN_SENT == 0 {
            emit_open_once(cookie, 0, &tuple(ctx), stats);
        }
    }
    if ends {
        end_of_stream(ctx, cookie, dir, tcp.flags);
    }
    Ok(())
}

/// sock_ops reports the close of the connections it saw established. Those that were
/// already open when the programs were attached get no sock_ops callbacks, so their end is
/// taken from the packets: a reset, or a FIN in each direction, ends the byte stream (the
/// last ACK carries no data).
fn end_of_stream(ctx: &SkBuffContext, cookie: u64, dir: Direction, tcp_flags: u8) {
    let Some(stats) = CONNS.get_ptr_mut(cookie) else {
        return;
    };
    // SAFETY: `stats` points into a live map value.
    let stats = unsafe { &mut *stats };
    if stats.flags & flags::FROM_START != 0 {
        return;
    }
    stats.flags |= match dir {
        Direction::In => flags::FIN_IN,
        Direction::Out => flags::FIN_OUT,
    };
    let both = flags::FIN_IN | flags::FIN_OUT;
    if tcp_flags & TCP_RST != 0 || stats.flags & both == both {
        close(cookie, &tuple(ctx), (0, 0));
    }
}

/// The 4-tuple of the packet's socket, from the `__sk_buff` socket fields that cgroup_skb
/// programs may read (`cg_skb_is_valid_access()`, net/core/filter.c).
fn tuple(ctx: &SkBuffContext) -> Tuple {
    let skb: *const __sk_buff = ctx.skb.skb;
    CtxSocket {
        family: ctx.skb.family(),
        local_ip4: ctx.skb.local_ipv4(),
        remote_ip4: ctx.skb.remote_ipv4(),
        // SAFETY: addresses of context fields; nothing is read here.
        local_ip6: unsafe { &raw const (*skb).local_ip6 },
        remote_ip6: unsafe { &raw const (*skb).remote_ip6 },
        local_port: ctx.skb.local_port(),
        remote_port: ctx.skb.remote_port(),
    }
    .tuple()
}
/// Data of a segment that no earlier segment carried.
#[derive(Clone, Copy)]
pub struct NewData {
    /// Its offset in the connection's byte stream (in that direction).
    pub stream_offset: u64,
    pub len: u32,
}

/// Moves the direction's high-water mark to the end of this segment, counting only the
/// sequence space not counted before. Returns the new data, if any.
#[inline(always)]
fn advance(stats: &mut ConnStats, dir: Direction, start: u32, payload: u32) -> Option<NewData> {
    let end = start.wrapping_add(payload);
    let (next, bytes, segs, valid) = match dir {
        Direction::In => (
            &mut stats.seq_in_next,
            &mut stats.bytes_in,
            &mut stats.segs_in,
            flags::SEQ_IN_VALID,
        ),
        Direction::Out => (
            &mut stats.seq_out_next,
            &mut stats.bytes_out,
            &mut stats.segs_out,
            flags::SEQ_OUT_VALID,
        ),
    };
    if stats.flags & valid == 0 {
        *next = start;
        stats.flags |= valid;
    }
    *segs += 1;
    // Sequence arithmetic modulo 2^32 (RFC 9293 3.4): positive means "beyond the mark".
    let delta = end.wrapping_sub(*next) as i32;
    if delta <= 0 {
        return None;
    }
    let delta = delta as u32;
    // Beyond the mark with a gap before it (data missing), the whole segment is new and the
    // gap is counted too: its bytes will not be counted when they arrive.
    let len = delta.min(payload);
    let stream_offset = *bytes + u64::from(delta - len);
    *bytes += u64::from(delta);
    *next = end;
    Some(NewData { stream_offset, len })
}
