//! The node registry: which nodes are alive, from their heartbeats on
//! `wsgate.<cluster>.nodes`. Scatter-gather waits for exactly these nodes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info_span};

use super::NatsBroker;

/// A registry heartbeat.
#[derive(Serialize, Deserialize)]
pub(super) struct Heartbeat {
    node: String,
    interval_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hello: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gone: bool,
}

/// Nodes heard from recently, and this node's own heartbeat interval.
pub(super) struct Registry {
    /// Name → (last heard, how long until forgotten).
    nodes: Mutex<HashMap<String, (Instant, Duration)>>,
    interval: Duration,
}

impl Registry {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            nodes: Mutex::default(),
            interval,
        }
    }

    fn heard(&self, heartbeat: &Heartbeat) {
        let mut nodes = self.nodes.lock();
        if heartbeat.gone {
            nodes.remove(&heartbeat.node);
        } else {
            let expiry = Duration::from_millis(heartbeat.interval_ms.saturating_mul(3));
            nodes.insert(heartbeat.node.clone(), (Instant::now(), expiry));
        }
    }

    fn live(&self) -> HashSet<String> {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        nodes.retain(|_, (seen, expiry)| now.duration_since(*seen) <= *expiry);
        nodes.keys().cloned().collect()
    }

    /// This node's heartbeat interval.
    pub(super) fn interval(&self) -> Duration {
        self.interval
    }

    pub(super) fn is_live(&self, node: &str) -> bool {
        self.live().contains(node)
    }
}

impl NatsBroker {
    /// Publishes a heartbeat every interval (the first says hello) and keeps
    /// the node gauge current.
    pub(super) fn start_heartbeat(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) {
        let broker = self.clone();
        tracker.spawn(
            async move {
                let mut hello = true;
                let mut ticker = tokio::time::interval(broker.registry.interval);
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        _ = ticker.tick() => {}
                    }
                    broker.beat(hello, false).await;
                    broker.time_round_trip().await;
                    hello = false;
                    broker.metrics.nodes.set(broker.live_nodes().len() as i64);
                }
            }
            .instrument(info_span!("nats_heartbeat")),
        );
    }

    /// Publishes a registry heartbeat.
    pub(super) async fn beat(&self, hello: bool, gone: bool) {
        let heartbeat = Heartbeat {
            node: self.node.clone(),
            interval_ms: self.registry.interval.as_millis() as u64,
            hello,
            gone,
        };
        if let Ok(payload) = serde_json::to_vec(&heartbeat)
            && let Err(error) = self
                .client
                .publish(self.subjects.registry(), payload.into())
                .await
        {
            debug!(%error, "heartbeat not sent");
        }
    }

    /// Times one round trip to the NATS server (a flush is a PING answered
    /// by a PONG) into `wsgate_nats_rtt_seconds`; one that fails or takes
    /// longer than `nats.request_timeout_ms` is not recorded.
    async fn time_round_trip(&self) {
        let start = std::time::Instant::now();
        if let Ok(Ok(())) = tokio::time::timeout(self.request_timeout, self.client.flush()).await {
            self.metrics
                .nats_rtt_seconds
                .observe(start.elapsed().as_secs_f64());
        }
    }

    /// Records another node's heartbeat, answering a hello at once.
    pub(super) async fn on_heartbeat(&self, payload: &[u8]) {
        if let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(payload)
            && heartbeat.node != self.node
        {
            self.registry.heard(&heartbeat);
            if heartbeat.hello {
                self.beat(false, false).await;
            }
        }
    }

    /// Live nodes, this one included.
    pub(super) fn live_nodes(&self) -> HashSet<String> {
        let mut nodes = self.registry.live();
        nodes.insert(self.node.clone());
        nodes
    }
}
