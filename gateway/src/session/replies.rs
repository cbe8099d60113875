//! Replies still on their way: a `send`'s count or a stored `publish`'s
//! acknowledgement. The reader goes on with later commands meanwhile, up to
//! [`MAX_IN_FLIGHT`] of them.

use std::sync::Arc;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use crate::broker::Ack;
use crate::metrics::Metrics;
use crate::protocol::{Failure, Id, frame};

/// Replies a connection may have in flight before it stops reading commands.
pub const MAX_IN_FLIGHT: usize = 256;

/// The replies in flight; idle connections hold none (no allocation).
#[derive(Default)]
pub struct InFlight {
    /// Each resolves to its frame, or to nothing (a command without `id` that
    /// succeeded).
    replies: Option<FuturesUnordered<BoxFuture<'static, Option<String>>>>,
}

impl InFlight {
    /// How many replies are on their way.
    pub fn len(&self) -> usize {
        self.replies.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// Holds the reply to the command `id` until `ack` resolves: `ok` with the
    /// fields `body` gives, or its error (counted like any other, never a
    /// client fault).
    pub fn hold<T, B>(
        &mut self,
        id: Option<Id>,
        op: &'static str,
        room: Option<String>,
        ack: Ack<T>,
        metrics: Arc<Metrics>,
        body: impl FnOnce(T) -> B + Send + 'static,
    ) where
        T: Send + 'static,
        B: Serialize,
    {
        let reply = Box::pin(async move {
            match ack.await {
                Ok(value) => id.map(|id| frame::ok(&id, body(value))),
                Err(error) => {
                    let failure = Failure::from(&error);
                    metrics.client_error(failure.code.as_str());
                    Some(frame::error(
                        id.as_ref(),
                        Some(op),
                        room.as_deref(),
                        &failure,
                    ))
                }
            }
        });
        self.replies
            .get_or_insert_with(FuturesUnordered::new)
            .push(reply);
    }

    /// The next reply that arrived (`None` for a success without `id`);
    /// pending while none is in flight. The set is freed when its last reply
    /// is taken, so a burst of `send`s leaves nothing behind.
    ///
    /// # Cancel safety
    /// Cancel-safe: a reply is taken only when the future completes.
    pub async fn next(&mut self) -> Option<String> {
        let Some(replies) = self.replies.as_mut().filter(|replies| !replies.is_empty()) else {
            return std::future::pending().await;
        };
        let reply = replies.next().await;
        if replies.is_empty() {
            self.replies = None;
        }
        match reply {
            Some(reply) => reply,
            None => std::future::pending().await,
        }
    }
}
