//! `homeserver-sensor report`: what a user, a token or a client address reached, when and
//! how much, read from the ledger (see the `ledger` module for what it keeps and how
//! precise its times are).
//!
//! ```text
//! homeserver-sensor report (--user @alice:example.org | --token-fingerprint tfp_... |
//!                           --client-ip 203.0.113.7) [--since TIME] [--until TIME]
//!                          [--json] [--top N] [--ledger-dir DIR] [-c CONFIG]
//! ```
//!
//! Times are RFC 3339 (`2026-09-21T14:00:00Z`), a date (`2026-09-21`, midnight UTC), a
//! duration before now (`90m`, `24h`, `7d`, `2w`), or `now`; `--since` is inclusive,
//! `--until` exclusive. A `--user` report covers every token whose requests carried that
//! user; a `--client-ip` report covers requests from that address, with or without a token.
//!
//! The text report lists, biggest first (bytes out, then requests): the users, tokens or
//! addresses involved, the endpoints, the rooms read, joined and otherwise touched, the
//! media fetched and otherwise touched, and the users looked up, each with requests,
//! bytes and first and last request; `--top N` lists N per section (0: all). `--json`
//! writes one object with every entry (see [`Report`]). A subject the ledger does not know
//! gives an empty report that says so, not an error.
//!
//! When the sensor ran without request heads (all of them, or for some watched processes)
//! during the range, as the ledger's coverage log says, the report lists those periods
//! (`coverage` in `--json`, see [`SensorCoverage`]): their requests are not in the ledger.
//! An empty report then says the sensor could not see, not that there was nothing to see.

mod coverage;
mod query;
mod render;
#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;

pub use coverage::{Gap, SensorCoverage};
pub use query::{Entry, NotListed, Report, SubjectOut, query};

use crate::identity::{Fingerprint, IdentityError};

/// The `report` subcommand's arguments.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(group(
    clap::ArgGroup::new("subject")
        .required(true)
        .args(["user", "token_fingerprint", "client_ip"])
))]
pub struct ReportArgs {
    /// What every token of this user (`@alice:example.org`) reached.
    #[arg(long, value_name = "USER_ID")]
    pub user: Option<String>,
    /// What this token reached (`tfp_` and 16 hex digits, as in request and alert records).
    #[arg(long, value_name = "FINGERPRINT")]
    pub token_fingerprint: Option<String>,
    /// What was requested from this client address.
    #[arg(long, value_name = "ADDRESS")]
    pub client_ip: Option<String>,
    /// Start of the range (inclusive): RFC 3339 (`2026-09-21T14:00:00Z`), a date
    /// (`2026-09-21`, UTC) or a duration before now (`90m`, `24h`, `7d`) [default: the
    /// ledger's beginning].
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// End of the range (exclusive), in the same forms [default: no end].
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Write JSON for tools (every entry) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Entries listed per section of the text report; 0 lists all.
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub top: usize,
    /// The ledger directory [default: `[ledger] dir` of the configuration].
    #[arg(long, value_name = "DIR")]
    pub ledger_dir: Option<PathBuf>,
    /// Configuration file [default: /etc/homeserver-sensor/config.toml if it exists].
    #[arg(long, short = 'c', value_name = "CONFIG")]
    pub config: Option<PathBuf>,
}

/// Why no report could be written. One sentence each.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("give exactly one of --user, --token-fingerprint and --client-ip")]
    Subject,
    #[error("--token-fingerprint: {0}")]
    Fingerprint(IdentityError),
    #[error("--client-ip {0:?} is not an IP address")]
    Address(String),
    #[error("--user {0:?} is not a user ID such as @alice:example.org")]
    User(String),
    #[error(
        "--{arg} {value:?} is not a time: give RFC 3339 (2026-09-21T14:00:00Z), a date \
         (2026-09-21) or a duration before now (90m, 24h, 7d)"
    )]
    Time { arg: &'static str, value: String },
    #[error("empty time range: --since {since} is not before --until {until}")]
    Range { since: String, until: String },
    #[error(
        "the ledger directory {} does not exist: is [ledger] enabled on this host, and is \
         --ledger-dir (or [ledger] dir) right?", path.display()
    )]
    NoLedger { path: PathBuf },
    #[error("cannot read the ledger directory {}: {source}", path.display())]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("cannot read ledger segment {}: {source}", path.display())]
    ReadSegment { path: PathBuf, source: io::Error },
    #[error("cannot read the ledger's coverage log {}: {source}", path.display())]
    ReadCoverage { path: PathBuf, source: io::Error },
    #[error("cannot write the report: {0}")]
    Output(io::Error),
}

