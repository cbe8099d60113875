//! The hub: this node's rooms and their local members, its connections, and its
//! users.
//!
//! A room exists here while it has local members, and exactly then this node
//! holds a broker subscription for it: the first member's `join` subscribes (and
//! is answered only once the subscription is active), the last member's `leave`
//! unsubscribes. Those transitions are serialized per room by an async lock, so
//! a join racing a leave never ends with members but no subscription.
//!
//! Messages from the broker are queued to every member's [`Outbox`] without
//! blocking: a member whose queue is full is closed with 1013 and the others
//! carry on.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use parking_lot::{Mutex, RwLock};

use crate::broker::{
    Broker, BrokerError, Delivery, LocalNode, NodeStats, Present, Recovery, RoomSink, Subscription,
};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::Since;
use crate::protocol::{Target, close};

/// A local member of a room.
struct Member {
    outbox: Arc<Outbox>,
    /// The user id the member is listed under in the room's roster.
    user: Arc<str>,
    /// While a join with history is being answered, the room's messages for this
    /// member are held (in `Room::held`) and sent after the reply, deduplicated.
    holding: bool,
}

/// One room with local members.
pub struct Room {
    name: Arc<str>,
    members: RwLock<HashMap<u64, Member>>,
    /// Members in (user, conn) order, for presence pages in logarithmic time.
    roster: Mutex<BTreeSet<(Arc<str>, Arc<str>)>>,
    held: Mutex<HashMap<u64, Vec<Delivery>>>,
    /// The broker subscription; the async lock serializes subscribe and
    /// unsubscribe against joins and leaves.
    subscription: tokio::sync::Mutex<Option<Subscription>>,
    /// Set when the room has been removed from the hub; a join holding a stale
    /// handle retries with a fresh room.
    closed: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Room {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds (or re-adds) a member; returns whether it is new.
    fn add(&self, members: &mut HashMap<u64, Member>, outbox: &Arc<Outbox>, holding: bool) -> bool {
        let user = outbox.user();
        let entry = (user.clone(), outbox.id.clone());
        let previous = members.insert(
            outbox.key,
            Member {
                outbox: outbox.clone(),
                user,
                holding,
            },
        );
        let mut roster = self.roster.lock();
        if let Some(previous) = &previous {
            roster.remove(&(previous.user.clone(), previous.outbox.id.clone()));
        }
        roster.insert(entry);
        if previous.is_none() {
            self.metrics.joins.inc();
        }
        previous.is_none()
    }

    /// Removes a member; returns whether it was one.
    fn remove(&self, members: &mut HashMap<u64, Member>, key: u64) -> bool {
        self.held.lock().remove(&key);
        match members.remove(&key) {
            Some(member) => {
                self.roster
                    .lock()
                    .remove(&(member.user, member.outbox.id.clone()));
                self.metrics.leaves.inc();
                true
            }
            None => false,
        }
    }

    /// How many local members the room has.
    pub fn len(&self) -> usize {
        self.members.read().len()
    }

    /// Whether the room has no local member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RoomSink for Room {
    /// Queues messages from the broker, in order, to every local member: one
    /// lock and at most one writer wake-up per member for the whole batch, so
    /// messages that arrived together leave in one write.
    fn deliver(&self, messages: &[Delivery]) {
        let _timer = self.metrics.time_fanout();
        let mut delivered = 0;
        for (key, member) in self.members.read().iter() {
            if member.holding {
                self.held
                    .lock()
                    .entry(*key)
                    .or_default()
                    .extend_from_slice(messages);
            } else {
                delivered += member
                    .outbox
                    .push_all(messages.iter().map(|message| message.frame.clone()));
            }
        }
        self.metrics.messages_delivered.inc_by(delivered as u64);
    }
}

/// The connections of one user on this node.
#[derive(Default)]
struct UserEntry {
    /// Slots held: reserved at the handshake, released when the connection ends.
    slots: usize,
    outboxes: Vec<Arc<Outbox>>,
}

/// A connection in the hub's index, with what the rebalancer chooses by.
struct Attached {
    outbox: Arc<Outbox>,
    /// When it was attached: only connections older than
    /// `rebalance.min_age_ms` are shed, so a client just moved stays.
    since: Instant,
    /// Whether its client recovers what it misses while it reconnects (rejoins
    /// with `since`). The WebSocket protocol's clients do; a transport
    /// without recovery (the planned Pusher one) attaches with
    /// [`Hub::attach_unrecoverable`].
    recoverable: bool,
}

/// This node's rooms, connections and users.
pub struct Hub {
    node: String,
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    conns: RwLock<HashMap<Arc<str>, Attached>>,
    users: Mutex<HashMap<String, UserEntry>>,
    next_key: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// Creates an empty hub for `node`.
    pub fn new(node: String, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            node,
            rooms: Mutex::default(),
            conns: RwLock::default(),
            users: Mutex::default(),
            next_key: AtomicU64::new(1),
            metrics,
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A fresh local key for a connection.
    pub fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Reserves one of `user`'s connection slots, or `None` when the user already
    /// holds `max`. The slot is released when the guard drops.
    pub fn reserve_user(self: &Arc<Self>, user: &str, max: usize) -> Option<UserSlot> {
        let mut users = self.users.lock();
        let entry = users.entry(user.to_owned()).or_default();
        if entry.slots >= max {
            if entry.slots == 0 && entry.outboxes.is_empty() {
                users.remove(user);
            }
            return None;
        }
        entry.slots += 1;
        Some(UserSlot {
            hub: Arc::downgrade(self),
            user: user.to_owned(),
            outbox: None,
        })
    }

    /// Indexes a new connection by its id: it becomes reachable by
    /// connection-addressed `send` and `disconnect`, and by the drain.
    pub fn attach(&self, outbox: &Arc<Outbox>) {
        self.attach_as(outbox, true);
    }

    /// As [`Hub::attach`], for a connection whose client cannot recover what
    /// it misses while it reconnects: the rebalancer sheds it only with
    /// `rebalance.include_unrecoverable`.
    pub fn attach_unrecoverable(&self, outbox: &Arc<Outbox>) {
        self.attach_as(outbox, false);
    }

    fn attach_as(&self, outbox: &Arc<Outbox>, recoverable: bool) {
        let attached = Attached {
            outbox: outbox.clone(),
            since: Instant::now(),
            recoverable,
        };
        self.conns.write().insert(outbox.id.clone(), attached);
    }

    /// Asks every attached connection whose key falls in `slice` of `slices` (key modulo
    /// `slices`) for its heartbeat (see [`Outbox::beat`]).
    pub fn beat(&self, slice: u64, slices: u64) {
        for attached in self.conns.read().values() {
            if attached.outbox.key % slices.max(1) == slice {
                attached.outbox.beat();
            }
        }
    }

    /// How many connections are attached.
    pub fn connection_count(&self) -> usize {
        self.conns.read().len()
    }

    /// The connections the rebalancer may shed: attached longer than
    /// `min_age` ago, not already closing, and recoverable unless
    /// `include_unrecoverable`.
    pub fn sheddable(&self, min_age: Duration, include_unrecoverable: bool) -> Vec<Arc<Outbox>> {
        let now = Instant::now();
        self.conns
            .read()
            .values()
            .filter(|attached| {
                now.duration_since(attached.since) >= min_age
                    && (attached.recoverable || include_unrecoverable)
                    && attached.outbox.closing().is_none()
            })
            .map(|attached| attached.outbox.clone())
            .collect()
    }

    /// Registers a connection under its user's slot; it becomes reachable by
    /// user-addressed `send` and `disconnect`.
    pub fn register(&self, slot: &mut UserSlot, outbox: &Arc<Outbox>) {
        let mut users = self.users.lock();
        users
            .entry(slot.user.clone())
            .or_default()
            .outboxes
            .push(outbox.clone());
        slot.outbox = Some(outbox.key);
    }

    /// Removes a connection from the connection index (its user slot is released
    /// by dropping the slot; its rooms by [`Hub::leave`]).
    pub fn detach(&self, outbox: &Outbox) {
        self.conns.write().remove(&outbox.id);
    }

    /// Adds `outbox` to `room`, subscribing at the broker first when it is the
    /// room's first local member, and queues `reply` to it while no message of the
    /// room can be queued in between: the join reply always precedes the room's
    /// messages. Returns whether the connection was not a member before.
    ///
    /// # Errors
    /// The broker's, when it could not subscribe.
    pub async fn join(
        &self,
        broker: &dyn Broker,
        name: &str,
        outbox: &Arc<Outbox>,
        reply: Utf8Bytes,
    ) -> Result<bool, BrokerError> {
        let (_, inserted) = self
            .subscribed(broker, name, |room| {
                let mut members = room.members.write();
                let inserted = room.add(&mut members, outbox, false);
                outbox.push(reply);
                inserted
            })
            .await?;
        Ok(inserted)
    }

    /// The room named `name` with its broker subscription active (subscribing
    /// when it has none), and what `add` returns: `add` runs while the room's
    /// subscription lock is held, so no leave can unsubscribe in between.
    async fn subscribed<T>(
        &self,
        broker: &dyn Broker,
        name: &str,
        add: impl FnOnce(&Arc<Room>) -> T,
    ) -> Result<(Arc<Room>, T), BrokerError> {
        loop {
            let room = self.room(name);
            let mut subscription = room.subscription.lock().await;
            if room.closed.load(Ordering::Acquire) {
                continue;
            }
            if subscription.is_none() {
                match broker.subscribe(&room.name, room.clone()).await {
                    Ok(active) => {
                        *subscription = Some(active);
                        self.metrics.rooms.inc();
                    }
                    Err(error) => {
                        if room.is_empty() {
                            self.close_room(&room);
                        }
                        return Err(error);
                    }
                }
            }
            let added = add(&room);
            drop(subscription);
            return Ok((room, added));
        }
    }

    /// Joins a room with history: subscribes like [`Hub::join`], holds the
    /// room's live messages for this member while `recover` reads the room's
    /// position and missed messages, then queues the reply `reply` builds,
    /// followed by the held messages not already in it, in order.
    ///
    /// # Errors
    /// The broker's, when it could not subscribe or read history; the
    /// connection is then not a member (unless it was one before).
    pub async fn join_recovering<F>(
        &self,
        broker: &dyn Broker,
        name: &str,
        outbox: &Arc<Outbox>,
        since: Option<&Since>,
        reply: F,
    ) -> Result<Recovery, BrokerError>
    where
        F: FnOnce(&mut Recovery) -> String,
    {
        let (room, _) = self
            .subscribed(broker, name, |room| {
                room.add(&mut room.members.write(), outbox, true)
            })
            .await?;
        let result = broker.recover(name, since).await;
        let mut members = room.members.write();
        let held = room.held.lock().remove(&outbox.key).unwrap_or_default();
        match result {
            Ok(mut recovery) => {
                outbox.push(Utf8Bytes::from(reply(&mut recovery)));
                let last = recovery
                    .missed
                    .last()
                    .map_or(0, |(seq, _)| *seq)
                    .max(recovery.seq);
                for message in held {
                    if message.seq.is_none_or(|seq| seq > last) && outbox.push(message.frame) {
                        self.metrics.messages_delivered.inc();
                    }
                }
                if let Some(member) = members.get_mut(&outbox.key) {
                    member.holding = false;
                }
                Ok(recovery)
            }
            Err(error) => {
                drop(members);
                self.leave(name, outbox.key).await;
                Err(error)
            }
        }
    }

    /// Removes `key` from `room`, unsubscribing when it was the last local member.
    /// Returns whether it was a member.
    pub async fn leave(&self, name: &str, key: u64) -> bool {
        let Some(room) = self.rooms.lock().get(name).cloned() else {
            return false;
        };
        let mut subscription = room.subscription.lock().await;
        let removed = {
            let mut members = room.members.write();
            let removed = room.remove(&mut members, key);
            if members.is_empty() && !room.closed.load(Ordering::Acquire) {
                self.close_room(&room);
                if subscription.take().is_some() {
                    self.metrics.rooms.dec();
                }
            }
            removed
        };
        drop(subscription);
        removed
    }

    /// The room named `name`, created when missing.
    fn room(&self, name: &str) -> Arc<Room> {
        let mut rooms = self.rooms.lock();
        if let Some(room) = rooms.get(name) {
            return room.clone();
        }
        let name: Arc<str> = Arc::from(name);
        let room = Arc::new(Room {
            name: name.clone(),
            members: RwLock::default(),
            roster: Mutex::default(),
            held: Mutex::default(),
            subscription: tokio::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
            metrics: self.metrics.clone(),
        });
        rooms.insert(name, room.clone());
        room
    }

    /// Marks `room` closed and removes it from the index if it is still there.
    fn close_room(&self, room: &Arc<Room>) {
        room.closed.store(true, Ordering::Release);
        let mut rooms = self.rooms.lock();
        if rooms
            .get(room.name())
            .is_some_and(|current| Arc::ptr_eq(current, room))
        {
            rooms.remove(room.name());
        }
    }

    /// Lists a connection under its (new) user id in the rooms it is in, after
    /// an anonymous connection authenticated.
    pub fn rename(&self, rooms: impl IntoIterator<Item = impl AsRef<str>>, outbox: &Arc<Outbox>) {
        for name in rooms {
            let Some(room) = self.rooms.lock().get(name.as_ref()).cloned() else {
                continue;
            };
            let mut members = room.members.write();
            if let Some(member) = members.get(&outbox.key) {
                let holding = member.holding;
                room.add(&mut members, outbox, holding);
            }
        }
    }

    fn outboxes(&self, target: &Target) -> Vec<Arc<Outbox>> {
        match target {
            Target::Conn(id) => self
                .conns
                .read()
                .get(id.as_str())
                .map(|attached| attached.outbox.clone())
                .into_iter()
                .collect(),
            Target::User(user) => self
                .users
                .lock()
                .get(user)
                .map(|entry| entry.outboxes.clone())
                .unwrap_or_default(),
        }
    }

    /// Every local connection, for the drain.
    pub fn all(&self) -> Vec<Arc<Outbox>> {
        self.conns
            .read()
            .values()
            .map(|attached| attached.outbox.clone())
            .collect()
    }

    fn release(&self, user: &str, key: Option<u64>) {
        let mut users = self.users.lock();
        if let Some(entry) = users.get_mut(user) {
            entry.slots = entry.slots.saturating_sub(1);
            if let Some(key) = key {
                entry.outboxes.retain(|outbox| outbox.key != key);
            }
            if entry.slots == 0 && entry.outboxes.is_empty() {
                users.remove(user);
            }
        }
    }
}

impl LocalNode for Hub {
    fn send(&self, target: &Target, frame: &Utf8Bytes) -> usize {
        let delivered = self
            .outboxes(target)
            .iter()
            .filter(|outbox| outbox.push(frame.clone()))
            .count();
        self.metrics.messages_delivered.inc_by(delivered as u64);
        delivered
    }

