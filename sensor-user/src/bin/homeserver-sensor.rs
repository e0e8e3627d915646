//! The `homeserver-sensor` binary: parses the command line and runs the agent library.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use homeserver_sensor::{
    agent::{self, RunOptions, Targets},
    config::{Config, ConfigError, check},
    output::Sink,
};

#[derive(Parser)]
#[command(
    version,
    about = "eBPF sensor for Matrix homeservers: per-connection accounting of Synapse"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel programs, watch the homeserver and write JSON lines.
    Run(RunArgs),
    /// What a user, a token fingerprint or a client address reached, from the ledger.
    Report(homeserver_sensor::report::ReportArgs),
    /// Check a configuration file and explain every error.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Configuration file [default: /etc/homeserver-sensor/config.toml if it exists].
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Watch this process (repeatable). Disables discovery of Synapse processes.
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Watch every process of this cgroup v2 (path under the cgroup v2 mount, or absolute;
    /// repeatable). Disables discovery.
    #[arg(long = "cgroup", value_name = "PATH")]
    cgroups: Vec<String>,
    /// Where to write JSON lines: a file, or `-` for stdout [default: output.events].
    #[arg(long, value_name = "PATH")]
    events: Option<String>,
    /// Stop after this many seconds (records for open connections are flushed first).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Count send/receive calls per connection in cgroup mode too (see README: costs other
    /// processes' socket calls a filter check).
    #[arg(long)]
    call_counts: bool,
    /// Count syscalls and file bytes per watched process (see README: costs every process
    /// on the host about 130 ns per syscall).
    #[arg(long)]
    syscall_counts: bool,
}

fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // journald and log files get plain text, a terminal gets colours.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOMESERVER_SENSOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // `--version` names the embedded kernel object too: the verifier's work depends on the
    // compiler and linker that built it as much as on the kernel.
    let long_version = format!(
        "{}\n{}",
        env!("CARGO_PKG_VERSION"),
        homeserver_sensor::load::ObjectBuild::embedded()
    );
    // Built once for the life of the process (clap takes a `&'static str`).
    let long_version: &'static str = Box::leak(long_version.into_boxed_str());
    let cli = Cli::from_arg_matches(&Cli::command().long_version(long_version).get_matches())
        .unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run(args) => run(args),
        Command::Report(args) => report(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line per error, never a backtrace: these are errors a user can meet.
            for line in error_text(&e).lines() {
                eprintln!("homeserver-sensor: {line}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error as the user reads it: its message, then each cause that no message above it
/// already says. The library's errors carry their cause in their own message (the advice
/// that follows a cause could not be placed otherwise), so this adds what an `anyhow`
/// context wraps, and never repeats a cause. Several errors are on several lines.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Every error of a configuration, one per line.
fn config_errors(e: &ConfigError) -> anyhow::Error {
    let lines: Vec<String> = e.each().iter().map(ToString::to_string).collect();
    anyhow::anyhow!(lines.join("\n"))
}

/// What `run` checks at start without a kernel, all at once: one error per line.
fn start_checks(config: &Config) -> anyhow::Result<()> {
    let errors = check::start_checks(config, agent::default_proc_root());
    if errors.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(anyhow::anyhow!(lines.join("\n")))
}

/// `check-config FILE`: the file, then what `run` would check of the host with it.
fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(Some(file)).map_err(|e| config_errors(&e))?;
    start_checks(&config)?;
    println!("{}: OK", file.display());
    Ok(())
}

/// The configuration file with the command line's overrides applied; read at start and
/// again on each SIGHUP.
#[derive(Clone)]
struct ConfigSource {
    path: Option<PathBuf>,
    call_counts: bool,
    syscall_counts: bool,
    events: Option<String>,
}

impl ConfigSource {
    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.path.as_deref())?;
        config.accounting.call_counts |= self.call_counts;
        config.accounting.syscalls |= self.syscall_counts;
        if let Some(events) = &self.events {
            config.output.events = events.clone();
        }
        Ok(config)
    }
}

fn report(args: &homeserver_sensor::report::ReportArgs) -> anyhow::Result<()> {
    let dir = match &args.ledger_dir {
        Some(dir) => dir.clone(),
        None => Config::load(args.config.as_deref())?.ledger.dir,
    };
    homeserver_sensor::report::run(args, &dir, &mut std::io::stdout().lock())?;
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let source = ConfigSource {
        path: args.config,
        call_counts: args.call_counts,
        syscall_counts: args.syscall_counts,
        events: args.events,
    };
    let config = source.load().map_err(|e| config_errors(&e))?;
    let duration = match args.duration {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            anyhow::bail!("--duration must be a positive number of seconds, not {s}")
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let opts = RunOptions {
        events: Sink::parse(&config.output.events),
        config,
        targets: Targets {
            pids: args.pids,
            cgroups: args.cgroups,
        },
        duration,
        proc_root: agent::default_proc_root().to_owned(),
    };
    // Before anything is loaded into the kernel: every path and file the agent needs. Not
    // without the privilege to load (the agent then says so first, which is what to fix).
    if homeserver_sensor::load::privileged() {
        start_checks(&opts.config)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        // Handled from here on, before anything is loaded: a SIGTERM that came before the
        // shutdown future is first polled (after the start record) would otherwise kill
        // the agent without its stop record and ledger flush.
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        };
        // SIGHUP: read the file again; the agent applies what can change live.
        let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reading the configuration again");
                // One line for the log and the `reload` record, however many errors.
                let config = source.load().map_err(|e| {
                    let each: Vec<String> = e.each().iter().map(ToString::to_string).collect();
                    each.join("; ")
                });
                if reload_tx.send(config).is_err() {
                    break;
                }
            }
        });
        agent::run_reloadable(opts, shutdown, Some(reloads))
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn a_cause_in_the_message_is_printed_once() {
        let read = Config::load(Some(Path::new("/nonexistent.toml"))).unwrap_err();
        assert_eq!(
            error_text(&anyhow::Error::from(read)),
            "cannot read the configuration file /nonexistent.toml: No such file or directory \
             (os error 2); check the path given with -c"
        );
        // An error that says its cause and also returns it as its source (some of the
        // library's do): still once.
        let bind = homeserver_sensor::metrics::MetricsError::Bind {
            addr: "127.0.0.1:9465".parse().unwrap(),
            hint: "another process holds this port",
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let text = error_text(&anyhow::Error::from(bind));
        assert_eq!(
            text,
            "cannot listen for metrics on 127.0.0.1:9465: address in use; another process \
             holds this port"
        );
    }

    #[test]
    fn a_context_is_followed_by_its_cause() {
        let e = Err::<(), _>(io::Error::other("out of threads"))
            .context("cannot start the async runtime")
            .unwrap_err();
        assert_eq!(
            error_text(&e),
            "cannot start the async runtime: out of threads"
        );
    }

    #[test]
    fn several_configuration_errors_are_one_per_line() {
        let err = Config::parse(
            "[kernel]\nmax_connections = 0\n[discovery]\nrescan_ms = 1\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        let text = error_text(&config_errors(&err));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("invalid configuration in c.toml, line 2: kernel.max_connections"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("invalid configuration in c.toml, line 4: discovery.rescan_ms"),
            "{text}"
        );
    }
}
