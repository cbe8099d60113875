//! Prometheus metrics: one [`Metrics`] per process, every name prefixed `wsgate_`.
//!
//! Labels are low-cardinality enums (close codes, error codes, reasons): never a
//! connection, user or room id.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// A WebSocket close code label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
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
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Accepted WebSocket connections since start.
    pub connections_accepted: Counter,
    /// Upgrades refused before the handshake, by HTTP status and reason.
    pub upgrades_refused: Family<RefusalLabels, Counter>,
    /// Connections closed by the server, by close code.
    pub closes: Family<CodeLabel, Counter>,
    /// Rooms with at least one member on this node.
    pub rooms: Gauge,
    /// Messages published by clients and backends through this node.
    pub messages_in: Counter,
    /// Frames queued to local connections (messages and direct messages).
    pub messages_out: Counter,
    /// Time to queue one broker message to every local member of its room.
    pub fanout_seconds: Histogram,
    /// Connections closed because their outbound queue was full.
    pub slow_consumers: Counter,
    /// Tokens refused, by reason.
    pub auth_failures: Family<ReasonLabel, Counter>,
    /// Error replies sent to clients, by error code.
    pub client_errors: Family<ReasonLabel, Counter>,
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
    /// Open Pusher protocol connections (also counted in `connections`).
    pub pusher_connections: Gauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wsgate");
        let metrics = Self {
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            upgrades_refused: Family::default(),
            closes: Family::default(),
            rooms: Gauge::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            fanout_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            slow_consumers: Counter::default(),
            auth_failures: Family::default(),
            client_errors: Family::default(),
            broker_connected: Gauge::default(),
            nodes: Gauge::default(),
            history_available: Family::default(),
            sockets_shed: Family::default(),
            handshake_timeouts: Counter::default(),
            pusher_connections: Gauge::default(),
            registry: Registry::default(),
        };
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
            "Connections closed by the server, by close code",
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
            "messages_out",
            "Frames queued to local connections",
            metrics.messages_out.clone(),
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
            "Error replies sent to clients, by code",
            metrics.client_errors.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while the broker (NATS) connection is up",
            metrics.broker_connected.clone(),
        );
        registry.register(
            "nodes",
            "Live nodes in the cluster registry",
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
        let metrics = Self {
            registry,
            ..metrics
        };
        // Every refusal reason is scraped from the start, at zero.
        for reason in Refusal::ALL {
            metrics.refusal(reason);
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a refused token.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an error reply to a client command.
    pub fn client_error(&self, reason: &'static str) {
        self.client_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a server-initiated close.
    pub fn close(&self, code: u16) {
        self.closes.get_or_create(&CodeLabel { code }).inc();
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
