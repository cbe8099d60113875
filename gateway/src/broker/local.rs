//! The in-process broker: the single-node default when no NATS URL is set.
//! Publishing hands the frame straight to the room's local subscription.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use wsgate_config::{History, Namespaces};

use super::history::MemoryHistory;
use super::last::MemoryLast;
use super::{
    Ack, Availability, Broker, BrokerError, ClusterStats, Delivery, Fleet, Gathered, LoadReport,
    LocalNode, PresencePage, Recovery, RoomSink, Subscription,
};
use crate::metrics::Metrics;
use crate::protocol::{Since, Target};

/// Subscribed rooms by name.
type Rooms = Arc<Mutex<HashMap<String, Weak<dyn RoomSink>>>>;

/// The single-node broker.
pub struct LocalBroker {
    node: Arc<dyn LocalNode>,
    rooms: Rooms,
    history: MemoryHistory,
    /// The last frame kept per key (Pusher's cache channels).
    last: MemoryLast,
    /// Always available: the history is in this process's memory.
    availability: Availability,
    /// Stores and deliveries of history messages happen under this lock, so
    /// members see them in seq order.
    ordered: Mutex<()>,
    /// This node's load, for [`Broker::fleet`]: a fleet of one, which never
    /// rebalances.
    report: OnceLock<LoadReport>,
}

impl LocalBroker {
    /// A broker delivering to `node` only, keeping history in memory for the
    /// namespaces that have it, within the default `history.memory_max_bytes`.
    pub fn new(
        node: Arc<dyn LocalNode>,
        namespaces: Namespaces,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Self::with_memory_budget(
            node,
            namespaces,
            History::default().memory_max_bytes,
            metrics,
        )
    }

    /// As [`LocalBroker::new`], all rooms' history together within
    /// `memory_max_bytes` (`history.memory_max_bytes`).
    ///
    /// Inside a Tokio runtime, also starts the task that sweeps expired
    /// history and kept last frames every [`SWEEP_INTERVAL`]; it ends when the
    /// broker is dropped.
    pub fn with_memory_budget(
        node: Arc<dyn LocalNode>,
        namespaces: Namespaces,
        memory_max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        // A single node: the registry is this node alone.
        metrics.nodes.set(1);
        let broker = Arc::new(Self {
            node,
            rooms: Arc::default(),
            availability: Availability::new(metrics, &namespaces, true),
            history: MemoryHistory::new(namespaces, memory_max_bytes),
            last: MemoryLast::default(),
            ordered: Mutex::new(()),
            report: OnceLock::new(),
        });
        // Kept last frames always expire, whatever the history does.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&broker)));
        }
        broker
    }

    fn room(&self, name: &str) -> Option<Arc<dyn RoomSink>> {
        self.rooms.lock().get(name).and_then(Weak::upgrade)
    }
}

/// How often expired in-memory history is freed. Expiry as clients see it
/// does not wait for the sweep: recovery checks each message's age.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps `broker`'s history every [`SWEEP_INTERVAL`] until it is dropped.
async fn sweep(broker: Weak<LocalBroker>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        if broker.history.expires() {
            broker.history.sweep();
        }
        broker.last.sweep();
    }
}

/// Removes a room from the broker's index when its subscription ends.
struct Unsubscribe {
    rooms: Rooms,
    room: Weak<dyn RoomSink>,
    name: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut rooms = self.rooms.lock();
        if rooms
            .get(&self.name)
            .is_some_and(|current| current.ptr_eq(&self.room))
        {
            rooms.remove(&self.name);
        }
    }
}

impl Broker for LocalBroker {
    fn subscribe<'a>(
        &'a self,
        room: &'a str,
        members: Arc<dyn RoomSink>,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>> {
        let weak = Arc::downgrade(&members);
        self.rooms.lock().insert(room.to_owned(), weak.clone());
        let guard = Unsubscribe {
            rooms: self.rooms.clone(),
            room: weak,
            name: room.to_owned(),
        };
        async move { Ok(Subscription::new(guard)) }.boxed()
    }

    fn publish<'a>(
        &'a self,
        room: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        if let Some(members) = self.room(room) {
            members.deliver(&[Delivery {
                seq: None,
                frame: Utf8Bytes::from(frame),
            }]);
        }
        async { Ok(()) }.boxed()
    }

    fn publish_stored<'a>(&'a self, room: &'a str, frame: String) -> BoxFuture<'a, Ack<u64>> {
        let result = {
            let _ordered = self.ordered.lock();
            match self.history.store(room, &frame) {
                Some((seq, stamped)) => {
                    if let Some(members) = self.room(room) {
                        members.deliver(&[Delivery {
                            seq: Some(seq),
                            frame: Utf8Bytes::from(stamped),
                        }]);
                    }
                    Ok(seq)
                }
                None => Err(BrokerError::Internal(format!(
                    "room {room} keeps no history"
                ))),
            }
        };
        async move { Ack::ready(result) }.boxed()
    }

    fn recover<'a>(
        &'a self,
        room: &'a str,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        let since = since.map(|since| (since.epoch.as_str(), since.seq));
        let result = self
            .history
            .recover(room, since)
            .ok_or_else(|| BrokerError::Internal(format!("room {room} keeps no history")));
        async move { result }.boxed()
    }

    fn keep_last<'a>(
        &'a self,
        key: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.last.keep(key, frame);
        async { Ok(()) }.boxed()
    }

    fn last<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        let kept = self.last.get(key);
        async move { Ok(kept) }.boxed()
    }

    fn send(&self, target: Target, frame: String) -> BoxFuture<'_, Ack<Gathered>> {
        let count = self.node.send(&target, &Utf8Bytes::from(frame)) as u64;
        async move {
            Ack::ready(Ok(Gathered {
                count,
                partial: false,
            }))
        }
        .boxed()
    }

    fn disconnect(&self, target: Target) -> BoxFuture<'_, Result<Gathered, BrokerError>> {
        let count = self.node.disconnect(&target) as u64;
        async move {
            Ok(Gathered {
                count,
                partial: false,
            })
        }
        .boxed()
    }

    fn presence<'a>(
        &'a self,
        room: &'a str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<PresencePage, BrokerError>> {
        let page = self.node.presence(room, after.as_ref(), limit);
        async move { Ok(PresencePage::merge([page], limit, false)) }.boxed()
    }

    fn stats(&self) -> BoxFuture<'_, Result<ClusterStats, BrokerError>> {
        let mut stats = self.node.stats();
        stats.history = self.availability.snapshot();
        let nodes = vec![stats];
        async move {
            Ok(ClusterStats {
                nodes,
                partial: false,
            })
        }
        .boxed()
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn max_payload(&self) -> usize {
        usize::MAX
    }

    fn leave_cluster(&self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }

    fn report_load(&self, report: LoadReport) {
        let _ = self.report.set(report);
    }

    /// This node alone: the mean load is its own, so it never sheds.
    fn fleet(&self) -> Fleet {
        let own = self.report.get().and_then(|report| report());
        Fleet {
            nodes: own
                .map(|load| (self.node.stats().node, load))
                .into_iter()
                .collect(),
            partial: false,
        }
    }
}
