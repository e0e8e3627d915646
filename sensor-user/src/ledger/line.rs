//! One data line of a segment: what one subject (a token fingerprint or a client address)
//! did within the segment's hour, as JSON. Every entry carries its own counts and the
//! first and last request, in milliseconds from the start of the hour.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::endpoint::Class;
use crate::identity::Fingerprint;
use crate::output::RequestRecord;

/// Distinct items (rooms, media, users looked up, of every kind together) listed per
/// subject and hour: 100,000, about 6 MB of segment at ~60 bytes an item. Far above any
/// person (and above the Tchap scraper's whole haul of 59,386 media, were it fetched in
/// one hour); past it, an item's requests and bytes still count, in `over` ("N more items
/// not listed"), so totals stay exact.
pub const ITEM_CAP: usize = 100_000;

/// Peers listed per subject and hour in each of `users`, `addresses` and `tokens` (the
/// busiest are kept); the requests of the rest are counted in `over_users`/`over_peers`.
pub const PEER_CAP: usize = 64;

/// The key for "none" in `addresses` (requests without a client address) and `tokens`
/// (requests without a token).
pub const NONE: &str = "-";

/// Requests, bytes and the first and last request of one entry. On disk an array
/// `[requests, bytes_in, bytes_out, first, last]`, times in milliseconds from the start of
/// the hour (or, in a report, from the epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CountsArray", into = "CountsArray")]
pub struct Counts {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub first: u64,
    pub last: u64,
}

type CountsArray = (u64, u64, u64, u64, u64);

impl From<CountsArray> for Counts {
    fn from((requests, bytes_in, bytes_out, first, last): CountsArray) -> Self {
        Counts {
            requests,
            bytes_in,
            bytes_out,
            first,
            last,
        }
    }
}

impl From<Counts> for CountsArray {
    fn from(c: Counts) -> Self {
        (c.requests, c.bytes_in, c.bytes_out, c.first, c.last)
    }
}

impl Counts {
    /// One request at `t`.
    pub fn one(bytes_in: u64, bytes_out: u64, t: u64) -> Self {
        Counts {
            requests: 1,
            bytes_in,
            bytes_out,
            first: t,
            last: t,
        }
    }

    /// Adds `other` (sums, earliest first, latest last).
    pub fn merge(&mut self, other: &Counts) {
        if self.requests == 0 {
            *self = *other;
            return;
        }
        if other.requests == 0 {
            return;
        }
        self.requests += other.requests;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }

    /// The same counts with times moved by `base` (hour offsets to epoch milliseconds).
    pub fn shifted(&self, base: u64) -> Counts {
        Counts {
            first: self.first.saturating_add(base),
            last: self.last.saturating_add(base),
            ..*self
        }
    }
}

pub type Entries = HashMap<String, Counts>;

/// What one request names, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemKind {
    /// Room history, members, state (class `room_history`, `room_members`, `room_state`).
    RoomRead,
    /// Join and knock.
    RoomJoined,
    /// Any other request naming a room (send, leave, hierarchy, admin room endpoints...).
    RoomOther,
    /// Media downloads and thumbnails, as `server/media_id`.
    Media,
    /// Any other request naming a piece of media (upload to an ID, admin media endpoints).
    MediaOther,
    /// A user the request is about (profiles, admin user endpoints).
    UserLookedUp,
}

impl ItemKind {
    pub const ALL: [ItemKind; 6] = [
        ItemKind::RoomRead,
        ItemKind::RoomJoined,
        ItemKind::RoomOther,
        ItemKind::Media,
        ItemKind::MediaOther,
        ItemKind::UserLookedUp,
    ];
}

/// The items a request names, with their kind: at most a room, a piece of media and a user
/// (no endpoint names more than one today; one that did would count for each).
pub fn items_of(req: &RequestRecord) -> Vec<(ItemKind, String)> {
    let mut items = Vec::new();
    if let Some(room) = &req.room {
        let kind = match req.class {
            Some(Class::RoomHistory | Class::RoomMembers | Class::RoomState) => ItemKind::RoomRead,
            Some(Class::Join) => ItemKind::RoomJoined,
            _ => ItemKind::RoomOther,
        };
        items.push((kind, room.clone()));
    }
    if let (Some(server), Some(id)) = (&req.media_server, &req.media_id) {
        let kind = match req.class {
            Some(Class::MediaDownload | Class::MediaThumbnail) => ItemKind::Media,
            _ => ItemKind::MediaOther,
        };
        items.push((kind, format!("{server}/{id}")));
    }
    if let Some(user) = &req.target_user {
        items.push((ItemKind::UserLookedUp, user.clone()));
    }
    items
}

