//! The HTTP API the Pusher server SDKs call, on the admin listener:
//! triggering events (one or a batch), and reading channels and their users.
//!
//! Every request is signed as Pusher specifies: `auth_key` (the app key),
//! `auth_timestamp` (within [`MAX_CLOCK_SKEW_SECONDS`] of ours),
//! `auth_version` `1.0`, `body_md5` (required with a body; the Python SDK also
//! sends the MD5 of the empty body on GETs, the Node SDK none) and
//! `auth_signature`, the HMAC-SHA256 of `METHOD\npath\nsorted query` under the
//! app secret. Failures are answered with Pusher's statuses and a plain-text
//! reason, which both SDKs surface as the error's body.
//!
//! Events reach the cluster like client events, through the broker, in the
//! order of the request; `socket_id` names the one connection to skip. An
//! event on a cache channel is kept as the channel's last first (then
//! published), so a subscriber that joins once it is published gets it or a
//! later one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::channel::{self, Kind};
use super::registry::envelope;
use super::{App, protocol, roster, signature};
use crate::app::AppState;

/// How far `auth_timestamp` may be from the server's clock.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 600;

/// Most channels one event goes to (Pusher's limit).
pub const MAX_CHANNELS_PER_EVENT: usize = 100;

/// Most events in one batch (Pusher's limit).
pub const MAX_BATCH_EVENTS: usize = 10;

/// Longest event name (Pusher's limit).
const MAX_EVENT_NAME_LEN: usize = 200;

/// The routes, under `/apps/{id}`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/apps/{id}/events", post(trigger))
        .route("/apps/{id}/batch_events", post(trigger_batch))
        .route("/apps/{id}/channels", get(channels))
        .route("/apps/{id}/channels/{name}", get(channel_info))
        .route("/apps/{id}/channels/{name}/users", get(users))
        .route(
            "/apps/{id}/users/{user_id}/terminate_connections",
            post(terminate_connections),
        )
}

/// A refused request: its status and Pusher-style plain-text reason.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The app of `/apps/{id}` when the request is signed by it.
fn authenticate(
    state: &AppState,
    id: &str,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
) -> Result<Arc<App>, ApiError> {
    let pusher = state
        .pusher
        .get()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Pusher is not served here"))?;
    let app = pusher
        .by_id
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Unknown app {id}")))?;
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let failed = |message: &str| {
        state.metrics.auth_failure("pusher_api");
        ApiError::unauthorized(message)
    };
    if param("auth_key") != Some(app.config.key.as_str()) {
        return Err(failed("Unknown auth_key"));
    }
    let timestamp = param("auth_timestamp")
        .and_then(|value| value.parse::<u64>().ok())
        .ok_or_else(|| failed("Missing or invalid auth_timestamp"))?;
    if timestamp.abs_diff(unix_now()) > MAX_CLOCK_SKEW_SECONDS {
        return Err(failed(
            "Timestamp expired: given auth_timestamp is more than 600 s from the server's time",
        ));
    }
    if param("auth_version") != Some("1.0") {
        return Err(failed("auth_version must be 1.0"));
    }
    match param("body_md5") {
        Some(md5) if !signature::equal(md5, &signature::body_md5(body)) => {
            return Err(failed("body_md5 does not match the body"));
        }
        None if !body.is_empty() => return Err(failed("Missing body_md5")),
        _ => {}
    }
    let given = param("auth_signature").ok_or_else(|| failed("Missing auth_signature"))?;
    let expected = signature::sign(
        &app.secret,
        &signature::request_message(method.as_str(), path, query),
    );
    if !signature::equal(given, &expected) {
        return Err(failed(&format!(
            "Invalid signature: you should have sent HmacSHA256Hex({:?}, your_secret_key)",
            signature::request_message(method.as_str(), path, query)
        )));
    }
    Ok(app)
}

/// A request signed by the app of `/apps/{id}`: what every route of this API
/// extracts, so none can skip the check. The body is read (within
/// `limits.max_http_body_bytes`) and signed only on a POST; a GET is signed
/// as having none.
struct Signed {
    app: Arc<App>,
    query: Vec<(String, String)>,
    body: Bytes,
}

impl FromRequest<Arc<AppState>> for Signed {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Path(params) = Path::<BTreeMap<String, String>>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(query) = Query::<Vec<(String, String)>>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = if parts.method == Method::POST {
            read_body(state, body)
                .await
                .map_err(IntoResponse::into_response)?
        } else {
            Bytes::new()
        };
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(parts.uri.path(), |OriginalUri(uri)| uri.path());
        let id = params.get("id").map_or("", String::as_str);
        let app = authenticate(state, id, &parts.method, path, &query, &body)
            .map_err(IntoResponse::into_response)?;
        Ok(Self { app, query, body })
    }
}

