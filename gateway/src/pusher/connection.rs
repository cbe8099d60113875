//! One Pusher client connection: the admission decisions at `/app/{key}`, the
//! reader loop that runs the client's events in order, and the writer that
//! drains the connection's outbox.
//!
//! pusher-js cannot see an HTTP status, so every refusal upgrades first, then
//! sends `pusher:error` and closes with its code: 4001 for an unknown key,
//! 4007/4008 for a missing or unsupported `protocol`, 4100 over capacity or
//! while draining, 4004 over the app's `max_connections`.
//!
//! The connection is attached to the hub like a native one, so the drain and
//! the node's stats see it. Frames of the native protocol that reach its
//! outbox (the drain's `reconnect`) are dropped by the writer, and a close the
//! native side asks for becomes its Pusher equivalent: 4200 (reconnect now)
//! for a drain or a rebalance.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::debug;

use super::channel::{self, Kind};
use super::protocol::{self, ChannelData, Incoming, Signin, Subscribe, code};
use super::registry::{MAX_HOLD, Place, envelope};
use super::roster::{self, Enlisted};
use super::{App, AppSlot, Pusher, signature};
use crate::app::AppState;
use crate::outbox::Outbox;
use crate::protocol::close;
use crate::ratelimit::RateLimit;
use crate::session::writer::{Dialect, write_loop};
use crate::socket::FrameWriter;

/// Largest `channel_data` of a presence subscription.
const MAX_CHANNEL_DATA_BYTES: usize = 1024;

/// Longest event name.
const MAX_EVENT_NAME_LEN: usize = 200;

/// `/app/{key}`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/app/{key}", get(upgrade))
}

#[derive(Deserialize)]
struct ConnectQuery {
    protocol: Option<String>,
}

/// What admission let in: the app, and the places it holds.
struct Admitted {
    app: Arc<App>,
    _slot: AppSlot,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// A refusal: the code and message of the `pusher:error` sent before closing.
type Refused = (u16, &'static str);

/// The admission decisions, in order: app key, protocol, draining and node
/// capacity, origin, the app's quota.
fn admit(
    state: &AppState,
    pusher: &Pusher,
    key: &str,
    query: &ConnectQuery,
    headers: &HeaderMap,
) -> Result<Admitted, Refused> {
    let app = pusher
        .by_key
        .get(key)
        .cloned()
        .ok_or((code::APP_NOT_FOUND, "App key not in this cluster"))?;
    let version = query
        .protocol
        .as_deref()
        .ok_or((code::NO_PROTOCOL, "No protocol version supplied"))?;
    match version.parse::<u32>() {
        Ok(version)
            if (protocol::MIN_PROTOCOL_VERSION..=protocol::PROTOCOL_VERSION).contains(&version) => {
        }
        _ => {
            return Err((code::UNSUPPORTED_PROTOCOL, "Unsupported protocol version"));
        }
    }
    if state.draining.load(Ordering::Acquire) {
        state.metrics.refused(crate::metrics::Refusal::Draining);
        return Err((code::OVER_CAPACITY, "Draining: reconnect to another node"));
    }
    let permit = state.connections.clone().try_acquire_owned().map_err(|_| {
        state.metrics.refused(crate::metrics::Refusal::Capacity);
        (code::OVER_CAPACITY, "Over capacity")
    })?;
    match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
        Some(Ok(origin)) if state.origins.allows(origin) => {}
        None if !state.config.require_origin => {}
        _ => return Err((code::UNAUTHORIZED, "Origin not allowed")),
    }
    let slot = app
        .admit()
        .ok_or((code::OVER_QUOTA, "Over the app's connection quota"))?;
    Ok(Admitted {
        app,
        _slot: slot,
        _permit: permit,
    })
}

/// `GET /app/{key}`: upgrade, then either run the connection or send the
/// refusal and close.
async fn upgrade(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    Extension(frames): Extension<FrameWriter>,
    ws: WebSocketUpgrade,
) -> Response {
    let pusher = state.pusher.get().cloned();
    let decision = match &pusher {
        Some(pusher) => admit(&state, pusher, &key, &query, &headers),
        None => Err((code::APP_NOT_FOUND, "Pusher is not served here")),
    };
    let max_message = state.config.limits.max_message_bytes;
    let tracker = state.sessions.token();
    crate::app::websocket(ws, max_message).on_upgrade(move |socket| async move {
        match (decision, pusher) {
            (Ok(admitted), Some(pusher)) => run(socket, frames, state, pusher, admitted).await,
            (Err((code, message)), _) => refuse(socket, code, message).await,
            (Ok(_), None) => {}
        }
        drop(tracker);
    })
}

/// Sends `pusher:error` and closes with its code.
async fn refuse(mut socket: WebSocket, code: u16, message: &'static str) {
    let _ = socket
        .send(Message::Text(protocol::error(Some(code), message).into()))
        .await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(message),
        })))
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// One subscription of the connection.
struct Subscription {
    kind: Kind,
    /// Presence: the member's user id.
    user_id: Option<String>,
    /// The connection's entry in the channel's roster (none on a user's own
    /// channel, which lists no subscribers).
    roster: Option<Enlisted>,
}