/// What one subject did within one hour. Exactly one of `token` and `address` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Line {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Fingerprint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Users of the requests (a token's own user; the users seen at an address).
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub users: Entries,
    /// Token subjects: the client addresses it came from (`-`: unknown).
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub addresses: Entries,
    /// Address subjects: the tokens used from it (`-`: requests without a token).
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub tokens: Entries,
    /// Every request counts here once, under its endpoint name: the totals.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub endpoints: Entries,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub rooms_read: Entries,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub rooms_joined: Entries,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub rooms_other: Entries,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub media: Entries,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub media_other: Entries,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub users_looked_up: Entries,
    /// Item entries left out because `ITEM_CAP` was reached (an item left out of several
    /// lines counts once per line).
    #[serde(skip_serializing_if = "is_zero")]
    pub over_items: u64,
    /// The requests of the items left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over: Option<Counts>,
    /// Requests whose address (token subjects) or token (address subjects) is not listed
    /// because `PEER_CAP` was reached.
    #[serde(skip_serializing_if = "is_zero")]
    pub over_peers: u64,
    /// Requests whose user is not listed because `PEER_CAP` was reached.
    #[serde(skip_serializing_if = "is_zero")]
    pub over_users: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Adds one request to `key`'s entry, without allocating when it exists.
fn bump(map: &mut Entries, key: &str, one: &Counts) {
    match map.get_mut(key) {
        Some(c) => c.merge(one),
        None => {
            map.insert(key.to_owned(), *one);
        }
    }
}

impl Line {
    pub fn for_token(token: Fingerprint) -> Self {
        Line {
            token: Some(token),
            ..Line::default()
        }
    }

    pub fn for_address(address: &str) -> Self {
        Line {
            address: Some(address.to_owned()),
            ..Line::default()
        }
    }

    /// Exactly one subject.
    pub fn is_valid(&self) -> bool {
        self.token.is_some() != self.address.is_some()
    }

    pub fn items(&self, kind: ItemKind) -> &Entries {
        match kind {
            ItemKind::RoomRead => &self.rooms_read,
            ItemKind::RoomJoined => &self.rooms_joined,
            ItemKind::RoomOther => &self.rooms_other,
            ItemKind::Media => &self.media,
            ItemKind::MediaOther => &self.media_other,
            ItemKind::UserLookedUp => &self.users_looked_up,
        }
    }

    fn items_mut(&mut self, kind: ItemKind) -> &mut Entries {
        match kind {
            ItemKind::RoomRead => &mut self.rooms_read,
            ItemKind::RoomJoined => &mut self.rooms_joined,
            ItemKind::RoomOther => &mut self.rooms_other,
            ItemKind::Media => &mut self.media,
            ItemKind::MediaOther => &mut self.media_other,
            ItemKind::UserLookedUp => &mut self.users_looked_up,
        }
    }

    /// Item entries listed, of every kind.
    pub fn item_count(&self) -> usize {
        ItemKind::ALL.iter().map(|&k| self.items(k).len()).sum()
    }

    /// Adds one request at `t` (ms from the start of the hour). `peer` is the other side
    /// of the subject (the address of a token's request, the token of an address's), `-`
    /// when there is none. Returns how many items were left out (cap reached).
    pub fn record(
        &mut self,
        req: &RequestRecord,
        t: u64,
        items: &[(ItemKind, String)],
        peer: &str,
    ) -> u64 {
        let one = Counts::one(req.bytes_in, req.bytes_out, t);
        bump(&mut self.endpoints, req.endpoint, &one);
        if let Some(user) = &req.user {
            bump_peer(&mut self.users, user, &one, &mut self.over_users);
        }
        let peers = if self.token.is_some() {
            &mut self.addresses
        } else {
            &mut self.tokens
        };
        bump_peer(peers, peer, &one, &mut self.over_peers);
        let mut left_out = 0;
        let mut listed = None;
        for (kind, id) in items {
            if let Some(c) = self.items_mut(*kind).get_mut(id.as_str()) {
                c.merge(&one);
                continue;
            }
            let n = *listed.get_or_insert_with(|| self.item_count());
            if n < ITEM_CAP {
                self.items_mut(*kind).insert(id.clone(), one);
                listed = Some(n + 1);
            } else {
                self.over_items += 1;
                self.over.get_or_insert_with(Counts::default).merge(&one);
                left_out += 1;
            }
        }
        left_out
    }

