//! Which watched process owns a TCP socket.
//!
//! Accepted connections become established in softirq context, so the kernel programs see
//! them without a PID; the agent resolves the owner here. For each watched PID it collects
//! the socket inodes of `/proc/PID/fd/*` (symlinks `socket:[INODE]`) and keeps the entries
//! of `/proc/PID/net/tcp` and `tcp6` (the tables of that process's network namespace) whose
//! inode is one of them.
//!
//! Table format (`net/ipv4/tcp_ipv4.c`, `get_tcp4_sock`; `net/ipv6/tcp_ipv6.c`,
//! `get_tcp6_sock`):
//!
//! ```text
//!   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//!    1: 0100007F:8129 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6623 1 ...
//! ```
//!
//! An IPv4 address is one 32-bit word printed with `%08X` in host byte order (so
//! `0100007F` is 127.0.0.1 on a little-endian host); an IPv6 address is four such words.
//! The port is the port number in hex.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{self, BufRead},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    path::{Path, PathBuf},
};

use super::vanished;

/// A TCP state as printed in the `st` column (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpState(pub u8);

impl TcpState {
    /// `TCP_ESTABLISHED`.
    pub const ESTABLISHED: TcpState = TcpState(0x01);
    /// `TCP_LISTEN`.
    pub const LISTEN: TcpState = TcpState(0x0A);
}

/// One line of `/proc/PID/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    /// Local address and port, as printed (not normalised).
    pub local: SocketAddr,
    /// Remote address and port; unspecified with port 0 for a listener.
    pub remote: SocketAddr,
    /// The socket's state.
    pub state: TcpState,
    /// The socket inode (0 for a socket no longer attached to a file, e.g. `TIME_WAIT`).
    pub inode: u64,
}

/// A hex field of at most 8 digits (no sign, unlike `from_str_radix`).
fn hex_u32(s: &str) -> Option<u32> {
    let ok = !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

/// Parses `ADDR:PORT` where `ADDR` is 8 (IPv4) or 32 (IPv6) hex digits in host order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::try_from(hex_u32(port).filter(|_| port.len() == 4)?).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(hex_u32(addr)?.to_ne_bytes())),
        32 => {
            let mut octets = [0u8; 16];
            for (chunk, word) in octets.chunks_exact_mut(4).zip(0..4) {
                let hex = addr.get(word * 8..word * 8 + 8)?;
                chunk.copy_from_slice(&hex_u32(hex)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one table line; `None` for the header or a malformed line.
pub fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [
        slot,
        local,
        remote,
        state,
        _tx_rx,
        _timer,
        _retrnsmt,
        _uid,
        _timeout,
        inode,
        ..,
    ] = fields.as_slice()
    else {
        return None;
    };
    if !slot.ends_with(':') {
        return None;
    }
    Some(TcpEntry {
        local: parse_addr(local)?,
        remote: parse_addr(remote)?,
        state: TcpState(u8::try_from(hex_u32(state).filter(|_| state.len() == 2)?).ok()?),
        inode: inode.parse().ok()?,
    })
}

/// Parses a whole table: the entries and the number of malformed lines (the header and
/// blank lines are not counted).
pub fn parse_tcp_table(text: &str) -> (Vec<TcpEntry>, usize) {
    let mut entries = Vec::new();
    let malformed = read_tcp_table(text.as_bytes(), |entry| entries.push(entry))
        .expect("reading from memory cannot fail");
    (entries, malformed)
}

/// Reads a table line by line, handing each entry to `each`; returns the number of
/// malformed lines (the header and blank lines are not counted).
fn read_tcp_table(mut table: impl BufRead, mut each: impl FnMut(TcpEntry)) -> io::Result<usize> {
    let mut malformed = 0;
    let mut line = String::new();
    while {
        line.clear();
        table.read_line(&mut line)? > 0
    } {
        let first = line.split_whitespace().next();
        if first.is_none() || first == Some("sl") {
            continue;
        }
        match parse_tcp_line(&line) {
            Some(entry) => each(entry),
            None => malformed += 1,
        }
    }
    Ok(malformed)
}

/// An address with IPv4-mapped IPv6 (`::ffff:a.b.c.d`) turned into IPv4, and the IPv6
/// flow label and scope dropped, so the same endpoint always compares equal.
fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)),
        },
        v4 => v4,
    }
}

