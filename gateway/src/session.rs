//! One WebSocket connection, run as one task: a reader loop that runs the
//! client's commands in order, and a writer loop that drains the connection's
//! bounded queue and sends heartbeats, polled together. A `send`, and a
//! `publish` to a room with history, is handed to the broker in order too, but
//! its reply waits for every node's count or the store's acknowledgement while
//! the reader goes on (up to [`MAX_IN_FLIGHT`] at a time), so one connection is
//! not held to one round trip per message.
//!
//! Every command first pays its cost (see [`ratelimit::cost`]) from the
//! connection's command budget; a `publish` also takes a token of the tighter
//! publish budget.
//!
//! The reader owns the session's state (identity, joined rooms, budgets) and
//! is the only one to change it, so no lock guards it. Frames reach the writer
//! only through the [`Outbox`]; when either side ends, it asks the outbox to
//! close, which stops the other.
//!
//! One task rather than a reader task and a writer task, and the session's own
//! task rather than axum's upgrade task: an idle connection costs mostly its
//! task, and docs/benchmarks.md ("Idle memory per connection") measures each
//! piece.

use std::collections::HashSet;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, Utf8Bytes};
use futures::future::Either;
use futures::stream::SplitStream;
use futures::{Sink, Stream, StreamExt as _};
use serde_json::value::RawValue;
use tokio::time::Sleep;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::debug;

use crate::app::AppState;
use crate::auth::Identity;
use crate::broker::Gathered;
use crate::command::{self, Issuer, Published};
use crate::hub::UserSlot;
use crate::metrics::Ending;
use crate::outbox::Outbox;
use crate::peer::AddressSlot;
use crate::protocol::{self, Command, ErrorCode, Failure, Id, Target, close, frame};
use crate::ratelimit::{self, ErrorBudget, RateLimit};

mod membership;
mod quiet;
mod replies;
pub(crate) mod writer;

use membership::announce;
use replies::{InFlight, MAX_IN_FLIGHT};
use writer::write_loop;

use crate::socket::FrameWriter;

/// How a session starts: with an identity from the handshake, or waiting for `auth`.
pub struct Start {
    pub conn_id: Arc<str>,
    /// The identity from the handshake (a token, or anonymous); `None` when the
    /// connection must authenticate with a first-frame `auth`.
    pub identity: Option<Identity>,
    /// The user slot reserved at the handshake for `identity`.
    pub slot: Option<UserSlot>,
    /// Held for the connection's life; releases its place under `limits.max_connections`.
    pub permit: tokio::sync::OwnedSemaphorePermit,
    /// Held for the connection's life; releases its place under
    /// `limits.max_connections_per_ip`.
    pub address: AddressSlot,
    /// Held until the connection is counted as ended: the drain waits for it.
    pub tracked: TaskTrackerToken,
    /// The socket's direct path for the writer's text frames (see [`crate::socket`]).
    pub frames: FrameWriter,
}

