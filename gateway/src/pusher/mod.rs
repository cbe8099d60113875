//! Pusher Channels compatibility: a second transport over the same hub,
//! broker and node registry, so pusher-js, Laravel Echo and the Pusher server
//! SDKs work unchanged against a wsgate cluster (docs/pusher.md).
//!
//! Served only when the configuration has `[pusher]`: clients connect to
//! `/app/{key}` on the public listener, the server SDKs call `/apps/{id}/...`
//! on the admin listener.
//!
//! # Layout
//! - `protocol`: the client protocol's frames, parsed and written.
//! - `channel`: channel names, their kinds, and their NATS subject tokens.
//! - `signature`: channel authorizations and HTTP API request signatures.
//! - `registry`: this node's channels and local subscribers, where the broker
//!   delivers events (with the socket each event skips).
//! - `roster`: cluster-wide subscribers, presence members and occupied
//!   channels, kept in hub rooms that the broker's presence gathering reads.
//! - `connection`: one client connection, from the upgrade to its close.
//! - `api`: the HTTP API of the server SDKs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::Router;

use crate::app::AppState;
use wsgate_config::{PusherApp, Secret};

mod api;
pub mod channel;
mod connection;
pub mod protocol;
mod registry;
mod roster;
pub mod signature;

/// Why the Pusher transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum PusherError {
    /// An app's secret file could not be read.
    #[error("pusher app {app}: cannot read secret_file {}", path.display())]
    ReadSecret {
        app: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An app's secret file is empty.
    #[error("pusher app {app}: secret_file {} is empty", path.display())]
    EmptySecret { app: String, path: PathBuf },
}

/// One configured app, with its secret read.
pub struct App {
    pub config: PusherApp,
    /// The secret that signs channel authorizations and API requests.
    secret: Vec<u8>,
    /// This app's connections on this node, under `max_connections`.
    connections: AtomicUsize,
}

impl App {
    /// Takes one of the app's connection places, or `None` at its quota.
    fn admit(self: &Arc<Self>) -> Option<AppSlot> {
        let max = self.config.max_connections.unwrap_or(usize::MAX);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < max).then_some(count + 1)
            })
            .ok()?;
        Some(AppSlot { app: self.clone() })
    }
}

/// One of an app's connection places, released on drop.
struct AppSlot {
    app: Arc<App>,
}

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The Pusher transport of one gateway: its apps and its local channels.
pub struct Pusher {
    by_key: HashMap<String, Arc<App>>,
    by_id: HashMap<String, Arc<App>>,
    registry: registry::Registry,
    /// Random per process: the first half of every socket id, so socket ids
    /// are unique across the cluster and across restarts.
    boot: u64,
    next_socket: AtomicU64,
    /// The last roster stamp given out (see [`Pusher::stamp`]).
    last_stamp: AtomicU64,
    /// Presence joins of one user to one channel take turns on this node
    /// (striped by a hash of both), so their stamps follow their entries'
    /// order (see `roster::is_earliest`).
    joins: Box<[tokio::sync::Mutex<()>]>,
}

/// Stripes of [`Pusher::joins`].
const JOIN_STRIPES: usize = 64;

impl Pusher {
    /// Reads every app's secret.
    ///
    /// # Errors
    /// A secret file that cannot be read or is empty.
    pub fn load(config: &wsgate_config::Pusher) -> Result<Self, PusherError> {
        let mut by_key = HashMap::new();
        let mut by_id = HashMap::new();
        for app in &config.apps {
            let secret = match &app.secret {
                Secret::Value(value) => value.clone(),
                Secret::File(path) => {
                    let text = std::fs::read_to_string(path).map_err(|source| {
                        PusherError::ReadSecret {
                            app: app.id.clone(),
                            path: path.clone(),
                            source,
                        }
                    })?;
                    let secret = text.trim_end().to_owned();
                    if secret.is_empty() {
                        return Err(PusherError::EmptySecret {
                            app: app.id.clone(),
                            path: path.clone(),
                        });
                    }
                    secret
                }
            };
            let app = Arc::new(App {
                config: app.clone(),
                secret: secret.into_bytes(),
                connections: AtomicUsize::new(0),
            });
            by_key.insert(app.config.key.clone(), app.clone());
            by_id.insert(app.config.id.clone(), app);
        }
        Ok(Self {
            by_key,
            by_id,
            registry: registry::Registry::default(),
            // Below 2^52: socket ids stay exact in JavaScript numbers too.
            boot: rand::random_range(1..(1u64 << 52)),
            next_socket: AtomicU64::new(1),
            last_stamp: AtomicU64::new(0),
            joins: (0..JOIN_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// A roster stamp: the time in nanoseconds since the Unix epoch, and
    /// always above the last one this node gave out, so that stamps order one
    /// node's entries exactly and different nodes' entries as their clocks do.
    fn stamp(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        let previous = self
            .last_stamp
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            // The closure always returns `Some`: this is the previous value.
            .unwrap_or_else(|last| last);
        now.max(previous.saturating_add(1))
    }

    /// The turn of presence joins of `user_id` to the channel of `roster`.
    fn join_turn(&self, roster: &str, user_id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (roster, user_id).hash(&mut hasher);
        // The modulo keeps the index below the stripes' count.
        let index = (hasher.finish() % self.joins.len() as u64) as usize;
        &self.joins[index]
    }

    /// A new socket id, `<boot>.<n>`: Pusher's `\d+\.\d+`.
    fn socket_id(&self) -> Arc<str> {
        let n = self.next_socket.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}.{n}", self.boot))
    }
}

/// Reads the apps' secrets and installs the transport in `state`, when the
/// configuration has `[pusher]`.
///
/// # Errors
/// As [`Pusher::load`].
pub fn install(state: &AppState) -> Result<(), PusherError> {
    if let Some(config) = &state.config.pusher {
        let _ = state.pusher.set(Arc::new(Pusher::load(config)?));
    }
    Ok(())
}

/// `/app/{key}`, when the transport is installed.
pub fn public(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    match state.pusher.get() {
        Some(_) => connection::router(),
        None => Router::new(),
    }
}

/// `/apps/{id}/...`, when the transport is installed.
pub fn admin(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    match state.pusher.get() {
        Some(_) => api::router(),
        None => Router::new(),
    }
}
