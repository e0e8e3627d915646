//! Configuration: TOML, every key optional, unknown keys rejected. The command line
//! overrides it (see the binary).

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod heads;

pub use heads::RequestHeads;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/homeserver-sensor/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message names the line and column and what was expected.
    #[error("invalid configuration in {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value of the right type that is out of range or malformed. `key` is the full
    /// path (`detect.breadth.media.limits[1].window_s`); `line` is where the file sets it.
    #[error("invalid configuration in {path}{}: {key} = {value}: {why}", at_line(*line))]
    Value {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        value: String,
        why: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub discovery: Discovery,
    pub accounting: Accounting,
    pub attribution: Attribution,
    pub detect: crate::detect::DetectConfig,
    pub metrics: Metrics,
    pub kernel: Kernel,
    pub output: Output,
    pub ledger: crate::ledger::LedgerConfig,
}

/// Which processes are watched when no `--pid`/`--cgroup` is given.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Discovery {
    /// How often /proc is scanned for new or exited homeserver processes. New workers and
    /// restarts are picked up within this interval.
    pub rescan_ms: u64,
    /// The cgroup v2 hierarchy; found in /proc/self/mountinfo when unset.
    pub cgroup_root: Option<PathBuf>,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            rescan_ms: 500,
            cgroup_root: None,
        }
    }
}

/// How requests are attributed to clients, tokens and users.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Attribution {
    /// Request heads (endpoint, client, token, user per request): `"required"` (the
    /// default: refuse to run without them), `"optional"` (run bytes-only where they cannot
    /// be had, and say so), `"off"` (per-connection accounting only: nothing of the HTTP
    /// traffic leaves the kernel).
    pub request_heads: RequestHeads,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed (addresses or CIDR
    /// networks). Any other peer is the client itself, whatever headers it sends.
    pub trusted_proxies: Vec<String>,
    /// The homeserver's `server_name`, for `@localpart:server_name`; read from the watched
    /// Synapse's configuration (its `-c`/`--config-path`) when unset.
    pub server_name: Option<String>,
    /// The per-installation secret of token fingerprints, created (mode 0600) on first start.
    pub key_file: PathBuf,
}

/// Default location of the fingerprint key (systemd's `StateDirectory`).
pub const DEFAULT_KEY_FILE: &str = "/var/lib/homeserver-sensor/fingerprint.key";

impl Default for Attribution {
    fn default() -> Self {
        Self {
            request_heads: RequestHeads::Required,
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1/128".into()],
            server_name: None,
            key_file: PathBuf::from(DEFAULT_KEY_FILE),
        }
    }
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    pub enabled: bool,
    /// Address of `GET /metrics`; loopback by default (port 0 picks a free port, which the
    /// `sensor` start record names).
    pub listen: String,
    /// Turn on the kernel's per-program BPF statistics while the agent runs, for
    /// `homeserver_sensor_bpf_program_run_seconds_total` and `..._runs_total`. Off by
    /// default: every BPF program on the host (not only ours) then pays two clock reads per
    /// run. When an operator turned them on (`sysctl kernel.bpf_stats_enabled=1`) they are
    /// exported either way.
    pub program_stats: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: crate::metrics::DEFAULT_LISTEN.to_string(),
            program_stats: false,
        }
    }
}

/// Optional accounting that costs processes outside the watched ones (see README).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Accounting {
    /// Count send/receive calls per connection in cgroup mode too, with the socket
    /// tracepoints. Every process's socket calls then run one filter check (tens of ns).
    /// Off by default: the cgroup programs alone cost other processes nothing.
    pub call_counts: bool,
    /// Count syscalls by syscall and bytes read from files per watched process. Every
    /// syscall of every process on the host then takes the slow path (+~130 ns).
    pub syscalls: bool,
}

/// Kernel map sizes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Kernel {
    /// Connections tracked at once (LRU; evictions are counted).
    pub max_connections: u32,
    /// Ring buffer size in bytes: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
}

