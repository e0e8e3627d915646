//! Endpoint classification: an HTTP method and request-target, as read off the plaintext hop
//! from the reverse proxy to Synapse, become a stable endpoint name, a [`Class`] for metrics
//! and detection rules, and the identifiers the request names (room, event, user, media).
//!
//! [`classify`] never fails and never panics. The router is built once from the table in
//! `endpoint/table.rs` (one row per route; adding an endpoint is adding a row), so a lookup
//! is one radix-tree walk plus the percent-decoding of the identifiers it returns.
//!
//! # What was checked
//! The table mirrors what Synapse actually dispatches, read from its source
//! (element-hq/synapse, commit a58ad44e of July 2026):
//! - `synapse/http/server.py`, `JsonResource._get_handler_for_request`: the first registered
//!   regex that `re.match`es the raw (still percent-encoded) `request.path` wins; a method
//!   that servlet lacks is a 405, not a fall-through; HEAD is dispatched as GET; path groups
//!   are `urllib.parse.unquote`d (invalid UTF-8 becomes U+FFFD).
//! - `synapse/rest/client/_base.py` `client_patterns()` (versions `api/v1`, `r0`, `v3`,
//!   `unstable`; `v1` only where a servlet lists it), the servlets in `synapse/rest/client/`
//!   (`sync.py`, `room.py`, `relations.py`, `profile.py`, `directory.py`, `media.py`, ...),
//!   legacy media in `synapse/rest/media/` (`/_matrix/media/(r0|v3|v1)/...`, `upload/{server}/
//!   {mediaId}` on v3 only, `create` on v1 only), and `synapse/rest/admin/` `admin_patterns()`.
//! - Twisted (`twisted/web/http.py`, `Request.requestReceived` and `parse_qs`): the path is
//!   the request-target up to the first `?`; there is no absolute-form handling; the query is
//!   split on `&` *and* `;`, items without `=` are dropped, `+` is a space, and Synapse reads
//!   the first value of a repeated key.
//! - The Matrix spec's authenticated media (v1.11: `/_matrix/client/v1/media/...`) and the
//!   Synapse admin API documentation (`/_synapse/admin/v2/users[/<user_id>]`, ...).
//! - matchit 0.9.2: `{p}` matches one non-empty segment, `{*p}` a non-empty tail, static
//!   segments win over parameters and the router backtracks.
//!
//! # Decisions
//! - **Method.** A row is taken only for the methods Synapse registers for it; any other
//!   method gets the family name (`client.other`, `admin.other`, ...) without identifiers,
//!   because Synapse answers 405 and moves no data. So `GET /rooms/{id}/join` is
//!   `client.other`, while GET and POST `/publicRooms` are both `client.public_rooms`. HEAD
//!   counts as GET. OPTIONS is a CORS preflight that Synapse's root `OptionsResource`
//!   answers (204) for any path before any servlet: it is named `cors.preflight` (class
//!   `OtherClient`, no identifiers) so it never doubles a count. Methods are
//!   case-sensitive, as in Synapse.
//! - **Slashes.** Synapse's regexes end in `$` and its resource tree has no empty
//!   segments, so `/sync/` and `/_matrix/client/v3//sync` reach no servlet: they get no
//!   endpoint name. They keep their family (`client.other`, `admin.other`): an admin-API
//!   probe is worth counting even when it 404s. A `//` before or inside the family prefix
//!   (`/_matrix//client/...`, `//_matrix/client/...`) is `unknown`. Where Synapse serves an empty last
//!   segment (an empty state key, a download without a file name, an empty transaction ID,
//!   the unanchored profile pattern) the table has a row for it.
//! - **Targets that are not origin-form** (empty, `*`, absolute-form `http://host/...`) are
//!   `unknown`: Twisted takes them as a path that matches no resource and answers 404.
//!   Paths with non-ASCII bytes are `unknown`: Synapse decodes `request.path` as ASCII and
//!   fails the request.
//! - **Identifiers** are percent-decoded from the path segment only; one longer than 255
//!   bytes once decoded (the spec's limit for IDs) is dropped, not truncated, and the
//!   endpoint is still named. Percent-encoded static segments (`%6Dessages`) do not match,
//!   exactly as in Synapse.
//! - **Query.** Only `full_state` and `since` (sliding sync: `pos`) are read, the way
//!   Synapse reads them; the query string is never returned or stored. `full_state` is
//!   `Some(true)` only for the exact value `true` (anything else is `false` or a 400).
//!   Legacy `/initialSync` is a full snapshot and reports `since: Some(false)`.
//! - The sliding-sync proxy's `unstable/org.matrix.msc3575/sync` is named like Synapse's own
//!   `org.matrix.simplified_msc3575/sync`, although Synapse itself 404s it.
//! - Not named (family only): membership actions other than join/knock/leave, typing,
//!   receipts, account data, push rules, devices, `/joined_rooms`, `/createRoom`,
//!   `/_matrix/client/versions`, federation endpoints one by one.

