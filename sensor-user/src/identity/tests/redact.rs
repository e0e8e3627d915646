use std::borrow::Cow;

use crate::identity::redact_target;

fn redacted(target: &str) -> String {
    redact_target(target).into_owned()
}

#[test]
fn replaces_the_token_value() {
    assert_eq!(
        redacted("/_matrix/client/v3/sync?access_token=syt_YWxpY2U_abc_123456"),
        "/_matrix/client/v3/sync?access_token=<redacted>"
    );
    assert_eq!(
        redacted(
            "/_matrix/client/v3/rooms/!r:x/messages?dir=b&access_token=syt_x&limit=100&from=t1-2_3"
        ),
        "/_matrix/client/v3/rooms/!r:x/messages?dir=b&access_token=<redacted>&limit=100&from=t1-2_3"
    );
}

#[test]
fn repeated_and_encoded_names() {
    assert_eq!(
        redacted("/p?access_token=a&access_token=b"),
        "/p?access_token=<redacted>&access_token=<redacted>"
    );
    assert_eq!(
        redacted("/p?access%5Ftoken=a&x=1"),
        "/p?access%5Ftoken=<redacted>&x=1"
    );
    assert_eq!(
        redacted("/p?%61ccess_token=a"),
        "/p?%61ccess_token=<redacted>"
    );
    assert_eq!(
        redacted("/p?access_token=a%2Bb+c%3D%3D"),
        "/p?access_token=<redacted>"
    );
    assert_eq!(
        redacted("/p?access_token=a=b"),
        "/p?access_token=<redacted>",
        "value up to the next &"
    );
}

#[test]
fn everything_else_is_kept_byte_for_byte() {
    for target in [
        "/_matrix/client/v3/sync",
        "/_matrix/client/v3/sync?",
        "/_matrix/client/v3/sync?since=s1&full_state=true",
        "/p?access_token",
        "/p?access_token=",
        "/p?access_tokens=x&xaccess_token=y&token=z",
        "/p?a=1&&b=%zz;access_token=x",
        "/_matrix/media/v3/download/example.org/abcDEF?allow_redirect=true",
        "*",
    ] {
        assert!(
            matches!(redact_target(target), Cow::Borrowed(t) if t == target),
            "{target}"
        );
    }
    // Separators and odd pieces around a redaction survive exactly.
    assert_eq!(
        redacted("/p?&&access_token=x&&b&c=%zz#f"),
        "/p?&&access_token=<redacted>&&b&c=%zz#f"
    );
    assert_eq!(
        redacted("/p?q=what?&access_token=x"),
        "/p?q=what?&access_token=<redacted>"
    );
    assert_eq!(
        redacted("http://h/p?access_token=x"),
        "http://h/p?access_token=<redacted>"
    );
}

#[test]
fn the_token_never_survives() {
    let token = "syt_c2VjcmV0_SECRETSECRETSECRETSE_1a2B3c";
    for target in [
        format!("/p?access_token={token}"),
        format!("/p?x=1&access_token={token}&access_token={token}"),
        format!("/p?access%5ftoken={token}"),
        format!("/p?access%5Ftoken={token}#frag"),
    ] {
        let out = redacted(&target);
        assert!(!out.contains("SECRET"), "{target} -> {out}");
    }
}