impl Default for Kernel {
    fn default() -> Self {
        Self {
            max_connections: sensor_common::sizes::CONNS_MAX,
            ring_buffer_bytes: sensor_common::sizes::EVENTS_BYTES,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Output {
    /// Where JSON lines go: a file path (appended to) or "-" for stdout.
    pub events: String,
    /// Alerts are also POSTed here as JSON, when set (see `output::webhook`).
    pub webhook: Option<Webhook>,
}

impl Default for Output {
    fn default() -> Self {
        Self {
            events: String::from("-"),
            webhook: None,
        }
    }
}

/// `[output.webhook]`: where alerts are POSTed, one JSON object per alert.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL. Exactly one of `url` and `url_file`.
    pub url: Option<String>,
    /// A file holding the URL, for a URL that carries a secret (as Matrix hookshot's
    /// generic webhooks do): an absolute path, or a bare name read from systemd's
    /// `$CREDENTIALS_DIRECTORY` (`LoadCredential=NAME:/etc/homeserver-sensor/NAME` in the
    /// unit), so the secret stays root-only. Read at start and at each reload.
    pub url_file: Option<PathBuf>,
    /// The least severe alert sent: `info`, `warning` (default) or `critical`.
    #[serde(default = "Webhook::default_min_severity")]
    pub min_severity: crate::detect::Severity,
    /// Give up on one attempt after this long.
    #[serde(default = "Webhook::default_timeout_ms")]
    pub timeout_ms: u64,
}

impl Webhook {
    fn default_min_severity() -> crate::detect::Severity {
        crate::detect::Severity::Warning
    }

    fn default_timeout_ms() -> u64 {
        5000
    }
}

impl Config {
    /// Parses a configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        match config.validate(path) {
            Ok(()) => Ok(config),
            Err(ConfigError::Value {
                path,
                key,
                value,
                why,
                ..
            }) => Err(ConfigError::Value {
                line: line_of(text, &key),
                path,
                key,
                value,
                why,
            }),
            Err(e) => Err(e),
        }
    }

    /// Reads `path`; a missing file at the default path means "all defaults".
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, why: &str| ConfigError::Value {
            path: path.to_owned(),
            line: None,
            key: key.to_owned(),
            value,
            why: why.to_owned(),
        };
        let rb = self.kernel.ring_buffer_bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            return Err(bad(
                "kernel.ring_buffer_bytes",
                rb.to_string(),
                "must be a power of two of at least 4096",
            ));
        }
        if self.kernel.max_connections == 0 {
            return Err(bad(
                "kernel.max_connections",
                "0".into(),
                "must be at least 1",
            ));
        }
        if !(50..=60_000).contains(&self.discovery.rescan_ms) {
            return Err(bad(
                "discovery.rescan_ms",
                self.discovery.rescan_ms.to_string(),
                "must be between 50 and 60000",
            ));
        }
        if let Err(e) =
            crate::client_ip::TrustedProxies::try_from(self.attribution.trusted_proxies.as_slice())
        {
            return Err(bad(
                "attribution.trusted_proxies",
                format!("{:?}", self.attribution.trusted_proxies),
                &e.to_string(),
            ));
        }
        if let Err(crate::detect::DetectConfigError::Value { key, value, why }) =
            self.detect.validate()
        {
            return Err(bad(&format!("detect.{key}"), value, &why));
        }
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad(
                "metrics.listen",
                self.metrics.listen.clone(),
                "must be an address and port, such as 127.0.0.1:9465 or [::1]:9465",
            ));
        }
        if self.output.events.is_empty() {
            return Err(bad(
                "output.events",
                "\"\"".into(),
                "must be a file path or \"-\" for stdout",
            ));
        }
        if let Err(crate::ledger::LedgerConfigError::Value { key, value, why }) =
            self.ledger.validate()
        {
            return Err(bad(&format!("ledger.{key}"), value, &why));
        }
        if let Some(hook) = &self.output.webhook {
            match (&hook.url, &hook.url_file) {
                (Some(url), None) => {
                    if let Err(why) = crate::output::webhook::check_url(url) {
                        return Err(bad("output.webhook.url", format!("{url:?}"), &why));
                    }
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(bad(
                        "output.webhook",
                        "{ ... }".into(),
                        "needs exactly one of `url` and `url_file`",
                    ));
                }
            }
            if !(100..=60_000).contains(&hook.timeout_ms) {
                return Err(bad(
                    "output.webhook.timeout_ms",
                    hook.timeout_ms.to_string(),
                    "must be between 100 and 60000",
                ));
            }
        }
        Ok(())
    }
}

