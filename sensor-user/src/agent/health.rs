//! The sensor's own health, once a second: what it lost, what someone detached, which
//! watched processes went away, and what it cannot see (request heads it runs without, a
//! homeserver it cannot watch as asked, a listener of Synapse's it cannot read);
//! `sensor_health` alerts and the metrics that say so.

use std::{collections::BTreeMap, path::PathBuf};

use super::{Agent, AgentError, now_ms};
use crate::{
    config::RequestHeads,
    detect::{Blind, Health, Severity},
    discover::{
        self,
        synapse_config::{Bind, Listener},
    },
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
        blind.extend(self.unseen_listeners());
        blind
    }

    /// The listeners of the watched Synapse's configuration that the sensor cannot read.
    pub(super) fn unseen_listeners(&self) -> Vec<Blind> {
        self.synapse_listeners
            .iter()
            .filter_map(unseen_listener)
            .collect()
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
            ("every_listener_visible", self.unseen_listeners().is_empty()),
        ]
    }
}

/// What the sensor misses of an HTTP listener of Synapse's, if anything: everything on a
/// UNIX socket (its programs see TCP connections only), the request heads under Synapse's
/// own TLS (bytes only). A socket serving clients or media is critical: that is where a
/// scrape goes.
fn unseen_listener(listener: &Listener) -> Option<Blind> {
    if !matches!(listener.kind.as_str(), "http" | "replication") {
        return None;
    }
    let what = if listener.resources.is_empty() {
        format!("{} requests", listener.kind)
    } else {
        let plural = if listener.resources.len() > 1 {
            "s"
        } else {
            ""
        };
        format!("the {} resource{plural}", listener.resources.join(", "))
    };
    const PLAIN: &str = "have the reverse proxy (workers: their `instance_map` entry) reach \
                         Synapse over plain HTTP on a loopback TCP listener (`port: 8008`, \
                         `tls: false`, `bind_addresses: ['127.0.0.1']`), TLS terminated in the \
                         proxy";
    match &listener.bind {
        Bind::Unix { path } => Some(Blind {
            capability: format!("listener:unix:{}", path.display()),
            severity: if listener.serves("client") || listener.serves("media") {
                Severity::Critical
            } else {
                Severity::Warning
            },
            why: format!(
                "Synapse serves {what} on the UNIX socket {}, which the sensor cannot watch \
                 (its programs see TCP connections only): no bytes, requests, endpoints, \
                 tokens, users or client addresses are seen there and no rule can fire on \
                 them; {PLAIN} instead of the socket",
                path.display()
            ),
        }),
        Bind::Tcp { port } if listener.tls => Some(Blind {
            capability: format!("listener:tls:{port}"),
            severity: Severity::Warning,
            why: format!(
                "Synapse serves {what} with its own TLS on port {port}: the sensor counts \
                 the bytes of those connections but their request heads are encrypted, so no \
                 request, endpoint, token, user or client address is seen there; {PLAIN}"
            ),
        }),
        Bind::Tcp { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::unseen_listener;
    use crate::detect::Severity;
    use crate::discover::synapse_config::{Bind, Listener};

    fn listener(bind: Bind, tls: bool, kind: &str, resources: &[&str]) -> Listener {
        Listener {
            bind,
            tls,
            kind: kind.into(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn unix(path: &str) -> Bind {
        Bind::Unix { path: path.into() }
    }

    #[test]
    fn what_the_sensor_cannot_see_of_each_listener() {
        let sock = "/run/synapse/main.sock";
        let cases = [
            // (listener, capability and severity, or None)
            (
                listener(unix(sock), false, "http", &["client", "federation"]),
                Some(("listener:unix:/run/synapse/main.sock", Severity::Critical)),
            ),
            (
                listener(unix("/run/m.sock"), false, "http", &["media"]),
                Some(("listener:unix:/run/m.sock", Severity::Critical)),
            ),
            (
                listener(unix("/run/r.sock"), false, "http", &["replication"]),
                Some(("listener:unix:/run/r.sock", Severity::Warning)),
            ),
            (
                listener(unix("/run/old.sock"), false, "replication", &[]),
                Some(("listener:unix:/run/old.sock", Severity::Warning)),
            ),
            (
                listener(
                    Bind::Tcp { port: 8448 },
                    true,
                    "http",
                    &["client", "federation"],
                ),
                Some(("listener:tls:8448", Severity::Warning)),
            ),
            (
                listener(
                    Bind::Tcp { port: 8008 },
                    false,
                    "http",
                    &["client", "federation"],
                ),
                None,
            ),
            (
                listener(unix("/run/metrics.sock"), false, "metrics", &[]),
                None,
            ),
            (
                listener(Bind::Tcp { port: 9000 }, true, "manhole", &[]),
                None,
            ),
        ];
        for (l, expected) in cases {
            let blind = unseen_listener(&l);
            assert_eq!(
                blind.as_ref().map(|b| (b.capability.as_str(), b.severity)),
                expected,
                "{l:?}"
            );
            if let Some(b) = blind {
                assert!(b.why.contains("loopback TCP listener"), "{}", b.why);
            }
        }
        let b = unseen_listener(&listener(
            unix(sock),
            false,
            "http",
            &["client", "federation"],
        ))
        .unwrap();
        assert!(
            b.why.starts_with(
                "Synapse serves the client, federation resources on the UNIX socket \
                 /run/synapse/main.sock, which the sensor cannot watch"
            ),
            "{}",
            b.why
        );
        let b = unseen_listener(&listener(Bind::Tcp { port: 8448 }, true, "http", &[])).unwrap();
        assert!(
            b.why
                .contains("http requests with its own TLS on port 8448")
                && b.why.contains("request heads are encrypted"),
            "{}",
            b.why
        );
    }
}
