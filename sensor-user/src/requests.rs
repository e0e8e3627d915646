//! Requests: reassembling head chunks per connection, parsing them, attributing each request
//! to its client address, token and user, and giving it the exact bytes of its exchange.
//!
//! Each head chunk carries the connection's counters when it arrived. Request *k* of a
//! keep-alive connection owns every byte from its head to the next request's head (its
//! body, then the response): `bytes_in` and `bytes_out` are the differences between the
//! counters at the two heads, or at the head and the connection's close. So a request's
//! record is written when the next request starts or the connection closes.
//!
//! Raw head bytes live only until the head is complete and parsed; what is kept is derived
//! (redacted path, endpoint, client address, token fingerprint, user).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use crate::{
    client_ip::{ClientAddress, TrustedProxies, client_address},
    decode::HeadChunk,
    endpoint::{self, Class},
    http::{self, HeadError},
    identity::{self, Fingerprint, FingerprintKey, TokenSource},
    output::RequestRecord,
    time::KernelClock,
};

/// What requests are attributed with.
pub struct Attribution {
    pub trusted: TrustedProxies,
    pub key: FingerprintKey,
    /// The homeserver's `server_name`, for `@localpart:server_name`.
    pub server_name: Option<String>,
}

/// The connection a request came on, as the agent knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnView {
    pub pid: Option<u32>,
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
}

/// The request in progress on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InProgress {
    /// When its head arrived (kernel monotonic ns).
    pub since_ns: u64,
    pub client_ip: Option<String>,
    pub token: Option<Fingerprint>,
    pub user: Option<String>,
    pub endpoint: &'static str,
    /// Redacted.
    pub path: String,
}

/// What a parsed head leaves behind, until its exchange ends. A keep-alive connection holds
/// its last request until the next head or the close, so there is one of these per open
/// connection (100,000 on a big homeserver): fixed-size facts inline, every string in one
/// allocation.
#[derive(Clone, Debug)]
struct Parsed {
    endpoint: &'static str,
    class: Class,
    full_state: Option<bool>,
    since: Option<bool>,
    client: Option<ClientAddress>,
    token: Option<(Fingerprint, TokenSource)>,
    /// Indexed by [`Text`].
    text: PackedStrs<{ Text::COUNT }>,
}

/// The strings of a [`Parsed`], by their index in its `text`.
#[derive(Clone, Copy)]
enum Text {
    Method,
    Path,
    Room,
    EventId,
    TargetUser,
    MediaServer,
    MediaId,
    User,
}

impl Text {
    const COUNT: usize = 8;
}

impl Parsed {
    fn get(&self, which: Text) -> Option<&str> {
        self.text.get(which as usize)
    }

    fn owned(&self, which: Text) -> Option<String> {
        self.get(which).map(str::to_owned)
    }
}

/// `N` optional strings in one allocation: their concatenation and where each ends.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PackedStrs<const N: usize> {
    text: Box<str>,
    /// The end of each string in `text`, or `ABSENT`.
    ends: [u32; N],
}

impl<const N: usize> PackedStrs<N> {
    const ABSENT: u32 = u32::MAX;

    fn new(parts: [Option<&str>; N]) -> Self {
        let mut text = String::with_capacity(parts.iter().flatten().map(|p| p.len()).sum());
        let mut ends = [Self::ABSENT; N];
        for (end, part) in ends.iter_mut().zip(parts) {
            if let Some(part) = part {
                text.push_str(part);
                // Heads are at most a few KiB (`HEAD_CAPTURE` per head): a text of 4 GiB
                // cannot be built from them.
                *end = u32::try_from(text.len()).unwrap_or(Self::ABSENT - 1);
            }
        }
        Self {
            text: text.into_boxed_str(),
            ends,
        }
    }

    fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        if end == Self::ABSENT {
            return None;
        }
        let start = self.ends[..i]
            .iter()
            .rev()
            .find(|&&e| e != Self::ABSENT)
            .map_or(0, |&e| e);
        self.text.get(start as usize..end as usize)
    }
}

