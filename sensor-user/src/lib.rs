//! homeserver-sensor: the agent library. Data flows one way through the stages:
//! `discover` (which processes and cgroups) → `plan` (which mechanism watches each) →
//! `load` (programs, maps, attach) → `decode` (ring buffer bytes to typed events) →
//! `attribute` (connections to processes) and `requests` (request heads to endpoints,
//! client addresses, tokens and users, with `http`, `endpoint`, `client_ip`, `identity`)
//! → `detect` (rules over windows, alerts) → `output` (JSON lines).
//! `agent` runs them; the binary in `bin/` only parses the command line.

pub mod agent;
pub mod attribute;
pub mod client_ip;
pub mod config;
pub mod decode;
pub mod detect;
pub mod discover;
pub mod endpoint;
pub mod http;
pub mod identity;
pub mod ledger;
pub mod load;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod report;
pub mod requests;
pub mod syscalls;
pub mod time;
