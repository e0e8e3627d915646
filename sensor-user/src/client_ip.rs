//! Which client a request came from.
//!
//! Synapse nearly always sits behind a TLS-terminating reverse proxy, so the TCP peer of a
//! Synapse connection is the proxy, and the real client is named in `X-Forwarded-For` or
//! RFC 7239 `Forwarded`. Those headers are only as honest as whoever wrote them: a client
//! that talks to Synapse directly can put anything there. So a forwarding header is believed
//! only when the TCP peer is a configured [`TrustedProxies`] address, and then it is walked
//! from the right (the entry the trusted proxy appended) past every address that is itself
//! a trusted proxy: the client is the first address that is not.
//!
//! This is stricter than Synapse, which with `x_forwarded: true` believes the leftmost
//! `X-Forwarded-For` entry of the first such header from any peer
//! (`synapse/http/site.py`, `XForwardedForRequest._process_forwarded_headers`, and
//! <https://github.com/matrix-org/synapse/issues/9471>). The sensor may therefore name a
//! different address than Synapse's own logs when a client forges the header; that is the
//! point.

mod forwarded;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ClientIpError {
    /// One entry of the trusted proxy list is neither an address nor a CIDR network.
    #[error(
        "trusted proxy entry {entry:?} is not an IP address or CIDR network \
         (examples: 127.0.0.1, 10.0.0.0/8, ::1, fd00::/8)"
    )]
    BadProxy { entry: String },
}

/// The addresses whose forwarding headers are believed: the reverse proxies in front of
/// Synapse. The default is loopback only (`127.0.0.0/8` and `::1/128`), which fits the
/// usual nginx-on-the-same-host deployment.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trust exactly these networks. IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are
    /// stored as the IPv4 networks they stand for.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies {
            nets: nets.into_iter().map(canonical_net).collect(),
        }
    }

    /// Trust nobody: the TCP peer is always the client.
    pub fn none() -> Self {
        TrustedProxies { nets: Vec::new() }
    }

    /// The trusted networks, host bits cleared.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`,
    /// what a dual-stack socket reports for an IPv4 peer) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    fn parse_entry(entry: &str) -> Result<IpNet, ClientIpError> {
        let bad = || ClientIpError::BadProxy {
            entry: entry.to_owned(),
        };
        let trimmed = entry.trim();
        if let Ok(net) = IpNet::from_str(trimmed) {
            return Ok(net);
        }
        let bare = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        let ip = IpAddr::from_str(bare).map_err(|_| bad())?;
        Ok(IpNet::from(ip))
    }
}

impl Default for TrustedProxies {
    fn default() -> Self {
        TrustedProxies::new([
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::LOCALHOST, 8)),
            IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        ])
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.nets.iter().map(|n| n.to_string()))
            .finish()
    }
}

/// A comma- or whitespace-separated list: `"127.0.0.1, 10.0.0.0/8 ::1"`. An empty string is
/// an empty list (trust nobody).
impl FromStr for TrustedProxies {
    type Err = ClientIpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let nets = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .map(Self::parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies::new(nets))
    }
}

/// One address or network per element, as a configuration file lists them.
impl TryFrom<&[String]> for TrustedProxies {
    type Error = ClientIpError;

    fn try_from(entries: &[String]) -> Result<Self, Self::Error> {
        let nets = entries
            .iter()
            .map(|e| Self::parse_entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies::new(nets))
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        return IpNet::V4(Ipv4Net::new_assert(v4, v6.prefix_len() - 96).trunc());
    }
    net.trunc()
}

/// Where [`ClientAddress::ip`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressSource {
    /// The TCP peer of the connection.
    Peer,
    /// An `X-Forwarded-For` entry, believed because the peer is a trusted proxy.
    XForwardedFor,
    /// A `for=` parameter of an RFC 7239 `Forwarded` header from a trusted proxy.
    Forwarded,
}

/// The client a request is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ClientAddress {
    /// The client address; IPv4-mapped IPv6 addresses are given as IPv4.
    pub ip: IpAddr,
    pub source: AddressSource,
    /// A forwarding header was present but the peer is not a trusted proxy, so it was not
    /// believed. Either a client forging its address or a proxy missing from the trusted list.
    pub ignored_forwarding: bool,
    /// A trusted proxy sent a forwarding header with an entry that could not be parsed; the
    /// address is the last one before it (walking from the right) that could be trusted.
    pub malformed: bool,
}

/// What one entry of a forwarding header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Ip(IpAddr),
    /// `unknown` or an RFC 7239 obfuscated identifier (`_hidden`): valid, but no address.
    Opaque,
}

