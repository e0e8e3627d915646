use std::fs;
use std::path::{Path, PathBuf};

use crate::identity::{IdentityError, server_name_from_synapse_config};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn server_name(paths: &[PathBuf]) -> Option<String> {
    server_name_from_synapse_config(paths).unwrap_or_else(|e| panic!("{e}"))
}

const HOMESERVER_YAML: &str = r#"# Configuration file for Synapse.
server_name: "education.tchap.gouv.fr"
pid_file: /data/homeserver.pid
listeners:
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
database:
  name: psycopg2
  args:
    user: synapse
media_store_path: /data/media_store
registration_shared_secret: "S3cr3t-do-not-print"
report_stats: false
"#;

#[test]
fn from_one_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "homeserver.yaml", HOMESERVER_YAML);
    assert_eq!(
        server_name(&[file]).as_deref(),
        Some("education.tchap.gouv.fr")
    );
}

#[test]
fn directory_files_in_sorted_order_later_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf.d");
    fs::create_dir(&dir).unwrap();
    // Written in reverse order, so only sorting puts 10 after 01.
    write(&dir, "10-override.yaml", "server_name: later.example\n");
    write(&dir, "01-base.yaml", HOMESERVER_YAML);
    write(
        &dir,
        "99-notes.yml",
        "server_name: wrong-extension.example\n",
    );
    write(&dir, "50-other.yaml", "report_stats: true\n");
    fs::create_dir(dir.join("zz-subdir.yaml")).unwrap();
    assert_eq!(
        server_name(std::slice::from_ref(&dir)).as_deref(),
        Some("later.example")
    );

    // A file after the directory overrides it again; before it, it is overridden.
    let extra = write(
        tmp.path(),
        "worker.yaml",
        "server_name: last.example\nworker_app: synapse.app.generic_worker\n",
    );
    assert_eq!(
        server_name(&[dir.clone(), extra.clone()]).as_deref(),
        Some("last.example")
    );
    assert_eq!(server_name(&[extra, dir]).as_deref(), Some("later.example"));
}

#[test]
fn later_file_without_the_key_keeps_the_earlier_value() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "homeserver.yaml", HOMESERVER_YAML);
    let worker = write(
        tmp.path(),
        "worker.yaml",
        "worker_app: synapse.app.media_repository\n",
    );
    assert_eq!(
        server_name(&[main, worker]).as_deref(),
        Some("education.tchap.gouv.fr")
    );
}

#[test]
fn missing_key_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(
        tmp.path(),
        "a.yaml",
        "report_stats: false\nnested:\n  server_name: not-top-level\n",
    );
    assert_eq!(server_name(&[file]), None);
    assert_eq!(server_name(&[]), None);
    let empty_dir = tmp.path().join("empty");
    fs::create_dir(&empty_dir).unwrap();
    assert_eq!(server_name(&[empty_dir]), None);
}

#[test]
fn empty_and_non_mapping_files_are_skipped_like_synapse() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "main.yaml", "server_name: example.org\n");
    let empty = write(tmp.path(), "empty.yaml", "");
    let dashes = write(tmp.path(), "dashes.yaml", "---\n");
    let comments = write(
        tmp.path(),
        "comments.yaml",
        "# nothing here\n\n   # still nothing\n",
    );
    let list = write(tmp.path(), "list.yaml", "- server_name: evil.example\n");
    let scalar = write(tmp.path(), "scalar.yaml", "just a string\n");
    let null = write(tmp.path(), "null.yaml", "~\n");
    assert_eq!(
        server_name(&[main, empty, dashes, comments, list, scalar, null]).as_deref(),
        Some("example.org")
    );
}

#[test]
fn repeated_key_last_wins_like_pyyaml() {
    let tmp = tempfile::tempdir().unwrap();
    let text =
        "server_name: first.example\nlisteners: []\nlisteners: [1]\nserver_name: second.example\n";
    let file = write(tmp.path(), "dup.yaml", text);
    assert_eq!(server_name(&[file]).as_deref(), Some("second.example"));
}

#[test]
fn bad_yaml_names_the_file_without_its_content() {
    let tmp = tempfile::tempdir().unwrap();
    let good = write(tmp.path(), "a.yaml", HOMESERVER_YAML);
    let bad = write(
        tmp.path(),
        "b.yaml",
        "server_name: [unclosed\nmacaroon_secret_key: \"hunter2\n",
    );
    let err = server_name_from_synapse_config(&[good, bad.clone()]).unwrap_err();
    assert!(matches!(err, IdentityError::ConfigYaml { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&bad.display().to_string()) && msg.contains("not valid YAML"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn server_name_that_is_not_a_string() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("n.yaml", "server_name: 1234\n"),
        ("l.yaml", "server_name: [a, b]\n"),
        ("e.yaml", "server_name:\n"),
    ] {
        let file = write(tmp.path(), name, text);
        let err = server_name_from_synapse_config(std::slice::from_ref(&file)).unwrap_err();
        assert!(
            matches!(&err, IdentityError::ServerNameNotString { path } if *path == file),
            "{text:?}: {err}"
        );
        assert!(err.to_string().contains("must be a string"), "{err}");
    }
    // ... unless a later file fixes it.
    let bad = write(tmp.path(), "x.yaml", "server_name: 1234\n");
    let good = write(tmp.path(), "y.yaml", "server_name: fixed.example\n");
    assert_eq!(server_name(&[bad, good]).as_deref(), Some("fixed.example"));
}

#[test]
fn missing_or_unreadable_file_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.yaml");
    let err = server_name_from_synapse_config(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(err, IdentityError::ConfigIo { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let binary = tmp.path().join("bin.yaml");
    fs::write(&binary, b"server_name: \xff\xfe\n").unwrap();
    let err = server_name_from_synapse_config(std::slice::from_ref(&binary)).unwrap_err();
    assert!(
        err.to_string().contains(&binary.display().to_string()),
        "{err}"
    );
}
