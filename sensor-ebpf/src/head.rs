//! Request heads: the bounded head (request line and headers) of each HTTP/1.x request on a
//! watched server connection, captured from the cgroup_skb ingress packets (skb.rs) and sent
//! to the agent with the connection's counters, so it can attribute exact bytes to each
//! request of a keep-alive connection.
//!
//! The cycle, per connection (`ConnStats::head_state`): the first new payload from the
//! client after our side sent data (or at the start) begins a head, if it starts with an
//! HTTP method; chunks are captured until `\r\n\r\n` is seen or `HEAD_CAPTURE` bytes were
//! taken; then nothing more (the body) until our side sends again (the response). So bodies
//! are not captured, except the part of a segment that follows the head's end in the same
//! segment (the agent drops it), and a pipelined request (sent before the previous response)
//! is taken as body: its bytes go to the previous request. Connections our side opened
//! (`ACTIVE`, e.g. Synapse to its database) are never captured.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_loop, bpf_skb_load_bytes},
    },
    programs::SkBuffContext,
};
use sensor_common::{
    conn::{ConnStats, flags, head_state},
    drops::Drop,
    event::{HEAD_CAPTURE, HeadEvent, head_flags, kind},
};

use crate::{
    maps::{EVENTS, HEAD_SCRATCH, count_drop, lazy_wakeup},
    skb::NewData,
};

/// `\r\n\r\n` as the last four bytes of a big-endian window.
const HEAD_END: u32 = 0x0d0a_0d0a;

/// Byte masks for finding a `\n` in eight bytes at once ("has zero byte" on `word ^ LF`).
const LF8: u64 = 0x0a0a_0a0a_0a0a_0a0a;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The first four bytes of the request methods Synapse serves (RFC 9110 9.3).
const METHODS: [&[u8; 4]; 7] = [
    b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC",
];

/// Our side sent data: the response has started, the client's next data is a new request.
#[inline(always)]
pub fn on_response_data(stats: &mut ConnStats) {
    if stats.head_state != head_state::EXPECT {
        stats.head_state = head_state::EXPECT;
        stats.head_captured = 0;
        stats.head_window = 0;
    }
}

/// New data from the client, at byte `at` of the packet.
#[inline(always)]
pub fn on_request_data(
    ctx: &SkBuffContext,
    cookie: u64,
    stats: &mut ConnStats,
    at: u32,
    data: NewData,
) {
    if stats.flags & flags::ACTIVE != 0 {
        return;
    }
    let first = match stats.head_state {
        head_state::EXPECT => {
            if !starts_with_method(ctx, at) {
                // Not a request head (a body after `100 Continue`, or not HTTP): wait for
                // the next response.
                stats.head_state = head_state::DONE;
                return;
            }
            stats.head_captured = 0;
            stats.head_window = 0;
            // A new request: its response starts now (transfer.rs).
            stats.response_base = stats.bytes_out;
            stats.transfer_reported = 0;
            true
        }
        head_state::PARTIAL => false,
        _ => return,
    };
    let _ = capture(ctx, cookie, stats, at, data, first);
}

fn starts_with_method(ctx: &SkBuffContext, at: u32) -> bool {
    let Ok(word) = ctx.load::<[u8; 4]>(at as usize) else {
        return false;
    };
    METHODS.iter().any(|m| **m == word)
}