/// The single PID in `pids`, `None` if empty or ambiguous.
fn single(mut pids: impl Iterator<Item = u32>) -> Option<u32> {
    let first = pids.next()?;
    pids.all(|pid| pid == first).then_some(first)
}

/// The watched processes holding one socket: almost always one (a socket inherited across
/// `fork` has several), so no allocation then. 100,000 sockets mean 100,000 of these.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holders {
    One(u32),
    Several(Vec<u32>),
}

impl Holders {
    fn add(&mut self, pid: u32) {
        match self {
            Holders::One(first) if *first == pid => {}
            Holders::One(first) => *self = Holders::Several(vec![*first, pid]),
            Holders::Several(pids) if !pids.contains(&pid) => pids.push(pid),
            Holders::Several(_) => {}
        }
    }

    fn pids(&self) -> &[u32] {
        match self {
            Holders::One(pid) => std::slice::from_ref(pid),
            Holders::Several(pids) => pids,
        }
    }
}

/// The watched processes of one network namespace: their socket inodes, and the processes
/// whose `/proc/PID/net` shows the namespace's tables.
#[derive(Default)]
struct Namespace {
    inodes: HashMap<u64, Holders>,
    readers: Vec<(u32, PathBuf)>,
}

/// The owners of the TCP sockets of a set of watched processes, at the time of the scan.
#[derive(Debug, Clone, Default)]
pub struct SocketOwners {
    /// Connected sockets by normalised (local, remote).
    connected: HashMap<(SocketAddr, SocketAddr), Holders>,
    /// Listening sockets by port: normalised local address and owner.
    listeners: HashMap<u16, Vec<(IpAddr, u32)>>,
    /// Table lines that could not be parsed.
    malformed: usize,
    /// PIDs whose files could not be read (other than because they exited).
    unreadable: usize,
}

impl SocketOwners {
    /// Scans the sockets of `pids` under the proc root. Processes that have exited are
    /// skipped silently; unreadable files and malformed lines are skipped and counted.
    /// Each network namespace's tables are read once, line by line, keeping only the
    /// watched processes' sockets: on a host with 100,000 connections the tables hold
    /// 200,000 lines (30 MB of text), which must not all be in memory at once.
    pub fn scan(proc_root: &Path, pids: &[u32]) -> SocketOwners {
        let mut owners = SocketOwners::default();
        let mut namespaces: HashMap<PathBuf, Namespace> = HashMap::new();
        for &pid in pids {
            let dir = proc_root.join(pid.to_string());
            let inodes = match socket_inodes(&dir.join("fd")) {
                Ok(inodes) => inodes,
                Err(error) => {
                    owners.count_unreadable(pid, &error);
                    continue;
                }
            };
            // Processes in one network namespace share their tables; without a readable
            // namespace link, the process directory itself is the key.
            let netns = fs::read_link(dir.join("ns/net")).unwrap_or_else(|_| dir.clone());
            let ns = namespaces.entry(netns).or_default();
            for inode in inodes {
                ns.inodes
                    .entry(inode)
                    .and_modify(|holders| holders.add(pid))
                    .or_insert(Holders::One(pid));
            }
            ns.readers.push((pid, dir));
        }
        for ns in namespaces.into_values() {
            // Through the first of its processes whose tables can be read (one may exit
            // meanwhile).
            for (pid, dir) in &ns.readers {
                match owners.scan_tables(dir, &ns.inodes) {
                    Ok(()) => break,
                    Err(error) => owners.count_unreadable(*pid, &error),
                }
            }
        }
        owners
    }

    fn count_unreadable(&mut self, pid: u32, error: &io::Error) {
        if !vanished(error) {
            self.unreadable += 1;
            tracing::debug!(pid, %error, "cannot read the sockets of a watched process");
        }
    }

