//! Finding Synapse processes in procfs and describing a single PID.
//!
//! Files read, all under the proc root: `PID/cmdline` (NUL-separated argv, empty for kernel
//! threads and zombies), `PID/cgroup` (the cgroup v2 line is `0::/path`), `PID/status`
//! (`PPid:` and `Tgid:`) and `PID/comm`.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{DiscoverError, Role, classify_cmdline, config_paths, vanished};

/// A running Synapse process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Process {
    /// Its PID (thread group ID).
    pub pid: u32,
    /// What it does, from its entry-point module.
    pub role: Role,
    /// Its argv.
    pub cmdline: Vec<String>,
    /// Its cgroup v2 path relative to the cgroup v2 mount, such as
    /// `/system.slice/matrix-synapse.service`; `None` when the kernel lists no cgroup v2
    /// membership (no cgroup v2 hierarchy has ever been mounted on this host).
    pub cgroup: Option<String>,
    /// The values of `-c` / `--config-path`, in order.
    pub config_paths: Vec<PathBuf>,
}

/// What the agent knows about one PID given with `--pid`, Synapse or not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PidInfo {
    /// The PID asked for.
    pub pid: u32,
    /// Its thread group ID: differs from `pid` when `pid` names a thread rather than a
    /// process (watch the `tgid`).
    pub tgid: Option<u32>,
    /// Its parent's PID.
    pub ppid: Option<u32>,
    /// Its `comm` (`python3` for every Synapse thread).
    pub comm: String,
    /// Its Synapse role, `None` when its command line is not a Synapse one.
    pub role: Option<Role>,
    /// Its argv; empty for a kernel thread or a zombie.
    pub cmdline: Vec<String>,
    /// Its cgroup v2 path, as in [`Process::cgroup`].
    pub cgroup: Option<String>,
    /// The values of `-c` / `--config-path`, in order.
    pub config_paths: Vec<PathBuf>,
}

/// Counters of one scan of the proc root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    /// Numeric entries (processes) looked at.
    pub scanned: usize,
    /// Processes whose files could not be read for a reason other than having exited
    /// (processes that exit mid-scan are not counted).
    pub skipped: usize,
}

/// The directory of `pid` under the proc root.
fn pid_dir(proc_root: &Path, pid: u32) -> PathBuf {
    proc_root.join(pid.to_string())
}

/// Splits the contents of `/proc/PID/cmdline` into arguments. The final NUL terminator is
/// dropped; empty arguments inside the list are kept. Invalid UTF-8 is replaced.
pub(super) fn parse_cmdline(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Reads `/proc/PID/cmdline`.
pub(super) fn read_cmdline(proc_root: &Path, pid: u32) -> io::Result<Vec<String>> {
    fs::read(pid_dir(proc_root, pid).join("cmdline")).map(|data| parse_cmdline(&data))
}

/// The cgroup v2 path from the contents of `/proc/PID/cgroup` (the line `0::/path`).
pub(super) fn parse_cgroup_file(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Reads the cgroup v2 path of `pid`.
pub(super) fn read_cgroup(proc_root: &Path, pid: u32) -> io::Result<Option<String>> {
    fs::read_to_string(pid_dir(proc_root, pid).join("cgroup")).map(|t| parse_cgroup_file(&t))
}

/// A numeric field such as `PPid:\t1` from the contents of `/proc/PID/status`.
pub(super) fn status_field(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().parse().ok()
    })
}

/// Reads `/proc/PID/status`.
pub(super) fn read_status(proc_root: &Path, pid: u32) -> io::Result<String> {
    fs::read_to_string(pid_dir(proc_root, pid).join("status"))
}

/// Reads `/proc/PID/comm` without its newline.
pub(super) fn read_comm(proc_root: &Path, pid: u32) -> io::Result<String> {
    let comm = fs::read_to_string(pid_dir(proc_root, pid).join("comm"))?;
    Ok(comm.trim_end_matches('\n').to_owned())
}