/// A connection's entry in a channel's roster, made by a subscribe.
struct Joined {
    enlisted: Enlisted,
    /// Presence: the member's user id and info.
    member: Option<(String, Box<RawValue>)>,
    /// Presence: the channel's members, this one included.
    members: Option<Vec<roster::Member>>,
    /// Presence: whether this connection announces the member.
    announce: bool,
}

/// The member list of a presence `subscription_succeeded`.
fn listing(members: &[roster::Member]) -> protocol::Presence<'_> {
    protocol::Presence {
        ids: members.iter().map(|m| m.user_id.as_str()).collect(),
        hash: members
            .iter()
            .map(|m| (m.user_id.as_str(), &*m.user_info))
            .collect(),
        count: members.len(),
    }
}

/// The user a connection signed in as (`pusher:signin`).
struct SignedIn {
    id: String,
    /// The connection's entry among the user's connections, which
    /// `terminate_connections` closes.
    roster: Enlisted,
}

/// The reader's state; only the reader changes it.
struct Connection {
    state: Arc<AppState>,
    pusher: Arc<Pusher>,
    app: Arc<App>,
    outbox: Arc<Outbox>,
    socket_id: Arc<str>,
    subscriptions: HashMap<String, Subscription>,
    user: Option<SignedIn>,
    /// Client events (`max_client_events_per_second`, burst of the same).
    client_events: RateLimit,
    /// Every event pays its cost from the native command budget
    /// (`limits.command_rate`, `limits.command_burst`): see [`cost`].
    commands: RateLimit,
}

/// What an event from the client costs from the command budget, in the
/// native protocol's units (docs/security.md): 1 for most, 2 for a signed
/// subscribe (a signature check) or one to a cache channel (a storage read,
/// as a native join with `since`), 5 for anything on a presence channel
/// (every node answers a gathering), 10 for a sign-in.
fn cost(event: &str, channel: Option<&str>) -> u32 {
    let channel = channel.unwrap_or_default();
    match event {
        "pusher:signin" => 10,
        "pusher:subscribe" | "pusher:unsubscribe" if Kind::of(channel) == Kind::Presence => 5,
        "pusher:subscribe" if Kind::of(channel).needs_auth() || channel::is_cache(channel) => 2,
        _ => 1,
    }
}

