//! The rules of the commands that more than one transport serves — `publish`,
//! `send`, `presence`, `history`, `disconnect` and `stats` — written once.
//!
//! The WebSocket session and the backend HTTP API (and the next transport)
//! parse their input into the types taken here, call these functions, and only
//! translate the typed results into their own replies. Who issues a command is
//! an [`Issuer`]: a client connection is held to its token's permissions and
//! its publish rate; a backend, authenticated by its API key, is not.
//!
//! Operations that a client may pipeline return an [`Ack`]: the broker has
//! taken them in order when the function returns, and the `Ack` resolves with
//! their outcome.

use serde_json::value::RawValue;

use crate::app::AppState;
use crate::auth::Identity;
use crate::broker::{Ack, ClusterStats, Gathered, PresencePage, Recovery};
use crate::protocol::{self, ErrorCode, Failure, Since, Target, frame};
use crate::ratelimit::RateLimit;

/// Who issues a command.
#[derive(Clone, Copy)]
pub enum Issuer<'a> {
    /// A client connection: its identity decides what it may do.
    Client(&'a Identity),
    /// A backend through the API: it may do everything.
    Backend,
}

impl Issuer<'_> {
    fn identity(&self) -> Option<&Identity> {
        match self {
            Self::Client(identity) => Some(identity),
            Self::Backend => None,
        }
    }
}

/// The outcome of a publish: its `seq` in a room with history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Publishes `data` to `room` (a validated name; `data` within the depth
/// limit). A client needs the publish permission and the namespace's
/// `client_publish`, and then spends one token of its publish budget `rate`.
///
/// In a room with history the message is handed to the store in call order and
/// the acknowledgement carries its seq once stored; otherwise it resolves once
/// the broker has the message.
///
/// # Errors
/// `forbidden`, `rate_limited`, or the broker's failure to take the message.
pub async fn publish(
    state: &AppState,
    issuer: Issuer<'_>,
    rate: Option<&mut RateLimit>,
    room: &str,
    data: &RawValue,
) -> Result<Ack<Published>, Failure> {
    check_size(state, data)?;
    let namespace = state.config.namespaces.for_room(room);
    let from = match issuer {
        Issuer::Client(identity) => {
            if !identity.can_publish(room) {
                return Err(Failure::new(
                    ErrorCode::Forbidden,
                    format!("not allowed to publish to {room}"),
                ));
            }
            if !namespace.client_publish {
                return Err(Failure::new(
                    ErrorCode::Forbidden,
                    "only backends publish in this namespace",
                ));
            }
            if rate.is_some_and(|rate| !rate.allow()) {
                return Err(Failure::new(
                    ErrorCode::RateLimited,
                    "publish rate over the limit",
                ));
            }
            Some(identity.user.as_str())
        }
        Issuer::Backend => None,
    };
    let frame = frame::Message::new(room, data, from).text();
    state.metrics.messages_in.inc();
    if namespace.history_size > 0 {
        let ack = state.broker.publish_stored(room, frame).await;
        early(ack.map(|seq| Published { seq: Some(seq) }))
    } else {
        state
            .broker
            .publish(room, frame)
            .await
            .map_err(|error| Failure::from(&error))?;
        Ok(Ack::ready(Ok(Published::default())))
    }
}

/// Sends `data` as a `direct` event to every connection `target` names,
/// cluster-wide. A client needs the `send` claim. The acknowledgement counts
/// the connections it was queued for once every live node answered.
///
/// # Errors
/// `forbidden`, or the broker's failure to take the message.
pub async fn send(
    state: &AppState,
    issuer: Issuer<'_>,
    target: Target,
    data: &RawValue,
) -> Result<Ack<Gathered>, Failure> {
    check_size(state, data)?;
    let from = match issuer.identity() {
        Some(identity) if !identity.send => {
            return Err(Failure::new(
                ErrorCode::Forbidden,
                "direct messages need the send claim",
            ));
        }
        Some(identity) => Some(identity.user.as_str()),
        None => None,
    };
    let frame = frame::Event::Direct { from, data }.text();
    early(state.broker.send(target, frame).await)
}

/// The size of a page: the maximum unless asked for less, and at least one.
/// Presence pages and history pages follow the same rule (docs/protocol.md).
pub fn page_limit(requested: Option<usize>, max: usize) -> usize {
    requested.unwrap_or(max).min(max).max(1)
}

