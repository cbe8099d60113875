//! The resolved configuration: every key typed and validated, from the layers flag > `WSGATE_*`
//! environment variable > file > default.
//!
//! Resolution happens once, at startup (and for `--check-config`); the gateway passes the typed
//! values down and never looks at strings, flags or the environment again. The built-in defaults
//! are written once, in the key table ([`KEYS`](crate::KEYS)); the `Default` impls of the
//! sections below read them from there.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Origin};
use crate::file::{
    AuthSection, DrainSection, FileConfig, HistorySection, LimitsSection, NamespaceSection,
    NatsSection, ParsedFile,
};
use crate::key::default_of;
use crate::namespace::{DEFAULT_NAMESPACE, DEMO_NAMESPACE, demo_section};
use crate::{Args, Namespace, Namespaces, Result, Secret, key, validate};

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
    /// Per-namespace room behaviour.
    pub namespaces: Namespaces,
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
    /// Client-fault error replies tolerated within 60 s; more: 1008.
    pub max_errors_per_minute: u32,
    /// Server ping interval.
    pub heartbeat: Duration,
    /// Time without a pong before closing with 1011; longer than `heartbeat`.
    pub heartbeat_timeout: Duration,
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
            max_errors_per_minute: default_of("limits.max_errors_per_minute"),
            heartbeat: Duration::from_millis(default_of("limits.heartbeat_ms")),
            heartbeat_timeout: Duration::from_millis(default_of("limits.heartbeat_timeout_ms")),
        }
    }
}

/// Smallest `limits.max_message_bytes`: below it the protocol's own frames do not fit.
pub const MIN_MESSAGE_BYTES: usize = 1024;

/// Largest `limits.max_message_bytes`: NATS refuses larger payloads whatever its settings.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

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

/// JetStream history storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// File or memory; changing it recreates the streams and changes the epoch.
    pub storage: Storage,
    /// Stream replicas, 1 to 5.
    pub replicas: u32,
}

impl Default for History {
    fn default() -> Self {
        History {
            storage: default_of("history.storage"),
            replicas: default_of("history.replicas"),
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

/// Reads and parses a configuration file.
fn read_file(path: &Path) -> Result<(PathBuf, ParsedFile)> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    Ok((path.to_owned(), FileConfig::parse(&text, path)?))
}

/// A value and the layer it came from, so a failed check names the right source.
struct Sourced<T> {
    /// The dotted key.
    key: String,
    /// The value.
    value: T,
    /// Its layer.
    origin: Origin,
}

impl<T> Sourced<T> {
    /// The value, if `check` finds no problem with it.
    fn check(self, check: impl FnOnce(&T) -> Result<(), String>) -> Result<T> {
        match check(&self.value) {
            Ok(()) => Ok(self.value),
            Err(problem) => Err(ConfigError::invalid(self.key, self.origin, problem)),
        }
    }

    /// The value converted by `convert`, or an error naming the key and layer.
    fn map<U>(self, convert: impl FnOnce(T) -> Result<U, String>) -> Result<U> {
        let Sourced { key, value, origin } = self;
        convert(value).map_err(|problem| ConfigError::invalid(key, origin, problem))
    }
}

/// The layers below the flags: the file (if any) and the defaults.
struct Layers {
    /// The file's path, for messages.
    file: Option<PathBuf>,
}

impl Layers {
    /// The origin of a value taken from the file.
    fn file_origin(&self) -> Origin {
        self.file.clone().map_or(Origin::Default, Origin::File)
    }

    /// Picks the first layer that sets `key`: flag (or its env), file, default.
    fn pick<T>(
        &self,
        key: impl Into<String>,
        flag: Option<T>,
        file: Option<T>,
        default: impl FnOnce() -> T,
    ) -> Sourced<T> {
        let key = key.into();
        let (value, origin) = match (flag, file) {
            (Some(value), _) => (value, flag_origin(&key)),
            (None, Some(value)) => (value, self.file_origin()),
            (None, None) => (default(), Origin::Default),
        };
        Sourced { key, value, origin }
    }

    /// A key only the file sets.
    fn file_only<T>(
        &self,
        key: impl Into<String>,
        file: Option<T>,
        default: impl FnOnce() -> T,
    ) -> Sourced<T> {
        self.pick(key, None, file, default)
    }

    /// Converts a file value before it meets the flag's value of another type (an address
    /// string, a path string), naming the key and the file when it does not convert.
    fn convert<T, U>(
        &self,
        key: &str,
        file: Option<T>,
        convert: impl FnOnce(T) -> Result<U, String>,
    ) -> Result<Option<U>> {
        file.map(|value| {
            convert(value).map_err(|problem| ConfigError::invalid(key, self.file_origin(), problem))
        })
        .transpose()
    }

    /// A path key only the file sets: non-empty when present.
    fn file_path(&self, key: &str, file: Option<String>) -> Result<Option<PathBuf>> {
        self.convert(key, file, non_empty_path)
    }

    /// A duration in milliseconds that must be at least 1 ms.
    fn millis(&self, key: &str, file: Option<u64>, default: Duration) -> Result<Duration> {
        self.file_only(key, file.map(Duration::from_millis), || default)
            .check(|duration| {
                if duration.is_zero() {
                    Err("must be at least 1".to_owned())
                } else {
                    Ok(())
                }
            })
    }
}

/// The origin of a value given by a flag or its environment variable.
fn flag_origin(dotted: &str) -> Origin {
    match key::find(dotted) {
        Some(key::Key {
            flag: Some(flag),
            env,
            ..
        }) => Origin::Flag { flag, env: *env },
        _ => Origin::Default,
    }
}

/// A path given as text, which must not be empty.
fn non_empty_path(text: String) -> std::result::Result<PathBuf, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PathBuf::from(text))
}

