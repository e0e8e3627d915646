//! Loading the programs, what the verifier made of each, and which refusals are fatal.
//!
//! Every program the agent may use is loaded at start, and the kernel's verified
//! instruction count is kept for each (`bpf_prog_info.verified_insns`, Linux 5.16+; for a
//! refused program, the `processed N insns` of the verifier's log): the verifier gives up
//! at 1,000,000, and a program that verifies near that limit is switched off by the next
//! compiler, linker or kernel that adds a little. The start record and the metrics show the
//! count per program; the privileged tests assert a fifth of the limit on every kernel of
//! the test set.
//!
//! A refusal is fatal when the kernel should have accepted the program: the cgroup programs
//! (cgroup_skb and sock_ops exist on every kernel the sensor supports) and, unless the
//! operator made them optional, request heads on a kernel with `bpf_loop` (5.17+). Running
//! on without them would be running blind while looking healthy.

use std::collections::BTreeMap;

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, CgroupSkb, ProgramError, RawTracePoint, SockOps},
};
use sensor_common::programs;
use serde::Serialize;

use super::{LoadError, kernel_older_than, program_mut};
use crate::config::RequestHeads;

/// The verifier's budget: it refuses a program after processing this many instructions
/// (`BPF_COMPLEXITY_LIMIT_INSNS`, include/linux/bpf.h).
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// The most instructions any of our programs may take to verify, a fifth of the
/// verifier's budget: what the privileged tests assert on every kernel of the set.
pub const VERIFIED_INSNS_BUDGET: u32 = VERIFIER_LIMIT / 5;

/// `bpf_loop`, which the request-head program needs.
pub const BPF_LOOP_SINCE: (u8, u8) = (5, 17);

/// Set (to anything) in the environment of a test that wants the kernel to refuse the
/// request-head program: the agent then loads `conn_ingress_refused`, a twin that every
/// verifier rejects, in its place.
pub const TEST_REFUSE_HEADS_ENV: &str = "HOMESERVER_SENSOR_TEST_REFUSE_HEADS";

/// What loading one program gave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProgramLoad {
    /// The kernel accepted it.
    pub loaded: bool,
    /// Instructions the verifier processed: `bpf_prog_info.verified_insns` (Linux 5.16+),
    /// or from the verifier's log when it refused the program; `None` when the kernel
    /// tells neither.
    pub verified_insns: Option<u32>,
}

/// The cgroup programs, loaded.
pub(super) struct CgroupPrograms {
    /// The ingress program to attach: with request heads, or the basic one.
    pub ingress: &'static str,
    /// `Err(why)` when request heads are not available (turned off, optional and refused,
    /// or the kernel lacks `bpf_loop`).
    pub request_heads: Result<(), String>,
}

/// Loads the cgroup programs, recording each in `loads`. Their refusal is fatal (see the
/// module documentation), but for the request-head program when heads are optional or the
/// kernel lacks `bpf_loop`: then the basic ingress program is loaded instead.
pub(super) fn load_cgroup_programs(
    ebpf: &mut Ebpf,
    heads: RequestHeads,
    loads: &mut BTreeMap<&'static str, ProgramLoad>,
) -> Result<CgroupPrograms, LoadError> {
    let refuse_heads = std::env::var_os(TEST_REFUSE_HEADS_ENV).is_some();
    let mut request_heads = Err(format!(
        "turned off by attribution.request_heads = \"{}\"",
        RequestHeads::Off
    ));
    let mut ingress = programs::SKB_INGRESS_BASIC;
    if heads.wanted() {
        let name = if refuse_heads {
            programs::SKB_INGRESS_REFUSED
        } else {
            programs::SKB_INGRESS
        };
        match load_one(ebpf, name, loads, |ebpf| {
            Ok(program_mut::<CgroupSkb>(ebpf, name)?.load()?)
        }) {
            Ok(()) => {
                ingress = name;
                request_heads = Ok(());
            }
            Err(refusal) => match kernel_older_than(BPF_LOOP_SINCE) {
                Some(release) => {
                    request_heads = Err(format!(
                        "request heads need the bpf_loop helper of Linux 5.17 or later (this kernel is {release}), so user, token and client attribution is off: {}",
                        refusal.reason
                    ));
                }
                None if heads == RequestHeads::Required => {
                    return Err(refusal.fatal(
                        "which reads request heads (without it the sensor sees no request, endpoint, token, user or client address)",
                        "; set attribution.request_heads = \"optional\" to run with byte counts only",
                    ));
                }
                None => request_heads = Err(refusal.brief()),
            },
        }
    }
    if ingress == programs::SKB_INGRESS_BASIC {
        load_fatal(
            ebpf,
            programs::SKB_INGRESS_BASIC,
            loads,
            "which counts incoming bytes",
        )?;
    }
    load_fatal(
        ebpf,
        programs::SKB_EGRESS,
        loads,
        "which counts outgoing bytes",
    )?;
    let name = programs::SOCK_OPS;
    load_one(ebpf, name, loads, |ebpf| {
        Ok(program_mut::<SockOps>(ebpf, name)?.load()?)
    })
    .map_err(|r| r.fatal("which follows each connection's life", ""))?;
    Ok(CgroupPrograms {
        ingress,
        request_heads,
    })
}

