//! Attribution: which watched process owns each connection, and the connection records.
//!
//! In cgroup mode the kernel reports accepted connections from softirq context, where no
//! process is current, so the owner is resolved here from /proc: the listening socket
//! (or the exact connection) among the watched processes' sockets.
//!
//! A scan of /proc reads every watched process's descriptors and the whole TCP table, which
//! takes hundreds of milliseconds on a host with 100,000 sockets. So a scan runs on the
//! event loop only while scans are cheap (the last took under [`INLINE_SCAN_MAX`]);
//! otherwise it runs on a thread of its own, the connections it is for stay unresolved
//! meanwhile, and every open connection without an owner is resolved again when its result
//! comes. Scans start at least [`OWNER_RESCAN_MIN`] and four times the last scan's duration
//! apart, so that they never take more than a quarter of a core whatever the connections
//! do. What a scan keeps is small: the listeners, and only the connections whose owner the
//! listeners do not give (`SocketOwners::drop_derivable`).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::mpsc,
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
    /// When the last scan started, and how long the last finished one took.
    owners_scanned: Option<Instant>,
    scan_cost: Duration,
    /// A scan running on its own thread.
    scanning: Option<BackgroundScan>,
    watched_pids: Vec<u32>,
    /// Connections that tracepoint-watched processes had before they were watched.
    preexisting: HashSet<(SocketAddr, SocketAddr)>,
    /// Connections reported without an owner (it could not be found in /proc).
    pub unresolved: u64,
    /// Scans of /proc for socket owners, and those run off the event loop.
    pub owner_scans: u64,
    pub owner_scans_background: u64,
    /// Live connections the kernel's LRU map evicted (seen again as a second open): their
    /// counts restarted from zero.
    pub evicted: u64,
}

/// A scan running on its own thread: the watched PIDs it is for, and where its result and
/// duration will come.
struct BackgroundScan {
    pids: Vec<u32>,
    result: mpsc::Receiver<(SocketOwners, Duration)>,
}

/// How often the socket-owner cache may be rebuilt on a miss.
const OWNER_RESCAN_MIN: Duration = Duration::from_millis(50);
/// A scan that took less than this runs on the event loop next time (the connection that
/// missed gets its owner at once); a longer one runs on its own thread.
pub const INLINE_SCAN_MAX: Duration = Duration::from_millis(20);

