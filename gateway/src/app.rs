//! The HTTP side: shared state, the public and admin routers, and the WebSocket
//! handshake with its ordered decisions (docs/protocol.md, "Connecting").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Extension;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::hub::Hub;
use crate::metrics::{Metrics, Refusal};
use crate::origin::AllowedOrigins;
use crate::peer::{self, ConnectionsPerAddress};
use crate::protocol::{self, ErrorCode, Failure, close, frame};
use crate::session;
use crate::socket::{self, FrameWriter};
use wsgate_config::Config;

/// Largest message and frame on the `/echo` endpoint (docs/config.md: testing only).
const ECHO_LIMIT: usize = 16 * 1024 * 1024;

/// Initial read buffer of a connection (tungstenite's, which never shrinks).
/// Idle connections dominate a gateway's memory, and most client frames are
/// small; a larger frame grows the buffer. Reads from the socket are larger: the
/// socket reads ahead (see `socket::READ_AHEAD`) into a buffer it frees once
/// taken.
const READ_BUFFER: usize = 128;

/// The WebSocket settings of every transport's connections on the public
/// listener: messages and frames up to `max_message` bytes, and tungstenite's
/// buffers kept small.
pub(crate) fn websocket(ws: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER)
        // The writers' frames bypass tungstenite (see `socket::FrameWriter`);
        // what tungstenite still writes goes straight to the socket's own
        // buffer, which gathers a batch and is freed once sent (see
        // `socket::WRITE_BATCH`): tungstenite's buffer would keep a burst's
        // capacity for ever, and would hold its frames back from the order of
        // the writer's.
        .write_buffer_size(0)
        .max_write_buffer_size(
            protocol::max_frame_bytes(max_message).saturating_add(socket::WRITE_BATCH),
        )
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// What every handler and session shares.
pub struct AppState {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub origins: AllowedOrigins,
    /// Places under `limits.max_connections` (already capped below the open-file limit).
    pub connections: Arc<Semaphore>,
    /// Connections per client address, under `limits.max_connections_per_ip`.
    pub per_address: Arc<ConnectionsPerAddress>,
    /// Set when the drain starts: readiness fails and upgrades are refused.
    pub draining: AtomicBool,
    /// Upgrades refused while this node sheds connections to rebalance the fleet.
    pub rebalance: crate::rebalance::Admission,
    /// Tracks every session so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Random per-process part of connection ids, so ids never repeat across restarts of a node.
    boot: String,
    next_conn: AtomicU64,
    /// The Pusher transport, installed at startup when `[pusher]` is configured.
    pub pusher: std::sync::OnceLock<Arc<crate::pusher::Pusher>>,
}

impl AppState {
    /// Assembles the state.
    pub fn new(
        config: Config,
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
        origins: AllowedOrigins,
        max_connections: usize,
    ) -> Arc<Self> {
        let per_address = ConnectionsPerAddress::new(config.limits.max_connections_per_ip);
        Arc::new(Self {
            config,
            hub,
            broker,
            auth,
            metrics,
            origins,
            connections: Arc::new(Semaphore::new(max_connections)),
            per_address,
            draining: AtomicBool::new(false),
            rebalance: Default::default(),
            sessions: TaskTracker::new(),
            boot: format!("{:x}", rand::random::<u32>()),
            next_conn: AtomicU64::new(1),
            pusher: std::sync::OnceLock::new(),
        })
    }

    /// A single-node state for unit tests: the in-process broker and the
    /// configuration's auth settings.
    #[cfg(test)]
    pub fn test(config: Config) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(config.node.clone(), metrics.clone());
        let broker = crate::broker::LocalBroker::new(
            hub.clone(),
            config.namespaces.clone(),
            metrics.clone(),
        );
        let auth = Arc::new(
            Authenticator::new(config.auth.clone()).expect("test auth settings are valid"),
        );
        let origins = AllowedOrigins::new(&config.allowed_origins).expect("test origins are valid");
        let max = config.limits.max_connections;
        Self::new(config, hub, broker, auth, metrics, origins, max)
    }

    /// A new connection id: `<node>:<boot>-<n>`, so the node can be read back from it.
    fn conn_id(&self) -> Arc<str> {
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}:{}-{n:x}", self.hub.node(), self.boot))
    }

    /// Whether the gateway should receive traffic.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.broker.is_ready()
    }
}

