//! The nightly toolchain and bpf-linker that the kernel programs need, installed on demand.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd::{self, step};

/// The bpf-linker release xtask builds, and the only one it takes from its prefix or PATH.
/// It links every kernel program, so a new release is a change to make here and review (CI
/// builds it from nothing), not whatever `cargo install` finds on the day. 0.13.0 builds
/// against LLVM 22 (the nightly's) with `--features llvm-22`.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// A bpf-linker to link the kernel programs with, and the version it reports (`None` when
/// `--version` fails or prints none: only for one given with --bpf-linker or BPF_LINKER).
pub struct BpfLinker {
    pub path: PathBuf,
    pub version: Option<String>,
}

/// What `rustc +NIGHTLY -vV` says of itself, for the record of the kernel object's build.
#[derive(Debug, PartialEq, Eq)]
pub struct NightlyVersion {
    /// The first line, which is what `rustc -V` prints:
    /// `rustc 1.97.0-nightly (e50aa6fba 2026-05-19)`.
    pub rustc: String,
    /// The `LLVM version:` line's value: `22.1.4`.
    pub llvm: String,
}

/// A rustup toolchain (nightly) and its sysroot.
pub struct Nightly {
    pub name: String,
    pub sysroot: PathBuf,
}

impl Nightly {
    /// Asks `rustc +NAME` for its sysroot.
    pub fn locate(name: &str) -> Result<Self> {
        let mut rustc = Command::new("rustc");
        rustc.arg(format!("+{name}")).args(["--print", "sysroot"]);
        let sysroot = cmd::output(&mut rustc).with_context(|| {
            format!(
                "cannot use toolchain {name}: install it with `rustup toolchain install {name}`, \
                 or pick another with --toolchain or HOMESERVER_SENSOR_NIGHTLY"
            )
        })?;
        Ok(Nightly {
            name: name.to_owned(),
            sysroot: sysroot.into(),
        })
    }

    /// Installs the `rust-src` component unless present: `-Z build-std=core` compiles it.
    pub fn ensure_rust_src(&self) -> Result<()> {
        if self
            .sysroot
            .join("lib/rustlib/src/rust/library/core")
            .is_dir()
        {
            return Ok(());
        }
        step(format!(
            "installing rust-src for toolchain {} (once)...",
            self.name
        ));
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &self.name,
        ]))
        .context("cannot install rust-src, which building for the BPF target needs")
    }

    /// The compiler's version and its LLVM's, from `rustc +NAME -vV`.
    pub fn version(&self) -> Result<NightlyVersion> {
        let mut rustc = Command::new("rustc");
        rustc.arg(format!("+{}", self.name)).arg("-vV");
        let text = cmd::output(&mut rustc)?;
        parse_rustc_vv(&text).with_context(|| {
            format!(
                "`{}` printed no version or no `LLVM version:` line",
                cmd::show(&rustc)
            )
        })
    }

    /// The toolchain's LLVM shared library (`lib/libLLVM.so.<version>-rust-...`) and the
    /// LLVM major version its name carries (`libLLVM.so.22.1-rust-1.97.0-nightly` -> 22).
    fn llvm(&self) -> Result<(PathBuf, u32)> {
        let lib = self.sysroot.join("lib");
        let entries =
            fs::read_dir(&lib).with_context(|| format!("cannot list {}", lib.display()))?;
        for entry in entries {
            let name = entry?.file_name();
            if let Some(major) = name.to_str().and_then(llvm_major) {
                return Ok((lib.join(&name), major));
            }
        }
        bail!(
            "no libLLVM.so.* in {}: toolchain {} has no shared LLVM to build bpf-linker against",
            lib.display(),
            self.name
        )
    }
}

/// The LLVM major version in a shared library's file name:
/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> 22. `None` for any other file.
fn llvm_major(file_name: &str) -> Option<u32> {
    let version = file_name.strip_prefix("libLLVM.so.")?;
    let end = version
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(version.len());
    version[..end].parse().ok()
}

/// `rustc -vV`'s output read: its first line (`rustc -V`) and its `LLVM version:`.
fn parse_rustc_vv(text: &str) -> Option<NightlyVersion> {
    let rustc = text.lines().next()?.trim();
    let llvm = text
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))?
        .trim();
    (rustc.starts_with("rustc ") && !llvm.is_empty()).then(|| NightlyVersion {
        rustc: rustc.to_owned(),
        llvm: llvm.to_owned(),
    })
}

