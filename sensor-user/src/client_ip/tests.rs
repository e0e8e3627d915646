use std::net::IpAddr;

use super::{AddressSource, ClientAddress, ClientIpError, TrustedProxies, client_address};
use AddressSource::{Forwarded as Fwd, Peer, XForwardedFor as Xff};

mod forwarded;

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("test address {s:?}: {e}"))
}

fn proxies(s: &str) -> TrustedProxies {
    s.parse()
        .unwrap_or_else(|e| panic!("test proxy list {s:?}: {e}"))
}

fn addr(ip_text: &str, source: AddressSource) -> ClientAddress {
    ClientAddress {
        ip: ip(ip_text),
        source,
        ignored_forwarding: false,
        malformed: false,
    }
}

fn malformed(ip_text: &str, source: AddressSource) -> ClientAddress {
    ClientAddress {
        malformed: true,
        ..addr(ip_text, source)
    }
}

/// `client_address` with headers given as text.
fn resolve(peer: &str, headers: &[(&str, &str)], trusted: &TrustedProxies) -> ClientAddress {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    client_address(ip(peer), &headers, trusted)
}

#[test]
fn default_trusts_loopback_only() {
    let t = TrustedProxies::default();
    for yes in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
        assert!(t.contains(ip(yes)), "{yes} should be trusted");
    }
    for no in [
        "10.0.0.1",
        "::2",
        "2001:db8::1",
        "128.0.0.1",
        "::ffff:10.0.0.1",
    ] {
        assert!(!t.contains(ip(no)), "{no} should not be trusted");
    }
}

