//! The endpoint table: one row per route Synapse serves that the sensor names.
//!
//! Adding an endpoint is adding a row. A row says under which API prefix and versions its
//! path lives, which methods Synapse dispatches to it, its stable name and class, and what
//! to read from the query string. Identifiers are taken by the *names* of the matchit
//! parameters in the path:
//!
//! | parameter | goes to |
//! | --- | --- |
//! | `{room}` | `Endpoint::room` (room ID or alias) |
//! | `{event_id}` | `Endpoint::event_id` |
//! | `{user_id}` | `Endpoint::user_id` |
//! | `{server}` + `{media_id}` | `Endpoint::media` |
//!
//! Any other parameter name (`{txn}`, `{event_type}`, `{state_key}`, `{file}`, `{*rest}`, ...)
//! is matched and ignored. Two rows may share a path when they differ by method (the state
//! endpoints read with GET and write with PUT); the first row whose methods include the
//! request's method wins.
//!
//! A row whose last parameter Synapse allows to be empty (`[^/]*` in its regex, where the
//! empty value is meaningful: an empty state key, a download without a file name, a
//! transaction ID) gets a twin row ending in `/`, because a matchit parameter never matches
//! an empty segment. Rows ending in `{*rest}` stand for Synapse patterns that are not
//! anchored with `$` (the profile servlets) or for whole families (keys, account, admin).

use super::Class::{self, *};

/// Method bits. HEAD is dispatched as GET by Synapse (`JsonResource._get_handler_for_request`).
pub(super) const GET: u8 = 1;
pub(super) const PUT: u8 = 1 << 1;
pub(super) const POST: u8 = 1 << 2;
pub(super) const DELETE: u8 = 1 << 3;
/// Any other method (PATCH, ...): only rows with `ANY` take it.
pub(super) const OTHER: u8 = 1 << 4;
pub(super) const ANY: u8 = u8::MAX;

/// Client-API version segments, as `client_patterns()` in `synapse/rest/client/_base.py`
/// builds them: `api/v1` when `v1=True`, the `releases` (default `r0`, `v3`), `unstable`
/// unless `unstable=False`. `v1` is the newer stable prefix (media, relations, hierarchy).
pub(super) const API_V1: u8 = 1;
pub(super) const R0: u8 = 1 << 1;
pub(super) const V1: u8 = 1 << 2;
pub(super) const V3: u8 = 1 << 3;
pub(super) const UNSTABLE: u8 = 1 << 4;
/// `client_patterns(..., v1=True)`.
const LEGACY: u8 = API_V1 | R0 | V3 | UNSTABLE;
/// `client_patterns(...)` with its defaults.
const STABLE: u8 = R0 | V3 | UNSTABLE;
/// Legacy media: `/_matrix/media/(r0|v3|v1)/...` in `synapse/rest/media/*.py`.
const MEDIA: u8 = R0 | V3 | V1;

/// The version segments, in bit order.
pub(super) const VERSIONS: [(u8, &str); 5] = [
    (API_V1, "api/v1"),
    (R0, "r0"),
    (V1, "v1"),
    (V3, "v3"),
    (UNSTABLE, "unstable"),
];

/// Where a row's path is mounted.
#[derive(Clone, Copy, Debug)]
pub(super) enum Api {
    /// `/_matrix/client/{version}` for every version bit set.
    Client(u8),
    /// `/_matrix/client/{version}/media` (authenticated media, Matrix 1.11).
    ClientMedia(u8),
    /// `/_matrix/media/{version}` (legacy media, may be served without a token).
    Media(u8),
    /// The path is complete (`/_synapse/admin/...`).
    Root,
}

/// What a row reads from the query string (never the string itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Query {
    None,
    /// `/sync`: `since` present, `full_state=true`.
    Sync,
    /// Sliding sync: `pos` present plays the part of `since`.
    SlidingSync,
    /// Legacy `/initialSync`: always a full snapshot (`since` is `Some(false)`).
    Snapshot,
}