/// The PID named by a proc root entry, `None` for `self`, `sys` and the like.
fn entry_pid(name: &std::ffi::OsStr) -> Option<u32> {
    let name = name.to_str()?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// All Synapse processes, sorted by PID. Processes that exit mid-scan and kernel threads
/// are skipped silently; processes whose files cannot be read are skipped and logged at
/// debug level (use [`find_synapse_with_stats`] to get their number).
pub fn find_synapse(proc_root: &Path) -> Result<Vec<Process>, DiscoverError> {
    let (processes, stats) = find_synapse_with_stats(proc_root)?;
    if stats.skipped > 0 {
        tracing::debug!(
            skipped = stats.skipped,
            "some processes could not be read while looking for Synapse"
        );
    }
    Ok(processes)
}

/// Like [`find_synapse`], also returning how many processes were looked at and skipped.
///
/// Fails only when the proc root itself cannot be listed.
pub fn find_synapse_with_stats(
    proc_root: &Path,
) -> Result<(Vec<Process>, ScanStats), DiscoverError> {
    let entries = fs::read_dir(proc_root).map_err(|e| DiscoverError::proc(proc_root, e))?;
    let mut stats = ScanStats::default();
    let mut processes = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                stats.skipped += 1;
                tracing::debug!(%error, "cannot list an entry of {}", proc_root.display());
                continue;
            }
        };
        let Some(pid) = entry_pid(&entry.file_name()) else {
            continue;
        };
        stats.scanned += 1;
        match read_process(proc_root, pid) {
            Ok(Some(process)) => processes.push(process),
            Ok(None) => {}
            Err(error) if vanished(&error) => {}
            Err(error) => {
                stats.skipped += 1;
                tracing::debug!(pid, %error, "cannot read process while looking for Synapse");
            }
        }
    }
    processes.sort_by_key(|p| p.pid);
    Ok((processes, stats))
}

/// Reads one process, `None` if it is not Synapse.
fn read_process(proc_root: &Path, pid: u32) -> io::Result<Option<Process>> {
    let cmdline = read_cmdline(proc_root, pid)?;
    let Some(role) = classify_cmdline(&cmdline) else {
        return Ok(None);
    };
    let cgroup = read_cgroup(proc_root, pid)?;
    Ok(Some(Process {
        pid,
        role,
        config_paths: config_paths(&cmdline),
        cmdline,
        cgroup,
    }))
}

/// True when `pid` exists under the proc root (a process, a thread or a zombie).
pub fn process_exists(proc_root: &Path, pid: u32) -> bool {
    pid_dir(proc_root, pid).is_dir()
}

