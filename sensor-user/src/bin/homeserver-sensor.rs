//! The `homeserver-sensor` binary: parses the command line and runs the agent library.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use homeserver_sensor::{
    agent::{self, RunOptions, Targets},
    config::Config,
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
    let result = match Cli::parse().command {
        Command::CheckConfig { file } => Config::load(Some(&file))
            .map(|_| println!("{}: OK", file.display()))
            .map_err(anyhow::Error::from),
        Command::Run(args) => run(args),
        Command::Report(args) => report(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One sentence per cause, never a backtrace: these are errors a user can meet.
            eprintln!("homeserver-sensor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
    fn load(&self) -> Result<Config, homeserver_sensor::config::ConfigError> {
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
    let config = source.load()?;
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
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
                let config = source.load().map_err(|e| e.to_string());
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