/// The client of a request whose TCP peer is `peer` and whose header fields are `headers`
/// (name, value), in the order received. Names are compared case-insensitively; several
/// `X-Forwarded-For` (or `Forwarded`) fields are combined in order, as RFC 9110 section 5.3
/// says for list-valued fields. `X-Forwarded-For` wins over `Forwarded` when both are sent.
///
/// Walking the list from the right: trusted proxies are skipped, the first other address is
/// the client; if all are trusted the leftmost is; an `unknown` or obfuscated hop, or an
/// unparseable entry (`malformed`), stops the walk at the last trusted address to its right.
/// Never panics, whatever the bytes.
pub fn client_address(
    peer: IpAddr,
    headers: &[(&str, &[u8])],
    trusted: &TrustedProxies,
) -> ClientAddress {
    let peer = peer.to_canonical();
    let peer_only = |ignored_forwarding, malformed| ClientAddress {
        ip: peer,
        source: AddressSource::Peer,
        ignored_forwarding,
        malformed,
    };
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    if !trusted.contains(peer) {
        let forwarding = headers.iter().any(|(n, _)| {
            n.eq_ignore_ascii_case("x-forwarded-for") || n.eq_ignore_ascii_case("forwarded")
        });
        return peer_only(forwarding, false);
    }

    // X-Forwarded-For: split each field on commas and walk fields and entries backwards,
    // without collecting. Empty list elements are ignored (RFC 9110 section 5.6.1).
    let mut xff = named("x-forwarded-for")
        .rev()
        .flat_map(|v| v.rsplit(|&b| b == b','))
        .map(trim_ows)
        .filter(|e| !e.is_empty())
        .map(|e| std::str::from_utf8(e).ok().and_then(parse_node))
        .peekable();
    if xff.peek().is_some() {
        walk_from_right(peer, trusted, AddressSource::XForwardedFor, xff)
    } else {
        let mut hops = Vec::new();
        for value in named("forwarded") {
            forwarded::for_nodes(value, &mut hops);
        }
        if hops.is_empty() {
            return peer_only(false, false);
        }
        walk_from_right(
            peer,
            trusted,
            AddressSource::Forwarded,
            hops.into_iter().rev(),
        )
    }
}

/// The right-to-left walk over parsed entries (`None` = unparseable).
fn walk_from_right(
    peer: IpAddr,
    trusted: &TrustedProxies,
    source: AddressSource,
    entries: impl Iterator<Item = Option<Node>>,
) -> ClientAddress {
    // The last address known to be a trusted proxy, and where it came from.
    let mut last = (peer, AddressSource::Peer);
    let stop = |(ip, source): (IpAddr, AddressSource), malformed| ClientAddress {
        ip,
        source,
        ignored_forwarding: false,
        malformed,
    };
    for entry in entries {
        match entry {
            Some(Node::Ip(ip)) if trusted.contains(ip) => last = (ip, source),
            Some(Node::Ip(ip)) => return stop((ip, source), false),
            Some(Node::Opaque) => return stop(last, false),
            None => return stop(last, true),
        }
    }
    stop(last, false)
}

/// Trims optional whitespace (SP / HTAB) from both ends.
fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// One node as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`, `unknown`, `_obfuscated`, each optionally with a port that may itself
/// be obfuscated (`1.2.3.4:_p`, RFC 7239 section 6). Returns `None` for anything else.
fn parse_node(s: &str) -> Option<Node> {
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(Node::Ip(ip.to_canonical()));
    }
    let (host, port, bracketed) = match s.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (host, port, true)
        }
        None => match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port), false),
            None => (s, None, false),
        },
    };
    if port.is_some_and(|p| !is_port(p) && !is_obfuscated(p)) {
        return None;
    }
    if !bracketed && (host.eq_ignore_ascii_case("unknown") || is_obfuscated(host)) {
        return Some(Node::Opaque);
    }
    let ip = match bracketed {
        true => IpAddr::V6(Ipv6Addr::from_str(host).ok()?),
        false => IpAddr::V4(Ipv4Addr::from_str(host).ok()?),
    };
    Some(Node::Ip(ip.to_canonical()))
}

fn is_port(s: &str) -> bool {
    (1..=5).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok()
}

/// RFC 7239 section 6.3: `obfnode = "_" 1*( ALPHA / DIGIT / "." / "_" / "-" )`, and the same
/// shape for an obfuscated port.
fn is_obfuscated(s: &str) -> bool {
    s.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}
