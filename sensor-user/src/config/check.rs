//! What `run` needs of the host at start that no kernel is needed to check: the paths it
//! writes to, the files it reads, the cgroup v2 mount. `check-config` runs these after the
//! file itself reads, and `run` runs them before it loads anything into the kernel, so an
//! operator learns of every one at once, and before the agent starts. Nothing here creates
//! or changes anything: a missing ledger directory or default key file is fine when `run`
//! would create it.

use std::{
    ffi::CString,
    io,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use super::Config;
use crate::{
    discover::{self, DiscoverError},
    identity::{FingerprintKey, IdentityError},
    ledger::LedgerError,
    output::webhook,
};

/// A reason `run` would stop at start. Each message names the path and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(IdentityError),
    #[error(transparent)]
    Ledger(LedgerError),
    /// `[output.webhook]`'s URL file (already a sentence naming the key and the path).
    #[error("{0}")]
    Webhook(String),
    #[error(
        "cannot write events to {}: {why}; {remedy} (--events or output.events; \"-\" \
         writes to stdout)",
        path.display()
    )]
    Events {
        path: PathBuf,
        why: String,
        remedy: &'static str,
    },
    #[error(
        "discovery.cgroup_root = {} is not a cgroup v2 mount ({why}); give the cgroup v2 \
         mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host), or remove \
         the key to find it in /proc/self/mountinfo",
        path.display()
    )]
    CgroupRoot { path: PathBuf, why: String },
    #[error(transparent)]
    Discover(DiscoverError),
}

/// Every reason `run` would stop at start with `config`, in the order it would meet them;
/// `proc_root` is where procfs is (`/proc`).
pub fn start_checks(config: &Config, proc_root: &Path) -> Vec<StartError> {
    let mut errors = Vec::new();
    if config.output.events != "-" {
        errors.extend(events(Path::new(&config.output.events)).err());
    }
    match &config.discovery.cgroup_root {
        Some(root) => errors.extend(cgroup_root(root).err()),
        None => errors.extend(
            discover::cgroup2_mount(proc_root)
                .err()
                .map(StartError::Discover),
        ),
    }
    if let Err(e) = FingerprintKey::check(&config.attribution.key_file) {
        errors.push(StartError::Key(e));
    }
    if config.ledger.enabled {
        errors.extend(ledger_dir(&config.ledger.dir).err().map(StartError::Ledger));
    }
    if let Some(hook) = &config.output.webhook {
        errors.extend(webhook::resolve_url(hook).err().map(StartError::Webhook));
    }
    errors
}

/// The events file can be opened for appending: it exists and is writable, or its
/// directory exists and is writable.
fn events(path: &Path) -> Result<(), StartError> {
    let bad = |why: String, remedy| StartError::Events {
        path: path.to_owned(),
        why,
        remedy,
    };
    const ELSEWHERE: &str = "give another path";
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(bad("it is a directory".into(), "give a file path")),
        // Opening for appending changes nothing in the file.
        Ok(_) => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| {
                bad(
                    e.to_string(),
                    "make it writable by the agent's user or give another path",
                )
            }),
        Err(e) if missing(&e) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => writable(dir).map_err(|e| {
                    bad(
                        format!("cannot create it in {}: {e}", dir.display()),
                        "make the directory writable by the agent's user or give another path",
                    )
                }),
                Ok(_) => Err(bad(
                    format!("{} is not a directory", dir.display()),
                    ELSEWHERE,
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(bad(
                    format!("its directory {} does not exist", dir.display()),
                    "create the directory or give another path",
                )),
                Err(e) => Err(bad(format!("{}: {e}", dir.display()), ELSEWHERE)),
            }
        }
        Err(e) => Err(bad(e.to_string(), ELSEWHERE)),
    }
}

/// `discovery.cgroup_root` is the root of a cgroup v2 hierarchy (which has
/// `cgroup.controllers`; a v1 hierarchy does not).
fn cgroup_root(root: &Path) -> Result<(), StartError> {
    let why = match std::fs::metadata(root) {
        Ok(meta) if !meta.is_dir() => "not a directory".to_owned(),
        Ok(_) if root.join("cgroup.controllers").exists() => return Ok(()),
        Ok(_) => "it has no cgroup.controllers".to_owned(),
        Err(e) => e.to_string(),
    };
    Err(StartError::CgroupRoot {
        path: root.to_owned(),
        why,
    })
}

/// The ledger directory is usable as `Ledger::open` needs it: an existing one is a
/// directory closed to group and others where the agent may write (its lock file); a
/// missing one can be created (its nearest existing ancestor is a writable directory). The
/// lock itself is not tried: a running agent holds it.
fn ledger_dir(dir: &Path) -> Result<(), LedgerError> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(LedgerError::NotADirectory {
            path: dir.to_owned(),
        }),
        Ok(meta) if meta.mode() & 0o077 != 0 => Err(LedgerError::Permissions {
            path: dir.to_owned(),
            mode: meta.mode() & 0o7777,
        }),
        Ok(_) => writable(dir).map_err(|cause| LedgerError::Lock {
            path: dir.to_owned(),
            cause,
        }),
        Err(e) if missing(&e) => {
            let create = |cause| LedgerError::CreateDir {
                path: dir.to_owned(),
                cause,
            };
            let mut ancestor = dir;
            while let Some(parent) = ancestor.parent() {
                ancestor = parent;
                match std::fs::metadata(ancestor) {
                    Ok(meta) if meta.is_dir() => return writable(ancestor).map_err(create),
                    Ok(_) => return Err(create(io::Error::from_raw_os_error(libc::ENOTDIR))),
                    Err(e) if missing(&e) => {}
                    Err(e) => return Err(create(e)),
                }
            }
            Err(create(e))
        }
        Err(cause) => Err(LedgerError::ReadDir {
            path: dir.to_owned(),
            cause,
        }),
    }
}

/// A path that does not exist: not found, or under something that is not a directory
/// (which the caller finds and names).
fn missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// The agent's user may create files in `dir` (`access(2)` with `W_OK | X_OK`: as root,
/// that fails only on a read-only filesystem).
fn writable(dir: &Path) -> io::Result<()> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
