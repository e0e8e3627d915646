//! Sliding windows with bounded memory, exact counts, and no clock of their own: every
//! call carries the window's end (`end_ms`, the latest time the detector has seen) and the
//! event's own time (`t_ms`), which may be a little older (requests finish out of order).
//!
//! - [`SumWindow`] sums bytes and counts requests. Events are kept as a deque of slots, one
//!   per active slot, where a slot is 1/60 of the window and at least one second: 1 s for
//!   windows up to 1 min, 10 s for 10 min, 1 min for 1 h, 24 min for 24 h. Sums are exact;
//!   only expiry is rounded to the slot: an event counts until the first slot boundary at
//!   or after `t + window`, so for between `window - slot` and `window`. A window holds at
//!   most 60 slots of 24 bytes, so its memory is bounded whatever the traffic: a client
//!   long-polling /sync costs about 80 slots over the three default volume windows.
//! - [`DistinctWindow`] counts distinct items (rooms, media, users) by the time each was
//!   last touched, to the millisecond: an item counts while `end - last_touch < window`.
//!   It holds at most `cap` items; a new item that finds it full is not stored, the window
//!   is marked saturated and its count stays at `cap` (a lower bound) until items expire.
//!   Items are kept as 64-bit hashes (SipHash with fixed keys, so runs are reproducible);
//!   only a few candidate names are kept, for the evidence of an alert.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

use super::TopItem;

/// Slots per window, for windows longer than this many seconds. More would sharpen
/// expiry but cost a slot per /sync long-poll (every 30 s) of every connected client.
const SLOTS: u64 = 60;

/// Names kept per distinct window as candidates for the top items of an alert.
const TOP_CANDIDATES: usize = 8;

/// The 64-bit key of an item: SipHash-1-3 with fixed keys (`DefaultHasher::new`), so the
/// same item has the same key in every run.
pub(super) fn item_key(item: &impl Hash) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(item)
}

/// The requests of one slot (24 bytes; the slot number is `first_ms / slot_ms`).
#[derive(Debug)]
struct Slot {
    first_ms: u64,
    bytes: u64,
    requests: u32,
}

/// Bytes and requests over a sliding window.
#[derive(Debug)]
pub(super) struct SumWindow {
    slot_ms: u64,
    slots: u64,
    entries: VecDeque<Slot>,
    bytes: u64,
    requests: u64,
    last_ms: u64,
}

impl SumWindow {
    pub(super) fn new(window_s: u64) -> Self {
        let window_s = window_s.max(1);
        let slot_s = window_s.div_ceil(SLOTS);
        SumWindow {
            slot_ms: slot_s.saturating_mul(1000),
            slots: window_s.div_ceil(slot_s),
            entries: VecDeque::new(),
            bytes: 0,
            requests: 0,
            last_ms: 0,
        }
    }

    /// Adds one request of `bytes` at `t_ms`; false if it is already outside the window.
    pub(super) fn add(&mut self, end_ms: u64, t_ms: u64, bytes: u64) -> bool {
        self.advance(end_ms);
        let slot = t_ms / self.slot_ms;
        if slot.saturating_add(self.slots) <= end_ms / self.slot_ms {
            return false;
        }
        // Events come nearly in order: look from the back.
        let slot_ms = self.slot_ms;
        match self
            .entries
            .iter()
            .rposition(|e| e.first_ms / slot_ms <= slot)
        {
            Some(i) if self.entries[i].first_ms / slot_ms == slot => {
                let e = &mut self.entries[i];
                e.first_ms = e.first_ms.min(t_ms);
                e.bytes = e.bytes.saturating_add(bytes);
                e.requests = e.requests.saturating_add(1);
            }
            found => {
                let at = found.map_or(0, |i| i + 1);
                let entry = Slot {
                    first_ms: t_ms,
                    bytes,
                    requests: 1,
                };
                self.entries.insert(at, entry);
            }
        }
        self.bytes = self.bytes.saturating_add(bytes);
        self.requests += 1;
        self.last_ms = self.last_ms.max(t_ms);
        true
    }

    /// Drops the slots that ended before the window ending at `end_ms`.
    pub(super) fn advance(&mut self, end_ms: u64) {
        let now = end_ms / self.slot_ms;
        while let Some(e) = self.entries.front() {
            if (e.first_ms / self.slot_ms).saturating_add(self.slots) > now {
                break;
            }
            self.bytes = self.bytes.saturating_sub(e.bytes);
            self.requests = self.requests.saturating_sub(u64::from(e.requests));
            self.entries.pop_front();
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Slots held (tests check the memory bound).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests
    }

    /// Time of the earliest request still counted (0 when empty).
    pub(super) fn first_ms(&self) -> u64 {
        // Slots are in time order, and each keeps its earliest request.
        self.entries.front().map_or(0, |e| e.first_ms)
    }

    pub(super) fn last_ms(&self) -> u64 {
        self.last_ms
    }
}

#[derive(Debug, Clone, Copy)]
struct Item {
    last_ms: u64,
    requests: u64,
    bytes: u64,
}

/// Distinct items over a sliding window, at most `cap` of them.
#[derive(Debug)]
pub(super) struct DistinctWindow {
    window_ms: u64,
    cap: usize,
    items: HashMap<u64, Item>,
    /// At most the smallest `last_ms` of `items`: expiry scans only when it has passed.
    oldest_ms: u64,
    top: Vec<(u64, Box<str>)>,
    saturated: bool,
    last_ms: u64,
}

impl DistinctWindow {
    pub(super) fn new(window_s: u64, cap: usize) -> Self {
        DistinctWindow {
            window_ms: window_s.max(1).saturating_mul(1000),
            cap: cap.max(1),
            items: HashMap::new(),
            oldest_ms: u64::MAX,
            top: Vec::new(),
            saturated: false,
            last_ms: 0,
        }
    }

