//! A connection's writer loop, polled in the connection's task beside the
//! reader: it drains the outbox to the socket (a batch in one write), pings the
//! client when the node's [`crate::heartbeat`] says so (every
//! `limits.heartbeat_ms`) and closes with 1011 when nothing was heard within
//! `limits.heartbeat_timeout_ms`, and ends with the close frame the connection
//! was asked to close with.
//!
//! The Pusher transport writes through the same loop in its own [`Dialect`]:
//! which queued frames are its own, and how a close is said.
//!
//! On a real socket, queued frames bypass tungstenite: the [`FrameWriter`]
//! frames each one straight into the socket's outgoing bytes, and the sink only
//! flushes them (see [`crate::socket`]). Pings and the close handshake still go
//! through the sink.

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::stream::SplitSink;
use futures::{Sink, SinkExt as _};

use crate::app::AppState;
use crate::metrics::Ending;
use crate::outbox::{Next, Outbox};
use crate::protocol::close;
use crate::socket::{FrameWriter, WRITE_BATCH};

/// How one transport's connections are written to: which queued frames are
/// theirs and how a close is said.
pub(crate) struct Dialect {
    /// Whether a queued frame is for this connection (the hub queues native
    /// events, such as the drain's `reconnect`, to every connection).
    pub admits: fn(&str) -> bool,
    /// The close reason of a heartbeat timeout.
    pub heartbeat_timeout: &'static str,
    /// The close code this transport sends for the (native) code the
    /// connection was asked to close with, and a frame to send before the close
    /// frame, if any.
    pub close: fn(u16, &'static str) -> (u16, Option<Utf8Bytes>),
}

/// The native protocol's: every frame, and the close as asked.
pub(crate) const NATIVE: Dialect = Dialect {
    admits: |_| true,
    heartbeat_timeout: "heartbeat timeout",
    close: |code, _| (code, None),
};

/// Drains the outbox to the socket, sends heartbeats, and sends the close frame.
///
/// `frames` is the socket's direct path for text frames: they are appended to
/// the socket's outgoing bytes and the sink only flushes them.
pub(crate) async fn write_loop<S>(
    sink: &mut SplitSink<S, Message>,
    frames: &FrameWriter,
    outbox: &Outbox,
    state: &AppState,
    dialect: &Dialect,
) where
    S: Sink<Message, Error = axum::Error> + Send,
{
    let timeout = state.config.limits.heartbeat_timeout;
    loop {
        match outbox.next().await {
            Next::Closed => break,
            Next::Frames(batch) => {
                // Everything queued goes out in one flush.
                let sent = match append(sink, frames, batch, dialect).await {
                    Ok(bytes) => {
                        state.metrics.sent_bytes.inc_by(bytes);
                        sink.flush().await
                    }
                    Err(error) => Err(error),
                };
                if sent.is_err() {
                    outbox.shut();
                    outbox.end(Ending::Lost);
                    return;
                }
            }
            Next::Beat => {
                if outbox.silence() > timeout {
                    outbox.close(close::INTERNAL, dialect.heartbeat_timeout);
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    outbox.end(Ending::Lost);
                    return;
                }
            }
        }
    }
    // Boxed: it runs once, so the connection's future does not reserve room
    // for its timers for the connection's whole life.
    Box::pin(finish(sink, frames, outbox, dialect)).await;
}

/// Appends the queued frames `dialect` admits to the socket's outgoing bytes,
/// sending them whenever a batch's worth has gathered (the rest leaves at the
/// caller's flush). Returns the payload bytes appended.
///
/// # Errors
/// The sink's, when a send failed.
async fn append<S>(
    sink: &mut SplitSink<S, Message>,
    frames: &FrameWriter,
    batch: VecDeque<Utf8Bytes>,
    dialect: &Dialect,
) -> Result<u64, axum::Error>
where
    S: Sink<Message, Error = axum::Error> + Send,
{
    let mut bytes = 0;
    for frame in batch.into_iter().filter(|frame| (dialect.admits)(frame)) {
        bytes += frame.len() as u64;
        if frames.text(frame.as_bytes()) >= WRITE_BATCH {
            sink.flush().await?;
        }
    }
    Ok(bytes)
}

/// Sends what is still queued (unless the connection is closed as a slow
/// consumer) and the close frame, then closes the socket.
async fn finish<S>(
    sink: &mut SplitSink<S, Message>,
    frames: &FrameWriter,
    outbox: &Outbox,
    dialect: &Dialect,
) where
    S: Sink<Message, Error = axum::Error> + Send,
{
    // Frames queued before the close was decided still go out first (a `left` or
    // `reconnect` event, an error reply), except for a slow consumer, and except
    // when the client ended the connection: its close frame has been answered.
    let rest = outbox.shut();
    if let Some((code, reason)) = outbox.closing() {
        if code != close::TRY_AGAIN_LATER
            && !outbox.ended()
            && append(sink, frames, rest, dialect).await.is_err()
        {
            return;
        }
        let (code, last) = (dialect.close)(code, reason);
        if let Some(last) = last {
            let _ = sink.feed(Message::Text(last)).await;
        }
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}
