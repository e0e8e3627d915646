//! `demo`: the sensor at work on a real homeserver, for newcomers. `cargo xtask demo` builds
//! it and runs it as root.
//!
//! It starts a seeded Synapse behind nginx in a cgroup of its own (`Homeserver`), the real
//! `homeserver-sensor` binary on that cgroup with a temporary configuration (thresholds
//! lowered for the small server, ledger and key file in a temporary directory), three benign
//! users, then a scraper on one stolen account and a token-less media harvester (the clients
//! of `tests/src/scenario.rs`). It prints each alert as the sensor raises it, what the sensor
//! recorded per client, then `homeserver-sensor report --user` for the stolen account and how
//! to read it all. Everything it started is stopped at the end, on an error, or on Ctrl-C.

// A binary's root looks for modules next to itself (src/bin/), where the other binaries are.
#[path = "demo/sensor.rs"]
mod sensor;
#[path = "demo/signals.rs"]
mod signals;
#[path = "demo/view.rs"]
mod view;

use std::{
    net::IpAddr,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::ExitCode,
    thread::ScopedJoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use homeserver_sensor_tests::{
    BenignReport, Cgroup, HarvestReport, Homeserver, HomeserverOptions, Role, Room,
    SYNAPSE_VERSION, ScrapeReport, User, benign, harvest, scrape,
};

use crate::sensor::{Seen, Sensor};

const USAGE: &str = "\
usage: demo [--duration SECS] [--keep]

  --duration SECS  how long the benign users chat (default 30); the scraper starts 3 s in
  --keep           keep the state directory (configuration, every record, the sensor's log,
                   the ledger) and print its path, to try more `homeserver-sensor report`s";

/// One loopback address per client, so that each is told apart in the records (the same as
/// tests/tests/scenarios.rs).
const BENIGN_IPS: [&str; 3] = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
const SCRAPER_IP: &str = "127.0.0.31";
const HARVESTER_IP: &str = "127.0.0.51";
/// The scraper walks the room directory this many rooms a page (8 public rooms: 4 pages).
const DIRECTORY_PAGE: u32 = 2;
/// The benign users are alone this long before the scraper starts.
const SCRAPER_AFTER: Duration = Duration::from_secs(3);
/// The ledger is written every second (`flush_s = 1`), and a request's record follows its
/// connection's close by up to 10 ms: the report waits this long after the last request.
const LEDGER_WAIT: Duration = Duration::from_millis(2500);

struct Options {
    benign_for: Duration,
    keep: bool,
}

impl Options {
    /// `None` for `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Self>> {
        let mut opts = Options {
            benign_for: Duration::from_secs(30),
            keep: false,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--duration" => {
                    let value = args
                        .next()
                        .context("--duration needs a number of seconds")?;
                    let secs: u64 = value
                        .parse()
                        .ok()
                        .filter(|s| (5..=3600).contains(s))
                        .with_context(|| {
                            format!("--duration {value:?}: give whole seconds, 5 to 3600")
                        })?;
                    opts.benign_for = Duration::from_secs(secs);
                }
                "--keep" => opts.keep = true,
                "--help" | "-h" => return Ok(None),
                other => bail!("unknown argument {other:?}"),
            }
        }
        Ok(Some(opts))
    }
}

