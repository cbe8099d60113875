//! Prometheus metrics: one [`Metrics`] per process, every name prefixed `wsgate_`.
//!
//! Labels are low-cardinality enums (close codes, error codes, reasons): never a
//! connection, user or room id. Every label value known in advance is scraped
//! from the start, at zero, so `rate()` and alerts see a series before its
//! first event. docs/metrics.md lists every metric; a cross-process test
//! (tests/tests/metrics.rs) fails when it and a real scrape disagree.
//!
//! Besides the `wsgate_*` metrics, the scrape carries the standard `process_*`
//! metrics (CPU, memory, file descriptors) of [`process`].

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::protocol::{ErrorCode, close};

mod process;

/// A label naming a reason, a code or a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// A room namespace label (namespaces are configured, so there are few).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    pub namespace: String,
}

/// A protocol error code label (`bad_request`, `rate_limited`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

/// A NATS error kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// How a connection ended, for `wsgate_closes_total{initiator, code}`: who
/// closed it apart from how. A client that drops its TCP connection is not a
/// protocol error (1002) the server found, nor a normal close (1000) the
/// server made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The server closed with this code (docs/protocol.md, "Close codes").
    Server(u16),
    /// The client sent a close frame with this code; `None` when the frame
    /// carried no code (RFC 6455's 1005, "no status received").
    Client(Option<u16>),
    /// The connection was lost without a close handshake: the client dropped
    /// TCP, or a read or write failed (RFC 6455's 1006, "abnormal closure").
    Lost,
}

impl Ending {
    /// The `initiator` label: `server`, `client` or `network`.
    pub fn initiator(self) -> &'static str {
        match self {
            Ending::Server(_) => "server",
            Ending::Client(_) => "client",
            Ending::Lost => "network",
        }
    }

    /// The `code` label: the server's close codes as they are, the client's
    /// 1000 and 1001 as they are, 1005 for none and `other` for the rest (a
    /// client chooses any code: it must not make new series), 1006 for a lost
    /// connection.
    pub fn code(self) -> &'static str {
        match self {
            Ending::Server(code) => server_code(code),
            Ending::Client(None) => "1005",
            Ending::Client(Some(close::NORMAL)) => "1000",
            Ending::Client(Some(close::GOING_AWAY)) => "1001",
            Ending::Client(Some(_)) => "other",
            Ending::Lost => "1006",
        }
    }

    /// Every ending with its own series, to scrape each at zero from the start.
    fn all() -> impl Iterator<Item = Ending> {
        SERVER_CLOSE_CODES.into_iter().map(Ending::Server).chain([
            Ending::Client(Some(close::NORMAL)),
            Ending::Client(Some(close::GOING_AWAY)),
            Ending::Client(None),
            Ending::Client(Some(0)),
            Ending::Lost,
        ])
    }
}

/// The close codes the server sends (docs/protocol.md, "Close codes").
const SERVER_CLOSE_CODES: [u16; 11] = [
    close::NORMAL,
    close::GOING_AWAY,
    close::PROTOCOL,
    close::INVALID_UTF8,
    close::POLICY,
    close::TOO_BIG,
    close::INTERNAL,
    close::RESTART,
    close::TRY_AGAIN_LATER,
    close::AUTH_FAILED,
    close::DISCONNECTED,
];

/// A server close code as a label value without allocating.
fn server_code(code: u16) -> &'static str {
    match code {
        close::NORMAL => "1000",
        close::GOING_AWAY => "1001",
        close::PROTOCOL => "1002",
        close::INVALID_UTF8 => "1007",
        close::POLICY => "1008",
        close::TOO_BIG => "1009",
        close::INTERNAL => "1011",
        close::RESTART => "1012",
        close::TRY_AGAIN_LATER => "1013",
        close::AUTH_FAILED => "4001",
        close::DISCONNECTED => "4003",
        _ => "other",
    }
}

/// A close's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub initiator: &'static str,
    pub code: &'static str,
}