mod table;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::LazyLock;

use percent_encoding::percent_decode_str;
use serde::Serialize;

use table::{Api, Query, Row};

/// What one request is, as far as the sensor cares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Stable machine name, e.g. "client.messages", "client.sync", "media.download",
    /// "admin.users", "unknown".
    pub name: &'static str,
    /// The class used by metrics and detection rules.
    pub class: Class,
    /// Room ID (`!x:server`) or alias (`#x:server`), percent-decoded.
    pub room: Option<String>,
    /// Event ID, for `/context/{eventId}`, `/event/{eventId}`, `/relations/{eventId}`.
    pub event_id: Option<String>,
    /// User ID, for `/profile/{userId}` and the admin user endpoints.
    pub user_id: Option<String>,
    /// Server name and media ID, for media download, thumbnail and admin media.
    pub media: Option<MediaRef>,
    /// `/sync`: whether `full_state=true` was given.
    pub full_state: Option<bool>,
    /// Sync endpoints: whether a `since` (sliding sync: `pos`) token was given. A sync
    /// without one is an initial sync, a full snapshot.
    pub since: Option<bool>,
    /// True for `/_matrix/client/v1/media/*`, false for legacy `/_matrix/media/*`.
    pub authenticated_media: bool,
}

/// A piece of media, as in `mxc://{server}/{media_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MediaRef {
    pub server: String,
    pub media_id: String,
}

/// The class used by metrics and detection rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Sync,
    /// messages, context, event, relations, threads, search, room initialSync.
    RoomHistory,
    /// members, joined_members.
    RoomMembers,
    RoomState,
    /// join and knock.
    Join,
    /// publicRooms, alias resolution, hierarchy, room summary.
    RoomDirectory,
    /// user_directory/search.
    UserDirectory,
    Profile,
    MediaDownload,
    MediaThumbnail,
    MediaUpload,
    Send,
    Login,
    Account,
    Keys,
    Admin,
    OtherClient,
    Federation,
    Unknown,
}

impl Class {
    /// Every class, in declaration order (for metrics that pre-register their labels).
    pub const ALL: [Class; 19] = [
        Class::Sync,
        Class::RoomHistory,
        Class::RoomMembers,
        Class::RoomState,
        Class::Join,
        Class::RoomDirectory,
        Class::UserDirectory,
        Class::Profile,
        Class::MediaDownload,
        Class::MediaThumbnail,
        Class::MediaUpload,
        Class::Send,
        Class::Login,
        Class::Account,
        Class::Keys,
        Class::Admin,
        Class::OtherClient,
        Class::Federation,
        Class::Unknown,
    ];

    /// The name serde gives this class (snake_case), for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Sync => "sync",
            Class::RoomHistory => "room_history",
            Class::RoomMembers => "room_members",
            Class::RoomState => "room_state",
            Class::Join => "join",
            Class::RoomDirectory => "room_directory",
            Class::UserDirectory => "user_directory",
            Class::Profile => "profile",
            Class::MediaDownload => "media_download",
            Class::MediaThumbnail => "media_thumbnail",
            Class::MediaUpload => "media_upload",
            Class::Send => "send",
            Class::Login => "login",
            Class::Account => "account",
            Class::Keys => "keys",
            Class::Admin => "admin",
            Class::OtherClient => "other_client",
            Class::Federation => "federation",
            Class::Unknown => "unknown",
        }
    }
}

/// The endpoint table could not be turned into a router.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "endpoint table row {row} ({route}) conflicts with another route: {source}; \
         fix the row in sensor-user/src/endpoint/table.rs"
    )]
    Conflict {
        row: usize,
        route: String,
        #[source]
        source: matchit::InsertError,
    },
}

/// Longest identifier returned (the spec's limit for room, event and user IDs).
const MAX_ID_LEN: usize = 255;

/// The router: full route → indices into `table::ROWS` (several when rows differ by method).
type Routes = matchit::Router<Vec<usize>>;

static ROUTER: LazyLock<Result<Routes, TableError>> = LazyLock::new(build);

/// Builds the router (once) and reports a broken table, for the agent to call at start-up
/// so that a conflicting row fails loudly; [`classify`] itself degrades to family names.
pub fn check_table() -> Result<(), &'static TableError> {
    ROUTER.as_ref().map(|_| ())
}

fn build() -> Result<Routes, TableError> {
    let mut grouped: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, row) in table::ROWS.iter().enumerate() {
        for route in routes_of(row) {
            match grouped.iter_mut().find(|(r, _)| *r == route) {
                Some((_, rows)) => rows.push(index),
                None => grouped.push((route, vec![index])),
            }
        }
    }
    let mut router = Routes::new();
    for (route, rows) in grouped {
        let row = rows[0];
        router
            .insert(route.clone(), rows)
            .map_err(|source| TableError::Conflict { row, route, source })?;
    }
    Ok(router)
}

