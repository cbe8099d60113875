//! The broker: how a message published on one node reaches the members of its
//! room on every node, and how direct messages, disconnects and stats reach the
//! nodes that hold their connections.
//!
//! Two implementations sit behind [`Broker`]: [`LocalBroker`], the in-process
//! single-node default, and [`NatsBroker`], which spans replicas over NATS (one
//! subject per room, a registry of live nodes, scatter-gather for user-wide
//! operations). Sessions, the hub and the HTTP API see only the trait; the
//! broker delivers through the [`RoomSink`] and [`LocalNode`] traits that the
//! hub implements, so it depends on nothing above it.
//!
//! # Layout
//! - `ack`: [`Ack`], the later outcome of an operation taken in order.
//! - `delivery`: the traits the broker delivers through.
//! - `history`: the recovery rule, stamping, and the in-memory history.
//! - `last`: the last-value store's bounds and its in-memory form.
//! - `local`: the in-process broker. `nats/`: the NATS broker, by concern.
//! - `subject`: the NATS subject layout.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::protocol::{ErrorCode, Failure, Since, Target};

mod ack;
mod availability;
mod delivery;
pub mod history;
pub mod last;
mod local;
mod nats;

pub use ack::Ack;
pub use availability::Availability;
pub use delivery::{Delivery, LocalNode, RoomSink};
pub use history::Recovery;
pub use local::LocalBroker;
pub use nats::NatsBroker;

/// Keeps a room's broker subscription alive; dropping it unsubscribes.
pub struct Subscription {
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// Wraps whatever ends the subscription when dropped.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }
}

/// A count gathered from the nodes, and whether a live node failed to answer in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gathered {
    pub count: u64,
    pub partial: bool,
}

/// One node's counts, as `GET /api/v1/stats` reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub node: String,
    pub connections: u64,
    pub rooms: u64,
    /// Each history namespace and whether this node can store its messages;
    /// absent from nodes that keep no history (and from older nodes).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub history: std::collections::BTreeMap<String, bool>,
    /// Upgrades this node refused at `limits.max_connections` since it
    /// started (other refusals are not counted here): the operator's
    /// autoscaler grows the fleet while this rises. 0 from older nodes.
    #[serde(default)]
    pub upgrades_refused_capacity: u64,
}

/// What a node tells the fleet about itself in every registry heartbeat, so
/// that each node can tell whether it holds more than its share of the
/// fleet's connections ([`crate::rebalance`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Open WebSocket connections.
    pub connections: u64,
    /// `limits.max_connections` as the node applies it (capped below its
    /// open-file limit): loads compare as `connections / max_connections`.
    pub max_connections: u64,
    /// Whether the node takes new connections (`/readyz`).
    pub ready: bool,
    /// Whether the node is draining (shutting down).
    pub draining: bool,
}

impl NodeLoad {
    /// `connections / max_connections`; a node that takes none counts as full.
    pub fn load(&self) -> f64 {
        if self.max_connections == 0 {
            return 1.0;
        }
        self.connections as f64 / self.max_connections as f64
    }
}

/// Reads this node's current load; `None` once the gateway is gone. The
/// broker calls it for every heartbeat.
pub type LoadReport = Arc<dyn Fn() -> Option<NodeLoad> + Send + Sync>;

/// The fleet as this node's registry last heard it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fleet {
    /// Every live node that sent its counts, this one included (with its
    /// current counts), by name.
    pub nodes: Vec<(String, NodeLoad)>,
    /// A live node has sent no counts yet (it is starting, or older), or its
    /// last heartbeat is older than one of its intervals: the counts cannot
    /// be trusted to compare nodes.
    pub partial: bool,
}

/// One member of a room, as presence reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Present {
    pub user: String,
    pub conn: String,
    pub node: String,
}

/// A page of a room's members in (user, conn) order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresencePage {
    pub members: Vec<Present>,
    /// More members follow the last one.
    pub more: bool,
    /// A live node did not answer in time.
    pub partial: bool,
}

impl PresencePage {
    /// Merges nodes' pages (each sorted, each at most `limit`) into one page.
    pub fn merge(
        pages: impl IntoIterator<Item = (Vec<Present>, bool)>,
        limit: usize,
        partial: bool,
    ) -> Self {
        let mut members = Vec::new();
        let mut more = false;
        for (page, page_more) in pages {
            members.extend(page);
            more |= page_more;
        }
        members.sort();
        more |= members.len() > limit;
        members.truncate(limit);
        Self {
            members,
            more,
            partial,
        }
    }
}

impl PresencePage {
    /// Ends the page early, with more to follow, so that its members and the
    /// cursor of the next page, written as JSON, take at most `max_bytes`; at
    /// least one member stays.
    pub fn keep_within(&mut self, max_bytes: usize) {
        let mut total = 0usize;
        let mut keep = 0;
        for member in &self.members {
            total = total.saturating_add(
                serde_json::to_string(member).map_or(usize::MAX, |text| text.len() + 1),
            );
            let cursor = crate::protocol::encode_cursor(&member.user, &member.conn).len();
            if total.saturating_add(cursor) > max_bytes {
                break;
            }
            keep += 1;
        }
        if keep < self.members.len() {
            self.members.truncate(keep.max(1));
            self.more = true;
        }
    }
}

