//! Query strings as Synapse reads them: Twisted hands the part after `?` to
//! `urllib.parse.parse_qs(..., keep_blank_values=True)`, which splits on `&` only, splits each
//! piece at its first `=` (no `=`: empty value), and decodes both sides (`+` is a space, then
//! `%XX` escapes; a bad escape stays as it is).

use std::borrow::Cow;

use percent_encoding::percent_decode;

/// The raw (still encoded) name and value of every non-empty `&`-separated piece.
pub(super) fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
}

/// Whether a raw parameter name decodes to `access_token` (`access%5Ftoken` does).
pub(super) fn is_access_token(raw_name: &str) -> bool {
    decode(raw_name.as_bytes()).as_ref() == b"access_token"
}

/// Decodes one name or value; borrows when there is nothing to decode.
pub(super) fn decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'+') {
        return percent_decode(raw).into();
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(percent_decode(&spaced).collect())
}
