//! Sync, users, sessions, keys: client-API rows that are not about one room.

use super::{assert_bare, check, owned};
use crate::endpoint::Class::*;

#[test]
fn sync_incremental_r0() {
    let e = check(
        "GET",
        "/_matrix/client/r0/sync?filter=0&timeout=30000&since=s72594_4483_1934",
        "client.sync",
        Sync,
    );
    assert_eq!((e.since, e.full_state), (Some(true), Some(false)));
    assert_eq!((&e.room, e.authenticated_media), (&None, false));
}

#[test]
fn sync_full_state_without_since() {
    let e = check(
        "GET",
        "/_matrix/client/v3/sync?full_state=true",
        "client.sync",
        Sync,
    );
    assert_eq!((e.since, e.full_state), (Some(false), Some(true)));
}

#[test]
fn sync_without_query_is_an_initial_sync() {
    let e = check("GET", "/_matrix/client/v3/sync", "client.sync", Sync);
    assert_eq!((e.since, e.full_state), (Some(false), Some(false)));
}

#[test]
fn sync_full_state_needs_exactly_true() {
    for value in ["false", "True", "1", "", "tr%75e+"] {
        let target = format!("/_matrix/client/v3/sync?full_state={value}&since=s1");
        let e = check("GET", &target, "client.sync", Sync);
        assert_eq!(e.full_state, Some(false), "{target}");
    }
    let e = check(
        "GET",
        "/_matrix/client/v3/sync?full_state=tr%75e",
        "client.sync",
        Sync,
    );
    assert_eq!(e.full_state, Some(true));
}

#[test]
fn sync_query_is_split_on_semicolons_like_twisted() {
    let e = check(
        "GET",
        "/_matrix/client/v3/sync?filter=0;full_state=true;since=s9",
        "client.sync",
        Sync,
    );
    assert_eq!((e.since, e.full_state), (Some(true), Some(true)));
}

#[test]
fn sync_keys_are_form_decoded() {
    let e = check(
        "GET",
        "/_matrix/client/v3/sync?full%5Fstate=true&%73ince=",
        "client.sync",
        Sync,
    );
    assert_eq!((e.since, e.full_state), (Some(true), Some(true)));
}

#[test]
fn sync_first_value_wins() {
    let e = check(
        "GET",
        "/_matrix/client/v3/sync?full_state=false&full_state=true",
        "client.sync",
        Sync,
    );
    assert_eq!(e.full_state, Some(false));
}

#[test]
fn sync_items_without_equals_are_ignored() {
    let e = check(
        "GET",
        "/_matrix/client/v3/sync?since&full_state",
        "client.sync",
        Sync,
    );
    assert_eq!((e.since, e.full_state), (Some(false), Some(false)));
}

#[test]
fn sync_unstable_prefix() {
    let e = check(
        "GET",
        "/_matrix/client/unstable/sync?since=s1",
        "client.sync",
        Sync,
    );
    assert_eq!(e.since, Some(true));
}

#[test]
fn sync_versions_synapse_does_not_serve() {
    for target in ["/_matrix/client/api/v1/sync", "/_matrix/client/v1/sync"] {
        assert_bare(&check("GET", target, "client.other", OtherClient));
    }
}

#[test]
fn sync_with_wrong_method_is_other() {
    assert_bare(&check(
        "POST",
        "/_matrix/client/v3/sync",
        "client.other",
        OtherClient,
    ));
}

#[test]
fn sliding_sync_synapse() {
    let e = check(
        "POST",
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=1234&timeout=30000",
        "client.sliding_sync",
        Sync,
    );
    assert_eq!((e.since, e.full_state), (Some(true), None));
}

#[test]
fn sliding_sync_proxy_path() {
    let e = check(
        "POST",
        "/_matrix/client/unstable/org.matrix.msc3575/sync?timeout=0",
        "client.sliding_sync",
        Sync,
    );
    assert_eq!((e.since, e.full_state), (Some(false), None));
}

#[test]
fn legacy_initial_sync_is_a_snapshot() {
    let e = check(
        "GET",
        "/_matrix/client/api/v1/initialSync?limit=1",
        "client.initial_sync",
        Sync,
    );
    assert_eq!((e.since, e.full_state), (Some(false), None));
}

#[test]
fn legacy_event_stream() {
    let e = check(
        "GET",
        "/_matrix/client/r0/events?from=s1_2_3&timeout=30000",
        "client.events",
        Sync,
    );
    assert_eq!(e.since, None);
}

#[test]
fn user_directory_search() {
    let e = check(
        "POST",
        "/_matrix/client/v3/user_directory/search",
        "client.user_directory",
        UserDirectory,
    );
    assert_bare(&e);
    check(
        "GET",
        "/_matrix/client/r0/user_directory/search",
        "client.other",
        OtherClient,
    );
}

#[test]
fn profile_by_user_id() {
    let e = check(
        "GET",
        "/_matrix/client/v3/profile/%40alice%3Aexample.org",
        "client.profile",
        Profile,
    );
    assert_eq!(e.user_id, owned("@alice:example.org"));
}