/// Reads a body within `limits.max_http_body_bytes`.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.config.limits.max_http_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body over {limit} bytes"),
        )
    })
}

/// One event to trigger: `channels` (or `channel`), `name`, `data`, and an
/// optional `socket_id` to skip.
#[derive(Deserialize)]
struct EventBody<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
}

impl EventBody<'_> {
    /// Checks the event against Pusher's and the app's limits; returns its channels.
    fn check(&self, app: &App) -> Result<Vec<&str>, ApiError> {
        let channels: Vec<&str> = match (&self.channels, &self.channel) {
            (Some(channels), _) => channels.iter().map(String::as_str).collect(),
            (None, Some(channel)) => vec![channel.as_str()],
            (None, None) => return Err(ApiError::bad_request("Missing channels")),
        };
        if channels.is_empty() || channels.len() > MAX_CHANNELS_PER_EVENT {
            return Err(ApiError::bad_request(format!(
                "An event goes to 1 to {MAX_CHANNELS_PER_EVENT} channels"
            )));
        }
        // A user's own channel is where `sendToUser` sends.
        let valid = |name: &&str| channel::is_valid(name) || channel::user_of(name).is_some();
        if let Some(invalid) = channels.iter().find(|name| !valid(name)) {
            return Err(ApiError::bad_request(format!(
                "Invalid channel name {invalid:?}"
            )));
        }
        if self.name.is_empty() || self.name.len() > MAX_EVENT_NAME_LEN {
            return Err(ApiError::bad_request(format!(
                "Event names are 1 to {MAX_EVENT_NAME_LEN} characters"
            )));
        }
        let size = self.data.get().len();
        let limit = app.config.max_event_bytes;
        if size > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Event data of {size} bytes is over the app's max_event_bytes ({limit})"),
            ));
        }
        if let Some(socket_id) = &self.socket_id
            && !is_socket_id(socket_id)
        {
            return Err(ApiError::bad_request(format!(
                "Invalid socket_id {socket_id:?}"
            )));
        }
        Ok(channels)
    }
}

/// Whether `text` has the form of a socket id, `\d+\.\d+`.
fn is_socket_id(text: &str) -> bool {
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    text.split_once('.')
        .is_some_and(|(left, right)| digits(left) && digits(right))
}

/// Publishes one checked event to each of its channels, in order.
async fn publish(
    state: &AppState,
    app: &App,
    event: &EventBody<'_>,
    channels: &[&str],
) -> Result<(), ApiError> {
    for name in channels {
        let frame = protocol::event(&event.name, name, event.data, None);
        let room = channel::room(&app.config.id, name);
        if channel::is_cache(name) {
            state
                .broker
                .keep_last(&room, frame.clone())
                .await
                .map_err(unavailable)?;
        }
        state
            .broker
            .publish(&room, envelope(event.socket_id.as_deref(), &frame))
            .await
            .map_err(unavailable)?;
        state.metrics.messages_in.inc();
    }
    Ok(())
}

/// An empty JSON object, the answer to a trigger.
#[derive(Serialize)]
struct Empty {}

/// `POST /apps/{id}/events` → `{}`.
async fn trigger(
    State(state): State<Arc<AppState>>,
    Signed { app, body, .. }: Signed,
) -> ApiResult<Empty> {
    let event: EventBody = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("Invalid event: {error}")))?;
    let channels = event.check(&app)?;
    publish(&state, &app, &event, &channels).await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<EventBody<'a>>,
}

/// `POST /apps/{id}/batch_events` → `{}`: every event is checked before the
/// first is published, and they are published in order.
async fn trigger_batch(
    State(state): State<Arc<AppState>>,
    Signed { app, body, .. }: Signed,
) -> ApiResult<Empty> {
    let batch: BatchBody = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("Invalid batch: {error}")))?;
    if batch.batch.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(format!(
            "A batch holds at most {MAX_BATCH_EVENTS} events"
        )));
    }
    let checked = batch
        .batch
        .iter()
        .map(|event| event.check(&app))
        .collect::<Result<Vec<_>, _>>()?;
    for (event, channels) in batch.batch.iter().zip(&checked) {
        publish(&state, &app, event, channels).await?;
    }
    Ok(Json(Empty {}))
}