/// Every protocol error code, to scrape `wsgate_client_errors_total` at zero.
const ERROR_CODES: [ErrorCode; 12] = [
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::UnknownOp,
    ErrorCode::InvalidRoom,
    ErrorCode::Forbidden,
    ErrorCode::NotMember,
    ErrorCode::NotSupported,
    ErrorCode::LimitExceeded,
    ErrorCode::RateLimited,
    ErrorCode::TooLarge,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

/// Does not compile when a code is added to [`ErrorCode`]: add it to
/// [`ERROR_CODES`] too.
#[allow(dead_code)]
fn every_error_code_is_listed(code: ErrorCode) {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::Unauthorized
        | ErrorCode::UnknownOp
        | ErrorCode::InvalidRoom
        | ErrorCode::Forbidden
        | ErrorCode::NotMember
        | ErrorCode::NotSupported
        | ErrorCode::LimitExceeded
        | ErrorCode::RateLimited
        | ErrorCode::TooLarge
        | ErrorCode::Unavailable
        | ErrorCode::Internal => {}
    }
}

/// The reasons a presented token is refused (`AuthError::kind_label` of the
/// token errors), to scrape `wsgate_auth_failures_total` at zero.
const AUTH_FAILURE_REASONS: [&str; 11] = [
    "malformed",
    "bad_signature",
    "unknown_key",
    "expired",
    "not_yet_valid",
    "wrong_algorithm",
    "missing_claim",
    "invalid_claim",
    "reserved_subject",
    "bad_audience",
    "bad_issuer",
];

/// The bounds a public socket is shed at (`wsgate_sockets_shed_total`).
const SHED_REASONS: [&str; 2] = ["handshakes", "descriptors"];

/// The kinds of `wsgate_nats_errors_total`.
pub mod nats_error {
    /// The server reported an error (`-ERR`: permissions, limits).
    pub const SERVER: &str = "server";
    /// The client library reported an error (such as a failed reconnect).
    pub const CLIENT: &str = "client";
    /// A subscription fell behind and the client dropped messages.
    pub const SLOW_CONSUMER: &str = "slow_consumer";
    /// JetStream did not acknowledge a stored publish.
    pub const JETSTREAM_PUBLISH: &str = "jetstream_publish";
    /// Every kind.
    pub const ALL: [&str; 4] = [SERVER, CLIENT, SLOW_CONSUMER, JETSTREAM_PUBLISH];
}

/// The backend API's endpoints (`wsgate_api_requests_total{endpoint}`), as
/// their routes are written.
pub const API_ENDPOINTS: [&str; 6] = [
    "/api/v1/publish",
    "/api/v1/send",
    "/api/v1/disconnect",
    "/api/v1/stats",
    "/api/v1/rooms/{room}/presence",
    "/api/v1/rooms/{room}/history",
];

/// A backend API request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub endpoint: String,
    pub status: u16,
}

/// The build's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Why an upgrade was refused, in the handshake order of docs/protocol.md.
/// Only [`Refusal::Capacity`] means the fleet is too small: the operator's
/// autoscaler reads that count (`upgrades_refused_capacity` in
/// `/api/v1/stats`), so refusals while draining (or rebalancing) never make
/// it scale up.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// At `limits.max_connections` (503).
    Capacity,
    /// The node is draining (503).
    Draining,
    /// The node sheds connections to rebalance the fleet (503).
    Rebalancing,
    /// Over `limits.max_connections_per_ip` (429).
    PerIp,
    /// The Origin rule (403).
    Origin,
    /// A missing, malformed or refused token (401).
    Auth,
    /// Over `limits.max_connections_per_user` (429).
    PerUser,
}

impl Refusal {
    /// Every reason, to show each series at zero from the start.
    pub const ALL: [Refusal; 7] = [
        Refusal::Capacity,
        Refusal::Draining,
        Refusal::Rebalancing,
        Refusal::PerIp,
        Refusal::Origin,
        Refusal::Auth,
        Refusal::PerUser,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Capacity => "capacity",
            Refusal::Draining => "draining",
            Refusal::Rebalancing => "rebalancing",
            Refusal::PerIp => "per_ip",
            Refusal::Origin => "origin",
            Refusal::Auth => "auth",
            Refusal::PerUser => "per_user",
        }
    }

    /// The HTTP status the refusal is answered with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Capacity | Refusal::Draining | Refusal::Rebalancing => 503,
            Refusal::PerIp | Refusal::PerUser => 429,
            Refusal::Origin => 403,
            Refusal::Auth => 401,
        }
    }
}

