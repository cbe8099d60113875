//! One WebSocket connection: a reader loop that runs the client's commands in
//! order, and a writer task that drains the connection's bounded queue and sends
//! heartbeats. A `send`, and a `publish` to a room with history, is handed to
//! the broker in order too, but its reply waits for every node's count or the
//! store's acknowledgement while the reader goes on (up to [`MAX_IN_FLIGHT`]
//! at a time), so one connection is not held to one round trip per message.
//!
//! The reader owns the session's state (identity, joined rooms, rate limit,
//! error budget) and is the only one to change it, so no lock guards it. Frames
//! reach the writer only through the [`Outbox`]; when either side ends, it asks
//! the outbox to close, which stops the other.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, Sink, SinkExt as _, Stream, StreamExt as _};
use serde_json::value::RawValue;
use tracing::debug;

use crate::app::AppState;
use crate::auth::Identity;
use crate::broker::{BrokerError, Pending, PresencePage, Recovery};
use crate::hub::{Outbox, UserSlot};
use crate::metrics::Metrics;
use crate::protocol::{self, Command, ErrorCode, Failure, Id, Since, Target, close, frame};

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
}

/// A token bucket: `rate` per second, at most `burst` at once.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst);
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Client-fault errors within the last 60 seconds.
struct ErrorBudget {
    max: usize,
    times: std::collections::VecDeque<Instant>,
}

impl ErrorBudget {
    /// Records an error; returns whether the budget is exceeded.
    fn exceeded(&mut self) -> bool {
        let now = Instant::now();
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() > self.max
    }
}

/// What the reader loop should do after a frame.
enum Flow {
    Continue,
    Close(u16, &'static str),
}

struct Session {
    state: Arc<AppState>,
    outbox: Arc<Outbox>,
    identity: Option<Identity>,
    /// The identity's user id as a JSON string literal, for `from` fields.
    from_json: String,
    slot: Option<UserSlot>,
    rooms: HashSet<String>,
    rate: RateLimit,
    errors: ErrorBudget,
    /// When the connection must authenticate or re-authenticate by.
    deadline: Option<tokio::time::Instant>,
    /// Replies still on their way (a `send`'s count, a stored `publish`'s
    /// acknowledgement): the reader goes on with the next command meanwhile.
    /// Created at the first one; idle connections hold none.
    replies: Option<Replies>,
}

/// Replies in flight; each resolves to its frame, or to nothing (a command
/// without `id` that succeeded).
type Replies = FuturesUnordered<BoxFuture<'static, Option<String>>>;

/// Replies a connection may have in flight before it stops reading commands.
const MAX_IN_FLIGHT: usize = 256;

/// The next reply that arrived; pending while none is in flight.
async fn next_reply(replies: &mut Option<Replies>) -> Option<String> {
    match replies {
        Some(replies) if !replies.is_empty() => match replies.next().await {
            Some(reply) => reply,
            None => std::future::pending().await,
        },
        _ => std::future::pending().await,
    }
}

/// The reply to a command whose outcome arrives later: `ok` with `extra(value)`
/// when it has an `id`, or its error (counted like any other, never a client fault).
fn deferred<T: Send + 'static>(
    id: Option<Id>,
    op: &'static str,
    room: Option<String>,
    outcome: Pending<T>,
    metrics: Arc<Metrics>,
    extra: impl FnOnce(T) -> String + Send + 'static,
) -> BoxFuture<'static, Option<String>> {
    async move {
        match outcome.await {
            Ok(value) => id.map(|id| frame::ok(&id, &extra(value))),
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
    }
    .boxed()
}

