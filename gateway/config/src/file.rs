//! The configuration file model: what the operator renders into a ConfigMap and what the
//! gateway reads with `--config`.
//!
//! Every field is optional (absent means "the next layer decides"), so a rendered file holds
//! only what its author set. Values are kept as written (addresses as strings, durations as
//! integers with their unit in the key's name); [`Config`](crate::Config) turns them into typed,
//! validated values.
//!
//! Parsing is strict for the versions this crate knows: [`FileConfig::parse`] checks every key
//! against [`KEYS`](crate::KEYS) before serde sees the document, so an unknown or mistyped key
//! is reported by its dotted name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, Origin, one_line};
use crate::key;
use crate::{CONFIG_VERSION, LogFormat, Result, Storage};

/// The whole file. `version` heads it; every other key may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file format version; [`CONFIG_VERSION`] for files written by this crate.
    pub version: u32,
    /// Public listener address, e.g. `0.0.0.0:8080`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Admin listener address; unset: the admin endpoints are served on `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// Cluster name, one NATS subject token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Node name, one NATS subject token (the operator leaves it out and sets `WSGATE_NODE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Comma-separated NATS URLs; unset: single node with the in-process broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// Accept connections without a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Origin allow-list; empty: any origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// Refuse upgrades without an `Origin` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_origin: Option<bool>,
    /// Serve the demo page at `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demo: Option<bool>,
    /// Serve the testing echo endpoint at `/echo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_endpoint: Option<bool>,
    /// Log line format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Extension: threads that run the gateway's connections; unset: one per usable CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// `[nats]`: connection details of the NATS cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSection>,
    /// `[auth]`: token verification and API keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSection>,
    /// `[limits]`: caps that protect the gateway and its users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSection>,
    /// `[drain]`: how a shutting-down gateway hands its connections over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainSection>,
    /// `[history]`: JetStream storage of room history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistorySection>,
    /// `[rebalance]`: moving connections to idle nodes after a scale-out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceSection>,
    /// `[namespaces.<ns>]`: per-namespace behaviour; `default` configures rooms without a
    /// configured namespace and the values other namespaces leave out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<BTreeMap<String, NamespaceSection>>,
    /// Extension: `[pusher]`, the Pusher Channels protocol (docs/pusher.md); absent: not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pusher: Option<PusherSection>,
}

impl Default for FileConfig {
    /// An empty file of the current version: every key takes its default.
    fn default() -> Self {
        FileConfig {
            version: CONFIG_VERSION,
            listen: None,
            admin_listen: None,
            cluster: None,
            node: None,
            nats_url: None,
            allow_anonymous: None,
            allowed_origins: None,
            require_origin: None,
            demo: None,
            echo_endpoint: None,
            log_format: None,
            worker_threads: None,
            nats: None,
            auth: None,
            limits: None,
            drain: None,
            history: None,
            rebalance: None,
            namespaces: None,
            pusher: None,
        }
    }
}

/// `[nats]`: credentials, TLS files and timing of the NATS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// NATS credentials (`.creds`) file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
    /// CA bundle for the servers' certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    /// Client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    /// Client certificate's private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
    /// Client ping interval, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_interval_ms: Option<u64>,
    /// Extension: interval of each node's cluster heartbeat, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_heartbeat_ms: Option<u64>,
    /// Extension: how long cluster-wide requests wait for replies, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
}

/// `[auth]`: how tokens are verified and which rooms they grant. Secrets are named by file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// File holding the HS256 key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret_file: Option<String>,
    /// RS256/ES256 public key, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_file: Option<String>,
    /// A JWKS document; keys are chosen by `kid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// Required `aud`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Required `iss`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leeway_seconds: Option<u64>,
    /// Refuse tokens without `exp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_exp: Option<bool>,
    /// Join patterns for tokens without a `rooms` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_rooms: Option<Vec<String>>,
    /// Join and publish patterns for anonymous users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_rooms: Option<Vec<String>>,
    /// File holding the backend API keys, one per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<String>,
    /// Extension: more files of backend API keys, one per line, read beside `api_keys_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys_files: Option<Vec<String>>,
    /// Time allowed for the first-frame `auth` op, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_timeout_ms: Option<u64>,
}