/// The public router: `/ws` and, when enabled, `/echo`.
pub fn public(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(upgrade))
        .merge(crate::assets::router(&state))
        .merge(crate::pusher::public(&state));
    if state.config.echo_endpoint {
        router = router.route("/echo", get(echo));
    }
    router.with_state(state)
}

/// The admin router: health, readiness, metrics and the backend API.
pub fn admin(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", crate::api::router(state.clone()))
        .merge(crate::pusher::admin(&state))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else if !state.broker.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unavailable").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let metrics = &state.metrics;
    metrics.ready.set(i64::from(state.is_ready()));
    metrics
        .draining
        .set(i64::from(state.draining.load(Ordering::Acquire)));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// A refused upgrade: status and JSON error body.
fn refuse(state: &AppState, reason: Refusal, code: ErrorCode, message: &str) -> Response {
    state.metrics.refused(reason);
    let status = StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = frame::http_error(&Failure::new(code, message));
    // The socket is let go once the answer is sent: a refused client reconnects anew, and
    // a kept-alive refused socket would hold a place of the sockets waiting for their
    // handshake (as many as `limits.max_connections`).
    let headers = [
        (header::CONTENT_TYPE, "application/json"),
        (header::CONNECTION, "close"),
    ];
    let mut response = (status, headers, body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let seconds = rand::random_range(2..=6u32);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The token of an upgrade request, from `Authorization: Bearer` and/or `?token=`.
/// `Err` when both are given and differ, or the header is not a bearer token.
fn request_token(
    headers: &HeaderMap,
    query: Option<String>,
) -> Result<Option<String>, &'static str> {
    let header = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| "malformed Authorization header")?;
            let token = crate::auth::bearer(value).ok_or("Authorization must be a Bearer token")?;
            Some(token.to_owned())
        }
    };
    match (header, query) {
        (Some(header), Some(query)) if header != query => {
            Err("the Authorization and token= tokens differ")
        }
        (header, query) => Ok(header.or(query)),
    }
}

