//! The table of configuration keys: the one list that the file parser, the flags, the docs and
//! the operator all agree on.
//!
//! Every key of the file appears here exactly once, with its flag and environment variable when
//! it has them, its default as text and a one-line meaning. The parser uses [`Key::kind`] to
//! refuse a mistyped value with the key's name, and to tell an unknown key from a known one; the
//! tests check that [`FileConfig`](crate::FileConfig), [`Args`](crate::Args) and
//! `docs/config.md` cover exactly these keys. It is also where every default is written:
//! [`default_of`] reads a key's default into the field's type for the `Default` impls.

use serde::de::DeserializeOwned;

/// One configuration key.
///
/// The fields are plain text so that the docs, the operator and error messages can show them
/// without knowing the key's Rust type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Dotted path in the file, e.g. `limits.send_queue`. A segment `<ns>` stands for any
    /// namespace name.
    pub key: &'static str,
    /// Command-line flag that overrides the key, e.g. `--send-queue`.
    pub flag: Option<&'static str>,
    /// Environment variable that overrides the key (below the flag), e.g. `WSGATE_SEND_QUEUE`.
    pub env: Option<&'static str>,
    /// The value used when no layer sets the key, as text for people (`unset` when absent).
    pub default: &'static str,
    /// What the key does, in one line.
    pub meaning: &'static str,
    /// The TOML type the file must give the key; checked before anything else reads the value.
    pub kind: Kind,
    /// `true` for keys added to version 1 after its first release (compatible extensions, marked
    /// in docs/config.md).
    pub extension: bool,
}

/// The TOML type a key takes in the file.
///
/// Checking types against this table, before serde sees the document, gives a type error the
/// dotted key and words for people ("must be an integer from 0 to 4294967295"), and lets the
/// same walk tell unknown keys from known ones, which a file of a newer version needs in order
/// to be read leniently. `serde_path_to_error` would give the dotted path too, but with serde's
/// wording ("invalid type: string \"big\", expected usize", "expected struct LimitsSection") and
/// no lenient mode; `figment` would bring a second TOML parser (toml 0.8) and still leave the
/// version rule and the per-layer origins of checked values to this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A string, one of the listed words.
    Choice(&'static [&'static str]),
    /// `true` or `false`.
    Bool,
    /// A non-negative integer no larger than the bound (the Rust field's range).
    Count {
        /// The largest value the field holds.
        max: u64,
    },
    /// A number, integer or float.
    Number,
    /// An array of strings.
    TextList,
}

impl Kind {
    /// The largest integer a TOML file can hold, for counts stored in `u64` and `usize`.
    const I64_MAX: u64 = i64::MAX as u64;

    /// Any non-negative TOML integer.
    const COUNT: Kind = Kind::Count { max: Self::I64_MAX };

    /// A non-negative integer that fits a `u32`.
    const COUNT32: Kind = Kind::Count {
        max: u32::MAX as u64,
    };

    /// How the type is named in an error message ("must be {expected}").
    pub fn expected(&self) -> String {
        match self {
            Kind::Text => "a string".to_owned(),
            Kind::Choice(words) => {
                let quoted: Vec<String> = words.iter().map(|word| format!("\"{word}\"")).collect();
                format!("one of {}", quoted.join(", "))
            }
            Kind::Bool => "true or false".to_owned(),
            Kind::Count { max } => format!("an integer from 0 to {max}"),
            Kind::Number => "a number".to_owned(),
            Kind::TextList => "an array of strings".to_owned(),
        }
    }

    /// Checks a TOML value against the kind, returning the problem in words.
    pub(crate) fn check(&self, value: &toml::Value) -> Result<(), String> {
        let fits = match (self, value) {
            (Kind::Text, toml::Value::String(_)) => true,
            (Kind::Choice(words), toml::Value::String(word)) => words.contains(&word.as_str()),
            (Kind::Bool, toml::Value::Boolean(_)) => true,
            (Kind::Count { max }, toml::Value::Integer(number)) => {
                u64::try_from(*number).is_ok_and(|number| number <= *max)
            }
            (Kind::Number, toml::Value::Integer(_) | toml::Value::Float(_)) => true,
            (Kind::TextList, toml::Value::Array(items)) => items
                .iter()
                .all(|item| matches!(item, toml::Value::String(_))),
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(format!("must be {}", self.expected()))
        }
    }
}

