use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use super::{StartError, start_checks};
use crate::config::{Config, Webhook};

/// A configuration whose every path is under `dir` and usable: a fake cgroup v2 root, an
/// existing key, a ledger directory that does not exist yet.
fn usable(dir: &Path) -> Config {
    let cgroup = dir.join("cgroup");
    fs::create_dir(&cgroup).unwrap();
    fs::write(cgroup.join("cgroup.controllers"), "cpu memory\n").unwrap();
    let key = dir.join("state/fingerprint.key");
    crate::identity::FingerprintKey::create(&key).unwrap();
    let mut config = Config::default();
    config.discovery.cgroup_root = Some(cgroup);
    config.attribution.key_file = key;
    config.ledger.dir = dir.join("state/ledger");
    config.output.events = dir.join("events.jsonl").display().to_string();
    config
}

fn messages(config: &Config) -> Vec<String> {
    start_checks(config, Path::new("/proc"))
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// No message repeats its cause: an OS error appears at most once.
fn assert_cause_once(msg: &str) {
    assert!(
        msg.matches("(os error").count() <= 1,
        "cause repeated: {msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn a_usable_configuration_passes_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let config = usable(tmp.path());
    assert_eq!(messages(&config), Vec::<String>::new());
    assert!(
        !tmp.path().join("events.jsonl").exists(),
        "events file created"
    );
    assert!(!tmp.path().join("state/ledger").exists(), "ledger created");
    // An events file that exists is opened for appending only: its content stays.
    fs::write(tmp.path().join("events.jsonl"), "{}\n").unwrap();
    assert_eq!(messages(&config), Vec::<String>::new());
    assert_eq!(
        fs::read_to_string(tmp.path().join("events.jsonl")).unwrap(),
        "{}\n"
    );
}

#[test]
fn events_in_a_missing_directory_names_the_path_once_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = usable(tmp.path());
    let events = tmp.path().join("nonexistent/x.jsonl");
    config.output.events = events.display().to_string();
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let msg = &msgs[0];
    assert_eq!(
        msg,
        &format!(
            "cannot write events to {}: its directory {} does not exist; create the \
             directory or give another path (--events or output.events; \"-\" writes to \
             stdout)",
            events.display(),
            tmp.path().join("nonexistent").display()
        )
    );
    assert!(!msg.contains("File("), "no debug formatting: {msg}");
    assert_cause_once(msg);
    assert!(!tmp.path().join("nonexistent").exists());
}

#[test]
fn events_that_is_a_directory_or_under_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = usable(tmp.path());
    config.output.events = tmp.path().display().to_string();
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].starts_with(&format!(
            "cannot write events to {}: it is a directory; give a file path",
            tmp.path().display()
        )),
        "{msgs:?}"
    );
    let file = tmp.path().join("plain");
    fs::write(&file, "").unwrap();
    config.output.events = file.join("x.jsonl").display().to_string();
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains(&format!("{} is not a directory", file.display())),
        "{msgs:?}"
    );
    assert_cause_once(&msgs[0]);
    // Standard output needs nothing.
    config.output.events = "-".into();
    assert_eq!(messages(&config), Vec::<String>::new());
}

#[test]
fn a_cgroup_root_that_is_not_cgroup_v2_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = usable(tmp.path());
    let v1 = tmp.path().join("v1");
    fs::create_dir(&v1).unwrap();
    config.discovery.cgroup_root = Some(v1.clone());
    let msgs = messages(&config);
    assert_eq!(
        msgs,
        [format!(
            "discovery.cgroup_root = {} is not a cgroup v2 mount (it has no cgroup.controllers); \
             give the cgroup v2 mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a \
             hybrid host), or remove the key to find it in /proc/self/mountinfo",
            v1.display()
        )]
    );
    config.discovery.cgroup_root = Some(tmp.path().join("missing"));
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("No such file or directory"), "{msgs:?}");
    assert_cause_once(&msgs[0]);
}

#[test]
fn a_missing_key_file_is_an_error_anywhere_but_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = usable(tmp.path());
    let typo = tmp.path().join("stat/fingerprint.key");
    config.attribution.key_file = typo.clone();
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].starts_with(&format!("no fingerprint key at {}: ", typo.display())),
        "{msgs:?}"
    );
    assert!(
        !tmp.path().join("stat").exists(),
        "checking created the key"
    );
    // A key that exists but is open to others is refused as `run` refuses it.
    let key = tmp.path().join("state/fingerprint.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    config.attribution.key_file = key;
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("chmod 600"), "{msgs:?}");
}

#[test]
fn ledger_directory_problems_name_the_directory_and_the_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = usable(tmp.path());
    // Open to others.
    let open = tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    config.ledger.dir = open.clone();
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains(&format!("run `chmod 700 {}`", open.display())),
        "{msgs:?}"
    );
    // Not a directory.
    let file = tmp.path().join("file");
    fs::write(&file, "").unwrap();
    config.ledger.dir = file.clone();
    let msgs = messages(&config);
    assert_eq!(
        msgs,
        [format!(
            "the ledger directory {} is not a directory; set [ledger] dir to a directory",
            file.display()
        )]
    );
    // Cannot be created: a file where a directory would be.
    config.ledger.dir = file.join("ledger");
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].starts_with(&format!(
            "cannot create the ledger directory {}: Not a directory (os error 20); create it",
            file.join("ledger").display()
        )),
        "{msgs:?}"
    );
    assert_cause_once(&msgs[0]);
    // Disabled: not checked.
    config.ledger.enabled = false;
    assert_eq!(messages(&config), Vec::<String>::new());
}

#[test]
fn an_unreadable_webhook_url_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = usable(tmp.path());
    let url_file = tmp.path().join("webhook-url");
    config.output.webhook = Some(Webhook {
        url: None,
        url_file: Some(url_file.clone()),
        min_severity: crate::detect::Severity::Warning,
        timeout_ms: 5000,
    });
    let msgs = messages(&config);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].contains("output.webhook.url_file")
            && msgs[0].contains(&url_file.display().to_string()),
        "{msgs:?}"
    );
    assert_cause_once(&msgs[0]);
    fs::write(&url_file, "https://hooks.example.org/webhook/abc\n").unwrap();
    assert_eq!(messages(&config), Vec::<String>::new());
}

#[test]
fn every_problem_is_named_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = usable(tmp.path());
    config.output.events = tmp.path().join("no/events.jsonl").display().to_string();
    config.attribution.key_file = tmp.path().join("typo.key");
    let file = tmp.path().join("file");
    fs::write(&file, "").unwrap();
    config.ledger.dir = file.clone();
    let errors = start_checks(&config, Path::new("/proc"));
    assert!(
        matches!(
            errors.as_slice(),
            [
                StartError::Events { .. },
                StartError::Key(_),
                StartError::Ledger(_)
            ]
        ),
        "{errors:?}"
    );
}
