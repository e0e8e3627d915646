//! Attribution: which watched process owns each connection, and the connection records.
//!
//! In cgroup mode the kernel reports accepted connections from softirq context, where no
//! process is current, so the owner is resolved here from /proc: the listening socket
//! (or the exact connection) among the watched processes' sockets.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use sensor_common::conn::{ConnStats, flags};

use crate::{
    decode::{self, ConnEventView, Mechanism},
    discover::SocketOwners,
    output::ConnectionRecord,
    time::KernelClock,
};

/// What the agent remembers of an open connection.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ConnInfo {
    pid: Option<u32>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    opened_ns: u64,
}

/// Open connections and the socket-owner cache.
pub struct Connections {
    proc_root: PathBuf,
    clock: KernelClock,
    /// Whether cgroup-mode connections have call counts (`accounting.call_counts`).
    cgroup_call_counts: bool,
    open: HashMap<u64, ConnInfo>,
    owners: Option<SocketOwners>,
    owners_scanned: Option<Instant>,
    watched_pids: Vec<u32>,
    /// Connections that tracepoint-watched processes had before they were watched.
    preexisting: HashSet<(SocketAddr, SocketAddr)>,
    /// Connections whose owner could not be found.
    pub unresolved: u64,
    /// Live connections the kernel's LRU map evicted (seen again as a second open): their
    /// counts restarted from zero.
    pub evicted: u64,
}

/// How often the socket-owner cache may be rebuilt on a miss.
const OWNER_RESCAN_MIN: Duration = Duration::from_millis(50);

impl Connections {
    pub fn new(proc_root: PathBuf, clock: KernelClock, cgroup_call_counts: bool) -> Self {
        Self {
            proc_root,
            clock,
            cgroup_call_counts,
            open: HashMap::new(),
            owners: None,
            owners_scanned: None,
            watched_pids: Vec::new(),
            preexisting: HashSet::new(),
            unresolved: 0,
            evicted: 0,
        }
    }

    /// The processes whose sockets may own connections (changes with discovery).
    pub fn set_watched_pids(&mut self, pids: Vec<u32>) {
        if pids != self.watched_pids {
            self.watched_pids = pids;
            self.owners = None;
        }
    }

    /// What is known of an open connection, for its requests.
    pub fn view(&self, cookie: u64) -> crate::requests::ConnView {
        self.open
            .get(&cookie)
            .map(|i| crate::requests::ConnView {
                pid: i.pid,
                local: i.local,
                peer: i.peer,
            })
            .unwrap_or_default()
    }