/// Runs an admitted connection to its end.
async fn run(
    socket: WebSocket,
    frames: FrameWriter,
    state: Arc<AppState>,
    pusher: Arc<Pusher>,
    admitted: Admitted,
) {
    let socket_id = pusher.socket_id();
    let key = state.hub.next_key();
    let conn_id: Arc<str> = Arc::from(format!("{}:pusher-{socket_id}", state.hub.node()));
    let outbox = Outbox::new(
        key,
        conn_id,
        state.config.limits.send_queue,
        state.metrics.clone(),
    );
    state.metrics.connections.inc();
    state.metrics.pusher_connections.inc();
    state.metrics.connections_accepted.inc();
    // Pusher clients cannot recover what they miss: the rebalancer sheds them
    // only with `rebalance.include_unrecoverable`.
    state.hub.attach_unrecoverable(&outbox);
    let (sink, mut stream) = socket.split();
    let writer = {
        let (outbox, state) = (outbox.clone(), state.clone());
        let mut sink = sink;
        tokio::spawn(async move {
            write_loop(&mut sink, &frames, &outbox, &state, &PUSHER).await;
        })
    };
    outbox.push(protocol::connection_established(&socket_id).into());
    let rate = admitted.app.config.max_client_events_per_second;
    let mut connection = Connection {
        state: state.clone(),
        pusher,
        app: admitted.app.clone(),
        outbox: outbox.clone(),
        socket_id,
        subscriptions: HashMap::new(),
        user: None,
        client_events: RateLimit::new(f64::from(rate), rate),
        commands: RateLimit::new(
            state.config.limits.command_rate,
            state.config.limits.command_burst,
        ),
    };
    loop {
        let message = tokio::select! {
            biased;
            () = outbox.closed() => break,
            message = stream.next() => message,
        };
        outbox.heard();
        match message {
            None | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Text(text))) => connection.on_text(&text).await,
            Some(Ok(Message::Binary(_))) => {
                connection.push(protocol::error(None, "Binary frames are not supported"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(error)) => {
                let inner = error.into_inner();
                let code = match inner.downcast_ref::<tungstenite::Error>() {
                    Some(tungstenite::Error::Capacity(_)) => close::TOO_BIG,
                    Some(tungstenite::Error::Utf8(_)) => close::INVALID_UTF8,
                    Some(tungstenite::Error::Protocol(_)) => close::PROTOCOL,
                    other => {
                        debug!(error = ?other, "pusher connection read failed");
                        close::NORMAL
                    }
                };
                outbox.close(code, "");
                break;
            }
        }
    }
    outbox.close(close::NORMAL, "");
    let channels: Vec<String> = connection.subscriptions.keys().cloned().collect();
    for name in channels {
        connection.unsubscribe(&name).await;
    }
    if let Some(user) = connection.user.take() {
        user.roster.leave(&state.hub).await;
    }
    state.hub.detach(&outbox);
    drop(connection);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    state.metrics.pusher_connections.dec();
    state.metrics.connections.dec();
    drop(admitted);
}

impl Connection {
    fn push(&self, frame: String) {
        self.outbox.push(Utf8Bytes::from(frame));
    }

    async fn on_text(&mut self, text: &str) {
        let Ok(incoming) = serde_json::from_str::<Incoming>(text) else {
            self.push(protocol::error(None, "Invalid JSON frame"));
            return;
        };
        let subscribe = matches!(
            incoming.event.as_str(),
            "pusher:subscribe" | "pusher:unsubscribe"
        )
        .then(|| Subscribe::parse(incoming.data))
        .flatten();
        let channel = match &subscribe {
            Some(subscribe) => Some(subscribe.channel.as_str()),
            None => incoming.channel.as_deref(),
        };
        if !self.commands.take(cost(&incoming.event, channel)) {
            self.state.metrics.client_error("rate_limited");
            return self.push(protocol::error(
                Some(code::CLIENT_EVENT_REJECTED),
                "Over limits.command_rate: event dropped",
            ));
        }
        match incoming.event.as_str() {
            "pusher:ping" => self.push(protocol::empty("pusher:pong")),
            "pusher:pong" => {}
            "pusher:subscribe" => match subscribe {
                Some(subscribe) => self.subscribe(subscribe).await,
                None => self.push(protocol::error(None, "pusher:subscribe needs data.channel")),
            },
            "pusher:signin" => self.signin(Signin::parse(incoming.data)).await,
            "pusher:unsubscribe" => {
                if let Some(subscribe) = subscribe {
                    self.unsubscribe(&subscribe.channel).await;
                }
            }
            event if event.starts_with("client-") => {
                self.client_event(event, incoming.channel.as_deref(), incoming.data)
                    .await;
            }
            // Unknown events are ignored, as Pusher does.
            _ => {}
        }
    }

    fn refuse_subscription(&self, channel: &str, status: u16, message: &str) {
        self.state.metrics.client_error("pusher_subscription");
        self.push(protocol::subscription_error(channel, status, message));
    }

