//! Room history and recovery, shared by both brokers: the recovery rule of
//! docs/protocol.md ("Joining"), stamping `seq`/`prev`/`epoch` onto message frames,
//! and the in-memory history of the single-node broker.
//!
//! Time to live is applied when history is *read*: the last message of a room is
//! kept (up to a much larger safety horizon) even after it expired, so the
//! room's current `seq` and the next message's `prev` stay right across expiry,
//! and a client that saw that last message still recovers exactly.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use wsgate_config::{Namespace, Namespaces};

use crate::protocol::frame;

/// How long a room's last message is kept after its time to live, so `prev`
/// and the room's position survive expiry: at least a week, and at least 100
/// times the time to live. Beyond it a returning client is told
/// `recovered: false`.
pub fn safety_horizon(ttl: Duration) -> Duration {
    if ttl.is_zero() {
        Duration::ZERO
    } else {
        ttl.saturating_mul(100)
            .max(Duration::from_secs(7 * 24 * 3600))
    }
}

/// The namespace name a room's history is kept under: the part before the
/// first `:` when that namespace is configured, else `default`.
pub fn namespace_name<'a>(namespaces: &Namespaces, room: &'a str) -> &'a str {
    match room.split_once(':') {
        Some((ns, _)) if namespaces.named.contains_key(ns) => ns,
        _ => wsgate_config::DEFAULT_NAMESPACE,
    }
}

/// One stored message as recovery sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub seq: u64,
    /// The room's previous message's seq, when known.
    pub prev: Option<u64>,
    /// Still within the namespace's time to live.
    pub fresh: bool,
    /// The `message` frame without `seq`/`prev`/`epoch`.
    pub frame: String,
}

/// The answer to a join with history: the room's position and what was missed.
#[derive(Debug, Default)]
pub struct Recovery {
    pub epoch: String,
    /// The room's current seq (0 before its first message).
    pub seq: u64,
    /// Exactly when nothing after `since` is missing (docs/protocol.md's rule).
    pub recovered: bool,
    /// Missed messages, oldest first, stamped: their seq and frame.
    pub missed: Vec<(u64, Box<RawValue>)>,
}

impl Recovery {
    /// Leaves out the oldest missed messages until the rest, written as a JSON
    /// array, take at most `max_bytes`; when any is left out, the client is
    /// told `recovered: false`, as when more than `recovery_max` were missed.
    pub fn keep_within(&mut self, max_bytes: usize) {
        let mut total: usize = self
            .missed
            .iter()
            .map(|(_, frame)| frame.get().len() + 1)
            .sum();
        let mut drop = 0;
        while total > max_bytes && drop < self.missed.len() {
            total -= self.missed[drop].1.get().len() + 1;
            drop += 1;
        }
        if drop > 0 {
            self.missed.drain(..drop);
            self.recovered = false;
        }
    }
}

/// Applies docs/protocol.md's recovery rule.
///
/// `entries` are the room's stored messages after `since`, oldest first (any
/// already expired by time to live are marked not `fresh`); `current` is the
/// room's current seq.
pub fn recover(
    epoch: &str,
    since: Option<(&str, u64)>,
    current: u64,
    entries: Vec<Entry>,
    max: usize,
) -> Recovery {
    let Some((since_epoch, since)) = since else {
        return Recovery {
            epoch: epoch.to_owned(),
            seq: current,
            recovered: false,
            missed: Vec::new(),
        };
    };
    if since_epoch != epoch || since > current {
        return Recovery {
            epoch: epoch.to_owned(),
            seq: current,
            recovered: false,
            missed: Vec::new(),
        };
    }
    let mut lost = false;
    let mut entries: VecDeque<Entry> = entries
        .into_iter()
        .filter(|entry| entry.seq > since)
        .collect();
    while entries.front().is_some_and(|entry| !entry.fresh) {
        entries.pop_front();
        lost = true;
    }
    while entries.len() > max {
        entries.pop_front();
        lost = true;
    }
    let recovered = !lost
        && match entries.front() {
            None => since == current,
            Some(first) => first.prev == Some(since),
        };
    let missed = entries
        .into_iter()
        .filter_map(|entry| {
            let stamped = frame::stamp(&entry.frame, entry.seq, entry.prev.unwrap_or(0), epoch)?;
            Some((entry.seq, stamped))
        })
        .collect();
    Recovery {
        epoch: epoch.to_owned(),
        seq: current,
        recovered,
        missed,
    }
}

