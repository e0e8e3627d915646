//! Configuration: TOML, every key optional, unknown keys rejected. The command line
//! overrides it (see the binary).

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod check;
mod heads;
mod parse;

pub use heads::RequestHeads;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/homeserver-sensor/config.toml";

/// Why a configuration cannot be used. Each message is one line that names the file, and
/// the line and key when known; the cause of [`ConfigError::Read`] is part of its message,
/// not its `source()`, so printing the error chain does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the configuration file {}: {cause}; {}",
        path.display(), read_hint(cause)
    )]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Not TOML, a key that does not exist, or a value of the wrong type: toml's message,
    /// on one line, with the line and the key (the whole entry, for one inside an array or
    /// an inline table) where it is.
    #[error(
        "invalid configuration in {}{}: {}{message}",
        path.display(), at_line(*line), key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
    )]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    /// A value of the right type that is out of range or malformed. `key` is the full
    /// path (`detect.breadth.media.limits[1].window_s`); `line` is where the file sets it.
    #[error("invalid configuration in {}{}: {key} = {value}: {why}", path.display(), at_line(*line))]
    Value {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        value: String,
        why: String,
    },
    /// Every error of a file that has more than one, in the order of the file: one line
    /// each.
    #[error("{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several { errors: Vec<ConfigError> },
}

impl ConfigError {
    /// The errors this stands for: itself, or each of [`ConfigError::Several`].
    pub fn each(&self) -> &[ConfigError] {
        match self {
            ConfigError::Several { errors } => errors,
            one => std::slice::from_ref(one),
        }
    }

    /// One error for a list of them (not empty).
    fn from_list(mut errors: Vec<ConfigError>) -> ConfigError {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ConfigError::Several { errors }
        }
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

fn read_hint(cause: &std::io::Error) -> &'static str {
    match cause.kind() {
        std::io::ErrorKind::NotFound => "check the path given with -c",
        std::io::ErrorKind::PermissionDenied => {
            "run as root, or make the file readable by the agent's user"
        }
        _ => "check that it is a readable file",
    }
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
    /// The per-installation secret of token fingerprints. Created (mode 0600) on first start
    /// at the default location only; a key missing anywhere else is an error (a typo here
    /// must not start a new key, whose fingerprints would not match the ledger's).
    pub key_file: PathBuf,
}

/// Default location of the fingerprint key (systemd's `StateDirectory`), the only place a
/// missing key is created.
pub use crate::identity::DEFAULT_KEY_FILE;

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
    /// Parses a configuration text; `path` only names it in errors. Every error of the file
    /// is reported (several as [`ConfigError::Several`]), each with its line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        parse::parse(text, path).map_err(ConfigError::from_list)
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
            Err(cause) => Err(ConfigError::Read {
                path: path.to_owned(),
                cause,
            }),
        }
    }

    /// Every value of the right type that is out of range or malformed, in the order of
    /// the sections. `[detect]` and `[ledger]` name their first only.
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, value: String, why: &str| {
            problems.push(Problem {
                key: key.to_owned(),
                value,
                why: why.to_owned(),
            });
        };
        let rb = self.kernel.ring_buffer_bytes;
        if !rb.is_power_of_two() || rb < 4096 {
            bad(
                "kernel.ring_buffer_bytes",
                rb.to_string(),
                "must be a power of two of at least 4096",
            );
        }
        if self.kernel.max_connections == 0 {
            bad("kernel.max_connections", "0".into(), "must be at least 1");
        }
        if !(50..=60_000).contains(&self.discovery.rescan_ms) {
            bad(
                "discovery.rescan_ms",
                self.discovery.rescan_ms.to_string(),
                "must be between 50 and 60000",
            );
        }
        if let Err(e) =
            crate::client_ip::TrustedProxies::try_from(self.attribution.trusted_proxies.as_slice())
        {
            bad(
                "attribution.trusted_proxies",
                format!("{:?}", self.attribution.trusted_proxies),
                &e.to_string(),
            );
        }
        if let Err(crate::detect::DetectConfigError::Value { key, value, why }) =
            self.detect.validate()
        {
            bad(&format!("detect.{key}"), value, &why);
        }
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            bad(
                "metrics.listen",
                self.metrics.listen.clone(),
                "must be an address and port, such as 127.0.0.1:9465 or [::1]:9465",
            );
        }
        if self.output.events.is_empty() {
            bad(
                "output.events",
                "\"\"".into(),
                "must be a file path or \"-\" for stdout",
            );
        }
        if let Err(crate::ledger::LedgerConfigError::Value { key, value, why }) =
            self.ledger.validate()
        {
            bad(&format!("ledger.{key}"), value, &why);
        }
        if let Some(hook) = &self.output.webhook {
            match (&hook.url, &hook.url_file) {
                (Some(url), None) => {
                    if let Err(why) = crate::output::webhook::check_url(url) {
                        bad("output.webhook.url", format!("{url:?}"), &why);
                    }
                }
                (None, Some(_)) => {}
                _ => bad(
                    "output.webhook",
                    "{ ... }".into(),
                    "needs exactly one of `url` and `url_file`",
                ),
            }
            if !(100..=60_000).contains(&hook.timeout_ms) {
                bad(
                    "output.webhook.timeout_ms",
                    hook.timeout_ms.to_string(),
                    "must be between 100 and 60000",
                );
            }
        }
        problems
    }
}

