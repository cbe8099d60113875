//! Who a connection is and what it may do, as established by a token or by anonymity.

use super::pattern::Patterns;

/// The prefix of anonymous connections' user ids (`anon:<connection id>`); no token
/// may claim a `sub` that starts with it.
pub const ANONYMOUS_PREFIX: &str = "anon:";

/// The outcome of authentication: a user id and the permissions that come with it.
///
/// A session keeps one `Identity` and replaces it on `auth` or `refresh`. Permissions are
/// checked on every `join`, `presence`, `publish` and `send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`, or `anon:<connection id>` for anonymous connections.
    pub user: String,
    /// Rooms the user may join (and list the presence of): the `rooms` claim, or the configured
    /// default.
    pub join: Patterns,
    /// Rooms the user may publish to: the `publish` claim, or the same as `join`.
    pub publish: Patterns,
    /// The user may send direct messages (the `send` claim); never for anonymous users.
    pub send: bool,
    /// The token's `exp` in Unix seconds, without leeway; `None` for anonymous connections and
    /// tokens without `exp`. See [`Authenticator::deadline`](super::Authenticator::deadline).
    pub expires_at: Option<u64>,
    /// The connection presented no token.
    pub anonymous: bool,
}

impl Identity {
    /// Whether the user may join `room` (or read its presence).
    pub fn can_join(&self, room: &str) -> bool {
        self.join.allows(room)
    }

    /// Whether the user may publish to `room`.
    pub fn can_publish(&self, room: &str) -> bool {
        self.publish.allows(room)
    }
}
