//! Fixtures for the privileged integration tests: a cgroup, the test HTTP server, nginx, a
//! stand-in Synapse, the agent running in-process, and clients that count every byte they
//! send and receive.
//!
//! Everything a fixture starts is stopped on drop (processes by PID, cgroups removed).

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

mod agent;
mod cgroup;
mod client;
mod homeserver;
pub mod kernel;
mod process;
mod scenario;

pub use agent::{
    Agent, agent_start_error, agent_start_error_with, all_closed, connection_of, read_records,
    sensor_record, wait_for_records,
};
pub use cgroup::{Cgroup, cgroup_program_count, cgroup_program_ids, detach_link_of};
pub use client::{Client, synapse_token, test_server_response_len};
pub use homeserver::{
    AccessLogEntry, Homeserver, HomeserverOptions, HttpResponse, Media, MediaKind,
    REGISTRATION_SHARED_SECRET, Role, Room, SERVER_NAME, SYNAPSE_VERSION, Seed, User, http_request,
    parse_access_log_line, synapse_venv,
};
pub use process::{FakeSynapse, Nginx, Process, Server, sibling_binary};
pub use scenario::{
    AdminReport, Auth, BenignReport, Breadth, DirectReport, Exchange, HarvestReport, MediaReport,
    Milestone, Response, RoomReport, SEARCH_TERMS, ScrapeReport, Session, Tally, abuse_admin,
    benign, direct_keepalive, encode, harvest, redact, scrape, scrape_with,
};

/// Fails the test early, with a clear message, when not run as root.
pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the privileged tests load eBPF programs: run them as root with `cargo xtask test`"
    );
}

pub(crate) static SEQ: AtomicU32 = AtomicU32::new(0);

/// A temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "hs-test-{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