/// `[limits]`: caps per gateway, per user and per connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Connections per gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections per user, per gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_user: Option<usize>,
    /// Presence members per page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_page_size: Option<usize>,
    /// Rooms one connection may be in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rooms_per_connection: Option<usize>,
    /// Largest client message, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Largest backend API body, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_http_body_bytes: Option<usize>,
    /// Outgoing frames queued per connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_queue: Option<usize>,
    /// Publishes per second per connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<f64>,
    /// Publishes allowed at once above the rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_burst: Option<u32>,
    /// Command cost units per second per connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_rate: Option<f64>,
    /// Command cost units allowed at once above the rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_burst: Option<u32>,
    /// Client-fault errors tolerated per 60 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_errors_per_minute: Option<u32>,
    /// Server ping interval, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Time without a pong before closing, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Time a socket has to send a request's headers, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout_ms: Option<u64>,
    /// WebSocket connections per client address, per gateway; 0: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// Proxies whose `X-Forwarded-For` is believed: CIDRs or single addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
}

/// `[drain]`: the shutdown hand-over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainSection {
    /// Hard deadline of a drain, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// Window over which reconnects are spread, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_spread_ms: Option<u64>,
}

/// `[history]`: JetStream streams that keep room history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySection {
    /// File or memory storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// Stream replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Bytes of the single node's in-memory history over all rooms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max_bytes: Option<u64>,
}

/// `[rebalance]`: how a node above the fleet's mean load sheds its excess connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebalanceSection {
    /// Shed connections above the fleet's mean load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Relative tolerance above the mean load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Window over which a shed connection's `after_ms` is spread, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread_ms: Option<u64>,
    /// Most connections shed per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_second: Option<u32>,
    /// Only connections older than this are shed, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_age_ms: Option<u64>,
    /// Also shed connections that cannot recover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_unrecoverable: Option<bool>,
}

/// `[namespaces.<ns>]`: behaviour of the rooms in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSection {
    /// Messages kept per room; 0: no history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_size: Option<u64>,
    /// Age after which messages leave history, seconds; 0: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_ttl_seconds: Option<u64>,
    /// Bytes of history over all the namespace's rooms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_bytes: Option<u64>,
    /// Messages of history over all the namespace's rooms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_msgs: Option<u64>,
    /// Most messages one recovery returns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_max: Option<usize>,
    /// Keep cluster-wide presence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<bool>,
    /// Announce joins and leaves to members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<bool>,
    /// Let clients publish (otherwise only backends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_publish: Option<bool>,
}

/// `[pusher]`: the Pusher Channels protocol, served when the section is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherSection {
    /// `[[pusher.apps]]`: the apps whose keys admit Pusher clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<PusherAppSection>>,
}

/// `[[pusher.apps]]`: one Pusher app. Its secret is named by file, like every secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherAppSection {
    /// The app id the server SDKs put in `/apps/{id}/...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The public key clients connect with at `/app/{key}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// File holding the app secret that signs channel authorizations and API requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Connections of this app per gateway; unset: only `limits.max_connections`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Accept `client-` events on private and presence channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_client_messages: Option<bool>,
    /// Client events per second per connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_client_events_per_second: Option<u32>,
    /// Members (distinct user ids) per presence channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_presence_members: Option<usize>,
    /// Largest event `data`, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<usize>,
}

/// A parsed file and what the parser let pass with a warning.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFile {
    /// The file's contents, unknown keys of a newer version removed.
    pub config: FileConfig,
    /// One line per ignored key of a newer version; the gateway logs them.
    pub warnings: Vec<String>,
    /// The 1-based line of every key and table written in the file, by dotted key (as
    /// [`ConfigError::key`] names it), so an error about a value can point at its line.
    pub lines: BTreeMap<String, usize>,
}