/// Milliseconds since the process's clock origin, for the heartbeat.
fn millis(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

/// Runs one connection to its end. `socket` is the upgraded WebSocket in
/// production and a pair of channels in unit tests.
pub async fn run<S>(socket: S, state: Arc<AppState>, start: Start)
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
    } = start;
    let config = &state.config;
    let key = state.hub.next_key();
    let outbox = Outbox::new(
        key,
        conn_id.clone(),
        config.limits.send_queue,
        tokio_util::sync::CancellationToken::new(),
        state.metrics.clone(),
    );
    state.metrics.connections.inc();
    state.metrics.connections_accepted.inc();
    let origin = Instant::now();
    let last_heard = Arc::new(AtomicU64::new(0));
    let (sink, mut stream) = socket.split();
    // No span per connection: at tens of thousands of connections their
    // registry entries cost more than the rare writer log line gains.
    let writer = tokio::spawn(write_loop(
        sink,
        outbox.clone(),
        state.clone(),
        origin,
        last_heard.clone(),
    ));
    let mut session = Session {
        rate: RateLimit::new(config.limits.publish_rate, config.limits.publish_burst),
        errors: ErrorBudget {
            max: config.limits.max_errors_per_minute as usize,
            times: Default::default(),
        },
        state: state.clone(),
        outbox: outbox.clone(),
        identity: None,
        from_json: String::new(),
        slot: None,
        rooms: HashSet::new(),
        deadline: None,
        replies: None,
    };
    state.hub.attach(&outbox);
    match identity {
        Some(identity) => {
            let mut slot = slot;
            if let Some(slot) = slot.as_mut() {
                state.hub.register(slot, &outbox);
            }
            session.slot = slot;
            session.become_identity(identity, None);
        }
        None => {
            session.deadline = Some(tokio::time::Instant::now() + config.auth.auth_timeout);
        }
    }

    loop {
        let deadline = session.deadline;
        let in_flight = session.replies.as_ref().map_or(0, FuturesUnordered::len);
        let message = tokio::select! {
            biased;
            () = outbox.cancelled().cancelled() => break,
            () = sleep_until(deadline) => {
                outbox.close(close::AUTH_FAILED, if session.identity.is_some() { "token expired" } else { "authentication timed out" });
                break;
            }
            reply = next_reply(&mut session.replies) => {
                if let Some(reply) = reply {
                    session.push(reply);
                }
                continue;
            }
            message = stream.next(), if in_flight < MAX_IN_FLIGHT => message,
        };
        last_heard.store(millis(origin), Ordering::Relaxed);
        let flow = match message {
            None => break,
            Some(Ok(Message::Text(text))) => Box::pin(session.on_text(&text)).await,
            Some(Ok(Message::Binary(_))) => session.on_binary(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
            Some(Ok(Message::Close(_))) => break,
            Some(Err(error)) => on_read_error(error),
        };
        if let Flow::Close(code, reason) = flow {
            outbox.close(code, reason);
            break;
        }
    }

    // The client is gone or being closed: leave every room, then let the writer
    // send the close frame.
    outbox.close(close::NORMAL, "");
    let user = outbox.user();
    for room in std::mem::take(&mut session.rooms) {
        state.hub.leave(&room, key).await;
        announce(&state, &room, || {
            frame::left(&room, &user, &conn_id, "disconnect")
        })
        .await;
    }
    state.hub.detach(&outbox);
    drop(session);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    state.metrics.connections.dec();
    drop(permit);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Maps a read error to the close code RFC 6455 and docs/protocol.md give it.
fn on_read_error(error: axum::Error) -> Flow {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Flow::Close(close::TOO_BIG, "message too big"),
        Some(tungstenite::Error::Utf8(_)) => Flow::Close(close::INVALID_UTF8, "invalid UTF-8"),
        Some(tungstenite::Error::Protocol(_)) => Flow::Close(close::PROTOCOL, "protocol error"),
        other => {
            debug!(error = ?other, "connection read failed");
            Flow::Close(close::NORMAL, "")
        }
    }
}

