//! What the broker delivers to, as small traits the hub implements: the broker
//! hands a room's messages to a [`RoomSink`] and applies other nodes' requests
//! to this node's [`LocalNode`], so it never depends on the hub. The arrows run
//! one way: session → hub → broker.

use axum::extract::ws::Utf8Bytes;

use super::{NodeStats, Present};
use crate::protocol::Target;

/// One room message for the local members: its frame, and its position in
/// rooms with history (which a joining member's recovery deduplicates by).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub seq: Option<u64>,
    pub frame: Utf8Bytes,
}

/// A room's local members, where the broker delivers the room's messages.
pub trait RoomSink: Send + Sync + 'static {
    /// Queues messages that arrived together, in order, to every local member.
    fn deliver(&self, messages: &[Delivery]);
}

/// This node's connections as the broker sees them when it serves the other
/// nodes' requests (and its own, on the in-process broker).
pub trait LocalNode: Send + Sync + 'static {
    /// Queues a `direct` frame to the local connections `target` names;
    /// returns how many it was queued for.
    fn send(&self, target: &Target, frame: &Utf8Bytes) -> usize;

    /// Closes the local connections `target` names with 4003; returns how many.
    fn disconnect(&self, target: &Target) -> usize;

    /// A page of `room`'s local members after `after` in (user, conn) order: at
    /// most `limit`, and whether more follow.
    fn presence(
        &self,
        room: &str,
        after: Option<&(String, String)>,
        limit: usize,
    ) -> (Vec<Present>, bool);

    /// This node's counts.
    fn stats(&self) -> NodeStats;
}
