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
    head_end::{HeadEndScan, first_marked},
};

use crate::{
    maps::{EVENTS, HEAD_SCRATCH, count_drop, lazy_wakeup},
    skb::NewData,
};

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
    let end = find_head_end(ev, n, stats.head_window);
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

/// The head's chunk as aligned words: `HeadEvent::data` starts at byte 56 of an 8-aligned
/// struct, so word loads are aligned (byte-wise loads cost eight times as many
/// instructions).
type Words = [u64; HEAD_CAPTURE / 8];

/// The state of a scan for the head's end, shared with `scan_step` through `bpf_loop`.
#[repr(C)]
struct Scan {
    event: *mut HeadEvent,
    n: u64,
    ends: HeadEndScan,
}

/// Words per step of the scan. A `bpf_loop` step is a call, with the scan's state loaded
/// and stored around it: one word per step spent more on that than on the search (a third
/// of `conn_ingress` on 250-byte heads, perf); eight make a 250-byte head four steps.
const WORDS_PER_STEP: usize = 8;

/// One step of the scan: the words `WORDS_PER_STEP * index..`, a few arithmetic operations
/// each whatever their bytes (sensor-common's `head_end`, tested there on the host).
/// Returns 1 to stop the loop.
///
/// The end it finds is written to the scratch entry (`HeadEvent::len`), not to the
/// scan's state on the stack, and the caller reads it back from there: the verifier does
/// not track what a map value holds, so every way out of this step reaches the caller as
/// one state. A result kept on the stack carried each word's and each byte's exit into the
/// caller as a state of its own, which the verifier then walked through the rest of the
/// program: with eight words per step, over its million-instruction limit on Linux 6.18
/// (`cargo xtask vm-test` and the agent's start record show the count per kernel).
///
/// Only the step's first word is checked against `n`: the words after it may hold bytes
/// left over from an earlier chunk, and an end found past `n` is not one.
#[inline(never)]
extern "C" fn scan_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` that `find_head_end` passed to bpf_loop.
    let scan = unsafe { &mut *(ctx as *mut Scan) };
    // `find_head_end` asks for at most `HEAD_CAPTURE / 8 / WORDS_PER_STEP` steps, so the
    // mask changes nothing; it is how the verifier learns that the loads stay in the
    // chunk. (A comparison instead is not enough for Linux 6.1's verifier once LLVM has
    // unrolled the loop: "math between map_value pointer and register with unbounded min
    // value".)
    let first = (index as usize & (HEAD_CAPTURE / 8 / WORDS_PER_STEP - 1)) * WORDS_PER_STEP;
    if 8 * first as u64 >= scan.n {
        return 1;
    }
    // SAFETY: `event` points to the scratch entry, valid while the program runs.
    let event = unsafe { &mut *scan.event };
    // SAFETY: `HeadEvent::data` is 8-aligned (see `Words`) and HEAD_CAPTURE bytes long.
    let words = unsafe { &*(event.data.as_ptr() as *const Words) };
    let mut ends = scan.ends;
    for k in 0..WORDS_PER_STEP {
        let marks = ends.step(words[first + k]);
        if marks != 0 {
            // Checked against `n` by the caller.
            event.len = (8 * (first + k) + first_marked(marks) + 1) as u32;
            return 1;
        }
    }
    scan.ends = ends;
    0
}

/// The position just after the first `\r\n\r\n` in the event's `data[..n]`, where `window`
/// holds the last bytes of the head's previous chunks (an end split across segments).
///
/// The scan runs in `bpf_loop` (Linux 5.17+): the verifier checks its step as a loop body,
/// where an open-coded loop over 4 KiB made it walk every iteration and give up ("the
/// sequence of 8193 jumps is too complex").
#[inline(always)]
fn find_head_end(event: &mut HeadEvent, n: usize, window: u32) -> Option<usize> {
    event.len = 0;
    let mut scan = Scan {
        event: &raw mut *event,
        n: n as u64,
        ends: HeadEndScan::after(window),
    };
    let steps = n.div_ceil(8 * WORDS_PER_STEP) as u32;
    // SAFETY: a static callback and a context on our stack, as bpf_loop expects.
    unsafe {
        bpf_loop(steps, scan_step as *mut c_void, (&raw mut scan).cast(), 0);
    }
    // SAFETY: a field of the scratch entry, which `scan_step` may have written through
    // the pointer it was given (volatile: the compiler does not see that write).
    let end = unsafe { core::ptr::read_volatile(&raw const event.len) } as usize;
    if end == 0 || end > n {
        return None;
    }
    // `end <= n` bounds `end` for the compiler, not for every verifier: 6.1's learns
    // nothing from comparing two registers, and would take `end` as any u32 in what
    // follows ("R1 max value is outside of the allowed memory range"). A comparison with
    // the constant says it, once the compiler can no longer see that it is redundant.
    let end = core::hint::black_box(end);
    (end <= HEAD_CAPTURE).then_some(end)
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
