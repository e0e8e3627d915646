//! Choosing a mechanism for each group of watched processes, from what the kernel offers.
//!
//! - **cgroup** (preferred): cgroup_skb ingress/egress and sock_ops attached to the cgroup
//!   v2 directory of the watched processes. The kernel runs them only for that cgroup's
//!   sockets, so every other process on the host pays nothing. Needs a cgroup that holds
//!   only watched processes (systemd gives every service one), or `--cgroup`.
//! - **tracepoint** (fallback): BTF tracepoints on `sock:sock_send_length`,
//!   `sock:sock_recv_length` (Linux 6.3+) and `sock:inet_sock_set_state`, filtered by
//!   process id. Every process's socket calls then run a filter check (one helper and a
//!   map lookup); file syscalls are untouched.

use std::fmt;

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

/// What the running kernel offers, found by loading the programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// cgroup_skb and sock_ops programs loaded.
    pub cgroup_programs: Result<(), String>,
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

/// Picks the mechanism for one group.
pub fn decide(group: &Group, features: &Features) -> Result<Decision, PlanError> {
    let fail = |reason: String| PlanError {
        cgroup: group.cgroup.clone(),
        pids: group.pids.clone(),
        reason,
    };
    let cgroup_ok = features.cgroup_programs.is_ok();
    if group.explicit_cgroup {
        return match &features.cgroup_programs {
            Ok(()) => Ok(Decision::Cgroup {
                why: format!("cgroup {} named with --cgroup", group.cgroup),
            }),
            Err(e) => Err(fail(format!("the kernel refused the cgroup programs: {e}"))),
        };
    }
    match (&group.not_dedicated, cgroup_ok) {
        (None, true) => Ok(Decision::Cgroup {
            why: format!(
                "cgroup {} holds only the watched processes: cgroup programs cost other processes nothing",
                group.cgroup
            ),
        }),
        (not_dedicated, _) => {
            let why_not_cgroup = match (not_dedicated, &features.cgroup_programs) {
                (Some(reason), _) => format!("cgroup {} is shared ({reason})", group.cgroup),
                (None, Err(e)) => format!("the kernel refused the cgroup programs ({e})"),
                (None, Ok(())) => unreachable!("handled above"),
            };
            match &features.sock_tracepoints {
                Ok(()) => Ok(Decision::Tracepoint {
                    why: format!(
                        "{why_not_cgroup}; socket tracepoints filtered by PID instead (other processes' socket calls pay one filter check; run the homeserver in its own cgroup, as systemd does, to avoid it)"
                    ),
                }),
                Err(e) => Err(fail(format!(
                    "{why_not_cgroup}, and the socket tracepoints are unavailable ({e}; sock:sock_send_length needs Linux 6.3 or later). Run the homeserver in its own cgroup (systemd does this for every service) or pass --cgroup with a cgroup that holds only the homeserver"
                ))),
            }
        }
    }
}

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

    fn features(cgroup: bool, tp: bool) -> Features {
        let r = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err("EINVAL".to_string())
            }
        };
        Features {
            cgroup_programs: r(cgroup),
            request_heads: r(cgroup),
            sock_tracepoints: r(tp),
            syscall_tracepoints: Ok(()),
        }
    }

    #[test]
    fn dedicated_cgroup_uses_cgroup_programs() {
        let d = decide(&group(false, None), &features(true, true)).unwrap();
        assert_eq!(d.name(), "cgroup");
        assert!(d.why().contains("cost other processes nothing"));
    }

    #[test]
    fn shared_cgroup_falls_back_to_tracepoints_and_says_why() {
        let d = decide(
            &group(false, Some("PID 7 (bash) is not watched")),
            &features(true, true),
        )
        .unwrap();
        assert_eq!(d.name(), "tracepoint");
        assert!(d.why().contains("PID 7 (bash)"), "{}", d.why());
    }

    #[test]
    fn shared_cgroup_without_socket_tracepoints_is_a_clear_error() {
        let e = decide(
            &group(false, Some("the root cgroup")),
            &features(true, false),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("Linux 6.3"), "{msg}");
        assert!(msg.contains("--cgroup"), "{msg}");
    }

    #[test]
    fn explicit_cgroup_is_watched_whole_even_if_shared() {
        let d = decide(&group(true, Some("PID 7 (bash)")), &features(true, false)).unwrap();
        assert_eq!(d.name(), "cgroup");
    }

    #[test]
    fn refused_cgroup_programs_fall_back() {
        let d = decide(&group(false, None), &features(false, true)).unwrap();
        assert_eq!(d.name(), "tracepoint");
        assert!(d.why().contains("refused the cgroup programs"));
        assert!(decide(&group(true, None), &features(false, true)).is_err());
    }
}