/// What the reader loop should do after a frame.
enum Flow {
    Continue,
    Close(u16, &'static str),
    /// The client closed, or the connection was lost: not a server close.
    Ended(Ending),
}

struct Session {
    state: Arc<AppState>,
    outbox: Arc<Outbox>,
    identity: Option<Identity>,
    slot: Option<UserSlot>,
    rooms: HashSet<String>,
    /// The command budget (`limits.command_rate`, `limits.command_burst`):
    /// every command pays its cost from it.
    commands: RateLimit,
    /// The publish budget (`limits.publish_rate`, `limits.publish_burst`): a
    /// second, tighter one for `publish`.
    rate: RateLimit,
    errors: ErrorBudget,
    /// When the connection must authenticate or re-authenticate by: one
    /// timer, reset only when the deadline changes, and boxed so that a
    /// connection without a deadline (anonymous, or a token without `exp`)
    /// reserves no room for it.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Replies still on their way (a `send`'s count, a stored `publish`'s
    /// acknowledgement): the reader goes on with the next command meanwhile.
    replies: InFlight,
}

/// Runs one connection to its end, as one task: the reader loop and the writer
/// loop are two futures polled together (the reader only when it was woken:
/// see [`quiet`]), and the socket's halves share one lock. `socket` is the upgraded WebSocket in production and a pair of
/// channels in unit tests.
///
/// An idle connection costs what this future holds, so it is built to hold
/// everything once: the socket is split and the session assembled before the
/// future starts (an `async fn`'s arguments would stay in its future beside
/// whatever they are moved into), the loops borrow what they share, and the
/// steps that run once (leaving the rooms, the close handshake) are boxed
/// while they run rather than reserved in the future for the connection's life.
pub fn run<S>(socket: S, state: Arc<AppState>, start: Start) -> impl Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Send
        + 'static,
{
    let Start {
        conn_id,
        identity,
        slot,
        permit,
        address,
        tracked,
        frames,
    } = start;
    let limits = &state.config.limits;
    let outbox = Outbox::new(
        state.hub.next_key(),
        conn_id,
        limits.send_queue,
        state.metrics.clone(),
    );
    let mut session = Session {
        commands: RateLimit::new(limits.command_rate, limits.command_burst),
        rate: RateLimit::new(limits.publish_rate, limits.publish_burst),
        errors: ErrorBudget::new(limits.max_errors_per_minute as usize),
        state: state.clone(),
        outbox: outbox.clone(),
        identity,
        slot,
        rooms: HashSet::new(),
        deadline: None,
        replies: InFlight::default(),
    };
    let (mut sink, mut stream) = socket.split();
    async move {
        state.metrics.connections.inc();
        state.metrics.connections_accepted.inc();
        state.hub.attach(&outbox);
        session.begin();
        let reader = pin!(read_loop(&mut session, &mut stream));
        let writer = pin!(write_loop(
            &mut sink,
            &frames,
            &outbox,
            &state,
            &writer::NATIVE,
        ));
        let lingering = match quiet::select(reader, writer).await {
            // The rooms are left: the writer sends what is still queued and the
            // close frame.
            Either::Left(((), mut writer)) => {
                match tokio::time::timeout(Duration::from_secs(5), &mut writer).await {
                    Ok(()) => None,
                    Err(_) => Some(writer),
                }
            }
            // The socket failed or the writer closed: the reader sees the
            // close and leaves the rooms.
            Either::Right(((), reader)) => {
                reader.await;
                None
            }
        };
        state.metrics.connections.dec();
        drop(permit);
        drop(address);
        drop(tracked);
        // A client that stopped reading has 5 seconds to take the close frame
        // before the connection is counted as ended (and the drain stops
        // waiting for it); the writer still gets the close frame out if the
        // client reads later, until the socket fails.
        if let Some(writer) = lingering {
            writer.await;
        }
    }
}

/// Reads the client's frames and runs its commands in order until the
/// connection closes, then leaves every room.
async fn read_loop<S>(session: &mut Session, stream: &mut SplitStream<S>)
where
    S: Stream<Item = Result<Message, axum::Error>>,
{
    loop {
        let in_flight = session.replies.len();
        let message = tokio::select! {
            biased;
            () = session.outbox.closed() => break,
            () = expired(&mut session.deadline) => {
                session.outbox.close(close::AUTH_FAILED, if session.identity.is_some() { "token expired" } else { "authentication timed out" });
                break;
            }
            reply = session.replies.next() => {
                if let Some(reply) = reply {
                    session.push(reply);
                }
                continue;
            }
            message = stream.next(), if in_flight < MAX_IN_FLIGHT => message,
        };
        session.outbox.heard();
        let flow = match message {
            None => Flow::Ended(Ending::Lost),
            Some(Ok(Message::Text(text))) => {
                session
                    .state
                    .metrics
                    .received_bytes
                    .inc_by(text.len() as u64);
                Box::pin(session.on_text(&text)).await
            }
            Some(Ok(Message::Binary(_))) => session.on_binary(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
            Some(Ok(Message::Close(frame))) => {
                Flow::Ended(Ending::Client(frame.map(|frame| frame.code)))
            }
            Some(Err(error)) => on_read_error(error),
        };
        match flow {
            Flow::Continue => {}
            Flow::Close(code, reason) => {
                session.outbox.close(code, reason);
                break;
            }
            Flow::Ended(ending) => {
                session.outbox.end(ending);
                break;
            }
        }
    }
    // The client is gone or being closed: leave every room, then let the writer
    // send the close frame.
    session.outbox.close(close::NORMAL, "");
    Box::pin(session.end()).await;
}

/// Completes when `deadline` passes; pending without one.
async fn expired(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(deadline) => deadline.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Maps a read error to the close code RFC 6455 and docs/protocol.md give it.
fn on_read_error(error: axum::Error) -> Flow {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Flow::Close(close::TOO_BIG, "message too big"),
        Some(tungstenite::Error::Utf8(_)) => Flow::Close(close::INVALID_UTF8, "invalid UTF-8"),
        // A client that drops TCP is a lost connection, not a protocol error.
        Some(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => Flow::Ended(Ending::Lost),
        Some(tungstenite::Error::Protocol(_)) => Flow::Close(close::PROTOCOL, "protocol error"),
        other => {
            debug!(error = ?other, "connection read failed");
            Flow::Ended(Ending::Lost)
        }
    }
}

/// The furthest a token's expiry is scheduled: a token valid for longer than
/// this (`exp` near 2^64, or 1e300) is treated as valid for this long, instead
/// of overflowing the clock.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The timer deadline, seen from `now` (Unix time `now_unix`), of the Unix time
/// `deadline_unix`: past deadlines are now, and none is further than
/// [`MAX_TOKEN_LIFETIME`]. Never panics.
fn timer_deadline(
    now: tokio::time::Instant,
    deadline_unix: u64,
    now_unix: u64,
) -> tokio::time::Instant {
    let remaining = Duration::from_secs(deadline_unix.saturating_sub(now_unix));
    now.checked_add(remaining.min(MAX_TOKEN_LIFETIME))
        .unwrap_or(now)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Session {
    /// Starts the session: with the handshake's identity, registered under its
    /// user slot and welcomed, or waiting for `auth` until `auth.auth_timeout`.
    fn begin(&mut self) {
        match self.identity.take() {
            Some(identity) => {
                if let Some(slot) = self.slot.as_mut() {
                    self.state.hub.register(slot, &self.outbox);
                }
                self.become_identity(identity, None);
            }
            None => {
                let deadline = tokio::time::Instant::now() + self.state.config.auth.auth_timeout;
                self.set_deadline(Some(deadline));
            }
        }
    }

    /// Ends the session: leaves every room (announcing it where the namespace
    /// does), leaves the hub and releases the user slot and the replies in
    /// flight. The writer may still be sending the close frame.
    async fn end(&mut self) {
        let state = &self.state;
        let key = self.outbox.key;
        let user = self.outbox.user();
        for room in std::mem::take(&mut self.rooms) {
            state.hub.leave(&room, key).await;
            announce(state, &room, || {
                frame::Event::Left {
                    room: &room,
                    user: &user,
                    conn: &self.outbox.id,
                    reason: "disconnect",
                }
                .text()
            })
            .await;
        }
        state.hub.detach(&self.outbox);
        drop(self.slot.take());
        self.replies = InFlight::default();
    }

    /// Takes `identity` as the connection's and sends the welcome frame.
    fn become_identity(&mut self, identity: Identity, id: Option<&Id>) {
        self.outbox.set_user(&identity.user);
        self.set_deadline(self.expiry(&identity));
        let config = &self.state.config;
        let welcome = frame::Event::Welcome {
            id,
            conn: &self.outbox.id,
            user: &identity.user,
            node: self.state.hub.node(),
            heartbeat_ms: config.limits.heartbeat.as_millis() as u64,
        }
        .text();
        self.identity = Some(identity);
        self.push(welcome);
    }

    /// Sets (or, with `None`, removes) the deadline the connection closes at
    /// with 4001.
    fn set_deadline(&mut self, deadline: Option<tokio::time::Instant>) {
        self.deadline = deadline.map(|deadline| Box::pin(tokio::time::sleep_until(deadline)));
    }

    /// When a connection holding `identity` must close with 4001: its `exp` plus
    /// the leeway, as a timer deadline; `None` when the token never expires.
    fn expiry(&self, identity: &Identity) -> Option<tokio::time::Instant> {
        self.state
            .auth
            .deadline(identity)
            .map(|deadline| timer_deadline(tokio::time::Instant::now(), deadline, unix_now()))
    }

    fn push(&self, frame: String) {
        self.outbox.push(Utf8Bytes::from(frame));
    }

    fn on_binary(&mut self) -> Flow {
        if self.identity.is_none() {
            return Flow::Close(close::AUTH_FAILED, "authenticate first");
        }
        self.fail(
            None,
            None,
            None,
            Failure::bad_request("binary frames are not supported"),
        )
    }

    /// Sends an error reply and counts it against the error budget when the
    /// client caused it: the codes [`ErrorCode::is_client_fault`] names, and
    /// `unauthorized` in reply to `auth` or `refresh`, whose token the client
    /// chose (each costs a signature verification).
    fn fail(
        &mut self,
        id: Option<&Id>,
        op: Option<&str>,
        room: Option<&str>,
        failure: Failure,
    ) -> Flow {
        self.state.metrics.client_error(failure.code.as_str());
        self.push(frame::error(id, op, room, &failure));
        let fault = failure.code.is_client_fault()
            || (failure.code == ErrorCode::Unauthorized && matches!(op, Some("auth" | "refresh")));
        if fault && self.errors.exceeded() {
            return Flow::Close(close::POLICY, "too many errors");
        }
        Flow::Continue
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let parsed = protocol::parse(text);
        let id = parsed.id.as_ref();
        let command = match parsed.command {
            Ok(command) => command,
            Err(failure) => {
                if self.identity.is_none() {
                    return Flow::Close(close::AUTH_FAILED, "authenticate first");
                }
                return self.fail(id, parsed.op, parsed.room, failure);
            }
        };
        if self.identity.is_none() && !matches!(command, Command::Auth { .. }) {
            return Flow::Close(close::AUTH_FAILED, "authenticate first");
        }
        let op = command.op();
        if !self
            .commands
            .take(ratelimit::cost(&command, &self.state.config.namespaces))
        {
            return self.fail(
                id,
                Some(op),
                parsed.room,
                Failure::new(ErrorCode::RateLimited, "command rate over the limit"),
            );
        }
        let result = match command {
            Command::Auth { token } => return self.auth(id, &token).await,
            Command::Join { room, since } => self.join(id, room, since).await,
            Command::Leave { room } => self.leave(room).await,
            Command::Publish { room, data } => self.publish(id, room, data).await,
            Command::Send { target, data } => self.send(id, target, data).await,
            Command::Presence {
                room,
                cursor,
                limit,
            } => self.presence(room, cursor, limit).await,
            Command::Refresh { token } => self.refresh(&token).await,
            Command::Ping => Ok(Body::Empty),
        };
        match result {
            Ok(body) => {
                if let Some(id) = id {
                    self.push(match body {
                        Body::Empty => frame::ok(id, ()),
                        Body::Published(published) => frame::ok(id, published),
                        Body::Delivered(gathered) => frame::ok(id, Delivered::from(gathered)),
                        Body::Presence(page) => frame::ok(id, frame::PresencePage::from(&page)),
                        Body::Refreshed(exp) => frame::ok(id, Refreshed { exp }),
                    });
                }
                Flow::Continue
            }
            Err(Reply::Sent) => Flow::Continue,
            Err(Reply::Failed(failure)) => self.fail(id, Some(op), parsed.room, failure),
        }
    }

    fn identity(&self) -> Result<&Identity, Reply> {
        self.identity.as_ref().ok_or_else(Reply::unauthenticated)
    }

    /// First-frame `auth`, or `auth` on an anonymous connection.
    async fn auth(&mut self, id: Option<&Id>, token: &str) -> Flow {
        let anonymous = match &self.identity {
            None => false,
            Some(identity) if identity.anonymous => true,
            Some(_) => {
                return self.fail(
                    id,
                    Some("auth"),
                    None,
                    Failure::bad_request("already authenticated: use refresh"),
                );
            }
        };
        let identity = match self.state.auth.verify(token) {
            Ok(identity) => identity,
            Err(error) => {
                self.state.metrics.auth_failure(error.kind_label());
                let failure = Failure::new(ErrorCode::Unauthorized, error.to_string());
                if anonymous {
                    // The connection stays anonymous, and the failure counts
                    // against its error budget.
                    return self.fail(id, Some("auth"), None, failure);
                }
                self.push(frame::error(id, Some("auth"), None, &failure));
                return Flow::Close(close::AUTH_FAILED, "authentication failed");
            }
        };
        let max = self.state.config.limits.max_connections_per_user;
        let Some(mut slot) = self.state.hub.reserve_user(&identity.user, max) else {
            let failure = Failure::new(
                ErrorCode::LimitExceeded,
                "too many connections for this user",
            );
            self.push(frame::error(id, Some("auth"), None, &failure));
            return Flow::Close(close::POLICY, "too many connections for this user");
        };
        self.state.hub.register(&mut slot, &self.outbox);
        let previous = self.slot.replace(slot);
        drop(previous);
        self.become_identity(identity, id);
        self.state.hub.rename(&self.rooms, &self.outbox);
        self.drop_forbidden_rooms().await;
        Flow::Continue
    }

    /// Publishes through the command core; in a room with history the reply,
    /// with its seq, follows the store's acknowledgement while later commands
    /// go on.
    async fn publish(
        &mut self,
        id: Option<&Id>,
        room: &str,
        data: &RawValue,
    ) -> Result<Body, Reply> {
        let Some(identity) = &self.identity else {
            return Err(Reply::unauthenticated());
        };
        let issuer = Issuer::Client(identity);
        let mut ack = command::publish(&self.state, issuer, Some(&mut self.rate), room, data)
            .await
            .map_err(Reply::Failed)?;
        if let Some(outcome) = ack.now() {
            return outcome
                .map(Body::Published)
                .map_err(|error| Reply::Failed(Failure::from(&error)));
        }
        let metrics = self.state.metrics.clone();
        let room = Some(room.to_owned());
        self.replies
            .hold(id.cloned(), "publish", room, ack, metrics, |published| {
                published
            });
        Err(Reply::Sent)
    }

    /// Sends through the command core; the reply follows when every node has
    /// counted, while later commands go on.
    async fn send(
        &mut self,
        id: Option<&Id>,
        target: Target,
        data: &RawValue,
    ) -> Result<Body, Reply> {
        let issuer = Issuer::Client(self.identity()?);
        let mut ack = command::send(&self.state, issuer, target, data)
            .await
            .map_err(Reply::Failed)?;
        if let Some(outcome) = ack.now() {
            return outcome
                .map(Body::Delivered)
                .map_err(|error| Reply::Failed(Failure::from(&error)));
        }
        let metrics = self.state.metrics.clone();
        self.replies
            .hold(id.cloned(), "send", None, ack, metrics, Delivered::from);
        Err(Reply::Sent)
    }

    async fn presence(
        &mut self,
        room: &str,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<Body, Reply> {
        let issuer = Issuer::Client(self.identity()?);
        command::presence(&self.state, issuer, room, cursor.as_deref(), limit)
            .await
            .map(Body::Presence)
            .map_err(Reply::Failed)
    }

    async fn refresh(&mut self, token: &str) -> Result<Body, Reply> {
        let current = self.identity()?;
        if current.anonymous {
            return Err(Reply::Failed(Failure::bad_request(
                "anonymous connection: use auth",
            )));
        }
        let identity = match self.state.auth.verify(token) {
            Ok(identity) => identity,
            Err(error) => {
                self.state.metrics.auth_failure(error.kind_label());
                return Err(Reply::failed(ErrorCode::Unauthorized, error.to_string()));
            }
        };
        if identity.user != current.user {
            return Err(Reply::failed(
                ErrorCode::Unauthorized,
                "the token is for another user",
            ));
        }
        let exp = identity.expires_at;
        self.set_deadline(self.expiry(&identity));
        self.identity = Some(identity);
        self.drop_forbidden_rooms().await;
        Ok(Body::Refreshed(exp))
    }
}

/// What a successful command's `ok` reply adds.
enum Body {
    Empty,
    Published(Published),
    Delivered(Gathered),
    Presence(crate::broker::PresencePage),
    /// The refreshed token's `exp`, when it has one.
    Refreshed(Option<u64>),
}

/// A `send` reply's fields: `partial` only when a node did not answer.
#[derive(serde::Serialize)]
struct Delivered {
    delivered: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    partial: bool,
}

impl From<Gathered> for Delivered {
    fn from(gathered: Gathered) -> Self {
        Self {
            delivered: gathered.count,
            partial: gathered.partial,
        }
    }
}

/// A `refresh` reply's fields.
#[derive(serde::Serialize)]
struct Refreshed {
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

/// Why a command produced no `ok` reply.
enum Reply {
    /// The reply was queued already (a join reply, ordered with the room's
    /// messages), or follows later (a `send`'s count, a stored message's seq).
    Sent,
    Failed(Failure),
}

impl Reply {
    fn failed(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Failed(Failure::new(code, message))
    }

    fn unauthenticated() -> Self {
        Self::failed(ErrorCode::Unauthorized, "authenticate first")
    }
}

#[cfg(test)]
mod tests;