/// `GET /ws`: the handshake decisions in docs/protocol.md's order, then the upgrade.
async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    Extension(frames): Extension<FrameWriter>,
    ws: WebSocketUpgrade,
) -> Response {
    // 1. Draining, rebalancing, or at the connection limit.
    if state.draining.load(Ordering::Acquire) {
        return refuse(
            &state,
            Refusal::Draining,
            ErrorCode::Unavailable,
            "draining",
        );
    }
    if state.rebalance.refuses(state.hub.connection_count()) {
        let reason = Refusal::Rebalancing;
        return refuse(&state, reason, ErrorCode::Unavailable, "rebalancing");
    }
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return refuse(
            &state,
            Refusal::Capacity,
            ErrorCode::Unavailable,
            "at the connection limit",
        );
    };
    // 2. Origin.
    match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
        Some(Ok(origin)) if state.origins.allows(origin) => {}
        Some(_) => {
            return refuse(
                &state,
                Refusal::Origin,
                ErrorCode::Forbidden,
                "origin not allowed",
            );
        }
        None if state.config.require_origin => {
            return refuse(
                &state,
                Refusal::Origin,
                ErrorCode::Forbidden,
                "an Origin header is required",
            );
        }
        None => {}
    }
    // 3. Per-address cap.
    let client = peer::client_address(remote.ip(), &headers, &state.config.limits.trusted_proxies);
    let Some(address_slot) = state.per_address.reserve(client) else {
        return refuse(
            &state,
            Refusal::PerIp,
            ErrorCode::LimitExceeded,
            "too many connections from this address",
        );
    };
    // 4. Token.
    let token = match request_token(&headers, query.token) {
        Ok(token) => token,
        Err(message) => {
            state.metrics.auth_failure("malformed");
            return refuse(&state, Refusal::Auth, ErrorCode::Unauthorized, message);
        }
    };
    let conn_id = state.conn_id();
    let identity = match token {
        Some(token) => match state.auth.verify(&token) {
            Ok(identity) => Some(identity),
            Err(error) => {
                state.metrics.auth_failure(error.kind_label());
                return refuse(
                    &state,
                    Refusal::Auth,
                    ErrorCode::Unauthorized,
                    &error.to_string(),
                );
            }
        },
        None if state.config.allow_anonymous => Some(state.auth.anonymous(&conn_id)),
        None => None,
    };
    // 5. Per-user cap.
    let slot = match &identity {
        Some(identity) => {
            match state
                .hub
                .reserve_user(&identity.user, state.config.limits.max_connections_per_user)
            {
                Some(slot) => Some(slot),
                None => {
                    return refuse(
                        &state,
                        Refusal::PerUser,
                        ErrorCode::LimitExceeded,
                        "too many connections for this user",
                    );
                }
            }
        }
        None => None,
    };
    // 6. Upgrade.
    let limits = &state.config.limits;
    let max_message = limits.max_message_bytes;
    let start = session::Start {
        conn_id,
        identity,
        slot,
        permit,
        address: address_slot,
        tracked: state.sessions.token(),
        frames,
    };
    websocket(ws.protocols(["wsgate.v1"]), max_message).on_upgrade(move |socket| {
        // The session gets a task of its own, and axum's upgrade task ends
        // here: that task's future (the upgrade, axum's wrapper, this
        // closure) would otherwise stay allocated around the session for
        // the connection's whole life.
        tokio::spawn(session::run(socket, state, start));
        std::future::ready(())
    })
}

/// `GET /echo`: a plain echo WebSocket for conformance suites (no auth, no origin check).
async fn echo(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    let tracker = state.sessions.token();
    ws.max_message_size(ECHO_LIMIT)
        .max_frame_size(ECHO_LIMIT)
        .on_upgrade(move |socket| async move {
            echo_loop(socket).await;
            drop(tracker);
        })
}

async fn echo_loop(mut socket: WebSocket) {
    use futures::SinkExt as _;
    while let Some(message) = socket.recv().await {
        let reply = match message {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => message,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            // tungstenite queued the close reply; flushing sends it.
            Ok(Message::Close(_)) => break,
            Err(error) => {
                let code = match error.into_inner().downcast_ref::<tungstenite::Error>() {
                    Some(tungstenite::Error::Utf8(_)) => close::INVALID_UTF8,
                    Some(tungstenite::Error::Capacity(_)) => close::TOO_BIG,
                    _ => close::PROTOCOL,
                };
                let frame = axum::extract::ws::CloseFrame {
                    code,
                    reason: "".into(),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
                break;
            }
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
    // Complete the closing handshake: flush our close frame (or the echo of the
    // peer's) and wait briefly for the peer's, so the TCP connection ends cleanly.
    let _ = socket.flush().await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_header_and_query_must_agree() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_token(&headers, None), Ok(None));
        assert_eq!(
            request_token(&headers, Some("q".into())),
            Ok(Some("q".into()))
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer h"));
        assert_eq!(request_token(&headers, None), Ok(Some("h".into())));
        assert_eq!(
            request_token(&headers, Some("h".into())),
            Ok(Some("h".into()))
        );
        assert!(request_token(&headers, Some("q".into())).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(request_token(&headers, None), Ok(Some(String::new())));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert!(request_token(&headers, None).is_err());
    }
}
