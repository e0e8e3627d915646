//! Room history, members, state, sending, joining and discovery.

use super::{assert_bare, check, owned};
use crate::endpoint::Class::*;

const ROOM: &str = "%21OGEhHVWSdvArJzumhm%3Amatrix.org";
const ROOM_ID: &str = "!OGEhHVWSdvArJzumhm:matrix.org";

#[test]
fn messages_as_element_sends_them() {
    let e = check(
        "GET",
        "/_matrix/client/v3/rooms/%21OGEhHVWSdvArJzumhm%3Amatrix.org/messages?dir=b&from=t47-1234_0_0&limit=100&filter=%7B%22lazy_load_members%22%3Atrue%7D",
        "client.messages",
        RoomHistory,
    );
    assert_eq!(e.room, owned(ROOM_ID));
    assert_eq!((e.since, e.full_state, &e.event_id), (None, None, &None));
}

#[test]
fn messages_with_raw_room_id_and_every_version() {
    for version in ["api/v1", "r0", "v3", "unstable"] {
        let target = format!("/_matrix/client/{version}/rooms/!abc:example.org/messages?dir=b");
        let e = check("GET", &target, "client.messages", RoomHistory);
        assert_eq!(e.room, owned("!abc:example.org"), "{target}");
    }
    check(
        "GET",
        "/_matrix/client/v1/rooms/!a:b/messages",
        "client.other",
        OtherClient,
    );
}

#[test]
fn messages_head_counts_as_get_and_post_does_not() {
    check(
        "HEAD",
        &format!("/_matrix/client/v3/rooms/{ROOM}/messages"),
        "client.messages",
        RoomHistory,
    );
    let e = check(
        "POST",
        &format!("/_matrix/client/v3/rooms/{ROOM}/messages"),
        "client.other",
        OtherClient,
    );
    assert_bare(&e);
}

#[test]
fn context_with_event() {
    let e = check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{ROOM}/context/%24Fn1w3H1q-ab_cd?limit=10"),
        "client.context",
        RoomHistory,
    );
    assert_eq!(
        (e.room, e.event_id),
        (owned(ROOM_ID), owned("$Fn1w3H1q-ab_cd"))
    );
}

#[test]
fn single_event() {
    let e = check(
        "GET",
        "/_matrix/client/r0/rooms/!r:example.org/event/$143273582443PhrSn:example.org",
        "client.event",
        RoomHistory,
    );
    assert_eq!(e.event_id, owned("$143273582443PhrSn:example.org"));
    assert_eq!(e.room, owned("!r:example.org"));
}

#[test]
fn legacy_single_event() {
    let e = check(
        "GET",
        "/_matrix/client/r0/events/%24abc",
        "client.event",
        RoomHistory,
    );
    assert_eq!((e.event_id, e.room), (owned("$abc"), None));
}

#[test]
fn room_initial_sync() {
    let e = check(
        "GET",
        &format!("/_matrix/client/api/v1/rooms/{ROOM}/initialSync?limit=50"),
        "client.room_initial_sync",
        RoomHistory,
    );
    assert_eq!(e.room, owned(ROOM_ID));
}

#[test]
fn relations_in_all_three_shapes() {
    for tail in ["", "/m.thread", "/m.annotation/m.reaction"] {
        let target = format!("/_matrix/client/v1/rooms/{ROOM}/relations/%24root{tail}?limit=20");
        let e = check("GET", &target, "client.relations", RoomHistory);
        assert_eq!(
            (e.room, e.event_id),
            (owned(ROOM_ID), owned("$root")),
            "{target}"
        );
    }
    check(
        "GET",
        "/_matrix/client/v3/rooms/!a:b/relations/$e",
        "client.other",
        OtherClient,
    );
}

#[test]
fn threads_and_search() {
    let e = check(
        "GET",
        &format!("/_matrix/client/v1/rooms/{ROOM}/threads?include=all"),
        "client.threads",
        RoomHistory,
    );
    assert_eq!(e.room, owned(ROOM_ID));
    check(
        "POST",
        "/_matrix/client/v3/search?next_batch=x",
        "client.search",
        RoomHistory,
    );
}

#[test]
fn members_and_joined_members() {
    let e = check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{ROOM}/members?at=s1&membership=join"),
        "client.members",
        RoomMembers,
    );
    assert_eq!(e.room, owned(ROOM_ID));
    let e = check(
        "GET",
        &format!("/_matrix/client/r0/rooms/{ROOM}/joined_members"),
        "client.joined_members",
        RoomMembers,
    );
    assert_eq!(e.room, owned(ROOM_ID));
}

#[test]
fn whole_state() {
    let e = check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{ROOM}/state"),
        "client.state",
        RoomState,
    );
    assert_eq!(e.room, owned(ROOM_ID));
}

#[test]
fn state_event_with_empty_key_as_matrix_js_sdk_sends_it() {
    let e = check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{ROOM}/state/m.room.encryption/"),
        "client.state",
        RoomState,
    );
    assert_eq!(e.room, owned(ROOM_ID));
    check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{ROOM}/state/m.room.name"),
        "client.state",
        RoomState,
    );
}

#[test]
fn state_event_with_key() {
    let e = check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{ROOM}/state/m.room.member/%40alice%3Aexample.org"),
        "client.state",
        RoomState,
    );
    assert_eq!((e.room, e.user_id), (owned(ROOM_ID), None));
}