impl FileConfig {
    /// Renders the file, `version` first, leaving out every unset key.
    ///
    /// The result parses back with [`FileConfig::parse`] to an equal value.
    pub fn to_toml(&self) -> String {
        // Serializing cannot fail: every map key is a string, every path is a `String` and no
        // field is of a type TOML lacks. Should it ever, the comment below has no `version`, so
        // the gateway refuses the file loudly instead of running on defaults.
        toml::to_string(self).unwrap_or_else(|error| {
            format!(
                "# wsgate-config could not render this file: {}\n",
                one_line(&error.to_string())
            )
        })
    }

    /// Parses a file's text, strictly for the versions this crate knows.
    ///
    /// `file` only names the file in errors and warnings.
    ///
    /// # Errors
    ///
    /// The text is not TOML; `version` is missing or not a version; a key has the wrong type;
    /// or, in a file of a known version, a key is unknown. In a file of a newer version,
    /// unknown keys are removed and reported in [`ParsedFile::warnings`] instead.
    pub fn parse(text: &str, file: &Path) -> Result<ParsedFile> {
        let mut table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
            let position = error
                .span()
                .map(|span| position(text, span.start))
                .unwrap_or_default();
            ConfigError::Syntax {
                file: file.to_owned(),
                message: one_line(&format!("{position}{}", error.message())),
            }
        })?;
        let version = match table.get("version") {
            None => {
                return Err(ConfigError::MissingVersion {
                    file: file.to_owned(),
                });
            }
            Some(toml::Value::Integer(version)) if *version >= 1 => {
                u32::try_from(*version).unwrap_or(u32::MAX)
            }
            Some(other) => {
                return Err(ConfigError::UnsupportedVersion {
                    file: file.to_owned(),
                    version: other.to_string(),
                });
            }
        };
        let lines = key_lines(text);
        let mut check = Check {
            file,
            version,
            lines: &lines,
            warnings: Vec::new(),
        };
        check.table(&mut table, &mut Vec::new())?;
        let mut config = FileConfig::deserialize(table).map_err(|error| ConfigError::Syntax {
            file: file.to_owned(),
            message: one_line(&error.to_string()),
        })?;
        config.version = version;
        Ok(ParsedFile {
            config,
            warnings: check.warnings,
            lines,
        })
    }
}

/// Walks a parsed document against [`KEYS`](crate::KEYS), before serde sees it.
struct Check<'a> {
    /// The file, for messages.
    file: &'a Path,
    /// The file's version: above [`CONFIG_VERSION`], unknown keys are warnings.
    version: u32,
    /// The line of each dotted key, for messages.
    lines: &'a BTreeMap<String, usize>,
    /// Warnings collected so far.
    warnings: Vec<String>,
}