    /// `pusher:signin`: a valid signature of the user data makes the
    /// connection that user's (reachable by `sendToUser` and
    /// `terminate_connections`); an invalid one closes it with 4009.
    async fn signin(&mut self, signin: Option<Signin>) {
        let user_id = signin.as_ref().and_then(|signin| {
            let valid = signature::user_auth_is_valid(
                &self.app.config.key,
                &self.app.secret,
                &signin.auth,
                &self.socket_id,
                &signin.user_data,
            );
            valid
                .then(|| protocol::user_id_of(&signin.user_data))
                .flatten()
                .filter(|id| id.len() <= channel::MAX_USER_ID_LEN)
        });
        let (Some(signin), Some(user_id)) = (signin, user_id) else {
            self.state.metrics.auth_failure("pusher_signin");
            self.outbox.close(code::UNAUTHORIZED, "Invalid signin");
            return;
        };
        if let Some(previous) = self.user.take() {
            previous.roster.leave(&self.state.hub).await;
        }
        let room = channel::user_room(&self.app.config.id, &user_id);
        match roster::enlist(&self.state, &room, &self.outbox.id, "-").await {
            Ok(roster) => {
                self.user = Some(SignedIn {
                    id: user_id,
                    roster,
                });
                self.push(protocol::signin_success(&signin.user_data));
            }
            Err(_) => self.push(protocol::error(None, "Sign-in unavailable: try again")),
        }
    }

    /// Subscribes a signed-in connection to its user's own channel.
    async fn subscribe_user_channel(&mut self, name: String, user_id: &str) {
        if self.user.as_ref().is_none_or(|user| user.id != user_id) {
            return self.refuse_subscription(&name, 403, "Sign in as this user first");
        }
        let reply = protocol::subscription_succeeded(&name, None);
        if !self.register(&name, reply, false).await {
            return self.refuse_subscription(&name, 503, "Unavailable");
        }
        self.subscriptions.insert(
            name,
            Subscription {
                kind: Kind::Public,
                user_id: None,
                roster: None,
            },
        );
    }

    /// Where the channel `name` of this connection's app is, for the registry.
    fn place<'a>(&'a self, name: &'a str) -> Place<'a> {
        Place {
            app: &self.app.config.id,
            channel: name,
        }
    }

    /// Enters this connection in the channel's registry, which sends `reply`
    /// once it holds the subscription (and holds the channel's events with
    /// `hold`); `false` when the broker is unavailable.
    async fn register(&self, name: &str, reply: String, hold: bool) -> bool {
        self.pusher
            .registry
            .subscribe(
                &self.state,
                self.place(name),
                &self.socket_id,
                &self.outbox,
                reply,
                hold,
            )
            .await
            .is_ok()
    }

    /// Sends a held subscriber of a cache channel the channel's last event,
    /// or `pusher:cache_miss` when there is none (or it cannot be read in
    /// time, as Sockudo answers a failed read), then the events it held.
    async fn send_cached(&self, name: &str) {
        let key = channel::room(&self.app.config.id, name);
        let kept = tokio::time::timeout(MAX_HOLD, self.state.broker.last(&key)).await;
        let first = match kept {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => protocol::cache_miss(name),
            Ok(Err(error)) => {
                debug!(%error, channel = name, "cache channel read failed");
                protocol::cache_miss(name)
            }
            Err(_) => {
                debug!(channel = name, "cache channel read timed out");
                protocol::cache_miss(name)
            }
        };
        self.pusher
            .registry
            .release(self.place(name), self.outbox.key, Some(first));
    }

    /// A subscribe to a channel the connection is already on changes nothing
    /// and is answered as the first one was, as Sockudo answers it: with the
    /// current member list on a presence channel, and the last event (or
    /// `pusher:cache_miss`) on a cache channel.
    async fn subscribe_again(&self, name: &str) {
        let presence = if Kind::of(name) == Kind::Presence {
            let room = channel::roster(&self.app.config.id, name);
            match roster::gather(&*self.state.broker, &room).await {
                Ok(entries) => Some(roster::members(&entries)),
                Err(_) => return self.refuse_subscription(name, 503, "Unavailable"),
            }
        } else {
            None
        };
        let reply = protocol::subscription_succeeded(name, presence.as_deref().map(listing));
        if channel::is_cache(name)
            && self
                .pusher
                .registry
                .hold(self.place(name), self.outbox.key, reply.clone())
        {
            return self.send_cached(name).await;
        }
        self.push(reply);
    }