/// Drains the outbox to the socket, sends heartbeats, and sends the close frame.
async fn write_loop<S>(
    mut sink: futures::stream::SplitSink<S, Message>,
    outbox: Arc<Outbox>,
    state: Arc<AppState>,
    origin: Instant,
    last_heard: Arc<AtomicU64>,
) where
    S: Sink<Message, Error = axum::Error> + Send,
{
    let heartbeat = state.config.limits.heartbeat;
    let timeout = state.config.limits.heartbeat_timeout.as_millis() as u64;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            batch = outbox.next_batch() => {
                let Some(batch) = batch else { break };
                // Everything queued goes out in one flush.
                for frame in batch {
                    if sink.feed(Message::Text(frame)).await.is_err() {
                        outbox.shut();
                        outbox.close(close::NORMAL, "");
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    outbox.shut();
                    outbox.close(close::NORMAL, "");
                    return;
                }
            }
            _ = ticker.tick() => {
                if millis(origin).saturating_sub(last_heard.load(Ordering::Relaxed)) > timeout {
                    outbox.close(close::INTERNAL, "heartbeat timeout");
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    outbox.close(close::NORMAL, "");
                    return;
                }
            }
        }
    }
    // Frames queued before the close was decided still go out first (a `left` or
    // `reconnect` event, an error reply), except for a slow consumer.
    let rest = outbox.shut();
    if let Some((code, reason)) = outbox.closing() {
        if code != close::TRY_AGAIN_LATER {
            for frame in rest {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Session {
    /// Takes `identity` as the connection's and sends the welcome frame.
    fn become_identity(&mut self, identity: Identity, id: Option<&Id>) {
        self.from_json = protocol::json_str(&identity.user);
        self.outbox.set_user(&identity.user);
        self.deadline = self.expiry(&identity);
        let config = &self.state.config;
        let welcome = frame::welcome(
            id,
            &self.outbox.id,
            &identity.user,
            self.state.hub.node(),
            config.limits.heartbeat.as_millis() as u64,
        );
        self.identity = Some(identity);
        self.push(welcome);
    }

    /// When a connection holding `identity` must close with 4001: its `exp` plus
    /// the leeway, as a timer deadline; `None` when the token never expires.
    fn expiry(&self, identity: &Identity) -> Option<tokio::time::Instant> {
        self.state.auth.deadline(identity).map(|deadline| {
            tokio::time::Instant::now() + Duration::from_secs(deadline.saturating_sub(unix_now()))
        })
    }

    fn push(&self, frame: String) {
        self.outbox.push(Utf8Bytes::from(frame));
    }

    /// Holds a reply that arrives later; the reader loop queues it then.
    fn defer(&mut self, reply: BoxFuture<'static, Option<String>>) {
        self.replies
            .get_or_insert_with(FuturesUnordered::new)
            .push(reply);
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

    /// Sends an error reply and counts it against the error budget.
    fn fail(
        &mut self,
        id: Option<&Id>,
        op: Option<&str>,
        room: Option<&str>,
        failure: Failure,
    ) -> Flow {
        self.state.metrics.client_error(failure.code.as_str());
        self.push(frame::error(id, op, room, &failure));
        if failure.code.is_client_fault() && self.errors.exceeded() {
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
            Command::Ping => Ok(String::new()),
        };
        match result {
            Ok(extra) => {
                if let Some(id) = id {
                    self.push(frame::ok(id, &extra));
                }
                Flow::Continue
            }
            Err(Reply::Sent) => Flow::Continue,
            Err(Reply::Failed(failure)) => self.fail(id, Some(op), parsed.room, failure),
        }
    }

    fn identity(&self) -> Result<&Identity, Reply> {
        self.identity.as_ref().ok_or_else(|| {
            Reply::Failed(Failure::new(ErrorCode::Unauthorized, "authenticate first"))
        })
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
                self.push(frame::error(id, Some("auth"), None, &failure));
                return if anonymous {
                    Flow::Continue
                } else {
                    Flow::Close(close::AUTH_FAILED, "authentication failed")
                };
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

    /// Leaves every room the current identity may not join, then tells the
    /// connection with a `left` event.
    async fn drop_forbidden_rooms(&mut self) {
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
            let left = frame::left(&room, &user, &self.outbox.id, "forbidden");
            announce(&self.state, &room, || left.clone()).await;
            self.push(left);
        }
    }

    async fn join(
        &mut self,
        id: Option<&Id>,
        room: &str,
        since: Option<Since>,
    ) -> Result<String, Reply> {
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
            let reply = |recovery: &Recovery| frame::ok(id, &join_extra(recovery, with_since));
            state
                .hub
                .join_recovering(&*state.broker, room, &self.outbox, since.as_ref(), reply)
                .await
                .map(drop)
        } else {
            // Rooms without history ignore `since` (docs/protocol.md).
            let reply = Utf8Bytes::from(frame::ok(id, ",\"recovered\":false"));
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
                    announce(&state, room, || frame::joined(room, &user, &self.outbox.id)).await;
                }
                Err(Reply::Sent)
            }
            Err(error) => Err(Reply::Failed(Failure::from(&error))),
        }
    }

    async fn leave(&mut self, room: &str) -> Result<String, Reply> {
        if !self.rooms.remove(room) {
            return Err(Reply::failed(
                ErrorCode::NotMember,
                format!("not a member of {room}"),
            ));
        }
        self.state.hub.leave(room, self.outbox.key).await;
        let user = self.outbox.user();
        announce(&self.state, room, || {
            frame::left(room, &user, &self.outbox.id, "leave")
        })
        .await;
        Ok(String::new())
    }

    /// Publishes; in a room with history the message is handed to the broker in
    /// command order and the reply, with its seq, follows the acknowledgement
    /// while later commands go on.
    async fn publish(
        &mut self,
        id: Option<&Id>,
        room: &str,
        data: &RawValue,
    ) -> Result<String, Reply> {
        let identity = self.identity()?;
        if !identity.can_publish(room) {
            return Err(Reply::failed(
                ErrorCode::Forbidden,
                format!("not allowed to publish to {room}"),
            ));
        }
        let namespace = self.state.config.namespaces.for_room(room);
        if !namespace.client_publish {
            return Err(Reply::failed(
                ErrorCode::Forbidden,
                "only backends publish in this namespace",
            ));
        }
        let history = namespace.history_size > 0;
        if !self.rate.allow() {
            return Err(Reply::failed(
                ErrorCode::RateLimited,
                "publish rate over the limit",
            ));
        }
        let frame = frame::message(room, data, &self.from_json);
        self.state.metrics.messages_in.inc();
        let broker = &self.state.broker;
        let failed = |error: BrokerError| Reply::Failed(Failure::from(&error));
        if history {
            let storing = broker
                .start_publish_stored(room, frame)
                .await
                .map_err(failed)?;
            let reply = deferred(
                id.cloned(),
                "publish",
                Some(room.to_owned()),
                storing,
                self.state.metrics.clone(),
                |seq| format!(",\"seq\":{seq}"),
            );
            self.defer(reply);
            Err(Reply::Sent)
        } else {
            broker.publish(room, frame).await.map_err(failed)?;
            Ok(String::new())
        }
    }

    /// Hands the direct message to the broker, in command order, then gathers
    /// the count in the background: the reply follows when every node answered,
    /// while later commands go on.
    async fn send(
        &mut self,
        id: Option<&Id>,
        target: Target,
        data: &RawValue,
    ) -> Result<String, Reply> {
        let identity = self.identity()?;
        if !identity.send {
            return Err(Reply::failed(
                ErrorCode::Forbidden,
                "direct messages need the send claim",
            ));
        }
        let frame = frame::direct(data, &self.from_json);
        let counting = self
            .state
            .broker
            .start_send(target, frame)
            .await
            .map_err(|error| Reply::Failed(Failure::from(&error)))?;
        let reply = deferred(
            id.cloned(),
            "send",
            None,
            counting,
            self.state.metrics.clone(),
            |gathered| {
                if gathered.partial {
                    format!(",\"delivered\":{},\"partial\":true", gathered.count)
                } else {
                    format!(",\"delivered\":{}", gathered.count)
                }
            },
        );
        self.defer(reply);
        Err(Reply::Sent)
    }

    async fn presence(
        &mut self,
        room: &str,
        cursor: Option<String>,
        limit: Option<usize>,
    ) -> Result<String, Reply> {
        let identity = self.identity()?;
        if !identity.can_join(room) {
            return Err(Reply::failed(
                ErrorCode::Forbidden,
                format!("not allowed to see {room}"),
            ));
        }
        if !self.state.config.namespaces.for_room(room).presence {
            return Err(Reply::failed(
                ErrorCode::NotSupported,
                "this room's namespace keeps no presence",
            ));
        }
        let after = cursor
            .as_deref()
            .map(protocol::decode_cursor)
            .transpose()
            .map_err(Reply::Failed)?;
        let max = self.state.config.limits.max_page_size;
        let limit = limit.unwrap_or(max).min(max);
        let page = self
            .state
            .broker
            .presence(room, after, limit)
            .await
            .map_err(|error| Reply::Failed(Failure::from(&error)))?;
        Ok(presence_extra(&page))
    }

    async fn refresh(&mut self, token: &str) -> Result<String, Reply> {
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
        let extra = identity
            .expires_at
            .map(|exp| format!(",\"exp\":{exp}"))
            .unwrap_or_default();
        self.deadline = self.expiry(&identity);
        self.identity = Some(identity);
        self.drop_forbidden_rooms().await;
        Ok(extra)
    }
}

/// Publishes a `joined` or `left` event to the room's members when its
/// namespace announces them. Best effort: the membership change stands either way.
async fn announce(state: &AppState, room: &str, event: impl FnOnce() -> String) {
    if state.config.namespaces.for_room(room).join_leave
        && let Err(error) = state.broker.publish(room, event()).await
    {
        debug!(%error, room, "join/leave event not published");
    }
}

/// The members a join reply adds in a room with history: the position, and
/// with `since` the recovery outcome and the missed messages inline.
fn join_extra(recovery: &Recovery, with_since: bool) -> String {
    let mut extra = String::from(",\"epoch\":");
    protocol::push_json_str(&mut extra, &recovery.epoch);
    extra.push_str(&format!(",\"seq\":{}", recovery.seq));
    if with_since {
        extra.push_str(if recovery.recovered {
            ",\"recovered\":true"
        } else {
            ",\"recovered\":false"
        });
        extra.push_str(",\"missed\":[");
        for (i, (_, message)) in recovery.missed.iter().enumerate() {
            if i > 0 {
                extra.push(',');
            }
            extra.push_str(message);
        }
        extra.push(']');
    }
    extra
}

/// The members a presence reply adds: `members`, `next` unless this is the
/// last page, and `partial` when a node did not answer.
pub(crate) fn presence_extra(page: &PresencePage) -> String {
    let members = serde_json::to_string(&page.members).unwrap_or_else(|_| "[]".into());
    let mut extra = format!(",\"members\":{members}");
    if page.more
        && let Some(last) = page.members.last()
    {
        extra.push_str(",\"next\":");
        protocol::push_json_str(&mut extra, &protocol::encode_cursor(&last.user, &last.conn));
    }
    if page.partial {
        extra.push_str(",\"partial\":true");
    }
    extra
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
}

#[cfg(test)]
mod tests;
