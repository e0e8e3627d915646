//! The sensor's own health, once a second: what it lost, what someone detached, which
//! watched processes went away, and what it cannot see (request heads it runs without, a
//! homeserver it cannot watch as asked); `sensor_health` alerts and the metrics that say so.

use std::{collections::BTreeMap, path::PathBuf};

use super::{Agent, AgentError, now_ms};
use crate::{
    config::RequestHeads,
    detect::{Blind, Health, Severity},
    discover,
    ledger::Coverage,
    plan::Decision,
};

impl Agent {
    /// Once a second: window expiry and the sensor's own health.
    pub(super) fn housekeeping(&mut self, drops: BTreeMap<String, u64>) -> Result<(), AgentError> {
        let now = now_ms();
        self.detector.expire(now);
        if let Err(e) = self.ledger.tick(now) {
            tracing::warn!("{e}");
        }
        self.note_coverage(now);
        let health = Health {
            drops,
            detached: self.check_attached()?,
            gone: std::mem::take(&mut self.gone),
            blind: self.blind(),
        };
        let drops: Vec<(String, u64)> = health.drops.iter().map(|(k, v)| (k.clone(), *v)).collect();
        self.metrics.set_drops(&drops);
        let heads: Vec<(String, u64)> = self
            .requests
            .outcomes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        self.metrics.set_head_outcomes(&heads);
        self.metrics
            .set_tracked_connections(self.conns.open_count() as u64);
        let background = self.conns.owner_scans_background;
        self.metrics
            .set_owner_scans(self.conns.owner_scans - background, background);
        self.metrics.set_program_stats(&self.sensor.program_stats());
        self.metrics.set_capabilities(&self.capabilities());
        self.metrics.set_watched_processes(
            self.watched
                .values()
                .map(|w| w.group.pids.len() as u64)
                .sum(),
        );
        let alerts = self.detector.observe_health(now, &health);
        self.alerts(alerts)
    }

    /// Cgroup programs someone detached, as `type/name on CGROUP`. Their cgroup is
    /// forgotten, so the next rescan (within `discovery.rescan_ms`) attaches them again;
    /// what passed in between is not counted, which the alert says.
    fn check_attached(&mut self) -> Result<Vec<String>, AgentError> {
        let mut detached = Vec::new();
        let cgroups: Vec<(String, PathBuf, u64)> = self
            .watched
            .iter()
            .filter(|(_, w)| matches!(w.decision, crate::plan::Decision::Cgroup { .. }))
            .map(|(rel, w)| (rel.clone(), w.cgroup_abs.clone(), w.cgroup_id))
            .collect();
        for (rel, abs, id) in cgroups {
            // A different id: the service restarted and the rescan follows the new cgroup.
            if discover::cgroup_id(&abs).ok() != Some(id) {
                continue;
            }
            let programs = self.sensor.detached_cgroup_programs(&rel, &abs)?;
            if programs.is_empty() {
                continue;
            }
            tracing::error!(
                "programs {programs:?} were detached from cgroup {rel} by someone else: \
                 attaching them again"
            );
            self.sensor.forget_cgroup(&rel, id)?;
            self.watched.remove(&rel);
            detached.extend(programs.into_iter().map(|p| format!("{p} on {rel}")));
        }
        Ok(detached)
    }

    /// At start: the verifier's figures as metrics and in the log, and a warning for each
    /// capability the sensor starts without (the `sensor_health` alerts follow at the first
    /// health check, within a second).
    pub(super) fn report_start(&mut self) {
        let loads: Vec<(&'static str, u32)> = self
            .sensor
            .program_loads()
            .iter()
            .filter_map(|(&name, load)| Some((name, load.verified_insns?)))
            .collect();
        self.metrics.set_verified_instructions(&loads);
        tracing::info!(
            "programs verified (instructions the verifier processed, limit {}): {}",
            crate::load::VERIFIER_LIMIT,
            loads
                .iter()
                .map(|(name, insns)| format!("{name} {insns}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.metrics.set_capabilities(&self.capabilities());
        for blind in self.blind() {
            tracing::warn!("running without {}: {}", blind.capability, blind.why);
        }
        self.note_coverage(now_ms());
    }

    /// Tells the ledger whether requests are seen now, so that a report on a period
    /// without request heads says so rather than "no requests" (written only on change).
    fn note_coverage(&mut self, now: u64) {
        let coverage = Coverage::from_blind(&self.blind());
        if let Err(e) = self.ledger.note_coverage(now, coverage) {
            tracing::warn!("{e}");
        }
    }

    /// What the sensor cannot see now, for the health check's `sensor_health` alerts.
    pub(super) fn blind(&self) -> Vec<Blind> {
        let policy = self.opts.config.attribution.request_heads;
        let mut blind = Vec::new();
        match (&self.sensor.features().request_heads, policy) {
            (Err(_), RequestHeads::Off) => blind.push(Blind {
                capability: "request_heads".into(),
                severity: Severity::Info,
                why: "turned off by attribution.request_heads = \"off\": byte counts only, no requests, endpoints, tokens, users or client addresses".into(),
            }),
            (Err(why), _) => blind.push(Blind {
                capability: "request_heads".into(),
                severity: Severity::Warning,
                why: format!(
                    "{why}; byte counts only: no requests, endpoints, tokens, users or client addresses"
                ),
            }),
            (Ok(()), _) => {
                for w in self.watched.values() {
                    if let Decision::Tracepoint { why } = &w.decision {
                        blind.push(Blind {
                            capability: format!("request_heads:{}", w.group.cgroup),
                            severity: Severity::Warning,
                            why: format!("PIDs {:?} are watched by byte counts only: {why}", w.group.pids),
                        });
                    }
                }
            }
        }
        for (cgroup, why) in &self.unwatchable {
            blind.push(Blind {
                capability: format!("unwatchable:{cgroup}"),
                severity: Severity::Critical,
                why: why.clone(),
            });
        }
        blind
    }

    /// Each capability, 1 when the sensor has it for everything it watches, 0 when not:
    /// `homeserver_sensor_capability{capability}`.
    pub(super) fn capabilities(&self) -> Vec<(&'static str, bool)> {
        let features = self.sensor.features();
        let tracepoint_groups = self
            .watched
            .values()
            .any(|w| matches!(w.decision, Decision::Tracepoint { .. }));
        vec![
            (
                "request_heads",
                features.request_heads.is_ok() && !tracepoint_groups,
            ),
            ("socket_tracepoints", features.sock_tracepoints.is_ok()),
            ("syscall_tracepoints", features.syscall_tracepoints.is_ok()),
            ("every_homeserver_watched", self.unwatchable.is_empty()),
        ]
    }
}