/// The version in `bpf-linker --version`'s output: `bpf-linker 0.13.0` -> `0.13.0`. `None`
/// for anything else.
fn parse_linker_version(output: &str) -> Option<&str> {
    let version = output
        .lines()
        .next()?
        .trim()
        .strip_prefix("bpf-linker ")?
        .split_whitespace()
        .next()?;
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

/// What `LINKER --version` says its version is; `None` when it does not run (for one xtask
/// built, most often: the LLVM it was built against is gone) or prints no version.
fn linker_version(linker: &Path) -> Option<String> {
    let out = cmd::output(Command::new(linker).arg("--version")).ok()?;
    parse_linker_version(&out).map(str::to_owned)
}

/// Where xtask keeps the bpf-linker it builds: `given` (--toolchain-prefix or
/// HOMESERVER_SENSOR_TOOLCHAIN, made absolute), else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/homeserver-sensor/toolchain`.
///
/// The binary keeps an rpath to `<prefix>/lib`, so the prefix must outlive it (not /tmp).
fn prefix(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return std::path::absolute(dir)
            .with_context(|| format!("cannot make {} an absolute path", dir.display()));
    }
    let cache = match env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => {
            let home = env::var_os("HOME").context(
                "neither XDG_CACHE_HOME nor HOME is set: set one so xtask knows where to keep bpf-linker",
            )?;
            PathBuf::from(home).join(".cache")
        }
    };
    Ok(cache.join("homeserver-sensor/toolchain"))
}

/// A bpf-linker that needs no building: `explicit` (--bpf-linker or BPF_LINKER) as given,
/// whatever its version (a version other than [`BPF_LINKER_VERSION`] is said); else the one
/// in the prefix (`prefix_dir`, else the cache) if it is the pinned version; else, only
/// without `prefix_dir`, the one on PATH if it is the pinned version. Each one passed over
/// is said, with its version and the pinned one.
pub fn find_bpf_linker(
    nightly: &Nightly,
    explicit: Option<&Path>,
    prefix_dir: Option<&Path>,
) -> Result<Option<BpfLinker>> {
    if let Some(path) = explicit {
        ensure!(
            path.is_file(),
            "bpf-linker {} (from --bpf-linker or BPF_LINKER) does not exist",
            path.display()
        );
        let version = linker_version(path);
        match version.as_deref() {
            Some(BPF_LINKER_VERSION) => {}
            Some(other) => step(format!(
                "{} is bpf-linker {other}, not the pinned {BPF_LINKER_VERSION}; \
                 using it as given (--bpf-linker or BPF_LINKER)",
                path.display()
            )),
            None => step(format!(
                "cannot tell the version of {} (`--version` failed or printed none; \
                 the pinned one is {BPF_LINKER_VERSION}); using it as given \
                 (--bpf-linker or BPF_LINKER)",
                path.display()
            )),
        }
        return Ok(Some(BpfLinker {
            path: path.to_owned(),
            version,
        }));
    }
    let prefix = prefix(prefix_dir)?;
    let cached = prefix.join("bin/bpf-linker");
    if cached.is_file() {
        let mut version = linker_version(&cached);
        if version.is_none() {
            // Built by an older recipe that only linked `lib/libLLVM.so`: the binary asks for
            // the versioned name at run time, so add it. If that is not enough (another
            // LLVM), it is passed over, and `ensure_bpf_linker` builds it again.
            link_llvm(nightly, &prefix)?;
            version = linker_version(&cached);
        }
        match version {
            Some(version) if version == BPF_LINKER_VERSION => {
                return Ok(Some(BpfLinker {
                    path: cached,
                    version: Some(version),
                }));
            }
            Some(other) => step(format!(
                "found bpf-linker {other} at {}, but {BPF_LINKER_VERSION} is pinned; not using it",
                cached.display()
            )),
            None => step(format!(
                "{} does not run with toolchain {}'s LLVM (or prints no version); not using it",
                cached.display(),
                nightly.name
            )),
        }
    }
    if prefix_dir.is_some() {
        // A prefix of its own (CI's from nothing): only what is built there.
        return Ok(None);
    }
    let Some(on_path) = cmd::find_on_path("bpf-linker") else {
        return Ok(None);
    };
    match linker_version(&on_path) {
        Some(version) if version == BPF_LINKER_VERSION => Ok(Some(BpfLinker {
            path: on_path,
            version: Some(version),
        })),
        Some(other) => {
            step(format!(
                "found bpf-linker {other} on PATH ({}), but {BPF_LINKER_VERSION} is pinned; \
                 not using it",
                on_path.display()
            ));
            Ok(None)
        }
        None => {
            step(format!(
                "{} (on PATH) does not run or prints no version; not using it",
                on_path.display()
            ));
            Ok(None)
        }
    }
}

