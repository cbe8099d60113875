//! The backend HTTP API (docs/protocol.md, "HTTP API for backends"), on the admin
//! listener, authenticated with an API key. Bodies are read up to
//! `limits.max_http_body_bytes`; every error is a JSON body with a code.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::broker::BrokerError;
use crate::protocol::{self, ErrorCode, Failure, Since, Target, frame};

/// An API error: rendered as `{"error":{"code":..,"message":..}}` with its status.
#[derive(Debug)]
pub struct AppError(Failure);

impl AppError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Failure::new(code, message))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            frame::http_error(&self.0),
        )
            .into_response()
    }
}

impl From<Failure> for AppError {
    fn from(failure: Failure) -> Self {
        Self(failure)
    }
}

impl From<BrokerError> for AppError {
    fn from(error: BrokerError) -> Self {
        Self(Failure::from(&error))
    }
}

type ApiResult = Result<Response, AppError>;

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The API's routes, behind the API-key check.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/publish", post(publish))
        .route("/send", post(send))
        .route("/disconnect", post(disconnect))
        .route("/stats", get(stats))
        .route("/rooms/{room}/presence", get(presence))
        .route("/rooms/{room}/history", get(history))
        .layer(middleware::from_fn_with_state(state, require_api_key))
}

/// Refuses requests without a configured API key as their bearer token.
async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(key) if state.auth.check_api_key(key.trim()) => next.run(request).await,
        Some(_) => AppError::new(ErrorCode::Unauthorized, "unknown API key").into_response(),
        None => AppError::new(
            ErrorCode::Unauthorized,
            "missing API key: Authorization: Bearer <key>",
        )
        .into_response(),
    }
}

/// Reads a body within `limits.max_http_body_bytes`.
async fn read_body(state: &AppState, body: Body) -> Result<bytes::Bytes, AppError> {
    let limit = state.config.limits.max_http_body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| AppError::new(ErrorCode::TooLarge, format!("body over {limit} bytes")))
}

/// Parses a JSON body; `data` fields stay borrowed raw JSON.
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes)
        .map_err(|error| AppError::new(ErrorCode::BadRequest, format!("invalid body: {error}")))
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `POST /api/v1/publish {"room":R,"data":D}` → `{}`.
async fn publish(State(state): State<Arc<AppState>>, request: Body) -> ApiResult {
    let bytes = read_body(&state, request).await?;
    let PublishBody { room, data } = parse(&bytes)?;
    protocol::validate_room(&room)?;
    protocol::check_depth(data)?;
    let frame = frame::message(&room, data, "null");
    state.metrics.messages_in.inc();
    if state.config.namespaces.for_room(&room).history_size > 0 {
        let seq = state.broker.publish_stored(&room, frame).await?;
        return Ok(json(format!("{{\"seq\":{seq}}}")));
    }
    state.broker.publish(&room, frame).await?;
    Ok(json("{}".into()))
}

/// A body naming a user or a connection, and for `send` the data.
#[derive(Deserialize)]
struct TargetBody<'a> {
    user: Option<String>,
    conn: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

impl TargetBody<'_> {
    fn target(&mut self) -> Result<Target, AppError> {
        match (self.user.take(), self.conn.take()) {
            (Some(user), None) => Ok(Target::User(user)),
            (None, Some(conn)) => Ok(Target::Conn(conn)),
            (Some(_), Some(_)) => Err(AppError::new(
                ErrorCode::BadRequest,
                "give user or conn, not both",
            )),
            (None, None) => Err(AppError::new(ErrorCode::BadRequest, "give user or conn")),
        }
    }
}

