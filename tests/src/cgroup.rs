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
/// kernel's `BPF_PROG_QUERY`.
pub fn cgroup_program_count(cgroup: &std::fs::File) -> u32 {
    cgroup_program_ids(cgroup).len() as u32
}

/// The ids of the programs attached to a cgroup: ingress, egress, then sock_ops.
pub fn cgroup_program_ids(cgroup: &std::fs::File) -> Vec<u32> {
    use homeserver_sensor::load::query;
    [
        query::CGROUP_INET_INGRESS,
        query::CGROUP_INET_EGRESS,
        query::CGROUP_SOCK_OPS,
    ]
    .iter()
    .flat_map(|&attach_type| {
        query::cgroup_program_ids(cgroup, attach_type)
            .unwrap_or_else(|e| panic!("BPF_PROG_QUERY: {e}"))
    })
    .collect()
}

/// Detaches the BPF link that attaches program `prog_id` (as `bpftool link detach` does),
/// behind the agent's back.
pub fn detach_link_of(prog_id: u32) {
    use std::os::fd::FromRawFd;
    let link = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|l| l.program_id() == prog_id)
        .unwrap_or_else(|| panic!("no BPF link for program {prog_id}"));
    // BPF_LINK_GET_FD_BY_ID (30): `link_id` first in its part of union bpf_attr.
    let mut attr = [0u32; 4];
    attr[0] = link.id();
    // SAFETY: a valid bpf_attr prefix with its size.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 30, attr.as_mut_ptr(), 16u32) };
    assert!(
        fd >= 0,
        "BPF_LINK_GET_FD_BY_ID: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // BPF_LINK_DETACH (34): `link_fd` first.
    let mut attr = [0u32; 4];
    attr[0] = std::os::fd::AsRawFd::as_raw_fd(&fd) as u32;
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 34, attr.as_mut_ptr(), 16u32) };
    assert_eq!(r, 0, "BPF_LINK_DETACH: {}", std::io::Error::last_os_error());
}
