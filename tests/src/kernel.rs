//! What the running kernel offers, found independently of the agent (from the kernel's own
//! BTF and symbol table), so that a test on an older kernel can check that the agent refuses
//! a feature with the right reason instead of trusting the agent's word for it.

use homeserver_sensor::config::{Config, RequestHeads};
use serde_json::Value;

/// The kernel release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether the running kernel is older than `major.minor`.
pub fn older_than(major: u32, minor: u32) -> bool {
    let release = release();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (next(), next()) < (major, minor)
}

/// Whether `sock:sock_send_length` exists (Linux 6.3+): its BTF type
/// `btf_trace_sock_send_length` is in the kernel's BTF.
pub fn has_sock_length_tracepoints() -> bool {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").unwrap_or_default();
    contains(&btf, b"btf_trace_sock_send_length\0")
}

/// Whether the kernel has the `bpf_loop` helper (Linux 5.17+), which the request-head
/// program needs: its function is in `/proc/kallsyms` (root sees the names).
pub fn has_bpf_loop() -> bool {
    let syms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    syms.lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf_loop"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Prints, for `cargo xtask vm-test` and for whoever reads the output, that the rest of a test
/// does not apply to this kernel and why. The test has checked the agent's refusal first.
pub fn unavailable(feature: &str, why: &str) {
    println!(
        "homeserver-sensor-tests: unavailable on {}: {feature}: {why}",
        release()
    );
}

/// Whether the agent captured request heads, according to its `start` record. On a kernel
/// without `bpf_loop` it must have said so, with the reason: this asserts it and returns
/// false; on any other kernel it asserts heads are on and returns true.
pub fn request_heads(start: &Value) -> bool {
    let refused = &start["unavailable"]["request_heads"];
    if has_bpf_loop() {
        assert!(refused.is_null(), "request heads refused: {start}");
        return true;
    }
    let why = refused.as_str().unwrap_or_else(|| {
        panic!("this kernel has no bpf_loop but the agent did not say heads are off: {start}")
    });
    assert!(
        why.contains("request heads need the bpf_loop helper of Linux 5.17 or later"),
        "{why}"
    );
    assert!(
        start["attached"].as_array().is_some_and(|a| a
            .iter()
            .any(|m| m == "cgroup_skb/ingress (without request heads)")),
        "{start}"
    );
    unavailable("request heads", why);
    false
}

/// Request heads optional: byte counts are enough for the caller's test.
pub fn heads_optional(mut config: Config) -> Config {
    config.attribution.request_heads = RequestHeads::Optional;
    config
}

/// On a kernel without `sock:sock_send_length` (before 6.3) a process in a shared cgroup
/// cannot be watched even with request heads optional: the agent must refuse, saying why
/// and what to do.
pub fn refuses_shared_cgroup(pid: u32) {
    let err = crate::agent_start_error_with(
        homeserver_sensor::agent::Targets {
            pids: vec![pid],
            cgroups: vec![],
        },
        heads_optional(Config::default()),
    );
    for part in [
        "is shared",
        "the socket tracepoints are unavailable",
        "sock:sock_send_length needs Linux 6.3 or later",
        "Run the homeserver in its own cgroup",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
    unavailable("the tracepoint mechanism", &err);
}
