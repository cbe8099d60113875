//! A connection's rooms: `join` (with recovery in rooms with history),
//! `leave`, leaving the rooms a new identity may not join, and the `joined` and
//! `left` events that announce membership changes.

use axum::extract::ws::Utf8Bytes;
use tracing::debug;

use super::{Body, Reply, Session};
use crate::app::AppState;
use crate::broker::Recovery;
use crate::protocol::{self, ErrorCode, Failure, Id, Since, frame};

impl Session {
    /// Leaves every room the current identity may not join, then tells the
    /// connection with a `left` event.
    pub(super) async fn drop_forbidden_rooms(&mut self) {
        let Some(identity) = &self.identity else {
            return;
        };
        let forbidden: Vec<String> = self
            .rooms
            .iter()
            .filter(|room| !identity.can_join(room))
            .cloned()
            .collect();
        let user = identity.user.clone();
        for room in forbidden {
            self.rooms.remove(&room);
            self.state.hub.leave(&room, self.outbox.key).await;
            let left = frame::Event::Left {
                room: &room,
                user: &user,
                conn: &self.outbox.id,
                reason: "forbidden",
            }
            .text();
            announce(&self.state, &room, || left.clone()).await;
            self.push(left);
        }
    }

    pub(super) async fn join(
        &mut self,
        id: Option<&Id>,
        room: &str,
        since: Option<Since>,
    ) -> Result<Body, Reply> {
        let identity = self.identity()?;
        if !identity.can_join(room) {
            return Err(Reply::failed(
                ErrorCode::Forbidden,
                format!("not allowed to join {room}"),
            ));
        }
        let history = self.state.config.namespaces.for_room(room).history_size > 0;
        let max = self.state.config.limits.max_rooms_per_connection;
        if !self.rooms.contains(room) && self.rooms.len() >= max {
            return Err(Reply::failed(
                ErrorCode::LimitExceeded,
                format!("at most {max} rooms per connection"),
            ));
        }
        let Some(id) = id else {
            return Err(Reply::Failed(Failure::bad_request("join needs an id")));
        };
        let state = self.state.clone();
        let joined = if history {
            let with_since = since.is_some();
            // The reply must fit one frame: missed messages beyond it are left
            // out, oldest first, and the reply says `recovered: false`.
            let budget = protocol::max_frame_bytes(state.config.limits.max_message_bytes)
                .saturating_sub(protocol::REPLY_OVERHEAD);
            let reply = |recovery: &mut Recovery| {
                if with_since {
                    recovery.keep_within(budget);
                }
                frame::ok(id, joined(recovery, with_since))
            };
            state
                .hub
                .join_recovering(&*state.broker, room, &self.outbox, since.as_ref(), reply)
                .await
                .map(drop)
        } else {
            // Rooms without history ignore `since` (docs/protocol.md).
            let body = frame::Joined {
                recovered: Some(false),
                ..Default::default()
            };
            let reply = Utf8Bytes::from(frame::ok(id, body));
            state
                .hub
                .join(&*state.broker, room, &self.outbox, reply)
                .await
                .map(drop)
        };
        match joined {
            Ok(()) => {
                if self.rooms.insert(room.to_owned()) {
                    let user = self.outbox.user();
                    announce(&state, room, || {
                        frame::Event::Joined {
                            room,
                            user: &user,
                            conn: &self.outbox.id,
                        }
                        .text()
                    })
                    .await;
                }
                Err(Reply::Sent)
            }
            Err(error) => Err(Reply::Failed(Failure::from(&error))),
        }
    }

    pub(super) async fn leave(&mut self, room: &str) -> Result<Body, Reply> {
        if !self.rooms.remove(room) {
            return Err(Reply::failed(
                ErrorCode::NotMember,
                format!("not a member of {room}"),
            ));
        }
        self.state.hub.leave(room, self.outbox.key).await;
        let user = self.outbox.user();
        announce(&self.state, room, || {
            frame::Event::Left {
                room,
                user: &user,
                conn: &self.outbox.id,
                reason: "leave",
            }
            .text()
        })
        .await;
        Ok(Body::Empty)
    }
}

/// Publishes a `joined` or `left` event to the room's members when its
/// namespace announces them. Best effort: the membership change stands either way.
pub(super) async fn announce(state: &AppState, room: &str, event: impl FnOnce() -> String) {
    if state.config.namespaces.for_room(room).join_leave
        && let Err(error) = state.broker.publish(room, event()).await
    {
        debug!(%error, room, "join/leave event not published");
    }
}

/// What a join reply adds in a room with history: the position, and with
/// `since` the recovery outcome and the missed messages inline.
fn joined(recovery: &Recovery, with_since: bool) -> frame::Joined<'_> {
    frame::Joined {
        epoch: Some(&recovery.epoch),
        seq: Some(recovery.seq),
        recovered: with_since.then_some(recovery.recovered),
        missed: with_since.then_some(frame::Frames(&recovery.missed)),
    }
}
