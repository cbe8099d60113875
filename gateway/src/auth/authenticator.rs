//! The [`Authenticator`]: verifies tokens and API keys with key material that can be rotated
//! while the gateway runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wsgate_config::AuthConfig;

use super::error::AuthError;
use super::identity::Identity;
use super::jwt::{self, Policy};
use super::keys::{Material, Sources};
use super::pattern::Patterns;

/// The shortest interval [`Authenticator::spawn_reloader`] polls at.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// Verifies client tokens and backend API keys.
///
/// Built once from [`AuthConfig`] and shared (`Arc<Authenticator>`) by every session and the
/// backend API. The key material (JWT keys and API keys) sits behind an [`ArcSwap`]: every
/// check reads a consistent snapshot without locking, and [`Authenticator::reload`] replaces
/// the whole snapshot at once when a mounted Secret is rotated. Settings other than key material
/// (audience, issuer, leeway, room patterns) are fixed for the authenticator's life.
pub struct Authenticator {
    sources: Sources,
    policy: Policy,
    anonymous_rooms: Patterns,
    material: ArcSwap<Material>,
    /// Serialises reloads, so two concurrent reloads cannot swap in older material last.
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Sources redact values; key material is never printed.
        f.debug_struct("Authenticator")
            .field("sources", &self.sources)
            .field("policy", &self.policy)
            .field("anonymous_rooms", &self.anonymous_rooms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Reads the key files and values and validates the room patterns of `settings`.
    ///
    /// # Errors
    /// [`AuthError::KeyFile`] naming a file that cannot be read or holds no usable key,
    /// [`AuthError::KeyValue`] for an unusable flag value, and [`AuthError::InvalidSetting`] for
    /// an invalid pattern in `user_rooms` or `anonymous_rooms`.
    pub fn new(settings: AuthConfig) -> Result<Self, AuthError> {
        let AuthConfig {
            jwt_secret,
            jwt_public_key_file,
            jwks_file,
            audience,
            issuer,
            leeway,
            require_exp,
            user_rooms,
            anonymous_rooms,
            api_keys,
            api_keys_files,
            // Enforced by the session, not by key checks.
            auth_timeout: _,
        } = settings;
        let user_rooms =
            Patterns::parse(&user_rooms).map_err(|source| AuthError::InvalidSetting {
                setting: "auth.user_rooms",
                source,
            })?;
        let anonymous_rooms =
            Patterns::parse(&anonymous_rooms).map_err(|source| AuthError::InvalidSetting {
                setting: "auth.anonymous_rooms",
                source,
            })?;
        let sources = Sources {
            jwt_secret,
            jwt_public_key_file,
            jwks_file,
            api_keys,
            api_keys_files,
        };
        let material = Material::load(&sources)?;
        let policy = Policy {
            audience,
            issuer,
            leeway_seconds: leeway.as_secs(),
            require_exp,
            user_rooms,
        };
        Ok(Self {
            sources,
            policy,
            anonymous_rooms,
            material: ArcSwap::from_pointee(material),
            reload_lock: Mutex::new(()),
        })
    }

    /// Verifies a client token (docs/protocol.md, "Connecting") and returns who it identifies.
    ///
    /// # Errors
    /// Every token failure is an [`AuthError`] for which
    /// [`is_token_error`](AuthError::is_token_error) holds; answer it with `unauthorized`.
    /// [`AuthError::NoKeys`] when no JWT key is configured.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// [`Authenticator::verify`] at a given Unix time, for tests.
    pub(crate) fn verify_at(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        jwt::verify(&self.material.load().jwt, &self.policy, token, now)
    }

    /// The identity of a connection without a token: user `anon:<conn_id>`, the configured
    /// anonymous patterns for joining and publishing, no direct messages, no expiry.
    pub fn anonymous(&self, conn_id: &str) -> Identity {
        Identity {
            user: format!("{}{conn_id}", super::identity::ANONYMOUS_PREFIX),
            join: self.anonymous_rooms.clone(),
            publish: self.anonymous_rooms.clone(),
            send: false,
            expires_at: None,
            anonymous: true,
        }
    }

    /// Whether `presented` (the bearer value of a backend API request) is a configured API key.
    /// Takes the same time whichever key matches, and `false` when no key is configured.
    pub fn check_api_key(&self, presented: &str) -> bool {
        self.material.load().api_keys.check(presented)
    }

    /// Whether any API key is configured; without one, the backend API refuses every request.
    pub fn has_api_keys(&self) -> bool {
        !self.material.load().api_keys.is_empty()
    }

    /// Whether any JWT key is configured; without one, no token can be accepted.
    pub fn has_keys(&self) -> bool {
        !self.material.load().jwt.is_empty()
    }

    /// The clock skew allowed on `exp` and `nbf` (whole seconds).
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.policy.leeway_seconds)
    }

    /// When a connection with `identity` must be closed with 4001: its `exp` plus the leeway, in
    /// Unix seconds; `None` when it never expires.
    pub fn deadline(&self, identity: &Identity) -> Option<u64> {
        identity
            .expires_at
            .map(|exp| exp.saturating_add(self.policy.leeway_seconds))
    }

    /// Whether `identity` has expired at Unix time `now_unix` (`exp` plus the leeway has
    /// passed), the same rule [`Authenticator::verify`] applies to `exp`.
    pub fn identity_expired(&self, identity: &Identity, now_unix: u64) -> bool {
        self.deadline(identity)
            .is_some_and(|deadline| now_unix >= deadline)
    }

    /// Re-reads the key files and, when their contents changed, swaps in the new key material.
    ///
    /// Returns whether anything changed. Contents are compared, not inodes or modification
    /// times, because Kubernetes rotates mounted Secrets by swapping a symlink. Blocking file
    /// I/O: call it from a blocking context (as [`Authenticator::spawn_reloader`] does).
    ///
    /// # Errors
    /// The first file that cannot be read or parsed; the previous key material stays in force
    /// (nothing is swapped unless every source is good).
    pub fn reload(&self) -> Result<bool, AuthError> {
        let _guard = self.reload_lock.lock();
        let current = self.material.load();
        match Material::load_if_changed(&self.sources, &current.fingerprint)? {
            None => Ok(false),
            Some(material) => {
                self.material.store(Arc::new(material));
                Ok(true)
            }
        }
    }

    /// Spawns a task that calls [`Authenticator::reload`] every `interval` (at least 100 ms)
    /// until `cancel` fires.
    ///
    /// Logs `info` when keys change and `warn` when a reload fails (once per distinct error,
    /// so a Secret that stays broken does not flood the log); log lines name files, never key
    /// contents.
    pub fn spawn_reloader(
        self: Arc<Self>,
        interval: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let interval = interval.max(MIN_RELOAD_INTERVAL);
        let task = async move {
            let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut last_error: Option<AuthError> = None;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let this = Arc::clone(&self);
                match tokio::task::spawn_blocking(move || this.reload()).await {
                    Ok(Ok(changed)) => {
                        if changed {
                            let material = self.material.load();
                            tracing::info!(
                                jwt_keys = material.jwt.len(),
                                api_keys = material.api_keys.len(),
                                "auth keys reloaded"
                            );
                        } else if last_error.is_some() {
                            tracing::info!("auth key files readable again; keys unchanged");
                        }
                        last_error = None;
                    }
                    Ok(Err(error)) => {
                        if last_error.as_ref() != Some(&error) {
                            tracing::warn!(%error, "auth key reload failed; keeping the previous keys");
                        }
                        last_error = Some(error);
                    }
                    Err(error) => tracing::warn!(%error, "auth key reload task failed"),
                }
            }
        };
        tokio::spawn(task.instrument(tracing::info_span!("auth_reloader")))
    }
}

/// Seconds since the Unix epoch (0 if the clock is set before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
