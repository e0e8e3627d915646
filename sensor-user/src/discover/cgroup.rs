//! The cgroup v2 side: where the hierarchy is mounted, which cgroup the user means, its ID,
//! its members, and whether it holds nothing but the watched homeserver.
//!
//! `cgroup_skb` programs attach to a cgroup v2 directory and see every packet of every
//! process in it, so the agent only attaches them to a cgroup that is *dedicated* to the
//! homeserver: not the root cgroup, and no process in it that is neither watched nor a
//! descendant of a watched process.

use std::{
    collections::HashSet,
    ffi::OsString,
    fmt, fs, io,
    os::unix::{ffi::OsStringExt, fs::MetadataExt},
    path::{Component, Path, PathBuf},
};

use super::{
    DiscoverError,
    procfs::{read_comm, read_status, status_field},
    vanished,
};

/// How far up the parent chain [`is_dedicated`] looks before giving up: deeper than any
/// real process tree, and a bound against a cycle in a corrupt or fake tree.
const MAX_ANCESTRY: usize = 4096;

/// Undoes the octal escapes (`\040` for a space, `\011`, `\012`, `\134`) of a `mountinfo`
/// field.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The mount point of the first cgroup v2 hierarchy mounted at its root in `mountinfo`
/// text (`ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`).
/// Bind mounts of a sub-cgroup (ROOT other than `/`) are skipped: their paths would not
/// match `/proc/PID/cgroup`.
fn parse_mountinfo_cgroup2(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut mount = mount.split(' ');
        let root = mount.nth(3)?;
        let mount_point = mount.next()?;
        (fs.split(' ').next()? == "cgroup2" && root == "/").then(|| unescape_mountinfo(mount_point))
    })
}

/// Where the cgroup v2 hierarchy is mounted, from `PROC/self/mountinfo`:
/// `/sys/fs/cgroup` on a unified system, `/sys/fs/cgroup/unified` on a hybrid one.
pub fn cgroup2_mount(proc_root: &Path) -> Result<PathBuf, DiscoverError> {
    let mountinfo = proc_root.join("self/mountinfo");
    let text = fs::read_to_string(&mountinfo).map_err(|e| DiscoverError::proc(&mountinfo, e))?;
    parse_mountinfo_cgroup2(&text).ok_or(DiscoverError::NoCgroup2 { mountinfo })
}

/// The directory of the cgroup `rel` (`/system.slice/x.service` or `/`) under the mount.
fn cgroup_dir(cgroup_mount: &Path, rel: &str) -> PathBuf {
    cgroup_mount.join(rel.trim_start_matches('/'))
}

/// Reads and parses one `cgroup.procs` file; `NotFound` is left to the caller.
fn read_procs(path: &Path) -> io::Result<Vec<u32>> {
    let text = fs::read_to_string(path)?;
    let mut pids = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.parse() {
            Ok(pid) => pids.push(pid),
            Err(_) => tracing::debug!(line, "ignoring a malformed line of cgroup.procs"),
        }
    }
    Ok(pids)
}

/// The PIDs (thread group IDs) in the cgroup `rel`, from its `cgroup.procs`, in the
/// kernel's order. Only direct members: processes in child cgroups are not included.
pub fn cgroup_procs(cgroup_mount: &Path, rel: &str) -> Result<Vec<u32>, DiscoverError> {
    let path = cgroup_dir(cgroup_mount, rel).join("cgroup.procs");
    read_procs(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            DiscoverError::NoSuchCgroup {
                arg: rel.to_owned(),
                mount: cgroup_mount.to_path_buf(),
            }
        } else {
            DiscoverError::ReadCgroup { path, source }
        }
    })
}

/// The PIDs in the cgroup `rel` and in all its descendant cgroups (the subdirectories).
fn subtree_procs(cgroup_mount: &Path, rel: &str) -> Result<Vec<u32>, DiscoverError> {
    let mut pids = cgroup_procs(cgroup_mount, rel)?;
    let mut pending = vec![cgroup_dir(cgroup_mount, rel)];
    while let Some(dir) = pending.pop() {
        let read_err = |source: io::Error| DiscoverError::ReadCgroup {
            path: dir.clone(),
            source,
        };
        for entry in fs::read_dir(&dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if !path.is_dir() {
                continue;
            }
            match read_procs(&path.join("cgroup.procs")) {
                Ok(more) => pids.extend(more),
                // A child cgroup removed while we looked.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    let path = path.join("cgroup.procs");
                    return Err(DiscoverError::ReadCgroup { path, source });
                }
            }
            pending.push(path);
        }
    }
    Ok(pids)
}

/// The ID of the cgroup v2 directory `dir`: its inode number, which is what
/// `bpf_get_current_cgroup_id()` and `bpf_skb_cgroup_id()` return (the kernfs node ID).
pub fn cgroup_id(dir: &Path) -> Result<u64, DiscoverError> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| DiscoverError::ReadCgroup {
            path: dir.to_path_buf(),
            source,
        })
}