/// An upgrade refusal's labels: the HTTP status (as before) and the reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub code: u16,
    pub reason: &'static str,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// The standard `process_*` metrics, unprefixed, read at each scrape.
    process: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Accepted WebSocket connections since start.
    pub connections_accepted: Counter,
    /// Upgrades refused before the handshake, by HTTP status and reason.
    pub upgrades_refused: Family<RefusalLabels, Counter>,
    /// Connections ended, by who ended them and the close code.
    pub closes: Family<CloseLabels, Counter>,
    /// Rooms with at least one member on this node.
    pub rooms: Gauge,
    /// Messages published by clients and backends through this node.
    pub messages_in: Counter,
    /// Frames queued to local connections: replies, events and messages.
    pub frames_queued: Counter,
    /// Room and direct messages queued to local connections, one per recipient.
    pub messages_delivered: Counter,
    /// Time to queue one broker message to every local member of its room.
    pub fanout_seconds: Histogram,
    /// Connections closed because their outbound queue was full.
    pub slow_consumers: Counter,
    /// Tokens refused, by reason.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Error replies sent to clients, by protocol error code.
    pub client_errors: Family<CodeLabel, Counter>,
    /// 1 while the broker connection is up.
    pub broker_connected: Gauge,
    /// Live nodes in the cluster registry, this one included.
    pub nodes: Gauge,
    /// 1 while a history namespace can store messages, 0 while it cannot.
    pub history_available: Family<NamespaceLabel, Gauge>,
    /// Public sockets closed as soon as they were accepted, by the bound they were over
    /// (`handshakes`, `descriptors`).
    pub sockets_shed: Family<ReasonLabel, Counter>,
    /// Public sockets closed for sending no request head within `limits.handshake_timeout_ms`.
    pub handshake_timeouts: Counter,
    /// Connections this node told to reconnect elsewhere to rebalance the fleet.
    pub rebalance_shed: Counter,
    /// 1 while `/readyz` answers 200 (set at each scrape).
    pub ready: Gauge,
    /// 1 once the drain has started (set at each scrape).
    pub draining: Gauge,
    /// WebSocket payload bytes received from clients.
    pub received_bytes: Counter,
    /// WebSocket payload bytes handed to client sockets.
    pub sent_bytes: Counter,
    /// Room joins by connections on this node.
    pub joins: Counter,
    /// Room leaves by connections on this node, disconnects included.
    pub leaves: Counter,
    /// NATS round trips (a PING answered by a PONG), timed after each heartbeat.
    pub nats_rtt_seconds: Histogram,
    /// NATS reconnects after the first connection.
    pub nats_reconnects: Counter,
    /// NATS errors, by kind ([`nats_error`]).
    pub nats_errors: Family<KindLabel, Counter>,
    /// Time from handing a stored publish to JetStream to its acknowledgement.
    pub jetstream_publish_seconds: Histogram,
    /// Backend API requests, by endpoint and HTTP status.
    pub api_requests: Family<ApiLabels, Counter>,
    /// Open Pusher protocol connections (also counted in `connections`).
    pub pusher_connections: Gauge,
}

