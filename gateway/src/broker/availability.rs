//! Whether each history namespace can store messages right now: the gauge
//! `wsgate_history_available{namespace}`, the `history` of this node's stats,
//! and one log line whenever a namespace changes state, with the reason.
//!
//! Readiness does not follow it: taking every pod out of the Service would also
//! cut the rooms without history. The operator reads it from the stats instead
//! and reports it on the WsCluster.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::{info, warn};
use wsgate_config::{DEFAULT_NAMESPACE, Namespaces};

use crate::metrics::{Metrics, NamespaceLabel};

/// The history namespaces and whether each can store messages.
pub struct Availability {
    metrics: Arc<Metrics>,
    state: Mutex<BTreeMap<String, bool>>,
}

impl Availability {
    /// Tracks every namespace of `namespaces` that keeps history, starting at
    /// `initially`.
    pub fn new(metrics: Arc<Metrics>, namespaces: &Namespaces, initially: bool) -> Self {
        let names = std::iter::once((DEFAULT_NAMESPACE, &namespaces.default))
            .chain(
                namespaces
                    .named
                    .iter()
                    .map(|(name, namespace)| (name.as_str(), namespace)),
            )
            .filter(|(_, namespace)| namespace.history_size > 0)
            .map(|(name, _)| name.to_owned());
        let state: BTreeMap<String, bool> = names.map(|name| (name, initially)).collect();
        for name in state.keys() {
            gauge(&metrics, name).set(i64::from(initially));
        }
        Self {
            metrics,
            state: Mutex::new(state),
        }
    }

    /// The namespaces tracked.
    pub fn namespaces(&self) -> Vec<String> {
        self.state.lock().keys().cloned().collect()
    }

    /// Records that `namespace` can store messages.
    pub fn up(&self, namespace: &str) {
        if self.set(namespace, true) {
            info!(namespace, "history available again");
        }
    }

    /// Records that `namespace` cannot store messages, and why.
    pub fn down(&self, namespace: &str, reason: &dyn Display) {
        if self.set(namespace, false) {
            warn!(namespace, %reason, "history unavailable: publishes to its rooms fail");
        }
    }

    /// Each tracked namespace and whether it is available.
    pub fn snapshot(&self) -> BTreeMap<String, bool> {
        self.state.lock().clone()
    }

    /// Sets the state; returns whether it changed.
    fn set(&self, namespace: &str, available: bool) -> bool {
        let mut state = self.state.lock();
        let Some(current) = state.get_mut(namespace) else {
            return false;
        };
        gauge(&self.metrics, namespace).set(i64::from(available));
        std::mem::replace(current, available) != available
    }
}

fn gauge(metrics: &Metrics, namespace: &str) -> prometheus_client::metrics::gauge::Gauge {
    metrics
        .history_available
        .get_or_create(&NamespaceLabel {
            namespace: namespace.to_owned(),
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaces() -> Namespaces {
        let file = "version = 1\n[namespaces.chat]\nhistory_size = 5\n[namespaces.plain]\npresence = true\n";
        wsgate_config::Config::from_toml(file, std::path::Path::new("t.toml"))
            .unwrap()
            .namespaces
    }

    /// Only namespaces with history are tracked; the gauge follows every change.
    #[test]
    fn the_gauge_follows_each_history_namespace() {
        let metrics = Arc::new(Metrics::new());
        let availability = Availability::new(metrics.clone(), &namespaces(), true);
        assert_eq!(availability.namespaces(), ["chat"]);
        assert!(
            metrics
                .encode()
                .contains("wsgate_history_available{namespace=\"chat\"} 1")
        );
        availability.down("chat", &"no JetStream");
        assert!(!availability.snapshot()["chat"]);
        assert!(
            metrics
                .encode()
                .contains("wsgate_history_available{namespace=\"chat\"} 0")
        );
        availability.down("plain", &"not tracked");
        assert!(!availability.snapshot().contains_key("plain"));
        availability.up("chat");
        assert!(
            metrics
                .encode()
                .contains("wsgate_history_available{namespace=\"chat\"} 1")
        );
    }
}