/// A page of `room`'s members across the cluster, after `cursor`. A client
/// needs the join permission; the namespace must keep presence.
///
/// # Errors
/// `forbidden`, `not_supported`, `bad_request` for a cursor the server did not
/// make, or `unavailable`.
pub async fn presence(
    state: &AppState,
    issuer: Issuer<'_>,
    room: &str,
    cursor: Option<&str>,
    limit: Option<usize>,
) -> Result<PresencePage, Failure> {
    if let Some(identity) = issuer.identity()
        && !identity.can_join(room)
    {
        return Err(Failure::new(
            ErrorCode::Forbidden,
            format!("not allowed to see {room}"),
        ));
    }
    if !state.config.namespaces.for_room(room).presence {
        return Err(Failure::new(
            ErrorCode::NotSupported,
            "this room's namespace keeps no presence",
        ));
    }
    let after = cursor.map(protocol::decode_cursor).transpose()?;
    let limit = page_limit(limit, state.config.limits.max_page_size);
    let mut page = state
        .broker
        .presence(room, after, limit)
        .await
        .map_err(|error| Failure::from(&error))?;
    // A page is one frame on the socket: long user ids end it early.
    let max_frame = protocol::max_frame_bytes(state.config.limits.max_message_bytes);
    page.keep_within(max_frame.saturating_sub(protocol::REPLY_OVERHEAD));
    Ok(page)
}

/// Refuses `data` over `limits.max_message_bytes`: what a client cannot send
/// in one message, a backend cannot publish either, so every frame that
/// carries it stays within what members can read and the server can write.
fn check_size(state: &AppState, data: &RawValue) -> Result<(), Failure> {
    let limit = state.config.limits.max_message_bytes;
    let size = data.get().len();
    if size > limit {
        return Err(Failure::new(
            ErrorCode::TooLarge,
            format!("data of {size} bytes is over limits.max_message_bytes ({limit})"),
        ));
    }
    Ok(())
}

/// A room's history after `since` in `epoch`, by the rules of a join with
/// `since`: without `epoch` the current one, without `since` the whole
/// history; at most `limit` messages (see [`page_limit`], with the namespace's
/// `recovery_max`), the newest, and `recovered` false when any were left out.
///
/// # Errors
/// `not_supported` when the namespace keeps no history, or `unavailable`.
pub async fn history(
    state: &AppState,
    room: &str,
    epoch: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
) -> Result<Recovery, Failure> {
    let namespace = state.config.namespaces.for_room(room);
    if namespace.history_size == 0 {
        return Err(Failure::new(
            ErrorCode::NotSupported,
            "this room's namespace keeps no history",
        ));
    }
    let limit = page_limit(limit, namespace.recovery_max);
    let failed = |error| Failure::from(&error);
    let epoch = match epoch {
        Some(epoch) => epoch,
        None => {
            state
                .broker
                .recover(room, None)
                .await
                .map_err(failed)?
                .epoch
        }
    };
    let since = Since {
        epoch,
        seq: since.unwrap_or(0),
    };
    let mut recovery = state
        .broker
        .recover(room, Some(&since))
        .await
        .map_err(failed)?;
    if recovery.missed.len() > limit {
        recovery.missed.drain(..recovery.missed.len() - limit);
        recovery.recovered = false;
    }
    Ok(recovery)
}

/// Closes every connection `target` names, cluster-wide, with 4003.
///
/// # Errors
/// `unavailable`.
pub async fn disconnect(state: &AppState, target: Target) -> Result<Gathered, Failure> {
    state
        .broker
        .disconnect(target)
        .await
        .map_err(|error| Failure::from(&error))
}

/// Every live node's counts.
///
/// # Errors
/// `unavailable`.
pub async fn stats(state: &AppState) -> Result<ClusterStats, Failure> {
    state
        .broker
        .stats()
        .await
        .map_err(|error| Failure::from(&error))
}

/// An acknowledgement whose operation failed before it was handed over is that
/// failure now: it is answered at once, and counted like any other error.
fn early<T>(ack: Ack<T>) -> Result<Ack<T>, Failure> {
    ack.early().map_err(|error| Failure::from(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Presence and history pages: the maximum unless asked for less, never
    /// more than the maximum, never empty.
    #[test]
    fn page_limits_follow_one_rule() {
        assert_eq!(page_limit(None, 1000), 1000);
        assert_eq!(page_limit(Some(10), 1000), 10);
        assert_eq!(page_limit(Some(5000), 1000), 1000);
        assert_eq!(page_limit(Some(0), 1000), 1);
        assert_eq!(page_limit(None, 0), 1);
    }
}
