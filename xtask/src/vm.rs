//! `cargo xtask vm-test`: the privileged integration tests inside qemu, on Debian's own
//! kernels, for x86_64 and aarch64, one kernel at a time.
//!
//! The steps: install missing host tools (qemu, the aarch64 cross linker, the musl Rust
//! targets); resolve each kernel's Debian package with apt and download it (cached under
//! `~/.cache/homeserver-sensor/vm`); build the kernel object once and static test binaries
//! per architecture; pack them with busybox and `xtask/vm/init` into an initramfs; boot each
//! kernel under TCG and follow the results on its serial console. docs/vm-test.md has the
//! details, the kernel set and the latest results.

mod apt;
mod arch;
mod binaries;
mod busybox;
mod host;
mod initramfs;
mod kernels;
mod markers;
mod qemu;
mod report;
mod selection;

use std::{
    collections::BTreeMap,
    env, fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use self::{
    arch::Arch,
    kernels::{Kernel, Spec},
    markers::Event,
    report::{KernelResult, duration},
    selection::Selection,
};
use crate::{
    cmd::{self, step},
    ebpf,
};

/// Options of `cargo xtask vm-test`.
#[derive(Args)]
pub struct VmTestOptions {
    /// Only this architecture (repeatable) [default: both].
    #[arg(long, value_enum, value_name = "ARCH")]
    pub arch: Vec<Arch>,
    /// Only this kernel of the set (repeatable): 5.10, 6.1 or 6.12 [default: all].
    #[arg(long = "kernel", value_name = "NAME")]
    pub kernels: Vec<String>,
    /// Keep the initramfs images and write target/vm-test/boot-<kernel>.sh, which boots a
    /// kernel by hand and leaves a shell on the console after the tests.
    #[arg(long)]
    pub keep: bool,
    /// Only the tests whose `binary::name` contains this text.
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Seconds one kernel may take from boot to power-off [default: 900 on x86_64, 1200 on
    /// aarch64].
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Only the kernels CI boots (`.ci/run`): Debian 12's 6.1 on x86_64 and Debian 13's
    /// 6.12 on aarch64.
    #[arg(long, conflicts_with_all = ["arch", "kernels"])]
    pub ci: bool,
    /// Print the kernel set and exit.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub ebpf: ebpf::Options,
}

/// Seconds one test may take before `/init` kills it and goes on with the next; the
/// slowest passing test takes about 45 s here.
const TEST_TIMEOUT: u64 = 300;

pub fn vm_test(opts: &VmTestOptions) -> Result<()> {
    let plan = select(opts)?;
    if opts.list {
        for (spec, arch) in &plan {
            println!(
                "{:<5} {:<8} Debian {:<9} {}",
                spec.name,
                arch.name(),
                spec.suite,
                spec.metapackage(*arch)
            );
        }
        return Ok(());
    }
    let archs: Vec<Arch> = Arch::ALL
        .into_iter()
        .filter(|a| plan.iter().any(|(_, pa)| pa == a))
        .collect();
    let cache = cache_dir()?;
    let out = cmd::target_dir().join("vm-test");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut timings = Vec::new();

    let started = Instant::now();
    host::ensure(&archs)?;
    timings.push(("host tools", started.elapsed()));

    let started = Instant::now();
    let mut kernels = Vec::new();
    for (spec, arch) in &plan {
        kernels.push(kernels::fetch(&cache, spec, *arch)?);
    }
    timings.push(("kernel packages (apt)", started.elapsed()));

    let started = Instant::now();
    let object = ebpf::build(&opts.ebpf)?;
    timings.push(("kernel object (build-ebpf)", started.elapsed()));

    let selection = Selection {
        only: opts.only.clone(),
    };
    let initrds = build_initrds(&archs, &cache, &object, &out, &selection, &mut timings)?;
    step(format!("tests in the VM: {}", selection.describe()));

    let mut results = Vec::new();
    let count = kernels.len();
    for (i, kernel) in kernels.into_iter().enumerate() {
        let initrd = &initrds[&kernel.arch];
        let timeout = opts
            .timeout
            .map_or_else(|| kernel.arch.default_timeout(), Duration::from_secs);
        let result = boot(i + 1, count, kernel, initrd, &out, timeout)?;
        println!("{}", result.verdict());
        results.push(result);
    }

    summarize(&results, &timings, &out)?;

    if opts.keep {
        for result in &results {
            let script = write_boot_script(&result.kernel, &initrds[&result.kernel.arch], &out)?;
            step(format!(
                "boot {} by hand: {}",
                result.kernel.release,
                script.display()
            ));
        }
    } else {
        for initrd in initrds.values() {
            let _ = fs::remove_file(initrd);
        }
    }

    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{} ({})", r.kernel.release, r.kernel.arch.name()))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} kernels failed: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
    }
    step(format!("all {} kernels passed", results.len()));
    Ok(())
}

/// Builds the test binaries for each architecture and packs one initramfs per
/// architecture into `out`; adds the time each took to `timings`.
fn build_initrds(
    archs: &[Arch],
    cache: &Path,
    object: &Path,
    out: &Path,
    selection: &Selection,
    timings: &mut Vec<(&'static str, Duration)>,
) -> Result<BTreeMap<Arch, PathBuf>> {
    let mut initrds = BTreeMap::new();
    for &arch in archs {
        let started = Instant::now();
        let bins = binaries::build(arch, object)?;
        let busybox = busybox::fetch(cache, arch)?;
        let initrd = out.join(format!("initrd-{}.img", arch.name()));
        let settings = initramfs::Settings {
            selection,
            test_timeout: TEST_TIMEOUT,
        };
        let size = initramfs::write(&initrd, &busybox, &bins, &settings)?;
        step(format!(
            "initramfs for {}: {} ({:.1} MB): test executables {}; with test-server, \
             homeserver-sensor and busybox",
            arch.name(),
            initrd.display(),
            size as f64 / 1e6,
            bins.tests
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        timings.push((
            match arch {
                Arch::X86_64 => "x86_64 binaries and initramfs",
                Arch::Aarch64 => "aarch64 binaries and initramfs",
            },
            started.elapsed(),
        ));
        initrds.insert(arch, initrd);
    }
    Ok(initrds)
}

/// Prints the table and the preparation times, and writes both to `out/summary.md`.
fn summarize(
    results: &[KernelResult],
    timings: &[(&'static str, Duration)],
    out: &Path,
) -> Result<()> {
    let table = report::table(results);
    println!("\n{table}");
    let mut summary = table;
    summary.push_str("\nPreparation:\n");
    for (what, took) in timings {
        let line = format!("- {what}: {}", duration(*took));
        println!("{line}");
        summary.push_str(&line);
        summary.push('\n');
    }
    let path = out.join("summary.md");
    fs::write(&path, summary).with_context(|| format!("cannot write {}", path.display()))?;
    step(format!("summary written to {}", path.display()));
    Ok(())
}

/// The (kernel, architecture) pairs the options select, in the set's order.
fn select(opts: &VmTestOptions) -> Result<Vec<(&'static Spec, Arch)>> {
    for name in &opts.kernels {
        if !kernels::SET.iter().any(|spec| spec.name == name) {
            let names: Vec<&str> = kernels::SET.iter().map(|s| s.name).collect();
            bail!(
                "no kernel {name} in the set: pick one of {} (xtask/src/vm/kernels.rs lists them)",
                names.join(", ")
            );
        }
    }
    let mut plan = Vec::new();
    if opts.ci {
        for &(name, arch) in kernels::CI {
            let spec = kernels::SET
                .iter()
                .find(|s| s.name == name && s.archs.contains(&arch))
                .with_context(|| {
                    format!("the CI kernel {name} ({}) is not in the set", arch.name())
                })?;
            plan.push((spec, arch));
        }
        return Ok(plan);
    }
    for &arch in &Arch::ALL {
        if !opts.arch.is_empty() && !opts.arch.contains(&arch) {
            continue;
        }
        for spec in kernels::SET {
            if spec.archs.contains(&arch)
                && (opts.kernels.is_empty() || opts.kernels.iter().any(|k| k == spec.name))
            {
                plan.push((spec, arch));
            }
        }
    }
    if plan.is_empty() {
        bail!("no kernel of the set matches these --kernel and --arch options (see --list)");
    }
    Ok(plan)
}

/// Boots one kernel and follows its tests, printing a line per test.
fn boot(
    n: usize,
    count: usize,
    kernel: Kernel,
    initrd: &Path,
    out: &Path,
    timeout: Duration,
) -> Result<KernelResult> {
    let log = out.join(format!("{}.log", kernel.id()));
    let config = fs::read_to_string(&kernel.config).unwrap_or_default();
    let features: Vec<String> = [
        "DEBUG_INFO_BTF",
        "CGROUP_BPF",
        "BPF_LSM",
        "KPROBES",
        "FPROBE",
    ]
    .iter()
    .map(|name| {
        let value = kernels::config_value(&config, name);
        format!("{name}={}", value.as_deref().unwrap_or("n"))
    })
    .collect();
    step(format!(
        "[{n}/{count}] {} on {}: booting {} (Debian {} {} {}; {}; time limit {}); console in {}",
        kernel.name,
        kernel.arch.name(),
        kernel.release,
        kernel.suite,
        kernel.package,
        kernel.version,
        features.join(" "),
        duration(timeout),
        log.display()
    ));
    let outcome = qemu::run(
        &kernel,
        initrd,
        &log,
        timeout,
        |session, event, at| match event {
            Event::Init => step(format!("  /init running after {}", duration(at))),
            Event::Env => step(format!(
                "  guest: {}",
                session.env.as_deref().unwrap_or_default()
            )),
            Event::Probe(label) => {
                if let Some(probe) = session.probe(label) {
                    step(format!(
                        "  agent probe ({label} cgroup): {}",
                        probe.mechanism()
                    ));
                }
            }
            Event::End(index) => {
                let test = &session.tests[*index];
                step(format!(
                    "  {:<7} {} ({})",
                    test.verdict(),
                    test.id,
                    test.secs().map_or("-".into(), |s| format!("{s:.1} s"))
                ));
            }
            Event::Skip(id) => step(format!("  skipped {id}")),
            Event::Fatal(why) => step(format!("  /init: {why}")),
            Event::Begin(_) | Event::Done => {}
        },
    )?;
    let result = KernelResult {
        kernel,
        outcome,
        log,
    };
    let probes = result.probes();
    if !probes.is_empty() {
        step(format!("{} mechanisms:{probes}", result.kernel.release));
    }
    Ok(result)
}

/// A shell script that boots `kernel` with the kept initramfs, serial console on the
/// terminal, and a shell after the tests (`vmtest.shell`).
fn write_boot_script(kernel: &Kernel, initrd: &Path, out: &Path) -> Result<PathBuf> {
    let qemu = qemu::command(kernel, initrd, "vmtest.shell");
    let mut words = vec![quote(&qemu.get_program().to_string_lossy())];
    words.extend(qemu.get_args().map(|a| quote(&a.to_string_lossy())));
    let script = out.join(format!("boot-{}.sh", kernel.id()));
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Boots {} with the vm-test initramfs; the console is this terminal \
             (Ctrl-A X quits qemu).\nexec {}\n",
            kernel.release,
            words.join(" ")
        ),
    )?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// Single-quotes a word for sh unless it is plainly safe.
fn quote(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Where a cache directory is assembled before it is renamed into place: `<dir>.partial`
/// (a half-written directory never looks complete).
fn partial(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    dir.with_file_name(name)
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/homeserver-sensor/vm`: kernels, busybox, apt lists.
fn cache_dir() -> Result<PathBuf> {
    let cache = match env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(env::var_os("HOME").context(
            "neither XDG_CACHE_HOME nor HOME is set: set one so xtask knows where to keep kernels",
        )?)
        .join(".cache"),
    };
    Ok(cache.join("homeserver-sensor/vm"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{VmTestOptions, quote, select};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: VmTestOptions,
    }

    fn plan(args: &[&str]) -> Vec<String> {
        let cli = Cli::try_parse_from(std::iter::once("vm-test").chain(args.iter().copied()))
            .expect("options");
        select(&cli.opts)
            .expect("a plan")
            .into_iter()
            .map(|(spec, arch)| format!("{} {}", spec.name, arch.name()))
            .collect()
    }

    #[test]
    fn kernel_selection() {
        assert_eq!(plan(&["--ci"]), ["6.1 x86_64", "6.12 aarch64"]);
        assert_eq!(plan(&[]).len(), 5);
        assert_eq!(
            plan(&["--arch", "aarch64"]),
            ["6.1 aarch64", "6.12 aarch64"]
        );
        assert_eq!(plan(&["--kernel", "5.10"]), ["5.10 x86_64"]);
        assert!(Cli::try_parse_from(["vm-test", "--ci", "--kernel", "6.1"]).is_err());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(
            quote("/usr/bin/qemu-system-x86_64"),
            "/usr/bin/qemu-system-x86_64"
        );
        assert_eq!(quote("console=ttyS0 panic=-1"), "'console=ttyS0 panic=-1'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