    fn disconnect(&self, target: &Target) -> usize {
        let outboxes = self.outboxes(target);
        for outbox in &outboxes {
            outbox.close(close::DISCONNECTED, "disconnected by the backend");
        }
        outboxes.len()
    }

    fn presence(
        &self,
        room: &str,
        after: Option<&(String, String)>,
        limit: usize,
    ) -> (Vec<Present>, bool) {
        let Some(room) = self.rooms.lock().get(room).cloned() else {
            return (Vec::new(), false);
        };
        let roster = room.roster.lock();
        let page: Vec<&(Arc<str>, Arc<str>)> = match after {
            Some((user, conn)) => {
                let after = (Arc::from(user.as_str()), Arc::from(conn.as_str()));
                roster
                    .range((Bound::Excluded(after), Bound::Unbounded))
                    .take(limit + 1)
                    .collect()
            }
            None => roster.iter().take(limit + 1).collect(),
        };
        let more = page.len() > limit;
        let members = page
            .into_iter()
            .take(limit)
            .map(|(user, conn)| Present {
                user: user.to_string(),
                conn: conn.to_string(),
                node: self.node.clone(),
            })
            .collect();
        (members, more)
    }

    fn stats(&self) -> NodeStats {
        NodeStats {
            node: self.node.clone(),
            connections: self.conns.read().len() as u64,
            rooms: self.rooms.lock().len() as u64,
            history: Default::default(),
            upgrades_refused_capacity: self.metrics.capacity_refusals(),
        }
    }
}

/// One of a user's connection slots on this node, released on drop.
pub struct UserSlot {
    hub: Weak<Hub>,
    user: String,
    outbox: Option<u64>,
}

impl UserSlot {
    /// The user holding the slot.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.release(&self.user, self.outbox);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::LocalBroker;

