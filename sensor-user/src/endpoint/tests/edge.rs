//! The table as a whole, odd targets, robustness and the serialised shape.

use super::{assert_bare, check, owned};
use crate::endpoint::table::{self, ANY, DELETE, GET, POST, PUT};
use crate::endpoint::{Class, Class::*, Endpoint, check_table, classify, routes_of};

/// A concrete target for a route: `{room}` and friends get encoded sample IDs.
fn fill(route: &str) -> String {
    let mut out = String::new();
    let mut rest = route;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("unclosed parameter");
        out.push_str(match &rest[open + 1..close] {
            "room" => "%21r%3Aexample.org",
            "event_id" => "%24ev",
            "user_id" => "%40u%3Aexample.org",
            "server" => "example.org",
            "media_id" => "m1",
            name if name.starts_with('*') => "x/y",
            _ => "x",
        });
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn table_builds() {
    check_table().expect("the endpoint table must build");
}

#[test]
fn every_row_is_reachable_with_each_of_its_methods() {
    for (index, row) in table::ROWS.iter().enumerate() {
        let methods: &[(u8, &str)] = if row.methods == ANY {
            &[(ANY, "PATCH")]
        } else {
            &[
                (GET, "GET"),
                (PUT, "PUT"),
                (POST, "POST"),
                (DELETE, "DELETE"),
            ]
        };
        let routes = routes_of(row);
        assert!(!routes.is_empty(), "row {index} has no version");
        for route in routes {
            let target = format!("{}?access_token=secret", fill(&route));
            for &(bit, method) in methods.iter().filter(|(bit, _)| row.methods & bit != 0) {
                let e = classify(method, &target);
                assert_eq!(
                    (e.name, e.class),
                    (row.name, row.class),
                    "row {index}: {method} {target} ({bit})"
                );
                if route.contains("{room}") {
                    assert_eq!(e.room, owned("!r:example.org"), "row {index}: {target}");
                }
                if route.contains("{event_id}") {
                    assert_eq!(e.event_id, owned("$ev"), "row {index}: {target}");
                }
                if route.contains("{user_id}") {
                    assert_eq!(e.user_id, owned("@u:example.org"), "row {index}: {target}");
                }
                assert_eq!(
                    e.media.is_some(),
                    route.contains("{media_id}") && route.contains("{server}"),
                    "row {index}"
                );
            }
        }
    }
}

#[test]
fn names_are_namespaced_by_family() {
    for row in table::ROWS {
        let family = match row.api {
            table::Api::Client(_) => ["client.", "admin."],
            table::Api::ClientMedia(_) | table::Api::Media(_) => ["media.", "media."],
            table::Api::Root => ["admin.", "admin."],
        };
        assert!(family.iter().any(|f| row.name.starts_with(f)), "{row:?}");
        assert_ne!(row.class, Unknown, "{row:?}");
    }
}

#[test]
fn targets_that_are_not_origin_form_are_unknown() {
    for target in [
        "",
        "*",
        "http://matrix.example.org/_matrix/client/v3/sync",
        "_matrix/client/v3/sync",
        "?/_matrix/client/v3/sync",
    ] {
        assert_bare(&check("GET", target, "unknown", Unknown));
    }
    check("OPTIONS", "*", "unknown", Unknown);
}

#[test]
fn paths_outside_the_apis_are_unknown() {
    for target in [
        "/",
        "/health",
        "/_matrix/static/",
        "/.well-known/matrix/client",
        "/_matrix",
        "/_matrixx/client/v3/sync",
        "/_matrix/clientx/v3/sync",
    ] {
        assert_bare(&check("GET", target, "unknown", Unknown));
    }
}

#[test]
fn percent_garbage_never_panics() {
    assert_bare(&check("GET", "/%ZZ/%", "unknown", Unknown));
    let e = check(
        "GET",
        "/_matrix/client/v3/rooms/%FF%FE/messages",
        "client.messages",
        RoomHistory,
    );
    assert_eq!(e.room, owned("\u{FFFD}\u{FFFD}"));
    let e = check(
        "GET",
        "/_matrix/client/v3/rooms/%ZZ%2/messages",
        "client.messages",
        RoomHistory,
    );
    assert_eq!(e.room, owned("%ZZ%2"));
    let e = check(
        "GET",
        "/_matrix/client/v3/rooms/%/messages?%=%&since=%",
        "client.messages",
        RoomHistory,
    );
    assert_eq!(e.room, owned("%"));
}

#[test]
fn encoded_slash_stays_inside_the_identifier() {
    let e = check(
        "GET",
        "/_matrix/client/v3/rooms/%21a%2Fb%3Aex.org/messages",
        "client.messages",
        RoomHistory,
    );
    assert_eq!(e.room, owned("!a/b:ex.org"));
}

#[test]
fn encoded_static_segments_do_not_match_as_in_synapse() {
    assert_bare(&check(
        "GET",
        "/_matrix/client/v3/rooms/!a:b/%6Dessages",
        "client.other",
        OtherClient,
    ));
    check("GET", "/_matrix/%63lient/v3/sync", "unknown", Unknown);
}

#[test]
fn slashes_synapse_rejects_keep_only_the_family() {
    for target in [
        "/_matrix/client/v3/sync/",
        "/_matrix/client/v3//sync",
        "/_matrix/client//v3/sync",
        "/_matrix/client/v3/rooms//messages",
    ] {
        assert_bare(&check("GET", target, "client.other", OtherClient));
    }
    for target in ["/_matrix//client/v3/sync", "//_matrix/client/v3/sync"] {
        check("GET", target, "unknown", Unknown);
    }
}

#[test]
fn query_never_affects_matching() {
    let e = check(
        "GET",
        "/_matrix/client/v3/sync?x=/rooms/!a:b/messages&since=1",
        "client.sync",
        Sync,
    );
    assert_eq!(e.since, Some(true));
    check(
        "GET",
        "/_synapse/admin/v2/users?/_matrix/client/v3/sync",
        "admin.users",
        Admin,
    );
    let e = check(
        "GET",
        "/_matrix/client/v3/sync??since=1",
        "client.sync",
        Sync,
    );
    assert_eq!(
        e.since,
        Some(false),
        "the key is `?since`, as Twisted reads it"
    );
}

#[test]
fn very_long_paths_are_classified_without_the_identifier() {
    let long = "a".repeat(10 * 1024);
    let e = check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{long}/messages"),
        "client.messages",
        RoomHistory,
    );
    assert_eq!(e.room, None);
    check(
        "GET",
        &format!("/_matrix/client/v3/{long}"),
        "client.other",
        OtherClient,
    );
    check("GET", &"/".repeat(10 * 1024), "unknown", Unknown);
    check(
        "GET",
        &"/_matrix/client/v3/keys/x".repeat(400),
        "client.keys",
        Keys,
    );
    let query = "since=x&".repeat(2000);
    assert_eq!(
        classify("GET", &format!("/_matrix/client/v3/sync?{query}")).since,
        Some(true)
    );
}

