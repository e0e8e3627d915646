//! Tests of reading Synapse's configuration: how files are found and merged, over literal
//! YAML in the shapes of Synapse's documentation.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Bind, Listener, SynapseConfigError, listeners, server_name as read_server_name};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn server_name(paths: &[PathBuf]) -> Option<String> {
    read_server_name(paths).unwrap_or_else(|e| panic!("{e}"))
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
    let err = read_server_name(&[good, bad.clone()]).unwrap_err();
    assert!(matches!(err, SynapseConfigError::Yaml { .. }), "{err}");
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
        let err = read_server_name(std::slice::from_ref(&file)).unwrap_err();
        assert!(
            matches!(&err, SynapseConfigError::ServerNameNotString { path } if *path == file),
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
    let err = read_server_name(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(err, SynapseConfigError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let binary = tmp.path().join("bin.yaml");
    fs::write(&binary, b"server_name: \xff\xfe\n").unwrap();
    let err = read_server_name(std::slice::from_ref(&binary)).unwrap_err();
    assert!(
        err.to_string().contains(&binary.display().to_string()),
        "{err}"
    );
}

fn read_listeners(paths: &[PathBuf]) -> Vec<Listener> {
    listeners(paths).unwrap_or_else(|e| panic!("{e}"))
}

fn tcp(port: u16, tls: bool, kind: &str, resources: &[&str]) -> Listener {
    Listener {
        bind: Bind::Tcp { port },
        tls,
        kind: kind.into(),
        resources: resources.iter().map(|r| r.to_string()).collect(),
    }
}

fn unix(path: &str, kind: &str, resources: &[&str]) -> Listener {
    Listener {
        bind: Bind::Unix { path: path.into() },
        tls: false,
        kind: kind.into(),
        resources: resources.iter().map(|r| r.to_string()).collect(),
    }
}

/// The listener shapes of Synapse's configuration manual (`listeners`, and the UNIX socket
/// and metrics examples), with a replication socket as in its workers guide.
const DOCS_LISTENERS: &str = r#"server_name: "example.com"
listeners:
  # TLS-enabled listener: for when matrix traffic is sent directly to synapse.
  - port: 8448
    type: http
    tls: true
    resources:
      - names: [client, federation]

  # Unsecure HTTP listener: for when matrix traffic passes through a reverse proxy
  # that unwraps TLS.
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    bind_addresses: ['::1', '127.0.0.1']

    resources:
      - names: [client, federation]
        compress: false

    # example additional_resources:
    additional_resources:
      "/_matrix/my/custom/endpoint":
        module: my_module.CustomRequestHandler
        config: {}

  # Unix socket listener: x_forwarded defaults to true.
  - path: /run/synapse/main_public.sock
    type: http
    mode: 660
    x_forwarded: true
    resources:
      - names: [client, federation]

  - path: /run/synapse/replication.sock
    type: http
    resources:
      - names: [replication]

  - port: 9000
    type: metrics
    bind_addresses: ['::1', '127.0.0.1']

  # Turn on the twisted ssh manhole service on localhost on the given port.
  - port: 9001
    bind_addresses: ['::1', '127.0.0.1']
    type: manhole
macaroon_secret_key: "do-not-print-me"
"#;

#[test]
fn listener_shapes_of_synapses_documentation() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "homeserver.yaml", DOCS_LISTENERS);
    assert_eq!(
        read_listeners(&[file]),
        vec![
            tcp(8448, true, "http", &["client", "federation"]),
            tcp(8008, false, "http", &["client", "federation"]),
            unix(
                "/run/synapse/main_public.sock",
                "http",
                &["client", "federation"]
            ),
            unix("/run/synapse/replication.sock", "http", &["replication"]),
            tcp(9000, false, "metrics", &[]),
            tcp(9001, false, "manhole", &[]),
        ]
    );
    // The sample configuration that Synapse generates: one plain HTTP listener.
    let sample = write(tmp.path(), "sample.yaml", HOMESERVER_YAML);
    assert_eq!(
        read_listeners(&[sample]),
        vec![tcp(8008, false, "http", &["client", "federation"])]
    );
}