#[test]
fn profile_fields() {
    for field in ["displayname", "avatar_url", "m.tz", "displayname/anything"] {
        let target = format!("/_matrix/client/r0/profile/@bob:example.org/{field}");
        let e = check("GET", &target, "client.profile", Profile);
        assert_eq!(e.user_id, owned("@bob:example.org"), "{target}");
    }
}

#[test]
fn profile_unanchored_tails_synapse_serves() {
    for target in [
        "/_matrix/client/v3/profile/%40bob%3Aexample.org/",
        "/_matrix/client/v3/profile/%40bob%3Aexample.org//",
    ] {
        let e = check("GET", target, "client.profile", Profile);
        assert_eq!(e.user_id, owned("@bob:example.org"), "{target}");
    }
}

#[test]
fn profile_edit_is_account() {
    let e = check(
        "PUT",
        "/_matrix/client/v3/profile/%40me%3Aexample.org/displayname",
        "client.profile_edit",
        Account,
    );
    assert_eq!(e.user_id, owned("@me:example.org"));
}

#[test]
fn client_api_whois_is_admin() {
    let e = check(
        "GET",
        "/_matrix/client/v3/admin/whois/%40eve%3Aexample.org",
        "admin.users",
        Admin,
    );
    assert_eq!(e.user_id, owned("@eve:example.org"));
}

#[test]
fn login_flows_and_login() {
    check("GET", "/_matrix/client/v3/login", "client.login", Login);
    check("POST", "/_matrix/client/r0/login", "client.login", Login);
    check(
        "POST",
        "/_matrix/client/api/v1/login",
        "client.login",
        Login,
    );
}

#[test]
fn login_sub_paths() {
    check(
        "GET",
        "/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fapp.element.io",
        "client.login",
        Login,
    );
    check(
        "POST",
        "/_matrix/client/v1/login/get_token",
        "client.login",
        Login,
    );
}

#[test]
fn logout_and_refresh() {
    check("POST", "/_matrix/client/v3/logout", "client.logout", Login);
    check(
        "POST",
        "/_matrix/client/v3/logout/all",
        "client.logout",
        Login,
    );
    check(
        "POST",
        "/_matrix/client/v3/refresh",
        "client.refresh",
        Login,
    );
    check(
        "GET",
        "/_matrix/client/v3/logout",
        "client.other",
        OtherClient,
    );
}

#[test]
fn register() {
    check(
        "POST",
        "/_matrix/client/v3/register?kind=user",
        "client.register",
        Account,
    );
    check(
        "GET",
        "/_matrix/client/v3/register/available?username=misere",
        "client.register",
        Account,
    );
    check(
        "GET",
        "/_matrix/client/v1/register/m.login.registration_token/validity?token=x",
        "client.register",
        Account,
    );
}

#[test]
fn whoami_and_account() {
    let e = check(
        "GET",
        "/_matrix/client/v3/account/whoami",
        "client.whoami",
        Account,
    );
    assert_bare(&e);
    check(
        "POST",
        "/_matrix/client/r0/account/password",
        "client.account",
        Account,
    );
    check(
        "GET",
        "/_matrix/client/v3/account/3pid",
        "client.account",
        Account,
    );
}

#[test]
fn keys() {
    for (method, tail) in [
        ("POST", "keys/upload"),
        ("POST", "keys/query"),
        ("POST", "keys/claim"),
        ("GET", "keys/changes?from=s1&to=s2"),
        ("POST", "keys/device_signing/upload"),
        ("POST", "keys/signatures/upload"),
    ] {
        check(
            method,
            &format!("/_matrix/client/v3/{tail}"),
            "client.keys",
            Keys,
        );
    }
}

#[test]
fn room_keys_backup() {
    check(
        "GET",
        "/_matrix/client/v3/room_keys/version",
        "client.room_keys",
        Keys,
    );
    check(
        "PUT",
        "/_matrix/client/v3/room_keys/keys?version=1",
        "client.room_keys",
        Keys,
    );
}

#[test]
fn unnamed_client_endpoints_are_other() {
    for (method, target) in [
        ("GET", "/_matrix/client/versions"),
        ("GET", "/_matrix/client/v3/capabilities"),
        ("GET", "/_matrix/client/v3/joined_rooms"),
        ("POST", "/_matrix/client/v3/createRoom"),
        ("GET", "/_matrix/client/v3/pushrules/"),
        (
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.room_key_request/42",
        ),
        ("GET", "/_matrix/client/v3/voip/turnServer"),
        ("GET", "/_matrix/client"),
    ] {
        assert_bare(&check(method, target, "client.other", OtherClient));
    }
}

#[test]
fn synapse_client_resources() {
    check(
        "GET",
        "/_synapse/client/pick_idp?idp=oidc",
        "synapse.client",
        OtherClient,
    );
    check(
        "GET",
        "/_synapse/client/oidc/callback?code=x",
        "synapse.client",
        OtherClient,
    );
}
