//! The rules that are not windows of a subject: `single_transfer` (deduplicated per
//! connection), `admin_api.new_token` (a bounded first-seen set) and `sensor_health`
//! (deduplicated per drop place, program and process).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::alert::{size, who};
use super::subjects::due;
use super::{
    AdminApi, Alert, ConnectionEvidence, Evidence, Health, HealthIssue, Observation, Severity,
    Subject, Transfer,
};
use crate::identity::Fingerprint;

/// Connections remembered for `single_transfer` dedup (the oldest alert is forgotten
/// first); entries also go once the re-alert interval has passed.
const MAX_TRANSFERS: usize = 4_096;

#[derive(Debug, Default)]
pub(super) struct Events {
    /// Cookie → (when it last fired, bytes then).
    transfers: HashMap<u64, (u64, u64)>,
    admin_tokens: HashSet<Fingerprint>,
    /// First-seen order, to forget the oldest at the cap.
    admin_order: VecDeque<Fingerprint>,
    max_admin_tokens: usize,
    /// Drop counters as last reported, and drops not yet reported (held back by dedup).
    drops: BTreeMap<String, u64>,
    unreported: BTreeMap<String, u64>,
    /// Health alert key (`drops:place`, `detached:program`, `gone:pid`) → when it fired.
    health_fired: HashMap<String, u64>,
}

impl Events {
    pub(super) fn reconfigure(&mut self, admin: &AdminApi) {
        self.max_admin_tokens = admin.max_known_tokens.max(1);
        for token in &admin.known_tokens {
            self.remember_admin(*token);
        }
        while self.admin_order.len() > self.max_admin_tokens {
            self.forget_oldest_admin();
        }
    }

    /// Adds `token` to the first-seen set; false if it was there.
    fn remember_admin(&mut self, token: Fingerprint) -> bool {
        if !self.admin_tokens.insert(token) {
            return false;
        }
        self.admin_order.push_back(token);
        if self.admin_order.len() > self.max_admin_tokens {
            self.forget_oldest_admin();
        }
        true
    }

    fn forget_oldest_admin(&mut self) {
        if let Some(old) = self.admin_order.pop_front() {
            self.admin_tokens.remove(&old);
        }
    }

    /// `admin_api.new_token`: the first admin call of a token. Info when it comes from an
    /// allowed address (an admin's new session), warning otherwise.
    pub(super) fn admin_token(
        &mut self,
        end_ms: u64,
        obs: &Observation,
        allowed: bool,
    ) -> Option<Alert> {
        let token = obs.token?;
        if !self.remember_admin(token) {
            return None;
        }
        let subject = Subject {
            user: obs.user.clone(),
            token: Some(token),
            client_ip: obs.client_ip.clone(),
        };
        let summary = format!(
            "{} used the admin API for the first time ({})",
            who(&subject),
            obs.endpoint
        );
        let evidence = Evidence {
            requests: 1,
            bytes_out: obs.bytes_out,
            endpoint: Some(obs.endpoint),
            addresses: obs.client_ip.iter().cloned().collect(),
            ..Evidence::default()
        };
        let severity = if allowed {
            Severity::Info
        } else {
            Severity::Warning
        };
        Some(event_alert(
            "admin_api.new_token",
            severity,
            subject,
            (1, 1),
            end_ms,
            evidence,
            summary,
        ))
    }