/// Writes a [`Key`] entry with less noise than the struct literal.
macro_rules! key {
    ($key:literal, $flag:expr, $env:expr, $default:literal, $kind:expr, $meaning:literal) => {
        Key {
            key: $key,
            flag: $flag,
            env: $env,
            default: $default,
            meaning: $meaning,
            kind: $kind,
            extension: false,
        }
    };
    (extension $key:literal, $flag:expr, $env:expr, $default:literal, $kind:expr, $meaning:literal) => {
        Key {
            key: $key,
            flag: $flag,
            env: $env,
            default: $default,
            meaning: $meaning,
            kind: $kind,
            extension: true,
        }
    };
}

/// The words `log_format` takes.
pub(crate) const LOG_FORMATS: &[&str] = &["text", "json"];

/// The words `history.storage` takes.
pub(crate) const STORAGES: &[&str] = &["file", "memory"];

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
        Kind::COUNT,
        "how fast a dead NATS connection is noticed; at least 1"
    ),
    key!(extension "nats.node_heartbeat_ms", None, None, "2000", Kind::COUNT,
        "how often each node announces itself to the cluster over NATS; at least 1"),
    key!(extension "nats.request_timeout_ms", None, None, "2000", Kind::COUNT,
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
        Kind::COUNT,
        "time for the first-frame auth op; at least 1"
    ),
    key!(
        "limits.max_connections",
        Some("--max-connections"),
        Some("WSGATE_MAX_CONNECTIONS"),
        "10000",
        Kind::COUNT,
        "over it: 503; the gateway caps it below the process's open-file limit at startup"
    ),
    key!(
        "limits.max_connections_per_user",
        None,
        None,
        "100",
        Kind::COUNT,
        "over it: 429 before the upgrade; after an auth frame, limit_exceeded then 1008"
    ),
    key!(
        "limits.max_page_size",
        None,
        None,
        "1000",
        Kind::COUNT,
        "most presence members per page"
    ),
    key!(
        "limits.max_rooms_per_connection",
        None,
        None,
        "100",
        Kind::COUNT,
        "over it: join gets limit_exceeded"
    ),
    key!(
        "limits.max_message_bytes",
        Some("--max-message-bytes"),
        Some("WSGATE_MAX_MESSAGE_BYTES"),
        "65536",
        Kind::COUNT,
        "larger frames: 1009; from 1 KiB to 64 MiB; must not exceed NATS max_payload"
    ),
    key!(
        "limits.max_http_body_bytes",
        None,
        None,
        "1048576",
        Kind::COUNT,
        "backend API bodies"
    ),
    key!(
        "limits.send_queue",
        Some("--send-queue"),
        Some("WSGATE_SEND_QUEUE"),
        "256",
        Kind::COUNT,
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
        Kind::COUNT32,
        "per connection, messages allowed at once above the rate"
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
        Kind::COUNT,
        "server ping interval"
    ),
    key!(
        "limits.heartbeat_timeout_ms",
        None,
        None,
        "60000",
        Kind::COUNT,
        "no pong within the timeout: 1011; must exceed limits.heartbeat_ms"
    ),
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
        Kind::COUNT32,
        "JetStream stream replicas, 1 to 5"
    ),
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
    key!(
        "namespaces.<ns>.recovery_max",
        None,
        None,
        "1000",
        Kind::COUNT,
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
];

/// The default of the key at `dotted`, read from its text in [`KEYS`] into the field's type.
///
/// The typed sections' `Default` impls and the resolver take their defaults from here, so each
/// default is written once: in the key table, which `docs/config.md` and `--help` show. A key
/// whose default is not a value (`unset`, `host name`) gives `T::default()`, and so would a
/// missing key or a text that does not read as `T`; the crate's tests prove neither happens
/// (`every_default_reads_as_its_kind`, `an_empty_file_gives_every_documented_default`).
pub(crate) fn default_of<T: DeserializeOwned + Default>(dotted: &str) -> T {
    default_value(dotted).unwrap_or_default()
}

/// The default of the key at `dotted` as `T`, when it has one that reads as `T`.
pub(crate) fn default_value<T: DeserializeOwned>(dotted: &str) -> Option<T> {
    let value = find(dotted)?.default_toml()?;
    T::deserialize(value).ok()
}

impl Key {
    /// The default as a TOML value, or `None` for `unset` and `host name`: bare words such as
    /// `file` are strings, everything else is read as TOML (`5000`, `true`, `["**"]`).
    pub(crate) fn default_toml(&self) -> Option<toml::Value> {
        if matches!(self.default, "unset" | "host name") {
            return None;
        }
        Some(match self.default.parse::<toml::Value>() {
            Ok(value) if !matches!(value, toml::Value::Datetime(_)) => value,
            _ => toml::Value::String(self.default.to_owned()),
        })
    }
}

