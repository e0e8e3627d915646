//! homeserver-sensor: the agent library. Data flows one way through the stages:
//! `discover` (which processes and cgroups) → `plan` (which mechanism watches each) →
//! `load` (programs, maps, attach) → `decode` (ring buffer bytes to typed events) →
//! `attribute` (connections to processes and addresses) → `output` (JSON lines).
//! `agent` runs them; the binary in `bin/` only parses the command line.

pub mod agent;
pub mod attribute;
pub mod config;
pub mod decode;
pub mod discover;
pub mod load;
pub mod output;
pub mod plan;
pub mod syscalls;
pub mod time;