fn main() -> ExitCode {
    if let Err(e) = signals::install() {
        eprintln!("demo: {e:#}");
        return ExitCode::FAILURE;
    }
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    short_panics();
    let started = Instant::now();
    match run(&opts) {
        Ok(()) => {
            println!(
                "\ndemo: done in {:.0} s; everything it started is stopped.",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(_) if signals::interrupted() => {
            remove_kept_logs();
            eprintln!("demo: interrupted; everything it started is stopped.");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the demo loads eBPF programs: run it as root (`cargo xtask demo` does, through sudo)"
    );
    let sensor_bin = sibling("homeserver-sensor")?;
    let state = StateDir::new(opts.keep)?;

    view::title("Starting a homeserver and the sensor");
    view::step(&format!(
        "starting Synapse {SYNAPSE_VERSION} (SQLite, seeded users, rooms and media) behind \
         nginx, in a cgroup of its own..."
    ));
    let t = Instant::now();
    let cgroup = unwind("cannot create a cgroup", || Cgroup::new("demo"))?;
    let hs = unwind("the homeserver did not start", || {
        Homeserver::start(HomeserverOptions {
            cgroup: Some(&cgroup),
        })
    })?;
    // Declared after `hs`: dropped (the PIDs forgotten) before `hs` reaps them.
    let _kill = signals::kill_on_signal(&[hs.synapse_pid(), hs.nginx_pid()], signals::On::First);
    check_interrupt()?;
    let seed = &hs.seed;
    view::step(&format!(
        "homeserver {} up in {:.1} s: Synapse on {}, nginx on {}; {} users, {} public rooms \
         and {} private with history, {} media files ({} legacy: served without a token)",
        hs.server_name,
        t.elapsed().as_secs_f64(),
        hs.synapse_addr,
        hs.nginx_addr,
        seed.users.len(),
        seed.public_rooms().len(),
        seed.private_rooms().len(),
        seed.media.len(),
        seed.media.iter().filter(|m| m.legacy).count()
    ));

    let config = sensor::write_config(&state.path)?;
    view::step(&format!(
        "starting `homeserver-sensor run -c {} --cgroup {}` (thresholds lowered for this small \
         server: see the end)...",
        config.display(),
        cgroup.rel
    ));
    let sensor = Sensor::start(
        &sensor_bin,
        &config,
        &cgroup.rel,
        &state.path.join("events.jsonl"),
        &state.path.join("sensor.log"),
    )?;
    view::step(&format!(
        "sensor watching Synapse (PID {}): every request is attributed to its user, token and \
         client address",
        hs.synapse_pid()
    ));

    view::title("Traffic (times in UTC): alerts appear as the sensor raises them");
    let traffic = traffic(&hs, opts.benign_for)?;
    if signals::sleep(LEDGER_WAIT) {
        bail!("interrupted");
    }
    let scraper = traffic.scrape.user_id.clone();
    let report = sensor.report_for_user(&scraper)?;
    let seen = sensor.stop()?;

    view::title("What the sensor recorded, per client");
    recorded(&traffic, &seen);
    view::title(&format!("homeserver-sensor report --user {scraper}"));
    print!("{report}");
    rooms_legend(&hs);
    view::footer(&scraper, &sensor::lowered());
    if opts.keep {
        kept(&state.path, &sensor_bin, &scraper);
    }
    Ok(())
}

/// What every client did.
struct Traffic {
    benign: Vec<BenignReport>,
    scrape: ScrapeReport,
    harvest: HarvestReport,
}

/// The benign users for `benign_for`, and among them the scraper, then the harvester.
fn traffic(hs: &Homeserver, benign_for: Duration) -> Result<Traffic> {
    let seed = &hs.seed;
    let benign_users = seed.users_with(Role::Benign);
    let scraper = *seed
        .users_with(Role::Scraper)
        .first()
        .context("the seeded homeserver has no scraper account")?;
    std::thread::scope(|sc| {
        let benign_threads: Vec<_> = benign_users
            .iter()
            .zip(BENIGN_IPS)
            .map(|(&user, addr)| sc.spawn(move || benign(hs, user, ip(addr), benign_for)))
            .collect();
        let names: Vec<String> = benign_users
            .iter()
            .zip(BENIGN_IPS)
            .map(|(u, addr)| format!("{} from {addr}", u.user_id))
            .collect();
        view::step(&format!(
            "benign users for {} s: {}; each syncs, sends messages, reads recent history and \
             opens a few files, as Element does",
            benign_for.as_secs(),
            names.join(", ")
        ));
        let attack = attack(sc, hs, scraper);
        // Every thread is joined here, also after an error (a scoped thread that panicked
        // and was not joined would make the scope panic).
        let benign: Vec<_> = benign_threads
            .into_iter()
            .map(|t| join(t, "a benign user"))
            .collect();
        let (scrape, harvest) = attack?;
        let benign = benign.into_iter().collect::<Result<Vec<_>>>()?;
        view::step(&format!(
            "benign users done: {} requests, {} messages sent",
            benign.iter().map(|b| b.exchanges.len()).sum::<usize>(),
            benign.iter().map(|b| b.sent.len()).sum::<usize>()
        ));
        Ok(Traffic {
            benign,
            scrape,
            harvest,
        })
    })
}

/// The scraper on `scraper`'s stolen token, then the token-less harvester.
fn attack<'scope>(
    sc: &'scope std::thread::Scope<'scope, '_>,
    hs: &'scope Homeserver,
    scraper: &'scope User,
) -> Result<(ScrapeReport, HarvestReport)> {
    if signals::sleep(SCRAPER_AFTER) {
        bail!("interrupted");
    }
    view::step(&format!(
        "scraper starts: {}'s stolen token from {SCRAPER_IP}, python-requests, one keep-alive \
         connection: the room directory, every public room joined and read back to its first \
         message, members, user-directory searches, every profile, every file",
        scraper.user_id
    ));
    let t = Instant::now();
    let scrape = join(
        sc.spawn(move || scrape(hs, scraper, ip(SCRAPER_IP), DIRECTORY_PAGE)),
        "the scraper",
    )?;
    view::step(&format!(
        "scraper done in {:.1} s: {} requests, {} rooms read, {} messages, {} profiles, {} files, \
         {} received",
        t.elapsed().as_secs_f64(),
        scrape.exchanges.len(),
        scrape.rooms.len(),
        scrape.rooms.iter().map(|r| r.messages).sum::<u64>(),
        scrape.profiles.len(),
        scrape.media.len(),
        view::mib(scrape.received())
    ));
    if signals::sleep(Duration::from_secs(1)) {
        bail!("interrupted");
    }
    view::step(&format!(
        "harvester starts: no token at all, from {HARVESTER_IP}, curl: every media ID on the \
         legacy /_matrix/media/v3/download endpoint"
    ));
    let media = &hs.seed.media;
    let harvest = join(
        sc.spawn(move || harvest(hs, ip(HARVESTER_IP), media)),
        "the harvester",
    )?;
    let got = harvest.fetches.iter().filter(|(_, e)| e.status == 200);
    view::step(&format!(
        "harvester done: {} of {} files downloaded without a token ({}), the others refused \
         (uploaded with authenticated media on)",
        got.clone().count(),
        harvest.fetches.len(),
        view::mib(got.map(|(_, e)| e.content_bytes).sum())
    ));
    Ok((scrape, harvest))
}

/// Requests each client sent and the sensor recorded, and the alerts naming its address.
fn recorded(traffic: &Traffic, seen: &Seen) {
    let mut rows: Vec<(String, String, usize)> = traffic
        .benign
        .iter()
        .map(|b| {
            (
                b.from.to_string(),
                format!("{} (benign)", b.user_id),
                b.exchanges.len(),
            )
        })
        .collect();
    rows.push((
        SCRAPER_IP.into(),
        format!("{} (stolen token)", traffic.scrape.user_id),
        traffic.scrape.exchanges.len(),
    ));
    rows.push((
        HARVESTER_IP.into(),
        "harvester (no token)".into(),
        traffic.harvest.exchanges.len(),
    ));
    println!(
        "  {:<12} {:<38} {:>8} {:>9} {:>7}",
        "client", "who", "sent", "recorded", "alerts"
    );
    for (addr, who, sent) in rows {
        println!(
            "  {addr:<12} {who:<38} {:>8} {:>9} {:>7}",
            view::thousands(sent as u64),
            view::thousands(seen.requests.get(&addr).copied().unwrap_or(0)),
            seen.alerts.get(&addr).copied().unwrap_or(0)
        );
    }
    let lost: Vec<String> = seen
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(place, n)| format!("{place} {n}"))
        .collect();
    println!(
        "\n  \"sent\": requests the client made; \"recorded\": the sensor's request records \
         with that client address.\n  Mechanism: {}; data lost by the sensor: {}.",
        seen.mechanism.as_deref().unwrap_or("?"),
        if lost.is_empty() {
            "none".to_owned()
        } else {
            lost.join(", ")
        }
    );
}

/// The seeded rooms' aliases: the sensor records room ids, as the client-server API
/// carries them.
fn rooms_legend(hs: &Homeserver) {
    println!("\nThe public rooms' aliases (from the seeded homeserver; the sensor records ids):");
    let rooms = hs.seed.public_rooms();
    let alias = |r: &Room| r.alias.clone().unwrap_or_default();
    let width = rooms.iter().map(|r| alias(r).len()).max().unwrap_or(0);
    for room in rooms {
        println!(
            "  {}  {:<width$}  {:>4} messages",
            room.room_id,
            alias(room),
            room.messages
        );
    }
}

/// With `--keep`: where everything is, and what to try.
fn kept(dir: &Path, sensor: &Path, scraper: &str) {
    let config = dir.join("config.toml");
    let (s, c) = (sensor.display(), config.display());
    println!(
        "\nKept in {}: config.toml, events.jsonl (every record), sensor.log, ledger/. Try:\n  \
         {s} report -c {c} --client-ip {HARVESTER_IP}\n  \
         {s} report -c {c} --user {scraper} --json\n  \
         grep '\"kind\":\"alert\"' {}/events.jsonl",
        dir.display(),
        dir.display()
    );
}

/// The demo's own files (configuration, records, the sensor's log, the ledger), removed at
/// the end unless kept.
struct StateDir {
    path: PathBuf,
    keep: bool,
}

impl StateDir {
    fn new(keep: bool) -> Result<Self> {
        let path =
            std::env::temp_dir().join(format!("homeserver-sensor-demo-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A binary built next to this one (`target/release`).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the demo's own path")?;
    let path = exe.with_file_name(name);
    ensure!(
        path.exists(),
        "{} is missing: build it with `cargo xtask demo`",
        path.display()
    );
    Ok(path)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal address")
}

fn check_interrupt() -> Result<()> {
    if signals::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs a fixture that panics on failure (the test fixtures do, with a clear message, printed
/// by the panic hook) and turns its panic into an error.
fn unwind<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| anyhow!("{what} (see above)"))
}

/// Joins a client's thread; its panic (a failed request, printed by the hook) is an error.
fn join<T>(handle: ScopedJoinHandle<'_, T>, who: &str) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("{who} stopped (see above)"))
}

/// Panics of the clients and fixtures are errors to a user of the demo: one line, no
/// backtrace, and nothing at all once Ctrl-C has stopped the homeserver under them.
fn short_panics() {
    std::panic::set_hook(Box::new(|info| {
        // Ctrl-C reaches nginx and Synapse too: a client may fail a moment before the
        // signal is counted here.
        if signals::sleep(Duration::from_millis(200)) {
            return;
        }
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "demo: {}: {}{location}",
            thread.name().unwrap_or("a client"),
            info.payload_as_str().unwrap_or("panicked")
        );
    }));
}

/// The homeserver fixture keeps Synapse's logs when Synapse dies at start, as it does when
/// Ctrl-C reaches it first: after an interruption they are of no use.
fn remove_kept_logs() {
    let prefix = format!("hs-homeserver-logs-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