    /// Adds the entries of one namespace's tables (read through `dir`) whose inode is a
    /// watched process's socket.
    fn scan_tables(&mut self, dir: &Path, inodes: &HashMap<u64, Holders>) -> io::Result<()> {
        for (file, required) in [("net/tcp", true), ("net/tcp6", false)] {
            let table = match fs::File::open(dir.join(file)) {
                Ok(table) => table,
                // No IPv6 in this kernel or namespace.
                Err(e) if !required && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let table = io::BufReader::with_capacity(64 * 1024, table);
            self.malformed += read_tcp_table(table, |entry| {
                if let Some(holders) = inodes.get(&entry.inode).filter(|_| entry.inode != 0) {
                    self.add(&entry, holders.pids());
                }
            })?;
        }
        Ok(())
    }

    /// Adds one socket of the processes `pids`.
    fn add(&mut self, entry: &TcpEntry, pids: &[u32]) {
        let local = normalise(entry.local);
        for &pid in pids {
            if entry.state == TcpState::LISTEN {
                let list = self.listeners.entry(local.port()).or_default();
                if !list.contains(&(local.ip(), pid)) {
                    list.push((local.ip(), pid));
                }
            } else {
                let key = (local, normalise(entry.remote));
                self.connected
                    .entry(key)
                    .and_modify(|holders| holders.add(pid))
                    .or_insert(Holders::One(pid));
            }
        }
    }

    /// The watched process that owns the connection `local` <- `remote`, seen from the
    /// watched side: first an exact match on a connected socket, else the owner of a
    /// listening socket on `local`'s port bound to `local`'s address, else to the wildcard
    /// (`0.0.0.0` for IPv4, `::` for both families: whether a `::` listener is
    /// `IPV6_V6ONLY` is not visible in procfs). `None` when nothing matches or when
    /// several processes match (a socket inherited across `fork`, or `SO_REUSEPORT`: the
    /// kernel's choice between them is not visible here).
    pub fn owner(&self, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
        let (local, remote) = (normalise(local), normalise(remote));
        match self.connected.get(&(local, remote)) {
            Some(holders) => single(holders.pids().iter().copied()),
            None => listener_owner(&self.listeners, local),
        }
    }

    /// Drops the connected sockets whose owner the listeners give anyway: a connection
    /// accepted by the one process listening on its port. [`SocketOwners::owner`] answers
    /// exactly as before for every connection, from a table a few entries long instead
    /// of one entry per connection (on a server with 100,000 clients, about 13 MiB kept
    /// between scans for nothing). [`SocketOwners::connections`] lists only the rest.
    pub fn drop_derivable(&mut self) {
        let listeners = &self.listeners;
        self.connected.retain(|(local, _), holders| {
            single(holders.pids().iter().copied()) != listener_owner(listeners, *local)
        });
        self.connected.shrink_to_fit();
    }

    /// Every connected socket's (local, remote), normalised as in [`SocketOwners::owner`].
    pub fn connections(&self) -> impl Iterator<Item = (SocketAddr, SocketAddr)> + '_ {
        self.connected.keys().copied()
    }

    /// Number of connected and listening sockets known.
    pub fn len(&self) -> usize {
        self.connected.len() + self.listeners.values().map(Vec::len).sum::<usize>()
    }

    /// True when no socket of a watched process was found.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Table lines that could not be parsed during the scan.
    pub fn malformed_lines(&self) -> usize {
        self.malformed
    }

    /// Watched processes whose files could not be read (exited ones are not counted).
    pub fn unreadable_pids(&self) -> usize {
        self.unreadable
    }
}

/// The owner of a connection to the normalised `local` by the listeners alone: the owner of
/// a listening socket on `local`'s port bound to `local`'s address, else to the wildcard
/// (`0.0.0.0` for IPv4, `::` for both families); `None` when none or several match.
fn listener_owner(listeners: &HashMap<u16, Vec<(IpAddr, u32)>>, local: SocketAddr) -> Option<u32> {
    let listeners = listeners.get(&local.port())?;
    // Without allocating: `drop_derivable` asks this for every connection of a scan.
    let bound_to = |want: fn(&IpAddr, SocketAddr) -> bool| {
        let matching = listeners.iter().filter(move |(ip, _)| want(ip, local));
        matching.map(|&(_, pid)| pid).peekable()
    };
    let mut exact = bound_to(|ip, local| *ip == local.ip());
    if exact.peek().is_some() {
        return single(exact);
    }
    single(bound_to(|ip, local| match ip {
        IpAddr::V4(v4) => v4.is_unspecified() && local.is_ipv4(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    }))
}

/// The inodes of the sockets open in an `fd` directory. Descriptors closed during the
/// scan and non-socket descriptors are skipped.
fn socket_inodes(fd_dir: &Path) -> io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for entry in fs::read_dir(fd_dir)? {
        let Ok(target) = fs::read_link(entry?.path()) else {
            continue;
        };
        let inode: Option<u64> = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok());
        inodes.extend(inode);
    }
    Ok(inodes)
}

#[cfg(test)]
mod tests;