/// Buckets of the NATS round-trip and JetStream publish histograms: 100 µs to
/// about 6.5 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 4.0, 9)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wsgate");
        let mut process = Registry::default();
        process.register_collector(Box::new(process::Collector));
        let metrics = Self {
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            upgrades_refused: Family::default(),
            closes: Family::default(),
            rooms: Gauge::default(),
            messages_in: Counter::default(),
            frames_queued: Counter::default(),
            messages_delivered: Counter::default(),
            fanout_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            slow_consumers: Counter::default(),
            auth_failures: Family::default(),
            client_errors: Family::default(),
            broker_connected: Gauge::default(),
            nodes: Gauge::default(),
            history_available: Family::default(),
            sockets_shed: Family::default(),
            handshake_timeouts: Counter::default(),
            rebalance_shed: Counter::default(),
            ready: Gauge::default(),
            draining: Gauge::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            joins: Counter::default(),
            leaves: Counter::default(),
            nats_rtt_seconds: Histogram::new(latency_buckets()),
            nats_reconnects: Counter::default(),
            nats_errors: Family::default(),
            jetstream_publish_seconds: Histogram::new(latency_buckets()),
            api_requests: Family::default(),
            pusher_connections: Gauge::default(),
            registry: Registry::default(),
            process: Registry::default(),
        };
        registry.register(
            "build",
            "The running build: version label, value 1",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "pusher_connections",
            "Open Pusher protocol connections, also counted in connections",
            metrics.pusher_connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted since start",
            metrics.connections_accepted.clone(),
        );
        registry.register(
            "upgrades_refused",
            "Upgrade requests refused, by HTTP status and reason",
            metrics.upgrades_refused.clone(),
        );
        registry.register(
            "closes",
            "Connections ended, by initiator (server, client, network) and close code",
            metrics.closes.clone(),
        );
        registry.register(
            "rooms",
            "Rooms with members on this node",
            metrics.rooms.clone(),
        );
        registry.register(
            "messages_in",
            "Messages published through this node",
            metrics.messages_in.clone(),
        );
        registry.register(
            "frames_queued",
            "Frames queued to local connections: replies, events and messages",
            metrics.frames_queued.clone(),
        );
        registry.register(
            "messages_delivered",
            "Room and direct messages queued to local connections, one per recipient",
            metrics.messages_delivered.clone(),
        );
        registry.register(
            "fanout_seconds",
            "Time to queue broker messages (those that arrived together) to every local member of their room",
            metrics.fanout_seconds.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Connections closed with 1013 because their queue was full",
            metrics.slow_consumers.clone(),
        );
        registry.register(
            "auth_failures",
            "Tokens refused, by reason",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "client_errors",
            "Error replies sent to clients, by protocol error code",
            metrics.client_errors.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while the broker (NATS) connection is up",
            metrics.broker_connected.clone(),
        );
        registry.register(
            "nodes",
            "Live nodes in the cluster registry, this one included",
            metrics.nodes.clone(),
        );
        registry.register(
            "history_available",
            "1 while a history namespace can store messages, 0 while it cannot (the reason is logged)",
            metrics.history_available.clone(),
        );
        registry.register(
            "sockets_shed",
            "Public sockets closed as soon as accepted, by the bound they were over (handshakes, descriptors)",
            metrics.sockets_shed.clone(),
        );
        registry.register(
            "handshake_timeouts",
            "Public sockets closed for sending no request head within limits.handshake_timeout_ms",
            metrics.handshake_timeouts.clone(),
        );
        registry.register(
            "rebalance_shed",
            "Connections told to reconnect elsewhere (reconnect, then 1012) to rebalance the fleet",
            metrics.rebalance_shed.clone(),
        );
        registry.register(
            "ready",
            "1 while /readyz answers 200: not draining and the broker is ready",
            metrics.ready.clone(),
        );
        registry.register(
            "draining",
            "1 once the drain has started",
            metrics.draining.clone(),
        );
        registry.register(
            "received_bytes",
            "WebSocket payload bytes received from clients",
            metrics.received_bytes.clone(),
        );
        registry.register(
            "sent_bytes",
            "WebSocket payload bytes handed to client sockets",
            metrics.sent_bytes.clone(),
        );
        registry.register(
            "joins",
            "Room joins by connections on this node",
            metrics.joins.clone(),
        );
        registry.register(
            "leaves",
            "Room leaves by connections on this node, disconnects included",
            metrics.leaves.clone(),
        );
        registry.register(
            "nats_rtt_seconds",
            "NATS round trips (PING to PONG), timed after each node heartbeat",
            metrics.nats_rtt_seconds.clone(),
        );
        registry.register(
            "nats_reconnects",
            "NATS reconnects after the first connection",
            metrics.nats_reconnects.clone(),
        );
        registry.register(
            "nats_errors",
            "NATS errors, by kind (server, client, slow_consumer, jetstream_publish)",
            metrics.nats_errors.clone(),
        );
        registry.register(
            "jetstream_publish_seconds",
            "Time from handing a stored publish to JetStream to its acknowledgement",
            metrics.jetstream_publish_seconds.clone(),
        );
        registry.register(
            "api_requests",
            "Backend API requests, by endpoint and HTTP status",
            metrics.api_requests.clone(),
        );
        let metrics = Self {
            registry,
            process,
            ..metrics
        };
        // Every known label value is scraped from the start, at zero.
        for reason in Refusal::ALL {
            metrics.refusal(reason);
        }
        for ending in Ending::all() {
            metrics.closing(ending);
        }
        for code in ERROR_CODES {
            let _ = metrics.client_errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
        for reason in AUTH_FAILURE_REASONS {
            let _ = metrics.auth_failures.get_or_create(&ReasonLabel { reason });
        }
        for reason in SHED_REASONS {
            let _ = metrics.sockets_shed.get_or_create(&ReasonLabel { reason });
        }
        for kind in nats_error::ALL {
            let _ = metrics.nats_errors.get_or_create(&KindLabel { kind });
        }
        for endpoint in API_ENDPOINTS {
            let _ = metrics.api_requests.get_or_create(&ApiLabels {
                endpoint: endpoint.to_owned(),
                status: 200,
            });
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        out
    }

    /// Counts a refused token.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an error reply to a client command.
    pub fn client_error(&self, code: &'static str) {
        self.client_errors.get_or_create(&CodeLabel { code }).inc();
    }

    /// Counts a connection's end.
    pub fn ended(&self, ending: Ending) {
        self.closing(ending).inc();
    }

    fn closing(&self, ending: Ending) -> Counter {
        self.closes
            .get_or_create(&CloseLabels {
                initiator: ending.initiator(),
                code: ending.code(),
            })
            .clone()
    }

    /// Counts a NATS error of `kind` (one of [`nats_error::ALL`]).
    pub fn nats_error(&self, kind: &'static str) {
        self.nats_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a backend API request to `endpoint` (its route) answered with `status`.
    pub fn api_request(&self, endpoint: &str, status: u16) {
        self.api_requests
            .get_or_create(&ApiLabels {
                endpoint: endpoint.to_owned(),
                status,
            })
            .inc();
    }

    /// Counts a public socket closed at once for being over the bound named by `reason`.
    pub fn socket_shed(&self, reason: &'static str) {
        self.sockets_shed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an upgrade refused for `reason`.
    pub fn refused(&self, reason: Refusal) {
        self.refusal(reason).inc();
    }

    /// Upgrades refused at the connection limit since start.
    pub fn capacity_refusals(&self) -> u64 {
        self.refusal(Refusal::Capacity).get()
    }

    fn refusal(&self, reason: Refusal) -> Counter {
        self.upgrades_refused
            .get_or_create(&RefusalLabels {
                code: reason.status(),
                reason: reason.as_str(),
            })
            .clone()
    }

    /// Starts timing one fan-out; the time is recorded when the guard drops.
    pub fn time_fanout(&self) -> FanoutTimer<'_> {
        FanoutTimer {
            start: Instant::now(),
            histogram: &self.fanout_seconds,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Records the time since its creation into the fan-out histogram when dropped.
pub struct FanoutTimer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for FanoutTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's close frame, a lost connection and a server close are three
    /// series: a dropped TCP connection never counts as a protocol error.
    #[test]
    fn closes_say_who_closed_apart_from_the_code() {
        let metrics = Metrics::new();
        metrics.ended(Ending::Lost);
        metrics.ended(Ending::Client(Some(1000)));
        metrics.ended(Ending::Client(Some(3999)));
        metrics.ended(Ending::Server(close::PROTOCOL));
        let text = metrics.encode();
        for line in [
            r#"wsgate_closes_total{initiator="network",code="1006"} 1"#,
            r#"wsgate_closes_total{initiator="client",code="1000"} 1"#,
            r#"wsgate_closes_total{initiator="client",code="other"} 1"#,
            r#"wsgate_closes_total{initiator="server",code="1002"} 1"#,
            r#"wsgate_closes_total{initiator="server",code="1000"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
    }

    /// Known label values are scraped at zero before their first event, and
    /// client errors are labelled by `code`.
    #[test]
    fn known_label_values_start_at_zero() {
        let text = Metrics::new().encode();
        for line in [
            r#"wsgate_client_errors_total{code="rate_limited"} 0"#,
            r#"wsgate_auth_failures_total{reason="expired"} 0"#,
            r#"wsgate_sockets_shed_total{reason="handshakes"} 0"#,
            r#"wsgate_nats_errors_total{kind="slow_consumer"} 0"#,
            r#"wsgate_upgrades_refused_total{code="503",reason="capacity"} 0"#,
            r#"wsgate_api_requests_total{endpoint="/api/v1/publish",status="200"} 0"#,
            r#"wsgate_closes_total{initiator="network",code="1006"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
        assert!(
            text.contains(&format!(
                r#"wsgate_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
