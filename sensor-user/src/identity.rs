//! Who sent a request: its access token, kept only as a keyed fingerprint, and the Matrix
//! user the token names.
//!
//! Raw tokens never leave this module in a printable form: [`Token`] has a redacting `Debug`
//! and neither `Display` nor `Serialize`; what the sensor records is a [`Fingerprint`],
//! HMAC-SHA256 under a per-installation [`FingerprintKey`], so a leaked ledger cannot be used
//! to confirm a guessed token without the key. Every request-target the sensor writes goes
//! through [`redact_target`] first.
//!
//! Synapse access tokens (`syt_<unpadded base64 of the localpart>_<random>_<crc>`) name
//! their user; [`user_from_token`] reads it, completed with the `server_name` that
//! discovery reads from Synapse's configuration ([`crate::discover::synapse_config`]) or
//! the operator sets.

mod fingerprint;
mod query;
mod redact;
mod synapse_token;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use fingerprint::{Fingerprint, FingerprintKey, KeyCheck};
pub use redact::redact_target;
pub use synapse_token::{localpart_from_token, user_from_token};

/// Default location of the fingerprint key (systemd's `StateDirectory`): the only place a
/// missing key is created (see [`FingerprintKey::load_or_create`]).
pub const DEFAULT_KEY_FILE: &str = "/var/lib/homeserver-sensor/fingerprint.key";

/// Errors of this module. No message ever contains a token or key material.
///
/// Each message is the whole sentence, its cause included (the I/O error, after the path):
/// the cause is a plain field, not `source()`, so a printer that walks the chain does not
/// repeat it.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot {action} the fingerprint key file {}: {cause}; {}",
        path.display(), key_io_hint(action)
    )]
    KeyIo {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A key file that does not exist, anywhere but [`DEFAULT_KEY_FILE`]: most likely a typo
    /// in `attribution.key_file`, and a new key would silently stop fingerprints from
    /// matching the ledger's.
    #[error(
        "no fingerprint key at {}: fix attribution.key_file if the path is wrong, or create \
         the key there (32 random bytes, mode 0600: \
         `(umask 077; head -c 32 /dev/urandom > {})`); only the default location, \
         {DEFAULT_KEY_FILE}, is created automatically",
        path.display(), path.display()
    )]
    KeyMissing { path: PathBuf },
    #[error(
        "fingerprint key file {} has mode {mode:04o}, open to group or others; \
         run `chmod 600 {}` (and check who could have read it)",
        path.display(), path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error(
        "fingerprint key file {} is not a regular file; point attribution.key_file at the \
         32-byte key file",
        path.display()
    )]
    KeyNotAFile { path: PathBuf },
    #[error(
        "fingerprint key file {} holds {size} bytes, expected 32; restore it from backup, \
         or delete it to generate a new key (fingerprints already recorded will no longer match)",
        path.display()
    )]
    KeySize { path: PathBuf, size: u64 },
    #[error("cannot draw random bytes for a new fingerprint key: {0}")]
    Random(getrandom::Error),
    #[error("not a token fingerprint: expected \"tfp_\" followed by 16 hex digits")]
    BadFingerprint,
}

/// What to do when the key file cannot be read or written.
fn key_io_hint(action: &str) -> &'static str {
    match action {
        "open" | "inspect" | "read" => {
            "check attribution.key_file and that the agent's user may read the file"
        }
        _ => "check attribution.key_file and that the agent's user may write its directory",
    }
}

/// Where a request carried its access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// The `access_token` query parameter (deprecated in the Matrix spec, still accepted).
    Query,
}

/// A raw access token seen in a request. It cannot be printed or serialised: `Debug` shows
/// `Token(<redacted>)`. Fingerprint it ([`FingerprintKey::fingerprint`]) or read the user
/// from it ([`user_from_token`]) through [`Token::as_bytes`], then drop it.
#[derive(Clone)]
pub struct Token<'a> {
    value: Cow<'a, [u8]>,
    source: TokenSource,
}

impl<'a> Token<'a> {
    /// The raw bytes, for fingerprinting and decoding only: never log or store them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.value
    }

    pub fn source(&self) -> TokenSource {
        self.source
    }

    /// A copy that no longer borrows the request buffer.
    pub fn into_owned(self) -> Token<'static> {
        Token {
            value: Cow::Owned(self.value.into_owned()),
            source: self.source,
        }
    }
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The access token of a request, from its header fields (name, value; names compared
/// case-insensitively) and its query string (the part of the request-target after `?`).
///
/// The first `Authorization` field with the `Bearer` scheme (any case) followed by one or
/// more spaces and a single non-empty credential wins; other schemes are ignored. Failing
/// that, the first `access_token` query parameter, decoded as Synapse (Twisted's `parse_qs`)
/// decodes it: `+` is a space, `%XX` escapes are undone, in the name too.
///
/// Synapse itself is stricter (`synapse/api/auth/base.py`, `get_access_token_from_request`:
/// exactly `Bearer` and one space, a single `Authorization` field, not both sources at once)
/// and answers such requests with 401; the sensor still attributes them, since a token that
/// was tried is worth recording.
pub fn token<'a>(headers: &[(&str, &'a [u8])], query: Option<&'a str>) -> Option<Token<'a>> {
    let from_header = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .find_map(|(_, value)| bearer(value));
    if let Some(value) = from_header {
        return Some(Token {
            value: Cow::Borrowed(value),
            source: TokenSource::Header,
        });
    }
    let (_, raw) = query::pairs(query?).find(|(name, _)| query::is_access_token(name))?;
    let value = query::decode(raw.as_bytes());
    (!value.is_empty()).then_some(Token {
        value,
        source: TokenSource::Query,
    })
}

/// The credential of `Bearer <credential>`.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = trim_ows(value);
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let credential = &rest[rest.iter().position(|&b| b != b' ')?..];
    // One credential only: `Bearer a b` is not a token.
    (!credential.iter().any(|&b| b == b' ' || b == b'\t')).then_some(credential)
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}
