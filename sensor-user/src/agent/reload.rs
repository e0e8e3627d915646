//! Reloading the configuration while running (SIGHUP): what can change live, and what
//! needs a restart.
//!
//! Live: the whole `[detect]` section (the detector keeps its windows, see
//! `Detector::reload`, and the kernel's single-transfer threshold follows),
//! `attribution.trusted_proxies`, `attribution.server_name`, `discovery.rescan_ms`,
//! `metrics.program_stats` and the `[output]` webhook settings. Everything else sizes kernel maps, chooses programs,
//! holds a secret or opens a socket or file at start: a change there is reported as
//! needing a restart, and the running value stays in force, so what runs is always one
//! consistent configuration.

use crate::config::Config;

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Keys whose new value is now in force.
    pub applied: Vec<&'static str>,
    /// Keys that changed in the file but keep their running value until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// The configuration to run with after a reload of `new` over `running`, and what changed.
pub fn merge(running: &Config, new: &Config) -> (Config, Outcome) {
    let mut merged = running.clone();
    let mut outcome = Outcome::default();
    let mut live = |key: &'static str, changed: bool| {
        if changed {
            outcome.applied.push(key);
        }
    };
    live("detect", running.detect != new.detect);
    merged.detect = new.detect.clone();
    live(
        "attribution.trusted_proxies",
        running.attribution.trusted_proxies != new.attribution.trusted_proxies,
    );
    merged.attribution.trusted_proxies = new.attribution.trusted_proxies.clone();
    // An unset server_name means "read it from Synapse's configuration": keep what was
    // learned then.
    if new.attribution.server_name.is_some() {
        live(
            "attribution.server_name",
            running.attribution.server_name != new.attribution.server_name,
        );
        merged.attribution.server_name = new.attribution.server_name.clone();
    }
    live(
        "discovery.rescan_ms",
        running.discovery.rescan_ms != new.discovery.rescan_ms,
    );
    merged.discovery.rescan_ms = new.discovery.rescan_ms;
    live(
        "output.webhook",
        running.output.webhook != new.output.webhook,
    );
    merged.output.webhook = new.output.webhook.clone();
    for (key, changed) in [
        (
            "ledger.retention_days",
            running.ledger.retention_days != new.ledger.retention_days,
        ),
        (
            "ledger.max_bytes",
            running.ledger.max_bytes != new.ledger.max_bytes,
        ),
        (
            "ledger.flush_s",
            running.ledger.flush_s != new.ledger.flush_s,
        ),
    ] {
        live(key, changed);
    }
    merged.ledger.retention_days = new.ledger.retention_days;
    merged.ledger.max_bytes = new.ledger.max_bytes;
    merged.ledger.flush_s = new.ledger.flush_s;
    live(
        "metrics.program_stats",
        running.metrics.program_stats != new.metrics.program_stats,
    );
    merged.metrics.program_stats = new.metrics.program_stats;

    let restart = [
        (
            "discovery.cgroup_root",
            running.discovery.cgroup_root != new.discovery.cgroup_root,
        ),
        (
            "accounting.call_counts",
            running.accounting.call_counts != new.accounting.call_counts,
        ),
        (
            "accounting.syscalls",
            running.accounting.syscalls != new.accounting.syscalls,
        ),
        (
            "attribution.request_heads",
            running.attribution.request_heads != new.attribution.request_heads,
        ),
        (
            "attribution.key_file",
            running.attribution.key_file != new.attribution.key_file,
        ),
        (
            "metrics.enabled",
            running.metrics.enabled != new.metrics.enabled,
        ),
        (
            "metrics.listen",
            running.metrics.listen != new.metrics.listen,
        ),
        (
            "kernel.max_connections",
            running.kernel.max_connections != new.kernel.max_connections,
        ),
        (
            "kernel.ring_buffer_bytes",
            running.kernel.ring_buffer_bytes != new.kernel.ring_buffer_bytes,
        ),
        ("output.events", running.output.events != new.output.events),
        (
            "ledger.enabled",
            running.ledger.enabled != new.ledger.enabled,
        ),
        ("ledger.dir", running.ledger.dir != new.ledger.dir),
    ];
    outcome.needs_restart = restart
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect();
    (merged, outcome)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let c = Config::default();
        let (merged, outcome) = merge(&c, &c.clone());
        assert_eq!(merged, c);
        assert_eq!(outcome, Outcome::default());
    }

    #[test]
    fn live_keys_apply() {
        let running = Config::default();
        let mut new = Config::default();
        new.detect.single_transfer.threshold_bytes = 1 << 20;
        new.attribution.trusted_proxies = vec!["10.0.0.1".into()];
        new.attribution.server_name = Some("example.org".into());
        new.discovery.rescan_ms = 250;
        new.metrics.program_stats = true;
        let (merged, outcome) = merge(&running, &new);
        assert_eq!(merged, new);
        assert_eq!(
            outcome.applied,
            [
                "detect",
                "attribution.trusted_proxies",
                "attribution.server_name",
                "discovery.rescan_ms",
                "metrics.program_stats"
            ]
        );
        assert!(outcome.needs_restart.is_empty());
    }

    #[test]
    fn restart_keys_keep_their_running_value() {
        let running = Config::default();
        let mut new = Config::default();
        new.kernel.ring_buffer_bytes *= 2;
        new.metrics.listen = "127.0.0.1:1".into();
        new.attribution.key_file = PathBuf::from("/elsewhere");
        new.accounting.syscalls = true;
        new.output.events = "/var/log/x.jsonl".into();
        new.detect.realert_s = 60;
        let (merged, outcome) = merge(&running, &new);
        let mut expected = running.clone();
        expected.detect.realert_s = 60;
        assert_eq!(merged, expected, "only the live key changed");
        assert_eq!(outcome.applied, ["detect"]);
        assert_eq!(
            outcome.needs_restart,
            [
                "accounting.syscalls",
                "attribution.key_file",
                "metrics.listen",
                "kernel.ring_buffer_bytes",
                "output.events"
            ]
        );
    }

    #[test]
    fn an_unset_server_name_keeps_the_learned_one() {
        let mut running = Config::default();
        running.attribution.server_name = Some("learned.example".into());
        let (merged, outcome) = merge(&running, &Config::default());
        assert_eq!(
            merged.attribution.server_name.as_deref(),
            Some("learned.example")
        );
        assert!(outcome.applied.is_empty());
    }
}