/// The line (from 1) where `text` sets `key`, a dotted path with `[n]` for array elements
/// (`detect.volume.token[1].bytes`); the nearest enclosing key found when the exact one is
/// not in the file (a default that conflicts with a value that is).
fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut span = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(next) = item.get(name) else {
            break;
        };
        item = next;
        span = item_span(item).or(span);
        if let Some(i) = index {
            let Some(next) = item.get(i) else {
                break;
            };
            item = next;
            span = item_span(item).or(span);
        }
    }
    let offset = span?.start;
    Some(text[..offset.min(text.len())].matches('\n').count() + 1)
}

/// Where an item is written: a value's own span, or a table's header.
fn item_span(item: &toml_edit::Item) -> Option<std::ops::Range<usize>> {
    match item {
        toml_edit::Item::Value(v) => v.span(),
        toml_edit::Item::Table(t) => t.span(),
        toml_edit::Item::ArrayOfTables(a) => a.span(),
        toml_edit::Item::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.discovery.rescan_ms, 500);
        assert!(!c.accounting.call_counts);
        assert!(!c.accounting.syscalls);
        assert_eq!(c.kernel.ring_buffer_bytes, 4 << 20);
        assert_eq!(c.output.events, "-");
        assert_eq!(c.attribution.trusted_proxies, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(c.attribution.request_heads, RequestHeads::Required);
        assert_eq!(c.attribution.key_file, PathBuf::from(DEFAULT_KEY_FILE));
    }

    #[test]
    fn every_key() {
        let c = parse(
            r#"
            [discovery]
            rescan_ms = 250
            cgroup_root = "/sys/fs/cgroup"
            [accounting]
            call_counts = true
            syscalls = true
            [attribution]
            request_heads = false
            trusted_proxies = ["10.0.0.5", "fd00::/8"]
            server_name = "example.org"
            key_file = "/tmp/key"
            [kernel]
            max_connections = 1000
            ring_buffer_bytes = 65536
            [output]
            events = "/var/log/homeserver-sensor/events.jsonl"
            "#,
        )
        .unwrap();
        assert_eq!(c.discovery.rescan_ms, 250);
        assert_eq!(
            c.discovery.cgroup_root,
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert!(c.accounting.call_counts && c.accounting.syscalls);
        assert_eq!(c.kernel.max_connections, 1000);
        assert_eq!(c.attribution.trusted_proxies, ["10.0.0.5", "fd00::/8"]);
        assert_eq!(c.attribution.server_name.as_deref(), Some("example.org"));
        assert_eq!(c.attribution.request_heads, RequestHeads::Off);
        assert_eq!(c.output.events, "/var/log/homeserver-sensor/events.jsonl");
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let err = parse("[accounting]\ncall_count = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("call_count"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn wrong_type_is_explained() {
        let err = parse("[discovery]\nrescan_ms = \"fast\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rescan_ms") || err.contains("integer"),
            "{err}"
        );
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        let err = parse("[kernel]\nring_buffer_bytes = 5000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("power of two"), "{err}");
        let err = parse("[discovery]\nrescan_ms = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 50 and 60000"), "{err}");
        let err = parse("[metrics]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.listen"), "{err}");
        let err = parse("[output]\nevents = \"\"\n").unwrap_err().to_string();
        assert!(err.contains("output.events"), "{err}");
        let err = parse("[attribution]\ntrusted_proxies = [\"10.0.0.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.0/33"), "{err}");
    }

    #[test]
    fn value_errors_name_the_line() {
        let err = parse("[discovery]\n\n# faster\nrescan_ms = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("discovery.rescan_ms = 1"), "{err}");
        let err = parse("[kernel]\nring_buffer_bytes = 5000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        // Keys under [detect], in arrays of tables and inline arrays.
        let err = parse(
            "[detect.volume]\ntoken = [\n  { window_s = 60, threshold_bytes = 1 },\n  { window_s = 0, threshold_bytes = 5 },\n]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("detect.volume.token[1]"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        let err = parse(
            "[[detect.breadth.media.limits]]\nwindow_s = 60\nthreshold = 5\n\n[[detect.breadth.media.limits]]\nwindow_s = 60\nthreshold = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("detect.breadth.media.limits[1]"), "{err}");
        assert!(err.contains("line 7") || err.contains("line 6"), "{err}");
    }

    #[test]
    fn webhook() {
        let c =
            parse("[output.webhook]\nurl = \"https://hooks.example.org/webhook/abc\"\n").unwrap();
        let hook = c.output.webhook.unwrap();
        assert_eq!(
            hook.url.as_deref(),
            Some("https://hooks.example.org/webhook/abc")
        );
        assert_eq!(hook.min_severity, crate::detect::Severity::Warning);
        assert_eq!(hook.timeout_ms, 5000);
        let c = parse(
            "[output.webhook]\nurl = \"http://127.0.0.1:9000/x\"\nmin_severity = \"critical\"\ntimeout_ms = 1000\n",
        )
        .unwrap();
        assert_eq!(
            c.output.webhook.unwrap().min_severity,
            crate::detect::Severity::Critical
        );
        let err = parse("[output.webhook]\nurl = \"ftp://x/\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output.webhook.url") && err.contains("line 2"),
            "{err}"
        );
        let err = parse("[output.webhook]\nurl = \"http://x/\"\nmin_severity = \"loud\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("loud") && err.contains("line 3"), "{err}");
        let err = parse("[output.webhook]\nmin_severity = \"info\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of `url` and `url_file`"), "{err}");
        let err = parse("[output.webhook]\nurl = \"http://x/\"\nurl_file = \"hook\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one"), "{err}");
        let c = parse("[output.webhook]\nurl_file = \"webhook-url\"\n").unwrap();
        assert_eq!(
            c.output.webhook.unwrap().url_file,
            Some(PathBuf::from("webhook-url"))
        );
        let err = parse("[output.webhook]\nurl = \"http://x/\"\ntimeout_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timeout_ms") && err.contains("line 3"),
            "{err}"
        );
    }

    /// The `[output.webhook]` example has no default to compare with: drop it.
    fn without_webhook(text: &str) -> String {
        let mut out = String::new();
        let mut skip = false;
        for line in text.lines() {
            if line.starts_with('[') {
                skip = line == "[output.webhook]";
            }
            if !skip {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn the_readme_configuration_is_the_defaults() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Configuration").expect("section")..];
        let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").expect("end")];
        let c = parse(block).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, Config::default());
    }

    #[test]
    fn the_deployed_example_is_the_defaults_commented_out() {
        let example = include_str!("../../deploy/config.toml.example");
        assert_eq!(parse(example).unwrap(), Config::default());
        // Uncommented, every key shown keeps its default.
        let uncommented: String = example
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()) => {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let with_webhook = parse(&uncommented).unwrap_or_else(|e| panic!("{e}"));
        assert!(with_webhook.output.webhook.is_some());
        let mut c = parse(&without_webhook(&uncommented)).unwrap_or_else(|e| panic!("{e}"));
        // Two keys are found at run time when unset; the example shows a typical value.
        assert_eq!(
            c.discovery.cgroup_root,
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(c.attribution.server_name.as_deref(), Some("example.org"));
        c.discovery.cgroup_root = None;
        c.attribution.server_name = None;
        assert_eq!(c, Config::default());
    }

    #[test]
    fn missing_default_file_means_defaults_but_missing_named_file_is_an_error() {
        // The default path does not exist on a development machine without the package.
        if !Path::new(DEFAULT_PATH).exists() {
            assert_eq!(Config::load(None).unwrap(), Config::default());
        }
        let err = Config::load(Some(Path::new("/nonexistent/hs.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/hs.toml"));
    }
}
