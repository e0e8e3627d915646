//! A cgroup v2 directory per test, and the programs attached to one.

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::Duration,
};

use homeserver_sensor::discover;

use crate::SEQ;

/// A cgroup v2 directory created for one test and removed at the end.
pub struct Cgroup {
    pub mount: PathBuf,
    /// Relative to the mount, with a leading slash.
    pub rel: String,
    pub abs: PathBuf,
}

impl Cgroup {
    pub fn new(name: &str) -> Self {
        let mount = discover::cgroup2_mount(Path::new("/proc")).expect("cgroup v2 mount");
        let rel = format!(
            "/hs-test-{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let abs = mount.join(rel.trim_start_matches('/'));
        std::fs::create_dir(&abs).unwrap_or_else(|e| panic!("mkdir {}: {e}", abs.display()));
        Self { mount, rel, abs }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes must have left (been killed) before the directory can go.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.abs).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove cgroup {}", self.abs.display());
    }
}

/// Number of BPF programs attached to a cgroup (ingress, egress and sock_ops), from the
/// kernel's `BPF_PROG_QUERY` (include/uapi/linux/bpf.h, `union bpf_attr` query layout).
pub fn cgroup_program_count(cgroup: &std::fs::File) -> u32 {
    use std::os::fd::AsRawFd;
    const BPF_PROG_QUERY: libc::c_long = 16;
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
    // BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS, BPF_CGROUP_SOCK_OPS.
    [0u32, 1, 3]
        .iter()
        .map(|&attach_type| {
            let mut q = Query {
                target_fd: cgroup.as_raw_fd() as u32,
                attach_type,
                ..Query::default()
            };
            // SAFETY: a valid bpf_attr prefix for BPF_PROG_QUERY, with its size.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_PROG_QUERY,
                    &mut q as *mut Query,
                    std::mem::size_of::<Query>() as u32,
                )
            };
            assert_eq!(r, 0, "BPF_PROG_QUERY: {}", std::io::Error::last_os_error());
            q.prog_cnt
        })
        .sum()
}