/// An address the listeners can bind.
fn socket_addr(text: String) -> std::result::Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not an address like 0.0.0.0:8080 or [::]:8080 (IP and port)")
    })
}

/// A check that a number is at least `min`.
fn at_least<T: PartialOrd + fmt::Display>(
    min: T,
) -> impl FnOnce(&T) -> std::result::Result<(), String> {
    move |value| {
        if *value < min {
            return Err(format!("must be at least {min}"));
        }
        Ok(())
    }
}

/// Resolves every key from the flags and the parsed file.
///
/// Both inputs are destructured field by field, so a key added to [`Args`] or [`FileConfig`]
/// but not resolved here fails to compile.
fn resolve(args: Args, file: Option<(PathBuf, ParsedFile)>) -> Result<Config> {
    let Args {
        config: _,
        check_config: _,
        listen,
        admin_listen,
        cluster,
        node,
        nats_url,
        allow_anonymous,
        allowed_origins,
        demo,
        echo_endpoint,
        log_format,
        jwt_secret,
        jwt_public_key_file,
        api_keys,
        max_connections,
        max_message_bytes,
        send_queue,
        drain_seconds,
    } = args;
    let (path, parsed) = match file {
        Some((path, parsed)) => (Some(path), parsed),
        None => (
            None,
            ParsedFile {
                config: FileConfig::default(),
                warnings: Vec::new(),
            },
        ),
    };
    let ParsedFile {
        config: file,
        mut warnings,
    } = parsed;
    let FileConfig {
        version: _,
        listen: file_listen,
        admin_listen: file_admin_listen,
        cluster: file_cluster,
        node: file_node,
        nats_url: file_nats_url,
        allow_anonymous: file_allow_anonymous,
        allowed_origins: file_allowed_origins,
        require_origin: file_require_origin,
        demo: file_demo,
        echo_endpoint: file_echo_endpoint,
        log_format: file_log_format,
        nats: file_nats,
        auth: file_auth,
        limits: file_limits,
        drain: file_drain,
        history: file_history,
        namespaces: file_namespaces,
    } = file;
    let layers = Layers { file: path.clone() };

    // Never fails: a test reads every default of the key table.
    let default_listen = key::default_value("listen").ok_or_else(|| {
        ConfigError::invalid("listen", Origin::Default, "has no default in the key table")
    })?;
    let listen = layers
        .pick(
            "listen",
            listen,
            layers.convert("listen", file_listen, socket_addr)?,
            || default_listen,
        )
        .value;
    let admin_listen = layers
        .pick(
            "admin_listen",
            admin_listen.map(Some),
            layers
                .convert("admin_listen", file_admin_listen, socket_addr)?
                .map(Some),
            || None,
        )
        .value
        // The same fixed address twice means one listener; port 0 asks for a fresh port each.
        .filter(|admin| *admin != listen || admin.port() == 0);
    let cluster = layers
        .pick("cluster", cluster, file_cluster, || default_of("cluster"))
        .check(|name| validate::subject_token(name))?;
    let node = layers
        .pick("node", node, file_node, || {
            validate::node_name_from_host(&validate::host_name())
        })
        .check(|name| validate::subject_token(name))?;
    let nats_url = layers
        .pick(
            "nats_url",
            nats_url.map(Some),
            file_nats_url.map(Some),
            || None,
        )
        .map(|urls| match urls {
            // An empty value (e.g. `WSGATE_NATS_URL=`) asks for the in-process broker.
            Some(urls) if urls.trim().is_empty() => Ok(None),
            Some(urls) => validate::nats_urls(&urls).map(Some),
            None => Ok(None),
        })?;
    let allow_anonymous = layers
        .pick(
            "allow_anonymous",
            allow_anonymous,
            file_allow_anonymous,
            || default_of("allow_anonymous"),
        )
        .value;
    let allowed_origins = layers
        .pick(
            "allowed_origins",
            allowed_origins,
            file_allowed_origins,
            || default_of("allowed_origins"),
        )
        .map(|origins| {
            origins
                .iter()
                .map(|origin| origin.trim())
                .filter(|origin| !origin.is_empty())
                .map(validate::origin)
                .collect()
        })?;
    let require_origin = layers
        .file_only("require_origin", file_require_origin, || {
            default_of("require_origin")
        })
        .value;
    let demo = layers
        .pick("demo", demo, file_demo, || default_of("demo"))
        .value;
    let echo_endpoint = layers
        .pick("echo_endpoint", echo_endpoint, file_echo_endpoint, || {
            default_of("echo_endpoint")
        })
        .value;
    let log_format = layers
        .pick("log_format", log_format, file_log_format, || {
            default_of("log_format")
        })
        .value;

    let nats = resolve_nats(&layers, file_nats.unwrap_or_default())?;
    let auth = resolve_auth(
        &layers,
        FlagAuth {
            jwt_secret,
            jwt_public_key_file,
            api_keys,
        },
        file_auth.unwrap_or_default(),
    )?;
    let limits = resolve_limits(
        &layers,
        FlagLimits {
            max_connections,
            max_message_bytes,
            send_queue,
        },
        file_limits.unwrap_or_default(),
    )?;
    let drain = resolve_drain(&layers, drain_seconds, file_drain.unwrap_or_default())?;
    let history = resolve_history(&layers, file_history.unwrap_or_default())?;
    let mut namespace_sections = file_namespaces.unwrap_or_default();
    if demo && nats_url.is_none() {
        // Here, not in the gateway, so that `--check-config` and the gateway agree.
        namespace_sections
            .entry(DEMO_NAMESPACE.to_owned())
            .or_insert_with(demo_section);
    }
    let namespaces = resolve_namespaces(&layers, namespace_sections)?;

    if !allow_anonymous && !auth.verifies_tokens() {
        warnings.push(
            "no token key is configured (auth.jwt_secret_file, auth.jwt_public_key_file, auth.jwks_file) and allow_anonymous is false: every WebSocket connection will be refused"
                .to_owned(),
        );
    }
    if drain.reconnect_spread > drain.deadline {
        warnings.push(format!(
            "drain.reconnect_spread_ms ({} ms) is longer than drain.seconds ({} s): clients told to reconnect late are closed with 1001 first",
            drain.reconnect_spread.as_millis(),
            drain.deadline.as_secs()
        ));
    }

    Ok(Config {
        listen,
        admin_listen,
        cluster,
        node,
        nats_url,
        allow_anonymous,
        allowed_origins,
        require_origin,
        demo,
        echo_endpoint,
        log_format,
        nats,
        auth,
        limits,
        drain,
        history,
        namespaces,
        file: path,
        warnings,
    })
}