    /// Remembers the connections `pids` have now, before the tracepoints count anything
    /// for them. (The cgroup programs see establishment themselves.)
    pub fn note_preexisting(&mut self, pids: &[u32]) {
        let now = SocketOwners::scan(&self.proc_root, pids);
        self.preexisting.extend(now.connections());
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Handles a lifecycle event; returns the record of a closed connection.
    pub fn on_event(&mut self, ev: &ConnEventView) -> Option<ConnectionRecord> {
        match ev.lifecycle {
            decode::Lifecycle::Open => {
                if self.open.contains_key(&ev.cookie) {
                    self.evicted += 1;
                }
                let pid = ev.tgid.or_else(|| self.owner(ev.local, ev.peer));
                self.open.insert(
                    ev.cookie,
                    ConnInfo {
                        pid,
                        local: ev.local,
                        peer: ev.peer,
                        opened_ns: ev.stats.start_ns,
                    },
                );
                None
            }
            decode::Lifecycle::Close => {
                let info = match self.open.remove(&ev.cookie) {
                    Some(info) => info,
                    // The open event was lost or came before the agent: resolve now.
                    None => ConnInfo {
                        pid: ev.tgid.or_else(|| self.owner(ev.local, ev.peer)),
                        local: ev.local,
                        peer: ev.peer,
                        opened_ns: ev.stats.start_ns,
                    },
                };
                let record = self.record(ev.cookie, &info, &ev.stats, ev.ts_ns, true);
                // The 4-tuple may be reused by a new connection later.
                if let (Some(l), Some(p)) = (info.local, info.peer) {
                    self.preexisting.remove(&(l, p));
                }
                Some(record)
            }
        }
    }

    /// The record of a connection read from the kernel map (still open at stop, or closed
    /// while the ring buffer was full).
    pub fn from_map(&mut self, cookie: u64, stats: &ConnStats, now_ns: u64) -> ConnectionRecord {
        let closed = stats.flags & flags::CLOSED != 0;
        let info = match self.open.remove(&cookie) {
            Some(info) => info,
            None => ConnInfo {
                pid: (stats.tgid != 0).then_some(stats.tgid),
                local: None,
                peer: None,
                opened_ns: stats.start_ns,
            },
        };
        self.record(cookie, &info, stats, now_ns, closed)
    }

    fn record(
        &self,
        cookie: u64,
        info: &ConnInfo,
        stats: &ConnStats,
        ts_ns: u64,
        closed: bool,
    ) -> ConnectionRecord {
        let mechanism = decode::mechanism(stats);
        let calls = mechanism == Mechanism::Tracepoint || self.cgroup_call_counts;
        let segs = mechanism == Mechanism::Cgroup;
        let complete = match mechanism {
            Mechanism::Cgroup => decode::from_start(stats),
            Mechanism::Tracepoint => match (info.local, info.peer) {
                (Some(l), Some(p)) => !self.preexisting.contains(&(l, p)),
                _ => false,
            },
        };
        ConnectionRecord {
            ts: self.clock.rfc3339(ts_ns),
            pid: info.pid,
            local: info.local.map(|a| a.to_string()),
            peer: info.peer.map(|a| a.to_string()),
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            sends: calls.then_some(stats.sends),
            recvs: calls.then_some(stats.recvs),
            segs_in: segs.then_some(stats.segs_in),
            segs_out: segs.then_some(stats.segs_out),
            closed,
            complete,
            opened: self.clock.rfc3339(info.opened_ns),
            mechanism,
            cookie,
        }
    }

    fn owner(&mut self, local: Option<SocketAddr>, peer: Option<SocketAddr>) -> Option<u32> {
        let (local, peer) = (local?, peer?);
        if let Some(pid) = self.owners.as_ref().and_then(|o| o.owner(local, peer)) {
            return Some(pid);
        }
        let may_rescan = self
            .owners_scanned
            .is_none_or(|t| t.elapsed() >= OWNER_RESCAN_MIN);
        if may_rescan {
            self.owners = Some(SocketOwners::scan(&self.proc_root, &self.watched_pids));
            self.owners_scanned = Some(Instant::now());
            if let Some(pid) = self.owners.as_ref().and_then(|o| o.owner(local, peer)) {
                return Some(pid);
            }
        }
        self.unresolved += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::conn::source;

    use super::*;
    use crate::decode::Lifecycle;

    fn view(lifecycle: Lifecycle, cookie: u64, tgid: Option<u32>, src: u32) -> ConnEventView {
        ConnEventView {
            lifecycle,
            cookie,
            tgid,
            ts_ns: 1_000_000,
            local: Some("127.0.0.1:8008".parse().unwrap()),
            peer: Some("127.0.0.1:40000".parse().unwrap()),
            stats: ConnStats {
                bytes_in: 100,
                bytes_out: 2000,
                sends: 3,
                recvs: 4,
                segs_in: 1,
                segs_out: 2,
                source: src,
                flags: flags::FROM_START,
                ..ConnStats::default()
            },
            tcp_bytes_received: 0,
            tcp_bytes_acked: 0,
        }
    }

    fn conns() -> Connections {
        // An empty proc root: owner lookups find nothing.
        let dir = std::env::temp_dir().join(format!("hs-attr-{}", std::process::id()));
        Connections::new(dir, KernelClock::new(), false)
    }

    #[test]
    fn open_then_close_gives_one_record_with_the_owner() {
        let mut c = conns();
        assert!(
            c.on_event(&view(Lifecycle::Open, 1, Some(42), source::CGROUP))
                .is_none()
        );
        let r = c
            .on_event(&view(Lifecycle::Close, 1, None, source::CGROUP))
            .unwrap();
        assert_eq!(r.pid, Some(42));
        assert_eq!((r.bytes_in, r.bytes_out), (100, 2000));
        assert_eq!(r.local.as_deref(), Some("127.0.0.1:8008"));
        assert!(r.closed && r.complete);
        // Cgroup mode without call counting does not claim call counts.
        assert_eq!((r.sends, r.recvs), (None, None));
        assert_eq!((r.segs_in, r.segs_out), (Some(1), Some(2)));
        assert_eq!(c.open_count(), 0);
    }

    #[test]
    fn tracepoint_records_have_calls_and_no_segments() {
        let mut c = conns();
        c.on_event(&view(Lifecycle::Open, 2, Some(7), source::TRACEPOINT));
        let r = c
            .on_event(&view(Lifecycle::Close, 2, None, source::TRACEPOINT))
            .unwrap();
        assert_eq!((r.sends, r.recvs), (Some(3), Some(4)));
        assert_eq!((r.segs_in, r.segs_out), (None, None));
        assert!(r.complete, "not pre-existing");
    }

    #[test]
    fn an_unresolvable_owner_is_counted_not_invented() {
        let mut c = conns();
        c.on_event(&view(Lifecycle::Open, 3, None, source::CGROUP));
        let r = c
            .on_event(&view(Lifecycle::Close, 3, None, source::CGROUP))
            .unwrap();
        assert_eq!(r.pid, None);
        assert!(c.unresolved >= 1);
    }

    #[test]
    fn a_second_open_for_a_cookie_counts_an_eviction() {
        let mut c = conns();
        c.on_event(&view(Lifecycle::Open, 4, Some(1), source::CGROUP));
        c.on_event(&view(Lifecycle::Open, 4, Some(1), source::CGROUP));
        assert_eq!(c.evicted, 1);
    }

    #[test]
    fn map_entries_report_open_or_closed_state() {
        let mut c = conns();
        let mut stats = view(Lifecycle::Open, 5, None, source::CGROUP).stats;
        stats.tgid = 9;
        let r = c.from_map(5, &stats, 10);
        assert!(!r.closed);
        assert_eq!(r.pid, Some(9));
        stats.flags |= flags::CLOSED;
        assert!(c.from_map(5, &stats, 10).closed);
    }
}