    /// Adds another line of the same subject and hour. Caps are not applied: see
    /// [`Line::apply_caps`].
    pub fn merge(&mut self, other: Line) {
        fn merge_map(into: &mut Entries, from: Entries) {
            if into.is_empty() {
                *into = from;
                return;
            }
            for (k, c) in from {
                into.entry(k).or_default().merge(&c);
            }
        }
        merge_map(&mut self.users, other.users);
        merge_map(&mut self.addresses, other.addresses);
        merge_map(&mut self.tokens, other.tokens);
        merge_map(&mut self.endpoints, other.endpoints);
        merge_map(&mut self.rooms_read, other.rooms_read);
        merge_map(&mut self.rooms_joined, other.rooms_joined);
        merge_map(&mut self.rooms_other, other.rooms_other);
        merge_map(&mut self.media, other.media);
        merge_map(&mut self.media_other, other.media_other);
        merge_map(&mut self.users_looked_up, other.users_looked_up);
        self.over_items += other.over_items;
        self.over_peers += other.over_peers;
        self.over_users += other.over_users;
        if let Some(o) = other.over {
            self.over.get_or_insert_with(Counts::default).merge(&o);
        }
    }

    /// Applies `ITEM_CAP` and `PEER_CAP` to a merged line: the biggest entries (bytes out,
    /// then requests, then name) stay listed, the rest are folded into `over` and
    /// `over_users`/`over_peers`. Returns the item entries folded.
    pub fn apply_caps(&mut self) -> u64 {
        self.over_users += cap_peers(&mut self.users);
        self.over_peers += cap_peers(&mut self.addresses) + cap_peers(&mut self.tokens);
        let n = self.item_count();
        if n <= ITEM_CAP {
            return 0;
        }
        let mut all: Vec<(ItemKind, String, Counts)> = Vec::with_capacity(n);
        for kind in ItemKind::ALL {
            all.extend(self.items_mut(kind).drain().map(|(k, c)| (kind, k, c)));
        }
        all.sort_by(|a, b| biggest_first((&a.1, &a.2), (&b.1, &b.2)).then(a.0.cmp(&b.0)));
        let folded = all.split_off(ITEM_CAP);
        for (kind, id, c) in all {
            self.items_mut(kind).insert(id, c);
        }
        let over = self.over.get_or_insert_with(Counts::default);
        for (_, _, c) in &folded {
            over.merge(c);
        }
        self.over_items += folded.len() as u64;
        folded.len() as u64
    }
}

/// Adds a request to a peer entry, or counts it in `over_peers` when the map is full.
fn bump_peer(map: &mut Entries, key: &str, one: &Counts, over_peers: &mut u64) {
    if let Some(c) = map.get_mut(key) {
        c.merge(one);
    } else if map.len() < PEER_CAP {
        map.insert(key.to_owned(), *one);
    } else {
        *over_peers += 1;
    }
}

/// Applies `PEER_CAP` to a peer map; returns the requests of the entries left out.
fn cap_peers(peers: &mut Entries) -> u64 {
    if peers.len() <= PEER_CAP {
        return 0;
    }
    let dropped = keep_biggest(peers, PEER_CAP);
    dropped.iter().map(|(_, c)| c.requests).sum()
}

/// Orders entries biggest first: bytes out, then requests, then name.
pub fn biggest_first(a: (&String, &Counts), b: (&String, &Counts)) -> std::cmp::Ordering {
    b.1.bytes_out
        .cmp(&a.1.bytes_out)
        .then(b.1.requests.cmp(&a.1.requests))
        .then(a.0.cmp(b.0))
}

/// Keeps the `n` biggest entries of `map`; returns the others.
fn keep_biggest(map: &mut Entries, n: usize) -> Vec<(String, Counts)> {
    let mut all: Vec<(String, Counts)> = map.drain().collect();
    all.sort_by(|a, b| biggest_first((&a.0, &a.1), (&b.0, &b.1)));
    let rest = all.split_off(n.min(all.len()));
    map.extend(all);
    rest
}
