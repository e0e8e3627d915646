//! Discover: which processes to watch, which cgroup they live in, and which process owns a
//! socket.
//!
//! This is the first stage of the agent's data flow. It reads only procfs, the cgroup v2
//! filesystem and the watched Synapse's own configuration files, never the network or the
//! kernel programs, and every function takes the proc root (normally `/proc`), the cgroup v2
//! mount or the configuration paths as a parameter, so the unit tests build fake trees in a
//! temporary directory.
//!
//! - [`classify_cmdline`], [`find_synapse`], [`describe_pid`], [`process_exists`]: Synapse
//!   processes are recognised by their command line only (every thread's `comm` is
//!   `python3`), see the `cmdline` and `procfs` submodules.
//! - [`cgroup2_mount`], [`resolve_cgroup_arg`], [`cgroup_procs`], [`cgroup_id`],
//!   [`is_dedicated`]: the cgroup v2 side, used to attach `cgroup_skb` programs only to a
//!   cgroup that holds nothing but the homeserver.
//! - [`SocketOwners`]: the kernel reports accepted connections without a PID (they become
//!   established in softirq context); the agent resolves the owner from `/proc/PID/fd` and
//!   `/proc/PID/net/tcp{,6}`.
//! - [`synapse_config`]: what Synapse's configuration (its `-c` paths, see [`config_paths`])
//!   says of its `server_name` and of its listeners, some of which the sensor cannot see
//!   (a UNIX socket, Synapse's own TLS).

use std::{io, path::PathBuf};

mod cgroup;
mod cmdline;
mod procfs;
mod sockets;
pub mod synapse_config;
#[cfg(test)]
mod testutil;

pub use cgroup::{
    Dedication, cgroup_id, cgroup_procs, cgroup2_mount, is_dedicated, resolve_cgroup_arg,
};
pub use cmdline::{Role, classify_cmdline, config_paths};
pub use procfs::{
    PidInfo, Process, ScanStats, describe_pid, find_synapse, find_synapse_with_stats,
    process_exists,
};
pub use sockets::{SocketOwners, TcpEntry, TcpState, parse_tcp_line, parse_tcp_table};

/// Errors of the discover stage. Each message says what failed and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// A procfs file or directory could not be read for a reason other than the process
    /// having exited.
    #[error(
        "cannot read {path}: {source}; check that procfs is mounted there and that the agent \
         runs as root (or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)"
    )]
    ReadProc {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The process does not exist (or exited while it was being read).
    #[error("no process with PID {pid} (it may have exited); check the PID with `ps -p {pid}`")]
    NoSuchProcess {
        /// The PID that was asked for.
        pid: u32,
    },
    /// `mountinfo` lists no cgroup v2 hierarchy (a cgroup v1-only host).
    #[error(
        "no cgroup v2 hierarchy is mounted (none listed in {mountinfo}); mount one with \
         `mount -t cgroup2 none /sys/fs/cgroup/unified` (hybrid layout) or boot with \
         `systemd.unified_cgroup_hierarchy=1`, or run without the cgroup mechanisms"
    )]
    NoCgroup2 {
        /// The `mountinfo` file that was read.
        mountinfo: PathBuf,
    },
    /// A file in the cgroup v2 filesystem could not be read.
    #[error(
        "cannot read {path}: {source}; check that the cgroup v2 filesystem is mounted and \
         that the agent runs as root"
    )]
    ReadCgroup {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The cgroup given on the command line or in the config does not exist.
    #[error(
        "cgroup {arg:?} does not exist under the cgroup v2 mount {mount}; give a path relative \
         to the mount such as /system.slice/matrix-synapse.service (see `systemd-cgls` or \
         `cat /proc/PID/cgroup` for the homeserver's PID)"
    )]
    NoSuchCgroup {
        /// The path as given.
        arg: String,
        /// The cgroup v2 mount point it was looked up in.
        mount: PathBuf,
    },
    /// The cgroup path given points outside the cgroup v2 hierarchy (for example into a
    /// cgroup v1 hierarchy, or with `..`).
    #[error(
        "{arg:?} is not a cgroup v2 directory under {mount}; cgroup v1 hierarchies cannot be \
         used: give a path under {mount} or relative to it, such as \
         /system.slice/matrix-synapse.service"
    )]
    CgroupOutsideMount {
        /// The path as given.
        arg: String,
        /// The cgroup v2 mount point.
        mount: PathBuf,
    },
}

impl DiscoverError {
    /// Wraps an error reading a procfs path.
    fn proc(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::ReadProc {
            path: path.into(),
            source,
        }
    }
}

/// True when an IO error on `/proc/PID/...` means the process is gone: the directory
/// vanished (`ENOENT`) or the task is exiting (`ESRCH`).
fn vanished(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}
