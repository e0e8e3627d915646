//! The nightly toolchain and bpf-linker that the kernel programs need, installed on demand.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd::{self, step};

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

/// Where xtask keeps the bpf-linker it builds:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/homeserver-sensor/toolchain`.
///
/// The binary keeps an rpath to `<prefix>/lib`, so the prefix must outlive it (not /tmp).
fn prefix() -> Result<PathBuf> {
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

/// A bpf-linker that needs no installing: `explicit` (--bpf-linker or BPF_LINKER), else the
/// one xtask built into its prefix, else `bpf-linker` on PATH.
pub fn find_bpf_linker(nightly: &Nightly, explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(path) = explicit {
        ensure!(
            path.is_file(),
            "bpf-linker {} (from --bpf-linker or BPF_LINKER) does not exist",
            path.display()
        );
        return Ok(Some(path.to_owned()));
    }
    let prefix = prefix()?;
    let cached = prefix.join("bin/bpf-linker");
    if cached.is_file() {
        if cmd::runs(&cached) {
            return Ok(Some(cached));
        }
        // Built by an older recipe that only linked `lib/libLLVM.so`: the binary asks for the
        // versioned name at run time, so add it. If that is not enough (another LLVM), it
        // is skipped, and `ensure_bpf_linker` builds it again.
        link_llvm(nightly, &prefix)?;
        if cmd::runs(&cached) {
            return Ok(Some(cached));
        }
        step(format!(
            "{} does not run with toolchain {}'s LLVM; not using it",
            cached.display(),
            nightly.name
        ));
    }
    Ok(cmd::find_on_path("bpf-linker"))
}

/// [`find_bpf_linker`], else builds bpf-linker into the prefix against the nightly's own LLVM
/// (Debian's LLVM is older than rustc's, and no system LLVM is needed this way).
pub fn ensure_bpf_linker(nightly: &Nightly, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(found) = find_bpf_linker(nightly, explicit)? {
        return Ok(found);
    }
    let prefix = prefix()?;
    let major = link_llvm(nightly, &prefix)?;
    step(format!(
        "building bpf-linker against toolchain {}'s LLVM {major} into {} \
         (once, about 3 minutes)...",
        nightly.name,
        prefix.display()
    ));
    let mut install = Command::new("cargo");
    install
        .current_dir(&prefix)
        .env("LLVM_PREFIX", &prefix)
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--no-default-features",
        ])
        .arg("--features")
        .arg(format!("llvm-{major}"))
        .arg("--root")
        .arg(&prefix);
    cmd::run(&mut install).context(
        "cannot build bpf-linker; or install one yourself and pass it with --bpf-linker or BPF_LINKER",
    )?;
    let linker = prefix.join("bin/bpf-linker");
    ensure!(
        cmd::runs(&linker),
        "{} was built but does not run (`{} --version` fails)",
        linker.display(),
        linker.display()
    );
    Ok(linker)
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
    use super::llvm_major;

    #[test]
    fn llvm_major_from_file_name() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.19"), Some(19));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
        assert_eq!(llvm_major("libLLVM.so"), None);
        assert_eq!(llvm_major("librustc_driver-b5a965480ee51f9a.so"), None);
    }
}
