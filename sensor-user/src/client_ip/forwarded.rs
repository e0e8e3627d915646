//! The `for=` parameters of an RFC 7239 `Forwarded` field.
//!
//! ```text
//! Forwarded         = 1#forwarded-element
//! forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
//! forwarded-pair    = token "=" value
//! value             = token / quoted-string
//! ```
//! Parameter names are case-insensitive and each may appear once per element. Only `for`
//! matters here; other pairs (`by`, `proto`, `host`) are only checked for the `name=value`
//! shape, and their values may be anything but separators, because a quoted string may hide
//! a comma or semicolon, the split honours quotes and backslash escapes.

use super::{Node, parse_node, trim_ows};

/// Appends one entry per element of `value` that has a `for` parameter: `Some(node)`, or
/// `None` when the element (or its `for` value) cannot be parsed. Elements without `for`
/// name no hop and are skipped.
pub(super) fn for_nodes(value: &[u8], out: &mut Vec<Option<Node>>) {
    for element in split_unquoted(value, b',') {
        let element = trim_ows(element);
        if element.is_empty() {
            continue;
        }
        match element_for(element) {
            Ok(Some(node)) => out.push(Some(node)),
            Ok(None) => {}
            Err(()) => out.push(None),
        }
    }
}

/// The node named by the element's `for` pair, if it has one.
fn element_for(element: &[u8]) -> Result<Option<Node>, ()> {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let pair = trim_ows(pair);
        if pair.is_empty() {
            continue;
        }
        let eq = pair.iter().position(|&b| b == b'=').ok_or(())?;
        let (name, raw) = (&pair[..eq], &pair[eq + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(());
        }
        let value = unquote(raw)?;
        if name.eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return Err(());
            }
            let text = std::str::from_utf8(&value).map_err(|_| ())?;
            found = Some(parse_node(text).ok_or(())?);
        }
    }
    Ok(found)
}

/// A token or a quoted-string (with `\` escapes) as bytes.
fn unquote(raw: &[u8]) -> Result<Vec<u8>, ()> {
    let Some(inner) = raw.strip_prefix(b"\"") else {
        let plain = !raw.is_empty()
            && raw
                .iter()
                .all(|&b| (b.is_ascii_graphic() && b != b'"') || b >= 0x80);
        return if plain { Ok(raw.to_vec()) } else { Err(()) };
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.push(*bytes.next().ok_or(())?),
            b'"' if bytes.as_slice().is_empty() => return Ok(out),
            b'"' => return Err(()),
            _ => out.push(b),
        }
    }
    Err(()) // no closing quote
}

/// Splits on `sep` outside quoted strings. An unterminated quote runs to the end, and that
/// last piece then fails to unquote.
fn split_unquoted(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in s.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

/// RFC 9110 section 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