#[test]
fn state_put_is_send() {
    for tail in ["m.room.topic/", "m.room.topic", "m.room.member/%40a%3Ab"] {
        let target = format!("/_matrix/client/v3/rooms/{ROOM}/state/{tail}");
        let e = check("PUT", &target, "client.send_state", Send);
        assert_eq!(e.room, owned(ROOM_ID), "{target}");
    }
}

#[test]
fn send_with_transaction() {
    let e = check(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{ROOM}/send/m.room.message/m1700000000000.12"),
        "client.send",
        Send,
    );
    assert_eq!(e.room, owned(ROOM_ID));
    check(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{ROOM}/send/m.room.message/"),
        "client.send",
        Send,
    );
}

#[test]
fn send_without_transaction_and_wrong_method() {
    check(
        "POST",
        "/_matrix/client/r0/rooms/!r:ex.org/send/m.room.message",
        "client.send",
        Send,
    );
    check(
        "GET",
        "/_matrix/client/r0/rooms/!r:ex.org/send/m.room.message/t1",
        "client.other",
        OtherClient,
    );
}

#[test]
fn join_by_alias() {
    let e = check(
        "POST",
        "/_matrix/client/v3/join/%23synapse%3Amatrix.org",
        "client.join",
        Join,
    );
    assert_eq!(e.room, owned("#synapse:matrix.org"));
}

#[test]
fn join_by_id_with_via() {
    let e = check(
        "POST",
        &format!("/_matrix/client/v3/join/{ROOM}?server_name=matrix.org&via=matrix.org"),
        "client.join",
        Join,
    );
    assert_eq!(e.room, owned(ROOM_ID));
}

#[test]
fn join_put_with_and_without_transaction() {
    for tail in ["/txn1", "/"] {
        let e = check(
            "PUT",
            &format!("/_matrix/client/r0/join/{ROOM}{tail}"),
            "client.join",
            Join,
        );
        assert_eq!(e.room, owned(ROOM_ID));
    }
}

#[test]
fn rooms_join() {
    let e = check(
        "POST",
        &format!("/_matrix/client/v3/rooms/{ROOM}/join"),
        "client.join",
        Join,
    );
    assert_eq!(e.room, owned(ROOM_ID));
    check(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{ROOM}/join/t2"),
        "client.join",
        Join,
    );
    check(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{ROOM}/join/"),
        "client.join",
        Join,
    );
}

#[test]
fn rooms_join_with_get_is_not_a_join() {
    assert_bare(&check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{ROOM}/join"),
        "client.other",
        OtherClient,
    ));
}

#[test]
fn knock_and_leave() {
    let e = check(
        "POST",
        "/_matrix/client/v3/knock/%23private%3Aex.org",
        "client.knock",
        Join,
    );
    assert_eq!(e.room, owned("#private:ex.org"));
    let e = check(
        "POST",
        &format!("/_matrix/client/v3/rooms/{ROOM}/leave"),
        "client.leave",
        OtherClient,
    );
    assert_eq!(e.room, owned(ROOM_ID));
    check(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{ROOM}/leave/t3"),
        "client.leave",
        OtherClient,
    );
}

#[test]
fn public_rooms_get_and_post() {
    let e = check(
        "GET",
        "/_matrix/client/v3/publicRooms?limit=20&since=T1-20-0&server=matrix.org",
        "client.public_rooms",
        RoomDirectory,
    );
    assert_bare(&e);
    check(
        "POST",
        "/_matrix/client/r0/publicRooms?server=matrix.org",
        "client.public_rooms",
        RoomDirectory,
    );
    check(
        "PUT",
        "/_matrix/client/r0/publicRooms",
        "client.other",
        OtherClient,
    );
}

#[test]
fn alias_resolution_and_edit() {
    let e = check(
        "GET",
        "/_matrix/client/v3/directory/room/%23room%3Aexample.org",
        "client.directory_room",
        RoomDirectory,
    );
    assert_eq!(e.room, owned("#room:example.org"));
    check(
        "PUT",
        "/_matrix/client/v3/directory/room/%23room%3Aexample.org",
        "client.directory_room_edit",
        OtherClient,
    );
    check(
        "DELETE",
        "/_matrix/client/v3/directory/room/%23room%3Aexample.org",
        "client.directory_room_edit",
        OtherClient,
    );
}

#[test]
fn hierarchy_and_room_summary() {
    let e = check(
        "GET",
        &format!("/_matrix/client/v1/rooms/{ROOM}/hierarchy?limit=50"),
        "client.hierarchy",
        RoomDirectory,
    );
    assert_eq!(e.room, owned(ROOM_ID));
    check(
        "GET",
        &format!("/_matrix/client/v3/rooms/{ROOM}/hierarchy"),
        "client.other",
        OtherClient,
    );
    let e = check(
        "GET",
        "/_matrix/client/v1/room_summary/%23a%3Ab",
        "client.room_summary",
        RoomDirectory,
    );
    assert_eq!(e.room, owned("#a:b"));
}

#[test]
fn unnamed_room_endpoints_carry_no_room() {
    for (method, tail) in [
        ("PUT", "typing/%40u%3Ab"),
        ("POST", "invite"),
        ("POST", "receipt/m.read/%24e"),
        ("POST", "forget"),
    ] {
        let e = check(
            method,
            &format!("/_matrix/client/v3/rooms/{ROOM}/{tail}"),
            "client.other",
            OtherClient,
        );
        assert_bare(&e);
    }
}
