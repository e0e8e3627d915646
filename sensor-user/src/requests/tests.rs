//! Unprivileged tests of head reassembly and what a request's record keeps.

use super::*;
use crate::{client_ip::AddressSource, identity::FingerprintKey};

const TOKEN: &str = "syt_YWxpY2U_AbCdEfGhIjKlMnOpQrSt_1UdevA";

fn attribution() -> Attribution {
    Attribution {
        trusted: TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]),
        key: FingerprintKey::from_bytes([7; 32]),
        server_name: Some("example.org".into()),
    }
}

fn conn() -> ConnView {
    ConnView {
        pid: Some(42),
        local: Some("127.0.0.1:8008".parse().unwrap()),
        peer: Some("10.1.2.3:50000".parse().unwrap()),
    }
}

/// A chunk of `head` from `offset`, with the connection's counters at that point.
fn chunk(cookie: u64, head: &str, offset: usize, len: usize, counters: (u64, u64)) -> HeadChunk {
    let data = head.as_bytes()[offset..offset + len].to_vec();
    HeadChunk {
        cookie,
        ts_ns: 1_000 + offset as u64,
        first: offset == 0,
        end: offset + len == head.len() && head.ends_with("\r\n\r\n"),
        cut: false,
        bytes_in: counters.0,
        bytes_out: counters.1,
        offset: offset as u32,
        heads_lost: 0,
        data,
    }
}

#[test]
fn packed_strings_keep_each_part_absent_empty_or_present() {
    let packed = PackedStrs::new([Some("GET"), None, Some(""), Some("/a/b"), None]);
    assert_eq!(packed.get(0), Some("GET"));
    assert_eq!(packed.get(1), None);
    assert_eq!(packed.get(2), Some(""));
    assert_eq!(packed.get(3), Some("/a/b"));
    assert_eq!(packed.get(4), None);
    assert_eq!(packed.get(5), None, "out of range");
    assert_eq!(&*packed.text, "GET/a/b", "one allocation holds every part");
    let none = PackedStrs::new([None::<&str>; 3]);
    assert_eq!((none.get(0), none.get(2)), (None, None));
    let first_absent = PackedStrs::new([None, Some("x")]);
    assert_eq!(first_absent.get(1), Some("x"));
}