/// Resolves a cgroup given by the user, either absolute under the mount
/// (`/sys/fs/cgroup/unified/system.slice/matrix-synapse.service`) or relative to it, with
/// or without a leading slash (`/system.slice/matrix-synapse.service`, as in
/// `/proc/PID/cgroup`). Returns the relative form with a leading slash (`/` for the root
/// cgroup) and the absolute directory.
pub fn resolve_cgroup_arg(
    cgroup_mount: &Path,
    arg: &str,
) -> Result<(String, PathBuf), DiscoverError> {
    let outside = || DiscoverError::CgroupOutsideMount {
        arg: arg.to_owned(),
        mount: cgroup_mount.to_path_buf(),
    };
    let given = Path::new(arg);
    let rest = given
        .strip_prefix(cgroup_mount)
        .or_else(|_| given.strip_prefix("/"))
        .unwrap_or(given);
    let mut parts = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(outside)?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(outside());
            }
        }
    }
    let rel = format!("/{}", parts.join("/"));
    let abs = cgroup_dir(cgroup_mount, &rel);
    if abs.join("cgroup.procs").is_file() {
        return Ok((rel, abs));
    }
    if given.is_absolute() && !given.starts_with(cgroup_mount) && given.exists() {
        // An existing directory elsewhere, typically a cgroup v1 hierarchy.
        return Err(outside());
    }
    Err(DiscoverError::NoSuchCgroup {
        arg: arg.to_owned(),
        mount: cgroup_mount.to_path_buf(),
    })
}

/// Whether a cgroup holds nothing but the watched processes, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Dedication {
    /// Every process in it is watched or a descendant of a watched process.
    Dedicated,
    /// It is the root cgroup, which holds every process that was never moved elsewhere.
    RootCgroup,
    /// It also holds this process, which is neither watched nor a descendant of a watched
    /// process (or whose ancestry could not be followed because an ancestor exited).
    ForeignProcess {
        /// The foreign process.
        pid: u32,
        /// Its `comm`, or `?` if it could not be read.
        comm: String,
    },
}

impl Dedication {
    /// True for [`Dedication::Dedicated`].
    pub fn is_dedicated(&self) -> bool {
        matches!(self, Dedication::Dedicated)
    }
}

impl fmt::Display for Dedication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dedication::Dedicated => f.write_str("the cgroup holds only the watched processes"),
            Dedication::RootCgroup => f.write_str(
                "it is the root cgroup, which holds processes of the whole host; run the \
                 homeserver in its own cgroup (a systemd service has one)",
            ),
            Dedication::ForeignProcess { pid, comm } => write!(
                f,
                "the cgroup also holds process {pid} ({comm}), which is not a watched \
                 process or a descendant of one"
            ),
        }
    }
}

/// What following the parent chain of a process found.
enum Ancestry {
    /// A watched process is an ancestor.
    Watched,
    /// The process itself has exited: it no longer counts.
    Exited,
    /// No watched ancestor (or the chain broke).
    Foreign,
}

/// Follows `PPid:` from `pid` upwards until a watched process, PID 0, or a broken link.
fn ancestry(proc_root: &Path, pid: u32, watched: &HashSet<u32>) -> Result<Ancestry, DiscoverError> {
    let mut current = pid;
    for _ in 0..MAX_ANCESTRY {
        let status = match read_status(proc_root, current) {
            Ok(status) => status,
            Err(e) if vanished(&e) && current == pid => return Ok(Ancestry::Exited),
            Err(e) if vanished(&e) => return Ok(Ancestry::Foreign),
            Err(e) => {
                let path = proc_root.join(current.to_string()).join("status");
                return Err(DiscoverError::proc(path, e));
            }
        };
        match status_field(&status, "PPid") {
            Some(parent) if watched.contains(&parent) => return Ok(Ancestry::Watched),
            Some(parent) if parent != 0 && parent != current => current = parent,
            _ => return Ok(Ancestry::Foreign),
        }
    }
    Ok(Ancestry::Foreign)
}

/// Whether the cgroup `rel` is dedicated to the `watched` processes: it is not the root
/// cgroup and every process in its `cgroup.procs` is watched or descends from a watched
/// process (by the `PPid:` chain in `/proc/PID/status`). Processes in descendant cgroups
/// count too, since a `cgroup_skb` program attached here also sees their packets.
/// Processes that exit during the check are ignored.
pub fn is_dedicated(
    proc_root: &Path,
    cgroup_mount: &Path,
    rel: &str,
    watched: &[u32],
) -> Result<Dedication, DiscoverError> {
    if rel.trim_matches('/').is_empty() {
        return Ok(Dedication::RootCgroup);
    }
    let watched: HashSet<u32> = watched.iter().copied().collect();
    for pid in subtree_procs(cgroup_mount, rel)? {
        if watched.contains(&pid) {
            continue;
        }
        if let Ancestry::Foreign = ancestry(proc_root, pid, &watched)? {
            let comm = read_comm(proc_root, pid).unwrap_or_else(|_| "?".to_owned());
            return Ok(Dedication::ForeignProcess { pid, comm });
        }
    }
    Ok(Dedication::Dedicated)
}

#[cfg(test)]
mod tests;