#[test]
fn identifier_length_limit_is_inclusive() {
    let fits = format!("!{}", "a".repeat(254));
    assert_eq!(
        classify("GET", &format!("/_matrix/client/v3/rooms/{fits}/members")).room,
        Some(fits)
    );
    let over = format!("!{}", "a".repeat(255));
    assert_eq!(
        classify("GET", &format!("/_matrix/client/v3/rooms/{over}/members")).room,
        None
    );
}

#[test]
fn non_ascii_paths_are_unknown() {
    check(
        "GET",
        "/_matrix/client/v3/rooms/!é:ex.org/messages",
        "unknown",
        Unknown,
    );
    check(
        "GET",
        "/_matrix/client/v3/sync?since=é",
        "client.sync",
        Sync,
    );
}

#[test]
fn braces_in_the_target_are_plain_characters() {
    let e = check(
        "GET",
        "/_matrix/client/v3/rooms/{room}/messages",
        "client.messages",
        RoomHistory,
    );
    assert_eq!(e.room, owned("{room}"));
    check(
        "GET",
        "/_matrix/client/v3/{{x}}/{*rest}",
        "client.other",
        OtherClient,
    );
}

#[test]
fn methods() {
    check(
        "HEAD",
        "/_matrix/media/v3/download/a/b",
        "media.download",
        MediaDownload,
    );
    check(
        "get",
        "/_matrix/media/v3/download/a/b",
        "media.other",
        OtherClient,
    );
    check(
        "PATCH",
        "/_matrix/client/v3/keys/query",
        "client.keys",
        Keys,
    );
    check(
        "PATCH",
        "/_matrix/client/v3/sync",
        "client.other",
        OtherClient,
    );
    check("", "/_matrix/client/v3/sync", "client.other", OtherClient);
}

#[test]
fn cors_preflight_is_counted_apart() {
    let e = check(
        "OPTIONS",
        "/_matrix/client/v3/rooms/!a:b/messages?dir=b",
        "cors.preflight",
        OtherClient,
    );
    assert_bare(&e);
    check(
        "OPTIONS",
        "/_synapse/admin/v2/users",
        "cors.preflight",
        OtherClient,
    );
    check("OPTIONS", "/health", "cors.preflight", OtherClient);
}

#[test]
fn access_token_never_reaches_the_output() {
    let e = classify(
        "GET",
        "/_matrix/client/v3/sync?access_token=syt_bWlzZXJl_secret_0&since=s1",
    );
    let json = serde_json::to_string(&e).expect("serialises");
    assert!(!json.contains("syt_") && !json.contains("secret"), "{json}");
}

#[test]
fn serialised_shape() {
    let e = classify("GET", "/_matrix/client/v1/media/download/ex.org/m1");
    let json = serde_json::to_value(&e).expect("serialises");
    assert_eq!(
        json,
        serde_json::json!({
            "name": "media.download", "class": "media_download", "room": null, "event_id": null,
            "user_id": null, "media": {"server": "ex.org", "media_id": "m1"},
            "full_state": null, "since": null, "authenticated_media": true
        })
    );
}

#[test]
fn class_names_match_serde() {
    for class in Class::ALL {
        let json = serde_json::to_value(class).expect("serialises");
        assert_eq!(json, serde_json::Value::from(class.as_str()));
    }
}

#[test]
fn endpoint_is_plain_data() {
    let a: Endpoint = classify("GET", "/_matrix/client/v3/sync");
    assert_eq!(a.clone(), a);
}

/// Deterministic pseudo-random targets built from the characters that matter; only checks
/// that nothing panics and that every answer has a name.
#[test]
fn no_panic_on_generated_targets() {
    const PIECES: [&str; 16] = [
        "/",
        "/_matrix",
        "/client",
        "/v3",
        "/rooms",
        "/%21a%3Ab",
        "%",
        "%F",
        "%FF",
        "?",
        "&",
        "=",
        "{",
        "*",
        "/media",
        "/_synapse/admin",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20_000 {
        let mut target = String::new();
        for _ in 0..(state % 12) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            target.push_str(PIECES[(state % 16) as usize]);
        }
        let e = classify(["GET", "PUT", "OPTIONS"][(state % 3) as usize], &target);
        assert!(!e.name.is_empty(), "{target}");
    }
}
