//! The `[detect]` table, from literal TOML.

use serde::Deserialize;

use crate::detect::config::parse_size;
use crate::detect::{
    ByteLimit, DetectConfig, DetectConfigError, Media, RoomsRead, RuleDefaults, SingleTransfer,
    Volume, Windowed,
};

use super::{fp, limit};

fn parse(text: &str) -> Result<DetectConfig, String> {
    let config: DetectConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn invalid(text: &str) -> DetectConfigError {
    let config: DetectConfig = toml::from_str(text).expect("parses");
    config.validate().expect_err("is rejected")
}

fn key_of(e: &DetectConfigError) -> &str {
    let DetectConfigError::Value { key, .. } = e;
    key
}

#[test]
fn empty_table_is_the_defaults_and_they_are_valid() {
    let c = parse("").unwrap();
    assert_eq!(c, DetectConfig::default());
    assert!(c.enabled);
    assert_eq!(c.realert_s, DetectConfig::REALERT_S);
    assert_eq!(c.single_transfer.threshold_bytes, 512 << 20);
    assert_eq!(c.volume.token, Volume::TOKEN);
    assert_eq!(c.volume.address, Volume::ADDRESS);
    assert_eq!(c.breadth.rooms_read.limits, RoomsRead::LIMITS);
    assert_eq!(
        c.breadth.media.limits,
        [limit(600, 1_000), limit(3_600, 3_000)]
    );
    assert_eq!(c.admin_api.allow, ["127.0.0.0/8", "::1/128"]);
    assert!(c.admin_api.new_token && c.sensor_health.enabled);
}

#[test]
fn every_key() {
    let c = parse(
        r#"
        enabled = true
        realert_s = 300
        max_subjects = 1000
        max_items = 2000
        exempt_users = ["@bridge:example.org"]
        [single_transfer]
        enabled = true
        threshold_bytes = "1GiB"
        [volume]
        enabled = true
        token = [{ window_s = 60, threshold_bytes = "256 MiB" }]
        address = [{ window_s = 60, threshold_bytes = 1073741824 }]
        [breadth.rooms_read]
        limits = [{ window_s = 300, threshold = 50 }, { window_s = 86400, threshold = 500 }]
        [breadth.rooms_joined]
        enabled = false
        [breadth.media]
        limits = [{ window_s = 600, threshold = 2000 }]
        [breadth.directory]
        limits = [{ window_s = 600, threshold = 100 }]
        [breadth.room_directory]
        limits = [{ window_s = 600, threshold = 50 }]
        [breadth.full_syncs]
        limits = [{ window_s = 3600, threshold = 10 }]
        [tokenless_media]
        limits = [{ window_s = 600, threshold = 100 }]
        [admin_api]
        allow = ["10.0.0.0/8"]
        window_s = 60
        new_token = false
        known_tokens = ["tfp_0000000000000001"]
        max_known_tokens = 16
        [sensor_health]
        enabled = false
        "#,
    )
    .unwrap();
    assert_eq!(
        (c.realert_s, c.max_subjects, c.max_items),
        (300, 1000, 2000)
    );
    assert_eq!(c.exempt_users, ["@bridge:example.org"]);
    assert_eq!(c.single_transfer.threshold_bytes, 1 << 30);
    assert_eq!(
        c.volume.token,
        [ByteLimit {
            window_s: 60,
            threshold_bytes: 256 << 20
        }]
    );
    assert_eq!(c.volume.address[0].threshold_bytes, 1 << 30);
    assert_eq!(
        c.breadth.rooms_read.limits,
        [limit(300, 50), limit(86_400, 500)]
    );
    assert!(!c.breadth.rooms_joined.enabled);
    assert_eq!(c.breadth.full_syncs.limits, [limit(3_600, 10)]);
    assert_eq!(c.tokenless_media.limits, [limit(600, 100)]);
    assert_eq!(c.admin_api.known_tokens, [fp(1)]);
    assert_eq!((c.admin_api.window_s, c.admin_api.new_token), (60, false));
    assert!(!c.sensor_health.enabled);
}

#[test]
fn a_partial_rule_table_keeps_that_rules_defaults() {
    let c =
        parse("[breadth.media]\nenabled = false\n[single_transfer]\nenabled = false\n").unwrap();
    assert!(!c.breadth.media.enabled);
    assert_eq!(c.breadth.media.limits, Media::LIMITS);
    assert_eq!(
        c.single_transfer.threshold_bytes,
        SingleTransfer::THRESHOLD_BYTES
    );
    assert_eq!(c.breadth.rooms_read, Windowed::default());
}

#[test]
fn embeds_as_the_detect_table() {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Main {
        detect: DetectConfig,
    }
    let main: Main = toml::from_str(
        "[detect.breadth.rooms_joined]\nlimits = [{ window_s = 60, threshold = 5 }]\n",
    )
    .unwrap();
    assert_eq!(main.detect.breadth.rooms_joined.limits, [limit(60, 5)]);
    let err = toml::from_str::<Main>("[detect]\nrealert = 5\n")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("realert") && err.contains("line 2"), "{err}");
}

