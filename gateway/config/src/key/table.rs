//! The table itself: every configuration key, with its flag, environment variable, default,
//! kind and meaning. Adding a key starts here.

use super::{Key, Kind, LOG_FORMATS, STORAGES};

/// Every configuration key, in the order of docs/config.md (extensions beside their section).
pub const KEYS: &[Key] = &[
    key!(
        "version",
        None,
        None,
        "1",
        Kind::COUNT32,
        "file format version; required, heads the file"
    ),
    key!(
        "listen",
        Some("--listen"),
        Some("WSGATE_LISTEN"),
        "127.0.0.1:8080",
        Kind::Text,
        "public listener: /ws, /client/, demo page"
    ),
    key!(
        "admin_listen",
        Some("--admin-listen"),
        Some("WSGATE_ADMIN_LISTEN"),
        "unset",
        Kind::Text,
        "backend API, /healthz, /readyz, /metrics; unset or equal to listen: served on listen"
    ),
    key!(
        "cluster",
        Some("--cluster"),
        Some("WSGATE_CLUSTER"),
        "default",
        Kind::Text,
        "one NATS subject token ([A-Za-z0-9_-], at most 64); isolates clusters sharing a NATS"
    ),
    key!(
        "node",
        Some("--node"),
        Some("WSGATE_NODE"),
        "host name",
        Kind::Text,
        "one subject token; in Kubernetes the pod name (the default host name has other characters replaced by _)"
    ),
    key!(
        "nats_url",
        Some("--nats-url"),
        Some("WSGATE_NATS_URL"),
        "unset",
        Kind::Text,
        "comma-separated NATS URLs (nats://, tls://, ws://, wss:// or host:port); unset: single node, in-process broker"
    ),
    key!(
        "allow_anonymous",
        Some("--allow-anonymous"),
        Some("WSGATE_ALLOW_ANONYMOUS"),
        "false",
        Kind::Bool,
        "accept connections without a token"
    ),
    key!(
        "allowed_origins",
        Some("--allowed-origins"),
        Some("WSGATE_ALLOWED_ORIGINS"),
        "[]",
        Kind::TextList,
        "Origin allow-list, scheme://host[:port] or scheme://*.domain[:port]; empty: any (flag and env comma-separated)"
    ),
    key!(
        "require_origin",
        None,
        None,
        "false",
        Kind::Bool,
        "refuse upgrades without an Origin header"
    ),
    key!(
        "demo",
        Some("--demo"),
        Some("WSGATE_DEMO"),
        "false",
        Kind::Bool,
        "serve the demo page at /; without nats_url also a demo namespace (history of 100 for 1 h, presence, join/leave) unless the file has [namespaces.demo]"
    ),
    key!(
        "echo_endpoint",
        Some("--echo-endpoint"),
        Some("WSGATE_ECHO_ENDPOINT"),
        "false",
        Kind::Bool,
        "testing only: a plain echo WebSocket at /echo on the public listener, no auth or origin check, 16 MiB limits"
    ),
    key!(
        "log_format",
        Some("--log-format"),
        Some("WSGATE_LOG_FORMAT"),
        "text",
        Kind::Choice(LOG_FORMATS),
        "text or json"
    ),
    key!(extension "worker_threads", Some("--worker-threads"), Some("WSGATE_WORKER_THREADS"), "unset", Kind::WORKER_THREADS,
        "threads that run the gateway's connections; unset: one per CPU the process may use (its CPU affinity and cgroup CPU quota, so a container's CPU limit); from 1 to 1024"),
    key!(
        "nats.credentials_file",
        None,
        None,
        "unset",
        Kind::Text,
        "NATS credentials (.creds) file"
    ),
    key!(
        "nats.tls_ca_file",
        None,
        None,
        "unset",
        Kind::Text,
        "PEM CA bundle that signs the NATS servers' certificates"
    ),
    key!(
        "nats.tls_cert_file",
        None,
        None,
        "unset",
        Kind::Text,
        "PEM client certificate for NATS (with nats.tls_key_file)"
    ),
    key!(
        "nats.tls_key_file",
        None,
        None,
        "unset",
        Kind::Text,
        "PEM private key of nats.tls_cert_file"
    ),
    key!(
        "nats.ping_interval_ms",
        None,
        None,
        "5000",
        Kind::POSITIVE,
        "how fast a dead NATS connection is noticed; at least 1"
    ),
    key!(extension "nats.node_heartbeat_ms", None, None, "2000", Kind::POSITIVE,
        "how often each node announces itself to the cluster over NATS; at least 1"),
    key!(extension "nats.request_timeout_ms", None, None, "2000", Kind::POSITIVE,
        "how long a cluster-wide NATS request (stats, delivery counts) waits for replies; at least 1"),
    key!(
        "auth.jwt_secret_file",
        Some("--jwt-secret"),
        Some("WSGATE_JWT_SECRET"),
        "unset",
        Kind::Text,
        "HS256 key; the flag and env take the key itself, the file key names a file holding it"
    ),
    key!(
        "auth.jwt_public_key_file",
        Some("--jwt-public-key-file"),
        Some("WSGATE_JWT_PUBLIC_KEY_FILE"),
        "unset",
        Kind::Text,
        "RS256/ES256 PEM"
    ),
    key!(
        "auth.jwks_file",
        None,
        None,
        "unset",
        Kind::Text,
        "a JWKS; keys chosen by kid"
    ),
    key!(
        "auth.audience",
        None,
        None,
        "unset",
        Kind::Text,
        "checked against aud when set"
    ),
    key!(
        "auth.issuer",
        None,
        None,
        "unset",
        Kind::Text,
        "checked against iss when set"
    ),
    key!(
        "auth.leeway_seconds",
        None,
        None,
        "30",
        Kind::COUNT,
        "clock skew allowed on exp/nbf; a connection closes with 4001 at exp + leeway"
    ),
    key!(
        "auth.require_exp",
        None,
        None,
        "true",
        Kind::Bool,
        "tokens without exp are refused"
    ),
    key!(
        "auth.user_rooms",
        None,
        None,
        "[]",
        Kind::TextList,
        "join patterns for tokens without a rooms claim"
    ),
    key!(
        "auth.anonymous_rooms",
        None,
        None,
        "[\"**\"]",
        Kind::TextList,
        "join and publish patterns for anonymous users"
    ),
    key!(
        "auth.api_keys_file",
        Some("--api-keys"),
        Some("WSGATE_API_KEYS"),
        "unset",
        Kind::Text,
        "backend API keys; the file holds one per line, the flag and env take them comma-separated"
    ),
    key!(extension "auth.api_keys_files", None, None, "[]", Kind::TextList,
        "more files of backend API keys, one per line, read beside auth.api_keys_file and re-read when they change"),
    key!(
        "auth.auth_timeout_ms",
        None,
        None,
        "5000",
        Kind::POSITIVE,
        "time for the first-frame auth op; at least 1"
    ),
    key!(
        "limits.max_connections",
        Some("--max-connections"),
        Some("WSGATE_MAX_CONNECTIONS"),
        "10000",
        Kind::POSITIVE,
        "over it: 503; the gateway caps it below the process's open-file limit at startup"
    ),
    key!(
        "limits.max_connections_per_user",
        None,
        None,
        "100",
        Kind::POSITIVE,
        "over it: 429 before the upgrade; after an auth frame, limit_exceeded then 1008"
    ),
    key!(
        "limits.max_page_size",
        None,
        None,
        "1000",
        Kind::POSITIVE,
        "most presence members per page"
    ),
    key!(
        "limits.max_rooms_per_connection",
        None,
        None,
        "100",
        Kind::POSITIVE,
        "over it: join gets limit_exceeded"
    ),
    key!(
        "limits.max_message_bytes",
        Some("--max-message-bytes"),
        Some("WSGATE_MAX_MESSAGE_BYTES"),
        "65536",
        Kind::MESSAGE_BYTES,
        "larger frames: 1009; from 1 KiB to 64 MiB; must not exceed NATS max_payload"
    ),
    key!(
        "limits.max_http_body_bytes",
        None,
        None,
        "1048576",
        Kind::POSITIVE,
        "backend API bodies"
    ),
    key!(
        "limits.send_queue",
        Some("--send-queue"),
        Some("WSGATE_SEND_QUEUE"),
        "256",
        Kind::POSITIVE,
        "per connection; full: 1013"
    ),
    key!(
        "limits.publish_rate",
        None,
        None,
        "50",
        Kind::Number,
        "per connection, messages per second; over it: rate_limited"
    ),
    key!(
        "limits.publish_burst",
        None,
        None,
        "100",
        Kind::POSITIVE32,
        "per connection, messages allowed at once above the rate"
    ),
    key!(
        "limits.command_rate",
        None,
        None,
        "100",
        Kind::Number,
        "per connection, command cost units per second, every command weighed by its cost (docs/protocol.md); over it: rate_limited"
    ),
    key!(
        "limits.command_burst",
        None,
        None,
        "200",
        Kind::POSITIVE32,
        "per connection, command cost units allowed at once above the rate"
    ),
    key!(
        "limits.max_errors_per_minute",
        None,
        None,
        "60",
        Kind::COUNT32,
        "more client-fault error replies than this within 60 s on one connection: 1008"
    ),
    key!(
        "limits.heartbeat_ms",
        None,
        None,
        "25000",
        Kind::POSITIVE,
        "server ping interval"
    ),
    key!(
        "limits.heartbeat_timeout_ms",
        None,
        None,
        "60000",
        Kind::POSITIVE,
        "no pong within the timeout: 1011; must exceed limits.heartbeat_ms"
    ),
    key!(extension "limits.handshake_timeout_ms", None, None, "10000", Kind::POSITIVE,
        "time a socket on the public listener has to send a request's headers, the first and each next one; then it is closed; at least 1"),
    key!(extension "limits.max_connections_per_ip", None, None, "0", Kind::COUNT,
        "WebSocket connections per client address on one gateway; over it: 429 limit_exceeded; 0: no cap"),
    key!(extension "limits.trusted_proxies", None, None, "[]", Kind::TextList,
        "proxies (CIDRs like 10.0.0.0/8, or addresses) whose X-Forwarded-For names the client address; empty: the peer address is the client's"),
    key!(
        "drain.seconds",
        Some("--drain-seconds"),
        Some("WSGATE_DRAIN_SECONDS"),
        "30",
        Kind::COUNT,
        "hard deadline of a drain (then 1001)"
    ),
    key!(
        "drain.reconnect_spread_ms",
        None,
        None,
        "10000",
        Kind::COUNT,
        "after_ms values are spread over this window"
    ),
    key!(extension "rebalance.enabled", None, None, "true", Kind::Bool,
        "with NATS: a node whose load (connections / limits.max_connections) exceeds the fleet's mean by more than rebalance.tolerance sheds its excess with reconnect, then 1012"),
    key!(extension "rebalance.tolerance", None, None, "0.2", Kind::Number,
        "how far above the fleet's mean load a node may be before it sheds, relative to the mean (0.2: 20%); from 0 to 10"),
    key!(extension "rebalance.spread_ms", None, None, "5000", Kind::COUNT,
        "after_ms of a shed connection's reconnect event is spread over this window"),
    key!(extension "rebalance.max_per_second", None, None, "50", Kind::POSITIVE32,
        "most connections one node sheds per second; at least 1"),
    key!(extension "rebalance.min_age_ms", None, None, "120000", Kind::COUNT,
        "only connections older than this are shed, so that a client just moved is not moved again"),
    key!(extension "rebalance.include_unrecoverable", None, None, "false", Kind::Bool,
        "also shed connections that cannot recover missed messages (transports without since)"),
    key!(
        "history.storage",
        None,
        None,
        "file",
        Kind::Choice(STORAGES),
        "JetStream storage, file (survives restarts) or memory (faster, lost with the server); changing it recreates the streams"
    ),
    key!(
        "history.replicas",
        None,
        None,
        "1",
        Kind::REPLICAS,
        "JetStream stream replicas, 1 to 5"
    ),
    key!(extension "history.memory_max_bytes", None, None, "268435456", Kind::POSITIVE,
        "single node (no nats_url): bytes of in-memory history over all rooms; over it the least recently used rooms are dropped whole; at least 1"),
    key!(
        "namespaces.<ns>.history_size",
        None,
        None,
        "0",
        Kind::COUNT,
        "messages kept per room; 0: no history, no seq/prev/epoch"
    ),
    key!(
        "namespaces.<ns>.history_ttl_seconds",
        None,
        None,
        "0",
        Kind::COUNT,
        "0: kept until pushed out by size"
    ),
    key!(extension "namespaces.<ns>.history_max_bytes", None, None, "268435456", Kind::POSITIVE,
        "bytes of history over all the namespace's rooms (the JetStream stream's max_bytes); over it the oldest messages are discarded; at least 1"),
    key!(extension "namespaces.<ns>.history_max_msgs", None, None, "1000000", Kind::POSITIVE,
        "messages of history over all the namespace's rooms (the stream's max_msgs); over it the oldest are discarded; at least 1"),
    key!(
        "namespaces.<ns>.recovery_max",
        None,
        None,
        "1000",
        Kind::POSITIVE,
        "most messages one join with since, or one history request, returns; at least 1"
    ),
    key!(
        "namespaces.<ns>.presence",
        None,
        None,
        "false",
        Kind::Bool,
        "keep cluster-wide presence"
    ),
    key!(
        "namespaces.<ns>.join_leave",
        None,
        None,
        "false",
        Kind::Bool,
        "send joined/left events to members"
    ),
    key!(
        "namespaces.<ns>.client_publish",
        None,
        None,
        "true",
        Kind::Bool,
        "false: only backends publish"
    ),
    key!(extension "pusher.apps[].id", None, None, "unset", Kind::Text,
        "Pusher app id (one NATS subject token), the {id} of the HTTP API's /apps/{id}/; required, unique"),
    key!(extension "pusher.apps[].key", None, None, "unset", Kind::Text,
        "Pusher app key (1 to 128 letters, digits, '_', '-' or '.'), which clients connect with at /app/{key}; required, unique"),
    key!(extension "pusher.apps[].secret_file", None, None, "unset", Kind::Text,
        "file holding the app secret that signs channel authorizations and API requests; required"),
    key!(extension "pusher.apps[].max_connections", None, None, "unset", Kind::POSITIVE,
        "connections of this app per gateway, over it 4004; unset: only limits.max_connections"),
    key!(extension "pusher.apps[].enable_client_messages", None, None, "true", Kind::Bool,
        "accept client- events on private and presence channels"),
    key!(extension "pusher.apps[].max_client_events_per_second", None, None, "10", Kind::POSITIVE32,
        "client events per second per connection (4301 above it); at least 1"),
    key!(extension "pusher.apps[].max_presence_members", None, None, "100", Kind::POSITIVE,
        "distinct users per presence channel; at least 1"),
    key!(extension "pusher.apps[].max_event_bytes", None, None, "10240", Kind::POSITIVE,
        "largest event data, bytes, from clients and the HTTP API; at least 1"),
];
