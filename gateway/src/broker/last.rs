//! The last-value store: one frame per key, the last one kept, for
//! [`LAST_TTL`]. Pusher's cache channels keep their last event in it
//! (docs/pusher.md), so a subscriber joining on any node gets it.
//!
//! Both brokers bound it the same way: one frame per key, [`LAST_TTL`] after
//! it was kept, and [`LAST_MAX_BYTES`] over all keys, the oldest kept going
//! first. [`MemoryLast`] is the single node's; the NATS broker keeps the same
//! in a JetStream stream (`nats/last.rs`).

use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

/// How long a kept frame is served: Pusher keeps a cache channel's event
/// "for a maximum of 30 minutes or until a new event arrives".
pub const LAST_TTL: Duration = Duration::from_secs(30 * 60);

/// What all kept frames together may take, per node (in memory) or per
/// cluster (the JetStream stream's `max_bytes`); beyond it the oldest go.
pub const LAST_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What one key costs beyond its frame and name: its index entry, an estimate.
const ENTRY_OVERHEAD: u64 = 96;

/// One kept frame.
struct Kept {
    at: Instant,
    frame: String,
}

fn cost(key: &str, frame: &str) -> u64 {
    (key.len() + frame.len()) as u64 + ENTRY_OVERHEAD
}

/// The single node's last-value store, in memory.
///
/// Entries are ordered by when they were kept (reads do not reorder them), so
/// the budget and the sweep both remove the oldest first.
pub struct MemoryLast {
    ttl: Duration,
    max_bytes: u64,
    state: Mutex<LastState>,
}

struct LastState {
    entries: LruCache<String, Kept>,
    bytes: u64,
}

impl Default for MemoryLast {
    fn default() -> Self {
        Self::new(LAST_TTL, LAST_MAX_BYTES)
    }
}

impl MemoryLast {
    /// A store serving frames for `ttl`, all within `max_bytes`.
    pub fn new(ttl: Duration, max_bytes: u64) -> Self {
        Self {
            ttl,
            max_bytes,
            state: Mutex::new(LastState {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    /// Keeps `frame` under `key`, replacing the one before.
    pub fn keep(&self, key: &str, frame: String) {
        self.keep_at(key, frame, Instant::now());
    }

    fn keep_at(&self, key: &str, frame: String, now: Instant) {
        let mut state = self.state.lock();
        let added = cost(key, &frame);
        if let Some(old) = state.entries.push(key.to_owned(), Kept { at: now, frame }) {
            let (old_key, old) = old;
            state.bytes -= cost(&old_key, &old.frame);
        }
        state.bytes += added;
        while state.bytes > self.max_bytes {
            let Some((key, kept)) = state.entries.pop_lru() else {
                break;
            };
            state.bytes -= cost(&key, &kept.frame);
        }
    }

    /// The frame kept under `key`, unless older than the time to live.
    pub fn get(&self, key: &str) -> Option<String> {
        self.get_at(key, Instant::now())
    }

    fn get_at(&self, key: &str, now: Instant) -> Option<String> {
        let state = self.state.lock();
        let kept = state.entries.peek(key)?;
        (now.saturating_duration_since(kept.at) <= self.ttl).then(|| kept.frame.clone())
    }

    /// Frees the frames older than the time to live; run periodically.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        let mut state = self.state.lock();
        while let Some((_, kept)) = state.entries.peek_lru() {
            if now.saturating_duration_since(kept.at) <= self.ttl {
                break;
            }
            if let Some((key, kept)) = state.entries.pop_lru() {
                state.bytes -= cost(&key, &kept.frame);
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last frame kept wins; it is served for the time to live and not after.
    #[test]
    fn the_last_frame_is_served_until_its_time_to_live() {
        let store = MemoryLast::new(Duration::from_secs(60), u64::MAX);
        let start = Instant::now();
        assert_eq!(store.get_at("k", start), None);
        store.keep_at("k", "one".into(), start);
        store.keep_at("k", "two".into(), start);
        assert_eq!(store.get_at("k", start).as_deref(), Some("two"));
        let later = start + Duration::from_secs(60);
        assert_eq!(store.get_at("k", later).as_deref(), Some("two"));
        let expired = later + Duration::from_secs(1);
        assert_eq!(store.get_at("k", expired), None);
        assert_eq!(store.bytes(), cost("k", "two"), "one frame per key");
        store.sweep_at(expired);
        assert_eq!(store.bytes(), 0, "the sweep frees it");
    }

    /// Over the byte budget the oldest kept frames go first, a read not
    /// counting as a use; the sweep stops at the first fresh frame.
    #[test]
    fn the_budget_drops_the_oldest_kept_frames() {
        let budget = cost("a", "xxxx") * 2;
        let store = MemoryLast::new(Duration::from_secs(60), budget);
        let start = Instant::now();
        store.keep_at("a", "xxxx".into(), start);
        store.keep_at("b", "xxxx".into(), start + Duration::from_secs(30));
        assert!(store.get_at("a", start).is_some());
        store.keep_at("c", "xxxx".into(), start + Duration::from_secs(31));
        assert_eq!(store.get_at("a", start), None, "a was kept first");
        assert!(store.get_at("b", start).is_some() && store.get_at("c", start).is_some());
        assert!(store.bytes() <= budget);
        store.sweep_at(start + Duration::from_secs(91));
        assert_eq!(store.get_at("b", start), None);
        assert!(store.get_at("c", start).is_some(), "c is still fresh");
    }
}