fn capture(
    ctx: &SkBuffContext,
    cookie: u64,
    stats: &mut ConnStats,
    at: u32,
    data: NewData,
    first: bool,
) -> Result<(), i64> {
    let captured = stats.head_captured as usize;
    if captured >= HEAD_CAPTURE {
        return Ok(());
    }
    // Bounded by the budget left: never more than HEAD_CAPTURE bytes per head.
    let mut n = data.len as usize;
    if n > HEAD_CAPTURE - captured {
        n = HEAD_CAPTURE - captured;
    }
    if n == 0 || n > HEAD_CAPTURE {
        return Ok(());
    }
    let scratch = HEAD_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: this CPU's scratch entry, used only while this program runs.
    let ev = unsafe { &mut *scratch };
    // The helper directly: `n` is already in 1..=HEAD_CAPTURE, and `(n - 1) & MASK) + 1` is
    // the identity on that range; it only lets the verifier see the bounds that it loses
    // when the value is spilled to the stack (it rejects a length that may be zero).
    let len = (((n - 1) & (HEAD_CAPTURE - 1)) + 1) as u32;
    // SAFETY: `ev.data` has room for `len` bytes; the helper checks `at + len` against the
    // packet.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            at,
            ev.data.as_mut_ptr().cast(),
            len,
        )
    };
    if r != 0 {
        return Err(r);
    }

    // Keep only the head: cut the chunk just after `\r\n\r\n` (the rest of the segment is
    // body, never sent).
    let end = find_head_end(&ev.data, n, stats.head_window);
    let n = end.unwrap_or(n);
    let end = end.is_some();
    let window = last_four(&ev.data, n, stats.head_window);
    stats.head_window = window;
    stats.head_captured = (captured + n) as u32;
    let cut = !end && captured + n >= HEAD_CAPTURE;
    stats.head_state = if end || cut {
        head_state::DONE
    } else {
        head_state::PARTIAL
    };
    if cut {
        count_drop(Drop::HeadCut);
    }

    ev.kind = kind::HEAD;
    ev.flags = (if first { head_flags::FIRST } else { 0 })
        | (if end { head_flags::END } else { 0 })
        | (if cut { head_flags::CUT } else { 0 });
    ev.cookie = cookie;
    // SAFETY: helper without arguments.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.bytes_in = data.stream_offset;
    ev.bytes_out = stats.bytes_out;
    ev.offset = captured as u32;
    ev.len = n as u32;
    ev.heads_lost = stats.heads_lost;
    // SAFETY: the scratch entry is a plain struct; the slice covers its header and the
    // `n` bytes of data copied above, within its size.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (ev as *const HeadEvent).cast::<u8>(),
            // n is in 1..=HEAD_CAPTURE: the identity again, for the verifier.
            HeadEvent::HEADER + ((n - 1) & (HEAD_CAPTURE - 1)) + 1,
        )
    };
    // Drained by the agent's timer (see `lazy_wakeup`).
    if EVENTS.output::<[u8]>(bytes, lazy_wakeup()).is_err() {
        stats.heads_lost += 1;
        count_drop(Drop::RingbufHead);
    }
    Ok(())
}

/// The state of a scan for the head's end, shared with `scan_step` through `bpf_loop`.
#[repr(C)]
struct Scan {
    data: *const [u8; HEAD_CAPTURE],
    n: u64,
    /// The position just after `\r\n\r\n`, 0 while not found.
    found: u64,
}

/// One step of the scan: eight bytes at `8 * index`, looked at closely only when they hold
/// a `\n`. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn scan_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` that `find_head_end` passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut Scan) };
    let o = (index as usize).wrapping_mul(8);
    if o > HEAD_CAPTURE - 8 || o as u64 >= scan.n {
        return 1;
    }
    // SAFETY: `data` points to the scratch entry, valid while the program runs.
    let data = unsafe { &*scan.data };
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[o..o + 8]);
    let x = u64::from_le_bytes(bytes) ^ LF8;
    if x.wrapping_sub(ONES) & !x & HIGHS == 0 {
        return 0;
    }
    for j in 0..8 {
        let p = o + j;
        if p >= 3
            && (p as u64) < scan.n
            && data[p] == b'\n'
            && data[p - 1] == b'\r'
            && data[p - 2] == b'\n'
            && data[p - 3] == b'\r'
        {
            scan.found = p as u64 + 1;
            return 1;
        }
    }
    0
}

/// The position just after the first `\r\n\r\n` in `data[..n]`, where `window` holds the
/// last bytes of the head's previous chunks (an end split across segments).
///
/// The scan runs in `bpf_loop` (Linux 5.17+): the verifier checks its step once, where an
/// open-coded loop over 4 KiB made it walk every iteration and give up ("the sequence of
/// 8193 jumps is too complex"). Eight bytes per step, at most `HEAD_CAPTURE / 8` steps.
#[inline(always)]
fn find_head_end(data: &[u8; HEAD_CAPTURE], n: usize, window: u32) -> Option<usize> {
    // An end that began in the previous chunk finishes in the first three bytes.
    let mut w = window;
    for (i, b) in data.iter().enumerate().take(3) {
        if i >= n {
            return None;
        }
        w = (w << 8) | u32::from(*b);
        if w == HEAD_END {
            return Some(i + 1);
        }
    }
    let mut scan = Scan {
        data,
        n: n as u64,
        found: 0,
    };
    let steps = n.div_ceil(8) as u32;
    // SAFETY: a static callback and a context on our stack, as bpf_loop expects.
    unsafe {
        bpf_loop(steps, scan_step as *mut c_void, (&raw mut scan).cast(), 0);
    }
    (scan.found != 0).then_some(scan.found as usize)
}

/// The last four bytes of the head so far: `window` shifted by `data[..n]`.
#[inline(always)]
fn last_four(data: &[u8; HEAD_CAPTURE], n: usize, window: u32) -> u32 {
    let mut w = window;
    for k in 0..4 {
        // The k-th of the last four positions, when the chunk has that many bytes.
        if n + k >= 4 {
            let i = n + k - 4;
            if i < HEAD_CAPTURE {
                w = (w << 8) | u32::from(data[i]);
            }
        }
    }
    w
}
