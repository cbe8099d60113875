//! The backend HTTP API (docs/protocol.md, "HTTP API for backends"), on the admin
//! listener, authenticated with an API key. Bodies are read up to
//! `limits.max_http_body_bytes`; every error is a JSON body with a code.
//!
//! The handlers only translate: they parse the request, call the command core
//! ([`crate::command`]) as a backend, and turn its typed result into JSON.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::broker::NodeStats;
use crate::command::{self, Issuer, Published};
use crate::protocol::{self, ErrorCode, Failure, Target, frame};

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
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            error: &'a Failure,
        }
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody { error: &self.0 })).into_response()
    }
}

impl From<Failure> for AppError {
    fn from(failure: Failure) -> Self {
        Self(failure)
    }
}

impl From<crate::broker::BrokerError> for AppError {
    fn from(error: crate::broker::BrokerError) -> Self {
        Self(Failure::from(&error))
    }
}

type ApiResult<T> = Result<Json<T>, AppError>;

/// The API's routes, behind the API-key check.
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/publish", post(publish))
        .route("/send", post(send))
        .route("/disconnect", post(disconnect))
        .route("/stats", get(stats))
        .route("/rooms/{room}/presence", get(presence))
        .route("/rooms/{room}/history", get(history))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ))
        .route_layer(middleware::from_fn_with_state(state, count_request))
}

/// Counts every request, refused ones included, by route and status
/// (`wsgate_api_requests_total`).
async fn count_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    if let Some(endpoint) = endpoint {
        state
            .metrics
            .api_request(&endpoint, response.status().as_u16());
    }
    response
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
        .and_then(crate::auth::bearer);
    match presented {
        Some(key) if state.auth.check_api_key(key) => next.run(request).await,
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

/// `POST /api/v1/publish {"room":R,"data":D}` → `{"seq":S}` with history, `{}` without.
async fn publish(State(state): State<Arc<AppState>>, request: Body) -> ApiResult<Published> {
    let bytes = read_body(&state, request).await?;
    let PublishBody { room, data } = parse(&bytes)?;
    protocol::validate_room(&room)?;
    protocol::check_depth(data)?;
    let ack = command::publish(&state, Issuer::Backend, None, &room, data).await?;
    Ok(Json(ack.await?))
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

/// `/api/v1/send`'s answer: `partial` is always there.
#[derive(Serialize)]
struct Delivered {
    delivered: u64,
    partial: bool,
}

/// `POST /api/v1/send {"user":U,"data":D}` or `{"conn":C,"data":D}` → `{"delivered":N}`.
async fn send(State(state): State<Arc<AppState>>, request: Body) -> ApiResult<Delivered> {
    let bytes = read_body(&state, request).await?;
    let mut body: TargetBody<'_> = parse(&bytes)?;
    let target = body.target()?;
    let data = body
        .data
        .ok_or_else(|| AppError::new(ErrorCode::BadRequest, "missing data"))?;
    protocol::check_depth(data)?;
    let gathered = command::send(&state, Issuer::Backend, target, data)
        .await?
        .await?;
    Ok(Json(Delivered {
        delivered: gathered.count,
        partial: gathered.partial,
    }))
}

#[derive(Serialize)]
struct Disconnected {
    disconnected: u64,
    partial: bool,
}

/// `POST /api/v1/disconnect {"user":U}` or `{"conn":C}` → `{"disconnected":N}`.
async fn disconnect(State(state): State<Arc<AppState>>, request: Body) -> ApiResult<Disconnected> {
    let bytes = read_body(&state, request).await?;
    let mut body: TargetBody<'_> = parse(&bytes)?;
    let gathered = command::disconnect(&state, body.target()?).await?;
    Ok(Json(Disconnected {
        disconnected: gathered.count,
        partial: gathered.partial,
    }))
}

/// `/api/v1/stats`'s answer.
#[derive(Serialize)]
struct Stats {
    nodes: Vec<NodeStats>,
    connections: u64,
    rooms: u64,
    partial: bool,
}

/// `GET /api/v1/stats` → every live node's counts.
async fn stats(State(state): State<Arc<AppState>>) -> ApiResult<Stats> {
    let stats = command::stats(&state).await?;
    Ok(Json(Stats {
        connections: stats.nodes.iter().map(|node| node.connections).sum(),
        rooms: stats.nodes.iter().map(|node| node.rooms).sum(),
        nodes: stats.nodes,
        partial: stats.partial,
    }))
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
) -> Result<Response, AppError> {
    protocol::validate_room(&room)?;
    let page = command::presence(
        &state,
        Issuer::Backend,
        &room,
        query.cursor.as_deref(),
        query.limit,
    )
    .await?;
    Ok(Json(frame::PresencePage::from(&page)).into_response())
}

#[derive(Deserialize)]
struct HistoryQuery {
    epoch: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/rooms/{room}/history?epoch=E&since=S&limit=N`: the same rules as
/// a join with `since` (see [`command::history`]).
async fn history(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, AppError> {
    #[derive(Serialize)]
    struct History<'a> {
        epoch: &'a str,
        seq: u64,
        recovered: bool,
        messages: frame::Frames<'a>,
    }
    protocol::validate_room(&room)?;
    let recovery = command::history(&state, &room, query.epoch, query.since, query.limit).await?;
    Ok(Json(History {
        epoch: &recovery.epoch,
        seq: recovery.seq,
        recovered: recovery.recovered,
        messages: frame::Frames(&recovery.missed),
    })
    .into_response())
}

#[cfg(test)]
mod tests;
