//! The `[ledger]` table.

use super::*;

#[test]
fn config_defaults_sizes_and_validation_name_the_key() {
    let c: LedgerConfig = toml::from_str("").unwrap();
    assert_eq!(c, LedgerConfig::default());
    assert!(c.enabled);
    assert_eq!(c.dir, PathBuf::from("/var/lib/homeserver-sensor/ledger"));
    assert_eq!((c.retention_days, c.max_bytes, c.flush_s), (90, 1 << 30, 5));
    c.validate().expect("defaults are valid");

    let c: LedgerConfig =
        toml::from_str("dir = \"/srv/ledger\"\nmax_bytes = \"1 GiB\"\nretention_days = 30\n")
            .unwrap();
    assert_eq!((c.max_bytes, c.retention_days), (1 << 30, 30));
    let c: LedgerConfig = toml::from_str("max_bytes = \"500MB\"").unwrap();
    assert_eq!(c.max_bytes, 500_000_000);
    let c: LedgerConfig = toml::from_str("max_bytes = 2097152").unwrap();
    assert_eq!(c.max_bytes, 2 << 20);
    let err = toml::from_str::<LedgerConfig>("max_bytes = \"lots\"").unwrap_err();
    assert!(err.to_string().contains("invalid size"), "{err}");
    let err = toml::from_str::<LedgerConfig>("retention = 3").unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");

    let check = |text: &str| {
        toml::from_str::<LedgerConfig>(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    };
    let err = check("retention_days = 0");
    assert!(
        err.starts_with("invalid configuration: ledger.retention_days = 0: "),
        "{err}"
    );
    assert!(check("retention_days = 4000").contains("ledger.retention_days"));
    assert!(
        check("max_bytes = \"1 KiB\"").contains("ledger.max_bytes = 1024: must be at least 1 MiB")
    );
    assert!(check("flush_s = 0").contains("ledger.flush_s = 0"));
    assert!(check("flush_s = 600").contains("ledger.flush_s"));
    assert!(check("dir = \"ledger\"").contains("ledger.dir"));
    assert!(check("dir = \"\"").contains("ledger.dir"));
}
