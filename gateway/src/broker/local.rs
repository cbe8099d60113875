//! The in-process broker: the single-node default when no NATS URL is set.
//! Publishing hands the frame straight to the room's local subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use axum::extract::ws::Utf8Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{Broker, BrokerError, ClusterStats, Gathered, Subscription};
use crate::hub::{Hub, Room, lock};
use crate::protocol::Target;

/// The single-node broker.
pub struct LocalBroker {
    hub: Arc<Hub>,
    rooms: Arc<Mutex<HashMap<String, Weak<Room>>>>,
}

impl LocalBroker {
    /// A broker delivering to `hub` only.
    pub fn new(hub: Arc<Hub>) -> Arc<Self> {
        Arc::new(Self {
            hub,
            rooms: Arc::default(),
        })
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
        let target = lock(&self.rooms).get(room).and_then(Weak::upgrade);
        if let Some(target) = target {
            target.deliver(&Utf8Bytes::from(frame));
        }
        async { Ok(()) }.boxed()
    }

    fn send(&self, target: Target, frame: String) -> BoxFuture<'_, Result<Gathered, BrokerError>> {
        let count = self.hub.deliver(&target, &Utf8Bytes::from(frame)) as u64;
        async move {
            Ok(Gathered {
                count,
                partial: false,
            })
        }
        .boxed()
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
