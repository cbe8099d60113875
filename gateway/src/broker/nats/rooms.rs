//! Room subscriptions and their pump: one core-NATS subscription per room with
//! local members, active once a barrier proves the server has it, and a task
//! that hands the room's messages to its members in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use futures::FutureExt as _;
use futures::StreamExt as _;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument as _, info_span, warn};

use super::{NatsBroker, unavailable};
use crate::broker::{BrokerError, Delivery, RoomSink, Subscription};
use crate::protocol::frame;

/// Most room messages handed to the members in one batch (those that had
/// already arrived when the first was taken).
const ROOM_BATCH: usize = 64;

/// Barriers waiting for their message to come back.
#[derive(Default)]
pub(super) struct Barriers {
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next: AtomicU64,
}

impl Barriers {
    /// A barrier message came back: its waiter may go on.
    pub(super) fn passed(&self, payload: &[u8]) {
        let id = std::str::from_utf8(payload)
            .ok()
            .and_then(|id| id.parse::<u64>().ok());
        if let Some(waiter) = id.and_then(|id| self.waiting.lock().remove(&id)) {
            let _ = waiter.send(());
        }
    }
}

impl NatsBroker {
    /// Subscribes `room`'s subject and starts its pump to `members`; resolves
    /// once the server has processed the SUB.
    pub(super) async fn subscribe_room(
        &self,
        room: &str,
        members: Arc<dyn RoomSink>,
    ) -> Result<Subscription, BrokerError> {
        self.ensure_connected()?;
        // A history room's messages are stamped with its stream's epoch: know it first.
        if self.streams.keeps_history(room) {
            self.streams.ensure(room).await?;
        }
        let mut subscriber = self
            .client
            .subscribe(self.subjects.room(room))
            .await
            .map_err(unavailable)?;
        self.barrier().await?;
        let span = info_span!("room", room);
        let epochs = self.streams.epochs_handle();
        let pump = tokio::spawn(
            async move {
                let mut batch = Vec::new();
                while let Some(message) = subscriber.next().await {
                    // Messages already received join this one: each member's
                    // writer then sends them in one write.
                    let ready = std::iter::from_fn(|| subscriber.next().now_or_never().flatten());
                    for message in std::iter::once(message).chain(ready).take(ROOM_BATCH) {
                        // Validated as UTF-8 once; plain messages are delivered as they came.
                        let Ok(frame) = Utf8Bytes::try_from(message.payload) else {
                            warn!("dropped a room message that is not UTF-8");
                            continue;
                        };
                        batch.push(match stamped(&epochs, message.headers.as_ref(), &frame) {
                            Some((seq, stamped)) => Delivery {
                                seq: Some(seq),
                                frame: Utf8Bytes::from(stamped),
                            },
                            None => Delivery { seq: None, frame },
                        });
                    }
                    members.deliver(&batch);
                    batch.clear();
                }
            }
            .instrument(span),
        );
        Ok(Subscription::new(AbortOnDropHandle::new(pump)))
    }

    /// Waits until the server has processed every command this client sent before.
    async fn barrier(&self) -> Result<(), BrokerError> {
        let id = self.barriers.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.barriers.waiting.lock().insert(id, tx);
        let result = async {
            self.client
                .publish(self.subjects.barrier(), id.to_string().into())
                .await
                .map_err(unavailable)?;
            match tokio::time::timeout(self.request_timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(BrokerError::Unavailable(
                    "NATS did not confirm the subscription in time".into(),
                )),
            }
        }
        .await;
        self.barriers.waiting.lock().remove(&id);
        result
    }
}

/// Stamps a message republished by a history stream with its `seq`, `prev`
/// and the stream's epoch; `None` for plain room messages.
fn stamped(
    epochs: &Mutex<HashMap<String, String>>,
    headers: Option<&async_nats::HeaderMap>,
    text: &str,
) -> Option<(u64, String)> {
    let headers = headers?;
    let number = |name| -> Option<u64> { headers.get(name)?.as_str().parse().ok() };
    let seq = number(async_nats::header::NATS_SEQUENCE)?;
    let prev = number(async_nats::header::NATS_LAST_SEQUENCE).unwrap_or(0);
    let stream = headers.get(async_nats::header::NATS_STREAM)?.as_str();
    let epoch = epochs.lock().get(stream).cloned()?;
    let stamped = frame::stamp(text, seq, prev, &epoch)?;
    Some((seq, frame::into_text(stamped)))
}
