//! Why authentication or loading key material failed.
//!
//! Every message is safe to send to a client and to log: it names the claim, the file or the
//! setting that failed, never the token, a key, or the contents of a key file.

use std::path::PathBuf;

use super::pattern::PatternError;

/// An authentication failure (from [`Authenticator::verify`](super::Authenticator::verify)) or a
/// key-material failure (from [`Authenticator::new`](super::Authenticator::new) and
/// [`Authenticator::reload`](super::Authenticator::reload)).
///
/// Token failures are all answered with `unauthorized` (HTTP 401 or close 4001); callers that
/// need finer detail, such as a metric label, use [`AuthError::kind_label`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is not a compact JWS with a JSON header and JSON object claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),

    /// The signature does not verify with the selected key.
    #[error("bad token signature")]
    BadSignature,

    /// The token's `kid` names no configured key, or it has no `kid` and several keys could
    /// apply.
    #[error("unknown token signing key")]
    UnknownKey,

    /// `exp` plus the leeway has passed.
    #[error("token expired")]
    Expired,

    /// `nbf` minus the leeway is still in the future.
    #[error("token not yet valid")]
    NotYetValid,

    /// The header's `alg` is `none`, unsupported, or not the algorithm of the key that would
    /// verify it (the defence against algorithm confusion).
    #[error("token algorithm not accepted")]
    WrongAlgorithm,

    /// A required claim is absent.
    #[error("token is missing the `{0}` claim")]
    MissingClaim(&'static str),

    /// A claim is present but has the wrong type or an invalid value (an empty `sub`, a
    /// non-numeric `exp`, `rooms` that is not an array of strings, ...).
    #[error("token claim `{0}` is invalid")]
    InvalidClaim(&'static str),

    /// The token's `sub` starts with `anon:`, the prefix of anonymous connections' user ids:
    /// a token must not take an anonymous user's identity.
    #[error("token claim `sub` may not start with `anon:`, the prefix of anonymous users")]
    ReservedSubject,

    /// `auth.audience` is configured and the token's `aud` does not contain it.
    #[error("token audience not accepted")]
    BadAudience,

    /// `auth.issuer` is configured and the token's `iss` differs.
    #[error("token issuer not accepted")]
    BadIssuer,

    /// A room pattern in the `rooms` or `publish` claim is invalid. Only the claim name and a
    /// fixed reason are kept: the pattern itself is token content.
    #[error("token claim `{claim}` holds an invalid room pattern: {reason}")]
    InvalidPattern {
        /// `rooms` or `publish`.
        claim: &'static str,
        /// What is wrong, from [`PatternError::reason`].
        reason: &'static str,
    },

    /// A token was presented but no JWT key is configured.
    #[error("no token verification keys are configured")]
    NoKeys,

    /// A key file could not be read or does not hold usable keys.
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        /// The file as configured.
        path: PathBuf,
        /// What is wrong; never includes file contents.
        reason: String,
    },

    /// A key given as a value (the `--jwt-secret` / `--api-keys` flags) is unusable.
    #[error("{setting}: {reason}")]
    KeyValue {
        /// The setting, such as `auth.jwt_secret`.
        setting: &'static str,
        /// What is wrong; never includes the value.
        reason: &'static str,
    },

    /// A configured room pattern (`auth.user_rooms`, `auth.anonymous_rooms`) is invalid.
    #[error("{setting}: {source}")]
    InvalidSetting {
        /// The setting, such as `auth.user_rooms`.
        setting: &'static str,
        /// The pattern and what is wrong with it.
        source: PatternError,
    },
}

impl AuthError {
    /// A short, stable label for this kind of failure, for metrics (`reason="expired"`) and
    /// structured logs. Labels never change once released.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::ReservedSubject => "reserved_subject",
            Self::BadAudience => "bad_audience",
            Self::BadIssuer => "bad_issuer",
            Self::InvalidPattern { .. } => "invalid_pattern",
            Self::NoKeys => "no_keys",
            Self::KeyFile { .. } => "key_file",
            Self::KeyValue { .. } => "key_value",
            Self::InvalidSetting { .. } => "invalid_setting",
        }
    }

    /// Whether the failure is about the presented token (answered with `unauthorized`), rather
    /// than about the gateway's own key material or settings.
    pub fn is_token_error(&self) -> bool {
        !matches!(
            self,
            Self::KeyFile { .. } | Self::KeyValue { .. } | Self::InvalidSetting { .. }
        )
    }

    pub(crate) fn key_file(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Self::KeyFile {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}
