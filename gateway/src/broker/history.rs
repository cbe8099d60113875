//! Room history and recovery, shared by both brokers: the recovery rule of
//! docs/protocol.md ("Joining"), stamping `seq`/`prev`/`epoch` onto message frames,
//! and the in-memory history of the single-node broker.
//!
//! Time to live is applied when history is *read*: a room's position (its last
//! seq) is kept up to a much larger safety horizon even after its messages
//! expired, so the room's current `seq` and the next message's `prev` stay
//! right across expiry, and a client that saw that last message still recovers
//! exactly. Freeing expired messages is a periodic sweep's work, never a
//! publisher's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;

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

/// What one stored message costs the in-memory budgets beyond its frame: its
/// slot in the room's queue and in its namespace's index. An estimate, so that
/// a flood of tiny messages is still bounded.
const MESSAGE_OVERHEAD: u64 = 64;

/// What one room costs the memory budget beyond its name: its entry in the
/// rooms' index and its namespace's.
const ROOM_OVERHEAD: u64 = 160;

/// Most removals one sweep makes under the lock before letting publishes in.
const SWEEP_BATCH: usize = 4096;

/// The single-node broker's history: per room, its last `history_size`
/// messages and its last seq. Seqs count per namespace, like a JetStream
/// stream's, so gaps within a room are normal.
///
/// Bounded as the JetStream streams are, and more: each namespace holds at
/// most `history_max_bytes` and `history_max_msgs` (its oldest messages are
/// discarded beyond them), and all rooms together at most
/// `history.memory_max_bytes`, beyond which the least recently used rooms are
/// dropped whole. Expiry is not the publisher's work: [`MemoryHistory::sweep`],
/// run periodically, frees expired messages and forgets rooms past the safety
/// horizon, so a publish costs the same with ten rooms or a hundred thousand.
///
/// A room that a budget emptied, or that went past the horizon, is forgotten:
/// its position is 0 again and a client returning with `since` is told
/// `recovered: false`, never a false `true`.
pub struct MemoryHistory {
    /// Random per process: a restart loses the history, so the epoch changes.
    epoch: String,
    namespaces: Namespaces,
    /// `history.memory_max_bytes`.
    max_bytes: u64,
    state: Mutex<MemoryState>,
}

struct MemoryState {
    /// Every room with history, least recently used (published to or read) first.
    rooms: LruCache<Arc<str>, RoomHistory>,
    /// Per namespace name.
    spaces: HashMap<String, Space>,
    /// What every room and message costs together, as the budget counts.
    bytes: u64,
}

/// The history of one namespace, over all its rooms.
#[derive(Default)]
struct Space {
    /// The last seq given out.
    next: u64,
    /// Every stored message, by seq → its room. Seqs rise with time, so the
    /// first is both the oldest and the first to expire.
    messages: BTreeMap<u64, Arc<str>>,
    /// Every room, by its last message's seq: the first went silent first.
    silent: BTreeMap<u64, Arc<str>>,
    /// What the stored messages cost, as `history_max_bytes` counts.
    bytes: u64,
    /// The highest last seq of a room that was forgotten (emptied by a
    /// budget, or silent past the horizon): a client whose `since` is below
    /// it may have missed messages of a room now unknown.
    forgotten: u64,
}

struct RoomHistory {
    last: u64,
    last_at: SystemTime,
    messages: VecDeque<Stored>,
    /// What this room's stored messages cost.
    bytes: u64,
}

struct Stored {
    seq: u64,
    prev: u64,
    at: SystemTime,
    frame: String,
}

impl Stored {
    fn cost(&self) -> u64 {
        self.frame.len() as u64 + MESSAGE_OVERHEAD
    }
}

fn room_cost(room: &str) -> u64 {
    room.len() as u64 + ROOM_OVERHEAD
}

impl MemoryHistory {
    /// History for `namespaces`, all rooms together within `max_bytes`.
    pub fn new(namespaces: Namespaces, max_bytes: u64) -> Self {
        Self {
            epoch: format!("mem-{:016x}", rand::random::<u64>()),
            namespaces,
            max_bytes,
            state: Mutex::new(MemoryState {
                rooms: LruCache::unbounded(),
                spaces: HashMap::new(),
                bytes: 0,
            }),
        }
    }

