//! Building alerts: evidence from a subject's window, severity, and the one-line summary.

use super::rules::Rule;
use super::subjects::{Key, SHOWN, State};
use super::window::top_items;
use super::{Alert, Evidence, Limit, Severity, Subject};

/// An alert of a windowed rule for subject `key`, from its state after the request that
/// made it fire (`None` if that window is not there).
pub(super) fn windowed(
    key: &Key,
    state: &State,
    rule: Rule,
    limit: Limit,
    end_ms: u64,
    endpoint: &'static str,
) -> Option<Alert> {
    let since_ms = end_ms.saturating_sub(limit.window_s.saturating_mul(1000));
    let mut evidence = Evidence {
        endpoint: Some(endpoint),
        ..Evidence::default()
    };
    let (observed, first_seen_ms, last_seen_ms) = match rule {
        Rule::RoomsRead
        | Rule::RoomsJoined
        | Rule::Media
        | Rule::Directory
        | Rule::TokenlessMedia => {
            // The window was just counted into, so it exists.
            let w = state.get_distinct(rule, limit.window_s)?;
            (evidence.requests, evidence.bytes_out) = w.totals();
            evidence.saturated = w.saturated();
            evidence.top = top_items(w.named_since(0), SHOWN);
            (w.count(), w.first_ms(), w.last_ms())
        }
        Rule::Volume | Rule::RoomDirectory | Rule::FullSyncs | Rule::AdminAddress => {
            let w = state.get_sum(rule, limit.window_s)?;
            evidence.requests = w.requests();
            evidence.bytes_out = w.bytes();
            if rule == Rule::Volume {
                evidence.top = state.top_since(since_ms);
            }
            let observed = if rule == Rule::Volume {
                w.bytes()
            } else {
                w.requests()
            };
            (observed, w.first_ms(), w.last_ms())
        }
    };
    let subject = match key {
        Key::Token(token) => {
            evidence.addresses = state.addresses_since(since_ms);
            Subject {
                user: state.user.clone(),
                token: Some(*token),
                client_ip: evidence.addresses.first().cloned(),
            }
        }
        Key::Address(ip) => Subject {
            client_ip: Some(ip.to_string()),
            ..Subject::default()
        },
        Key::NoAddress => Subject::default(),
    };
    let severity = match rule {
        Rule::AdminAddress => Severity::Critical,
        _ if observed / 4 >= limit.threshold => Severity::Critical,
        _ => Severity::Warning,
    };
    let summary = summary(rule, &subject, observed, limit, &evidence);
    Some(Alert {
        rule: rule.name(),
        severity,
        subject,
        window_s: limit.window_s,
        observed,
        threshold: limit.threshold,
        first_seen_ms,
        last_seen_ms,
        evidence,
        summary,
    })
}

fn summary(
    rule: Rule,
    subject: &Subject,
    observed: u64,
    limit: Limit,
    evidence: &Evidence,
) -> String {
    let who = who(subject);
    let n = if evidence.saturated {
        format!("at least {observed}")
    } else {
        observed.to_string()
    };
    let window = window(limit.window_s);
    let t = limit.threshold;
    match rule {
        Rule::Volume => format!(
            "{who} received {} in {window} (threshold {})",
            size(observed),
            size(t)
        ),
        Rule::RoomsRead => format!("{who} read {n} distinct rooms in {window} (threshold {t})"),
        Rule::RoomsJoined => format!("{who} joined {n} distinct rooms in {window} (threshold {t})"),
        Rule::Media => {
            format!("{who} requested {n} distinct media files in {window} (threshold {t})")
        }
        Rule::Directory => format!(
            "{who} made {n} user-directory searches and distinct profile lookups in {window} \
             (threshold {t})"
        ),
        Rule::RoomDirectory => {
            format!("{who} made {n} room-directory requests in {window} (threshold {t})")
        }
        Rule::FullSyncs => {
            format!("{who} made {n} full-state or initial syncs in {window} (threshold {t})")
        }
        Rule::TokenlessMedia => format!(
            "{who} requested {n} distinct media files without a token in {window} \
             (threshold {t})"
        ),
        Rule::AdminAddress => format!(
            "{who}, outside admin_api.allow, called the admin API {n} time{} in {window} \
             (last: {})",
            if observed == 1 { "" } else { "s" },
            evidence.endpoint.unwrap_or("?")
        ),
    }
}

/// "@alice:example.org (tfp_…) from 203.0.113.7", "203.0.113.7", "an unknown address".
pub(super) fn who(subject: &Subject) -> String {
    let mut out = match (&subject.user, &subject.token) {
        (Some(user), Some(token)) => format!("{user} ({token})"),
        (Some(user), None) => user.clone(),
        (None, Some(token)) => format!("token {token}"),
        (None, None) => String::new(),
    };
    match (&subject.client_ip, out.is_empty()) {
        (Some(ip), true) => out.push_str(ip),
        (Some(ip), false) => out.push_str(&format!(" from {ip}")),
        (None, true) => out.push_str("an unknown address"),
        (None, false) => {}
    }
    out
}

/// "1 min", "10 min", "1 h", "24 h", "90 s".
pub(super) fn window(s: u64) -> String {
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Bytes in binary units with one decimal: "512 MiB", "1.5 GiB", "900 B".
pub(super) fn size(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, scale) in UNITS {
        if n >= scale {
            let text = format!("{:.1}", n as f64 / scale as f64);
            return format!("{} {unit}", text.trim_end_matches(".0"));
        }
    }
    format!("{n} B")
}
