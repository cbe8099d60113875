//! The wsgate gateway's configuration: one definition of every key, shared by the gateway
//! (which reads flags, `WSGATE_*` environment variables and a TOML file) and the operator
//! (which renders the file into a ConfigMap). `docs/config.md` is the contract and
//! describes every key.
//!
//! # Layout
//!
//! - [`KEYS`] (`key.rs`, the table in `key/table.rs`): the table of keys, flags, environment variables, defaults and
//!   meanings. It is the one place a default is written (the typed `Default` impls and
//!   `--help` read it); everything else is checked against it by tests.
//! - [`Args`] (`args.rs`): the clap flags, each also read from its `WSGATE_*` variable.
//! - [`FileConfig`] (`file.rs`): the file model the operator renders with
//!   [`FileConfig::to_toml`] and the gateway parses, strictly, with [`FileConfig::parse`].
//! - [`Config`] (`config.rs`): the resolved, validated, typed configuration, from
//!   [`Config::load`] (flag > env > file > default).
//! - `resolve.rs`: the layers and the top level of resolution; `resolve/section.rs` each
//!   section's keys and rules.
//! - [`Namespaces`] (`namespace.rs`): per-namespace room behaviour, the room → namespace
//!   rule, and the `demo` namespace a single node with `demo` on adds ([`demo_section`]).
//! - [`Secret`] (`secret.rs`): a secret given as a file (production) or a value (development).
//! - [`ConfigError`] (`error.rs`): one-line errors naming the key, its source and the problem.
//! - `files.rs`: [`Config::check_files`], the startup check that every file a key names can
//!   be read.
//! - `validate.rs`: checks of single values (origins, NATS URLs, subject tokens, room patterns).
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use wsgate_config::{Config, FileConfig, LimitsSection};
//!
//! // The operator renders a file...
//! let file = FileConfig {
//!     cluster: Some("prod".into()),
//!     limits: Some(LimitsSection { send_queue: Some(512), ..Default::default() }),
//!     ..Default::default()
//! };
//! let text = file.to_toml();
//! assert!(text.starts_with("version = 1\n"));
//!
//! // ...and the gateway reads it, with defaults for the rest.
//! let config = Config::from_toml(&text, Path::new("wsgate.toml"))?;
//! assert_eq!(config.limits.send_queue, 512);
//! assert_eq!(config.limits.max_connections, 10_000);
//! # Ok::<(), wsgate_config::ConfigError>(())
//! ```

mod args;
mod config;
mod error;
mod file;
mod files;
mod key;
mod namespace;
mod resolve;
mod secret;
mod validate;

pub use args::Args;
pub use config::{
    AuthConfig, Config, Drain, History, Limits, LogFormat, MAX_MESSAGE_BYTES,
    MAX_REBALANCE_TOLERANCE, MAX_REPLICAS, MAX_WORKER_THREADS, MIN_MESSAGE_BYTES, NatsConfig,
    Rebalance, Storage,
};
pub use config::{Pusher, PusherApp};
pub use error::{ConfigError, Origin};
pub use file::{
    AuthSection, DrainSection, FileConfig, HistorySection, LimitsSection, NamespaceSection,
    NatsSection, ParsedFile, RebalanceSection,
};
pub use file::{PusherAppSection, PusherSection};
pub use key::{
    ARRAY_SEGMENT, KEYS, Key, Kind, NAMESPACE_SEGMENT, find as find_key, markdown_table,
};
pub use namespace::{DEFAULT_NAMESPACE, DEMO_NAMESPACE, Namespace, Namespaces, demo_section};
pub use secret::Secret;

/// The file format version this crate reads strictly and writes.
pub const CONFIG_VERSION: u32 = 1;

/// A result whose error is a [`ConfigError`].
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
