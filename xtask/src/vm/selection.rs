//! Which privileged tests run in the VM.
//!
//! The guest has busybox and the project's own static binaries, nothing else: every test of
//! every integration test executable runs, except the few listed here with the program they
//! need. `/init` reports each of these as skipped, with the reason, so a run never looks
//! more complete than it was; a new test that needs another program fails loudly in the VM
//! until it is listed.

/// Tests that cannot run in the initramfs: `binary::test` (or `binary::` for all of a
/// binary's tests) and why.
pub const EXCLUDED: &[(&str, &str)] = &[
    (
        "homeserver::",
        "needs a real Synapse (python3 venv from PyPI) and nginx",
    ),
    (
        "scenarios::",
        "needs a real Synapse (python3 venv from PyPI) and nginx",
    ),
    ("report::", "needs a real Synapse (python3 venv from PyPI)"),
    (
        "discovery::new_synapse_workers_are_watched_within_a_second_and_dropped_when_gone",
        "needs python3 (the stand-in Synapse)",
    ),
    ("listeners::", "needs python3 (the stand-in Synapse)"),
    (
        "cli::run_with_nothing_to_watch_says_what_discovery_looks_for",
        "needs python3 (the stand-in Synapse)",
    ),
    (
        "requests::proxied_requests_name_the_client_the_token_and_the_user",
        "needs nginx",
    ),
    (
        "cli::without_privilege_says_what_to_do",
        "needs setpriv (util-linux)",
    ),
];

/// The tests to run: all but [`EXCLUDED`], optionally only those whose id contains `only`.
pub struct Selection {
    pub only: Option<String>,
}

impl Selection {
    /// `/t/exclude` for `/init`: one `binary::test reason...` per line.
    pub fn exclude_file(&self) -> String {
        EXCLUDED
            .iter()
            .map(|(id, why)| format!("{id} {why}\n"))
            .collect()
    }

    /// One line per exclusion, for the terminal.
    pub fn describe(&self) -> String {
        let mut text = String::from(
            "every privileged test except those that need programs the VM does not have:",
        );
        for (id, why) in EXCLUDED {
            text.push_str(&format!("\n    {id} ({why})"));
        }
        if let Some(only) = &self.only {
            text.push_str(&format!("\n  and only tests whose name contains {only:?}"));
        }
        text
    }
}
