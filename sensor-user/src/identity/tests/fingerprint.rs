use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::identity::{Fingerprint, FingerprintKey, IdentityError, KeyCheck};

fn key() -> FingerprintKey {
    FingerprintKey::from_bytes(*b"0123456789abcdef0123456789abcdef")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn fingerprint_is_stable_and_well_formed() {
    let a = key().fingerprint(b"syt_YWxpY2U_AbCdEfGhIjKlMnOpQrSt_1UdevA");
    let b = key().fingerprint(b"syt_YWxpY2U_AbCdEfGhIjKlMnOpQrSt_1UdevA");
    assert_eq!(a, b);
    let text = a.to_string();
    assert_eq!(text.len(), 4 + 16, "{text}");
    assert!(text.starts_with("tfp_"), "{text}");
    assert!(
        text[4..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "{text}"
    );
    assert_eq!(format!("{a:?}"), text);
}

/// HMAC-SHA256 with RFC 4231 test case 2 (key "Jefe"): the first 8 bytes of its output.
/// The key is padded with zeros to 32 bytes, which HMAC does anyway (keys shorter than the
/// block are zero-padded), so the result must match the published vector.
#[test]
fn fingerprint_is_hmac_sha256() {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(b"Jefe");
    let fp = FingerprintKey::from_bytes(k).fingerprint(b"what do ya want for nothing?");
    assert_eq!(fp.to_string(), "tfp_5bdcc146bf60754e");
}

#[test]
fn different_tokens_and_keys_differ() {
    let k = key();
    let fps: HashSet<Fingerprint> = (0..1000)
        .map(|i| k.fingerprint(format!("syt_tok{i}").as_bytes()))
        .collect();
    assert_eq!(fps.len(), 1000);
    let other = FingerprintKey::from_bytes([7; 32]);
    assert_ne!(k.fingerprint(b"tok"), other.fingerprint(b"tok"));
    assert_ne!(k.fingerprint(b"tok"), k.fingerprint(b"tok "));
    assert_ne!(k.fingerprint(b""), k.fingerprint(b"\0"));
}

#[test]
fn fingerprint_text_round_trips_and_orders_like_text() {
    let k = key();
    let mut fps: Vec<Fingerprint> = (0..50).map(|i| k.fingerprint(&[i])).collect();
    for fp in &fps {
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), *fp);
        assert_eq!(
            fp.to_string()
                .to_uppercase()
                .replace("TFP_", "tfp_")
                .parse::<Fingerprint>()
                .unwrap(),
            *fp
        );
    }
    let mut texts: Vec<String> = fps.iter().map(|f| f.to_string()).collect();
    fps.sort();
    texts.sort();
    assert_eq!(fps.iter().map(|f| f.to_string()).collect::<Vec<_>>(), texts);
}

#[test]
fn fingerprint_parse_errors_do_not_echo_input() {
    for bad in [
        "",
        "tfp_",
        "tfp_0123456789abcde",
        "tfp_0123456789abcdef0",
        "tfp_0123456789abcdeg",
        "TFP_0123456789abcdef",
        "0123456789abcdef",
        "tfp_+123456789abcdef",
        "tfp_ü123456789abcde",
        "syt_c2VjcmV0_SECRETSECRETSECRET_abcdef",
    ] {
        let err = bad.parse::<Fingerprint>().unwrap_err();
        assert!(matches!(err, IdentityError::BadFingerprint), "{bad:?}");
        assert!(bad.len() <= 4 || !err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn fingerprint_serde() {
    let fp: Fingerprint = "tfp_00ff00ff00ff00ff".parse().unwrap();
    assert_eq!(
        serde_json::to_string(&fp).unwrap(),
        "\"tfp_00ff00ff00ff00ff\""
    );
    let back: Fingerprint = serde_json::from_str("\"tfp_00ff00ff00ff00ff\"").unwrap();
    assert_eq!(back, fp);
    assert!(serde_json::from_str::<Fingerprint>("\"tfp_xyz\"").is_err());
}

#[test]
fn key_debug_never_shows_the_key() {
    let k = FingerprintKey::from_bytes(*b"SECRETKEYSECRETKEYSECRETKEYSECRE");
    let shown = format!("{k:?} {k:#?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(!shown.contains("83, 69, 67"), "{shown}"); // nor as a byte list
    assert_eq!(format!("{k:?}"), "FingerprintKey(<redacted>)");
}

#[test]
fn key_file_is_created_0600_in_a_0700_dir_and_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state/keys");
    let path = dir.join("token-fingerprint.key");
    // Created where it is the default location.
    let created = FingerprintKey::load_or_create_with_default(&path, &path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("state")), 0o700);
    let raw = fs::read(&path).unwrap();
    assert_eq!(raw.len(), 32);
    assert_ne!(raw, vec![0u8; 32]);
    let shown = format!("{created:?}");
    assert!(
        !shown.contains(&format!("{:?}", &raw[..4]))
            && !shown.contains(&format!("{:02x}{:02x}", raw[0], raw[1]))
    );

    let reloaded = FingerprintKey::load_or_create(&path).unwrap();
    assert_eq!(reloaded.fingerprint(b"tok"), created.fingerprint(b"tok"));
    assert_eq!(
        reloaded.fingerprint(b"tok"),
        FingerprintKey::from_bytes(raw.try_into().unwrap()).fingerprint(b"tok")
    );
    assert_eq!(
        fs::read(&path).unwrap().len(),
        32,
        "reloading does not rewrite"
    );

    // A second installation gets a different key.
    let other = FingerprintKey::create(&tmp.path().join("other.key")).unwrap();
    assert_ne!(other.fingerprint(b"tok"), created.fingerprint(b"tok"));
}

#[test]
fn key_file_open_to_others_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("k");
    FingerprintKey::create(&path).unwrap();
    for m in [0o644, 0o640, 0o604, 0o660, 0o606] {
        fs::set_permissions(&path, fs::Permissions::from_mode(m)).unwrap();
        let err = FingerprintKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::KeyPermissions { .. }),
            "{m:o}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("chmod 600") && msg.contains(&path.display().to_string()),
            "{msg}"
        );
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    FingerprintKey::load_or_create(&path).expect("0400 is fine");
}

