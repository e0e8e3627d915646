//! Debian's statically linked busybox for the guest: the shell that runs `/init` and the
//! few tools it uses (mount, ip, timeout, poweroff). One small binary per architecture,
//! downloaded like the kernels and cached.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};

use super::{apt::Apt, arch::Arch};
use crate::cmd::{self, step};

const PACKAGE: &str = "busybox-static";
/// Any release works; bookworm's is the one the host runs.
const SUITE: &str = "bookworm";

/// The cached `busybox` for `arch`, downloaded on first use.
pub fn fetch(cache: &Path, arch: Arch) -> Result<PathBuf> {
    let apt = Apt::new(cache, SUITE, arch)?;
    apt.update_if_stale()?;
    let version = apt
        .show(PACKAGE)?
        .get("Version")
        .context("busybox-static has no Version")?
        .to_owned();
    let dir =
        cache
            .join("busybox")
            .join(format!("{}-{}", version.replace(':', "_"), arch.debian()));
    let busybox = dir.join("busybox");
    if busybox.is_file() {
        return Ok(busybox);
    }
    step(format!(
        "downloading {PACKAGE} {version} ({})...",
        arch.debian()
    ));
    let download = cache.join("download");
    let deb = apt.download(PACKAGE, &download)?;
    let tmp = super::partial(&dir);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    cmd::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    let extracted = tmp.join("bin/busybox");
    ensure!(extracted.is_file(), "{} has no /bin/busybox", deb.display());
    fs::create_dir_all(&dir)?;
    fs::rename(&extracted, &busybox)?;
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_dir_all(&download);
    Ok(busybox)
}