#[derive(Debug)]
pub(super) struct Row {
    pub api: Api,
    pub methods: u8,
    pub path: &'static str,
    pub name: &'static str,
    pub class: Class,
    pub query: Query,
}

const fn r(api: Api, methods: u8, path: &'static str, name: &'static str, class: Class) -> Row {
    Row {
        api,
        methods,
        path,
        name,
        class,
        query: Query::None,
    }
}

const fn q(api: Api, path: &'static str, name: &'static str, query: Query) -> Row {
    let methods = if matches!(query, Query::SlidingSync) {
        POST
    } else {
        GET
    };
    Row {
        api,
        methods,
        path,
        name,
        class: Sync,
        query,
    }
}

use Api::{Client as C, ClientMedia as CM, Media as M, Root};

#[rustfmt::skip]
pub(super) static ROWS: &[Row] = &[
    // Sync and event streams (synapse/rest/client/sync.py, events.py, initial_sync.py).
    q(C(STABLE), "/sync", "client.sync", Query::Sync),
    q(C(UNSTABLE), "/org.matrix.simplified_msc3575/sync", "client.sliding_sync", Query::SlidingSync),
    // The sliding-sync proxy's path: Synapse answers 404, a proxy on the same host serves it.
    q(C(UNSTABLE), "/org.matrix.msc3575/sync", "client.sliding_sync", Query::SlidingSync),
    q(C(LEGACY), "/initialSync", "client.initial_sync", Query::Snapshot),
    r(C(LEGACY), GET, "/events", "client.events", Sync),
    // Room history (room.py, relations.py, events.py).
    r(C(LEGACY), GET, "/rooms/{room}/messages", "client.messages", RoomHistory),
    r(C(LEGACY), GET, "/rooms/{room}/context/{event_id}", "client.context", RoomHistory),
    r(C(LEGACY), GET, "/rooms/{room}/event/{event_id}", "client.event", RoomHistory),
    r(C(LEGACY), GET, "/events/{event_id}", "client.event", RoomHistory),
    r(C(LEGACY), GET, "/rooms/{room}/initialSync", "client.room_initial_sync", RoomHistory),
    r(C(V1 | UNSTABLE), GET, "/rooms/{room}/relations/{event_id}", "client.relations", RoomHistory),
    r(C(V1 | UNSTABLE), GET, "/rooms/{room}/relations/{event_id}/{rel_type}", "client.relations", RoomHistory),
    r(C(V1 | UNSTABLE), GET, "/rooms/{room}/relations/{event_id}/{rel_type}/{event_type}", "client.relations", RoomHistory),
    r(C(V1), GET, "/rooms/{room}/threads", "client.threads", RoomHistory),
    r(C(LEGACY), POST, "/search", "client.search", RoomHistory),
    // Members.
    r(C(LEGACY), GET, "/rooms/{room}/members", "client.members", RoomMembers),
    r(C(LEGACY), GET, "/rooms/{room}/joined_members", "client.joined_members", RoomMembers),
    // State: GET reads, PUT sends a state event. `/state/{type}/` is the empty state key.
    r(C(LEGACY), GET, "/rooms/{room}/state", "client.state", RoomState),
    r(C(LEGACY), GET, "/rooms/{room}/state/{event_type}", "client.state", RoomState),
    r(C(LEGACY), PUT, "/rooms/{room}/state/{event_type}", "client.send_state", Send),
    r(C(LEGACY), GET, "/rooms/{room}/state/{event_type}/", "client.state", RoomState),
    r(C(LEGACY), PUT, "/rooms/{room}/state/{event_type}/", "client.send_state", Send),
    r(C(LEGACY), GET, "/rooms/{room}/state/{event_type}/{state_key}", "client.state", RoomState),
    r(C(LEGACY), PUT, "/rooms/{room}/state/{event_type}/{state_key}", "client.send_state", Send),
    // Sending (register_txn_path: POST without, PUT with a transaction ID).
    r(C(LEGACY), POST, "/rooms/{room}/send/{event_type}", "client.send", Send),
    r(C(LEGACY), PUT, "/rooms/{room}/send/{event_type}/{txn}", "client.send", Send),
    r(C(LEGACY), PUT, "/rooms/{room}/send/{event_type}/", "client.send", Send),
    // Joining (register_txn_path again) and knocking.
    r(C(LEGACY), POST, "/join/{room}", "client.join", Join),
    r(C(LEGACY), PUT, "/join/{room}/{txn}", "client.join", Join),
    r(C(LEGACY), PUT, "/join/{room}/", "client.join", Join),
    r(C(LEGACY), POST, "/rooms/{room}/join", "client.join", Join),
    r(C(LEGACY), PUT, "/rooms/{room}/join/{txn}", "client.join", Join),
    r(C(LEGACY), PUT, "/rooms/{room}/join/", "client.join", Join),
    r(C(STABLE), POST, "/knock/{room}", "client.knock", Join),
    r(C(LEGACY), POST, "/rooms/{room}/leave", "client.leave", OtherClient),
    r(C(LEGACY), PUT, "/rooms/{room}/leave/{txn}", "client.leave", OtherClient),
    // Room discovery.
    r(C(LEGACY), GET | POST, "/publicRooms", "client.public_rooms", RoomDirectory),
    r(C(LEGACY), GET, "/directory/room/{room}", "client.directory_room", RoomDirectory),
    r(C(LEGACY), PUT | DELETE, "/directory/room/{room}", "client.directory_room_edit", OtherClient),
    r(C(V1), GET, "/rooms/{room}/hierarchy", "client.hierarchy", RoomDirectory),
    r(C(V1), GET, "/room_summary/{room}", "client.room_summary", RoomDirectory),
    // Users. ProfileRestServlet's pattern has no `$`: any tail after the user ID is served.
    r(C(STABLE), POST, "/user_directory/search", "client.user_directory", UserDirectory),
    r(C(LEGACY), GET, "/profile/{user_id}", "client.profile", Profile),
    r(C(LEGACY), GET, "/profile/{user_id}/", "client.profile", Profile),
    r(C(LEGACY), GET, "/profile/{user_id}/{*rest}", "client.profile", Profile),
    r(C(LEGACY), PUT | DELETE, "/profile/{user_id}/{*rest}", "client.profile_edit", Account),
    r(C(LEGACY), GET, "/admin/whois/{user_id}", "admin.users", Admin),
    // Sessions and accounts.
    r(C(LEGACY), GET | POST, "/login", "client.login", Login),
    r(C(LEGACY | V1), ANY, "/login/{*rest}", "client.login", Login),
    r(C(LEGACY), POST, "/logout", "client.logout", Login),
    r(C(LEGACY), POST, "/logout/all", "client.logout", Login),
    r(C(STABLE), POST, "/refresh", "client.refresh", Login),
    r(C(STABLE), POST, "/register", "client.register", Account),
    r(C(STABLE | V1), ANY, "/register/{*rest}", "client.register", Account),
    r(C(STABLE), GET, "/account/whoami", "client.whoami", Account),
    r(C(STABLE), ANY, "/account/{*rest}", "client.account", Account),
    r(C(STABLE), ANY, "/keys/{*rest}", "client.keys", Keys),
    r(C(STABLE), ANY, "/room_keys/{*rest}", "client.room_keys", Keys),
    // Authenticated media (synapse/rest/client/media.py): /_matrix/client/v1/media/...
    r(CM(V1), GET, "/download/{server}/{media_id}", "media.download", MediaDownload),
    r(CM(V1), GET, "/download/{server}/{media_id}/", "media.download", MediaDownload),
    r(CM(V1), GET, "/download/{server}/{media_id}/{file}", "media.download", MediaDownload),
    r(CM(V1), GET, "/thumbnail/{server}/{media_id}", "media.thumbnail", MediaThumbnail),
    r(CM(V1), GET, "/config", "media.config", OtherClient),
    r(CM(V1), GET, "/preview_url", "media.preview_url", OtherClient),
    // Legacy media (synapse/rest/media/*.py): /_matrix/media/{r0,v3,v1}/...
    r(M(MEDIA), GET, "/download/{server}/{media_id}", "media.download", MediaDownload),
    r(M(MEDIA), GET, "/download/{server}/{media_id}/", "media.download", MediaDownload),
    r(M(MEDIA), GET, "/download/{server}/{media_id}/{file}", "media.download", MediaDownload),
    r(M(MEDIA), GET, "/thumbnail/{server}/{media_id}", "media.thumbnail", MediaThumbnail),
    r(M(MEDIA), POST, "/upload", "media.upload", MediaUpload),
    r(M(V3), PUT, "/upload/{server}/{media_id}", "media.upload", MediaUpload),
    r(M(V1), POST, "/create", "media.create", MediaUpload),
    r(M(MEDIA), GET, "/config", "media.config", OtherClient),
    r(M(MEDIA), GET, "/preview_url", "media.preview_url", OtherClient),
    // Admin API (synapse/rest/admin/*.py, admin_patterns(): `v1` unless stated).
    r(Root, ANY, "/_synapse/admin/v2/users", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v3/users", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v2/users/{user_id}", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v2/users/{user_id}/{*rest}", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v1/users/{user_id}/{*rest}", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v1/user/{user_id}/{*rest}", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v1/whois/{user_id}", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v1/deactivate/{user_id}", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v1/reset_password/{user_id}", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v1/suspend/{user_id}", "admin.users", Admin),
    r(Root, ANY, "/_synapse/admin/v1/register", "admin.register", Admin),
    r(Root, ANY, "/_synapse/admin/v1/username_available", "admin.register", Admin),
    r(Root, ANY, "/_synapse/admin/v1/registration_tokens", "admin.register", Admin),
    r(Root, ANY, "/_synapse/admin/v1/registration_tokens/{*rest}", "admin.register", Admin),
    r(Root, ANY, "/_synapse/admin/v1/rooms", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v1/rooms/{room}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v1/rooms/{room}/{*rest}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v2/rooms/{room}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v2/rooms/{room}/{*rest}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v2/rooms/delete_status/{*rest}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v1/join/{room}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v1/purge_history/{room}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v1/purge_history/{room}/{event_id}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v1/fetch_event/{event_id}", "admin.rooms", Admin),
    r(Root, ANY, "/_synapse/admin/v1/room/{room}/{*rest}", "admin.media", Admin),
    r(Root, ANY, "/_synapse/admin/v1/quarantine_media/{room}", "admin.media", Admin),
    r(Root, ANY, "/_synapse/admin/v1/media/{server}/{media_id}", "admin.media", Admin),
    r(Root, ANY, "/_synapse/admin/v1/media/{server}/delete", "admin.media", Admin),
    r(Root, ANY, "/_synapse/admin/v1/media/quarantine/{server}/{media_id}", "admin.media", Admin),
    r(Root, ANY, "/_synapse/admin/v1/media/unquarantine/{server}/{media_id}", "admin.media", Admin),
    r(Root, ANY, "/_synapse/admin/v1/media/protect/{id}", "admin.media", Admin),
    r(Root, ANY, "/_synapse/admin/v1/media/unprotect/{id}", "admin.media", Admin),
];

/// Families: where no row takes a request (unknown path, or a method the row's servlet does
/// not have, which Synapse answers with 405), the longest prefix here names it. A prefix
/// matches the path itself or the path followed by `/`.
#[rustfmt::skip]
pub(super) static FAMILIES: &[(&str, &str, Class)] = &[
    ("/_synapse/admin/v1/media", "admin.media", Admin),
    ("/_synapse/admin", "admin.other", Admin),
    ("/_synapse/client", "synapse.client", OtherClient),
    ("/_matrix/client", "client.other", OtherClient),
    ("/_matrix/media", "media.other", OtherClient),
    ("/_matrix/federation", "federation", Federation),
    ("/_matrix/key", "federation.key", Federation),
];
