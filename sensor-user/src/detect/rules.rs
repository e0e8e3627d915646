//! The request rules: what one finished request adds to which windows of which subjects,
//! and which (rule, subject, window) it makes fire.

use std::net::IpAddr;

use super::subjects::Key;
use super::window::item_key;
use super::{Alert, ByteLimit, DetectConfig, Detector, Limit, Observation, alert};
use crate::endpoint::Class;

/// The windowed rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Rule {
    Volume,
    RoomsRead,
    RoomsJoined,
    Media,
    Directory,
    RoomDirectory,
    FullSyncs,
    TokenlessMedia,
    AdminAddress,
}

impl Rule {
    pub(super) fn name(self) -> &'static str {
        match self {
            Rule::Volume => "volume",
            Rule::RoomsRead => "breadth.rooms_read",
            Rule::RoomsJoined => "breadth.rooms_joined",
            Rule::Media => "breadth.media",
            Rule::Directory => "breadth.directory",
            Rule::RoomDirectory => "breadth.room_directory",
            Rule::FullSyncs => "breadth.full_syncs",
            Rule::TokenlessMedia => "tokenless_media",
            Rule::AdminAddress => "admin_api.address",
        }
    }
}

/// The limits of `rule` for the subject `key`; empty when the rule is off or does not
/// apply to that kind of subject.
pub(super) fn limits(config: &DetectConfig, rule: Rule, key: &Key) -> Vec<Limit> {
    let windowed = |enabled: bool, limits: &[Limit]| {
        if enabled && key.is_token() {
            limits.to_vec()
        } else {
            Vec::new()
        }
    };
    let b = &config.breadth;
    match rule {
        Rule::Volume if config.volume.enabled => {
            let limits = match key {
                Key::Token(_) => &config.volume.token,
                Key::Address(_) => &config.volume.address,
                Key::NoAddress => return Vec::new(),
            };
            limits.iter().map(ByteLimit::as_limit).collect()
        }
        Rule::Volume => Vec::new(),
        Rule::RoomsRead => windowed(b.rooms_read.enabled, &b.rooms_read.limits),
        Rule::RoomsJoined => windowed(b.rooms_joined.enabled, &b.rooms_joined.limits),
        Rule::Media => windowed(b.media.enabled, &b.media.limits),
        Rule::Directory => windowed(b.directory.enabled, &b.directory.limits),
        Rule::RoomDirectory => windowed(b.room_directory.enabled, &b.room_directory.limits),
        Rule::FullSyncs => windowed(b.full_syncs.enabled, &b.full_syncs.limits),
        Rule::TokenlessMedia if matches!(key, Key::Address(_)) => {
            let t = &config.tokenless_media;
            if t.enabled {
                t.limits.clone()
            } else {
                Vec::new()
            }
        }
        Rule::AdminAddress if !key.is_token() && config.admin_api.enabled => vec![Limit {
            window_s: config.admin_api.window_s,
            threshold: 1,
        }],
        Rule::TokenlessMedia | Rule::AdminAddress => Vec::new(),
    }
}

/// What one request adds to one rule's windows.
enum Bump {
    /// One request and its bytes.
    Sum(Rule),
    /// One request to a distinct item, named for the evidence if it has a name.
    Distinct(Rule, u64, Option<String>),
}

impl Bump {
    fn rule(&self) -> Rule {
        match self {
            Bump::Sum(rule) | Bump::Distinct(rule, _, _) => *rule,
        }
    }
}

fn is_media(class: Option<Class>) -> bool {
    matches!(class, Some(Class::MediaDownload | Class::MediaThumbnail))
}

/// The breadth rule a token's request counts toward, if any.
fn breadth(obs: &Observation, searches: &mut u64) -> Option<Bump> {
    let room = |rule| {
        let room = obs.room.as_ref()?;
        Some(Bump::Distinct(
            rule,
            item_key(&("room", room)),
            Some(room.clone()),
        ))
    };
    let mut unique = || {
        *searches += 1;
        Bump::Distinct(Rule::Directory, item_key(&("search", *searches)), None)
    };
    match obs.class? {
        Class::RoomHistory | Class::RoomMembers | Class::RoomState => room(Rule::RoomsRead),
        Class::Join => room(Rule::RoomsJoined),
        Class::MediaDownload | Class::MediaThumbnail => media(obs, Rule::Media),
        Class::UserDirectory => Some(unique()),
        Class::Profile => Some(match &obs.target_user {
            Some(user) => {
                let key = item_key(&("profile", user));
                Bump::Distinct(Rule::Directory, key, Some(user.clone()))
            }
            None => unique(),
        }),
        Class::RoomDirectory => Some(Bump::Sum(Rule::RoomDirectory)),
        Class::Sync if obs.full_state == Some(true) || obs.since == Some(false) => {
            Some(Bump::Sum(Rule::FullSyncs))
        }
        _ => None,
    }
}