    fn texts(outbox: &Outbox) -> Vec<String> {
        outbox
            .take()
            .into_iter()
            .map(|frame| frame.as_str().to_owned())
            .collect()
    }

    fn outbox(hub: &Hub, capacity: usize) -> Arc<Outbox> {
        let key = hub.next_key();
        Outbox::new(
            key,
            format!("n:{key}").into(),
            capacity,
            hub.metrics.clone(),
        )
    }

    /// A join's reply is queued before any message of the room, and the last
    /// leave drops the room and its subscription.
    #[tokio::test]
    async fn join_reply_precedes_messages_and_last_leave_drops_room() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new("n".into(), metrics);
        let broker = LocalBroker::new(hub.clone(), Default::default(), hub.metrics.clone());
        let a = outbox(&hub, 8);
        assert!(hub.join(&*broker, "r", &a, "reply".into()).await.unwrap());
        broker.publish("r", "m1".into()).await.unwrap();
        assert_eq!(texts(&a), ["reply", "m1"]);
        assert!(!hub.join(&*broker, "r", &a, "again".into()).await.unwrap());
        assert!(hub.leave("r", a.key).await);
        assert!(!hub.leave("r", a.key).await);
        assert_eq!(hub.stats().rooms, 0);
        broker.publish("r", "m2".into()).await.unwrap();
        assert_eq!(texts(&a), ["again"]);
    }