/// The full routes a row stands for, one per API version.
fn routes_of(row: &Row) -> Vec<String> {
    let (base, versions) = match row.api {
        Api::Client(v) => ("/_matrix/client/", v),
        Api::ClientMedia(v) => ("/_matrix/client/", v),
        Api::Media(v) => ("/_matrix/media/", v),
        Api::Root => return vec![row.path.to_owned()],
    };
    let media = if matches!(row.api, Api::ClientMedia(_)) {
        "/media"
    } else {
        ""
    };
    table::VERSIONS
        .iter()
        .filter(|(bit, _)| versions & bit != 0)
        .map(|(_, version)| format!("{base}{version}{media}{}", row.path))
        .collect()
}

/// Classifies one request. `target` is the request-target exactly as in the request line
/// (path plus optional `?query`, percent-encoded). Never panics; see the module
/// documentation for what each odd input becomes.
pub fn classify(method: &str, target: &str) -> Endpoint {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    };
    if !path.starts_with('/') || !path.is_ascii() {
        return Endpoint::named("unknown", Class::Unknown);
    }
    if method == "OPTIONS" {
        return Endpoint::named("cors.preflight", Class::OtherClient);
    }
    route(method_bit(method), path, query)
}

fn method_bit(method: &str) -> u8 {
    match method {
        "GET" | "HEAD" => table::GET,
        "PUT" => table::PUT,
        "POST" => table::POST,
        "DELETE" => table::DELETE,
        _ => table::OTHER,
    }
}

fn route(method: u8, path: &str, query: &str) -> Endpoint {
    let Ok(router) = ROUTER.as_ref() else {
        return family(path);
    };
    let Ok(found) = router.at(path) else {
        return family(path);
    };
    let Some(row) = found
        .value
        .iter()
        .filter_map(|&index| table::ROWS.get(index))
        .find(|row| row.methods & method != 0)
    else {
        return family(path);
    };
    let params = &found.params;
    let id = |key: &str| params.get(key).and_then(decode_id);
    let media = match (id("server"), id("media_id")) {
        (Some(server), Some(media_id)) => Some(MediaRef { server, media_id }),
        _ => None,
    };
    let (full_state, since) = match row.query {
        Query::None => (None, None),
        Query::Sync => (
            Some(first_value(query, "full_state").is_some_and(|v| v == b"true")),
            Some(first_value(query, "since").is_some()),
        ),
        Query::SlidingSync => (None, Some(first_value(query, "pos").is_some())),
        Query::Snapshot => (None, Some(false)),
    };
    Endpoint {
        name: row.name,
        class: row.class,
        room: id("room"),
        event_id: id("event_id"),
        user_id: id("user_id"),
        media,
        full_state,
        since,
        authenticated_media: matches!(row.api, Api::ClientMedia(_)),
    }
}

/// The family a path belongs to when no row takes it.
fn family(path: &str) -> Endpoint {
    let found = table::FAMILIES.iter().find(|(prefix, _, _)| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    match found {
        Some(&(_, name, class)) => Endpoint::named(name, class),
        None => Endpoint::named("unknown", Class::Unknown),
    }
}

/// Percent-decodes one path segment as Synapse does (`urllib.parse.unquote`: invalid
/// escapes kept, invalid UTF-8 replaced); `None` when longer than [`MAX_ID_LEN`].
fn decode_id(raw: &str) -> Option<String> {
    // A decoded segment is at most as long as the raw one and at least a third of it.
    if raw.len() > 3 * MAX_ID_LEN {
        return None;
    }
    let decoded = percent_decode_str(raw).decode_utf8_lossy().into_owned();
    (decoded.len() <= MAX_ID_LEN).then_some(decoded)
}

/// The first value of `key` in a query string, decoded the way Twisted's `parse_qs` does
/// (items split on `&` and `;`, items without `=` dropped, `+` as space, then
/// percent-decoding), as the raw bytes Synapse compares.
fn first_value(query: &str, key: &str) -> Option<Vec<u8>> {
    query
        .split(['&', ';'])
        .filter_map(|item| item.split_once('='))
        .find(|(k, _)| form_decode(k) == key.as_bytes())
        .map(|(_, v)| form_decode(v).into_owned())
}

fn form_decode(s: &str) -> Cow<'_, [u8]> {
    let spaced: Cow<'_, str> = if s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    match spaced {
        Cow::Borrowed(s) => percent_decode_str(s).into(),
        Cow::Owned(s) => Cow::Owned(percent_decode_str(&s).collect()),
    }
}

impl Endpoint {
    /// An endpoint with a name and class and nothing else.
    fn named(name: &'static str, class: Class) -> Self {
        Endpoint {
            name,
            class,
            room: None,
            event_id: None,
            user_id: None,
            media: None,
            full_state: None,
            since: None,
            authenticated_media: false,
        }
    }
}