#[test]
fn proxy_list_parsing() {
    let t = proxies("10.0.0.0/8, 192.168.1.7 fd00::/8,[2001:db8::5]");
    assert!(t.contains(ip("10.1.2.3")));
    assert!(t.contains(ip("192.168.1.7")));
    assert!(!t.contains(ip("192.168.1.8")), "a bare address is a /32");
    assert!(t.contains(ip("fd12::1")));
    assert!(t.contains(ip("2001:db8::5")));
    assert!(
        !t.contains(ip("2001:db8::6")),
        "a bare IPv6 address is a /128"
    );
    assert!(
        !t.contains(ip("127.0.0.1")),
        "an explicit list replaces the default"
    );
    assert_eq!(proxies("").networks().len(), 0);
    assert_eq!(
        proxies("10.1.2.3/8").networks()[0].to_string(),
        "10.0.0.0/8"
    );
    // IPv4-mapped networks in the list stand for IPv4 networks.
    let mapped = proxies("::ffff:10.0.0.0/104");
    assert_eq!(mapped.networks()[0].to_string(), "10.0.0.0/8");
    assert!(mapped.contains(ip("10.9.9.9")));
    assert_eq!(format!("{mapped:?}"), r#"["10.0.0.0/8"]"#);
}

#[test]
fn proxy_list_errors_name_the_entry() {
    for bad in [
        "10.0.0.0/33",
        "nginx.local",
        "10.0.0",
        "::1/129",
        "1.2.3.4:80",
    ] {
        let err = format!("127.0.0.1, {bad}")
            .parse::<TrustedProxies>()
            .unwrap_err();
        let ClientIpError::BadProxy { entry } = &err;
        assert_eq!(entry, bad);
        assert!(err.to_string().contains(bad), "{err}");
    }
    let list = vec!["127.0.0.1".to_owned(), "not-an-ip".to_owned()];
    let err = TrustedProxies::try_from(list.as_slice()).unwrap_err();
    assert!(err.to_string().contains("\"not-an-ip\""), "{err}");
    let list = vec!["127.0.0.1".to_owned(), " 10.0.0.0/8 ".to_owned()];
    assert!(
        TrustedProxies::try_from(list.as_slice())
            .unwrap()
            .contains(ip("10.2.3.4"))
    );
}

#[test]
fn direct_client_without_headers_is_the_peer() {
    let got = resolve("203.0.113.9", &[("Host", "x")], &TrustedProxies::default());
    assert_eq!(got, addr("203.0.113.9", Peer));
}

/// Synapse with `x_forwarded: true` would log 198.51.100.1 here: it believes the leftmost
/// entry from any peer. The sensor does not.
#[test]
fn forged_xff_from_untrusted_client_is_not_believed() {
    let headers = [
        ("X-Forwarded-For", "198.51.100.1"),
        ("Forwarded", "for=198.51.100.2"),
    ];
    let got = resolve("203.0.113.9", &headers, &TrustedProxies::default());
    assert_eq!(
        got,
        ClientAddress {
            ignored_forwarding: true,
            ..addr("203.0.113.9", Peer)
        }
    );
}

#[test]
fn trusted_proxy_xff_single_entry() {
    let got = resolve(
        "127.0.0.1",
        &[("x-forwarded-for", "203.0.113.9")],
        &Default::default(),
    );
    assert_eq!(got, addr("203.0.113.9", Xff));
}

#[test]
fn trusted_proxy_without_forwarding_header_is_the_client() {
    let got = resolve("127.0.0.1", &[("host", "x")], &Default::default());
    assert_eq!(got, addr("127.0.0.1", Peer));
    let got = resolve(
        "127.0.0.1",
        &[("X-Forwarded-For", " , ")],
        &Default::default(),
    );
    assert_eq!(
        got,
        addr("127.0.0.1", Peer),
        "a field of empty elements lists nothing"
    );
}

#[test]
fn xff_walks_from_the_right_past_trusted_proxies() {
    let t = proxies("127.0.0.1, 10.0.0.0/8");
    // The client prepended a forged entry; the edge proxy (10.0.0.5) appended the real one.
    let h = [("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.0.0.5")];
    assert_eq!(resolve("127.0.0.1", &h, &t), addr("203.0.113.9", Xff));
}

#[test]
fn xff_all_trusted_gives_the_leftmost() {
    let t = proxies("127.0.0.1, 10.0.0.0/8");
    let h = [("X-Forwarded-For", "10.0.0.7, 10.0.0.5")];
    assert_eq!(resolve("127.0.0.1", &h, &t), addr("10.0.0.7", Xff));
}

#[test]
fn xff_entries_with_ports_and_ipv6() {
    let t = TrustedProxies::default();
    let cases = [
        ("203.0.113.9:5678", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("\t 2001:db8::2 \t", "2001:db8::2"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("[::ffff:203.0.113.9]:80", "203.0.113.9"),
    ];
    for (entry, want) in cases {
        let got = resolve("::1", &[("X-Forwarded-For", entry)], &t);
        assert_eq!(got, addr(want, Xff), "entry {entry:?}");
        assert!(
            got.ip.is_ipv4() == want.contains('.'),
            "{entry:?} not normalised"
        );
    }
}

#[test]
fn several_xff_fields_combine_in_order() {
    let t = proxies("127.0.0.1, 10.0.0.0/8");
    let h = [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Accept", "*/*"),
        ("x-forwarded-for", "10.0.0.8,10.0.0.9"),
    ];
    assert_eq!(resolve("127.0.0.1", &h, &t), addr("203.0.113.9", Xff));
    let h = [
        ("X-Forwarded-For", "10.0.0.8"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    assert_eq!(
        resolve("127.0.0.1", &h, &t),
        addr("203.0.113.9", Xff),
        "last field is nearest"
    );
}

#[test]
fn malformed_xff_stops_the_walk() {
    let t = proxies("127.0.0.1, 10.0.0.0/8");
    // Rightmost entry unparseable: the peer is the last trusted address.
    let h = [("X-Forwarded-For", "203.0.113.9, not-an-ip")];
    assert_eq!(resolve("127.0.0.1", &h, &t), malformed("127.0.0.1", Peer));
    // Garbage left of a trusted hop: that hop is the answer.
    let h = [("X-Forwarded-For", "203.0.113.9, 1.2.3.4.5, 10.0.0.5")];
    assert_eq!(resolve("127.0.0.1", &h, &t), malformed("10.0.0.5", Xff));
    // Garbage left of the client does not matter: the walk stops at the client.
    let h = [("X-Forwarded-For", "garbage, 203.0.113.9, 10.0.0.5")];
    assert_eq!(resolve("127.0.0.1", &h, &t), addr("203.0.113.9", Xff));
    for bad in [
        "1.2.3.4:99999",
        "1.2.3.4:",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "fe80::1%eth0",
    ] {
        let got = resolve("127.0.0.1", &[("X-Forwarded-For", bad)], &t);
        assert_eq!(got, malformed("127.0.0.1", Peer), "entry {bad:?}");
    }
}

#[test]
fn non_utf8_and_arbitrary_bytes_never_panic() {
    let t = proxies("127.0.0.1, 10.0.0.0/8");
    let garbage: &[&[u8]] = &[
        b"\xff\xfe, 203.0.113.9",
        b"203.0.113.9, \xc3\x28",
        b"\"",
        b"for=\"\\",
        b"for=\"[::1]:80\"\xff; by=\xff",
        b"",
        b",,,;;;===\"\"\"",
    ];
    for value in garbage {
        for name in ["X-Forwarded-For", "Forwarded"] {
            let _ = client_address(ip("127.0.0.1"), &[(name, value)], &t);
            let _ = client_address(ip("8.8.8.8"), &[(name, value)], &t);
        }
    }
    let got = client_address(
        ip("127.0.0.1"),
        &[("X-Forwarded-For", b"203.0.113.9, \xff")],
        &t,
    );
    assert_eq!(got, malformed("127.0.0.1", Peer));
    let got = client_address(
        ip("127.0.0.1"),
        &[("X-Forwarded-For", b"\xff, 203.0.113.9")],
        &t,
    );
    assert_eq!(got, addr("203.0.113.9", Xff));
}

#[test]
fn ipv4_mapped_peer_is_normalised_and_trusted() {
    let got = resolve(
        "::ffff:127.0.0.1",
        &[("X-Forwarded-For", "203.0.113.9")],
        &Default::default(),
    );
    assert_eq!(got, addr("203.0.113.9", Xff));
    let got = resolve("::ffff:203.0.113.7", &[], &Default::default());
    assert_eq!(got, addr("203.0.113.7", Peer));
}

#[test]
fn xff_takes_precedence_over_forwarded() {
    let h = [
        ("Forwarded", "for=198.51.100.2"),
        ("X-Forwarded-For", "203.0.113.9"),
    ];
    assert_eq!(
        resolve("127.0.0.1", &h, &Default::default()),
        addr("203.0.113.9", Xff)
    );
    let h = [("Forwarded", "for=198.51.100.2"), ("X-Forwarded-For", "")];
    let got = resolve("127.0.0.1", &h, &Default::default());
    assert_eq!(
        got,
        addr("198.51.100.2", Fwd),
        "an empty XFF falls back to Forwarded"
    );
}

#[test]
fn trusting_nobody_ignores_every_header() {
    let got = resolve(
        "127.0.0.1",
        &[("X-Forwarded-For", "203.0.113.9")],
        &TrustedProxies::none(),
    );
    assert_eq!(
        got,
        ClientAddress {
            ignored_forwarding: true,
            ..addr("127.0.0.1", Peer)
        }
    );
}