    async fn subscribe(&mut self, subscribe: Subscribe) {
        let Subscribe {
            channel: name,
            auth,
            channel_data,
        } = subscribe;
        if let Some(user_id) = channel::user_of(&name) {
            let user_id = user_id.to_owned();
            return self.subscribe_user_channel(name, &user_id).await;
        }
        if !channel::is_valid(&name) {
            return self.refuse_subscription(&name, 400, "Invalid channel name");
        }
        if self.subscriptions.contains_key(&name) {
            return self.subscribe_again(&name).await;
        }
        if self.subscriptions.len() >= self.state.config.limits.max_rooms_per_connection {
            return self.refuse_subscription(
                &name,
                400,
                "Over limits.max_rooms_per_connection subscriptions",
            );
        }
        let kind = Kind::of(&name);
        let data = channel_data.as_deref().filter(|_| kind == Kind::Presence);
        if kind.needs_auth() {
            let valid = auth.as_deref().is_some_and(|auth| {
                signature::channel_auth_is_valid(
                    &self.app.config.key,
                    &self.app.secret,
                    auth,
                    &self.socket_id,
                    &name,
                    data,
                )
            });
            if !valid {
                self.state.metrics.auth_failure("pusher_signature");
                return self.refuse_subscription(&name, 401, "Invalid signature");
            }
        }
        let roster_room = channel::roster(&self.app.config.id, &name);
        let joined = if kind == Kind::Presence {
            let Some(data) = data.filter(|data| data.len() <= MAX_CHANNEL_DATA_BYTES) else {
                return self.refuse_subscription(
                    &name,
                    400,
                    "Presence channels need channel_data of at most 1 KB",
                );
            };
            let Ok(parsed) = serde_json::from_str::<ChannelData>(data) else {
                return self.refuse_subscription(&name, 400, "Invalid channel_data");
            };
            let Some(user_id) = parsed.user_id() else {
                return self.refuse_subscription(&name, 400, "channel_data needs a user_id");
            };
            let info = parsed
                .user_info
                .map(|info| info.to_owned())
                .unwrap_or_else(empty_object);
            match self.join_presence(&roster_room, user_id, info).await {
                Ok(joined) => joined,
                Err((status, message)) => return self.refuse_subscription(&name, status, message),
            }
        } else {
            match roster::enlist(&self.state, &roster_room, &self.socket_id, "-").await {
                Ok(enlisted) => Joined {
                    enlisted,
                    member: None,
                    members: None,
                    announce: false,
                },
                Err(_) => return self.refuse_subscription(&name, 503, "Unavailable"),
            }
        };
        let reply = protocol::subscription_succeeded(&name, joined.members.as_deref().map(listing));
        let cache = channel::is_cache(&name);
        if !self.register(&name, reply, cache).await {
            joined.enlisted.leave(&self.state.hub).await;
            return self.refuse_subscription(&name, 503, "Unavailable");
        }
        if cache {
            self.send_cached(&name).await;
        }
        if let (true, Some((user_id, info))) = (joined.announce, &joined.member) {
            let frame = protocol::member_added(&name, user_id, info);
            self.publish(&name, Some(&self.socket_id.clone()), &frame)
                .await;
        }
        self.subscriptions.insert(
            name,
            Subscription {
                kind,
                user_id: joined.member.map(|(user_id, _)| user_id),
                roster: Some(joined.enlisted),
            },
        );
    }

