//! A fake proc tree in a temporary directory, for the discover tests.

use std::{fs, os::unix::fs::symlink, path::Path};

/// A proc root under a temporary directory, removed on drop.
pub(super) struct FakeProc {
    dir: tempfile::TempDir,
}

impl FakeProc {
    /// An empty proc root.
    pub(super) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    /// The proc root to pass to the functions under test.
    pub(super) fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `rel` under the root, creating parent directories.
    pub(super) fn file(&self, rel: &str, contents: &str) {
        let path = self.root().join(rel);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create parent directories");
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Creates the directory `rel` under the root.
    pub(super) fn dir(&self, rel: &str) {
        fs::create_dir_all(self.root().join(rel)).expect("create directory");
    }

    /// Adds a process with its `cmdline`, `comm`, `status` (Tgid, PPid) and a cgroup file
    /// in the hybrid layout (a v1 line, then `0::cgroup`).
    pub(super) fn process(&self, pid: u32, ppid: u32, comm: &str, argv: &[&str], cgroup: &str) {
        let cmdline: String = argv.iter().map(|a| format!("{a}\0")).collect();
        self.file(&format!("{pid}/cmdline"), &cmdline);
        self.file(&format!("{pid}/comm"), &format!("{comm}\n"));
        self.file(
            &format!("{pid}/status"),
            &format!("Name:\t{comm}\nUmask:\t0022\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t{ppid}\n"),
        );
        self.file(
            &format!("{pid}/cgroup"),
            &format!("1:name=systemd:{cgroup}\n0::{cgroup}\n"),
        );
    }

    /// Adds an open socket `fd` of `pid` with the given inode, as the symlink
    /// `PID/fd/FD -> socket:[INODE]` (dangling, like the real one).
    pub(super) fn socket_fd(&self, pid: u32, fd: u32, inode: u64) {
        let dir = self.root().join(format!("{pid}/fd"));
        fs::create_dir_all(&dir).expect("create fd directory");
        symlink(format!("socket:[{inode}]"), dir.join(fd.to_string())).expect("symlink fd");
    }

    /// Adds a non-socket `fd` of `pid` pointing at `target`.
    pub(super) fn other_fd(&self, pid: u32, fd: u32, target: &str) {
        let dir = self.root().join(format!("{pid}/fd"));
        fs::create_dir_all(&dir).expect("create fd directory");
        symlink(target, dir.join(fd.to_string())).expect("symlink fd");
    }
}
