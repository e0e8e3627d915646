//! Raw tracepoints on syscall entry and exit: syscall counts and file bytes per watched
//! process. Opt-in (`accounting.syscalls`), because attaching anything to these tracepoints
//! sets `SYSCALL_WORK_SYSCALL_TRACEPOINT` on every task of the host (`syscall_regfunc()`,
//! kernel/tracepoint.c): every process then takes the slow syscall path, watched or not
//! (measured on this project's machine: about +130 ns per syscall).
//!
//! - `raw_syscalls:sys_enter`, `TP_PROTO(struct pt_regs *regs, long id)`
//!   (include/trace/events/syscalls.h); format: `long id @8; unsigned long args[6] @16`.
//! - `raw_syscalls:sys_exit`, `TP_PROTO(struct pt_regs *regs, long ret)`;
//!   format: `long id @8; long ret @16`. The syscall number is not an argument at exit, so
//!   entry records read-family calls in `PENDING_READS`.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use sensor_common::{
    drops::Drop,
    syscall::{ProcIo, SyscallKey},
};

use crate::maps::{PENDING_READS, PROC_IO, READ_SYSCALLS, SYSCALLS, count_drop, watch_of};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_enter(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_exit(&ctx);
    0
}

fn try_sys_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if watch_of(tgid).is_none() {
        return Ok(());
    }
    let id: i64 = ctx.arg(1);
    let nr = id as u32;
    let key = SyscallKey { tgid, nr };
    match SYSCALLS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value.
        Some(count) => unsafe { *count += 1 },
        None => {
            if SYSCALLS.insert(key, 1u64, 0).is_err() {
                count_drop(Drop::SyscallInsert);
            }
        }
    }
    // SAFETY: read-only lookup of a plain integer.
    if unsafe { READ_SYSCALLS.get(nr) }.is_some()
        && PENDING_READS.insert(pid_tgid, 0u32, 0).is_err()
    {
        count_drop(Drop::PendingReadInsert);
    }
    Ok(())
}

fn try_sys_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Only threads that entered a read-family call have an entry: one lookup for the rest.
    // SAFETY: read-only lookup of a plain integer.
    let Some(socket_read) = (unsafe { PENDING_READS.get(pid_tgid) }).copied() else {
        return Ok(());
    };
    let _ = PENDING_READS.remove(pid_tgid);
    let ret: i64 = ctx.arg(1);
    if ret <= 0 || socket_read != 0 {
        return Ok(());
    }
    let tgid = (pid_tgid >> 32) as u32;
    match PROC_IO.get_ptr_mut(tgid) {
        // SAFETY: this CPU's slot of a per-CPU value.
        Some(io) => unsafe {
            (*io).file_read_bytes += ret as u64;
            (*io).file_reads += 1;
        },
        None => {
            let io = ProcIo {
                file_read_bytes: ret as u64,
                file_reads: 1,
            };
            if PROC_IO.insert(tgid, io, 0).is_err() {
                count_drop(Drop::ProcIoInsert);
            }
        }
    }
    Ok(())
}