    /// `single_transfer` from the kernel's report of a running transfer.
    pub(super) fn transfer(
        &mut self,
        end_ms: u64,
        realert_ms: u64,
        threshold: u64,
        t: &Transfer,
    ) -> Option<Alert> {
        let (cookie, bytes) = (t.cookie, t.bytes_out);
        if bytes < threshold
            || !due(
                self.transfers.get(&cookie).copied(),
                end_ms,
                bytes,
                realert_ms,
            )
        {
            return None;
        }
        if !self.transfers.contains_key(&cookie)
            && self.transfers.len() >= MAX_TRANSFERS
            && let Some(oldest) = self.transfers.iter().min_by_key(|(c, (at, _))| (*at, **c))
        {
            let oldest = *oldest.0;
            self.transfers.remove(&oldest);
        }
        self.transfers.insert(cookie, (end_ms, bytes));
        let subject = Subject {
            user: t.user.clone(),
            token: t.token,
            client_ip: t.client_ip.clone(),
        };
        let summary = format!(
            "{} received {} on one connection (cookie {cookie}{}) (threshold {})",
            who(&subject),
            size(bytes),
            t.endpoint.map(|e| format!(", {e}")).unwrap_or_default(),
            size(threshold)
        );
        let evidence = Evidence {
            requests: 1,
            bytes_out: bytes,
            endpoint: t.endpoint,
            connection: Some(ConnectionEvidence {
                cookie,
                pid: t.pid,
                local: t.local.clone(),
                peer: t.peer.clone(),
            }),
            ..Evidence::default()
        };
        let severity = if bytes / 4 >= threshold {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let values = (bytes, threshold);
        Some(event_alert(
            "single_transfer",
            severity,
            subject,
            values,
            end_ms,
            evidence,
            summary,
        ))
    }

    /// `single_transfer` from a finished response: deduplicated with the kernel's report
    /// of the same connection.
    pub(super) fn response(
        &mut self,
        end_ms: u64,
        realert_ms: u64,
        threshold: u64,
        obs: &Observation,
    ) -> Option<Alert> {
        let transfer = Transfer {
            cookie: obs.cookie,
            bytes_out: obs.bytes_out,
            endpoint: Some(obs.endpoint),
            client_ip: obs.client_ip.clone(),
            token: obs.token,
            user: obs.user.clone(),
            ..Transfer::default()
        };
        self.transfer(end_ms, realert_ms, threshold, &transfer)
    }

    /// `sensor_health`: one alert per drop place whose counter rose, per detached program,
    /// per process gone and per capability missing, each at most once per re-alert
    /// interval. Drops held back by
    /// the interval are added to the next alert for that place.
    pub(super) fn health(&mut self, end_ms: u64, realert_ms: u64, h: &Health) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for (place, &total) in &h.drops {
            let before = self.drops.insert(place.clone(), total).unwrap_or(0);
            // A counter that went down was reset (the sensor restarted a program).
            let lost = if total >= before {
                total - before
            } else {
                total
            };
            if lost == 0 {
                continue;
            }
            let pending = self.unreported.entry(place.clone()).or_default();
            *pending += lost;
            let lost = *pending;
            if !self.health_due(format!("drops:{place}"), end_ms, realert_ms) {
                continue;
            }
            self.unreported.remove(place);
            let summary = format!("the sensor lost {lost} events at {place} ({total} since start)");
            let issue = HealthIssue::Drops {
                place: place.clone(),
                lost,
                total,
            };
            alerts.push(health_alert(
                Severity::Warning,
                lost,
                end_ms,
                issue,
                summary,
            ));
        }
        for program in &h.detached {
            if self.health_due(format!("detached:{program}"), end_ms, realert_ms) {
                let summary = format!(
                    "the sensor's program {program} was detached by someone else: traffic is not counted until the agent attaches it again (next rescan)"
                );
                let issue = HealthIssue::Detached {
                    program: program.clone(),
                };
                alerts.push(health_alert(Severity::Critical, 1, end_ms, issue, summary));
            }
        }
        for blind in &h.blind {
            if self.health_due(format!("blind:{}", blind.capability), end_ms, realert_ms) {
                let issue = HealthIssue::Unavailable {
                    capability: blind.capability.clone(),
                    why: blind.why.clone(),
                };
                let summary = format!(
                    "the sensor runs without {}: {}",
                    blind.capability, blind.why
                );
                alerts.push(health_alert(blind.severity, 1, end_ms, issue, summary));
            }
        }
        for &pid in &h.gone {
            if self.health_due(format!("gone:{pid}"), end_ms, realert_ms) {
                let summary = format!("watched process {pid} is gone");
                let issue = HealthIssue::ProcessGone { pid };
                alerts.push(health_alert(Severity::Warning, 1, end_ms, issue, summary));
            }
        }
        alerts
    }

    fn health_due(&mut self, key: String, end_ms: u64, realert_ms: u64) -> bool {
        let last = self.health_fired.get(&key).map(|&at| (at, u64::MAX));
        if !due(last, end_ms, 0, realert_ms) {
            return false;
        }
        self.health_fired.insert(key, end_ms);
        true
    }

    pub(super) fn expire(&mut self, end_ms: u64, realert_ms: u64) {
        let live = |at: u64| end_ms.saturating_sub(at) < realert_ms;
        self.transfers.retain(|_, (at, _)| live(*at));
        self.health_fired.retain(|_, at| live(*at));
    }
}

fn health_alert(
    severity: Severity,
    observed: u64,
    end_ms: u64,
    issue: HealthIssue,
    summary: String,
) -> Alert {
    let evidence = Evidence {
        health: Some(issue),
        ..Evidence::default()
    };
    let values = (observed, 1);
    event_alert(
        "sensor_health",
        severity,
        Subject::default(),
        values,
        end_ms,
        evidence,
        summary,
    )
}

/// An alert without a window; `(observed, threshold)`.
fn event_alert(
    rule: &'static str,
    severity: Severity,
    subject: Subject,
    (observed, threshold): (u64, u64),
    end_ms: u64,
    evidence: Evidence,
    summary: String,
) -> Alert {
    Alert {
        rule,
        severity,
        subject,
        window_s: 0,
        observed,
        threshold,
        first_seen_ms: end_ms,
        last_seen_ms: end_ms,
        evidence,
        summary,
    }
}