    /// The namespace a room belongs to, if it keeps history.
    pub fn namespace(&self, room: &str) -> Option<&Namespace> {
        let namespace = self.namespaces.for_room(room);
        (namespace.history_size > 0).then_some(namespace)
    }

    /// Whether any namespace's messages expire, so [`MemoryHistory::sweep`] has work.
    pub fn expires(&self) -> bool {
        std::iter::once(&self.namespaces.default)
            .chain(self.namespaces.named.values())
            .any(|namespace| namespace.has_history() && !namespace.history_ttl.is_zero())
    }

    /// Stores a message; returns the stamped frame and its seq.
    pub fn store(&self, room: &str, frame: &str) -> Option<(u64, String)> {
        self.store_at(room, frame, SystemTime::now())
    }

    fn store_at(&self, room: &str, frame: &str, now: SystemTime) -> Option<(u64, String)> {
        let namespace = self.namespace(room)?;
        let name = namespace_name(&self.namespaces, room);
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let space = state.spaces.entry(name.to_owned()).or_default();
        space.next += 1;
        let seq = space.next;
        let key: Arc<str> = match state.rooms.get_key_value(room) {
            Some((key, _)) => key.clone(),
            None => {
                let key: Arc<str> = Arc::from(room);
                state.rooms.push(
                    key.clone(),
                    RoomHistory {
                        last: 0,
                        last_at: now,
                        messages: VecDeque::new(),
                        bytes: 0,
                    },
                );
                state.bytes += room_cost(room);
                key
            }
        };
        let Some(history) = state.rooms.get_mut(room) else {
            // Just looked up or inserted under the same lock.
            return None;
        };
        let prev = history.last;
        space.silent.remove(&prev);
        space.silent.insert(seq, key.clone());
        history.last = seq;
        history.last_at = now;
        let stored = Stored {
            seq,
            prev,
            at: now,
            frame: frame.to_owned(),
        };
        let cost = stored.cost();
        history.messages.push_back(stored);
        history.bytes += cost;
        space.messages.insert(seq, key);
        space.bytes += cost;
        state.bytes += cost;
        while history.messages.len() as u64 > namespace.history_size {
            let Some(old) = history.messages.pop_front() else {
                break;
            };
            history.bytes -= old.cost();
            space.messages.remove(&old.seq);
            space.bytes -= old.cost();
            state.bytes -= old.cost();
        }
        // The namespace's budgets: its oldest messages go first.
        while space.bytes > namespace.history_max_bytes
            || space.messages.len() as u64 > namespace.history_max_msgs
        {
            if !discard_oldest(&mut state.rooms, space, &mut state.bytes) {
                break;
            }
        }
        // The node's budget: whole rooms, least recently used first.
        while state.bytes > self.max_bytes {
            let Some((evicted, history)) = state.rooms.pop_lru() else {
                break;
            };
            let space = state
                .spaces
                .entry(namespace_name(&self.namespaces, &evicted).to_owned())
                .or_default();
            forget(space, &evicted, &history, &mut state.bytes);
        }
        drop(guard);
        let stamped = frame::stamp(frame, seq, prev, &self.epoch)?;
        Some((seq, frame::into_text(stamped)))
    }

    /// Frees the messages whose time to live has passed and forgets the rooms
    /// silent past the safety horizon, as a JetStream stream's `max_age`
    /// would. Run periodically, never on the publish path: it takes the lock
    /// for at most [`SWEEP_BATCH`] removals at a time.
    pub fn sweep(&self) {
        self.sweep_at(SystemTime::now());
    }

