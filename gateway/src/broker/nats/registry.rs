//! The node registry: which nodes are alive, from their heartbeats on
//! `wsgate.<cluster>.nodes`. Scatter-gather waits for exactly these nodes.
//!
//! Each heartbeat also carries the node's load (connections, its
//! `max_connections`, whether it is ready and draining), which the rebalancer
//! compares across the fleet. The registry's view of the fleet is *partial*
//! while a live node has sent no counts, or its last heartbeat is older than
//! one of its intervals (with a quarter interval allowed for delivery).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info_span};

use super::NatsBroker;
use crate::broker::{Fleet, LoadReport, NodeLoad};

/// A registry heartbeat. The load fields are absent from older nodes and
/// from a node whose gateway has not reported its load yet.
#[derive(Serialize, Deserialize)]
pub(super) struct Heartbeat {
    node: String,
    interval_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hello: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gone: bool,
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    load: Option<NodeLoad>,
}

/// What the registry knows of another node.
struct Seen {
    /// When its last heartbeat arrived.
    at: Instant,
    /// Its heartbeat interval.
    interval: Duration,
    /// Its load from that heartbeat, if it sent one.
    load: Option<NodeLoad>,
}

impl Seen {
    /// Forgotten after three of its intervals without a heartbeat.
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.at) > self.interval.saturating_mul(3)
    }

    /// Its counts are older than one interval (plus a quarter for delivery).
    fn stale(&self, now: Instant) -> bool {
        now.duration_since(self.at) > self.interval + self.interval / 4
    }
}

/// Nodes heard from recently, and this node's own heartbeat interval.
pub(super) struct Registry {
    /// Name → what its last heartbeat said.
    nodes: Mutex<HashMap<String, Seen>>,
    interval: Duration,
    /// This node's load, for its heartbeats; set once the gateway's state exists.
    report: OnceLock<LoadReport>,
}

impl Registry {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            nodes: Mutex::default(),
            interval,
            report: OnceLock::new(),
        }
    }

    fn heard(&self, heartbeat: &Heartbeat) {
        self.heard_at(heartbeat, Instant::now());
    }

    fn heard_at(&self, heartbeat: &Heartbeat, at: Instant) {
        let mut nodes = self.nodes.lock();
        if heartbeat.gone {
            nodes.remove(&heartbeat.node);
        } else {
            let seen = Seen {
                at,
                interval: Duration::from_millis(heartbeat.interval_ms),
                load: heartbeat.load,
            };
            nodes.insert(heartbeat.node.clone(), seen);
        }
    }

    fn live(&self) -> HashSet<String> {
        let now = Instant::now();
        let mut nodes = self.nodes.lock();
        nodes.retain(|_, seen| !seen.expired(now));
        nodes.keys().cloned().collect()
    }

    /// Sets what this node's heartbeats report of its load (the first call wins).
    pub(super) fn set_report(&self, report: LoadReport) {
        let _ = self.report.set(report);
    }

    /// This node's load now, if the gateway reports it.
    fn own_load(&self) -> Option<NodeLoad> {
        self.report.get().and_then(|report| report())
    }

    /// The other live nodes' loads at `now`, and whether any is missing or stale.
    fn others(&self, now: Instant) -> (Vec<(String, NodeLoad)>, bool) {
        let mut nodes = self.nodes.lock();
        nodes.retain(|_, seen| !seen.expired(now));
        let mut partial = false;
        let mut loads = Vec::with_capacity(nodes.len());
        for (name, seen) in nodes.iter() {
            match seen.load {
                Some(load) if !seen.stale(now) => loads.push((name.clone(), load)),
                _ => partial = true,
            }
        }
        (loads, partial)
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
            load: if gone { None } else { self.registry.own_load() },
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

    /// The fleet's loads: the other live nodes' from their last heartbeats,
    /// this node's as it is now.
    pub(super) fn fleet_loads(&self) -> Fleet {
        let (mut nodes, mut partial) = self.registry.others(Instant::now());
        match self.registry.own_load() {
            Some(own) => nodes.push((self.node.clone(), own)),
            None => partial = true,
        }
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        Fleet { nodes, partial }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(node: &str, load: Option<NodeLoad>) -> Heartbeat {
        Heartbeat {
            node: node.to_owned(),
            interval_ms: 1000,
            hello: false,
            gone: false,
            load,
        }
    }

    fn load(connections: u64) -> NodeLoad {
        NodeLoad {
            connections,
            max_connections: 100,
            ready: true,
            draining: false,
        }
    }

    /// A heartbeat carries the load flat beside the node's name, and one
    /// without load fields (an older node) reads as having none.
    #[test]
    fn heartbeats_carry_the_load_and_older_ones_read_without() {
        let text = serde_json::to_string(&beat("a", Some(load(7)))).unwrap();
        assert_eq!(
            text,
            r#"{"node":"a","interval_ms":1000,"connections":7,"max_connections":100,"ready":true,"draining":false}"#
        );
        let old: Heartbeat = serde_json::from_str(r#"{"node":"b","interval_ms":2000}"#).unwrap();
        assert!(old.load.is_none());
        let back: Heartbeat = serde_json::from_str(&text).unwrap();
        assert_eq!(back.load, Some(load(7)));
    }

    /// The fleet is partial while a live node has sent no counts, or its last
    /// heartbeat is older than one interval; a node silent for three
    /// intervals is forgotten, and with it the partiality it caused.
    #[test]
    fn the_fleet_is_partial_without_counts_or_with_stale_ones() {
        let registry = Registry::new(Duration::from_secs(1));
        let start = Instant::now();
        registry.heard_at(&beat("a", Some(load(10))), start);
        let (nodes, partial) = registry.others(start + Duration::from_millis(500));
        assert_eq!(nodes, vec![("a".to_owned(), load(10))]);
        assert!(!partial);

        let (nodes, partial) = registry.others(start + Duration::from_millis(1500));
        assert!(nodes.is_empty());
        assert!(partial, "a's counts are older than one interval");

        registry.heard_at(&beat("b", None), start + Duration::from_millis(1600));
        registry.heard_at(
            &beat("a", Some(load(12))),
            start + Duration::from_millis(1600),
        );
        let (nodes, partial) = registry.others(start + Duration::from_millis(1700));
        assert_eq!(nodes, vec![("a".to_owned(), load(12))]);
        assert!(partial, "b sent no counts");

        let (nodes, partial) = registry.others(start + Duration::from_millis(5000));
        assert!(nodes.is_empty());
        assert!(!partial, "both are forgotten after three intervals");
    }
}
