//! Ctrl-C and SIGTERM: the demo stops everything it started before it exits.
//!
//! A handler counts the signal and writes a byte to a pipe, and one thread reads it.
//! (Blocking the signals and taking them with `sigwait` would not do: the children would
//! inherit the mask, which `std::process::Command` keeps, and could not be stopped with
//! SIGTERM. A handler is reset to the default in a child at exec.) The main thread checks
//! the count between steps. On the first signal the thread kills Synapse and nginx by PID,
//! so the clients blocked on them fail at once and the main thread unwinds: the sensor is
//! stopped with SIGTERM (its programs detached), then the homeserver's directory and the
//! cgroup are removed by their owners' `Drop`. A second signal exits at once.

use std::{
    fs::File,
    io::Read,
    os::fd::FromRawFd,
    sync::{
        Mutex,
        atomic::{AtomicI32, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

/// Signals received, counted by the handler itself: a client that fails because Ctrl-C
/// stopped nginx a moment earlier finds it set.
static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// Processes to kill on a signal.
static KILL_ON_SIGNAL: Mutex<Vec<(u32, On)>> = Mutex::new(Vec::new());
/// The write end of the pipe the handler writes to.
static PIPE: AtomicI32 = AtomicI32::new(-1);

/// Installs the handler for SIGINT and SIGTERM and starts the thread that reads its pipe.
pub fn install() -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors. Close-on-exec: no child inherits them.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    ensure!(
        rc == 0,
        "cannot create a pipe: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor that only this File owns.
    let reader = unsafe { File::from_raw_fd(fds[0]) };
    PIPE.store(fds[1], Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only makes async-signal-safe calls.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        ensure!(
            rc == 0,
            "cannot handle signal {sig}: {}",
            std::io::Error::last_os_error()
        );
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || wait_for_signals(reader))
        .context("cannot start the signal thread")?;
    Ok(())
}

/// The handler: counts the signal (a lock-free atomic) and writes one byte to the pipe
/// (write(2) is async-signal-safe), errno kept.
extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: errno is thread-local; the buffer is one valid byte; a full pipe (many signals
    // at once) loses nothing that matters.
    SIGNALS.fetch_add(1, Ordering::SeqCst);
    unsafe {
        let errno = *libc::__errno_location();
        let byte = sig as u8;
        libc::write(PIPE.load(Ordering::Relaxed), (&raw const byte).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// True once Ctrl-C (or SIGTERM) arrived.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// Which signal kills a process registered with [`kill_on_signal`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// The first: Synapse and nginx, so that the clients fail at once.
    First,
    /// The second, just before the demo exits: the sensor, stopped with SIGTERM by its owner
    /// after the first.
    Second,
}

/// Kills these processes with SIGKILL on that signal, until the guard is dropped (declare
/// it after the processes' owner, so that it is dropped before the owner reaps them).
#[must_use = "the processes are forgotten when the guard is dropped"]
pub fn kill_on_signal(pids: &[u32], on: On) -> KillOnSignal {
    lock().extend(pids.iter().map(|&pid| (pid, on)));
    KillOnSignal(pids.to_vec())
}

/// While it lives, a signal kills the processes given to [`kill_on_signal`].
pub struct KillOnSignal(Vec<u32>);

impl Drop for KillOnSignal {
    fn drop(&mut self) {
        lock().retain(|(pid, _)| !self.0.contains(pid));
    }
}

/// Sleeps for `d`, or less if a signal arrives; true if one did.
pub fn sleep(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted() {
            return true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())),
        );
    }
    interrupted()
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(u32, On)>> {
    KILL_ON_SIGNAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn wait_for_signals(mut pipe: File) {
    let mut byte = [0u8; 1];
    let mut seen = 0;
    while pipe.read_exact(&mut byte).is_ok() {
        seen += 1;
        if seen > 1 {
            kill(On::Second);
            eprintln!("demo: second signal: exiting now");
            std::process::exit(130);
        }
        eprintln!(
            "\ndemo: interrupted: stopping the homeserver and the sensor (again to exit at once)"
        );
        kill(On::First);
    }
}

/// SIGKILL to the processes registered for that signal. The lock is held: their owners
/// reap them only after dropping their guard, which takes it.
fn kill(on: On) {
    for &(pid, _) in lock().iter().filter(|(_, when)| *when == on) {
        // SAFETY: kill(2) on a PID of a child the demo started and has not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}