#[test]
fn the_last_listeners_win_whole_like_synapses_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "homeserver.yaml", DOCS_LISTENERS);
    let listeners_only = write(
        tmp.path(),
        "listeners.yaml",
        "listeners:\n  - port: 8080\n    type: http\n    resources: [{names: [media]}]\n",
    );
    let unrelated = write(tmp.path(), "other.yaml", "report_stats: true\n");
    assert_eq!(
        read_listeners(&[main, listeners_only, unrelated]),
        vec![tcp(8080, false, "http", &["media"])],
        "a later file's listeners replace the earlier list, and a file without the key keeps it"
    );
    // In one file, a repeated top-level key: the last one.
    let dup = write(
        tmp.path(),
        "dup.yaml",
        "listeners:\n  - {port: 1, type: http}\nserver_name: a\nlisteners:\n  - {port: 2, type: http}\n",
    );
    assert_eq!(read_listeners(&[dup]), vec![tcp(2, false, "http", &[])]);
    // A directory: its files in sorted order.
    let dir = tmp.path().join("conf.d");
    fs::create_dir(&dir).unwrap();
    write(
        &dir,
        "20-listeners.yaml",
        "listeners: [{path: /s.sock, type: http}]\n",
    );
    write(&dir, "10-main.yaml", DOCS_LISTENERS);
    assert_eq!(
        read_listeners(std::slice::from_ref(&dir)),
        vec![unix("/s.sock", "http", &[])]
    );
}

#[test]
fn no_listeners_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("none.yaml", "server_name: example.org\n"),
        ("null.yaml", "listeners:\n"),
        ("map.yaml", "listeners: {port: 8008}\n"),
        ("empty.yaml", ""),
        ("list.yaml", "- listeners: [{port: 8008, type: http}]\n"),
    ] {
        let file = write(tmp.path(), name, text);
        assert_eq!(read_listeners(&[file]), vec![], "{text:?}");
    }
    assert_eq!(read_listeners(&[]), vec![]);
}

#[test]
fn entries_without_a_port_or_a_path_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let text = r#"listeners:
  - 8008
  - "path: /run/s.sock"
  - ~
  - [port, 8008]
  - type: http
    resources: [{names: [client]}]
  - port: "8008"
    type: http
  - port: 70000
    type: http
  - path: ""
    type: http
  - port: 8008
    path: ""
    type: http
  - port: 0
    path: /run/synapse/zero.sock
    type: http
"#;
    let file = write(tmp.path(), "l.yaml", text);
    assert_eq!(
        read_listeners(&[file]),
        vec![
            tcp(8008, false, "http", &[]),
            unix("/run/synapse/zero.sock", "http", &[]),
        ]
    );
}

#[test]
fn tls_is_read_as_pyyaml_and_python_read_it() {
    let tmp = tempfile::tempdir().unwrap();
    let text = r#"listeners:
  - {port: 1, type: http}
  - {port: 2, type: http, tls: true}
  - {port: 3, type: http, tls: yes}
  - {port: 4, type: http, tls: on}
  - {port: 5, type: http, tls: 1}
  - {port: 6, type: http, tls: false}
  - {port: 7, type: http, tls: no}
  - {port: 8, type: http, tls: off}
  - {port: 9, type: http, tls: 0}
  - {port: 10, type: http, tls: ~}
  - {port: 11, type: http, tls: True}
"#;
    let file = write(tmp.path(), "tls.yaml", text);
    let tls: Vec<(u16, bool)> = read_listeners(&[file])
        .into_iter()
        .map(|l| match l.bind {
            Bind::Tcp { port } => (port, l.tls),
            Bind::Unix { .. } => panic!("{l:?}"),
        })
        .collect();
    assert_eq!(
        tls,
        [
            (1, false),
            (2, true),
            (3, true),
            (4, true),
            (5, true),
            (6, false),
            (7, false),
            (8, false),
            (9, false),
            (10, false),
            (11, true)
        ]
    );
}

#[test]
fn repeated_keys_and_merge_keys_inside_a_listener_like_pyyaml() {
    let tmp = tempfile::tempdir().unwrap();
    // serde_yaml_ng's Value refuses a repeated key; PyYAML keeps the last.
    let text = r#"listeners:
  - &plain
    port: 8008
    port: 8009
    type: http
    tls: false
    resources:
      - names: [client]
      - names: [federation, client]
        compress: true
  - <<: *plain
    port: 8448
    tls: true
  - <<: [{path: /run/first.sock, type: http}, {path: /run/second.sock, type: metrics}]
    resources: [{names: [media]}]
"#;
    let file = write(tmp.path(), "merge.yaml", text);
    assert_eq!(
        read_listeners(&[file]),
        vec![
            tcp(8009, false, "http", &["client", "federation"]),
            tcp(8448, true, "http", &["client", "federation"]),
            unix("/run/first.sock", "http", &["media"]),
        ]
    );
}

#[test]
fn bad_yaml_in_listeners_names_the_file_without_its_content() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write(
        tmp.path(),
        "bad.yaml",
        "listeners:\n  - port: 8008\n   type: [http\nregistration_shared_secret: \"hunter2\"\n",
    );
    let err = listeners(std::slice::from_ref(&bad)).unwrap_err();
    assert!(matches!(err, SynapseConfigError::Yaml { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    let missing = tmp.path().join("missing.yaml");
    let err = listeners(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(err, SynapseConfigError::Io { .. }), "{err}");
}
