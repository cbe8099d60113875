//! Per-namespace room behaviour, and how a room finds its namespace.
//!
//! A room's namespace is the part of its name before the first `:` (`chat:lobby` is in `chat`).
//! Rooms without `:`, and rooms whose namespace is not configured, use the default namespace.
//! A configured namespace takes every key it leaves out from the default namespace (as
//! configured, not the built-in values), so `[namespaces.default]` sets a baseline for all.
//!
//! With `demo` on and no NATS, the namespace `demo` exists even when the file leaves it out
//! ([`demo_section`]): the demo page's room, `demo:lobby`, then shows history, presence and
//! join/leave events on a laptop without any configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::file::NamespaceSection;
use crate::key::default_of;

/// How the rooms of one namespace behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Messages kept per room; 0: no history, and messages carry no `seq`/`prev`/`epoch`.
    pub history_size: u64,
    /// How long a message stays in history; zero: until pushed out by `history_size`.
    pub history_ttl: Duration,
    /// Bytes of history the namespace's rooms hold together; beyond it the namespace's oldest
    /// messages are discarded, so no number of rooms can fill the store. At least 1.
    pub history_max_bytes: u64,
    /// Messages of history the namespace's rooms hold together; beyond it the oldest are
    /// discarded. At least 1.
    pub history_max_msgs: u64,
    /// Most messages one `join` with `since`, or one history request, returns.
    pub recovery_max: usize,
    /// Keep cluster-wide presence (otherwise `presence` gets `not_supported`).
    pub presence: bool,
    /// Send `joined`/`left` events to members.
    pub join_leave: bool,
    /// Let clients publish; `false`: only backends, through the HTTP API.
    pub client_publish: bool,
}

impl Default for Namespace {
    /// The built-in values of the key table: no history, no presence, clients may publish.
    fn default() -> Self {
        Namespace {
            history_size: default_of("namespaces.<ns>.history_size"),
            history_ttl: Duration::from_secs(default_of("namespaces.<ns>.history_ttl_seconds")),
            history_max_bytes: default_of("namespaces.<ns>.history_max_bytes"),
            history_max_msgs: default_of("namespaces.<ns>.history_max_msgs"),
            recovery_max: default_of("namespaces.<ns>.recovery_max"),
            presence: default_of("namespaces.<ns>.presence"),
            join_leave: default_of("namespaces.<ns>.join_leave"),
            client_publish: default_of("namespaces.<ns>.client_publish"),
        }
    }
}

impl Namespace {
    /// Whether rooms of this namespace keep history (and so carry `seq`, `prev` and `epoch`).
    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }
}

/// The default namespace and every configured one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Rooms without a namespace or in one that is not configured; also the values configured
    /// namespaces leave out.
    pub default: Namespace,
    /// Configured namespaces by name, other than `default`, already filled in from `default`.
    pub named: BTreeMap<String, Namespace>,
}

/// The name of the namespace that holds the values other namespaces leave out.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace of the demo page's room, `demo:lobby`.
pub const DEMO_NAMESPACE: &str = "demo";

/// The `[namespaces.demo]` a single node with `demo` on resolves as if its file held it, when
/// the file configures no `demo` namespace: in-memory history of the last 100 messages for an
/// hour, presence, and join/leave events. It is resolved like any configured namespace, so
/// what it leaves out comes from the default namespace.
///
/// Only without NATS: on a fleet, history lives in JetStream, which the NATS server may not
/// offer, and a stream is something its operators create on purpose, with
/// `[namespaces.demo]` in the file.
pub fn demo_section() -> NamespaceSection {
    NamespaceSection {
        history_size: Some(100),
        history_ttl_seconds: Some(3600),
        presence: Some(true),
        join_leave: Some(true),
        ..NamespaceSection::default()
    }
}

impl Namespaces {
    /// The namespace of a room: its name before the first `:`, or the default namespace.
    pub fn for_room(&self, room: &str) -> &Namespace {
        room.split_once(':')
            .and_then(|(namespace, _)| self.named.get(namespace))
            .unwrap_or(&self.default)
    }

    /// Whether any namespace keeps history, so the gateway knows whether it needs JetStream.
    pub fn any_history(&self) -> bool {
        self.default.has_history() || self.named.values().any(Namespace::has_history)
    }

    /// Whether any namespace keeps presence.
    pub fn any_presence(&self) -> bool {
        self.default.presence || self.named.values().any(|namespace| namespace.presence)
    }
}