/// A value of the right type that is out of range or malformed.
struct Problem {
    /// The full key, `detect.volume.token[0].window_s`.
    key: String,
    value: String,
    why: String,
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
        assert_eq!(
            err.to_string(),
            "cannot read the configuration file /nonexistent/hs.toml: No such file or \
             directory (os error 2); check the path given with -c"
        );
        // The cause is in the message, so it is not the source too: a printer walking the
        // chain would say it twice.
        assert!(std::error::Error::source(&err).is_none());
    }

    /// The lines of an error's message, which must each start with the file and line.
    fn lines_of(err: &ConfigError) -> Vec<String> {
        let text = err.to_string();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), err.each().len(), "one line per error: {text}");
        lines
    }

    #[test]
    fn every_error_of_a_file_is_named_with_its_line_in_file_order() {
        let err = parse(
            "[kernel]\n\
             max_connections = 0\n\
             ring_bufer_bytes = 4096\n\
             [discovery]\n\
             rescan_ms = \"fast\"\n\
             [metrics]\n\
             listen = \"localhost\"\n\
             [kernal]\n\
             x = 1\n\
             [detect.volume]\n\
             token = [{ window_s = 0, threshold_bytes = 1 }]\n",
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Several { .. }), "{err}");
        let lines = lines_of(&err);
        let expected = [
            (2, "kernel.max_connections = 0: must be at least 1"),
            (
                3,
                "kernel.ring_bufer_bytes: unknown field `ring_bufer_bytes`",
            ),
            (
                5,
                "discovery.rescan_ms: invalid type: string \"fast\", expected u64",
            ),
            (7, "metrics.listen = localhost: must be an address and port"),
            (8, "kernal: unknown field `kernal`"),
            (11, "detect.volume.token[0].window_s = 0: must be between 1"),
        ];
        assert_eq!(lines.len(), expected.len(), "{err}");
        for (line, (n, what)) in lines.iter().zip(expected) {
            let start = format!("invalid configuration in test.toml, line {n}: {what}");
            assert!(
                line.starts_with(&start),
                "{start:?} is not the start of {line:?}"
            );
        }
    }

    #[test]
    fn a_syntax_error_is_one_error_on_one_line() {
        let err = parse("[discovery\nrescan_ms = 1\n[kernal]\n").unwrap_err();
        let lines = lines_of(&err);
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0]
                .starts_with("invalid configuration in test.toml, line 1: invalid table header"),
            "{err}"
        );
    }

    #[test]
    fn an_entry_read_again_is_not_checked_twice() {
        // `url` of the wrong type is left out of the second reading; the webhook then has
        // neither `url` nor `url_file`, which is not a second error.
        let err = parse("[output.webhook]\nurl = 5\n").unwrap_err();
        let lines = lines_of(&err);
        assert_eq!(
            lines,
            [
                "invalid configuration in test.toml, line 2: output.webhook.url: invalid type: \
              integer `5`, expected a string"
            ]
        );
    }

    #[test]
    fn dotted_keys_inline_tables_and_arrays_of_tables() {
        let err = parse(
            "discovery.rescan_ms = \"x\"\n\
             [detect.volume]\n\
             token = [{ window_s = 60, threshold = 5 }]\n\
             [[detect.breadth.media.limits]]\n\
             window_s = 60\n",
        )
        .unwrap_err();
        let lines = lines_of(&err);
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines[0].starts_with(
                "invalid configuration in test.toml, line 1: discovery.rescan_ms: invalid type"
            ),
            "{err}"
        );
        assert!(
            lines[1].starts_with("invalid configuration in test.toml, line 3: detect.volume.token: unknown field `threshold`"),
            "{err}"
        );
        assert!(
            lines[2].starts_with("invalid configuration in test.toml, line 4: detect.breadth.media.limits[0]: missing field `threshold`"),
            "{err}"
        );
    }

    #[test]
    fn a_file_of_garbage_stops_at_twenty_errors() {
        let text: String = (0..50).map(|i| format!("key{i} = {i}\n")).collect();
        let err = parse(&text).unwrap_err();
        let lines = lines_of(&err);
        assert_eq!(lines.len(), 20, "{err}");
        assert!(lines[19].contains("line 20: key19: unknown field"), "{err}");
    }
}