/// Every node's counts; `partial` when a live node did not answer in time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub nodes: Vec<NodeStats>,
    pub partial: bool,
}

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker is unreachable: nothing was sent.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The wrapped message exceeds the broker's payload limit.
    #[error("message of {size} bytes exceeds the broker's payload limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A fault of ours.
    #[error("broker error: {0}")]
    Internal(String),
}

impl From<&BrokerError> for Failure {
    fn from(error: &BrokerError) -> Self {
        let code = match error {
            BrokerError::Unavailable(_) => ErrorCode::Unavailable,
            BrokerError::TooLarge { .. } => ErrorCode::TooLarge,
            BrokerError::Internal(_) => ErrorCode::Internal,
        };
        Failure::new(code, error.to_string())
    }
}

/// What the gateway needs from a message broker.
///
/// Operations that a connection may pipeline (`send`, and `publish` to a room
/// with history) resolve once the broker has taken them in order, with an
/// [`Ack`] for their outcome.
pub trait Broker: Send + Sync + 'static {
    /// Starts delivering `room`'s messages to `members`. Resolves once the
    /// subscription is active at the broker, so every message published
    /// afterwards arrives.
    fn subscribe<'a>(
        &'a self,
        room: &'a str,
        members: Arc<dyn RoomSink>,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>>;

    /// Publishes a ready `message` frame to every node subscribed to `room`, this
    /// one included; resolves once the broker has it.
    fn publish<'a>(
        &'a self,
        room: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Stores a ready `message` frame in its room's history, then delivers it,
    /// stamped with `seq`, `prev` and `epoch`, to every node subscribed to the
    /// room. Resolves once the frame is handed over, so messages published one
    /// after another are stored in that order; the [`Ack`] resolves with the
    /// message's seq once it is stored (the JetStream acknowledgement).
    fn publish_stored<'a>(&'a self, room: &'a str, frame: String) -> BoxFuture<'a, Ack<u64>>;

    /// The room's history position and, with `since`, the messages after it
    /// (docs/protocol.md, "Joining").
    fn recover<'a>(
        &'a self,
        room: &'a str,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>>;

    /// Keeps `frame` as the one last frame under `key`, replacing the one
    /// before, for [`last::LAST_TTL`] and within [`last::LAST_MAX_BYTES`] over
    /// all keys; resolves once stored. Keys are room keys (one subject's
    /// worth of tokens).
    fn keep_last<'a>(
        &'a self,
        key: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// The frame last kept under `key` on any node, unless it expired.
    fn last<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, BrokerError>>;

    /// Queues a ready `direct` frame to every connection `target` names on every
    /// node. Resolves once the frame is handed over, so sends from one
    /// connection arrive in order; the [`Ack`] resolves with the count of
    /// connections it was queued for, once every live node answered.
    fn send(&self, target: Target, frame: String) -> BoxFuture<'_, Ack<Gathered>>;

    /// Closes every connection `target` names on every node with 4003.
    fn disconnect(&self, target: Target) -> BoxFuture<'_, Result<Gathered, BrokerError>>;

    /// A page of `room`'s members on every node, after `after` in (user, conn) order.
    fn presence<'a>(
        &'a self,
        room: &'a str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<PresencePage, BrokerError>>;

    /// Every live node's counts.
    fn stats(&self) -> BoxFuture<'_, Result<ClusterStats, BrokerError>>;

    /// Whether the broker is connected and publishes can succeed.
    fn is_ready(&self) -> bool;

    /// The largest payload the broker accepts.
    fn max_payload(&self) -> usize;

    /// Tells the other nodes this one is leaving.
    fn leave_cluster(&self) -> BoxFuture<'_, ()>;

    /// Gives the broker what it reports of this node's load in its
    /// heartbeats. Until it is called, the node's heartbeats carry no counts
    /// and the other nodes see their fleet as partial.
    fn report_load(&self, report: LoadReport) {
        let _ = report;
    }

    /// The fleet as the node registry last heard it; a broker without peers
    /// is a fleet of this node alone.
    fn fleet(&self) -> Fleet {
        Fleet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: &str) -> Present {
        Present {
            user: user.to_owned(),
            conn: "n:1".to_owned(),
            node: "n".to_owned(),
        }
    }

    /// A presence page ends early, with more to follow, when its members would
    /// not fit the byte budget; it always keeps one.
    #[test]
    fn presence_pages_are_bounded_in_bytes() {
        let long = "u".repeat(1000);
        let mut page = PresencePage {
            members: vec![member("a"), member(&long), member("b")],
            more: false,
            partial: false,
        };
        page.keep_within(500);
        assert_eq!(page.members.len(), 1);
        assert!(page.more);
        let mut one = PresencePage {
            members: vec![member(&long)],
            more: false,
            partial: false,
        };
        one.keep_within(10);
        assert_eq!(one.members.len(), 1);
        assert!(one.more, "the page ended at its first member");
        let mut small = PresencePage {
            members: vec![member("a"), member("b")],
            more: false,
            partial: false,
        };
        small.keep_within(10_000);
        assert_eq!(small.members.len(), 2);
        assert!(!small.more);
    }
}