#[test]
fn key_file_of_wrong_size_is_refused_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    for len in [0usize, 16, 31, 33, 64] {
        let path = tmp.path().join(format!("k{len}"));
        fs::write(&path, vec![b'x'; len]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = FingerprintKey::load_or_create(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::KeySize { size, .. } if size == len as u64),
            "{len}: {err}"
        );
        assert!(err.to_string().contains("expected 32"), "{err}");
        assert!(!err.to_string().contains("xxxx"), "{err}");
        assert_eq!(
            fs::read(&path).unwrap().len(),
            len,
            "a bad key is never overwritten"
        );
    }
}

#[test]
fn key_path_that_is_a_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dir");
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    let err = FingerprintKey::load_or_create(&path).unwrap_err();
    assert!(matches!(err, IdentityError::KeyNotAFile { .. }), "{err}");
}

#[test]
fn key_in_unwritable_place_names_the_file_and_its_cause_once() {
    // A parent that is a regular file cannot hold the key.
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("blocker");
    fs::write(&blocker, b"").unwrap();
    let path = blocker.join("k");
    for err in [
        FingerprintKey::load_or_create(&path).unwrap_err(),
        FingerprintKey::load_or_create_with_default(&path, &path).unwrap_err(),
        FingerprintKey::create(&path).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(msg.matches("(os error").count(), 1, "the cause once: {msg}");
        assert!(msg.contains("check attribution.key_file"), "{msg}");
        // The cause is in the message, so it is not also the error's source: a printer that
        // walks the chain would print it twice.
        assert!(std::error::Error::source(&err).is_none(), "{msg}");
    }
}

#[test]
fn a_missing_key_elsewhere_than_the_default_is_an_error_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A typo in the directory and in the name, next to the real key.
    let real = tmp.path().join("state/fingerprint.key");
    let default = tmp.path().join("default/fingerprint.key");
    FingerprintKey::create(&real).unwrap();
    for typo in [
        tmp.path().join("stat/fingerprint.key"),
        tmp.path().join("state/fingerprnt.key"),
    ] {
        let err = FingerprintKey::load_or_create_with_default(&typo, &default).unwrap_err();
        assert!(matches!(err, IdentityError::KeyMissing { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("no fingerprint key at {}: ", typo.display())),
            "{msg}"
        );
        assert!(msg.contains("fix attribution.key_file"), "{msg}");
        assert!(msg.contains("create the key there"), "{msg}");
        assert!(
            msg.contains(crate::identity::DEFAULT_KEY_FILE),
            "names the one place keys are created: {msg}"
        );
        let check = FingerprintKey::check_with_default(&typo, &default).unwrap_err();
        assert_eq!(check.to_string(), msg);
        assert!(!typo.exists(), "no key created at {}", typo.display());
    }
    assert!(
        !tmp.path().join("stat").exists(),
        "no directory created for a typo"
    );
    assert_eq!(
        fs::read_dir(tmp.path().join("state")).unwrap().count(),
        1,
        "only the real key is there"
    );
    // The real key still loads from where it is, default or not.
    FingerprintKey::load_or_create_with_default(&real, &default).expect("an existing key loads");
}

#[test]
fn check_never_creates_the_default_key() {
    let tmp = tempfile::tempdir().unwrap();
    let default = tmp.path().join("state/fingerprint.key");
    let found = FingerprintKey::check_with_default(&default, &default).unwrap();
    assert!(matches!(found, KeyCheck::WillBeCreated), "{found:?}");
    assert!(
        !tmp.path().join("state").exists(),
        "check created something"
    );
    FingerprintKey::create(&default).unwrap();
    let found = FingerprintKey::check_with_default(&default, &default).unwrap();
    assert!(matches!(found, KeyCheck::Present(_)), "{found:?}");
}

/// Everything a `tracing` subscriber writes, as text.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn creating_the_default_key_warns_once_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let default = tmp.path().join("state/fingerprint.key");
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let created = FingerprintKey::load_or_create_with_default(&default, &default).unwrap();
        let again = FingerprintKey::load_or_create_with_default(&default, &default).unwrap();
        assert_eq!(created.fingerprint(b"tok"), again.fingerprint(b"tok"));
    });
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line, at creation only: {text}");
    assert!(lines[0].contains("WARN"), "{text}");
    assert!(
        lines[0].contains(&format!(
            "no key at {}: created a new one; fingerprints of earlier runs will not match",
            default.display()
        )),
        "{text}"
    );
}