impl Check<'_> {
    /// The origin of the value at `dotted`: the file and the key's line.
    fn origin(&self, dotted: &str) -> Origin {
        Origin::File {
            file: self.file.to_owned(),
            line: self.lines.get(dotted).copied(),
        }
    }

    /// Checks every entry of the table at `path`, recursing into known sections.
    fn table(&mut self, table: &mut toml::Table, path: &mut Vec<String>) -> Result<()> {
        let names: Vec<String> = table.keys().cloned().collect();
        for name in names {
            path.push(name.clone());
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            let dotted = key::dotted(&segments);
            if let Some(known) = key::find_path(&segments) {
                if let Some(value) = table.get(&name) {
                    known.kind.check(value).map_err(|problem| {
                        ConfigError::invalid(&dotted, self.origin(&dotted), problem)
                    })?;
                }
            } else if key::is_table(&segments) {
                match table.get_mut(&name) {
                    Some(toml::Value::Table(inner)) => self.table(inner, path)?,
                    _ => {
                        return Err(ConfigError::invalid(
                            &dotted,
                            self.origin(&dotted),
                            "must be a table",
                        ));
                    }
                }
            } else if let Some(items) = self.array_of_tables(table, &name, path)? {
                // `[[pusher.apps]]`: each element is checked as the table `apps[]`, and named
                // by its position (`apps[0]`) in messages.
                path.pop();
                for (index, item) in items.into_iter().enumerate() {
                    path.push(format!("{name}[{index}]"));
                    let checked = self.table(item, path);
                    path.pop();
                    checked?;
                }
                path.push(name.clone());
            } else if self.version <= CONFIG_VERSION {
                return Err(ConfigError::UnknownKey {
                    line: self.lines.get(&dotted).copied(),
                    key: dotted,
                    file: self.file.to_owned(),
                });
            } else {
                table.remove(&name);
                self.warnings.push(one_line(&format!(
                    "ignoring unknown key {dotted}{} (file version {}, this gateway knows version {CONFIG_VERSION})",
                    self.origin(&dotted),
                    self.version,
                )));
            }
            path.pop();
        }
        Ok(())
    }
}

/// The 1-based line of every key and table header in `text`, by dotted key.
///
/// Read from the spans of toml's document parser; a text that does not parse gives no lines
/// (its syntax error carries its own position).
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut lines = BTreeMap::new();
    if let Ok(document) = toml::de::DeTable::parse(text) {
        collect_lines(text, document.get_ref(), &mut Vec::new(), &mut lines);
    }
    lines
}

/// Adds the line of each key of `table` (at `path`) and of every table inside it, the
/// tables of an array of tables included (as `pusher.apps[0].id`).
fn collect_lines(
    text: &str,
    table: &toml::de::DeTable<'_>,
    path: &mut Vec<String>,
    lines: &mut BTreeMap<String, usize>,
) {
    for (name, value) in table.iter() {
        path.push(name.get_ref().to_string());
        let offset = name.span().start;
        let line = text.get(..offset).unwrap_or(text).matches('\n').count() + 1;
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        lines.entry(key::dotted(&segments)).or_insert(line);
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => collect_lines(text, inner, path, lines),
            toml::de::DeValue::Array(items) => {
                let base = path.pop().unwrap_or_default();
                for (index, item) in items.iter().enumerate() {
                    if let toml::de::DeValue::Table(inner) = item.get_ref() {
                        path.push(format!("{base}[{index}]"));
                        collect_lines(text, inner, path, lines);
                        path.pop();
                    }
                }
                path.push(base);
            }
            _ => {}
        }
        path.pop();
    }
}

impl Check<'_> {
    /// The elements of `table[name]` when the key table lists it as an array of tables
    /// (`pusher.apps[]`); an error when it is listed as one but is something else.
    fn array_of_tables<'t>(
        &self,
        table: &'t mut toml::Table,
        name: &str,
        path: &[String],
    ) -> Result<Option<Vec<&'t mut toml::Table>>> {
        let mut segments: Vec<String> = path.to_vec();
        if let Some(last) = segments.last_mut() {
            *last = format!("{name}{}", key::ARRAY_SEGMENT);
        }
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        if !key::is_table(&segments) {
            return Ok(None);
        }
        let not_tables = || {
            ConfigError::invalid(
                key::dotted(&segments),
                Origin::File {
                    file: self.file.to_owned(),
                    line: self.lines.get(&key::dotted(&segments)).copied(),
                },
                "must be an array of tables ([[...]])",
            )
        };
        match table.get_mut(name) {
            Some(toml::Value::Array(items)) => items
                .iter_mut()
                .map(|item| match item {
                    toml::Value::Table(inner) => Ok(inner),
                    _ => Err(not_tables()),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            _ => Err(not_tables()),
        }
    }
}

/// `line L, column C: ` of a byte offset, for syntax errors.
fn position(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
        + 1;
    format!("line {line}, column {column}: ")
}
