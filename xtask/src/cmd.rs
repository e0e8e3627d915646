//! Running commands: step lines, the workspace's paths, host cargo, and root privileges.

use std::{
    env,
    ffi::OsStr,
    fmt::Display,
    fs,
    io::{self, BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, Result, bail, ensure};

/// Prints one step line to stderr.
pub fn step(msg: impl Display) {
    eprintln!("xtask: {msg}");
}

/// The workspace root: xtask's own manifest directory is one level below it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root) or
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Where `build-ebpf` leaves the kernel object.
pub fn ebpf_object() -> PathBuf {
    target_dir().join("bpfel-unknown-none/release/sensor")
}

/// Where `build-ebpf` records what built the object, beside it (`sensor.build`: `key=value`
/// lines `bpf_linker`, `llvm`, `rustc`), for sensor-user's build.rs, which reads it at the
/// object's path with the extension `build`.
pub fn ebpf_build_record() -> PathBuf {
    target_dir().join("bpfel-unknown-none/release/sensor.build")
}

/// `cargo` with the default (stable) toolchain, run in the workspace root.
///
/// sensor-user's build.rs looks for the kernel object under `<workspace>/target`; when
/// `CARGO_TARGET_DIR` moves it elsewhere, this points `HOMESERVER_SENSOR_EBPF_OBJECT` at it
/// (unless the caller already set that variable).
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    if env::var_os("CARGO_TARGET_DIR").is_some()
        && env::var_os("HOMESERVER_SENSOR_EBPF_OBJECT").is_none()
    {
        cmd.env("HOMESERVER_SENSOR_EBPF_OBJECT", ebpf_object());
    }
    cmd
}

/// The command line as one would type it, for messages.
pub fn show(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs a command with inherited stdio and fails unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    Ok(())
}

/// Runs a command with its stdout and stderr in one pipe, so that their lines come in the
/// order they were written, and gives each line (without its end) to `on_line`; returns the
/// exit status. Bytes that are not UTF-8 are replaced, not an error.
pub fn run_merged(cmd: &mut Command, mut on_line: impl FnMut(&str)) -> Result<ExitStatus> {
    let shown = show(cmd);
    let (reader, writer) = io::pipe().context("cannot create a pipe")?;
    let writer2 = writer
        .try_clone()
        .context("cannot duplicate a pipe's descriptor")?;
    cmd.stdout(writer2).stderr(writer);
    let spawned = cmd.spawn();
    // The command keeps the pipe's write end until its stdio is replaced: reading would never
    // see the end while this process holds it.
    cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let mut child = spawned.with_context(|| format!("cannot start `{shown}`"))?;
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read the output of `{shown}`"))?;
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        on_line(line.trim_end_matches(['\n', '\r']));
    }
    child
        .wait()
        .with_context(|| format!("cannot wait for `{shown}`"))
}

/// Runs a command and returns its trimmed stdout; on failure the error carries the first
/// line of its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    // Only the first line: the rest is often a backtrace (rustup honours RUST_BACKTRACE).
    ensure!(
        out.status.success(),
        "`{shown}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap_or("")
    );
    Ok(String::from_utf8(out.stdout)
        .with_context(|| format!("`{shown}` printed something that is not UTF-8"))?
        .trim()
        .to_owned())
}

/// The first executable file called `name` in the directories of `$PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| {
            fs::metadata(path)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// How a command that needs root gets it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// xtask already runs as root.
    Already,
    /// Through `sudo -E` (the environment is kept, so tests see the same variables).
    Sudo,
}

impl Root {
    /// Finds out whether `purpose` can run as root, and says clearly when it cannot.
    pub fn get(purpose: &str) -> Result<Self> {
        if effective_uid()? == 0 {
            return Ok(Root::Already);
        }
        if find_on_path("sudo").is_none() {
            bail!("{purpose} needs root, and sudo is not installed: run this command as root");
        }
        Ok(Root::Sudo)
    }

    /// A command that runs `program` as root.
    pub fn command(self, program: impl AsRef<OsStr>) -> Command {
        match self {
            Root::Already => Command::new(program),
            Root::Sudo => {
                let mut cmd = Command::new("sudo");
                cmd.arg("-E").arg(program);
                cmd
            }
        }
    }
}

/// The effective user id, from the `Uid:` line of /proc/self/status (real, effective, ...).
fn effective_uid() -> Result<u32> {
    let status =
        fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

/// `apt-get install` as root, without recommended packages; on failure, refreshes the
/// package lists once and tries again.
pub fn apt_install(what: &str, packages: &[&str]) -> Result<()> {
    let root = Root::get("installing packages with apt-get")?;
    step(format!(
        "installing {what}: apt-get install {} (once)...",
        packages.join(" ")
    ));
    let install = || {
        let mut cmd = root.command("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--allow-downgrades",
            ])
            .args(packages);
        run(&mut cmd)
    };
    if install().is_ok() {
        return Ok(());
    }
    step("refreshing the package lists (apt-get update) and trying again...");
    run(root.command("apt-get").args(["-q", "update"]))?;
    install().with_context(|| format!("cannot install {}", packages.join(" ")))
}
