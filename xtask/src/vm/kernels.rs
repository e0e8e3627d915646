//! The kernels the VM tests boot: Debian's own cloud kernels, resolved with apt from each
//! release's archive and cached.
//!
//! To test another kernel, add a row to [`SET`] (docs/vm-test.md says how to choose one).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail, ensure};

use super::{apt::Apt, arch::Arch};
use crate::cmd::step;

/// A kernel of the default set: the current kernel of one Debian release.
pub struct Spec {
    /// What `--kernel` takes: the upstream version series.
    pub name: &'static str,
    /// The Debian release that ships it.
    pub suite: &'static str,
    /// The architectures it is tested on.
    pub archs: &'static [Arch],
}

impl Spec {
    /// The metapackage that depends on the release's current kernel: Debian's `cloud`
    /// flavour, built for virtual machines (virtio, serial console) with everything these
    /// tests need built in, so no modules have to go into the initramfs.
    pub fn metapackage(&self, arch: Arch) -> String {
        format!("linux-image-cloud-{}", arch.debian())
    }
}

/// The default set: Debian 11, 12 and 13's kernels on x86_64; 12 and 13's on arm64.
/// What `--ci` boots: the kernel most homeservers run (Debian 12) on x86_64, and one arm64
/// kernel, within CI's time budget. The whole set is for `cargo xtask vm-test` by hand.
pub const CI: &[(&str, Arch)] = &[("6.1", Arch::X86_64), ("6.12", Arch::Aarch64)];

pub const SET: &[Spec] = &[
    Spec {
        name: "5.10",
        suite: "bullseye",
        archs: &[Arch::X86_64],
    },
    Spec {
        name: "6.1",
        suite: "bookworm",
        archs: &[Arch::X86_64, Arch::Aarch64],
    },
    Spec {
        name: "6.12",
        suite: "trixie",
        archs: &[Arch::X86_64, Arch::Aarch64],
    },
];

/// A downloaded kernel, ready to boot.
pub struct Kernel {
    pub name: &'static str,
    pub suite: &'static str,
    pub arch: Arch,
    /// The Debian package and version it comes from.
    pub package: String,
    pub version: String,
    /// `uname -r` in the guest, e.g. `6.1.0-41-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// The kernel's build configuration (`/boot/config-*`).
    pub config: PathBuf,
}

impl Kernel {
    /// A name unique across kernels and architectures, for files: `6.1.0-41-cloud-amd64`
    /// already says both.
    pub fn id(&self) -> &str {
        &self.release
    }
}

/// Resolves the current kernel package of `spec` for `arch` and downloads it, unless the
/// same release is already in `cache/kernels`.
pub fn fetch(cache: &Path, spec: &'static Spec, arch: Arch) -> Result<Kernel> {
    let apt = Apt::new(cache, spec.suite, arch)?;
    apt.update_if_stale()?;
    let meta = spec.metapackage(arch);
    let package = apt
        .show(&meta)?
        .depends()
        .into_iter()
        .find(|dep| dep.starts_with("linux-image-"))
        .with_context(|| format!("{meta} in Debian {} depends on no linux-image", spec.suite))?
        .to_owned();
    let version = apt
        .show(&package)?
        .get("Version")
        .with_context(|| format!("no Version for {package}"))?
        .to_owned();
    let release = release_of(&package)
        .with_context(|| format!("{package} is not named linux-image-<release>"))?
        .to_owned();
    let dir = cache.join("kernels").join(&release);
    let kernel = Kernel {
        name: spec.name,
        suite: spec.suite,
        arch,
        vmlinuz: dir.join("vmlinuz"),
        config: dir.join("config"),
        package,
        version,
        release,
    };
    if kernel.vmlinuz.is_file() && kernel.config.is_file() {
        return Ok(kernel);
    }
    step(format!(
        "downloading {} {} (Debian {}, {})...",
        kernel.package,
        kernel.version,
        spec.suite,
        arch.debian()
    ));
    let download = cache.join("download");
    let deb = apt.download(&kernel.package, &download)?;
    extract_boot(&deb, &dir, &kernel.release)?;
    let _ = fs::remove_dir_all(&download);
    step(format!("kernel cached in {}", dir.display()));
    Ok(kernel)
}

/// `linux-image-6.1.0-41-cloud-amd64` -> `6.1.0-41-cloud-amd64`; the `-unsigned` packages
/// carry the same kernel.
fn release_of(package: &str) -> Option<&str> {
    let release = package.strip_prefix("linux-image-")?;
    let release = release.strip_suffix("-unsigned").unwrap_or(release);
    release
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(release)
}

/// Extracts `boot/vmlinuz-<release>` and `boot/config-<release>` from the package into
/// `dir/vmlinuz` and `dir/config` (the modules are not needed: see [`Spec::metapackage`]).
fn extract_boot(deb: &Path, dir: &Path, release: &str) -> Result<()> {
    let tmp = super::partial(dir);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&tmp)
        .arg("--wildcards")
        .arg("./boot/vmlinuz-*")
        .arg("./boot/config-*")
        .stdin(dpkg.stdout.take().context("no pipe from dpkg-deb")?)
        .status()
        .context("cannot start tar")?;
    let dpkg = dpkg.wait().context("cannot wait for dpkg-deb")?;
    ensure!(
        dpkg.success() && tar.success(),
        "cannot extract /boot from {} (dpkg-deb: {dpkg}, tar: {tar})",
        deb.display()
    );
    let boot = tmp.join("boot");
    for (from, to) in [("vmlinuz", "vmlinuz"), ("config", "config")] {
        let src = boot.join(format!("{from}-{release}"));
        if !src.is_file() {
            bail!("{} has no /boot/{from}-{release}", deb.display());
        }
        fs::rename(&src, tmp.join(to))?;
    }
    fs::remove_dir_all(&boot)?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))?;
    Ok(())
}

/// The value of `CONFIG_<name>` in a kernel configuration: `y`, `m`, a value, or `None`
/// when it is not set.
pub fn config_value(config: &str, name: &str) -> Option<String> {
    let prefix = format!("CONFIG_{name}=");
    config
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::{config_value, release_of};

    #[test]
    fn release_from_package_name() {
        assert_eq!(
            release_of("linux-image-6.1.0-41-cloud-amd64"),
            Some("6.1.0-41-cloud-amd64")
        );
        assert_eq!(
            release_of("linux-image-6.12.48+deb13-cloud-arm64-unsigned"),
            Some("6.12.48+deb13-cloud-arm64")
        );
        assert_eq!(release_of("linux-image-cloud-amd64"), None);
        assert_eq!(release_of("linux-headers-6.1.0-41-cloud-amd64"), None);
    }

    #[test]
    fn config_values() {
        let config = "# comment\nCONFIG_BPF=y\n# CONFIG_KPROBES is not set\nCONFIG_HZ=250\n";
        assert_eq!(config_value(config, "BPF").as_deref(), Some("y"));
        assert_eq!(config_value(config, "HZ").as_deref(), Some("250"));
        assert_eq!(config_value(config, "KPROBES"), None);
    }
}