#[test]
fn a_keep_alive_request_is_recorded_with_all_it_derived_when_the_next_head_starts() {
    let a = attribution();
    let clock = KernelClock::new();
    let mut requests = Requests::default();
    let head = format!(
        "GET /_matrix/client/v3/rooms/%21abc%3Aexample.org/messages?dir=b&access_token={TOKEN} HTTP/1.1\r\n\
         Host: matrix.example.org\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
    );
    // The head in two chunks; the connection had carried 100 bytes in and 50 out before.
    let split = 40;
    assert!(
        requests
            .on_chunk(chunk(9, &head, 0, split, (100, 50)), conn(), &a, &clock)
            .is_none()
    );
    assert!(
        requests.in_progress(9).is_none(),
        "not parsed before its end"
    );
    let rest = head.len() - split;
    assert!(
        requests
            .on_chunk(
                chunk(9, &head, split, rest, (100 + split as u64, 50)),
                conn(),
                &a,
                &clock
            )
            .is_none()
    );
    let now = requests.in_progress(9).expect("parsed at its end");
    assert_eq!(now.endpoint, "client.messages");
    assert_eq!(now.user.as_deref(), Some("@alice:example.org"));
    assert_eq!(now.client_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(now.token, Some(a.key.fingerprint(TOKEN.as_bytes())));
    assert!(
        now.path.ends_with("access_token=<redacted>"),
        "{}",
        now.path
    );
    assert_eq!(now.since_ns, 1_000);

    // The next head on the same connection ends the first request's exchange.
    let next = "GET /_matrix/media/v3/download/media.example.org/AbCdEf HTTP/1.1\r\n\r\n";
    let record = requests
        .on_chunk(
            chunk(9, next, 0, next.len(), (1_100, 90_050)),
            conn(),
            &a,
            &clock,
        )
        .expect("the first request's record");
    assert_eq!(record.method.as_deref(), Some("GET"));
    assert_eq!(
        record.path.as_deref(),
        Some(
            "/_matrix/client/v3/rooms/%21abc%3Aexample.org/messages?dir=b&access_token=<redacted>"
        )
    );
    assert_eq!(record.endpoint, "client.messages");
    assert_eq!(record.class, Some(Class::RoomHistory));
    assert_eq!(record.room.as_deref(), Some("!abc:example.org"));
    assert_eq!(
        (record.event_id.as_deref(), record.target_user.as_deref()),
        (None, None)
    );
    assert_eq!(
        (record.media_server.as_deref(), record.media_id.as_deref()),
        (None, None)
    );
    assert_eq!(record.user.as_deref(), Some("@alice:example.org"));
    assert_eq!(record.token, Some(a.key.fingerprint(TOKEN.as_bytes())));
    assert_eq!(record.token_source, Some(TokenSource::Query));
    assert_eq!(record.client_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(record.client_ip_source, Some(AddressSource::XForwardedFor));
    assert!(!record.forwarding_ignored);
    assert_eq!((record.bytes_in, record.bytes_out), (1_000, 90_000));
    assert_eq!((record.head, record.complete), ("parsed", true));
    assert_eq!(record.pid, Some(42));
    assert_eq!(record.peer.as_deref(), Some("10.1.2.3:50000"));

    // The close ends the second one, a media download without a token.
    let record = requests
        .on_close(9, (1_200, 1_000_000), conn(), &a, &clock)
        .expect("the second request's record");
    assert_eq!(record.endpoint, "media.download");
    assert_eq!(record.media_server.as_deref(), Some("media.example.org"));
    assert_eq!(record.media_id.as_deref(), Some("AbCdEf"));
    assert_eq!((record.token, record.user), (None, None));
    assert_eq!(record.client_ip_source, Some(AddressSource::Peer));
    assert_eq!((record.bytes_in, record.bytes_out), (100, 909_950));
    assert_eq!(requests.outcomes.get("parsed"), Some(&2));
    assert!(
        requests.on_close(9, (0, 0), conn(), &a, &clock).is_none(),
        "nothing left"
    );
}

/// `head` sent whole in one chunk (nothing finished by it), then the connection closed
/// with its bytes in: the request's record.
fn sent_whole_then_closed(requests: &mut Requests, cookie: u64, head: &str) -> RequestRecord {
    let (a, clock) = (attribution(), KernelClock::new());
    let whole = chunk(cookie, head, 0, head.len(), (0, 0));
    assert!(requests.on_chunk(whole, conn(), &a, &clock).is_none());
    let counts = (head.len() as u64, 0);
    let record = requests.on_close(cookie, counts, conn(), &a, &clock);
    record.expect("record")
}

#[test]
fn heads_that_fail_or_never_end_are_recorded_with_why() {
    let a = attribution();
    let clock = KernelClock::new();
    let mut requests = Requests::default();
    let record = sent_whole_then_closed(&mut requests, 1, "NOT HTTP AT ALL\r\n\r\n");
    assert_eq!((record.head, record.endpoint), ("malformed", "unparsed"));
    assert_eq!(
        (record.method, record.path, record.class),
        (None, None, None)
    );

    // A head whose end never came: parsed at the close, as `incomplete`.
    let open = "GET /_matrix/client/v3/sync HTTP/1.1\r\nHost: x\r\n";
    let record = sent_whole_then_closed(&mut requests, 2, open);
    assert_eq!(record.head, "incomplete");
    assert_eq!(requests.outcomes.get("malformed"), Some(&1));
    assert_eq!(requests.outcomes.get("incomplete"), Some(&1));
    assert_eq!(requests.outcomes.get("parsed"), None);

    // A continuation whose first chunk was lost is counted as damaged.
    let lost = chunk(3, open, 10, 5, (0, 0));
    assert!(requests.on_chunk(lost, conn(), &a, &clock).is_none());
    assert_eq!(requests.damaged, 1);
}

#[test]
fn a_parsed_request_keeps_one_string_allocation() {
    // What 100,000 keep-alive connections each hold: the strings are packed, not one
    // allocation per field.
    let a = attribution();
    let head = format!(
        "GET /_matrix/client/v3/profile/%40bob%3Aexample.org HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let parsed = http::parse(head.as_bytes(), false).expect("parses");
    let kept = derive(&parsed, conn(), &a);
    assert_eq!(kept.get(Text::TargetUser), Some("@bob:example.org"));
    assert_eq!(kept.get(Text::User), Some("@alice:example.org"));
    assert_eq!(kept.get(Text::Method), Some("GET"));
    assert_eq!(kept.token.map(|(_, s)| s), Some(TokenSource::Header));
    assert_eq!(
        &*kept.text.text,
        "GET/_matrix/client/v3/profile/%40bob%3Aexample.org@bob:example.org@alice:example.org"
    );
}