    /// Enters this connection in a presence channel's roster, then gathers
    /// the roster: its members answer the subscription, and this connection
    /// announces the member when its entry is the user's earliest
    /// (`roster::is_earliest`, which makes one of several connections of a
    /// user joining at once announce it). A new member over the app's
    /// `max_presence_members` leaves again and is refused.
    async fn join_presence(
        &self,
        roster_room: &str,
        user_id: String,
        info: Box<RawValue>,
    ) -> Result<Joined, (u16, &'static str)> {
        const UNAVAILABLE: (u16, &str) = (503, "Unavailable");
        let entry_user = roster::member(&user_id, &info);
        // An entry that is no member makes sure this node holds the roster's
        // subscription before the stamp is taken, so the stamped entry is in
        // place as soon as it is made (not a broker round trip later).
        let placeholder = roster::enlist(&self.state, roster_room, &self.socket_id, "-")
            .await
            .map_err(|_| UNAVAILABLE)?;
        let stamped = {
            // Stamp and entry in one turn, so this node's entries of the user
            // are in the order of their stamps.
            let _turn = self.pusher.join_turn(roster_room, &user_id).lock().await;
            let conn = roster::stamped(self.pusher.stamp(), &self.socket_id);
            roster::enlist(&self.state, roster_room, &conn, &entry_user)
                .await
                .map(|enlisted| (enlisted, conn))
        };
        placeholder.leave(&self.state.hub).await;
        let (enlisted, conn) = stamped.map_err(|_| UNAVAILABLE)?;
        let entries = match roster::gather(&*self.state.broker, roster_room).await {
            Ok(entries) => entries,
            Err(_) => {
                enlisted.leave(&self.state.hub).await;
                return Err(UNAVAILABLE);
            }
        };
        let mut members = roster::members(&entries);
        let others = entries
            .iter()
            .filter(|entry| entry.conn != conn)
            .filter_map(|entry| roster::read_member(&entry.user))
            .any(|member| member.user_id == user_id);
        if !members.iter().any(|member| member.user_id == user_id) {
            // Our own entry, should the gathering have missed it.
            members.push(roster::Member {
                user_id: user_id.clone(),
                user_info: info.clone(),
            });
        }
        if !others && members.len() > self.app.config.max_presence_members {
            enlisted.leave(&self.state.hub).await;
            return Err((403, "Over the app's max_presence_members"));
        }
        Ok(Joined {
            enlisted,
            announce: roster::is_earliest(&entries, &user_id, &conn),
            members: Some(members),
            member: Some((user_id, info)),
        })
    }

    async fn unsubscribe(&mut self, name: &str) {
        let Some(subscription) = self.subscriptions.remove(name) else {
            return;
        };
        let app = self.app.config.id.clone();
        self.pusher
            .registry
            .unsubscribe(&self.state.hub, &app, name, self.outbox.key)
            .await;
        if let Some(roster) = subscription.roster {
            roster.leave(&self.state.hub).await;
        }
        let Some(user_id) = subscription.user_id else {
            return;
        };
        // The member leaves when its last connection, on any node, has left.
        let room = channel::roster(&app, name);
        let Ok(entries) = roster::gather(&*self.state.broker, &room).await else {
            return;
        };
        if !roster::members(&entries)
            .iter()
            .any(|member| member.user_id == user_id)
        {
            let frame = protocol::member_removed(name, &user_id);
            self.publish(name, None, &frame).await;
        }
    }

    /// Publishes `frame` to every subscriber of `channel` in the cluster but
    /// the socket `exclude`.
    async fn publish(&self, channel: &str, exclude: Option<&str>, frame: &str) {
        let room = channel::room(&self.app.config.id, channel);
        let _ = self
            .state
            .broker
            .publish(&room, envelope(exclude, frame))
            .await;
    }

    fn reject_client_event(&self, message: &str) {
        self.state.metrics.client_error("pusher_client_event");
        self.push(protocol::error(Some(code::CLIENT_EVENT_REJECTED), message));
    }