/// A request's head: its bytes until it is complete, then what parsing it left.
enum Head {
    Collecting(Vec<u8>),
    Parsed(Parsed),
    Failed(HeadError),
}

/// A request whose head has started and whose exchange is not over.
struct Pending {
    ts_ns: u64,
    /// The connection's counters at the head's start.
    bytes_in: u64,
    bytes_out: u64,
    /// Raw bytes only until the head is parsed.
    head: Head,
    /// Chunks were lost (ring buffer full) or arrived out of order.
    damaged: bool,
    heads_lost: u32,
}

/// Request heads in progress, per connection, and how heads fared.
#[derive(Default)]
pub struct Requests {
    pending: HashMap<u64, Pending>,
    /// Heads by outcome: `parsed` or a `HeadError` name.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Requests whose head chunks were lost or arrived out of order.
    pub damaged: u64,
}

impl Requests {
    /// Takes a head chunk; returns the record of the request it ends, if any.
    pub fn on_chunk(
        &mut self,
        chunk: HeadChunk,
        conn: ConnView,
        attribution: &Attribution,
        clock: &KernelClock,
    ) -> Option<RequestRecord> {
        let mut finished = None;
        if chunk.first {
            if let Some(prev) = self.pending.remove(&chunk.cookie) {
                finished = Some(self.finish(
                    prev,
                    chunk.cookie,
                    (chunk.bytes_in, chunk.bytes_out),
                    conn,
                    attribution,
                    clock,
                ));
            }
            self.pending.insert(
                chunk.cookie,
                Pending {
                    ts_ns: chunk.ts_ns,
                    bytes_in: chunk.bytes_in,
                    bytes_out: chunk.bytes_out,
                    head: Head::Collecting(Vec::with_capacity(chunk.data.len())),
                    damaged: false,
                    heads_lost: chunk.heads_lost,
                },
            );
        }
        let Some(p) = self.pending.get_mut(&chunk.cookie) else {
            // A continuation whose first chunk was lost: nothing to attach it to.
            self.damaged += 1;
            return finished;
        };
        let Head::Collecting(bytes) = &mut p.head else {
            return finished;
        };
        if chunk.offset as usize != bytes.len() || chunk.heads_lost != p.heads_lost {
            p.damaged = true;
        }
        bytes.extend_from_slice(&chunk.data);
        if chunk.end || chunk.cut {
            // Complete: parse now, so the raw bytes go at once.
            let bytes = std::mem::take(bytes);
            p.head = match parse(bytes, chunk.cut, conn, attribution, &mut self.outcomes) {
                Ok(parsed) => Head::Parsed(parsed),
                Err(e) => Head::Failed(e),
            };
        }
        finished
    }

    /// The connection closed with these final counters: the last request's exchange is
    /// over. Returns its record.
    pub fn on_close(
        &mut self,
        cookie: u64,
        final_counts: (u64, u64),
        conn: ConnView,
        attribution: &Attribution,
        clock: &KernelClock,
    ) -> Option<RequestRecord> {
        let p = self.pending.remove(&cookie)?;
        Some(self.finish(p, cookie, final_counts, conn, attribution, clock))
    }

    /// Who is behind the request in progress on a connection, if its head was parsed: for
    /// events about the transfer that is running (the single-transfer threshold).
    pub fn in_progress(&self, cookie: u64) -> Option<InProgress> {
        let p = self.pending.get(&cookie)?;
        let Head::Parsed(parsed) = &p.head else {
            return None;
        };
        Some(InProgress {
            since_ns: p.ts_ns,
            client_ip: parsed.client.map(|c| c.ip.to_string()),
            token: parsed.token.map(|(f, _)| f),
            user: parsed.owned(Text::User),
            endpoint: parsed.endpoint,
            path: parsed.owned(Text::Path).unwrap_or_default(),
        })
    }