    fn sweep_at(&self, now: SystemTime) {
        let names: Vec<String> = self.state.lock().spaces.keys().cloned().collect();
        for name in names {
            let settings = self
                .namespaces
                .named
                .get(&name)
                .unwrap_or(&self.namespaces.default);
            let ttl = settings.history_ttl;
            if ttl.is_zero() {
                continue;
            }
            let horizon = safety_horizon(ttl);
            let older = |at: SystemTime, age: Duration| {
                now.duration_since(at).is_ok_and(|since| since > age)
            };
            loop {
                let mut guard = self.state.lock();
                let state = &mut *guard;
                let Some(space) = state.spaces.get_mut(&name) else {
                    break;
                };
                let mut removed = 0;
                while removed < SWEEP_BATCH {
                    let Some((&seq, room)) = space.messages.first_key_value() else {
                        break;
                    };
                    let Some(history) = state.rooms.peek_mut(room) else {
                        space.messages.remove(&seq);
                        continue;
                    };
                    match history.messages.front() {
                        Some(front) if front.seq == seq => {
                            if !older(front.at, ttl) {
                                break;
                            }
                            let cost = front.cost();
                            history.messages.pop_front();
                            history.bytes -= cost;
                            space.bytes -= cost;
                            state.bytes -= cost;
                        }
                        // Not the room's oldest: an index entry left behind.
                        _ => {}
                    }
                    space.messages.remove(&seq);
                    removed += 1;
                }
                while removed < SWEEP_BATCH {
                    let Some((_, room)) = space.silent.first_key_value() else {
                        break;
                    };
                    let room = room.clone();
                    match state.rooms.peek(&room) {
                        Some(history) if !older(history.last_at, horizon) => break,
                        Some(_) => {
                            if let Some(history) = state.rooms.pop(&room) {
                                forget(space, &room, &history, &mut state.bytes);
                            }
                        }
                        None => {
                            space.silent.pop_first();
                        }
                    }
                    removed += 1;
                }
                if removed < SWEEP_BATCH {
                    break;
                }
            }
        }
    }

    /// The room's position and, with `since`, what came after it.
    pub fn recover(&self, room: &str, since: Option<(&str, u64)>) -> Option<Recovery> {
        let namespace = self.namespace(room)?;
        let name = namespace_name(&self.namespaces, room);
        let mut state = self.state.lock();
        let now = SystemTime::now();
        let ttl = namespace.history_ttl;
        let (current, entries) = match state.rooms.get(room) {
            None => (0, Vec::new()),
            Some(history) => (
                history.last,
                history
                    .messages
                    .iter()
                    .map(|stored| Entry {
                        seq: stored.seq,
                        prev: Some(stored.prev),
                        fresh: ttl.is_zero()
                            || now.duration_since(stored.at).map_or(true, |age| age <= ttl),
                        frame: stored.frame.clone(),
                    })
                    .collect(),
            ),
        };
        let forgotten = state.spaces.get(name).map_or(0, |space| space.forgotten);
        drop(state);
        let mut recovery = recover(&self.epoch, since, current, entries, namespace.recovery_max);
        // An unknown room may be one that was forgotten after `since`.
        if current == 0 && since.is_some_and(|(_, seq)| seq < forgotten) {
            recovery.recovered = false;
        }
        Some(recovery)
    }

    /// What the stored history costs, as `history.memory_max_bytes` counts.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.state.lock().bytes
    }
}

/// Discards the namespace's oldest message; a room it empties is forgotten.
/// Returns `false` when the namespace holds nothing.
fn discard_oldest(
    rooms: &mut LruCache<Arc<str>, RoomHistory>,
    space: &mut Space,
    bytes: &mut u64,
) -> bool {
    let Some((seq, room)) = space.messages.pop_first() else {
        return false;
    };
    let Some(history) = rooms.peek_mut(&room) else {
        return true;
    };
    if history
        .messages
        .front()
        .is_some_and(|front| front.seq == seq)
        && let Some(old) = history.messages.pop_front()
    {
        history.bytes -= old.cost();
        space.bytes -= old.cost();
        *bytes -= old.cost();
    }
    if history.messages.is_empty()
        && let Some(history) = rooms.pop(&room)
    {
        forget(space, &room, &history, bytes);
    }
    true
}

