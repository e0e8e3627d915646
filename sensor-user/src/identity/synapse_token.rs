//! The user named inside a Synapse access or refresh token.
//!
//! Synapse (`synapse/handlers/auth.py`, `generate_access_token` / `generate_refresh_token`)
//! builds them as
//!
//! ```text
//! base  = "syt_" + unpaddedbase64.encode_base64(localpart.encode("utf-8")) + "_" + random_string(20)
//! token = base + "_" + base62_encode(zlib.crc32(base.encode("ascii")), minwidth=6)
//! ```
//!
//! (`syr_` for refresh tokens). `encode_base64` defaults to `urlsafe=False`, so the localpart
//! uses the standard alphabet (`A-Z a-z 0-9 + /`) without `=` padding; `random_string` draws
//! ASCII letters; `base62_encode` uses `0-9 A-Z a-z`. None of these contain `_`, which is
//! why Synapse can split the token on it. Only the standard alphabet is accepted here: the
//! URL-safe one would put `_` inside the localpart field, and Synapse never produces it.
//!
//! The checksum only tells a well-formed token from a corrupted or unrelated string: anyone
//! can compute it, so the user read from a token is what the token *claims*. It is proven
//! only once Synapse has accepted the token (a non-401 response).

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The localpart a Synapse `syt_` (access) or `syr_` (refresh) token was issued for, if
/// `token` has exactly that shape, a matching checksum and a localpart the Matrix spec lets
/// servers accept: 1 to 255 printable ASCII characters other than `:` (the historical user
/// ID set, of which today's `a-z 0-9 . _ = - / +` is a subset). Any other kind of token
/// (Matrix Authentication Service `mat_`, application-service tokens, old macaroons
/// `MDAx...`) or garbage gives `None`.
pub fn localpart_from_token(token: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(token).ok()?;
    let body = text
        .strip_prefix("syt_")
        .or_else(|| text.strip_prefix("syr_"))?;
    let mut parts = body.split('_');
    let (b64_local, random, crc) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || random.is_empty()
        || !random.bytes().all(|b| b.is_ascii_alphanumeric())
        || crc.len() != 6
    {
        return None;
    }
    let base = &text[..text.len() - crc.len() - 1];
    if crc.as_bytes() != base62_6(crc32(base.as_bytes())) {
        return None;
    }
    let bytes = STANDARD_NO_PAD.decode(b64_local).ok()?;
    let localpart = String::from_utf8(bytes).ok()?;
    is_valid_localpart(&localpart).then_some(localpart)
}

/// `@localpart:server_name` for a Synapse token (see [`localpart_from_token`]); `None` when
/// the token names no user or the server name is unknown.
pub fn user_from_token(token: &[u8], server_name: Option<&str>) -> Option<String> {
    let server_name = server_name?;
    let localpart = localpart_from_token(token)?;
    Some(format!("@{localpart}:{server_name}"))
}

/// A user-ID localpart as the Matrix spec (appendices, "User Identifiers") lets servers
/// accept: 1 to 255 characters, each from the historical set (`%x21-39 / %x3B-7E`, all
/// printable ASCII except `:`), which servers MUST accept because accounts registered
/// under older versions of the spec still exist. Today's grammar (`a-z 0-9 . _ = - / +`) is
/// a subset. (The spec caps the whole user ID at 255 characters; the localpart alone can
/// only be shorter.)
pub(super) fn is_valid_localpart(localpart: &str) -> bool {
    (1..=255).contains(&localpart.len())
        && localpart
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
}

/// `base62_encode(num, minwidth=6)` for a 32-bit number: 62^6 > 2^32, so always 6 digits.
pub(super) fn base62_6(mut num: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for digit in out.iter_mut().rev() {
        *digit = BASE62[(num % 62) as usize];
        num /= 62;
    }
    out
}

/// CRC-32 as `zlib.crc32` computes it (IEEE 802.3, reflected polynomial 0xEDB88320).
pub(super) fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}
