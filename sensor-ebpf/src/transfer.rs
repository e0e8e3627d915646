//! Single-transfer threshold: when the response being sent on a watched connection crosses
//! `settings::TRANSFER_THRESHOLD` bytes, tell the agent at once, while the transfer runs
//! (called from the cgroup_skb egress program, skb.rs, after each packet's new bytes are
//! counted). Once per response: the count restarts at each request head (head.rs).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use sensor_common::{
    conn::ConnStats,
    drops::Drop,
    event::{TransferEvent, kind, settings},
};

use crate::maps::{BPF_RB_FORCE_WAKEUP, EVENTS, count_drop, setting};

#[inline(always)]
pub fn on_bytes_out(cookie: u64, stats: &mut ConnStats) {
    if stats.transfer_reported != 0 {
        return;
    }
    let threshold = setting(settings::TRANSFER_THRESHOLD);
    let response_bytes = stats.bytes_out - stats.response_base;
    if threshold == 0 || response_bytes <= threshold {
        return;
    }
    stats.transfer_reported = 1;
    let Some(mut entry) = EVENTS.reserve::<TransferEvent>(0) else {
        count_drop(Drop::RingbufTransfer);
        return;
    };
    entry.write(TransferEvent {
        kind: kind::TRANSFER,
        _pad: 0,
        cookie,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        response_bytes,
        bytes_out: stats.bytes_out,
        bytes_in: stats.bytes_in,
        threshold,
    });
    // Wake the agent now, whatever its position in the ring buffer.
    entry.submit(BPF_RB_FORCE_WAKEUP);
}