/// `[nats]`: only the file sets these keys.
fn resolve_nats(layers: &Layers, file: NatsSection) -> Result<NatsConfig> {
    let NatsSection {
        credentials_file,
        tls_ca_file,
        tls_cert_file,
        tls_key_file,
        ping_interval_ms,
        node_heartbeat_ms,
        request_timeout_ms,
    } = file;
    let defaults = NatsConfig::default();
    let nats = NatsConfig {
        credentials_file: layers.file_path("nats.credentials_file", credentials_file)?,
        tls_ca_file: layers.file_path("nats.tls_ca_file", tls_ca_file)?,
        tls_cert_file: layers.file_path("nats.tls_cert_file", tls_cert_file)?,
        tls_key_file: layers.file_path("nats.tls_key_file", tls_key_file)?,
        ping_interval: layers.millis(
            "nats.ping_interval_ms",
            ping_interval_ms,
            defaults.ping_interval,
        )?,
        node_heartbeat: layers.millis(
            "nats.node_heartbeat_ms",
            node_heartbeat_ms,
            defaults.node_heartbeat,
        )?,
        request_timeout: layers.millis(
            "nats.request_timeout_ms",
            request_timeout_ms,
            defaults.request_timeout,
        )?,
    };
    if nats.tls_cert_file.is_some() != nats.tls_key_file.is_some() {
        let key = if nats.tls_cert_file.is_some() {
            "nats.tls_key_file"
        } else {
            "nats.tls_cert_file"
        };
        return Err(ConfigError::invalid(
            key,
            layers.file_origin(),
            "must be set: a client certificate needs both nats.tls_cert_file and nats.tls_key_file",
        ));
    }
    Ok(nats)
}