impl Connections {
    pub fn new(proc_root: PathBuf, clock: KernelClock, cgroup_call_counts: bool) -> Self {
        Self {
            proc_root,
            clock,
            cgroup_call_counts,
            open: HashMap::new(),
            owners: None,
            owners_scanned: None,
            scan_cost: Duration::ZERO,
            scanning: None,
            watched_pids: Vec::new(),
            preexisting: HashSet::new(),
            unresolved: 0,
            owner_scans: 0,
            owner_scans_background: 0,
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
        &mut self,
        cookie: u64,
        info: &ConnInfo,
        stats: &ConnStats,
        ts_ns: u64,
        closed: bool,
    ) -> ConnectionRecord {
        if info.pid.is_none() {
            self.unresolved += 1;
        }
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

    /// The owner of a connection from the cache; on a miss, a scan: on the event loop
    /// while scans are cheap, else on a thread of its own (see the module's documentation).
    fn owner(&mut self, local: Option<SocketAddr>, peer: Option<SocketAddr>) -> Option<u32> {
        let (local, peer) = (local?, peer?);
        if let Some(pid) = self.owners.as_ref().and_then(|o| o.owner(local, peer)) {
            return Some(pid);
        }
        if self.scanning.is_some() {
            return None;
        }
        let spacing = OWNER_RESCAN_MIN.max(self.scan_cost * 4);
        if self.owners.is_some() && self.owners_scanned.is_some_and(|t| t.elapsed() < spacing) {
            return None;
        }
        self.owners_scanned = Some(Instant::now());
        self.owner_scans += 1;
        if self.scan_cost < INLINE_SCAN_MAX {
            let (owners, took) = timed_scan(&self.proc_root, &self.watched_pids);
            self.scan_cost = took;
            return self.owners.insert(owners).owner(local, peer);
        }
        self.owner_scans_background += 1;
        let (tx, rx) = mpsc::channel();
        let (proc_root, pids) = (self.proc_root.clone(), self.watched_pids.clone());
        let spawned = std::thread::Builder::new()
            .name("owner-scan".into())
            .spawn(move || {
                // The receiver is gone only once the agent stopped.
                let _ = tx.send(timed_scan(&proc_root, &pids));
            });
        match spawned {
            Ok(_) => {
                self.scanning = Some(BackgroundScan {
                    pids: self.watched_pids.clone(),
                    result: rx,
                });
            }
            Err(e) => tracing::warn!("cannot start a socket-owner scan: {e}"),
        }
        None
    }

    /// Takes the result of a scan that ran on its own thread, if it is done, and gives an
    /// owner to the open connections that had none. Cheap when there is nothing to take:
    /// call it before each batch of events.
    pub fn poll_scan(&mut self) {
        let Some(scan) = &self.scanning else {
            return;
        };
        let (owners, took) = match scan.result.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => {
                self.scanning = None;
                return;
            }
        };
        let current = scan.pids == self.watched_pids;
        self.scanning = None;
        self.scan_cost = took;
        tracing::debug!(?took, sockets = owners.len(), "socket-owner scan done");
        if !current {
            // For PIDs that changed since: the next miss scans again.
            return;
        }
        for info in self.open.values_mut().filter(|i| i.pid.is_none()) {
            if let (Some(l), Some(p)) = (info.local, info.peer) {
                info.pid = owners.owner(l, p);
            }
        }
        self.owners = Some(owners);
    }
}

/// A scan of the sockets of `pids`, and how long it took.
fn timed_scan(proc_root: &Path, pids: &[u32]) -> (SocketOwners, Duration) {
    let started = Instant::now();
    let mut owners = SocketOwners::scan(proc_root, pids);
    owners.drop_derivable();
    (owners, started.elapsed())
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
    fn a_slow_scan_runs_off_the_loop_and_resolves_the_connections_that_waited() {
        // This process is the watched one; its listener owns the connection.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = std::process::id();
        let mut c = Connections::new("/proc".into(), KernelClock::new(), false);
        c.set_watched_pids(vec![me]);
        // The last scan was slow: the next runs on its own thread.
        c.scan_cost = INLINE_SCAN_MAX;
        let mut open = view(Lifecycle::Open, 7, None, source::CGROUP);
        open.local = Some(listener.local_addr().unwrap());
        c.on_event(&open);
        assert_eq!(c.view(7).pid, None, "not resolved on the event loop");
        assert_eq!((c.owner_scans, c.owner_scans_background), (1, 1));
        // Another miss while it runs does not start a second scan.
        let mut other = view(Lifecycle::Open, 9, None, source::CGROUP);
        other.local = Some("127.0.0.1:1".parse().unwrap());
        c.on_event(&other);
        assert_eq!(c.owner_scans, 1);

        let deadline = Instant::now() + Duration::from_secs(10);
        while c.view(7).pid.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            c.poll_scan();
        }
        assert_eq!(c.view(7).pid, Some(me), "resolved when the scan came back");
        assert_eq!(c.view(9).pid, None, "nothing listens there");
        // The cache answers the next connection at once.
        open.cookie = 8;
        c.on_event(&open);
        assert_eq!(c.view(8).pid, Some(me));
        assert_eq!(c.owner_scans, 1);
        // Unresolved counts connections reported without an owner, not misses on the way.
        open.lifecycle = Lifecycle::Close;
        open.cookie = 7;
        assert_eq!(c.on_event(&open).unwrap().pid, Some(me));
        assert_eq!(c.unresolved, 0);
        other.lifecycle = Lifecycle::Close;
        assert_eq!(c.on_event(&other).unwrap().pid, None);
        assert_eq!(c.unresolved, 1);
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
