//! What to watch: the groups of processes (discovery, `--pid`, `--cgroup`), the mechanism
//! each gets, and bringing the kernel side in line when they change.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use sensor_common::watch;

use super::{Agent, AgentError, RunOptions, Watched};
use crate::{
    discover::{self, synapse_config},
    plan::{self, Decision, Group},
};

impl Agent {
    /// The groups to watch now, and the configuration paths of the first Synapse process.
    fn groups(&self, at_start: bool) -> Result<(Vec<Group>, Vec<PathBuf>), AgentError> {
        let mut configs = Vec::new();
        let proc_root = &self.opts.proc_root;
        let targets = &self.opts.targets;
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for arg in &targets.cgroups {
            let (rel, _) = discover::resolve_cgroup_arg(&self.cgroup_mount, arg)?;
            let pids = discover::cgroup_procs(&self.cgroup_mount, &rel)?;
            // The first Synapse of the cgroup names the configuration (its server_name and
            // listeners), as in discovery.
            if configs.is_empty() {
                configs = pids
                    .iter()
                    .filter_map(|&pid| {
                        let info = discover::describe_pid(proc_root, pid).ok()?;
                        let paths = absolute_configs(proc_root, pid, &info.config_paths);
                        (!paths.is_empty()).then_some(paths)
                    })
                    .next()
                    .unwrap_or_default();
            }
            groups.insert(
                rel.clone(),
                Group {
                    cgroup: rel,
                    pids,
                    explicit_cgroup: true,
                    not_dedicated: None,
                },
            );
        }
        let mut by_cgroup: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        if targets.is_discovery() {
            for p in discover::find_synapse(proc_root)? {
                if configs.is_empty() {
                    configs = absolute_configs(proc_root, p.pid, &p.config_paths);
                }
                by_cgroup
                    .entry(p.cgroup.unwrap_or_else(|| "/".into()))
                    .or_default()
                    .push(p.pid);
            }
        }
        for &pid in &targets.pids {
            match discover::describe_pid(proc_root, pid) {
                Ok(info) => {
                    if configs.is_empty() {
                        configs = absolute_configs(proc_root, pid, &info.config_paths);
                    }
                    by_cgroup
                        .entry(info.cgroup.unwrap_or_else(|| "/".into()))
                        .or_default()
                        .push(info.tgid.unwrap_or(pid));
                }
                // A PID given on the command line must exist at start; later it may exit.
                Err(e) if at_start => return Err(e.into()),
                Err(_) => {}
            }
        }
        for (cgroup, mut pids) in by_cgroup {
            if groups.contains_key(&cgroup) {
                continue;
            }
            pids.sort_unstable();
            pids.dedup();
            let dedication = discover::is_dedicated(proc_root, &self.cgroup_mount, &cgroup, &pids)?;
            groups.insert(
                cgroup.clone(),
                Group {
                    not_dedicated: (!dedication.is_dedicated()).then(|| dedication.to_string()),
                    cgroup,
                    pids,
                    explicit_cgroup: false,
                },
            );
        }
        Ok((groups.into_values().collect(), configs))
    }

    /// Finds what to watch and brings the kernel side in line with it.
    pub(super) fn rescan(&mut self, at_start: bool) -> Result<(), AgentError> {
        let (groups, configs) = self.groups(at_start)?;
        if at_start && groups.is_empty() && self.opts.targets.is_discovery() {
            tracing::warn!(
                "no Synapse process found, so nothing is watched yet: discovery looks for \
                 processes whose command line runs a `synapse.app.` module (python -m \
                 synapse.app.homeserver, synapse.app.generic_worker, ...) and looks again every \
                 {} ms (discovery.rescan_ms); give --pid or --cgroup to watch other processes",
                self.opts.config.discovery.rescan_ms
            );
            self.nothing_found = true;
        }
        self.learn_synapse_config(configs, at_start);
        let mut next: BTreeMap<String, Watched> = BTreeMap::new();
        let mut unwatchable = BTreeMap::new();
        for group in groups {
            let heads = self.opts.config.attribution.request_heads;
            let decision = match plan::decide(&group, self.sensor.features(), heads) {
                Ok(d) => d,
                // At start, a homeserver that cannot be watched as asked stops the agent,
                // whether it was named or discovered: running on would look healthy and
                // see nothing of it.
                Err(e) if at_start => return Err(e.into()),
                Err(e) => {
                    unwatchable.insert(group.cgroup.clone(), e.to_string());
                    let msg = e.to_string();
                    if self.last_plan_error.as_deref() != Some(&msg) {
                        tracing::error!("{msg}");
                        self.last_plan_error = Some(msg);
                    }
                    continue;
                }
            };
            let cgroup_abs = self.cgroup_mount.join(group.cgroup.trim_start_matches('/'));
            let cgroup_id = match &decision {
                Decision::Cgroup { .. } => discover::cgroup_id(&cgroup_abs)?,
                Decision::Tracepoint { .. } => 0,
            };
            next.insert(
                group.cgroup.clone(),
                Watched {
                    group,
                    decision,
                    cgroup_abs,
                    cgroup_id,
                },
            );
        }
        // Reported by the health check (a `sensor_health` alert) for as long as it lasts.
        self.unwatchable = unwatchable;
        if next == self.watched {
            return Ok(());
        }
        if self.nothing_found && !next.is_empty() {
            let pids: Vec<u32> = next.values().flat_map(|w| w.group.pids.clone()).collect();
            tracing::info!("discovery found Synapse: watching PIDs {pids:?}");
            self.nothing_found = false;
        }
        self.apply(next)?;
        if !at_start {
            self.sensor_record("watch")?;
        }
        Ok(())
    }