/// The `[auth]` keys that have flags.
struct FlagAuth {
    /// `--jwt-secret`.
    jwt_secret: Option<Secret>,
    /// `--jwt-public-key-file`.
    jwt_public_key_file: Option<PathBuf>,
    /// `--api-keys`.
    api_keys: Option<Secret>,
}

/// `[auth]`: the secret flags carry values, the file names files.
fn resolve_auth(layers: &Layers, flags: FlagAuth, file: AuthSection) -> Result<AuthConfig> {
    let FlagAuth {
        jwt_secret,
        jwt_public_key_file,
        api_keys,
    } = flags;
    let AuthSection {
        jwt_secret_file,
        jwt_public_key_file: file_jwt_public_key_file,
        jwks_file,
        audience,
        issuer,
        leeway_seconds,
        require_exp,
        user_rooms,
        anonymous_rooms,
        api_keys_file,
        api_keys_files,
        auth_timeout_ms,
    } = file;
    let defaults = AuthConfig::default();
    let secret = |key: &str, flag: Option<Secret>, file: Option<String>| -> Result<_> {
        let file = layers.file_path(key, file)?.map(Secret::File);
        layers
            .pick(key, flag.map(Some), file.map(Some), || None)
            .check(|secret| match secret {
                Some(Secret::Value(value)) if value.is_empty() => {
                    Err("must not be empty".to_owned())
                }
                _ => Ok(()),
            })
    };
    let non_empty_text = |key: &str, value: Option<String>| -> Result<Option<String>> {
        layers.convert(key, value, |value: String| {
            if value.trim().is_empty() {
                Err("must not be empty (leave the key out to skip the check)".to_owned())
            } else {
                Ok(value)
            }
        })
    };
    let patterns = |key: &str, value: Option<Vec<String>>, default: Vec<String>| {
        layers.file_only(key, value, || default).check(|patterns| {
            patterns
                .iter()
                .try_for_each(|pattern| validate::room_pattern(pattern))
        })
    };
    Ok(AuthConfig {
        jwt_secret: secret("auth.jwt_secret_file", jwt_secret, jwt_secret_file)?,
        jwt_public_key_file: layers
            .pick(
                "auth.jwt_public_key_file",
                jwt_public_key_file.map(Some),
                layers
                    .file_path("auth.jwt_public_key_file", file_jwt_public_key_file)?
                    .map(Some),
                || None,
            )
            .check(|path| match path {
                Some(path) if path.as_os_str().is_empty() => Err("must not be empty".to_owned()),
                _ => Ok(()),
            })?,
        jwks_file: layers.file_path("auth.jwks_file", jwks_file)?,
        audience: non_empty_text("auth.audience", audience)?,
        issuer: non_empty_text("auth.issuer", issuer)?,
        leeway: Duration::from_secs(leeway_seconds.unwrap_or(defaults.leeway.as_secs())),
        require_exp: require_exp.unwrap_or(defaults.require_exp),
        user_rooms: patterns("auth.user_rooms", user_rooms, defaults.user_rooms)?,
        anonymous_rooms: patterns(
            "auth.anonymous_rooms",
            anonymous_rooms,
            defaults.anonymous_rooms,
        )?,
        api_keys: secret("auth.api_keys_file", api_keys, api_keys_file)?,
        api_keys_files: layers
            .convert(
                "auth.api_keys_files",
                api_keys_files,
                |files: Vec<String>| files.into_iter().map(non_empty_path).collect(),
            )?
            .unwrap_or(defaults.api_keys_files),
        auth_timeout: layers.millis(
            "auth.auth_timeout_ms",
            auth_timeout_ms,
            defaults.auth_timeout,
        )?,
    })
}