    pub(super) fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    /// Touches item `key` (named `name`, if it should ever be shown) with one request of
    /// `bytes` at `t_ms`; false if the event is already outside the window. A new item
    /// that finds the window full is not stored but marks it saturated (and returns true).
    pub(super) fn add(
        &mut self,
        end_ms: u64,
        t_ms: u64,
        key: u64,
        name: Option<&str>,
        bytes: u64,
    ) -> bool {
        self.advance(end_ms);
        if t_ms.saturating_add(self.window_ms) <= end_ms {
            return false;
        }
        let full = self.items.len() >= self.cap;
        let item = match self.items.get_mut(&key) {
            Some(item) => item,
            None if full => {
                self.saturated = true;
                self.last_ms = self.last_ms.max(t_ms);
                return true;
            }
            None => self.items.entry(key).or_insert(Item {
                last_ms: t_ms,
                requests: 0,
                bytes: 0,
            }),
        };
        item.last_ms = item.last_ms.max(t_ms);
        item.requests += 1;
        item.bytes = item.bytes.saturating_add(bytes);
        let stat = (item.bytes, item.requests);
        self.oldest_ms = self.oldest_ms.min(t_ms);
        self.last_ms = self.last_ms.max(t_ms);
        if let Some(name) = name {
            self.offer_top(key, name, stat);
        }
        true
    }

    /// Keeps `key` among the named candidates if it is bigger than the smallest of them.
    fn offer_top(&mut self, key: u64, name: &str, stat: (u64, u64)) {
        if self.top.iter().any(|(k, _)| *k == key) {
            return;
        }
        if self.top.len() < TOP_CANDIDATES {
            self.top.push((key, name.into()));
            return;
        }
        let weight = |k: &u64| self.items.get(k).map_or((0, 0), |i| (i.bytes, i.requests));
        let smallest = (0..self.top.len()).min_by_key(|&i| weight(&self.top[i].0));
        if let Some(i) = smallest
            && weight(&self.top[i].0) < stat
        {
            self.top[i] = (key, name.into());
        }
    }

    /// Forgets the items not touched within the window ending at `end_ms`.
    pub(super) fn advance(&mut self, end_ms: u64) {
        let cutoff = end_ms.saturating_sub(self.window_ms);
        if self.items.is_empty() || self.oldest_ms > cutoff || end_ms < self.window_ms {
            return;
        }
        self.items.retain(|_, item| item.last_ms > cutoff);
        self.oldest_ms = self
            .items
            .values()
            .map(|i| i.last_ms)
            .min()
            .unwrap_or(u64::MAX);
        let items = &self.items;
        self.top.retain(|(k, _)| items.contains_key(k));
        if self.items.len() < self.cap {
            self.saturated = false;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(super) fn count(&self) -> u64 {
        self.items.len() as u64
    }

    /// A new item was refused because the window was full: `count` is a lower bound.
    pub(super) fn saturated(&self) -> bool {
        self.saturated
    }

    /// Requests and bytes of the items still counted.
    pub(super) fn totals(&self) -> (u64, u64) {
        self.items.values().fold((0, 0), |(r, b), i| {
            (r + i.requests, b.saturating_add(i.bytes))
        })
    }

    /// Time of the earliest request still counted: the oldest last touch.
    pub(super) fn first_ms(&self) -> u64 {
        self.items.values().map(|i| i.last_ms).min().unwrap_or(0)
    }

    pub(super) fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// Named items touched at or after `since_ms`, for [`top_items`].
    pub(super) fn named_since(&self, since_ms: u64) -> impl Iterator<Item = TopItem> + '_ {
        self.top.iter().filter_map(move |(k, name)| {
            let item = self.items.get(k).filter(|i| i.last_ms >= since_ms)?;
            Some(TopItem {
                item: name.to_string(),
                requests: item.requests,
                bytes_out: item.bytes,
            })
        })
    }
}

/// The `n` biggest items, by bytes, then requests, then name; one row per name.
pub(super) fn top_items(candidates: impl Iterator<Item = TopItem>, n: usize) -> Vec<TopItem> {
    let weight = |i: &TopItem| std::cmp::Reverse((i.bytes_out, i.requests));
    let mut all: Vec<TopItem> = candidates.collect();
    // Biggest row per name first, then the biggest names.
    all.sort_by(|a, b| a.item.cmp(&b.item).then_with(|| weight(a).cmp(&weight(b))));
    all.dedup_by(|later, earlier| later.item == earlier.item);
    all.sort_by(|a, b| weight(a).cmp(&weight(b)).then_with(|| a.item.cmp(&b.item)));
    all.truncate(n);
    all
}
