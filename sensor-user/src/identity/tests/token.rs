use crate::identity::{Token, TokenSource, token};

fn from(
    headers: &[(&'static str, &'static [u8])],
    query: Option<&'static str>,
) -> Option<Token<'static>> {
    token(headers, query)
}

fn bytes_and_source(t: Option<Token<'_>>) -> Option<(Vec<u8>, TokenSource)> {
    t.map(|t| (t.as_bytes().to_vec(), t.source()))
}

fn header(value: &'static [u8]) -> Option<(Vec<u8>, TokenSource)> {
    bytes_and_source(from(&[("Authorization", value)], None))
}

fn query(q: &'static str) -> Option<(Vec<u8>, TokenSource)> {
    bytes_and_source(from(&[], Some(q)))
}

fn h(t: &str) -> Option<(Vec<u8>, TokenSource)> {
    Some((t.as_bytes().to_vec(), TokenSource::Header))
}

fn q(t: &[u8]) -> Option<(Vec<u8>, TokenSource)> {
    Some((t.to_vec(), TokenSource::Query))
}

#[test]
fn bearer_header() {
    assert_eq!(
        header(b"Bearer syt_YWxpY2U_abc_123456"),
        h("syt_YWxpY2U_abc_123456")
    );
}

#[test]
fn bearer_scheme_is_case_insensitive_and_spacing_tolerant() {
    for value in [
        &b"bearer tok"[..],
        b"BEARER tok",
        b"BeArEr    tok",
        b"  Bearer tok  ",
        b"\tBearer tok\t",
    ] {
        assert_eq!(
            header(value),
            h("tok"),
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    let got = bytes_and_source(from(&[("AUTHORIZATION", b"Bearer tok")], None));
    assert_eq!(got, h("tok"), "header names are case-insensitive");
}

#[test]
fn not_a_bearer_token() {
    for value in [
        &b"Basic dXNlcjpwYXNz"[..],
        b"Bearer",
        b"Bearer ",
        b"Bearer    ",
        b"Bearertok",
        b"Bearer\ttok",
        b"Bearer a b",
        b"Token tok",
        b"",
    ] {
        assert_eq!(header(value), None, "{:?}", String::from_utf8_lossy(value));
    }
}

#[test]
fn first_bearer_field_wins_and_other_schemes_are_skipped() {
    let headers: [(&str, &[u8]); 3] = [
        ("Authorization", b"Basic abc"),
        ("authorization", b"Bearer one"),
        ("Authorization", b"Bearer two"),
    ];
    assert_eq!(bytes_and_source(token(&headers, None)), h("one"));
}

#[test]
fn non_utf8_token_is_kept_as_bytes() {
    let got = header(b"Bearer \xff\xfe\x80abc");
    assert_eq!(
        got,
        Some((b"\xff\xfe\x80abc".to_vec(), TokenSource::Header))
    );
    assert_eq!(header(b"\xffBearer tok"), None);
}

#[test]
fn query_parameter() {
    assert_eq!(query("access_token=tok"), q(b"tok"));
    assert_eq!(query("dir=b&limit=10&access_token=tok&x"), q(b"tok"));
    assert_eq!(
        query("access%5Ftoken=tok"),
        q(b"tok"),
        "names are decoded as Synapse does"
    );
    assert_eq!(query("access_token=a%2Bb%2Fc"), q(b"a+b/c"));
    assert_eq!(
        query("access_token=a+b"),
        q(b"a b"),
        "+ is a space, as in parse_qs"
    );
    assert_eq!(query("access_token=%ff%fe"), q(b"\xff\xfe"));
    assert_eq!(query("access_token=%zz"), q(b"%zz"), "bad escapes stay");
    assert_eq!(
        query("access_token=one&access_token=two"),
        q(b"one"),
        "the first, as Synapse"
    );
}

#[test]
fn no_query_token() {
    for q in [
        "",
        "access_token",
        "access_token=",
        "xaccess_token=tok",
        "access_tokens=tok",
        "a=access_token",
    ] {
        assert_eq!(query(q), None, "{q:?}");
    }
    assert_eq!(bytes_and_source(from(&[], None)), None);
}

#[test]
fn query_token_borrows_unless_decoded() {
    let q = "x=1&access_token=tok";
    let plain = token(&[], Some(q)).unwrap();
    assert_eq!(
        plain.as_bytes().as_ptr(),
        q[17..].as_ptr(),
        "no copy when nothing is decoded"
    );
    let decoded = token(&[], Some("access_token=t%6Fk")).unwrap();
    assert_eq!(decoded.as_bytes(), b"tok");
}

#[test]
fn header_takes_precedence_over_query() {
    let headers: [(&str, &[u8]); 1] = [("Authorization", b"Bearer from-header")];
    let got = bytes_and_source(token(&headers, Some("access_token=from-query")));
    assert_eq!(got, h("from-header"));
    // A header that is not a usable bearer token falls back to the query.
    let headers: [(&str, &[u8]); 1] = [("Authorization", b"Basic xyz")];
    let got = bytes_and_source(token(&headers, Some("access_token=from-query")));
    assert_eq!(got, q(b"from-query"));
}

#[test]
fn debug_never_shows_the_token() {
    let secret = "syt_c2VjcmV0_TOPSECRETtopsecret_abcdef";
    let headers: [(&str, &[u8]); 1] = [(
        "Authorization",
        b"Bearer syt_c2VjcmV0_TOPSECRETtopsecret_abcdef",
    )];
    let t = token(&headers, None).unwrap();
    let shown = format!("{t:?} {:?} {t:#?}", Some(&t));
    assert!(
        !shown.contains(secret) && !shown.contains("TOPSECRET"),
        "{shown}"
    );
    assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    let owned = t.clone().into_owned();
    assert_eq!(owned.as_bytes(), secret.as_bytes());
    assert_eq!(format!("{owned:?}"), "Token(<redacted>)");
    let q = token(&[], Some("access_token=TOPSECRET%20x")).unwrap();
    assert_eq!(format!("{q:?}"), "Token(<redacted>)");
}
