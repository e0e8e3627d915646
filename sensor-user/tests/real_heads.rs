//! Request heads captured from real clients (curl, wget, python-requests, a browser's header
//! set) through Debian's nginx with Synapse's documented reverse-proxy configuration, and
//! directly, by `tests/heads/capture.sh`. Each goes through the parser, the address rules,
//! the token fingerprint and user, and the endpoint table, as the agent does.
//!
//! Head sizes, the evidence for the 4 KiB capture budget: 239 to 768 bytes, the largest
//! with a browser's header set (nginx adds about 90 bytes of its own).

use std::net::IpAddr;

use homeserver_sensor::{
    client_ip::{AddressSource, TrustedProxies, client_address},
    endpoint::{self, Class},
    http,
    identity::{self, FingerprintKey, TokenSource},
};

struct Expect {
    file: &'static str,
    head: &'static [u8],
    /// The connection's peer: nginx (loopback) or a direct client.
    peer: &'static str,
    client: &'static str,
    source: AddressSource,
    ignored_forwarding: bool,
    token: Option<TokenSource>,
    endpoint: &'static str,
    class: Class,
}

macro_rules! head {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("heads/", $name, ".http")).as_slice(),
        )
    };
}

fn cases() -> Vec<Expect> {
    let e = |(file, head): (&'static str, &'static [u8]),
             peer,
             client,
             source,
             ignored_forwarding,
             token,
             endpoint,
             class| Expect {
        file,
        head,
        peer,
        client,
        source,
        ignored_forwarding,
        token,
        endpoint,
        class,
    };
    use AddressSource::*;
    vec![
        e(
            head!("nginx-curl-sync"),
            "127.0.0.1",
            "127.0.0.1",
            XForwardedFor,
            false,
            Some(TokenSource::Header),
            "client.sync",
            Class::Sync,
        ),
        e(
            head!("nginx-curl-messages-query-token"),
            "127.0.0.1",
            "127.0.0.1",
            XForwardedFor,
            false,
            Some(TokenSource::Query),
            "client.messages",
            Class::RoomHistory,
        ),
        e(
            head!("nginx-wget-media"),
            "127.0.0.1",
            "127.0.0.1",
            XForwardedFor,
            false,
            None,
            "media.download",
            Class::MediaDownload,
        ),
        e(
            head!("nginx-requests-directory"),
            "127.0.0.1",
            "127.0.0.1",
            XForwardedFor,
            false,
            Some(TokenSource::Header),
            "client.user_directory",
            Class::UserDirectory,
        ),
        e(
            head!("nginx-browser-members"),
            "127.0.0.1",
            "127.0.0.1",
            XForwardedFor,
            false,
            Some(TokenSource::Header),
            "client.members",
            Class::RoomMembers,
        ),
        // A direct client is not a trusted proxy: its X-Forwarded-For is not believed.
        e(
            head!("direct-curl-forged-xff"),
            "198.51.100.20",
            "198.51.100.20",
            Peer,
            true,
            Some(TokenSource::Header),
            "client.public_rooms",
            Class::RoomDirectory,
        ),
        e(
            head!("direct-requests-thumbnail"),
            "198.51.100.21",
            "198.51.100.21",
            Peer,
            false,
            Some(TokenSource::Header),
            "media.thumbnail",
            Class::MediaThumbnail,
        ),
    ]
}

#[test]
fn captured_heads_are_attributed() {
    let key = FingerprintKey::from_bytes([7; 32]);
    let trusted = TrustedProxies::default();
    let mut fingerprints = std::collections::BTreeSet::new();
    for c in cases() {
        assert!(c.head.len() < 4096, "{}: {} bytes", c.file, c.head.len());
        let h = http::parse(c.head, false).unwrap_or_else(|e| panic!("{}: {e:?}", c.file));
        let peer: IpAddr = c.peer.parse().unwrap();
        let client = client_address(peer, &h.headers, &trusted);
        assert_eq!(client.ip.to_string(), c.client, "{}", c.file);
        assert_eq!(client.source, c.source, "{}", c.file);
        assert_eq!(
            client.ignored_forwarding, c.ignored_forwarding,
            "{}",
            c.file
        );
        let query = h.target.split_once('?').map(|(_, q)| q);
        let token = identity::token(&h.headers, query);
        assert_eq!(token.as_ref().map(|t| t.source()), c.token, "{}", c.file);
        if let Some(t) = token {
            assert_eq!(
                identity::user_from_token(t.as_bytes(), Some("example.org")).as_deref(),
                Some("@alice:example.org"),
                "{}",
                c.file
            );
            fingerprints.insert(key.fingerprint(t.as_bytes()));
        }
        let ep = endpoint::classify(h.method, h.target);
        assert_eq!(ep.name, c.endpoint, "{}", c.file);
        assert_eq!(ep.class, c.class, "{}", c.file);
        // What is written of the target never carries the token.
        assert!(
            !identity::redact_target(h.target).contains("syt_"),
            "{}",
            c.file
        );
    }
    // Every head used the same token: one fingerprint.
    assert_eq!(fingerprints.len(), 1);
}

#[test]
fn captured_heads_carry_their_identifiers() {
    let head = include_bytes!("heads/nginx-curl-messages-query-token.http");
    let h = http::parse(head, false).unwrap();
    let ep = endpoint::classify(h.method, h.target);
    assert_eq!(ep.room.as_deref(), Some("!OGEhHVWSdvArJzumhm:example.org"));
    let head = include_bytes!("heads/nginx-wget-media.http");
    let h = http::parse(head, false).unwrap();
    let ep = endpoint::classify(h.method, h.target);
    let media = ep.media.expect("media");
    assert_eq!(
        (media.server.as_str(), media.media_id.as_str()),
        ("example.org", "AbCdEf123")
    );
    let head = include_bytes!("heads/nginx-curl-sync.http");
    let h = http::parse(head, false).unwrap();
    let ep = endpoint::classify(h.method, h.target);
    assert_eq!(ep.since, Some(true));
}

#[test]
fn every_prefix_of_every_captured_head_has_an_outcome() {
    for c in cases() {
        for end in 0..c.head.len() {
            match http::parse(&c.head[..end], false) {
                Err(http::HeadError::Incomplete) => {}
                other => panic!("{} cut at {end}: {other:?}", c.file),
            }
        }
    }
}