    /// Reads the watched Synapse's configuration when its paths change: its `server_name`
    /// (unless configured) and its listeners, some of which the sensor cannot see (see
    /// `Agent::blind`). Paths gone (no Synapse found) keep what was read. A file that cannot
    /// be read is a warning: the sensor runs on without what it would have said.
    fn learn_synapse_config(&mut self, configs: Vec<PathBuf>, at_start: bool) {
        if configs.is_empty() || configs == self.synapse_config {
            return;
        }
        if self.opts.config.attribution.server_name.is_none() {
            match synapse_config::server_name(&configs) {
                Ok(Some(name)) => {
                    tracing::info!("server_name {name} (from {configs:?})");
                    self.attribution.server_name = Some(name);
                }
                Ok(None) => tracing::warn!(
                    "no server_name in {configs:?}: users are not named; set attribution.server_name"
                ),
                Err(e) => tracing::warn!("{e}; set attribution.server_name to name users"),
            }
        }
        match synapse_config::listeners(&configs) {
            Ok(listeners) => self.synapse_listeners = listeners,
            Err(e) => {
                tracing::warn!(
                    "{e}; whether Synapse serves HTTP where the sensor cannot see it (a UNIX \
                     socket, its own TLS) is not known"
                );
                self.synapse_listeners.clear();
            }
        }
        // At start, `report_start` says it with the rest of what the sensor runs without.
        if !at_start {
            for blind in self.unseen_listeners() {
                tracing::warn!("running without {}: {}", blind.capability, blind.why);
            }
        }
        self.synapse_config = configs;
    }

    fn apply(&mut self, next: BTreeMap<String, Watched>) -> Result<(), AgentError> {
        // Detach what is no longer watched (or changed mechanism).
        let old = std::mem::take(&mut self.watched);
        for (rel, w) in &old {
            let kept = next.get(rel).is_some_and(|n| {
                n.decision.name() == w.decision.name() && n.cgroup_id == w.cgroup_id
            });
            if !kept && matches!(w.decision, Decision::Cgroup { .. }) {
                self.sensor.detach_cgroup(rel, w.cgroup_id)?;
            }
        }
        let mut tp_pids = BTreeSet::new();
        let mut all_pids = Vec::new();
        for (rel, w) in &next {
            all_pids.extend(&w.group.pids);
            match &w.decision {
                Decision::Cgroup { why } => {
                    if !self.sensor.attached_cgroups().contains(rel) {
                        self.sensor.attach_cgroup(rel, &w.cgroup_abs, w.cgroup_id)?;
                        tracing::info!("watching cgroup {rel} with cgroup programs: {why}");
                    }
                }
                Decision::Tracepoint { why } => {
                    tp_pids.extend(&w.group.pids);
                    if !old.contains_key(rel) {
                        tracing::warn!("watching PIDs {:?} with tracepoints: {why}", w.group.pids);
                    }
                }
            }
        }
        let any_cgroup = next
            .values()
            .any(|w| matches!(w.decision, Decision::Cgroup { .. }));
        let call_counts = self.opts.config.accounting.call_counts && any_cgroup;
        // The syscall programs tell file reads from socket reads by the receive tracepoint.
        let syscalls = self.opts.config.accounting.syscalls && !next.is_empty();
        if !tp_pids.is_empty() || call_counts || syscalls {
            self.sensor.attach_sock_tracepoints(!tp_pids.is_empty())?;
        }
        let new_tp_pids: Vec<u32> = tp_pids.difference(&self.tp_pids).copied().collect();
        for pid in &new_tp_pids {
            self.sensor.watch_pid(*pid, watch::OWNS_CONNS)?;
        }
        // Connections these processes already had are counted only from now on: remember
        // them so their records say `complete: false`.
        if !new_tp_pids.is_empty() {
            self.conns.note_preexisting(&new_tp_pids);
        }
        let gone: Vec<u32> = self.tp_pids.difference(&tp_pids).copied().collect();
        for pid in &gone {
            self.sensor.unwatch_pid(*pid)?;
        }
        // Processes that left are reported once with their final accounting.
        let before: BTreeSet<u32> = old.values().flat_map(|w| w.group.pids.clone()).collect();
        let after: BTreeSet<u32> = all_pids.iter().copied().collect();
        let exited: Vec<u32> = before.difference(&after).copied().collect();
        self.tp_pids = tp_pids;
        all_pids.sort_unstable();
        self.conns.set_watched_pids(all_pids);
        self.watched = next;
        self.gone.extend(&exited);
        if self.opts.config.accounting.syscalls && !exited.is_empty() {
            self.process_records(&exited, true)?;
            for pid in &exited {
                self.sensor.forget_process(*pid)?;
            }
        }
        Ok(())
    }
}

/// Synapse's `-c` paths, relative ones resolved against Synapse's working directory (as
/// Synapse itself resolved them), not the sensor's.
fn absolute_configs(proc_root: &Path, pid: u32, paths: &[PathBuf]) -> Vec<PathBuf> {
    let cwd = std::fs::read_link(proc_root.join(pid.to_string()).join("cwd")).ok();
    paths
        .iter()
        .map(|p| match &cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p.clone(),
        })
        .collect()
}

/// Checks the operator's `--pid` and `--cgroup` before anything is created on disk, so a
/// typo gets its one-sentence error first.
pub(super) fn check_targets(opts: &RunOptions, cgroup_mount: &Path) -> Result<(), AgentError> {
    for &pid in &opts.targets.pids {
        discover::describe_pid(&opts.proc_root, pid)?;
    }
    for arg in &opts.targets.cgroups {
        discover::resolve_cgroup_arg(cgroup_mount, arg)?;
    }
    Ok(())
}
