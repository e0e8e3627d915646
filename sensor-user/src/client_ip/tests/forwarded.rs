//! `Forwarded` (RFC 7239) headers from a trusted proxy.

use super::{Fwd, Peer, addr, malformed, proxies, resolve};
use crate::client_ip::TrustedProxies;

#[test]
fn forwarded_header_basic_and_quoted_ipv6() {
    let t = TrustedProxies::default();
    let cases = [
        ("for=203.0.113.9", "203.0.113.9"),
        ("For=\"203.0.113.9:4711\"", "203.0.113.9"),
        ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
        (
            "FOR=\"[2001:db8:cafe::17]\";proto=https;by=\"[::1]:80\"",
            "2001:db8:cafe::17",
        ),
        (
            "proto=https; for=203.0.113.9 ;host=\"example.org\"",
            "203.0.113.9",
        ),
        ("by=\"a;b,c\";for=203.0.113.9", "203.0.113.9"),
        ("for=\"\\2\\03.0.113.9\"", "203.0.113.9"),
        ("for=\"203.0.113.9:_port1\"", "203.0.113.9"),
    ];
    for (value, want) in cases {
        let got = resolve("127.0.0.1", &[("Forwarded", value)], &t);
        assert_eq!(got, addr(want, Fwd), "Forwarded: {value}");
    }
}

#[test]
fn forwarded_walks_from_the_right_across_fields() {
    let t = proxies("127.0.0.1, 10.0.0.0/8");
    let h = [
        ("Forwarded", "for=6.6.6.6, for=203.0.113.9;proto=https"),
        ("Forwarded", "for=\"10.0.0.5:80\", proto=http"),
    ];
    assert_eq!(resolve("127.0.0.1", &h, &t), addr("203.0.113.9", Fwd));
    let h = [("Forwarded", "for=10.0.0.6, for=10.0.0.5")];
    assert_eq!(
        resolve("127.0.0.1", &h, &t),
        addr("10.0.0.6", Fwd),
        "all trusted: leftmost"
    );
}

#[test]
fn forwarded_unknown_and_obfuscated_stop_without_malformed() {
    let t = proxies("127.0.0.1, 10.0.0.0/8");
    for opaque in [
        "unknown",
        "_hidden",
        "\"_gazonk:80\"",
        "\"unknown:_p\"",
        "UNKNOWN",
    ] {
        let h = [(
            "Forwarded",
            format!("for=203.0.113.9, for={opaque}, for=10.0.0.5"),
        )];
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(
            resolve("127.0.0.1", &h, &t),
            addr("10.0.0.5", Fwd),
            "for={opaque}"
        );
    }
    let got = resolve(
        "127.0.0.1",
        &[("X-Forwarded-For", "203.0.113.9, unknown")],
        &t,
    );
    assert_eq!(got, addr("127.0.0.1", Peer), "unknown in XFF as well");
}

#[test]
fn malformed_forwarded() {
    let t = proxies("127.0.0.1, 10.0.0.0/8");
    let bad = [
        "for=",
        "for=203.0.113.9;for=203.0.113.10",
        "for=[2001:db8::1:4711",
        "for 203.0.113.9",
        "fo r=203.0.113.9",
        "for=\"2\"03.0.113.9",
        "for=host.example",
    ];
    for value in bad {
        let h = [(
            "Forwarded",
            format!("for=203.0.113.9, {value}, for=10.0.0.5"),
        )];
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(
            resolve("127.0.0.1", &h, &t),
            malformed("10.0.0.5", Fwd),
            "{value:?}"
        );
    }
    // An unterminated quote swallows the rest of the field: nothing after it can be read.
    let h = [("Forwarded", "for=203.0.113.9, for=\"10.0.0.6, for=10.0.0.5")];
    assert_eq!(resolve("127.0.0.1", &h, &t), malformed("127.0.0.1", Peer));
}

#[test]
fn forwarded_without_for_is_like_no_header() {
    let got = resolve(
        "127.0.0.1",
        &[("Forwarded", "proto=https;host=x")],
        &Default::default(),
    );
    assert_eq!(got, addr("127.0.0.1", Peer));
}