/// A cgroup_skb program whose refusal is fatal.
fn load_fatal(
    ebpf: &mut Ebpf,
    name: &'static str,
    loads: &mut BTreeMap<&'static str, ProgramLoad>,
    purpose: &'static str,
) -> Result<(), LoadError> {
    load_one(ebpf, name, loads, |ebpf| {
        Ok(program_mut::<CgroupSkb>(ebpf, name)?.load()?)
    })
    .map_err(|r| r.fatal(purpose, ""))
}

/// The BTF tracepoints (`sock:sock_send_length` and the others, named after their
/// tracepoint); `Err(why)` when the kernel has not got them.
pub(super) fn load_btf_tracepoints(
    ebpf: &mut Ebpf,
    btf: &Btf,
    loads: &mut BTreeMap<&'static str, ProgramLoad>,
) -> Result<(), String> {
    for name in [
        programs::SOCK_SEND,
        programs::SOCK_RECV,
        programs::SOCK_STATE,
    ] {
        load_one(ebpf, name, loads, |ebpf| {
            Ok(program_mut::<BtfTracePoint>(ebpf, name)?.load(name, btf)?)
        })
        .map_err(|r| format!("tracepoint {r}"))?;
    }
    Ok(())
}

/// The raw syscall tracepoints; `Err(why)` when the kernel refuses them.
pub(super) fn load_syscall_tracepoints(
    ebpf: &mut Ebpf,
    loads: &mut BTreeMap<&'static str, ProgramLoad>,
) -> Result<(), String> {
    for name in [programs::SYS_ENTER, programs::SYS_EXIT] {
        load_one(ebpf, name, loads, |ebpf| {
            Ok(program_mut::<RawTracePoint>(ebpf, name)?.load()?)
        })
        .map_err(|r| r.to_string())?;
    }
    Ok(())
}

/// A program the kernel refused (or the object lacks).
pub(super) struct Refusal {
    pub program: &'static str,
    /// The error with its causes, the verifier's log cut to its last lines.
    pub reason: String,
    /// The verifier's own reason (the last line of its log that is not a statistic), when
    /// it wrote one.
    pub verifier_says: Option<String>,
    /// The kernel said EPERM, for the privilege check.
    pub permission_denied: bool,
    /// Not the kernel's doing: the object has no such program (agent and object disagree).
    pub missing: Option<Box<LoadError>>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.program, self.reason)
    }
}

impl Refusal {
    /// One line: the program, the kernel and the verifier's reason.
    fn brief(&self) -> String {
        format!(
            "the kernel (Linux {}) refused program {}: \"{}\"",
            crate::load::kernel_release(),
            self.program,
            self.verifier_says.as_deref().unwrap_or(&self.reason)
        )
    }

    /// The error that stops the agent: one sentence with the program, what it does, the
    /// kernel and the verifier's reason.
    fn fatal(self, purpose: &'static str, hint: &'static str) -> LoadError {
        if let Some(missing) = self.missing {
            return *missing;
        }
        if self.permission_denied && self.verifier_says.is_none() {
            return LoadError::NotPrivileged;
        }
        LoadError::Refused {
            program: self.program,
            purpose,
            kernel: crate::load::kernel_release(),
            reason: self.verifier_says.unwrap_or(self.reason),
            hint,
        }
    }
}

