//! Checking the `[detect]` table, and reading sizes.

use serde::{Deserialize, Deserializer};

use super::{
    ByteLimit, DetectConfig, DetectConfigError, GIB, KIB, Limit, MAX_LIMITS, MAX_WINDOW_S, MIB,
    RuleDefaults, Windowed,
};
use crate::client_ip::TrustedProxies;

fn bad(key: impl Into<String>, value: impl ToString, why: impl Into<String>) -> DetectConfigError {
    DetectConfigError::Value {
        key: key.into(),
        value: value.to_string(),
        why: why.into(),
    }
}

impl DetectConfig {
    /// Checks every value; the error names the key (`detect.breadth.media.limits[1]
    /// .window_s`) and why it is wrong.
    pub fn validate(&self) -> Result<(), DetectConfigError> {
        check_window("realert_s", self.realert_s)?;
        if self.max_subjects == 0 {
            return Err(bad("max_subjects", 0, "must be at least 1"));
        }
        if self.max_items == 0 {
            return Err(bad("max_items", 0, "must be at least 1"));
        }
        for (i, user) in self.exempt_users.iter().enumerate() {
            if !(user.starts_with('@') && user.contains(':')) {
                let why = "must be a full user ID such as @bot:example.org";
                return Err(bad(format!("exempt_users[{i}]"), format!("{user:?}"), why));
            }
        }
        if self.single_transfer.threshold_bytes == 0 {
            let why = "must be at least 1 (disable the rule with enabled = false)";
            return Err(bad("single_transfer.threshold_bytes", 0, why));
        }
        if self.volume.enabled {
            for (key, limits) in [
                ("volume.token", &self.volume.token),
                ("volume.address", &self.volume.address),
            ] {
                let limits: Vec<Limit> = limits.iter().map(ByteLimit::as_limit).collect();
                check_limits(key, "threshold_bytes", &limits, None)?;
            }
        }
        let b = &self.breadth;
        let cap = self.max_items as u64;
        b.rooms_read.check(cap)?;
        b.rooms_joined.check(cap)?;
        b.media.check(cap)?;
        b.directory.check(cap)?;
        b.room_directory.check(cap)?;
        b.full_syncs.check(cap)?;
        self.tokenless_media.check(cap)?;
        let admin = &self.admin_api;
        check_window("admin_api.window_s", admin.window_s)?;
        if let Err(e) = TrustedProxies::try_from(admin.allow.as_slice()) {
            let why = e.to_string().replace("trusted proxy entry", "entry");
            return Err(bad("admin_api.allow", format!("{:?}", admin.allow), why));
        }
        if admin.max_known_tokens == 0 {
            return Err(bad("admin_api.max_known_tokens", 0, "must be at least 1"));
        }
        Ok(())
    }
}

impl ByteLimit {
    pub(crate) fn as_limit(&self) -> Limit {
        Limit {
            window_s: self.window_s,
            threshold: self.threshold_bytes,
        }
    }
}

impl<D: RuleDefaults> Windowed<D> {
    fn check(&self, max_items: u64) -> Result<(), DetectConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let key = format!("{}.limits", D::KEY);
        let cap = D::DISTINCT.then_some(max_items);
        check_limits(&key, "threshold", &self.limits, cap)
    }
}

fn check_window(key: impl Into<String>, window_s: u64) -> Result<(), DetectConfigError> {
    if (1..=MAX_WINDOW_S).contains(&window_s) {
        return Ok(());
    }
    let why = format!("must be between 1 and {MAX_WINDOW_S} seconds (24 h)");
    Err(bad(key, window_s, why))
}

/// Checks the windows of one rule: 1 to `MAX_LIMITS` of them, each window once, in range,
/// with a threshold of at least 1 and (for distinct counts) at most `cap`.
fn check_limits(
    key: &str,
    field: &str,
    limits: &[Limit],
    cap: Option<u64>,
) -> Result<(), DetectConfigError> {
    if limits.is_empty() || limits.len() > MAX_LIMITS {
        let why = format!("give 1 to {MAX_LIMITS} windows (or disable the rule: enabled = false)");
        return Err(bad(key, format!("{} windows", limits.len()), why));
    }
    for (i, l) in limits.iter().enumerate() {
        check_window(format!("{key}[{i}].window_s"), l.window_s)?;
        if limits[..i].iter().any(|o| o.window_s == l.window_s) {
            let why = "appears twice: give each window once";
            return Err(bad(format!("{key}[{i}].window_s"), l.window_s, why));
        }
        if l.threshold == 0 {
            return Err(bad(format!("{key}[{i}].{field}"), 0, "must be at least 1"));
        }
        if let Some(cap) = cap.filter(|&cap| l.threshold > cap) {
            let why = format!("can never be reached: max_items = {cap} items are kept at most");
            return Err(bad(format!("{key}[{i}].{field}"), l.threshold, why));
        }
    }
    Ok(())
}

/// Reads a size: an integer of bytes, or a string of digits and a unit (B, KB, MB, GB,
/// TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024).
pub(crate) fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(text) => parse_size(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid size {text:?}: use bytes (536870912) or a number and a unit \
                 (\"512MiB\", \"2 GB\")"
            ))
        }),
    }
}

pub(in crate::detect) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "TiB" => 1024 * GIB,
        _ => return None,
    };
    n.checked_mul(unit)
}
