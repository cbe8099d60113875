//! The resolved configuration: every key typed and validated, from the layers flag > `WSGATE_*`
//! environment variable > file > default.
//!
//! Resolution happens once, at startup (and for `--check-config`); the gateway passes the typed
//! values down and never looks at strings, flags or the environment again. The built-in defaults
//! are written once, in the key table ([`KEYS`](crate::KEYS)); the `Default` impls of the
//! sections below read them from there.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::file::FileConfig;
use crate::key::default_of;
use crate::resolve::{read_file, resolve};
use crate::{Args, Namespaces, Result, Secret};

/// The gateway's whole configuration, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Public listener: `/ws`, `/client/`, the demo page, `/echo`.
    pub listen: SocketAddr,
    /// Admin listener: backend API, `/healthz`, `/readyz`, `/metrics`; `None`: served on
    /// `listen` (also when it was set to the same address, unless that has port 0).
    pub admin_listen: Option<SocketAddr>,
    /// Cluster name, one NATS subject token: isolates clusters sharing a NATS.
    pub cluster: String,
    /// This node's name, one NATS subject token; unique within the cluster.
    pub node: String,
    /// Comma-separated NATS URLs (blanks removed); `None`: single node, in-process broker.
    pub nats_url: Option<String>,
    /// Accept connections without a token.
    pub allow_anonymous: bool,
    /// Origin allow-list, lower-cased; empty: any origin.
    pub allowed_origins: Vec<String>,
    /// Refuse upgrades without an `Origin` header.
    pub require_origin: bool,
    /// Serve the demo page at `/`. Without NATS it also gives the namespace `demo` history,
    /// presence and join/leave events, unless the file configures it (see
    /// [`demo_section`](crate::demo_section)).
    pub demo: bool,
    /// Testing only: serve a plain echo WebSocket at `/echo`.
    pub echo_endpoint: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Threads that run the gateway's connections; `None`: one per CPU the process may use.
    pub worker_threads: Option<usize>,
    /// NATS connection details.
    pub nats: NatsConfig,
    /// Token verification and API keys.
    pub auth: AuthConfig,
    /// Caps per gateway, user and connection.
    pub limits: Limits,
    /// Shutdown hand-over.
    pub drain: Drain,
    /// JetStream history storage.
    pub history: History,
    /// Moving connections from busy nodes to idle ones after a scale-out.
    pub rebalance: Rebalance,
    /// Per-namespace room behaviour.
    pub namespaces: Namespaces,
    /// The Pusher Channels protocol; `None`: not served (no `[pusher]` section).
    pub pusher: Option<Pusher>,
    /// The file the configuration was read from, if any, for the startup log.
    pub file: Option<PathBuf>,
    /// Things worth a log line that do not stop the gateway, e.g. ignored keys of a newer
    /// file version; the gateway logs each one at startup.
    pub warnings: Vec<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where JetStream keeps room history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk: survives NATS restarts.
    #[default]
    File,
    /// In memory: faster, lost with the server.
    Memory,
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        })
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// NATS connection details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// NATS credentials (`.creds`) file.
    pub credentials_file: Option<PathBuf>,
    /// CA bundle that signs the servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate, PEM.
    pub tls_cert_file: Option<PathBuf>,
    /// Client certificate's private key, PEM.
    pub tls_key_file: Option<PathBuf>,
    /// Client ping interval: how fast a dead NATS connection is noticed.
    pub ping_interval: Duration,
    /// Extension: how often this node announces itself to the cluster.
    pub node_heartbeat: Duration,
    /// Extension: how long a cluster-wide request waits for replies.
    pub request_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            credentials_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            ping_interval: Duration::from_millis(default_of("nats.ping_interval_ms")),
            node_heartbeat: Duration::from_millis(default_of("nats.node_heartbeat_ms")),
            request_timeout: Duration::from_millis(default_of("nats.request_timeout_ms")),
        }
    }
}