/// `POST /api/v1/send {"user":U,"data":D}` or `{"conn":C,"data":D}` → `{"delivered":N}`.
async fn send(State(state): State<Arc<AppState>>, request: Body) -> ApiResult {
    let bytes = read_body(&state, request).await?;
    let mut body: TargetBody<'_> = parse(&bytes)?;
    let target = body.target()?;
    let data = body
        .data
        .ok_or_else(|| AppError::new(ErrorCode::BadRequest, "missing data"))?;
    protocol::check_depth(data)?;
    let gathered = state
        .broker
        .send(target, frame::direct(data, "null"))
        .await?;
    Ok(json(
        serde_json::json!({"delivered": gathered.count, "partial": gathered.partial}).to_string(),
    ))
}

/// `POST /api/v1/disconnect {"user":U}` or `{"conn":C}` → `{"disconnected":N}`.
async fn disconnect(State(state): State<Arc<AppState>>, request: Body) -> ApiResult {
    let bytes = read_body(&state, request).await?;
    let mut body: TargetBody<'_> = parse(&bytes)?;
    let gathered = state.broker.disconnect(body.target()?).await?;
    Ok(json(
        serde_json::json!({"disconnected": gathered.count, "partial": gathered.partial})
            .to_string(),
    ))
}

/// `GET /api/v1/stats` → every live node's counts.
async fn stats(State(state): State<Arc<AppState>>) -> ApiResult {
    let stats = state.broker.stats().await?;
    let connections: u64 = stats.nodes.iter().map(|node| node.connections).sum();
    let rooms: u64 = stats.nodes.iter().map(|node| node.rooms).sum();
    Ok(json(
        serde_json::json!({
            "nodes": stats.nodes,
            "connections": connections,
            "rooms": rooms,
            "partial": stats.partial,
        })
        .to_string(),
    ))
}

#[derive(Deserialize)]
struct PresenceQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/rooms/{room}/presence?cursor=C&limit=N` → `{"members":[...],"next":C}`.
async fn presence(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<PresenceQuery>,
) -> ApiResult {
    protocol::validate_room(&room)?;
    if !state.config.namespaces.for_room(&room).presence {
        return Err(AppError::new(
            ErrorCode::NotSupported,
            "this room's namespace keeps no presence",
        ));
    }
    let after = query
        .cursor
        .as_deref()
        .map(protocol::decode_cursor)
        .transpose()?;
    let max = state.config.limits.max_page_size;
    let limit = query.limit.unwrap_or(max).clamp(1, max);
    let page = state.broker.presence(&room, after, limit).await?;
    let extra = crate::session::presence_extra(&page);
    Ok(json(format!("{{{}}}", extra.trim_start_matches(','))))
}

#[derive(Deserialize)]
struct HistoryQuery {
    epoch: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/rooms/{room}/history?epoch=E&since=S&limit=N`: the same rules as
/// a join with `since`; without `epoch` the current one, without `since` 0 (the
/// whole history). `limit` is at most the namespace's `recovery_max`.
async fn history(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> ApiResult {
    protocol::validate_room(&room)?;
    let namespace = state.config.namespaces.for_room(&room);
    if namespace.history_size == 0 {
        return Err(AppError::new(
            ErrorCode::NotSupported,
            "this room's namespace keeps no history",
        ));
    }
    let limit = query
        .limit
        .unwrap_or(namespace.recovery_max)
        .min(namespace.recovery_max);
    let epoch = match query.epoch {
        Some(epoch) => epoch,
        None => state.broker.recover(&room, None).await?.epoch,
    };
    let since = Since {
        epoch,
        seq: query.since.unwrap_or(0),
    };
    let mut recovery = state.broker.recover(&room, Some(&since)).await?;
    if recovery.missed.len() > limit {
        recovery.missed.drain(..recovery.missed.len() - limit);
        recovery.recovered = false;
    }
    let mut body = String::from("{\"epoch\":");
    protocol::push_json_str(&mut body, &recovery.epoch);
    body.push_str(&format!(
        ",\"seq\":{},\"recovered\":{},\"messages\":[",
        recovery.seq, recovery.recovered
    ));
    for (i, (_, message)) in recovery.missed.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(message);
    }
    body.push_str("]}");
    Ok(json(body))
}