    /// A full queue closes that connection with 1013 and does not stop delivery
    /// to the others.
    #[tokio::test]
    async fn slow_consumer_is_closed_and_others_keep_receiving() {
        let hub = Hub::new("n".into(), Arc::new(Metrics::new()));
        let broker = LocalBroker::new(hub.clone(), Default::default(), hub.metrics.clone());
        let slow = outbox(&hub, 1);
        let fast = outbox(&hub, 64);
        hub.join(&*broker, "r", &slow, "ok".into()).await.unwrap();
        hub.join(&*broker, "r", &fast, "ok".into()).await.unwrap();
        for i in 0..10 {
            broker.publish("r", format!("m{i}")).await.unwrap();
        }
        assert_eq!(
            slow.closing(),
            Some((close::TRY_AGAIN_LATER, "slow consumer"))
        );
        let expected: Vec<String> = std::iter::once("ok".to_owned())
            .chain((0..10).map(|i| format!("m{i}")))
            .collect();
        assert_eq!(texts(&fast), expected);
    }

    /// Only connections older than the minimum age, recoverable (unless
    /// included) and not closing may be shed.
    #[tokio::test]
    async fn only_old_recoverable_open_connections_are_sheddable() {
        let hub = Hub::new("n".into(), Arc::new(Metrics::new()));
        let old = outbox(&hub, 8);
        let closing = outbox(&hub, 8);
        let unrecoverable = outbox(&hub, 8);
        hub.attach(&old);
        hub.attach(&closing);
        hub.attach_unrecoverable(&unrecoverable);
        closing.close(close::RESTART, "service restart");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let young = outbox(&hub, 8);
        hub.attach(&young);
        let keys = |outboxes: Vec<Arc<Outbox>>| {
            let mut keys: Vec<u64> = outboxes.iter().map(|outbox| outbox.key).collect();
            keys.sort_unstable();
            keys
        };
        assert_eq!(hub.connection_count(), 4);
        assert_eq!(
            keys(hub.sheddable(Duration::from_millis(20), false)),
            [old.key]
        );
        assert_eq!(
            keys(hub.sheddable(Duration::from_millis(20), true)),
            [old.key, unrecoverable.key]
        );
        assert_eq!(
            keys(hub.sheddable(Duration::ZERO, false)),
            [old.key, young.key]
        );
    }

