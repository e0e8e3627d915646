//! Unit tests for detection: synthetic request streams with explicit times. Requests are
//! written the way Element and scraping scripts send them, after endpoint classification.

mod admin;
mod config;
mod health;
mod record;
mod rules;
mod scenarios;
mod volume;
mod window;

use super::{Alert, DetectConfig, Detector, Limit, Observation};
use crate::endpoint::{Class, MediaRef};
use crate::identity::Fingerprint;

/// 2026-09-21T14:13:20Z, in milliseconds: the start of every stream.
const T0: u64 = 1_790_000_000_000;
const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const MIB: u64 = 1 << 20;

const IP: &str = "203.0.113.7";
const USER: &str = "@mallory:example.org";

/// Token number `n`.
fn fp(n: u64) -> Fingerprint {
    format!("tfp_{n:016x}").parse().expect("valid fingerprint")
}

/// A request by token 1 (`USER`) from `IP`, of `class`, 1 KiB out.
fn req(endpoint: &'static str, class: Class) -> Observation {
    Observation {
        cookie: 1,
        client_ip: Some(IP.into()),
        token: Some(fp(1)),
        user: Some(USER.into()),
        endpoint,
        class: Some(class),
        bytes_in: 300,
        bytes_out: 1024,
        ..Observation::default()
    }
}

fn messages(room: &str) -> Observation {
    Observation {
        room: Some(room.into()),
        ..req("client.messages", Class::RoomHistory)
    }
}

fn join(room: &str) -> Observation {
    Observation {
        room: Some(room.into()),
        ..req("client.join", Class::Join)
    }
}

fn download(media_id: &str) -> Observation {
    Observation {
        media: Some(MediaRef {
            server: "example.org".into(),
            media_id: media_id.into(),
        }),
        ..req("media.download", Class::MediaDownload)
    }
}

fn profile(user: &str) -> Observation {
    Observation {
        target_user: Some(user.into()),
        ..req("client.profile", Class::Profile)
    }
}

fn sync(since: bool, full_state: bool) -> Observation {
    Observation {
        since: Some(since),
        full_state: Some(full_state),
        ..req("client.sync", Class::Sync)
    }
}

/// Builder-style changes to a request.
trait With: Sized {
    fn by(self, token: u64) -> Self;
    fn tokenless(self) -> Self;
    fn at_ip(self, ip: &str) -> Self;
    fn bytes(self, bytes_out: u64) -> Self;
}

impl With for Observation {
    fn by(self, token: u64) -> Self {
        Observation {
            token: Some(fp(token)),
            user: Some(format!("@user{token}:example.org")),
            ..self
        }
    }
    fn tokenless(self) -> Self {
        Observation {
            token: None,
            user: None,
            ..self
        }
    }
    fn at_ip(self, ip: &str) -> Self {
        Observation {
            client_ip: Some(ip.into()),
            ..self
        }
    }
    fn bytes(self, bytes_out: u64) -> Self {
        Observation { bytes_out, ..self }
    }
}

/// A detector with the defaults changed by `change`, which must stay valid.
fn detector(change: impl FnOnce(&mut DetectConfig)) -> Detector {
    let mut config = DetectConfig::default();
    change(&mut config);
    config.validate().expect("test configuration is valid");
    Detector::new(config)
}

fn limit(window_s: u64, threshold: u64) -> Limit {
    Limit {
        window_s,
        threshold,
    }
}

/// Feeds timed requests; returns every alert raised.
fn feed(d: &mut Detector, stream: impl IntoIterator<Item = (u64, Observation)>) -> Vec<Alert> {
    stream
        .into_iter()
        .flat_map(|(t, obs)| d.observe_request(t, &obs))
        .collect()
}

/// The alerts of one rule.
fn of(alerts: &[Alert], rule: &str) -> Vec<Alert> {
    alerts.iter().filter(|a| a.rule == rule).cloned().collect()
}

/// (rule, window, observed) of each alert, for compact assertions.
fn brief(alerts: &[Alert]) -> Vec<(&'static str, u64, u64)> {
    alerts
        .iter()
        .map(|a| (a.rule, a.window_s, a.observed))
        .collect()
}