    fn finish(
        &mut self,
        p: Pending,
        cookie: u64,
        (bytes_in, bytes_out): (u64, u64),
        conn: ConnView,
        attribution: &Attribution,
        clock: &KernelClock,
    ) -> RequestRecord {
        let outcome = match p.head {
            // The head never ended: parse what came (it will say `incomplete`).
            Head::Collecting(bytes) => parse(bytes, false, conn, attribution, &mut self.outcomes),
            Head::Parsed(parsed) => Ok(parsed),
            Head::Failed(e) => Err(e),
        };
        if p.damaged {
            self.damaged += 1;
        }
        let (parsed, head) = match outcome {
            Ok(parsed) => (Some(parsed), "parsed"),
            Err(e) => (None, e.name()),
        };
        let parsed = parsed.as_ref();
        let text = |which| parsed.and_then(|x| x.owned(which));
        let client = parsed.and_then(|x| x.client);
        let token = parsed.and_then(|x| x.token);
        RequestRecord {
            ts: clock.rfc3339(p.ts_ns),
            pid: conn.pid,
            local: conn.local.map(|a| a.to_string()),
            peer: conn.peer.map(|a| a.to_string()),
            cookie,
            method: text(Text::Method),
            path: text(Text::Path),
            endpoint: parsed.map_or("unparsed", |x| x.endpoint),
            class: parsed.map(|x| x.class),
            client_ip: client.map(|c| c.ip.to_string()),
            client_ip_source: client.map(|c| c.source),
            forwarding_ignored: client.is_some_and(|c| c.ignored_forwarding),
            token: token.map(|(f, _)| f),
            token_source: token.map(|(_, s)| s),
            user: text(Text::User),
            bytes_in: bytes_in.saturating_sub(p.bytes_in),
            bytes_out: bytes_out.saturating_sub(p.bytes_out),
            room: text(Text::Room),
            event_id: text(Text::EventId),
            target_user: text(Text::TargetUser),
            media_server: text(Text::MediaServer),
            media_id: text(Text::MediaId),
            full_state: parsed.and_then(|x| x.full_state),
            since: parsed.and_then(|x| x.since),
            head,
            complete: !p.damaged,
        }
    }
}

/// Parses a complete (or never completed) head, counts its outcome, and drops its bytes.
fn parse(
    bytes: Vec<u8>,
    cut: bool,
    conn: ConnView,
    attribution: &Attribution,
    outcomes: &mut BTreeMap<&'static str, u64>,
) -> Result<Parsed, HeadError> {
    let outcome = http::parse(&bytes, cut).map(|h| derive(&h, conn, attribution));
    let name = outcome.as_ref().map_or_else(|e| e.name(), |_| "parsed");
    *outcomes.entry(name).or_default() += 1;
    outcome
}

/// Everything the sensor keeps of a parsed head.
fn derive(h: &http::RequestHead<'_>, conn: ConnView, a: &Attribution) -> Parsed {
    let query = h.target.split_once('?').map(|(_, q)| q);
    let token = identity::token(&h.headers, query);
    let (fingerprint, user) = match &token {
        Some(t) => (
            Some((a.key.fingerprint(t.as_bytes()), t.source())),
            identity::user_from_token(t.as_bytes(), a.server_name.as_deref()),
        ),
        None => (None, None),
    };
    drop(token);
    let e = endpoint::classify(h.method, h.target);
    let path = identity::redact_target(h.target);
    let mut text = [None; Text::COUNT];
    for (which, value) in [
        (Text::Method, Some(h.method)),
        (Text::Path, Some(&*path)),
        (Text::Room, e.room.as_deref()),
        (Text::EventId, e.event_id.as_deref()),
        (Text::TargetUser, e.user_id.as_deref()),
        (
            Text::MediaServer,
            e.media.as_ref().map(|m| m.server.as_str()),
        ),
        (Text::MediaId, e.media.as_ref().map(|m| m.media_id.as_str())),
        (Text::User, user.as_deref()),
    ] {
        text[which as usize] = value;
    }
    Parsed {
        endpoint: e.name,
        class: e.class,
        full_state: e.full_state,
        since: e.since,
        client: conn
            .peer
            .map(|peer| client_address(peer.ip(), &h.headers, &a.trusted)),
        token: fingerprint,
        text: PackedStrs::new(text),
    }
}

#[cfg(test)]
mod tests;