    /// Per-user slots are capped and released on drop.
    #[test]
    fn user_slots_are_capped_and_released() {
        let hub = Hub::new("n".into(), Arc::new(Metrics::new()));
        let first = hub.reserve_user("alice", 2).unwrap();
        let _second = hub.reserve_user("alice", 2).unwrap();
        assert!(hub.reserve_user("alice", 2).is_none());
        drop(first);
        assert!(hub.reserve_user("alice", 2).is_some());
    }
}

/// Cost of presence at 100,000 local members (docs/history.md). Not a timed
/// test: it prints what it measured. Run with
/// `cargo test -p wsgate --release --lib presence_cost -- --ignored --nocapture`.
#[cfg(test)]
mod cost {
    use super::*;
    use crate::broker::LocalBroker;

    #[tokio::test]
    #[ignore = "measurement, run by hand"]
    async fn presence_cost_at_100_000_members() {
        let hub = Hub::new("n".into(), Arc::new(Metrics::new()));
        let broker = LocalBroker::new(hub.clone(), Default::default(), hub.metrics.clone());
        let members: usize = 100_000;
        let start = std::time::Instant::now();
        let mut outboxes = Vec::with_capacity(members);
        for i in 0..members {
            let key = hub.next_key();
            let outbox = Outbox::new(key, format!("n:{key}").into(), 4, hub.metrics.clone());
            outbox.set_user(&format!("user-{i:06}"));
            hub.join(&*broker, "big", &outbox, "ok".into())
                .await
                .unwrap();
            outbox.take();
            outboxes.push(outbox);
        }
        let joins = start.elapsed();
        let start = std::time::Instant::now();
        let mut after = None;
        let mut pages = 0;
        loop {
            let (page, more) = hub.presence("big", after.as_ref(), 1000);
            pages += 1;
            if !more {
                break;
            }
            let last = page.last().unwrap();
            after = Some((last.user.clone(), last.conn.clone()));
        }
        let all_pages = start.elapsed();
        println!(
            "{members} members: join {:.2} µs each; one 1000-member page {:.2} ms; all {pages} pages {:.0} ms",
            joins.as_secs_f64() * 1e6 / members as f64,
            all_pages.as_secs_f64() * 1e3 / pages as f64,
            all_pages.as_secs_f64() * 1e3
        );
    }
}