/// Token verification and backend API keys: what the gateway's authenticator is built from.
///
/// Any combination of JWT keys may be configured; with none, only anonymous connections and
/// API-key requests can be authenticated. Key files are re-read when they change, so rotating a
/// mounted Secret needs no restart; the other fields are fixed for the gateway's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// HS256 key: a file (re-read on change) or, in development, the value itself. Trailing
    /// white space, such as the newline `echo` leaves, is not part of the key.
    pub jwt_secret: Option<Secret>,
    /// PEM public key for RS256 (RSA, at least 2048 bits) or ES256 (EC P-256); which one is
    /// detected from the key. Private keys and certificates are refused.
    pub jwt_public_key_file: Option<PathBuf>,
    /// A JWKS document; keys are chosen by the token's `kid`. RSA (RS256), EC P-256 (ES256) and
    /// `oct` (HS256) keys are used; other keys, and keys marked `"use":"enc"`, are skipped.
    pub jwks_file: Option<PathBuf>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`/`nbf` (whole seconds); a connection closes with 4001 at
    /// `exp` + leeway.
    pub leeway: Duration,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// Join (and publish) patterns for tokens without a `rooms` claim (validated).
    pub user_rooms: Vec<String>,
    /// Join and publish patterns for anonymous users (validated).
    pub anonymous_rooms: Vec<String>,
    /// Backend API keys: a file holding one key per line (blank lines and `#` comments
    /// ignored; re-read on change) or, in development, the comma-separated flag value stored
    /// one key per line.
    pub api_keys: Option<Secret>,
    /// Extension: more files of backend API keys, in the shape of `api_keys`' file, read
    /// beside it (whichever layer set it) and re-read on change: one Secret per backend, each
    /// rotated on its own.
    pub api_keys_files: Vec<PathBuf>,
    /// Time allowed for the first-frame `auth` op.
    pub auth_timeout: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwt_public_key_file: None,
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(default_of("auth.leeway_seconds")),
            require_exp: default_of("auth.require_exp"),
            user_rooms: default_of("auth.user_rooms"),
            anonymous_rooms: default_of("auth.anonymous_rooms"),
            api_keys: None,
            api_keys_files: default_of("auth.api_keys_files"),
            auth_timeout: Duration::from_millis(default_of("auth.auth_timeout_ms")),
        }
    }
}

impl AuthConfig {
    /// Whether any token verification key is configured; without one only anonymous
    /// connections can succeed.
    pub fn verifies_tokens(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key_file.is_some() || self.jwks_file.is_some()
    }
}