/// The segment of [`Key::key`] that stands for any namespace name.
pub const NAMESPACE_SEGMENT: &str = "<ns>";

/// Finds the key with the given dotted path, where a namespace name matches `<ns>`.
///
/// The path is split at every `.`, so a namespace whose name holds a dot is not found; the
/// parser works on the real TOML segments instead.
pub fn find(dotted: &str) -> Option<&'static Key> {
    let path: Vec<&str> = dotted.split('.').collect();
    find_path(&path)
}

/// Finds the key at a path of TOML table names, where a namespace name matches `<ns>`.
pub(crate) fn find_path(path: &[&str]) -> Option<&'static Key> {
    KEYS.iter()
        .find(|key| matches(key.key.split('.'), path) && key.key.split('.').count() == path.len())
}

/// Whether some key lies inside the table at `path` (e.g. `nats`, `namespaces.chat`).
pub(crate) fn is_table(path: &[&str]) -> bool {
    KEYS.iter()
        .any(|key| key.key.split('.').count() > path.len() && matches(key.key.split('.'), path))
}

/// Whether `path` matches the first segments of `key` (`<ns>` matching any one segment).
fn matches<'a>(mut key: impl Iterator<Item = &'a str>, path: &[&str]) -> bool {
    path.iter().all(|segment| {
        key.next()
            .is_some_and(|wanted| wanted == NAMESPACE_SEGMENT || wanted == *segment)
    })
}

/// Joins TOML table names into a dotted key, quoting names that are not bare TOML keys (so
/// `namespaces."a.b".presence` is not mistaken for four segments).
pub(crate) fn dotted(path: &[&str]) -> String {
    let quoted: Vec<String> = path
        .iter()
        .map(|segment| {
            let bare = !segment.is_empty()
                && segment
                    .chars()
                    .all(|char| char.is_ascii_alphanumeric() || char == '_' || char == '-');
            if bare {
                (*segment).to_owned()
            } else {
                format!("{segment:?}")
            }
        })
        .collect();
    quoted.join(".")
}

/// Renders [`KEYS`] as the Markdown table of `docs/config.md` (a test keeps the two equal).
pub fn markdown_table() -> String {
    let mut table =
        String::from("| key | flag / env | default | meaning |\n| --- | --- | --- | --- |\n");
    for key in KEYS {
        let overrides = match (key.flag, key.env) {
            (Some(flag), Some(env)) => format!("`{flag}` / `{env}`"),
            (Some(flag), None) => format!("`{flag}`"),
            (None, Some(env)) => format!("`{env}`"),
            (None, None) => "—".to_owned(),
        };
        let default = match key.default {
            "unset" | "host name" => key.default.to_owned(),
            code => format!("`{code}`"),
        };
        let extension = if key.extension { " (extension)" } else { "" };
        table.push_str(&format!(
            "| `{}` | {overrides} | {default} | {}{extension} |\n",
            key.key, key.meaning
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A namespace name matches `<ns>`, and nothing else is a wildcard.
    #[test]
    fn find_matches_namespace_keys_by_any_name() {
        assert_eq!(
            find("namespaces.chat.presence").map(|key| key.key),
            Some("namespaces.<ns>.presence")
        );
        assert_eq!(
            find("limits.send_queue").map(|key| key.key),
            Some("limits.send_queue")
        );
        assert!(find("limits.send_queu").is_none());
        assert!(find("limits").is_none());
        assert!(find("namespaces.chat").is_none());
    }

    /// Tables are recognised at every depth, including a namespace's table.
    #[test]
    fn is_table_recognises_sections() {
        assert!(is_table(&["nats"]));
        assert!(is_table(&["namespaces"]));
        assert!(is_table(&["namespaces", "a.b"]));
        assert!(!is_table(&["namespaces", "chat", "presence"]));
        assert!(!is_table(&["limits", "send_queue"]));
        assert!(!is_table(&["listen"]));
        assert!(!is_table(&["nat"]));
        assert_eq!(
            dotted(&["namespaces", "a.b", "presence"]),
            "namespaces.\"a.b\".presence"
        );
    }

    /// Every key is listed once, and the text fields fit a Markdown table row.
    #[test]
    fn keys_are_unique_and_fit_one_table_row() {
        for (index, key) in KEYS.iter().enumerate() {
            assert!(
                KEYS[index + 1..].iter().all(|other| other.key != key.key),
                "{} is listed twice",
                key.key
            );
            for text in [key.key, key.default, key.meaning] {
                assert!(!text.contains('|') && !text.contains('\n'), "{text:?}");
            }
            assert_eq!(key.flag.is_some(), key.env.is_some(), "{}", key.key);
        }
    }
}
