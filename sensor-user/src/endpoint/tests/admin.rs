//! The Synapse admin API and federation.

use super::{assert_bare, check, owned};
use crate::endpoint::{Class::*, MediaRef};

fn media(server: &str, media_id: &str) -> Option<MediaRef> {
    Some(MediaRef {
        server: server.to_owned(),
        media_id: media_id.to_owned(),
    })
}

#[test]
fn admin_user_listing() {
    let e = check(
        "GET",
        "/_synapse/admin/v2/users?from=0&limit=10",
        "admin.users",
        Admin,
    );
    assert_bare(&e);
    check(
        "GET",
        "/_synapse/admin/v3/users?from=100&limit=100&guests=false",
        "admin.users",
        Admin,
    );
}

#[test]
fn admin_user_query_and_create() {
    let e = check(
        "GET",
        "/_synapse/admin/v2/users/%40alice%3Aexample.org",
        "admin.users",
        Admin,
    );
    assert_eq!(e.user_id, owned("@alice:example.org"));
    let e = check(
        "PUT",
        "/_synapse/admin/v2/users/@misere:example.org",
        "admin.users",
        Admin,
    );
    assert_eq!(e.user_id, owned("@misere:example.org"));
}

#[test]
fn admin_user_sub_resources() {
    for target in [
        "/_synapse/admin/v2/users/%40a%3Ab/devices",
        "/_synapse/admin/v1/users/%40a%3Ab/joined_rooms",
        "/_synapse/admin/v1/users/%40a%3Ab/media?limit=100",
        "/_synapse/admin/v1/user/%40a%3Ab/redact",
        "/_synapse/admin/v1/whois/%40a%3Ab",
        "/_synapse/admin/v1/deactivate/%40a%3Ab",
        "/_synapse/admin/v1/reset_password/%40a%3Ab",
        "/_synapse/admin/v1/suspend/%40a%3Ab",
    ] {
        let e = check("POST", target, "admin.users", Admin);
        assert_eq!(e.user_id, owned("@a:b"), "{target}");
    }
}

#[test]
fn admin_account_creation() {
    check(
        "GET",
        "/_synapse/admin/v1/register",
        "admin.register",
        Admin,
    );
    check(
        "POST",
        "/_synapse/admin/v1/register",
        "admin.register",
        Admin,
    );
    check(
        "GET",
        "/_synapse/admin/v1/username_available?username=x",
        "admin.register",
        Admin,
    );
    check(
        "GET",
        "/_synapse/admin/v1/registration_tokens",
        "admin.register",
        Admin,
    );
    check(
        "POST",
        "/_synapse/admin/v1/registration_tokens/new",
        "admin.register",
        Admin,
    );
}

#[test]
fn admin_rooms() {
    assert_bare(&check(
        "GET",
        "/_synapse/admin/v1/rooms?from=0&limit=100&order_by=size",
        "admin.rooms",
        Admin,
    ));
    for tail in [
        "",
        "/members",
        "/state",
        "/messages?dir=b",
        "/context/%24e",
        "/block",
    ] {
        let target = format!("/_synapse/admin/v1/rooms/%21r%3Aex.org{tail}");
        let e = check("GET", &target, "admin.rooms", Admin);
        assert_eq!(e.room, owned("!r:ex.org"), "{target}");
    }
}

#[test]
fn admin_room_deletion_v2() {
    let e = check(
        "DELETE",
        "/_synapse/admin/v2/rooms/%21r%3Aex.org",
        "admin.rooms",
        Admin,
    );
    assert_eq!(e.room, owned("!r:ex.org"));
    check(
        "GET",
        "/_synapse/admin/v2/rooms/!r:ex.org/delete_status",
        "admin.rooms",
        Admin,
    );
    assert_bare(&check(
        "GET",
        "/_synapse/admin/v2/rooms/delete_status/abc",
        "admin.rooms",
        Admin,
    ));
}

#[test]
fn admin_join_purge_and_fetch_event() {
    let e = check(
        "POST",
        "/_synapse/admin/v1/join/%23public%3Aex.org",
        "admin.rooms",
        Admin,
    );
    assert_eq!(e.room, owned("#public:ex.org"));
    let e = check(
        "POST",
        "/_synapse/admin/v1/purge_history/!r:ex.org/$ev",
        "admin.rooms",
        Admin,
    );
    assert_eq!((e.room, e.event_id), (owned("!r:ex.org"), owned("$ev")));
    check(
        "POST",
        "/_synapse/admin/v1/purge_history/!r:ex.org",
        "admin.rooms",
        Admin,
    );
    let e = check(
        "GET",
        "/_synapse/admin/v1/fetch_event/%24ev",
        "admin.rooms",
        Admin,
    );
    assert_eq!(e.event_id, owned("$ev"));
}

#[test]
fn admin_media() {
    let e = check(
        "GET",
        "/_synapse/admin/v1/media/example.org/abc",
        "admin.media",
        Admin,
    );
    assert_eq!(e.media, media("example.org", "abc"));
    let e = check(
        "POST",
        "/_synapse/admin/v1/media/quarantine/example.org/abc",
        "admin.media",
        Admin,
    );
    assert_eq!(e.media, media("example.org", "abc"));
    assert_bare(&check(
        "POST",
        "/_synapse/admin/v1/media/protect/abc",
        "admin.media",
        Admin,
    ));
    assert_bare(&check(
        "POST",
        "/_synapse/admin/v1/media/example.org/delete?before_ts=1",
        "admin.media",
        Admin,
    ));
    assert_bare(&check(
        "POST",
        "/_synapse/admin/v1/media/delete?before_ts=1",
        "admin.media",
        Admin,
    ));
    let e = check(
        "GET",
        "/_synapse/admin/v1/room/%21r%3Aex.org/media",
        "admin.media",
        Admin,
    );
    assert_eq!(e.room, owned("!r:ex.org"));
    check(
        "POST",
        "/_synapse/admin/v1/quarantine_media/!r:ex.org",
        "admin.media",
        Admin,
    );
}

#[test]
fn admin_other_and_probes() {
    for target in [
        "/_synapse/admin/v1/server_version",
        "/_synapse/admin/v1/statistics/users/media",
        "/_synapse/admin/v2/users/",
        "/_synapse/admin/",
        "/_synapse/admin",
        "/_synapse/admin/v1/users/%40a%3Ab",
    ] {
        assert_bare(&check("GET", target, "admin.other", Admin));
    }
}

#[test]
fn federation_and_keys() {
    check(
        "PUT",
        "/_matrix/federation/v1/send/1700000000000",
        "federation",
        Federation,
    );
    check(
        "GET",
        "/_matrix/federation/v1/media/download/abc",
        "federation",
        Federation,
    );
    check(
        "GET",
        "/_matrix/key/v2/server",
        "federation.key",
        Federation,
    );
    check(
        "POST",
        "/_matrix/key/v2/query",
        "federation.key",
        Federation,
    );
}