/// Caps that protect the gateway and its users.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Connections per gateway; over it: 503. The gateway lowers it below the process's
    /// open-file limit at startup.
    pub max_connections: usize,
    /// Connections per user on one gateway; over it: 429, or `limit_exceeded` then 1008.
    pub max_connections_per_user: usize,
    /// Most presence members per page.
    pub max_page_size: usize,
    /// Most rooms per connection; over it: `join` gets `limit_exceeded`.
    pub max_rooms_per_connection: usize,
    /// Largest client message; larger: 1009.
    pub max_message_bytes: usize,
    /// Largest backend API body; larger: 413.
    pub max_http_body_bytes: usize,
    /// Outgoing frames queued per connection; full: 1013.
    pub send_queue: usize,
    /// Publishes per second per connection; over it: `rate_limited`.
    pub publish_rate: f64,
    /// Publishes allowed at once above the rate.
    pub publish_burst: u32,
    /// Command cost units per second per connection, every command weighed by
    /// its cost; over it: `rate_limited`. Bounds what one connection makes the
    /// cluster do (fan-out, scatter-gather, storage reads, signature checks),
    /// where `publish_rate` bounds only publishing.
    pub command_rate: f64,
    /// Command cost units allowed at once above the rate.
    pub command_burst: u32,
    /// Client-fault error replies tolerated within 60 s; more: 1008.
    pub max_errors_per_minute: u32,
    /// Server ping interval.
    pub heartbeat: Duration,
    /// Time without a pong before closing with 1011; longer than `heartbeat`.
    pub heartbeat_timeout: Duration,
    /// Time a socket on the public listener has to send a request's headers (the first, and
    /// each next one on a kept-alive connection); then it is closed. Idle sockets otherwise
    /// hold file descriptors forever.
    pub handshake_timeout: Duration,
    /// WebSocket connections per client address on one gateway; over it: 429. `0`: no cap.
    pub max_connections_per_ip: usize,
    /// Proxies whose `X-Forwarded-For` names the client address; from any other peer the
    /// header is ignored, since anyone can write it.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_of("limits.max_connections"),
            max_connections_per_user: default_of("limits.max_connections_per_user"),
            max_page_size: default_of("limits.max_page_size"),
            max_rooms_per_connection: default_of("limits.max_rooms_per_connection"),
            max_message_bytes: default_of("limits.max_message_bytes"),
            max_http_body_bytes: default_of("limits.max_http_body_bytes"),
            send_queue: default_of("limits.send_queue"),
            publish_rate: default_of("limits.publish_rate"),
            publish_burst: default_of("limits.publish_burst"),
            command_rate: default_of("limits.command_rate"),
            command_burst: default_of("limits.command_burst"),
            max_errors_per_minute: default_of("limits.max_errors_per_minute"),
            heartbeat: Duration::from_millis(default_of("limits.heartbeat_ms")),
            heartbeat_timeout: Duration::from_millis(default_of("limits.heartbeat_timeout_ms")),
            handshake_timeout: Duration::from_millis(default_of("limits.handshake_timeout_ms")),
            max_connections_per_ip: default_of("limits.max_connections_per_ip"),
            trusted_proxies: default_of::<Vec<String>>("limits.trusted_proxies")
                .iter()
                .filter_map(|text| crate::validate::ip_network(text).ok())
                .collect(),
        }
    }
}

/// Smallest `limits.max_message_bytes`: below it the protocol's own frames do not fit.
pub const MIN_MESSAGE_BYTES: usize = 1024;

/// Largest `limits.max_message_bytes`: NATS refuses larger payloads whatever its settings.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most worker threads a gateway runs.
pub const MAX_WORKER_THREADS: usize = 1024;

/// Most JetStream replicas a stream may have.
pub const MAX_REPLICAS: u32 = 5;

/// How a shutting-down gateway hands its connections over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// Hard deadline of a drain; connections still open then are closed with 1001.
    pub deadline: Duration,
    /// `reconnect` events' `after_ms` are spread over this window.
    pub reconnect_spread: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            deadline: Duration::from_secs(default_of("drain.seconds")),
            reconnect_spread: Duration::from_millis(default_of("drain.reconnect_spread_ms")),
        }
    }
}

/// Rebalancing: how a node above the fleet's mean load hands its excess connections to the
/// others after a scale-out (docs/config.md, `rebalance.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rebalance {
    /// Whether this node sheds connections at all (it never does without NATS).
    pub enabled: bool,
    /// How far above the mean load a node may be before it sheds, relative to the mean: 0.2
    /// sheds above 120% of the mean. Below it, nodes that differ a little are left alone.
    pub tolerance: f64,
    /// `reconnect` events' `after_ms` are spread over this window.
    pub spread: Duration,
    /// Most connections one node sheds per second.
    pub max_per_second: u32,
    /// Only connections older than this are shed: a client just moved is not moved again.
    pub min_age: Duration,
    /// Also shed connections that cannot recover what they miss while they reconnect.
    pub include_unrecoverable: bool,
}

impl Default for Rebalance {
    fn default() -> Self {
        Rebalance {
            enabled: default_of("rebalance.enabled"),
            tolerance: default_of("rebalance.tolerance"),
            spread: Duration::from_millis(default_of("rebalance.spread_ms")),
            max_per_second: default_of("rebalance.max_per_second"),
            min_age: Duration::from_millis(default_of("rebalance.min_age_ms")),
            include_unrecoverable: default_of("rebalance.include_unrecoverable"),
        }
    }
}

/// Largest `rebalance.tolerance`: beyond ten times the mean, rebalancing would never start.
pub const MAX_REBALANCE_TOLERANCE: f64 = 10.0;