/// The `[limits]` keys that have flags.
struct FlagLimits {
    /// `--max-connections`.
    max_connections: Option<usize>,
    /// `--max-message-bytes`.
    max_message_bytes: Option<usize>,
    /// `--send-queue`.
    send_queue: Option<usize>,
}

/// `[limits]`.
fn resolve_limits(layers: &Layers, flags: FlagLimits, file: LimitsSection) -> Result<Limits> {
    let FlagLimits {
        max_connections: flag_max_connections,
        max_message_bytes: flag_max_message_bytes,
        send_queue: flag_send_queue,
    } = flags;
    let LimitsSection {
        max_connections,
        max_connections_per_user,
        max_page_size,
        max_rooms_per_connection,
        max_message_bytes,
        max_http_body_bytes,
        send_queue,
        publish_rate,
        publish_burst,
        max_errors_per_minute,
        heartbeat_ms,
        heartbeat_timeout_ms,
    } = file;
    let defaults = Limits::default();
    let heartbeat = layers.file_only(
        "limits.heartbeat_ms",
        heartbeat_ms.map(Duration::from_millis),
        || defaults.heartbeat,
    );
    let heartbeat_timeout = layers.file_only(
        "limits.heartbeat_timeout_ms",
        heartbeat_timeout_ms.map(Duration::from_millis),
        || defaults.heartbeat_timeout,
    );
    let limits = Limits {
        max_connections: layers
            .pick(
                "limits.max_connections",
                flag_max_connections,
                max_connections,
                || defaults.max_connections,
            )
            .check(at_least(1))?,
        max_connections_per_user: layers
            .file_only(
                "limits.max_connections_per_user",
                max_connections_per_user,
                || defaults.max_connections_per_user,
            )
            .check(at_least(1))?,
        max_page_size: layers
            .file_only("limits.max_page_size", max_page_size, || {
                defaults.max_page_size
            })
            .check(at_least(1))?,
        max_rooms_per_connection: layers
            .file_only(
                "limits.max_rooms_per_connection",
                max_rooms_per_connection,
                || defaults.max_rooms_per_connection,
            )
            .check(at_least(1))?,
        max_message_bytes: layers
            .pick(
                "limits.max_message_bytes",
                flag_max_message_bytes,
                max_message_bytes,
                || defaults.max_message_bytes,
            )
            .check(|bytes| {
                if (MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(bytes) {
                    Ok(())
                } else {
                    Err(format!(
                        "must be between {MIN_MESSAGE_BYTES} (1 KiB) and {MAX_MESSAGE_BYTES} (64 MiB)"
                    ))
                }
            })?,
        max_http_body_bytes: layers
            .file_only("limits.max_http_body_bytes", max_http_body_bytes, || {
                defaults.max_http_body_bytes
            })
            .check(at_least(1))?,
        send_queue: layers
            .pick("limits.send_queue", flag_send_queue, send_queue, || {
                defaults.send_queue
            })
            .check(at_least(1))?,
        publish_rate: layers
            .file_only("limits.publish_rate", publish_rate, || defaults.publish_rate)
            .check(|rate| {
                if rate.is_finite() && *rate > 0.0 {
                    Ok(())
                } else {
                    Err("must be a number greater than 0".to_owned())
                }
            })?,
        publish_burst: layers
            .file_only("limits.publish_burst", publish_burst, || {
                defaults.publish_burst
            })
            .check(at_least(1))?,
        max_errors_per_minute: max_errors_per_minute.unwrap_or(defaults.max_errors_per_minute),
        heartbeat: heartbeat.value,
        heartbeat_timeout: heartbeat_timeout.value,
    };
    // Check the pair together, blaming the key the user set (the timeout when both are set).
    if limits.heartbeat.is_zero() {
        return Err(ConfigError::invalid(
            heartbeat.key,
            heartbeat.origin,
            "must be at least 1",
        ));
    }
    if limits.heartbeat_timeout <= limits.heartbeat {
        let (key, origin, problem) = if heartbeat_timeout.origin == Origin::Default {
            (
                heartbeat.key,
                heartbeat.origin,
                format!(
                    "must be less than limits.heartbeat_timeout_ms ({})",
                    limits.heartbeat_timeout.as_millis()
                ),
            )
        } else {
            (
                heartbeat_timeout.key,
                heartbeat_timeout.origin,
                format!(
                    "must be greater than limits.heartbeat_ms ({})",
                    limits.heartbeat.as_millis()
                ),
            )
        };
        return Err(ConfigError::invalid(key, origin, problem));
    }
    Ok(limits)
}

/// `[drain]`.
fn resolve_drain(layers: &Layers, flag_seconds: Option<u64>, file: DrainSection) -> Result<Drain> {
    let DrainSection {
        seconds,
        reconnect_spread_ms,
    } = file;
    let defaults = Drain::default();
    Ok(Drain {
        deadline: Duration::from_secs(
            layers
                .pick("drain.seconds", flag_seconds, seconds, || {
                    defaults.deadline.as_secs()
                })
                .value,
        ),
        reconnect_spread: reconnect_spread_ms
            .map_or(defaults.reconnect_spread, Duration::from_millis),
    })
}

/// `[history]`.
fn resolve_history(layers: &Layers, file: HistorySection) -> Result<History> {
    let HistorySection { storage, replicas } = file;
    let defaults = History::default();
    Ok(History {
        storage: storage.unwrap_or(defaults.storage),
        replicas: layers
            .file_only("history.replicas", replicas, || defaults.replicas)
            .check(|replicas| {
                if (1..=MAX_REPLICAS).contains(replicas) {
                    Ok(())
                } else {
                    Err(format!("must be from 1 to {MAX_REPLICAS}"))
                }
            })?,
    })
}

/// `[namespaces.<ns>]`: `default` first, then every other namespace over it.
fn resolve_namespaces(
    layers: &Layers,
    mut sections: BTreeMap<String, NamespaceSection>,
) -> Result<Namespaces> {
    let default = match sections.remove(DEFAULT_NAMESPACE) {
        Some(section) => {
            resolve_namespace(layers, DEFAULT_NAMESPACE, section, &Namespace::default())?
        }
        None => Namespace::default(),
    };
    let mut named = BTreeMap::new();
    for (name, section) in sections {
        if let Err(problem) = validate::namespace_name(&name) {
            return Err(ConfigError::invalid(
                key::dotted(&["namespaces", &name]),
                layers.file_origin(),
                problem,
            ));
        }
        let namespace = resolve_namespace(layers, &name, section, &default)?;
        named.insert(name, namespace);
    }
    Ok(Namespaces { default, named })
}

/// One namespace, taking what it leaves out from `base`.
fn resolve_namespace(
    layers: &Layers,
    name: &str,
    section: NamespaceSection,
    base: &Namespace,
) -> Result<Namespace> {
    let NamespaceSection {
        history_size,
        history_ttl_seconds,
        recovery_max,
        presence,
        join_leave,
        client_publish,
    } = section;
    let key = |field: &str| key::dotted(&["namespaces", name, field]);
    Ok(Namespace {
        history_size: history_size.unwrap_or(base.history_size),
        history_ttl: history_ttl_seconds.map_or(base.history_ttl, Duration::from_secs),
        recovery_max: layers
            .file_only(key("recovery_max"), recovery_max, || base.recovery_max)
            .check(at_least(1))?,
        presence: presence.unwrap_or(base.presence),
        join_leave: join_leave.unwrap_or(base.join_leave),
        client_publish: client_publish.unwrap_or(base.client_publish),
    })
}