/// Takes a room removed from the rooms' index out of its namespace's indexes
/// and the budgets, and remembers that it was forgotten.
fn forget(space: &mut Space, room: &str, history: &RoomHistory, bytes: &mut u64) {
    for stored in &history.messages {
        space.messages.remove(&stored.seq);
    }
    space.bytes -= history.bytes;
    space.silent.remove(&history.last);
    space.forgotten = space.forgotten.max(history.last);
    *bytes -= history.bytes + room_cost(room);
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
        let history = MemoryHistory::new(config.namespaces.clone(), u64::MAX);
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
    /// In-memory history for the namespaces of `file` (a config file body),
    /// all rooms within `max_bytes`.
    fn memory(file: &str, max_bytes: u64) -> MemoryHistory {
        let file = format!("version = 1\n{file}");
        let config = wsgate_config::Config::from_toml(&file, std::path::Path::new("t.toml"))
            .expect("test config is valid");
        MemoryHistory::new(config.namespaces.clone(), max_bytes)
    }

    fn message(room: &str) -> String {
        format!(r#"{{"type":"message","room":"{room}","data":1,"from":null}}"#)
    }

    /// Stores one message in `room` at `at`, returning its seq.
    fn store(history: &MemoryHistory, room: &str, at: SystemTime) -> u64 {
        history
            .store_at(room, &message(room), at)
            .expect("the room keeps history")
            .0
    }

    /// Joins `room` with `since` as a client of this process would.
    fn rejoin(history: &MemoryHistory, room: &str, since: u64) -> Recovery {
        let epoch = history.epoch.clone();
        history
            .recover(room, Some((&epoch, since)))
            .expect("the room keeps history")
    }

    /// The namespace's message budget discards its oldest messages, over all
    /// its rooms; a room left with a gap is not recovered across it.
    #[test]
    fn the_message_budget_discards_the_namespaces_oldest_messages() {
        let history = memory(
            "[namespaces.chat]\nhistory_size = 10\nhistory_max_msgs = 3\n",
            u64::MAX,
        );
        let now = SystemTime::now();
        let a1 = store(&history, "chat:a", now);
        let _b1 = store(&history, "chat:b", now);
        let a2 = store(&history, "chat:a", now);
        let _b2 = store(&history, "chat:b", now);
        // a1 went to keep three: a rejoin from 0 misses it.
        let recovery = rejoin(&history, "chat:a", 0);
        assert!(!recovery.recovered, "{recovery:?}");
        assert_eq!(
            recovery.missed.iter().map(|m| m.0).collect::<Vec<_>>(),
            [a2]
        );
        assert_eq!(recovery.seq, a2);
        let recovery = rejoin(&history, "chat:a", a1);
        assert!(recovery.recovered, "nothing after a1 is missing");
        // Other namespaces are not touched by chat's budget.
        let plain = memory("[namespaces.default]\nhistory_size = 10\n", u64::MAX);
        for _ in 0..5 {
            store(&plain, "r", now);
        }
        assert_eq!(plain.recover("r", None).map(|r| r.seq), Some(5));
    }

    /// The namespace's byte budget discards its oldest messages too.
    #[test]
    fn the_byte_budget_discards_the_namespaces_oldest_messages() {
        let cost = message("chat:a").len() as u64 + MESSAGE_OVERHEAD;
        let history = memory(
            &format!(
                "[namespaces.chat]\nhistory_size = 10\nhistory_max_bytes = {}\n",
                cost * 2
            ),
            u64::MAX,
        );
        let now = SystemTime::now();
        let seqs: Vec<u64> = (0..4).map(|_| store(&history, "chat:a", now)).collect();
        let recovery = rejoin(&history, "chat:a", seqs[0]);
        assert!(!recovery.recovered, "seq {} was discarded", seqs[1]);
        assert_eq!(
            recovery.missed.iter().map(|m| m.0).collect::<Vec<_>>(),
            seqs[2..]
        );
        assert!(rejoin(&history, "chat:a", seqs[1]).recovered);
    }

    /// A room whose last message a budget discarded is forgotten, as past the
    /// safety horizon: position 0, and a client returning with any `since`,
    /// 0 included, is told `recovered: false`.
    #[test]
    fn a_room_emptied_by_a_budget_is_at_position_zero_and_not_recovered() {
        let history = memory(
            "[namespaces.chat]\nhistory_size = 10\nhistory_max_msgs = 2\n",
            u64::MAX,
        );
        let now = SystemTime::now();
        let a1 = store(&history, "chat:a", now);
        store(&history, "chat:b", now);
        store(&history, "chat:b", now);
        let recovery = rejoin(&history, "chat:a", a1);
        assert_eq!(recovery.seq, 0);
        assert!(!recovery.recovered, "{recovery:?}");
        let recovery = rejoin(&history, "chat:a", 0);
        assert_eq!(recovery.seq, 0);
        assert!(!recovery.recovered, "a1 came after seq 0: {recovery:?}");
        // The room starts over: its next message's prev is 0.
        let (_, frame) = history
            .store_at("chat:a", &message("chat:a"), now)
            .expect("keeps history");
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap_or_default();
        assert_eq!(value["prev"], 0);
        // A room never seen, in a namespace that never forgot one, recovers from 0.
        let fresh = memory("[namespaces.chat]\nhistory_size = 10\n", u64::MAX);
        store(&fresh, "chat:b", now);
        assert!(rejoin(&fresh, "chat:a", 0).recovered);
    }

    /// Beyond `history.memory_max_bytes` the least recently used rooms, a read
    /// counting as a use, are dropped whole, and the store stays within it.
    #[test]
    fn the_memory_budget_drops_least_recently_used_rooms_whole() {
        let room_bytes = room_cost("r:a") + 2 * (message("r:a").len() as u64 + MESSAGE_OVERHEAD);
        let budget = room_bytes * 3;
        let history = memory("[namespaces.r]\nhistory_size = 10\n", budget);
        let now = SystemTime::now();
        for room in ["r:a", "r:b", "r:c"] {
            store(&history, room, now);
            store(&history, room, now);
        }
        assert_eq!(history.bytes(), budget);
        // Reading a makes b the least recently used.
        assert!(history.recover("r:a", None).is_some_and(|r| r.seq > 0));
        store(&history, "r:d", now);
        assert!(history.bytes() <= budget);
        assert_eq!(history.recover("r:b", None).map(|r| r.seq), Some(0));
        for room in ["r:a", "r:c", "r:d"] {
            assert!(
                history.recover(room, None).is_some_and(|r| r.seq > 0),
                "{room}"
            );
        }
        let recovery = rejoin(&history, "r:b", 0);
        assert!(!recovery.recovered, "b was dropped: {recovery:?}");
    }

    /// Publishing leaves expiry alone; the sweep frees expired messages but
    /// keeps the room's position, and forgets the room past the horizon.
    #[test]
    fn the_sweep_frees_expired_history_and_forgets_rooms_past_the_horizon() {
        let history = memory(
            "[namespaces.chat]\nhistory_size = 10\nhistory_ttl_seconds = 60\n",
            u64::MAX,
        );
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let first = store(&history, "chat:old", start);
        let last = store(&history, "chat:old", start);
        let full = history.bytes();
        // A publish long after neither scans nor frees the other room.
        let later = start + Duration::from_secs(61);
        store(&history, "chat:new", later);
        assert!(history.bytes() > full);
        let before_sweep = history.bytes();
        history.sweep_at(later);
        let cost = message("chat:old").len() as u64 + MESSAGE_OVERHEAD;
        assert_eq!(history.bytes(), before_sweep - 2 * cost);
        let recovery = rejoin(&history, "chat:old", first);
        assert_eq!(recovery.seq, last, "the position survives expiry");
        assert!(!recovery.recovered);
        assert!(rejoin(&history, "chat:old", last).recovered);
        // Past the horizon, a publish elsewhere still does not scan the rooms:
        // the sweep forgets the silent one.
        let past = start + safety_horizon(Duration::from_secs(60)) + Duration::from_secs(1);
        store(&history, "chat:other", past);
        assert_eq!(history.recover("chat:old", None).map(|r| r.seq), Some(last));
        history.sweep_at(past);
        let recovery = rejoin(&history, "chat:old", last);
        assert_eq!(recovery.seq, 0);
        assert!(!recovery.recovered);
        assert!(!rejoin(&history, "chat:old", 0).recovered);
        let other = room_cost("chat:other") + message("chat:other").len() as u64 + MESSAGE_OVERHEAD;
        assert_eq!(
            history.bytes(),
            room_cost("chat:new") + other,
            "chat:new keeps only its position"
        );
    }
}
