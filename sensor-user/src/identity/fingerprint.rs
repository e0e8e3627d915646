use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use super::{DEFAULT_KEY_FILE, IdentityError};

const KEY_LEN: usize = 32;
const PREFIX: &str = "tfp_";

/// The per-installation secret that token fingerprints are keyed with. Without it, a
/// fingerprint in a leaked ledger cannot be matched against a guessed or stolen token; with
/// it, an operator can fingerprint a token they hold and search the ledger for it. `Debug`
/// never shows the key.
#[derive(Clone)]
pub struct FingerprintKey {
    key: [u8; KEY_LEN],
}

impl FingerprintKey {
    /// A key from known bytes (tests, or a key managed elsewhere).
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        FingerprintKey { key }
    }

    /// Reads the key at `path`; creates it only when it is missing at the default location,
    /// [`DEFAULT_KEY_FILE`], with a warning.
    ///
    /// A key missing anywhere else is [`IdentityError::KeyMissing`]: a typo in
    /// `attribution.key_file` must not create a new key (and its directories), after which
    /// fingerprints would no longer match the ledger's. An existing file must be a regular
    /// file of exactly 32 bytes that neither group nor others may access (mode `0600` or
    /// stricter). See [`FingerprintKey::create`] for how a new one is made.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        Self::load_or_create_with_default(path, Path::new(DEFAULT_KEY_FILE))
    }

    /// [`load_or_create`](Self::load_or_create) with another default location (tests).
    pub(crate) fn load_or_create_with_default(
        path: &Path,
        default: &Path,
    ) -> Result<Self, IdentityError> {
        match Self::check_with_default(path, default)? {
            KeyCheck::Present(key) => Ok(key),
            KeyCheck::WillBeCreated => {
                let key = match Self::create(path) {
                    // Another process created it first: read that one.
                    Err(IdentityError::KeyIo { cause, .. })
                        if cause.kind() == io::ErrorKind::AlreadyExists =>
                    {
                        return Self::load(path);
                    }
                    created => created?,
                };
                tracing::warn!(
                    "no key at {}: created a new one; fingerprints of earlier runs will not match",
                    path.display()
                );
                Ok(key)
            }
        }
    }

    /// What [`load_or_create`](Self::load_or_create) would do, without creating anything:
    /// the key, or that it would be created (missing at the default location), or why it
    /// cannot be used.
    pub fn check(path: &Path) -> Result<KeyCheck, IdentityError> {
        Self::check_with_default(path, Path::new(DEFAULT_KEY_FILE))
    }

    pub(crate) fn check_with_default(
        path: &Path,
        default: &Path,
    ) -> Result<KeyCheck, IdentityError> {
        match Self::load(path) {
            Ok(key) => Ok(KeyCheck::Present(key)),
            Err(IdentityError::KeyIo { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
                if path == default {
                    Ok(KeyCheck::WillBeCreated)
                } else {
                    Err(IdentityError::KeyMissing { path: path.into() })
                }
            }
            Err(e) => Err(e),
        }
    }

    fn load(path: &Path) -> Result<Self, IdentityError> {
        let io_err = |action| {
            move |cause| IdentityError::KeyIo {
                action,
                path: path.into(),
                cause,
            }
        };
        // O_NONBLOCK: a FIFO planted at the path must not hang the sensor; the type check
        // below rejects it.
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err("open"))?;
        let meta = file.metadata().map_err(io_err("inspect"))?;
        if !meta.is_file() {
            return Err(IdentityError::KeyNotAFile { path: path.into() });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::KeyPermissions {
                path: path.into(),
                mode,
            });
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(IdentityError::KeySize {
                path: path.into(),
                size: meta.len(),
            });
        }
        let mut key = [0u8; KEY_LEN];
        file.read_exact(&mut key).map_err(io_err("read"))?;
        Ok(FingerprintKey { key })
    }

    /// Creates a new key at `path`, which must not exist: `O_CREAT|O_EXCL`, mode `0600`
    /// (its directory, if missing, `0700`), filled from the OS random source and fsynced.
    /// For the default location (through [`load_or_create`](Self::load_or_create)) and
    /// for tests that start an agent on a fresh state directory.
    pub fn create(path: &Path) -> Result<Self, IdentityError> {
        let io_err = |action| {
            move |cause| IdentityError::KeyIo {
                action,
                path: path.into(),
                cause,
            }
        };
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = parent {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("create the directory of"))?;
        }
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(IdentityError::Random)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err("create"))?;
        if let Err(e) = file.write_all(&key).and_then(|()| file.sync_all()) {
            // Leave no short file behind: the next start would refuse it.
            let _ = std::fs::remove_file(path);
            return Err(io_err("write")(e));
        }
        // Make the new directory entry durable too; best effort (not every filesystem
        // supports fsync on a directory).
        if let Err(e) = File::open(parent.unwrap_or(Path::new("."))).and_then(|d| d.sync_all()) {
            tracing::debug!(error = %e, "cannot fsync the directory of the new fingerprint key");
        }
        Ok(FingerprintKey { key })
    }

    /// HMAC-SHA256 of the raw token under this key, cut to 64 bits.
    pub fn fingerprint(&self, token: &[u8]) -> Fingerprint {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(token);
        let digest = mac.finalize().into_bytes();
        let mut short = [0u8; 8];
        short.copy_from_slice(&digest[..8]);
        Fingerprint(short)
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

/// What [`FingerprintKey::check`] found.
#[derive(Debug)]
pub enum KeyCheck {
    /// The key file exists and is usable.
    Present(FingerprintKey),
    /// No key at the default location: the agent creates one at start.
    WillBeCreated,
}

/// A token's keyed fingerprint, written `tfp_` and 16 lowercase hex digits (the first 64
/// bits of HMAC-SHA256): short enough for logs, wide enough that distinct tokens of one
/// installation do not collide in practice. Orders like its text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    /// Its text, on the stack: what `Display` writes, without the formatting machinery (the
    /// agent writes one or two per request).
    pub fn text(&self) -> FingerprintText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0; FingerprintText::LEN];
        text[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
        for (i, b) in self.0.iter().enumerate() {
            text[PREFIX.len() + 2 * i] = HEX[usize::from(b >> 4)];
            text[PREFIX.len() + 2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        FingerprintText(text)
    }
}

/// `tfp_` and 16 hex digits.
#[derive(Clone, Copy)]
pub struct FingerprintText([u8; FingerprintText::LEN]);

impl FingerprintText {
    const LEN: usize = PREFIX.len() + 16;

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into it (`Fingerprint::text`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses `tfp_` and 16 hex digits (either case). The error never echoes the input: a user
/// may paste a raw token by mistake.
impl FromStr for Fingerprint {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix(PREFIX)
            .ok_or(IdentityError::BadFingerprint)?
            .as_bytes();
        if hex.len() != 16 {
            return Err(IdentityError::BadFingerprint);
        }
        let mut out = [0u8; 8];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| {
                (c as char)
                    .to_digit(16)
                    .ok_or(IdentityError::BadFingerprint)
            };
            *byte = ((digit(pair[0])? << 4) | digit(pair[1])?) as u8;
        }
        Ok(Fingerprint(out))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.text().as_str())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
