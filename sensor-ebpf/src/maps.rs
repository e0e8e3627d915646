//! Every map of the object. Names and sizes come from `sensor_common` so the agent uses the
//! same spelling; the agent may resize them at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use sensor_common::{
    conn::ConnStats,
    drops::Drop,
    event::{HeadEvent, settings},
    sizes,
    syscall::{ProcIo, SyscallKey},
};

#[map]
pub static CONNS: LruHashMap<u64, ConnStats> = LruHashMap::with_max_entries(sizes::CONNS_MAX, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(sizes::EVENTS_BYTES, 0);

/// `BPF_RB_NO_WAKEUP` and `BPF_RB_FORCE_WAKEUP` (output and submit flags), `BPF_RB_AVAIL_DATA`
/// and `BPF_RB_RING_SIZE` (`bpf_ringbuf_query` flags), from include/uapi/linux/bpf.h.
const BPF_RB_NO_WAKEUP: u64 = 1;
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// The wakeup flag for a record of `EVENTS` that the agent does not need at once (request
/// heads, connection events). No wakeup per record: at thousands a second, waking the agent
/// for each costs more than everything else the programs do (the kernel's own default wakes
/// it whenever it has caught up, which a fast agent always has; measured here, about 3 us
/// per connection event). The agent drains on a short timer instead. Except when the ring
/// is a quarter full: the agent's timer may have backed off (250 ms when idle), and a burst
/// that starts then would fill the ring before it fires.
#[inline(always)]
pub fn lazy_wakeup() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= EVENTS.query(BPF_RB_RING_SIZE) / 4 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[map]
pub static SETTINGS: Array<u64> = Array::with_max_entries(settings::COUNT, 0);

/// A value of `SETTINGS` (0 when unset).
#[inline(always)]
pub fn setting(index: u32) -> u64 {
    SETTINGS.get(index).copied().unwrap_or(0)
}

#[map]
pub static HEAD_SCRATCH: PerCpuArray<HeadEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Drop::COUNT, 0);

#[map]
pub static WATCHED_PIDS: HashMap<u32, u32> = HashMap::with_max_entries(sizes::WATCHED_PIDS_MAX, 0);

#[map]
pub static WATCHED_CGROUPS: HashMap<u64, u32> =
    HashMap::with_max_entries(sizes::WATCHED_CGROUPS_MAX, 0);

#[map]
pub static SYSCALLS: PerCpuHashMap<SyscallKey, u64> =
    PerCpuHashMap::with_max_entries(sizes::SYSCALLS_MAX, 0);

#[map]
pub static PROC_IO: PerCpuHashMap<u32, ProcIo> =
    PerCpuHashMap::with_max_entries(sizes::PROC_IO_MAX, 0);

#[map]
pub static READ_SYSCALLS: HashMap<u32, u32> =
    HashMap::with_max_entries(sizes::READ_SYSCALLS_MAX, 0);

#[map]
pub static PENDING_READS: HashMap<u64, u32> =
    HashMap::with_max_entries(sizes::PENDING_READS_MAX, 0);

/// Counts one loss at `place`. Per-CPU, so no atomics are needed.
#[inline(always)]
pub fn count_drop(place: Drop) {
    if let Some(slot) = DROPS.get_ptr_mut(place as u32) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// How the current task is watched: `Some(watch::*)` from `WATCHED_PIDS`, `Some(0)` when
/// only its cgroup is watched (the cgroup programs own its connections), `None` when it is
/// not watched at all. One helper and at most two lookups.
#[inline(always)]
pub fn watch_of(tgid: u32) -> Option<u32> {
    // SAFETY: read-only lookups of plain integers; helper without arguments.
    unsafe {
        if let Some(flags) = WATCHED_PIDS.get(tgid) {
            return Some(*flags);
        }
        let cgid = aya_ebpf::helpers::bpf_get_current_cgroup_id();
        WATCHED_CGROUPS.get(cgid).map(|_| 0)
    }
}