/// Describes one PID, for `--pid PID`: its command line, role (if Synapse), cgroup and
/// parent. Fails with [`DiscoverError::NoSuchProcess`] when it does not exist or exits
/// while being read.
pub fn describe_pid(proc_root: &Path, pid: u32) -> Result<PidInfo, DiscoverError> {
    let dir = pid_dir(proc_root, pid);
    let failed = |file: &'static str| {
        let path = dir.join(file);
        move |error: io::Error| {
            if vanished(&error) {
                DiscoverError::NoSuchProcess { pid }
            } else {
                DiscoverError::proc(path, error)
            }
        }
    };
    if !process_exists(proc_root, pid) {
        return Err(DiscoverError::NoSuchProcess { pid });
    }
    let cmdline = read_cmdline(proc_root, pid).map_err(failed("cmdline"))?;
    let status = read_status(proc_root, pid).map_err(failed("status"))?;
    let comm = read_comm(proc_root, pid).map_err(failed("comm"))?;
    let cgroup = read_cgroup(proc_root, pid).map_err(failed("cgroup"))?;
    Ok(PidInfo {
        pid,
        tgid: status_field(&status, "Tgid"),
        ppid: status_field(&status, "PPid"),
        comm,
        role: classify_cmdline(&cmdline),
        config_paths: config_paths(&cmdline),
        cmdline,
        cgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::{
        DiscoverError, Role, describe_pid, find_synapse, find_synapse_with_stats,
        parse_cgroup_file, parse_cmdline, process_exists, status_field,
    };
    use crate::discover::testutil::FakeProc;
    use std::path::{Path, PathBuf};

    const DEBIAN: &[&str] = &[
        "/opt/venvs/matrix-synapse/bin/python",
        "/opt/venvs/matrix-synapse/lib/python3.11/site-packages/synapse/app/homeserver.py",
        "--config-path=/etc/matrix-synapse/homeserver.yaml",
        "--config-path=/etc/matrix-synapse/conf.d/",
    ];

    #[test]
    fn cmdline_splitting() {
        assert_eq!(parse_cmdline(b"python3\0-m\0x\0"), ["python3", "-m", "x"]);
        assert_eq!(parse_cmdline(b"a\0\0b\0"), ["a", "", "b"]);
        assert_eq!(parse_cmdline(b"no-terminator"), ["no-terminator"]);
        assert!(parse_cmdline(b"").is_empty());
        assert_eq!(parse_cmdline(b"\xff\0"), ["\u{fffd}"]);
    }

    #[test]
    fn cgroup_file_parsing() {
        // Hybrid layout, as on this machine: v1 lines first, the v2 line last.
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/matrix-synapse.service\n";
        assert_eq!(
            parse_cgroup_file(hybrid).as_deref(),
            Some("/system.slice/matrix-synapse.service")
        );
        assert_eq!(parse_cgroup_file("0::/\n").as_deref(), Some("/"));
        assert_eq!(parse_cgroup_file("1:cpu:/\n"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tpython3\nTgid:\t812\nNgid:\t0\nPid:\t812\nPPid:\t1\n";
        assert_eq!(status_field(status, "PPid"), Some(1));
        assert_eq!(status_field(status, "Tgid"), Some(812));
        assert_eq!(status_field(status, "Pid"), Some(812));
        assert_eq!(status_field(status, "TracerPid"), None);
    }

    #[test]
    fn find_synapse_in_a_fake_tree() {
        let proc = FakeProc::new();
        let service = "/system.slice/matrix-synapse.service";
        proc.process(812, 1, "python", DEBIAN, service);
        proc.process(
            900,
            1,
            "python3",
            &[
                "python3",
                "-m",
                "synapse.app.generic_worker",
                "-c",
                "/etc/w1.yaml",
            ],
            "/system.slice/matrix-synapse-worker@w1.service",
        );
        proc.process(7, 2, "kworker/0:1", &[], "/");
        proc.process(
            1000,
            999,
            "grep",
            &["grep", "synapse.app.homeserver"],
            "/user.slice",
        );
        proc.file("self/status", "Name:\tsensor\n");
        proc.file("sys/kernel/x", "");

        let found = find_synapse(proc.root()).expect("scan");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].pid, 812);
        assert_eq!(found[0].role, Role::Main);
        assert_eq!(found[0].cgroup.as_deref(), Some(service));
        assert_eq!(found[0].cmdline, DEBIAN);
        assert_eq!(found[0].config_paths.len(), 2);
        assert_eq!(found[1].pid, 900);
        assert_eq!(found[1].role, Role::GenericWorker);
        assert_eq!(found[1].config_paths, [PathBuf::from("/etc/w1.yaml")]);
    }

    #[test]
    fn vanished_processes_are_skipped_silently_and_unreadable_ones_counted() {
        let proc = FakeProc::new();
        proc.process(812, 1, "python", DEBIAN, "/");
        // A process that exited between readdir and open: the directory is empty.
        proc.dir("813");
        // A cmdline that cannot be read (a directory where a file should be: EISDIR).
        proc.dir("814/cmdline");
        let (found, stats) = find_synapse_with_stats(proc.root()).expect("scan");
        assert_eq!(found.len(), 1);
        assert_eq!(stats.scanned, 3);
        assert_eq!(stats.skipped, 1);
    }

    #[test]
    fn unreadable_proc_root_is_an_error() {
        let err = find_synapse(Path::new("/nonexistent/proc")).expect_err("no such dir");
        assert!(matches!(err, DiscoverError::ReadProc { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/proc"), "{err}");
    }

    #[test]
    fn describe_a_fake_pid() {
        let proc = FakeProc::new();
        proc.process(
            812,
            1,
            "python",
            DEBIAN,
            "/system.slice/matrix-synapse.service",
        );
        proc.process(5, 1, "bash", &["-bash"], "/user.slice");
        assert!(process_exists(proc.root(), 812));
        assert!(!process_exists(proc.root(), 813));

        let info = describe_pid(proc.root(), 812).expect("exists");
        assert_eq!(info.role, Some(Role::Main));
        assert_eq!((info.tgid, info.ppid), (Some(812), Some(1)));
        assert_eq!(info.comm, "python");
        let bash = describe_pid(proc.root(), 5).expect("exists");
        assert_eq!((bash.role, bash.comm.as_str()), (None, "bash"));

        let err = describe_pid(proc.root(), 813).expect_err("missing");
        assert!(matches!(err, DiscoverError::NoSuchProcess { pid: 813 }));
        assert_eq!(
            err.to_string(),
            "no process with PID 813 (it may have exited); check the PID with `ps -p 813`"
        );
    }

    #[test]
    fn describe_the_real_current_process() {
        let pid = std::process::id();
        let proc = Path::new("/proc");
        assert!(process_exists(proc, pid));
        let info = describe_pid(proc, pid).expect("our own process");
        assert_eq!(info.tgid, Some(pid));
        assert!(!info.cmdline.is_empty());
        assert_eq!(info.role, None);
        assert!(!process_exists(proc, u32::MAX));
    }
}