/// Loads one program with `load`, records what the verifier did, and returns the refusal.
fn load_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    loads: &mut BTreeMap<&'static str, ProgramLoad>,
    load: impl FnOnce(&mut Ebpf) -> Result<(), LoadErrorOrProgram>,
) -> Result<(), Refusal> {
    match load(ebpf) {
        Ok(()) => {
            let verified_insns = ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .and_then(|info| info.verified_instruction_count());
            loads.insert(
                name,
                ProgramLoad {
                    loaded: true,
                    verified_insns,
                },
            );
            Ok(())
        }
        Err(e) => {
            let (reason, log, permission_denied) = match &e {
                LoadErrorOrProgram::Missing(missing) => (missing.to_string(), None, false),
                LoadErrorOrProgram::Program(p) => {
                    let log = match p {
                        ProgramError::LoadError { verifier_log, .. } => {
                            Some(verifier_log.to_string())
                        }
                        _ => None,
                    };
                    let denied = matches!(p, ProgramError::LoadError { io_error, .. }
                        if io_error.raw_os_error() == Some(libc::EPERM));
                    (super::chain(p), log, denied)
                }
            };
            loads.insert(
                name,
                ProgramLoad {
                    loaded: false,
                    verified_insns: log.as_deref().and_then(processed_insns),
                },
            );
            Err(Refusal {
                program: name,
                reason,
                verifier_says: log.as_deref().and_then(verifier_reason),
                permission_denied,
                missing: match e {
                    LoadErrorOrProgram::Missing(missing) => Some(Box::new(missing)),
                    LoadErrorOrProgram::Program(_) => None,
                },
            })
        }
    }
}

/// The two ways a load fails: the object lacks the program, or the kernel refused it.
pub(super) enum LoadErrorOrProgram {
    Missing(LoadError),
    Program(ProgramError),
}

impl From<LoadError> for LoadErrorOrProgram {
    fn from(e: LoadError) -> Self {
        LoadErrorOrProgram::Missing(e)
    }
}

impl From<ProgramError> for LoadErrorOrProgram {
    fn from(e: ProgramError) -> Self {
        LoadErrorOrProgram::Program(e)
    }
}

/// `processed N insns` from a verifier log (the line the kernel writes at the end of
/// every log with statistics: `processed 1000001 insns (limit 1000000) max_states_per_insn
/// ...`).
pub fn processed_insns(log: &str) -> Option<u32> {
    log.lines().rev().find_map(|line| {
        line.trim()
            .strip_prefix("processed ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The verifier's reason for a refusal: the last line of its log that is not one of the
/// statistics it prints at the end.
pub fn verifier_reason(log: &str) -> Option<String> {
    const STATISTICS: [&str; 4] = [
        "processed ",
        "verification time",
        "stack depth",
        "mark_read",
    ];
    log.lines()
        .map(str::trim)
        .rev()
        .find(|line| !line.is_empty() && !STATISTICS.iter().any(|s| line.starts_with(s)))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::{processed_insns, verifier_reason};

    /// The end of the log of the refusal this module exists for (Linux 6.18.44, the
    /// request-head program before its scan was restructured).
    const TOO_LARGE: &str = "1: (bf) r6 = r1\n; ...\nBPF program is too large. Processed 1000001 insn\nverification time 7033308 usec\nstack depth 248+0+0+16\nprocessed 1000001 insns (limit 1000000) max_states_per_insn 25 total_states 14440 peak_states 17845 mark_read 0\n";

    /// `conn_ingress_refused` on Linux 6.18.44.
    const INVALID: &str = "0: R1=ctx() R10=fp0\n...\n8: (71) r1 = *(u8 *)(r0 +4096)\ninvalid access to map value, value_size=8 off=4096 size=1\nR0 min value is outside of the allowed memory range\nverification time 49 usec\nstack depth 8\nprocessed 8 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n";

    #[test]
    fn the_processed_count_and_the_reason_come_from_the_log() {
        assert_eq!(processed_insns(TOO_LARGE), Some(1_000_001));
        assert_eq!(
            verifier_reason(TOO_LARGE).as_deref(),
            Some("BPF program is too large. Processed 1000001 insn")
        );
        assert_eq!(processed_insns(INVALID), Some(8));
        assert_eq!(
            verifier_reason(INVALID).as_deref(),
            Some("R0 min value is outside of the allowed memory range")
        );
        assert_eq!(processed_insns(""), None);
        assert_eq!(verifier_reason("\n\n"), None);
    }
}