/// JetStream history storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// File or memory; changing it recreates the streams and changes the epoch.
    pub storage: Storage,
    /// Stream replicas, 1 to 5.
    pub replicas: u32,
    /// Bytes the single node's in-memory history may hold over all rooms: without NATS the
    /// history lives in the gateway's memory, and any number of rooms can be created, so the
    /// least recently used rooms are dropped whole beyond it. At least 1.
    pub memory_max_bytes: u64,
}

impl Default for History {
    fn default() -> Self {
        History {
            storage: default_of("history.storage"),
            replicas: default_of("history.replicas"),
            memory_max_bytes: default_of("history.memory_max_bytes"),
        }
    }
}

/// `[pusher]`: the Pusher Channels protocol (docs/pusher.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pusher {
    /// The apps, each with a distinct id and key.
    pub apps: Vec<PusherApp>,
}

/// One Pusher app: what admits its clients, signs its channels and bounds its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherApp {
    /// The id of `/apps/{id}/` in the HTTP API; one NATS subject token, since the app's
    /// channels get subjects of their own under it.
    pub id: String,
    /// The key clients connect with at `/app/{key}` and that signs `auth_key`.
    pub key: String,
    /// The app secret, always a file: read by the gateway, never by this crate.
    pub secret: Secret,
    /// Connections of this app per gateway; `None`: only `limits.max_connections`.
    pub max_connections: Option<usize>,
    /// Accept `client-` events on private and presence channels.
    pub enable_client_messages: bool,
    /// Client events per second per connection.
    pub max_client_events_per_second: u32,
    /// Distinct users per presence channel, which keeps the member list of
    /// `subscription_succeeded` within one frame.
    pub max_presence_members: usize,
    /// Largest event `data`, bytes.
    pub max_event_bytes: usize,
}

impl PusherApp {
    /// An app with every optional key at its default, for tests and the operator.
    pub fn new(id: &str, key: &str, secret_file: &Path) -> Self {
        PusherApp {
            id: id.to_owned(),
            key: key.to_owned(),
            secret: Secret::File(secret_file.to_owned()),
            max_connections: None,
            enable_client_messages: default_of("pusher.apps[].enable_client_messages"),
            max_client_events_per_second: default_of("pusher.apps[].max_client_events_per_second"),
            max_presence_members: default_of("pusher.apps[].max_presence_members"),
            max_event_bytes: default_of("pusher.apps[].max_event_bytes"),
        }
    }
}

impl Config {
    /// Resolves the configuration: flag > `WSGATE_*` environment variable (clap merged both
    /// into `args`) > the file named by `args.config` > default.
    ///
    /// `args.check_config` is not looked at: the binary handles it with
    /// [`Config::from_file`].
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed, or a value is invalid; see [`ConfigError`].
    pub fn load(args: Args) -> Result<Config> {
        let file = match &args.config {
            Some(path) => Some(read_file(path)?),
            None => None,
        };
        resolve(args, file)
    }

    /// The configuration of a file with defaults for everything else, ignoring flags and
    /// environment: what `--check-config FILE` validates.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn from_file(path: &Path) -> Result<Config> {
        resolve(Args::default(), Some(read_file(path)?))
    }

    /// The configuration of a file's text with defaults for everything else; `file` only names
    /// it in messages. Handy in tests.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn from_toml(text: &str, file: &Path) -> Result<Config> {
        Config::from_args_and_toml(Args::default(), text, file)
    }

    /// The configuration of flags over a file's text; `file` only names it in messages.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn from_args_and_toml(args: Args, text: &str, file: &Path) -> Result<Config> {
        let parsed = FileConfig::parse(text, file)?;
        resolve(args, Some((file.to_owned(), parsed)))
    }

    /// The configuration of flags alone, over the defaults.
    ///
    /// # Errors
    ///
    /// A flag's value is invalid.
    pub fn from_args(args: Args) -> Result<Config> {
        let args = Args {
            config: None,
            ..args
        };
        resolve(args, None)
    }
}
