//! Booting one kernel under qemu (TCG) with the test initramfs, with a time limit, saving
//! the serial console to a log and following `/init`'s markers as they come.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    kernels::Kernel,
    markers::{Event, Session},
};

/// Guest memory: the initramfs (about 60 MB unpacked) lives in it, and the largest test
/// moves 64 MB through loopback.
const MEMORY: &str = "1024M";
const CPUS: &str = "2";

/// How the VM ended.
#[derive(Debug)]
pub enum End {
    /// `/init` finished and powered off.
    PoweredOff,
    /// qemu exited before `/init` finished (a panic, a crash, qemu refused to start).
    Stopped(ExitStatus),
    /// Killed at the time limit.
    TimedOut,
}

/// One boot.
pub struct Outcome {
    pub session: Session,
    pub end: End,
    /// From starting qemu to `/init` running.
    pub boot: Option<Duration>,
    /// From starting qemu to its exit.
    pub total: Duration,
}

/// qemu's command line for `kernel` with `initrd`; `append` adds kernel parameters.
pub fn command(kernel: &Kernel, initrd: &Path, append: &str) -> Command {
    let arch = kernel.arch;
    let mut cmd = Command::new(arch.qemu());
    cmd.args(arch.qemu_machine())
        .args(["-m", MEMORY, "-smp", CPUS])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console={} panic=-1 {append}", arch.console()).trim_end())
        .args(["-nographic", "-no-reboot"]);
    cmd
}

enum Msg {
    Console(Vec<u8>),
    Qemu(Vec<u8>),
    Closed,
}

/// Boots, saves the console to `log`, calls `progress` for each marker event (with the
/// time since qemu started), and stops the VM at `timeout`.
pub fn run(
    kernel: &Kernel,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
    mut progress: impl FnMut(&Session, &Event, Duration),
) -> Result<Outcome> {
    let mut qemu = command(kernel, initrd, "");
    let shown = crate::cmd::show(&qemu);
    let mut log_file =
        File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    writeln!(log_file, "# {shown}")?;
    let start = Instant::now();
    // stdin must not be the terminal: -nographic would take it over for the monitor.
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let (tx, rx) = mpsc::channel();
    let console = child.stdout.take().context("no qemu stdout")?;
    let errors = child.stderr.take().context("no qemu stderr")?;
    let readers = [
        spawn_reader(console, tx.clone(), Msg::Console),
        spawn_reader(errors, tx, Msg::Qemu),
    ];
    let mut session = Session::default();
    let mut boot = None;
    let mut open = readers.len();
    let mut timed_out = false;
    while open > 0 {
        let Some(left) = timeout.checked_sub(start.elapsed()) else {
            timed_out = true;
            break;
        };
        let msg = match rx.recv_timeout(left) {
            Ok(msg) => msg,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (line, from_qemu) = match msg {
            Msg::Console(bytes) => (bytes, false),
            Msg::Qemu(bytes) => (bytes, true),
            Msg::Closed => {
                open -= 1;
                continue;
            }
        };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if from_qemu {
            writeln!(log_file, "qemu: {text}")?;
            continue;
        }
        writeln!(log_file, "{text}")?;
        if let Some(event) = session.line(text) {
            if event == Event::Init {
                boot = Some(start.elapsed());
            }
            progress(&session, &event, start.elapsed());
        }
    }
    let end = if timed_out {
        // Only the qemu this function started, by its own handle.
        let _ = child.kill();
        let _ = child.wait();
        writeln!(
            log_file,
            "# killed by xtask after {} s (time limit)",
            timeout.as_secs()
        )?;
        End::TimedOut
    } else {
        let status = child.wait().context("cannot wait for qemu")?;
        if session.done {
            End::PoweredOff
        } else {
            End::Stopped(status)
        }
    };
    for reader in readers {
        let _ = reader.join();
    }
    Ok(Outcome {
        session,
        end,
        boot,
        total: start.elapsed(),
    })
}

/// Sends each line read from `pipe` (bytes, the console is not always UTF-8), then `Closed`.
fn spawn_reader(
    pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<Msg>,
    wrap: fn(Vec<u8>) -> Msg,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(wrap(line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Msg::Closed);
    })
}