fn media(obs: &Observation, rule: Rule) -> Option<Bump> {
    let m = obs.media.as_ref()?;
    let key = item_key(&("media", &m.server, &m.media_id));
    let name = format!("mxc://{}/{}", m.server, m.media_id);
    Some(Bump::Distinct(rule, key, Some(name)))
}

/// Runs every rule on one finished request at `now_ms`.
pub(super) fn observe(d: &mut Detector, now_ms: u64, obs: &Observation) -> Vec<Alert> {
    let end_ms = d.clock_ms;
    let realert_ms = d.config.realert_s.saturating_mul(1000);
    let mut alerts = Vec::new();
    let transfer = &d.config.single_transfer;
    if transfer.enabled && obs.bytes_out >= transfer.threshold_bytes {
        let threshold = transfer.threshold_bytes;
        let alert = d.events.response(end_ms, realert_ms, threshold, obs);
        alerts.extend(alert);
    }
    let admin = obs.class == Some(Class::Admin) && d.config.admin_api.enabled;
    let allowed = obs
        .client_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| d.admin_allow.contains(ip));
    if admin && d.config.admin_api.new_token {
        alerts.extend(d.events.admin_token(end_ms, obs, allowed));
    }
    let exempt = obs.user.as_ref().is_some_and(|u| d.exempt.contains(u));
    if let Some(token) = obs.token.filter(|_| !exempt) {
        let mut bumps = vec![Bump::Sum(Rule::Volume)];
        bumps.extend(breadth(obs, &mut d.searches));
        count(d, Key::Token(token), &bumps, now_ms, obs, &mut alerts);
    }
    let mut bumps = Vec::new();
    if !exempt {
        bumps.push(Bump::Sum(Rule::Volume));
        if obs.token.is_none() && is_media(obs.class) {
            bumps.extend(media(obs, Rule::TokenlessMedia));
        }
    }
    if admin && !allowed {
        bumps.push(Bump::Sum(Rule::AdminAddress));
    }
    let key = match &obs.client_ip {
        Some(ip) => Key::Address(ip.as_str().into()),
        None if admin && !allowed => Key::NoAddress,
        None => return alerts,
    };
    if !bumps.is_empty() {
        count(d, key, &bumps, now_ms, obs, &mut alerts);
    }
    alerts
}

/// Adds `bumps` to the windows of subject `key` and raises the alerts that are due.
fn count(
    d: &mut Detector,
    key: Key,
    bumps: &[Bump],
    now_ms: u64,
    obs: &Observation,
    alerts: &mut Vec<Alert>,
) {
    let end_ms = d.clock_ms;
    let config = &d.config;
    let realert_ms = config.realert_s.saturating_mul(1000);
    let work: Vec<(&Bump, Vec<Limit>)> = bumps
        .iter()
        .map(|b| (b, limits(config, b.rule(), &key)))
        .filter(|(_, limits)| !limits.is_empty())
        .collect();
    if work.is_empty() {
        return;
    }
    let state = d.subjects.state(key.clone(), now_ms);
    if key.is_token() {
        state.user.clone_from(&obs.user);
        if let Some(ip) = &obs.client_ip {
            state.note_address(ip, now_ms);
        }
    }
    for (bump, limits) in work {
        let rule = bump.rule();
        for limit in limits {
            let observed = match bump {
                Bump::Sum(rule) => {
                    let window = state.sum(*rule, limit.window_s);
                    if !window.add(end_ms, now_ms, obs.bytes_out) {
                        continue;
                    }
                    match rule {
                        Rule::Volume => window.bytes(),
                        _ => window.requests(),
                    }
                }
                Bump::Distinct(rule, item, name) => {
                    let window = state.distinct(*rule, limit.window_s, config.max_items);
                    if !window.add(end_ms, now_ms, *item, name.as_deref(), obs.bytes_out) {
                        continue;
                    }
                    window.count()
                }
            };
            if observed >= limit.threshold
                && state.fire(rule, limit.window_s, end_ms, observed, realert_ms)
            {
                alerts.extend(alert::windowed(
                    &key,
                    state,
                    rule,
                    limit,
                    end_ms,
                    obs.endpoint,
                ));
            }
        }
    }
}