/// Whose requests a report is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Every token whose requests carried this user.
    User(String),
    Token(Fingerprint),
    /// A client address, in canonical form (as request records write it).
    Address(String),
}

/// A report's question: a subject and a range of milliseconds since the epoch, `since`
/// inclusive, `until` exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub subject: Subject,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl Query {
    /// The question the arguments ask, relative times counted back from `now_ms`.
    pub fn from_args(args: &ReportArgs, now_ms: u64) -> Result<Query, ReportError> {
        let subject = match (&args.user, &args.token_fingerprint, &args.client_ip) {
            (Some(user), None, None) => {
                let user = user.trim();
                if !(user.starts_with('@') && user.contains(':')) {
                    return Err(ReportError::User(user.to_owned()));
                }
                Subject::User(user.to_owned())
            }
            (None, Some(token), None) => {
                Subject::Token(token.trim().parse().map_err(ReportError::Fingerprint)?)
            }
            (None, None, Some(ip)) => {
                let parsed: IpAddr = ip
                    .trim()
                    .parse()
                    .map_err(|_| ReportError::Address(ip.clone()))?;
                Subject::Address(parsed.to_canonical().to_string())
            }
            _ => return Err(ReportError::Subject),
        };
        let since_ms = args
            .since
            .as_deref()
            .map(|v| parse_time("since", v, now_ms))
            .transpose()?;
        let until_ms = args
            .until
            .as_deref()
            .map(|v| parse_time("until", v, now_ms))
            .transpose()?;
        if let (Some(since), Some(until)) = (since_ms, until_ms)
            && since >= until
        {
            return Err(ReportError::Range {
                since: rfc3339(since),
                until: rfc3339(until),
            });
        }
        Ok(Query {
            subject,
            since_ms,
            until_ms,
        })
    }
}

/// Writes the report the arguments ask for, from the ledger in `ledger_dir`, to `out`.
pub fn run(args: &ReportArgs, ledger_dir: &Path, out: &mut dyn Write) -> Result<(), ReportError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    run_at(args, ledger_dir, out, now_ms)
}

/// [`run`] with relative times counted back from `now_ms`.
pub fn run_at(
    args: &ReportArgs,
    ledger_dir: &Path,
    out: &mut dyn Write,
    now_ms: u64,
) -> Result<(), ReportError> {
    let query = Query::from_args(args, now_ms)?;
    let report = query::query(ledger_dir, &query)?;
    let written = if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        render::text(&report, args.top, out)
    };
    match written.and_then(|()| out.flush()) {
        // `report ... | head`: the reader has seen enough.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(ReportError::Output),
    }
}

/// Parses a time argument: RFC 3339, a date, `now`, or a duration before `now_ms`.
fn parse_time(arg: &'static str, value: &str, now_ms: u64) -> Result<u64, ReportError> {
    let bad = || ReportError::Time {
        arg,
        value: value.to_owned(),
    };
    let v = value.trim();
    if v == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = duration_ms(v) {
        return now_ms.checked_sub(ago).ok_or_else(bad);
    }
    let t = match OffsetDateTime::parse(v, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let format = ::time::macros::format_description!("[year]-[month]-[day]");
            let date = ::time::Date::parse(v, &format).map_err(|_| bad())?;
            date.midnight().assume_utc()
        }
    };
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())
}

/// `90s`, `30m`, `24h`, `7d`, `2w` in milliseconds.
fn duration_ms(v: &str) -> Option<u64> {
    let unit = match v.chars().last()? {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    let digits = &v[..v.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Milliseconds since the epoch as `2026-09-21T14:13:20.000Z`.
pub(crate) fn rfc3339(ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    crate::time::rfc3339_ms(t)
}