/// The attributes `info=` asks for.
fn info_of(query: &[(String, String)]) -> Vec<String> {
    query
        .iter()
        .filter(|(key, _)| key == "info")
        .flat_map(|(_, value)| value.split(','))
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

fn unavailable(error: crate::broker::BrokerError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

#[derive(Serialize)]
struct ChannelsReply {
    channels: BTreeMap<String, ChannelSummary>,
}

#[derive(Serialize)]
struct ChannelSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_count: Option<usize>,
}

/// `GET /apps/{id}/channels?filter_by_prefix=&info=user_count`: the occupied
/// channels across the cluster.
async fn channels(
    State(state): State<Arc<AppState>>,
    Signed { app, query, .. }: Signed,
) -> ApiResult<ChannelsReply> {
    let prefix = query
        .iter()
        .find(|(key, _)| key == "filter_by_prefix")
        .map_or("", |(_, value)| value.as_str());
    let info = info_of(&query);
    let user_count = info.iter().any(|item| item == "user_count");
    if user_count && !prefix.starts_with("presence-") {
        return Err(ApiError::bad_request(
            "info=user_count needs filter_by_prefix=presence-",
        ));
    }
    let entries = roster::gather(&*state.broker, &roster::directory(&app.config.id))
        .await
        .map_err(unavailable)?;
    let mut channels = BTreeMap::new();
    for entry in entries {
        // Users' own channels are not channels anyone subscribes to.
        let listed = !entry.user.starts_with(channel::USER_CHANNEL_PREFIX);
        if listed && entry.user.starts_with(prefix) && !channels.contains_key(&entry.user) {
            let count = if user_count {
                let room = channel::roster(&app.config.id, &entry.user);
                let members = roster::gather(&*state.broker, &room)
                    .await
                    .map_err(unavailable)?;
                Some(roster::members(&members).len())
            } else {
                None
            };
            channels.insert(entry.user, ChannelSummary { user_count: count });
        }
    }
    Ok(Json(ChannelsReply { channels }))
}

#[derive(Serialize)]
struct ChannelReply {
    occupied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_count: Option<usize>,
}

/// A valid channel name from the path.
fn channel_name(name: &str) -> Result<&str, ApiError> {
    if channel::is_valid(name) {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid channel name {name:?}"
        )))
    }
}

/// `GET /apps/{id}/channels/{name}?info=subscription_count,user_count`.
async fn channel_info(
    State(state): State<Arc<AppState>>,
    Path((_, name)): Path<(String, String)>,
    Signed { app, query, .. }: Signed,
) -> ApiResult<ChannelReply> {
    let name = channel_name(&name)?;
    let info = info_of(&query);
    let wants = |item: &str| info.iter().any(|given| given == item);
    let presence = Kind::of(name) == Kind::Presence;
    if wants("user_count") && !presence {
        return Err(ApiError::bad_request(
            "user_count is only available on presence channels",
        ));
    }
    let entries = roster::gather(&*state.broker, &channel::roster(&app.config.id, name))
        .await
        .map_err(unavailable)?;
    // A presence channel's entries that are no member are joins under way.
    let subscriptions = if presence {
        entries
            .iter()
            .filter(|entry| roster::read_member(&entry.user).is_some())
            .count()
    } else {
        entries.len()
    };
    Ok(Json(ChannelReply {
        occupied: !entries.is_empty(),
        subscription_count: wants("subscription_count").then_some(subscriptions),
        user_count: wants("user_count").then(|| roster::members(&entries).len()),
    }))
}

#[derive(Serialize)]
struct UsersReply {
    users: Vec<User>,
}

#[derive(Serialize)]
struct User {
    id: String,
}

/// `GET /apps/{id}/channels/{name}/users`: a presence channel's members.
async fn users(
    State(state): State<Arc<AppState>>,
    Path((_, name)): Path<(String, String)>,
    Signed { app, .. }: Signed,
) -> ApiResult<UsersReply> {
    let name = channel_name(&name)?;
    if Kind::of(name) != Kind::Presence {
        return Err(ApiError::bad_request(
            "Users are only listed for presence channels",
        ));
    }
    let entries = roster::gather(&*state.broker, &channel::roster(&app.config.id, name))
        .await
        .map_err(unavailable)?;
    let users = roster::members(&entries)
        .into_iter()
        .map(|member| User { id: member.user_id })
        .collect();
    Ok(Json(UsersReply { users }))
}

/// `POST /apps/{id}/users/{user_id}/terminate_connections` → `{}`: closes
/// every connection signed in as the user, on every node, with 4009.
async fn terminate_connections(
    State(state): State<Arc<AppState>>,
    Path((_, user_id)): Path<(String, String)>,
    Signed { app, .. }: Signed,
) -> ApiResult<Empty> {
    if user_id.is_empty() || user_id.len() > channel::MAX_USER_ID_LEN {
        return Err(ApiError::bad_request("Invalid user id"));
    }
    let entries = roster::gather(
        &*state.broker,
        &channel::user_room(&app.config.id, &user_id),
    )
    .await
    .map_err(unavailable)?;
    for entry in entries {
        crate::command::disconnect(&state, crate::protocol::Target::Conn(entry.conn))
            .await
            .map_err(|failure| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, failure.message))?;
    }
    Ok(Json(Empty {}))
}

#[cfg(test)]
pub(crate) mod tests;
