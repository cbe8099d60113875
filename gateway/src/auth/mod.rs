//! Authentication: who a connection is, and which rooms it may use.
//!
//! Clients authenticate with a JWT (docs/protocol.md, "Connecting"): HS256 with a shared secret, or
//! RS256/ES256 with a public key or a JWKS selected by `kid`. Backends authenticate with API
//! keys. Anonymous connections, when enabled, get the configured anonymous permissions.
//!
//! - [`Authenticator`] (`authenticator.rs`) is the entry point: built from the configuration's
//!   [`AuthConfig`](wsgate_config::AuthConfig) (the `auth.*` keys of docs/config.md), it turns a token into an [`Identity`] (`identity.rs`), checks API keys
//!   (`api_key.rs`), and re-reads rotated key files (`keys.rs`) without a restart.
//! - `jwt.rs` holds the token rules: header, algorithm, signature, then claims.
//! - [`RoomPattern`] and [`Patterns`] (`pattern.rs`) are the permission language of the
//!   `rooms`/`publish` claims and the `auth.*_rooms` settings.
//! - [`AuthError`] (`error.rs`) says what failed, in messages that never contain a token or key.

mod api_key;
mod authenticator;
mod bearer;
mod error;
mod identity;
mod jwt;
mod keys;
mod pattern;

#[cfg(test)]
mod tests;

pub use authenticator::Authenticator;
pub use bearer::bearer;
pub use error::AuthError;
pub use identity::Identity;
pub use pattern::{PatternError, Patterns, RoomPattern};
