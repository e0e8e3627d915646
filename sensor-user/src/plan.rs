//! Choosing a mechanism for each group of watched processes, from what the kernel offers.
//!
//! - **cgroup** (preferred): cgroup_skb ingress/egress and sock_ops attached to the cgroup
//!   v2 directory of the watched processes. The kernel runs them only for that cgroup's
//!   sockets, so every other process on the host pays nothing. Needs a cgroup that holds
//!   only watched processes (systemd gives every service one), or `--cgroup`.
//! - **tracepoint** (fallback): BTF tracepoints on `sock:sock_send_length`,
//!   `sock:sock_recv_length` (Linux 6.3+) and `sock:inet_sock_set_state`, filtered by
//!   process id. Every process's socket calls then run a filter check (one helper and a
//!   map lookup); file syscalls are untouched. It counts bytes only: no request heads. So
//!   it is used only when `attribution.request_heads` is `"optional"` or `"off"`; with the
//!   default, `"required"`, a homeserver in a shared cgroup is an error that says how to
//!   give it a cgroup of its own.

use std::fmt;

use crate::config::RequestHeads;

/// A set of processes that share a cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// cgroup v2 path relative to the hierarchy's root, e.g. `/system.slice/matrix-synapse.service`.
    pub cgroup: String,
    /// The processes to watch in it.
    pub pids: Vec<u32>,
    /// The operator named this cgroup (`--cgroup`): watch all of it.
    pub explicit_cgroup: bool,
    /// `None` if the cgroup holds only watched processes (and their children), else why not.
    pub not_dedicated: Option<String>,
}

/// What the running kernel offers, found by loading the programs. The cgroup programs are
/// not listed: every supported kernel has them, and the agent does not start without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// The ingress program that captures request heads loaded (else the basic one did).
    pub request_heads: Result<(), String>,
    /// The BTF tracepoints on sock_send_length / sock_recv_length / inet_sock_set_state loaded.
    pub sock_tracepoints: Result<(), String>,
    /// The raw syscall tracepoints loaded.
    pub syscall_tracepoints: Result<(), String>,
}

/// The mechanism chosen for a group, with the reason to print at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Cgroup { why: String },
    Tracepoint { why: String },
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Cgroup { .. } => "cgroup",
            Decision::Tracepoint { .. } => "tracepoint",
        }
    }

    pub fn why(&self) -> &str {
        match self {
            Decision::Cgroup { why } | Decision::Tracepoint { why } => why,
        }
    }
}

/// No mechanism can watch a group on this kernel.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PlanError {
    pub cgroup: String,
    pub pids: Vec<u32>,
    pub reason: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot watch PIDs {:?} in cgroup {}: {}",
            self.pids, self.cgroup, self.reason
        )
    }
}

/// Picks the mechanism for one group. `heads` is what the operator asks of request heads:
/// they are read only by the cgroup programs, so a group in a shared cgroup can be watched
/// (with the socket tracepoints, bytes only) only when heads are optional or off.
pub fn decide(
    group: &Group,
    features: &Features,
    heads: RequestHeads,
) -> Result<Decision, PlanError> {
    let fail = |reason: String| PlanError {
        cgroup: group.cgroup.clone(),
        pids: group.pids.clone(),
        reason,
    };
    if group.explicit_cgroup {
        return Ok(Decision::Cgroup {
            why: format!("cgroup {} named with --cgroup", group.cgroup),
        });
    }
    let Some(not_dedicated) = &group.not_dedicated else {
        return Ok(Decision::Cgroup {
            why: format!(
                "cgroup {} holds only the watched processes: cgroup programs cost other processes nothing",
                group.cgroup
            ),
        });
    };
    let shared = format!("cgroup {} is shared ({not_dedicated})", group.cgroup);
    if heads == RequestHeads::Required {
        return Err(fail(format!(
            "{shared}, and request heads (endpoints, tokens, users, client addresses) are read only by cgroup programs on a cgroup of the homeserver's own. {OWN_CGROUP}; or set attribution.request_heads = \"optional\" to watch it with byte counts only"
        )));
    }
    match &features.sock_tracepoints {
        Ok(()) => Ok(Decision::Tracepoint {
            why: format!(
                "{shared}; socket tracepoints filtered by PID instead, byte counts only (other processes' socket calls pay one filter check; run the homeserver in its own cgroup, as systemd does, to avoid it)"
            ),
        }),
        Err(e) => Err(fail(format!(
            "{shared}, and the socket tracepoints are unavailable ({e}; sock:sock_send_length needs Linux 6.3 or later). {OWN_CGROUP}"
        ))),
    }
}

/// How to give the homeserver a cgroup of its own, for the errors that need one.
const OWN_CGROUP: &str = "Run the homeserver in its own cgroup: as a systemd service (systemd gives every service one; for a homeserver started by hand, `systemd-run --unit=synapse --same-dir -- python -m synapse.app.homeserver -c homeserver.yaml`), or pass --cgroup with a cgroup that holds only the homeserver";

#[cfg(test)]
mod tests {
    use super::*;

    fn group(explicit: bool, not_dedicated: Option<&str>) -> Group {
        Group {
            cgroup: "/system.slice/matrix-synapse.service".into(),
            pids: vec![100, 101],
            explicit_cgroup: explicit,
            not_dedicated: not_dedicated.map(String::from),
        }
    }

    fn features(tp: bool) -> Features {
        Features {
            request_heads: Ok(()),
            sock_tracepoints: if tp { Ok(()) } else { Err("EINVAL".into()) },
            syscall_tracepoints: Ok(()),
        }
    }

    #[test]
    fn dedicated_cgroup_uses_cgroup_programs() {
        for heads in [
            RequestHeads::Required,
            RequestHeads::Optional,
            RequestHeads::Off,
        ] {
            let d = decide(&group(false, None), &features(true), heads).unwrap();
            assert_eq!(d.name(), "cgroup");
            assert!(d.why().contains("cost other processes nothing"));
        }
    }

    #[test]
    fn shared_cgroup_is_refused_while_heads_are_required() {
        let e = decide(
            &group(false, Some("PID 7 (bash) is not watched")),
            &features(true),
            RequestHeads::Required,
        )
        .unwrap_err();
        let msg = e.to_string();
        for part in [
            "PID 7 (bash)",
            "read only by cgroup programs",
            "systemd-run --unit=synapse",
            "--cgroup",
            "attribution.request_heads = \"optional\"",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
    }

    #[test]
    fn shared_cgroup_falls_back_to_tracepoints_when_heads_may_be_missing() {
        for heads in [RequestHeads::Optional, RequestHeads::Off] {
            let d = decide(
                &group(false, Some("PID 7 (bash) is not watched")),
                &features(true),
                heads,
            )
            .unwrap();
            assert_eq!(d.name(), "tracepoint");
            assert!(d.why().contains("PID 7 (bash)"), "{}", d.why());
            assert!(d.why().contains("byte counts only"), "{}", d.why());
        }
    }

    #[test]
    fn shared_cgroup_without_socket_tracepoints_is_a_clear_error() {
        let e = decide(
            &group(false, Some("the root cgroup")),
            &features(false),
            RequestHeads::Optional,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("Linux 6.3"), "{msg}");
        assert!(msg.contains("--cgroup"), "{msg}");
    }

    #[test]
    fn explicit_cgroup_is_watched_whole_even_if_shared() {
        let d = decide(
            &group(true, Some("PID 7 (bash)")),
            &features(false),
            RequestHeads::Required,
        )
        .unwrap();
        assert_eq!(d.name(), "cgroup");
    }
}
