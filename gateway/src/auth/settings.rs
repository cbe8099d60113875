//! The plain inputs of the authenticator, filled from the configuration by the caller.
//!
//! These types deliberately do not depend on the config crate: the caller maps `auth.*` keys
//! (docs/config.md) onto them, so the two can evolve separately.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where a secret comes from.
///
/// In Kubernetes secrets are mounted files, re-read by
/// [`Authenticator::reload`](super::Authenticator::reload) when they change; values come from
/// development flags (`--jwt-secret`, `--api-keys`) and never change. `Debug` redacts values.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret (`auth.jwt_secret_file`, `auth.api_keys_file`).
    File(PathBuf),
    /// The secret itself.
    Value(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// Everything [`Authenticator::new`](super::Authenticator::new) needs, one field per `auth.*`
/// key of docs/config.md.
///
/// Any combination of JWT keys may be configured; with none, only anonymous connections and
/// API-key requests can be authenticated.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// HS256 shared secret (`auth.jwt_secret_file`, `--jwt-secret`). Trailing white space, such
    /// as the newline `echo` leaves, is not part of the secret.
    pub jwt_secret: Option<SecretSource>,
    /// PEM public key for RS256 (RSA, at least 2048 bits) or ES256 (EC P-256); which one is
    /// detected from the key. Private keys and certificates are refused.
    pub jwt_public_key_file: Option<PathBuf>,
    /// A JWKS document; keys are chosen by the token's `kid`. RSA (RS256), EC P-256 (ES256) and
    /// `oct` (HS256) keys are used; other keys, and keys marked `"use":"enc"`, are skipped.
    pub jwks_file: Option<PathBuf>,
    /// Required `aud` value (`auth.audience`); unchecked when `None`.
    pub audience: Option<String>,
    /// Required `iss` value (`auth.issuer`); unchecked when `None`.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (`auth.leeway_seconds`); whole seconds count.
    pub leeway: Duration,
    /// Refuse tokens without `exp` (`auth.require_exp`).
    pub require_exp: bool,
    /// Join (and publish) patterns for tokens without a `rooms` claim (`auth.user_rooms`).
    pub user_rooms: Vec<String>,
    /// Join and publish patterns for anonymous connections (`auth.anonymous_rooms`).
    pub anonymous_rooms: Vec<String>,
    /// Backend API keys (`auth.api_keys_file`: one key per line, blank lines and `#` comments
    /// ignored; `--api-keys`: comma-separated).
    pub api_keys: Option<SecretSource>,
}

impl Default for AuthSettings {
    /// The docs/config.md defaults: no keys, 30 s leeway, `exp` required, no user rooms, anonymous
    /// users may use every room.
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key_file: None,
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway: Duration::from_secs(30),
            require_exp: true,
            user_rooms: Vec::new(),
            anonymous_rooms: vec!["**".to_owned()],
            api_keys: None,
        }
    }
}
