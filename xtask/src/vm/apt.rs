//! apt with a private state directory per Debian suite and architecture, so xtask can look
//! up and download packages of other releases (bullseye, trixie) and of arm64 on a bookworm
//! amd64 host without touching the system's /etc/apt, its package lists or dpkg.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

use super::arch::Arch;
use crate::cmd::{self, step};

/// Where Debian's packages come from. Overridable for a local mirror.
pub const MIRROR_VAR: &str = "HOMESERVER_SENSOR_DEBIAN_MIRROR";
const DEFAULT_MIRROR: &str = "http://deb.debian.org";
/// Debian's archive keys (package debian-archive-keyring; bookworm's has bullseye's and
/// trixie's keys too).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Package lists older than this are refreshed before a lookup.
const MAX_LIST_AGE: Duration = Duration::from_secs(24 * 3600);

/// One suite of Debian for one architecture, with its own lists under `dir`.
pub struct Apt {
    dir: PathBuf,
    suite: String,
    arch: Arch,
}

impl Apt {
    /// `cache/apt/<suite>-<arch>`; created with its sources list on first use.
    pub fn new(cache: &Path, suite: &str, arch: Arch) -> Result<Self> {
        let dir = cache.join("apt").join(format!("{suite}-{}", arch.debian()));
        let mirror = std::env::var(MIRROR_VAR).unwrap_or_else(|_| DEFAULT_MIRROR.to_owned());
        let mirror = mirror.trim_end_matches('/');
        // The suite itself and, for a release, its security updates: Debian's kernel updates
        // arrive through either (point releases, DSAs). A suite such as bookworm-backports
        // has no security suite of its own.
        let mut sources = format!("deb [signed-by={KEYRING}] {mirror}/debian {suite} main\n");
        if !suite.contains('-') {
            sources.push_str(&format!(
                "deb [signed-by={KEYRING}] {mirror}/debian-security {suite}-security main\n"
            ));
        }
        let list = dir.join("sources.list");
        if fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            // New sources (first use, another mirror): lists of the old ones do not count.
            let _ = fs::remove_dir_all(dir.join("lists"));
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            fs::write(&list, sources)
                .with_context(|| format!("cannot write {}", list.display()))?;
        }
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        Ok(Self {
            dir,
            suite: suite.to_owned(),
            arch,
        })
    }

    /// `apt-get` or `apt-cache` confined to this directory.
    fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let arch = self.arch.debian();
        let mut cmd = Command::new(program);
        for opt in [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            format!("Dir::Etc::SourceParts={d}/sources.list.d"),
            format!("Dir::State::Lists={d}/lists"),
            "Dir::State::status=/dev/null".to_owned(),
            format!("Dir::Cache={d}/cache"),
            format!("APT::Architecture={arch}"),
            format!("APT::Architectures::={arch}"),
            "Acquire::Languages=none".to_owned(),
            // Nothing here is shared with the system's apt: its locks are not needed.
            "Debug::NoLocking=true".to_owned(),
            // apt's download user cannot enter root's home; these are public files.
            "APT::Sandbox::User=root".to_owned(),
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd
    }

    /// Downloads the package lists when they are missing or older than a day. When the
    /// download fails and older lists exist, says so and uses them.
    pub fn update_if_stale(&self) -> Result<()> {
        let age = self.lists_age();
        if age.is_some_and(|age| age < MAX_LIST_AGE) {
            return Ok(());
        }
        step(format!(
            "downloading Debian's package lists for {} {} (apt, private state in {})...",
            self.suite,
            self.arch.debian(),
            self.dir.display()
        ));
        let mut update = self.command("apt-get");
        update.args(["-q", "update"]);
        match cmd::output(&mut update) {
            Ok(_) => Ok(()),
            Err(e) if age.is_some() => {
                step(format!("{e:#}; using the lists downloaded before"));
                Ok(())
            }
            Err(e) => Err(e).context(format!(
                "cannot download the package lists of Debian {} (set {MIRROR_VAR} for another \
                 mirror)",
                self.suite
            )),
        }
    }

    /// Age of the newest `*Packages*` list, if any was downloaded.
    fn lists_age(&self) -> Option<Duration> {
        fs::read_dir(self.dir.join("lists"))
            .ok()?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().contains("_Packages"))
            .filter_map(|entry| entry.metadata().ok()?.modified().ok())
            .max()
            .map(|newest| {
                SystemTime::now()
                    .duration_since(newest)
                    .unwrap_or(Duration::ZERO)
            })
    }

    /// The candidate version's control fields of `package` (`apt-cache show`).
    pub fn show(&self, package: &str) -> Result<Control> {
        let mut show = self.command("apt-cache");
        show.args(["show", "--no-all-versions", package]);
        let text = cmd::output(&mut show).with_context(|| {
            format!(
                "no package {package} in Debian {} for {}",
                self.suite,
                self.arch.debian()
            )
        })?;
        Ok(Control::parse(&text))
    }

    /// Downloads the candidate version of `package` into `dir`; returns the `.deb`'s path.
    pub fn download(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        // A fresh directory, so the one .deb in it is the one just downloaded.
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut download = self.command("apt-get");
        download.current_dir(dir).args(["-q", "download", package]);
        cmd::output(&mut download)?;
        let debs: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .collect();
        match debs.as_slice() {
            [deb] => Ok(deb.clone()),
            _ => bail!(
                "`apt-get download {package}` left {} .deb files in {}",
                debs.len(),
                dir.display()
            ),
        }
    }
}

/// A package's control fields, as `apt-cache show` prints them.
pub struct Control {
    fields: Vec<(String, String)>,
}

impl Control {
    /// Parses the first paragraph (continuation lines are joined to their field).
    pub fn parse(text: &str) -> Self {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push('\n');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.to_owned(), value.trim().to_owned()));
            }
        }
        Self { fields }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The package names of `Depends:`, first alternative of each, without versions.
    pub fn depends(&self) -> Vec<&str> {
        self.get("Depends")
            .unwrap_or("")
            .split(',')
            .filter_map(|dep| dep.split('|').next())
            .filter_map(|dep| dep.split_whitespace().next())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Control;

    #[test]
    fn control_fields_and_depends() {
        let text = "Package: linux-image-cloud-amd64\n\
                    Source: linux-signed-amd64 (6.1.158+1)\n\
                    Version: 6.1.158-1\n\
                    Depends: linux-image-6.1.0-41-cloud-amd64 (= 6.1.158-1), foo | bar (>= 2)\n\
                    Description: Linux for x86-64 cloud (meta-package)\n \
                    This package depends on the latest Linux kernel.\n\
                    \n\
                    Package: other\n";
        let c = Control::parse(text);
        assert_eq!(c.get("version"), Some("6.1.158-1"));
        assert_eq!(c.depends(), ["linux-image-6.1.0-41-cloud-amd64", "foo"]);
        assert!(
            c.get("Description")
                .unwrap()
                .ends_with("latest Linux kernel.")
        );
        assert_eq!(c.get("Package"), Some("linux-image-cloud-amd64"));
    }
}