    async fn client_event(&mut self, event: &str, channel: Option<&str>, data: Option<&RawValue>) {
        let Some(channel) = channel else {
            return self.reject_client_event("Client events need a channel");
        };
        let Some(subscription) = self.subscriptions.get(channel) else {
            return self.reject_client_event("Client events need a subscribed channel");
        };
        if !self.app.config.enable_client_messages {
            return self.reject_client_event("Client events are disabled for this app");
        }
        if !subscription.kind.takes_client_events() {
            return self.reject_client_event(
                "Client events are only accepted on private and presence channels",
            );
        }
        if event.len() > MAX_EVENT_NAME_LEN {
            return self.reject_client_event("Event name too long");
        }
        let data = data.map_or("{}", RawValue::get);
        if data.len() > self.app.config.max_event_bytes {
            return self.reject_client_event("Event data over the app's max_event_bytes");
        }
        if !self.client_events.allow() {
            return self.reject_client_event("Client event rate limit reached");
        }
        let Ok(data) = RawValue::from_string(data.to_owned()) else {
            return self.reject_client_event("Invalid event data");
        };
        let frame = protocol::event(event, channel, &data, subscription.user_id.as_deref());
        self.state.metrics.messages_in.inc();
        let socket_id = self.socket_id.clone();
        self.publish(channel, Some(&socket_id), &frame).await;
    }
}

/// `{}`, the `user_info` of a member that gave none.
fn empty_object() -> Box<RawValue> {
    // A literal valid JSON text: this cannot fail.
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| Box::default())
}

/// The Pusher close code of a close the gateway decided: drains and
/// rebalances (1012, 1001) reconnect at once, a slow consumer after a
/// back-off, a dead peer as Pusher's pong timeout, a connection the backend
/// closed (`terminate_connections`, or the native API's `disconnect`) as
/// Sockudo closes terminated connections, 4009.
fn pusher_close(code: u16) -> u16 {
    match code {
        close::RESTART | close::GOING_AWAY => protocol::code::RECONNECT,
        close::DISCONNECTED => protocol::code::UNAUTHORIZED,
        close::TRY_AGAIN_LATER => protocol::code::OVER_CAPACITY,
        close::INTERNAL => protocol::code::PONG_NOT_RECEIVED,
        other => other,
    }
}

/// Whether a queued frame is one of the Pusher protocol's (native frames such
/// as the drain's `reconnect` never reach a Pusher client).
fn is_pusher_frame(frame: &str) -> bool {
    frame.starts_with("{\"event\":")
}

/// How Pusher connections are written to (the native writer's loop, in
/// Pusher's terms): only Pusher frames, and a close in Pusher's codes with its
/// `pusher:error` before it.
const PUSHER: Dialect = Dialect {
    admits: is_pusher_frame,
    heartbeat_timeout: "Pong reply not received",
    close: pusher_closing,
};