#[test]
fn sizes_in_bytes_or_with_units() {
    assert_eq!(parse_size("512MiB"), Some(512 << 20));
    assert_eq!(parse_size(" 2 GiB "), Some(2 << 30));
    assert_eq!(parse_size("500MB"), Some(500_000_000));
    assert_eq!(parse_size("10kB"), Some(10_000));
    assert_eq!(parse_size("4096"), Some(4096));
    for bad in ["", "MiB", "1.5GiB", "12 parsecs", "-1", "99999999999TiB"] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
    let err = parse("[single_transfer]\nthreshold_bytes = \"lots\"\n").unwrap_err();
    assert!(err.contains("invalid size \"lots\""), "{err}");
}

#[test]
fn unknown_keys_are_named() {
    for (text, key) in [
        ("realert = 5", "realert"),
        ("[breadth.media]\nwindows = []", "windows"),
        (
            "[breadth.media]\nlimits = [{ window_s = 60, thresold = 1 }]",
            "thresold",
        ),
        ("[volume]\ntoken = [{ window_s = 60, bytes = 1 }]", "bytes"),
        ("[breadth.rooms]\nenabled = false", "rooms"),
    ] {
        let err = parse(text).unwrap_err();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn bad_values_name_the_key_and_why() {
    let cases = [
        ("realert_s = 0", "realert_s", "between 1 and 86400"),
        ("max_subjects = 0", "max_subjects", "at least 1"),
        ("max_items = 0", "max_items", "at least 1"),
        (
            "exempt_users = [\"bot\"]",
            "exempt_users[0]",
            "full user ID",
        ),
        (
            "[single_transfer]\nthreshold_bytes = 0",
            "single_transfer.threshold_bytes",
            "at least 1",
        ),
        (
            "[volume]\ntoken = []",
            "volume.token",
            "give 1 to 4 windows",
        ),
        (
            "[volume]\naddress = [{ window_s = 60, threshold_bytes = 0 }]",
            "volume.address[0].threshold_bytes",
            "at least 1",
        ),
        (
            "[breadth.media]\nlimits = [{ window_s = 0, threshold = 5 }]",
            "breadth.media.limits[0].window_s",
            "between 1 and 86400",
        ),
        (
            "[breadth.media]\nlimits = [{ window_s = 90000, threshold = 5 }]",
            "breadth.media.limits[0].window_s",
            "(24 h)",
        ),
        (
            "[breadth.rooms_read]\nlimits = [{ window_s = 60, threshold = 0 }]",
            "breadth.rooms_read.limits[0].threshold",
            "at least 1",
        ),
        (
            "[breadth.full_syncs]\nlimits = [{ window_s = 60, threshold = 1 }, \
             { window_s = 60, threshold = 2 }]",
            "breadth.full_syncs.limits[1].window_s",
            "appears twice",
        ),
        (
            "[tokenless_media]\nlimits = [{ window_s = 60, threshold = 5000 }]",
            "tokenless_media.limits[0].threshold",
            "max_items = 4096",
        ),
        (
            "[admin_api]\nallow = [\"10.0.0.0/33\"]",
            "admin_api.allow",
            "10.0.0.0/33",
        ),
        (
            "[admin_api]\nwindow_s = 0",
            "admin_api.window_s",
            "between 1",
        ),
        (
            "[admin_api]\nmax_known_tokens = 0",
            "admin_api.max_known_tokens",
            "at least 1",
        ),
    ];
    for (text, key, why) in cases {
        let err = invalid(text);
        assert_eq!(key_of(&err), key, "{text}");
        assert!(err.to_string().contains(why), "{text}: {err}");
    }
    let five = (1..=5)
        .map(|w| format!("{{ window_s = {w}, threshold = 1 }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let five = format!("[breadth.directory]\nlimits = [{five}]");
    assert_eq!(key_of(&invalid(&five)), "breadth.directory.limits");
}

#[test]
fn the_message_reads_as_a_sentence() {
    let err = invalid("[breadth.media]\nlimits = [{ window_s = 0, threshold = 5 }]");
    assert_eq!(
        err.to_string(),
        "invalid configuration: detect.breadth.media.limits[0].window_s = 0: must be between \
         1 and 86400 seconds (24 h)"
    );
}

#[test]
fn a_disabled_rule_is_not_checked() {
    assert!(parse("[breadth.media]\nenabled = false\nlimits = []").is_ok());
    assert!(parse("[volume]\nenabled = false\ntoken = []").is_ok());
}

#[test]
fn a_smaller_max_items_must_still_fit_the_thresholds() {
    let err = invalid("max_items = 500");
    assert_eq!(key_of(&err), "breadth.media.limits[0].threshold");
}