/// [`find_bpf_linker`], else builds bpf-linker [`BPF_LINKER_VERSION`] into the prefix
/// (`prefix_dir`, else the cache) against the nightly's own LLVM (Debian's LLVM is older than
/// rustc's, and no system LLVM is needed this way).
pub fn ensure_bpf_linker(
    nightly: &Nightly,
    explicit: Option<&Path>,
    prefix_dir: Option<&Path>,
) -> Result<BpfLinker> {
    if let Some(found) = find_bpf_linker(nightly, explicit, prefix_dir)? {
        return Ok(found);
    }
    let prefix = prefix(prefix_dir)?;
    let major = link_llvm(nightly, &prefix)?;
    step(format!(
        "building bpf-linker {BPF_LINKER_VERSION} (pinned) against toolchain {}'s LLVM {major} \
         into {} (one to three minutes)...",
        nightly.name,
        prefix.display()
    ));
    let mut install = Command::new("cargo");
    install
        .current_dir(&prefix)
        .env("LLVM_PREFIX", &prefix)
        .args(["install", "bpf-linker", "--version"])
        .arg(format!("={BPF_LINKER_VERSION}"))
        .args(["--locked", "--force", "--no-default-features"])
        .arg("--features")
        .arg(format!("llvm-{major}"))
        .arg("--root")
        .arg(&prefix);
    cmd::run(&mut install).context(
        "cannot build bpf-linker; or install one yourself and pass it with --bpf-linker or BPF_LINKER",
    )?;
    let linker = prefix.join("bin/bpf-linker");
    let version = linker_version(&linker);
    ensure!(
        version.as_deref() == Some(BPF_LINKER_VERSION),
        "{} was built but `{} --version` says {}, not bpf-linker {BPF_LINKER_VERSION}",
        linker.display(),
        linker.display(),
        version
            .as_deref()
            .unwrap_or("nothing (it fails or prints no version)"),
    );
    Ok(BpfLinker {
        path: linker,
        version,
    })
}

/// Links the nightly's LLVM into `<prefix>/lib` under two names: `libLLVM.so`, which the
/// bpf-linker build links against, and the library's own versioned name, which the built
/// binary loads through its rpath. Returns the LLVM major version.
fn link_llvm(nightly: &Nightly, prefix: &Path) -> Result<u32> {
    let (llvm, major) = nightly.llvm()?;
    let lib = prefix.join("lib");
    let versioned = llvm.file_name().expect("read_dir entries have names");
    let links = [lib.join("libLLVM.so"), lib.join(versioned)];
    if links
        .iter()
        .all(|link| fs::read_link(link).is_ok_and(|target| target == llvm))
    {
        return Ok(major);
    }
    step(format!(
        "linking {} into {} (once)...",
        llvm.display(),
        lib.display()
    ));
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for link in links {
        // `ln -sf`: replace whatever is there.
        let _ = fs::remove_file(&link);
        symlink(&llvm, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), llvm.display()))?;
    }
    Ok(major)
}

#[cfg(test)]
mod tests {
    use super::{NightlyVersion, llvm_major, parse_linker_version, parse_rustc_vv};

    #[test]
    fn llvm_major_from_file_name() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.19"), Some(19));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
        assert_eq!(llvm_major("libLLVM.so"), None);
        assert_eq!(llvm_major("librustc_driver-b5a965480ee51f9a.so"), None);
    }

    #[test]
    fn linker_version_from_its_output() {
        // `bpf-linker --version` of the release built here, and of others.
        assert_eq!(parse_linker_version("bpf-linker 0.13.0\n"), Some("0.13.0"));
        assert_eq!(parse_linker_version("bpf-linker 0.12.0"), Some("0.12.0"));
        assert_eq!(
            parse_linker_version("bpf-linker 0.14.0-rc.1 (extra)"),
            Some("0.14.0-rc.1")
        );
        assert_eq!(parse_linker_version("bpf-linker\n"), None);
        assert_eq!(parse_linker_version("bpf-linker version unknown"), None);
        assert_eq!(parse_linker_version("ld.lld 19.1.7"), None);
        assert_eq!(parse_linker_version(""), None);
    }

    #[test]
    fn nightly_version_from_rustc_vv() {
        // `rustc +nightly -vV` on this project's machine.
        let text = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\n\
                    binary: rustc\n\
                    commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\n\
                    commit-date: 2026-05-19\n\
                    host: x86_64-unknown-linux-gnu\n\
                    release: 1.97.0-nightly\n\
                    LLVM version: 22.1.4\n";
        assert_eq!(
            parse_rustc_vv(text),
            Some(NightlyVersion {
                rustc: "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)".to_owned(),
                llvm: "22.1.4".to_owned(),
            })
        );
        assert_eq!(
            parse_rustc_vv("rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n"),
            None
        );
        assert_eq!(parse_rustc_vv(""), None);
    }
}