/// The single-node broker's history: per room, its last `history_size`
/// messages and its last seq. Seqs count per namespace, like a JetStream
/// stream's, so gaps within a room are normal.
pub struct MemoryHistory {
    /// Random per process: a restart loses the history, so the epoch changes.
    epoch: String,
    namespaces: Namespaces,
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    next: HashMap<String, u64>,
    rooms: HashMap<String, RoomHistory>,
}

#[derive(Default)]
struct RoomHistory {
    last: u64,
    last_at: Option<SystemTime>,
    messages: VecDeque<(u64, u64, SystemTime, String)>,
}

impl MemoryHistory {
    pub fn new(namespaces: Namespaces) -> Self {
        Self {
            epoch: format!("mem-{:016x}", rand::random::<u64>()),
            namespaces,
            state: Mutex::default(),
        }
    }

    /// The namespace a room belongs to, if it keeps history.
    pub fn namespace(&self, room: &str) -> Option<&Namespace> {
        let namespace = self.namespaces.for_room(room);
        (namespace.history_size > 0).then_some(namespace)
    }

    /// Stores a message; returns the stamped frame and its seq.
    pub fn store(&self, room: &str, frame: &str) -> Option<(u64, String)> {
        let namespace = self.namespace(room)?;
        let ns = namespace_name(&self.namespaces, room).to_owned();
        let mut state = self.state.lock();
        let now = SystemTime::now();
        let next = state.next.entry(ns).or_insert(0);
        *next += 1;
        let seq = *next;
        let history = state.rooms.entry(room.to_owned()).or_default();
        let prev = history.last;
        history.last = seq;
        history.last_at = Some(now);
        history
            .messages
            .push_back((seq, prev, now, frame.to_owned()));
        while history.messages.len() as u64 > namespace.history_size {
            history.messages.pop_front();
        }
        let horizon = safety_horizon(namespace.history_ttl);
        if !horizon.is_zero() {
            // Forget rooms silent for longer than the horizon, as the stream's MaxAge would.
            state.rooms.retain(|_, room| {
                room.last_at
                    .and_then(|at| now.duration_since(at).ok())
                    .is_none_or(|age| age <= horizon)
            });
        }
        let stamped = frame::stamp(frame, seq, prev, &self.epoch)?;
        Some((seq, frame::into_text(stamped)))
    }

