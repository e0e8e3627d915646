//! The `[ledger]` table: every key optional, unknown keys rejected; `validate` names the key
//! that is wrong and why.

use std::path::PathBuf;

use serde::Deserialize;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Default ledger directory: under systemd's `StateDirectory=homeserver-sensor`, next to the
/// fingerprint key (the unit makes it writable and `0700`).
pub const DEFAULT_DIR: &str = "/var/lib/homeserver-sensor/ledger";

/// A value of the `[ledger]` table is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerConfigError {
    /// `key` is the key under `[ledger]`, e.g. `retention_days`.
    #[error("invalid configuration: ledger.{key} = {value}: {why}")]
    Value {
        key: String,
        value: String,
        why: String,
    },
}

/// `[ledger]`: the durable record of what each token and client address reached, which
/// `homeserver-sensor report` reads. See the `ledger` module for the format and retention.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    /// Keep a ledger at all.
    pub enabled: bool,
    /// Where the segment files go (created `0700`; must not be open to group or others).
    pub dir: PathBuf,
    /// Segments whose hour ended longer ago than this are deleted. See
    /// [`LedgerConfig::RETENTION_DAYS`].
    pub retention_days: u32,
    /// The oldest segments are deleted while the ledger is larger than this: an integer of
    /// bytes or a string such as `"1 GiB"`, `"500MB"`. See [`LedgerConfig::MAX_BYTES`].
    #[serde(deserialize_with = "crate::detect::size")]
    pub max_bytes: u64,
    /// Seconds between writes (each one `fsync`ed): what a crash can lose. See
    /// [`LedgerConfig::FLUSH_S`].
    pub flush_s: u64,
}

impl LedgerConfig {
    /// 90 days: incidents are found late (the Tchap scrape was answered for weeks after
    /// it happened), and ninety days covers a quarter's review.
    pub const RETENTION_DAYS: u32 = 90;
    /// 1 GiB: at the measured sizes (see the module documentation) a homeserver with a
    /// few hundred active clients stays well within it for ninety days, and a disk-filling
    /// flood of distinct items is cut from the oldest hour, never from the newest.
    pub const MAX_BYTES: u64 = GIB;
    /// 5 seconds: a crash loses at most five seconds of the ledger, and a write plus
    /// `fsync` every five seconds costs nothing measurable.
    pub const FLUSH_S: u64 = 5;
    /// Longest retention accepted: ten years.
    pub const MAX_RETENTION_DAYS: u32 = 3650;
    /// Longest flush interval accepted: five minutes of possible loss.
    pub const MAX_FLUSH_S: u64 = 300;
    /// Smallest size budget accepted: below that a single busy hour is more than the budget.
    pub const MIN_MAX_BYTES: u64 = MIB;

    /// Checks every value; the error names the key (`ledger.retention_days`) and says why.
    pub fn validate(&self) -> Result<(), LedgerConfigError> {
        let bad = |key: &str, value: String, why: String| LedgerConfigError::Value {
            key: key.to_owned(),
            value,
            why,
        };
        if self.dir.as_os_str().is_empty() || !self.dir.is_absolute() {
            return Err(bad(
                "dir",
                format!("{:?}", self.dir.display().to_string()),
                "must be an absolute path, such as /var/lib/homeserver-sensor/ledger".into(),
            ));
        }
        if !(1..=Self::MAX_RETENTION_DAYS).contains(&self.retention_days) {
            return Err(bad(
                "retention_days",
                self.retention_days.to_string(),
                format!("must be between 1 and {}", Self::MAX_RETENTION_DAYS),
            ));
        }
        if self.max_bytes < Self::MIN_MAX_BYTES {
            return Err(bad(
                "max_bytes",
                self.max_bytes.to_string(),
                "must be at least 1 MiB (1048576)".into(),
            ));
        }
        if !(1..=Self::MAX_FLUSH_S).contains(&self.flush_s) {
            return Err(bad(
                "flush_s",
                self.flush_s.to_string(),
                format!(
                    "must be between 1 and {} seconds (a crash loses up to this much)",
                    Self::MAX_FLUSH_S
                ),
            ));
        }
        Ok(())
    }
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            enabled: true,
            dir: PathBuf::from(DEFAULT_DIR),
            retention_days: Self::RETENTION_DAYS,
            max_bytes: Self::MAX_BYTES,
            flush_s: Self::FLUSH_S,
        }
    }
}
