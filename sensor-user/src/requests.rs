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
    endpoint::{self, Endpoint},
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

/// What a parsed head leaves behind.
#[derive(Clone, Debug)]
struct Parsed {
    method: String,
    path: String,
    endpoint: Endpoint,
    client: Option<ClientAddress>,
    token: Option<(Fingerprint, TokenSource)>,
    user: Option<String>,
}

/// A request whose head has started and whose exchange is not over.
struct Pending {
    ts_ns: u64,
    /// The connection's counters at the head's start.
    bytes_in: u64,
    bytes_out: u64,
    /// The head's bytes until it is parsed, then empty.
    head: Vec<u8>,
    /// Boxed: a keep-alive connection holds its last request until the next head or the
    /// close, so this map holds one entry per open connection (100,000 of them on a big
    /// homeserver), and its slots stay small.
    outcome: Option<Result<Box<Parsed>, HeadError>>,
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
                    head: Vec::with_capacity(chunk.data.len()),
                    outcome: None,
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
        if p.outcome.is_some() {
            return finished;
        }
        if chunk.offset as usize != p.head.len() || chunk.heads_lost != p.heads_lost {
            p.damaged = true;
        }
        p.head.extend_from_slice(&chunk.data);
        let (cookie, end, cut) = (chunk.cookie, chunk.end, chunk.cut);
        drop(chunk);
        if end || cut {
            // Complete: parse now, so the raw bytes go at once.
            if let Some(mut p) = self.pending.remove(&cookie) {
                let outcome = self.parse(&mut p, cut, conn, attribution);
                p.outcome = Some(outcome);
                self.pending.insert(cookie, p);
            }
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
        let Some(Ok(parsed)) = &p.outcome else {
            return None;
        };
        Some(InProgress {
            since_ns: p.ts_ns,
            client_ip: parsed.client.map(|c| c.ip.to_string()),
            token: parsed.token.map(|(f, _)| f),
            user: parsed.user.clone(),
            endpoint: parsed.endpoint.name,
            path: parsed.path.clone(),
        })
    }

    fn finish(
        &mut self,
        mut p: Pending,
        cookie: u64,
        (bytes_in, bytes_out): (u64, u64),
        conn: ConnView,
        attribution: &Attribution,
        clock: &KernelClock,
    ) -> RequestRecord {
        let outcome = match p.outcome.take() {
            Some(o) => o,
            // The head never ended: parse what came (it will say `incomplete`).
            None => self.parse(&mut p, false, conn, attribution),
        };
        if p.damaged {
            self.damaged += 1;
        }
        let (parsed, head) = match outcome {
            Ok(parsed) => (Some(*parsed), "parsed"),
            Err(e) => (None, e.name()),
        };
        let endpoint = parsed.as_ref().map(|x| &x.endpoint);
        RequestRecord {
            ts: clock.rfc3339(p.ts_ns),
            pid: conn.pid,
            local: conn.local.map(|a| a.to_string()),
            peer: conn.peer.map(|a| a.to_string()),
            cookie,
            method: parsed.as_ref().map(|x| x.method.clone()),
            path: parsed.as_ref().map(|x| x.path.clone()),
            endpoint: endpoint.map_or("unparsed", |e| e.name),
            class: endpoint.map(|e| e.class),
            client_ip: parsed
                .as_ref()
                .and_then(|x| x.client)
                .map(|c| c.ip.to_string()),
            client_ip_source: parsed.as_ref().and_then(|x| x.client).map(|c| c.source),
            forwarding_ignored: parsed
                .as_ref()
                .and_then(|x| x.client)
                .is_some_and(|c| c.ignored_forwarding),
            token: parsed.as_ref().and_then(|x| x.token).map(|(f, _)| f),
            token_source: parsed.as_ref().and_then(|x| x.token).map(|(_, s)| s),
            user: parsed.as_ref().and_then(|x| x.user.clone()),
            bytes_in: bytes_in.saturating_sub(p.bytes_in),
            bytes_out: bytes_out.saturating_sub(p.bytes_out),
            room: endpoint.and_then(|e| e.room.clone()),
            event_id: endpoint.and_then(|e| e.event_id.clone()),
            target_user: endpoint.and_then(|e| e.user_id.clone()),
            media_server: endpoint.and_then(|e| e.media.as_ref().map(|m| m.server.clone())),
            media_id: endpoint.and_then(|e| e.media.as_ref().map(|m| m.media_id.clone())),
            full_state: endpoint.and_then(|e| e.full_state),
            since: endpoint.and_then(|e| e.since),
            head,
            complete: !p.damaged,
        }
    }

    /// Parses the pending head, counts its outcome and drops its bytes.
    fn parse(
        &mut self,
        p: &mut Pending,
        cut: bool,
        conn: ConnView,
        attribution: &Attribution,
    ) -> Result<Box<Parsed>, HeadError> {
        let head = std::mem::take(&mut p.head);
        let result = http::parse(&head, cut).map(|h| Box::new(derive(&h, conn, attribution)));
        *self
            .outcomes
            .entry(result.as_ref().map_or_else(|e| e.name(), |_| "parsed"))
            .or_default() += 1;
        result
    }
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
    Parsed {
        method: h.method.to_string(),
        path: identity::redact_target(h.target).into_owned(),
        endpoint: endpoint::classify(h.method, h.target),
        client: conn
            .peer
            .map(|peer| client_address(peer.ip(), &h.headers, &a.trusted)),
        token: fingerprint,
        user,
    }
}