    /// The room's position and, with `since`, what came after it.
    pub fn recover(&self, room: &str, since: Option<(&str, u64)>) -> Option<Recovery> {
        let namespace = self.namespace(room)?;
        let state = self.state.lock();
        let now = SystemTime::now();
        let ttl = namespace.history_ttl;
        let (current, entries) = match state.rooms.get(room) {
            None => (0, Vec::new()),
            Some(history) => (
                history.last,
                history
                    .messages
                    .iter()
                    .map(|(seq, prev, at, frame)| Entry {
                        seq: *seq,
                        prev: Some(*prev),
                        fresh: ttl.is_zero()
                            || now.duration_since(*at).map_or(true, |age| age <= ttl),
                        frame: frame.clone(),
                    })
                    .collect(),
            ),
        };
        Some(recover(
            &self.epoch,
            since,
            current,
            entries,
            namespace.recovery_max,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, prev: u64, fresh: bool) -> Entry {
        Entry {
            seq,
            prev: Some(prev),
            fresh,
            frame: format!(r#"{{"type":"message","room":"r","data":{seq},"from":null}}"#),
        }
    }

    #[test]
    fn complete_history_recovers() {
        let entries = vec![entry(5, 2, true), entry(9, 5, true)];
        let recovery = recover("e", Some(("e", 2)), 9, entries, 10);
        assert!(recovery.recovered);
        assert_eq!(
            recovery.missed.iter().map(|m| m.0).collect::<Vec<_>>(),
            [5, 9]
        );
    }

    #[test]
    fn being_current_recovers_even_with_nothing_stored() {
        assert!(recover("e", Some(("e", 9)), 9, vec![entry(9, 5, false)], 10).recovered);
        assert!(recover("e", Some(("e", 0)), 0, vec![], 10).recovered);
    }

    #[test]
    fn expired_messages_after_since_are_not_recovered() {
        let entries = vec![entry(5, 2, false), entry(9, 5, true)];
        let recovery = recover("e", Some(("e", 2)), 9, entries, 10);
        assert!(!recovery.recovered);
        assert_eq!(recovery.missed.len(), 1);
    }

    #[test]
    fn evicted_messages_are_not_recovered() {
        // The message after since (seq 4) is gone: the first kept one's prev is 4.
        let recovery = recover(
            "e",
            Some(("e", 2)),
            9,
            vec![entry(5, 4, true), entry(9, 5, true)],
            10,
        );
        assert!(!recovery.recovered);
    }

    #[test]
    fn more_than_recovery_max_keeps_the_newest() {
        let entries = (1..=5).map(|seq| entry(seq, seq - 1, true)).collect();
        let recovery = recover("e", Some(("e", 0)), 5, entries, 2);
        assert!(!recovery.recovered);
        assert_eq!(
            recovery.missed.iter().map(|m| m.0).collect::<Vec<_>>(),
            [4, 5]
        );
    }

    /// Missed messages beyond a byte budget are left out, oldest first, and
    /// the outcome is then `recovered: false`; within it nothing changes.
    #[test]
    fn missed_messages_are_bounded_in_bytes_too() {
        let entries: Vec<Entry> = (1..=5).map(|seq| entry(seq, seq - 1, true)).collect();
        let whole = recover("e", Some(("e", 0)), 5, entries.clone(), 10);
        let size: usize = whole.missed.iter().map(|(_, f)| f.get().len() + 1).sum();
        let mut fits = recover("e", Some(("e", 0)), 5, entries.clone(), 10);
        fits.keep_within(size);
        assert!(fits.recovered);
        assert_eq!(fits.missed.len(), 5);
        let mut cut = recover("e", Some(("e", 0)), 5, entries, 10);
        cut.keep_within(size - 1);
        assert!(!cut.recovered);
        assert_eq!(
            cut.missed.iter().map(|m| m.0).collect::<Vec<_>>(),
            [2, 3, 4, 5]
        );
        cut.keep_within(0);
        assert!(cut.missed.is_empty());
    }

    #[test]
    fn another_epoch_recovers_nothing() {
        let recovery = recover("e2", Some(("e1", 1)), 3, vec![entry(3, 1, true)], 10);
        assert!(!recovery.recovered);
        assert!(recovery.missed.is_empty());
        assert_eq!(recovery.seq, 3);
    }

    #[test]
    fn memory_history_keeps_prev_across_eviction() {
        let file = "version = 1\n[namespaces.chat]\nhistory_size = 2\n";
        let config =
            wsgate_config::Config::from_toml(file, std::path::Path::new("t.toml")).unwrap();
        let history = MemoryHistory::new(config.namespaces.clone());
        let message = r#"{"type":"message","room":"chat:a","data":1,"from":null}"#;
        assert!(history.store("plain", message).is_none());
        let seqs: Vec<u64> = (0..4)
            .map(|_| history.store("chat:a", message).unwrap().0)
            .collect();
        let epoch = history.recover("chat:a", None).unwrap().epoch;
        let recovery = history.recover("chat:a", Some((&epoch, seqs[2]))).unwrap();
        assert!(recovery.recovered);
        assert_eq!(recovery.missed.len(), 1);
        let recovery = history.recover("chat:a", Some((&epoch, seqs[0]))).unwrap();
        assert!(!recovery.recovered, "seq {} was evicted", seqs[1]);
        let (_, frame) = history.store("chat:a", message).unwrap();
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["prev"], seqs[3]);
    }
}