/// The Pusher close code for a native `code`, and the `pusher:error` said
/// before a close in Pusher's range (4000–4399).
fn pusher_closing(code: u16, reason: &'static str) -> (u16, Option<Utf8Bytes>) {
    let code = pusher_close(code);
    let error = (4000..4400).contains(&code).then(|| {
        let message = match code {
            protocol::code::RECONNECT => "Reconnect: this node is going away",
            protocol::code::UNAUTHORIZED if reason == "disconnected by the backend" => {
                "You got disconnected by the app."
            }
            _ => reason,
        };
        Utf8Bytes::from(protocol::error(Some(code), message))
    });
    (code, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pusher clients cannot recover what they miss while they reconnect: the
    /// rebalancer may shed them only with `rebalance.include_unrecoverable`.
    #[tokio::test]
    async fn pusher_connections_are_shed_only_when_unrecoverable_ones_may_be() {
        let state = super::super::api::tests::state();
        let served = Served::start(&state).await;
        let url = format!("ws://{}/app/k?protocol=7", served.address);
        let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let established = client.next().await.unwrap().unwrap();
        assert!(
            established
                .to_text()
                .unwrap()
                .contains("pusher:connection_established"),
            "{established:?}"
        );
        let now = Duration::ZERO;
        assert!(state.hub.sheddable(now, false).is_empty());
        assert_eq!(state.hub.sheddable(now, true).len(), 1);
        served.stop().await;
    }

    /// The public router served by the real accept loop on a loopback port.
    struct Served {
        address: std::net::SocketAddr,
        stop: tokio_util::sync::CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Served {
        async fn start(state: &Arc<AppState>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let limits = crate::listener::SocketLimits {
                handshake_timeout: Duration::from_secs(5),
                handshakes: 10,
                sockets: 10,
            };
            let stop = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(crate::listener::serve(
                listener,
                crate::app::public(state.clone()),
                limits,
                state.metrics.clone(),
                stop.clone(),
            ));
            Self {
                address,
                stop,
                task,
            }
        }

        async fn stop(self) {
            self.stop.cancel();
            self.task.await.unwrap();
        }
    }

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// The next text frame from the server.
    async fn next(client: &mut Client) -> String {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), client.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let tungstenite::Message::Text(text) = frame {
                return text.to_string();
            }
        }
    }

    /// Single node, through a real socket: a cache channel's subscriber gets
    /// `subscription_succeeded`, then the last event triggered, or
    /// `pusher:cache_miss` when there is none; subscribing again repeats both.
    #[tokio::test]
    async fn cache_channels_answer_with_their_last_event_or_a_miss() {
        use futures::SinkExt as _;
        use tokio_tungstenite::tungstenite::Message as Frame;

        let state = super::super::api::tests::state();
        state
            .broker
            .keep_last(
                &channel::room("1", "cache-kept"),
                r#"{"event":"score","channel":"cache-kept","data":"2"}"#.to_owned(),
            )
            .await
            .unwrap();
        let served = Served::start(&state).await;
        let url = format!("ws://{}/app/k?protocol=7", served.address);
        let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert!(
            next(&mut client)
                .await
                .contains("pusher:connection_established")
        );
        let subscribe = |name: &str| {
            Frame::text(format!(
                r#"{{"event":"pusher:subscribe","data":{{"channel":"{name}"}}}}"#
            ))
        };
        let succeeded = |name: &str| protocol::subscription_succeeded(name, None);
        let kept = r#"{"event":"score","channel":"cache-kept","data":"2"}"#;
        for _ in 0..2 {
            client.send(subscribe("cache-kept")).await.unwrap();
            assert_eq!(next(&mut client).await, succeeded("cache-kept"));
            assert_eq!(next(&mut client).await, kept);
        }
        client.send(subscribe("cache-none")).await.unwrap();
        assert_eq!(next(&mut client).await, succeeded("cache-none"));
        assert_eq!(next(&mut client).await, protocol::cache_miss("cache-none"));
        client.send(subscribe("plain")).await.unwrap();
        assert_eq!(next(&mut client).await, succeeded("plain"));
        client
            .send(Frame::text(r#"{"event":"pusher:ping"}"#))
            .await
            .unwrap();
        assert_eq!(
            next(&mut client).await,
            protocol::empty("pusher:pong"),
            "no miss on a plain channel"
        );
        served.stop().await;
    }

    /// Drains and rebalances reconnect at once (4200); Pusher's own codes pass.
    #[test]
    fn native_closes_map_to_pusher_codes() {
        assert_eq!(pusher_close(close::RESTART), 4200);
        assert_eq!(pusher_close(close::GOING_AWAY), 4200);
        assert_eq!(pusher_close(close::TRY_AGAIN_LATER), 4100);
        assert_eq!(pusher_close(close::INTERNAL), 4201);
        assert_eq!(pusher_close(close::DISCONNECTED), 4009);
        assert_eq!(pusher_close(4001), 4001);
        assert_eq!(pusher_close(close::NORMAL), close::NORMAL);
    }

    /// Gathering and signature checks cost more than a ping.
    #[test]
    fn events_cost_what_they_make_the_cluster_do() {
        assert_eq!(cost("pusher:ping", None), 1);
        assert_eq!(cost("pusher:subscribe", Some("news")), 1);
        assert_eq!(cost("pusher:subscribe", Some("private-x")), 2);
        assert_eq!(cost("pusher:subscribe", Some("cache-x")), 2);
        assert_eq!(cost("pusher:subscribe", Some("presence-cache-x")), 5);
        assert_eq!(cost("pusher:subscribe", Some("presence-x")), 5);
        assert_eq!(cost("pusher:unsubscribe", Some("presence-x")), 5);
        assert_eq!(cost("pusher:signin", None), 10);
        assert_eq!(cost("client-x", Some("presence-x")), 1);
    }

    /// Native frames never reach a Pusher client.
    #[test]
    fn only_pusher_frames_are_written() {
        assert!(is_pusher_frame(&protocol::empty("pusher:pong")));
        assert!(!is_pusher_frame(r#"{"type":"reconnect","after_ms":10}"#));
    }
}
