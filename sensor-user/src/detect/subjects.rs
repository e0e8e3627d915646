//! Per-subject state: the windows of each rule, recent addresses of a token, and when each
//! (rule, window) last fired. Bounded: windows are bounded (see `window.rs`), a token keeps
//! at most `MAX_ADDRESSES` addresses, and the table at most `max_subjects` subjects.

use std::collections::HashMap;

use super::rules::{self, Rule};
use super::window::{DistinctWindow, SumWindow, top_items};
use super::{DetectConfig, TopItem};
use crate::identity::Fingerprint;

/// Addresses remembered per token (the least recently used is forgotten first).
const MAX_ADDRESSES: usize = 8;

/// Items and addresses shown in an alert.
pub(super) const SHOWN: usize = 5;

/// Who a window counts for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Key {
    Token(Fingerprint),
    Address(Box<str>),
    /// Requests whose client address is unknown (only the admin rule counts them).
    NoAddress,
}

impl Key {
    pub(super) fn is_token(&self) -> bool {
        matches!(self, Key::Token(_))
    }
}

/// When a (rule, window) last fired for a subject, and at what value.
#[derive(Debug)]
struct Fired {
    rule: Rule,
    window_s: u64,
    at_ms: u64,
    value: u64,
}

/// Whether an alert at `value` is due, given the last one `(at_ms, value)`: the
/// re-alert interval has passed, or the value has at least doubled.
pub(super) fn due(last: Option<(u64, u64)>, end_ms: u64, value: u64, realert_ms: u64) -> bool {
    match last {
        None => true,
        Some((at_ms, last_value)) => {
            end_ms.saturating_sub(at_ms) >= realert_ms || value >= last_value.saturating_mul(2)
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// The latest time anything was counted for this subject.
    pub(super) last_ms: u64,
    /// Token subjects: the user of its latest request.
    pub(super) user: Option<String>,
    /// Token subjects: addresses used, with when each was last used.
    addresses: Vec<(String, u64)>,
    sums: Vec<(Rule, u64, SumWindow)>,
    distinct: Vec<(Rule, u64, DistinctWindow)>,
    fired: Vec<Fired>,
}

impl State {
    pub(super) fn sum(&mut self, rule: Rule, window_s: u64) -> &mut SumWindow {
        let at = match self
            .sums
            .iter()
            .position(|(r, w, _)| (*r, *w) == (rule, window_s))
        {
            Some(at) => at,
            None => {
                self.sums.push((rule, window_s, SumWindow::new(window_s)));
                self.sums.len() - 1
            }
        };
        &mut self.sums[at].2
    }

    pub(super) fn distinct(
        &mut self,
        rule: Rule,
        window_s: u64,
        cap: usize,
    ) -> &mut DistinctWindow {
        let found = self
            .distinct
            .iter()
            .position(|(r, w, _)| (*r, *w) == (rule, window_s));
        let at = match found {
            Some(at) => at,
            None => {
                let window = DistinctWindow::new(window_s, cap);
                self.distinct.push((rule, window_s, window));
                self.distinct.len() - 1
            }
        };
        &mut self.distinct[at].2
    }

    pub(super) fn get_sum(&self, rule: Rule, window_s: u64) -> Option<&SumWindow> {
        let mut found = self
            .sums
            .iter()
            .filter(|(r, w, _)| (*r, *w) == (rule, window_s));
        found.next().map(|(_, _, window)| window)
    }

    pub(super) fn get_distinct(&self, rule: Rule, window_s: u64) -> Option<&DistinctWindow> {
        let mut found = self
            .distinct
            .iter()
            .filter(|(r, w, _)| (*r, *w) == (rule, window_s));
        found.next().map(|(_, _, window)| window)
    }

    /// Records an alert at `value` for (rule, window) if one is due; true if so.
    pub(super) fn fire(
        &mut self,
        rule: Rule,
        window_s: u64,
        end_ms: u64,
        value: u64,
        realert_ms: u64,
    ) -> bool {
        let found = self
            .fired
            .iter_mut()
            .find(|f| (f.rule, f.window_s) == (rule, window_s));
        let last = found.as_ref().map(|f| (f.at_ms, f.value));
        if !due(last, end_ms, value, realert_ms) {
            return false;
        }
        match found {
            Some(f) => (f.at_ms, f.value) = (end_ms, value),
            None => self.fired.push(Fired {
                rule,
                window_s,
                at_ms: end_ms,
                value,
            }),
        }
        true
    }

    pub(super) fn note_address(&mut self, ip: &str, t_ms: u64) {
        if let Some(entry) = self.addresses.iter_mut().find(|(a, _)| a == ip) {
            entry.1 = entry.1.max(t_ms);
            return;
        }
        if self.addresses.len() >= MAX_ADDRESSES
            && let Some(oldest) = (0..self.addresses.len()).min_by_key(|&i| self.addresses[i].1)
        {
            self.addresses.swap_remove(oldest);
        }
        self.addresses.push((ip.to_owned(), t_ms));
    }

    /// Addresses used at or after `since_ms`, most recent first (at most [`SHOWN`]).
    pub(super) fn addresses_since(&self, since_ms: u64) -> Vec<String> {
        let mut recent: Vec<&(String, u64)> = self
            .addresses
            .iter()
            .filter(|(_, t)| *t >= since_ms)
            .collect();
        recent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        recent
            .into_iter()
            .take(SHOWN)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The biggest named items of every distinct window touched at or after `since_ms`.
    pub(super) fn top_since(&self, since_ms: u64) -> Vec<TopItem> {
        let named = self
            .distinct
            .iter()
            .flat_map(|(_, _, w)| w.named_since(since_ms));
        top_items(named, SHOWN)
    }

    /// Moves every window to `end_ms`; drops empty windows and stale dedup entries.
    fn advance(&mut self, end_ms: u64, realert_ms: u64) {
        self.sums.retain_mut(|(_, _, w)| {
            w.advance(end_ms);
            !w.is_empty()
        });
        self.distinct.retain_mut(|(_, _, w)| {
            w.advance(end_ms);
            !w.is_empty()
        });
        self.fired
            .retain(|f| end_ms.saturating_sub(f.at_ms) < realert_ms);
    }

    fn is_idle(&self) -> bool {
        self.sums.is_empty() && self.distinct.is_empty() && self.fired.is_empty()
    }
}

/// The subject table.
#[derive(Debug, Default)]
pub(super) struct Subjects {
    map: HashMap<Key, State>,
    cap: usize,
    evicted: u64,
}

impl Subjects {
    /// Applies a new configuration: windows no longer configured are dropped, the others
    /// keep their state; caps change for what is stored next.
    pub(super) fn reconfigure(&mut self, config: &DetectConfig) {
        self.cap = config.max_subjects.max(1);
        for (key, state) in &mut self.map {
            let kept = |rule: Rule, window_s: u64| {
                rules::limits(config, rule, key)
                    .iter()
                    .any(|l| l.window_s == window_s)
            };
            state.sums.retain(|(r, w, _)| kept(*r, *w));
            state.distinct.retain(|(r, w, _)| kept(*r, *w));
            for (_, _, window) in &mut state.distinct {
                window.set_cap(config.max_items);
            }
        }
    }

    /// The state of `key`, created if new (forgetting the least recently active subjects
    /// first when the table is full).
    pub(super) fn state(&mut self, key: Key, t_ms: u64) -> &mut State {
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.cap {
                self.evict();
            }
        }
        let state = self.map.entry(key).or_default();
        state.last_ms = state.last_ms.max(t_ms);
        state
    }

    /// Forgets the least recently active sixteenth of the table (at least one subject):
    /// one O(n) pass pays for n/16 insertions.
    fn evict(&mut self) {
        let n = (self.map.len() / 16).max(1);
        let mut order: Vec<(u64, Key)> = self
            .map
            .iter()
            .map(|(k, s)| (s.last_ms, k.clone()))
            .collect();
        if n < order.len() {
            order.select_nth_unstable(n - 1);
        }
        for (_, key) in order.into_iter().take(n) {
            self.map.remove(&key);
        }
        self.evicted += n as u64;
    }

    pub(super) fn expire(&mut self, end_ms: u64, realert_ms: u64) {
        self.map.retain(|_, state| {
            state.advance(end_ms, realert_ms);
            !state.is_idle()
        });
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn evicted(&self) -> u64 {
        self.evicted
    }
}
