//! The in-process broker: the single-node default when no NATS URL is set.
//! Publishing hands the frame straight to the room's local subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use axum::extract::ws::Utf8Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;

use wsgate_config::Namespaces;

use super::history::MemoryHistory;
use super::{
    Broker, BrokerError, ClusterStats, Gathered, Pending, PresencePage, Recovery, Subscription,
};
use crate::hub::{Hub, Room, lock};
use crate::protocol::{Since, Target};

/// The single-node broker.
pub struct LocalBroker {
    hub: Arc<Hub>,
    rooms: Arc<Mutex<HashMap<String, Weak<Room>>>>,
    history: MemoryHistory,
    /// Stores and deliveries of history messages happen under this lock, so
    /// members see them in seq order.
    ordered: Mutex<()>,
}

impl LocalBroker {
    /// A broker delivering to `hub` only, keeping history in memory for the
    /// namespaces that have it.
    pub fn new(hub: Arc<Hub>, namespaces: Namespaces) -> Arc<Self> {
        Arc::new(Self {
            hub,
            rooms: Arc::default(),
            history: MemoryHistory::new(namespaces),
            ordered: Mutex::new(()),
        })
    }

    fn room(&self, name: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(name).and_then(Weak::upgrade)
    }
}

/// Removes a room from the broker's index when its subscription ends.
struct Unsubscribe {
    rooms: Arc<Mutex<HashMap<String, Weak<Room>>>>,
    room: Weak<Room>,
    name: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut rooms = lock(&self.rooms);
        if rooms
            .get(&self.name)
            .is_some_and(|current| current.ptr_eq(&self.room))
        {
            rooms.remove(&self.name);
        }
    }
}

impl Broker for LocalBroker {
    fn subscribe(&self, room: Arc<Room>) -> BoxFuture<'_, Result<Subscription, BrokerError>> {
        let name = room.name().to_owned();
        let weak = Arc::downgrade(&room);
        lock(&self.rooms).insert(name.clone(), weak.clone());
        let guard = Unsubscribe {
            rooms: self.rooms.clone(),
            room: weak,
            name,
        };
        async move { Ok(Subscription::new(guard)) }.boxed()
    }

    fn publish<'a>(
        &'a self,
        room: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        if let Some(target) = self.room(room) {
            target.deliver(&Utf8Bytes::from(frame), None);
        }
        async { Ok(()) }.boxed()
    }

    fn start_publish_stored<'a>(
        &'a self,
        room: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<Pending<u64>, BrokerError>> {
        let result = {
            let _ordered = lock(&self.ordered);
            match self.history.store(room, &frame) {
                Some((seq, stamped)) => {
                    if let Some(target) = self.room(room) {
                        target.deliver(&Utf8Bytes::from(stamped), Some(seq));
                    }
                    Ok(seq)
                }
                None => Err(BrokerError::Internal(format!(
                    "room {room} keeps no history"
                ))),
            }
        };
        let stored: Pending<u64> = async move { result }.boxed();
        async move { Ok(stored) }.boxed()
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

    fn start_send(
        &self,
        target: Target,
        frame: String,
    ) -> BoxFuture<'_, Result<Pending<Gathered>, BrokerError>> {
        let count = self.hub.deliver(&target, &Utf8Bytes::from(frame)) as u64;
        let gathered: Pending<Gathered> = async move {
            Ok(Gathered {
                count,
                partial: false,
            })
        }
        .boxed();
        async move { Ok(gathered) }.boxed()
    }

    fn disconnect(&self, target: Target) -> BoxFuture<'_, Result<Gathered, BrokerError>> {
        let count = self.hub.disconnect(&target) as u64;
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
        let page = self.hub.presence(room, after.as_ref(), limit);
        async move { Ok(PresencePage::merge([page], limit, false)) }.boxed()
    }

    fn stats(&self) -> BoxFuture<'_, Result<ClusterStats, BrokerError>> {
        let nodes = vec![self.hub.stats()];
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
}
