//! Which programs the kernel runs for a cgroup (`BPF_PROG_QUERY`), to notice ours being
//! detached by someone else (`bpftool link detach`, `bpftool cgroup detach`).

use std::{fs::File, io, os::fd::AsRawFd};

/// `BPF_PROG_QUERY` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_PROG_QUERY: libc::c_long = 16;

/// Attach types (`enum bpf_attach_type`).
pub const CGROUP_INET_INGRESS: u32 = 0;
pub const CGROUP_INET_EGRESS: u32 = 1;
pub const CGROUP_SOCK_OPS: u32 = 3;

/// The query part of `union bpf_attr` (`struct { /* anonymous struct used by
/// BPF_PROG_QUERY command */ }`), with room for the fields newer kernels add.
#[repr(C)]
#[derive(Default)]
struct Query {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    rest: [u64; 4],
}

/// Programs attached to `cgroup` (an open cgroup v2 directory) for `attach_type`, by id;
/// programs inherited from parent cgroups are not included.
pub fn cgroup_program_ids(cgroup: &File, attach_type: u32) -> io::Result<Vec<u32>> {
    // A cgroup holds at most 64 programs per attach type (BPF_CGROUP_MAX_PROGS).
    let mut ids = vec![0u32; 64];
    let mut q = Query {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Query::default()
    };
    // SAFETY: a valid bpf_attr prefix for BPF_PROG_QUERY with its size; `prog_ids` points
    // to `prog_cnt` writable u32s that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut q as *mut Query,
            std::mem::size_of::<Query>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    ids.truncate((q.prog_cnt as usize).min(ids.len()));
    Ok(ids)
}
