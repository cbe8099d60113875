//! The operator's Prometheus metrics (`wsgate_operator_*`), listed in
//! docs/metrics.md.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kube::ResourceExt as _;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use wsgate_crds::WsCluster;
use wsgate_crds::condition::READY;

use crate::Error;

/// Labels of a per-WsCluster metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WsClusterLabels {
    pub namespace: String,
    pub wscluster: String,
}

/// Label of the error counter: which step failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`Error::metric_label`].
    pub error: String,
}

/// Metrics of the reconciler and the stats poller.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed, by error.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile durations.
    pub duration: Histogram,
    /// Objects written by server-side apply.
    pub applies: Counter,
    /// Applies skipped because the cache already held the desired object.
    pub applies_skipped: Counter,
    /// Stats reads that failed.
    pub stats_failures: Counter,
    /// Scale changes made by the connection-aware autoscaler.
    pub autoscale_changes: Counter,
    /// The WsClusters' cache, once the controller runs (only the leader's),
    /// for `wsgate_operator_wscluster_ready` ([`ReadyCollector`]).
    wsclusters: Arc<OnceLock<Store<WsCluster>>>,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wsgate_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0]);
        let applies = Counter::default();
        let applies_skipped = Counter::default();
        let stats_failures = Counter::default();
        let autoscale_changes = Counter::default();
        let wsclusters = Arc::<OnceLock<Store<WsCluster>>>::default();
        registry.register("reconcile", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile durations",
            duration.clone(),
        );
        registry.register(
            "apply",
            "Objects written by server-side apply",
            applies.clone(),
        );
        registry.register(
            "apply_skipped",
            "Applies skipped: the cache held the desired object",
            applies_skipped.clone(),
        );
        registry.register(
            "stats_errors",
            "Stats reads that failed",
            stats_failures.clone(),
        );
        registry.register(
            "autoscale_changes",
            "Replica changes made by the connection autoscaler",
            autoscale_changes.clone(),
        );
        registry.register_collector(Box::new(ReadyCollector {
            wsclusters: wsclusters.clone(),
        }));
        // Every step a reconcile can fail at is scraped from the start, at zero.
        for error in RECONCILE_ERRORS {
            let _ = failures.get_or_create(&ErrorLabels {
                error: error.to_owned(),
            });
        }
        Self {
            reconciles,
            failures,
            duration,
            applies,
            applies_skipped,
            stats_failures,
            autoscale_changes,
            wsclusters,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// Counts a reconcile and times it until the guard drops.
    pub fn count_and_measure(&self) -> ReconcileMeasurer {
        self.reconciles.inc();
        ReconcileMeasurer {
            start: Instant::now(),
            metric: self.duration.clone(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failure(&self, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: error.metric_label().to_owned(),
            })
            .inc();
    }

    /// Reads `wsgate_operator_wscluster_ready` from `store` at each scrape
    /// from now on.
    pub fn observe(&self, store: Store<WsCluster>) {
        let _ = self.wsclusters.set(store);
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The [`Error::metric_label`]s a reconcile can fail with.
const RECONCILE_ERRORS: [&str; 11] = [
    "kube",
    "apply",
    "name_conflict",
    "delete",
    "read_secret",
    "patch_status",
    "missing_metadata",
    "serialize",
    "cache_not_ready",
    "missing_nats_credentials",
    "nats_credentials",
];

/// `wsgate_operator_wscluster_ready{namespace,wscluster}`: 1 while a
/// WsCluster's `Ready` condition is `True`, 0 otherwise, read from the
/// WsClusters' cache at each scrape, so a deleted WsCluster's series goes
/// with it. "Fleet not ready" is alerted on from it without
/// kube-state-metrics. The family is described even before the cache
/// exists (a standby, or `wsgate-operator metrics`), with no series.
#[derive(Debug)]
struct ReadyCollector {
    wsclusters: Arc<OnceLock<Store<WsCluster>>>,
}

impl Collector for ReadyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "wscluster_ready",
            "1 while a WsCluster's Ready condition is True, 0 otherwise (leader only)",
            None,
            MetricType::Gauge,
        )?;
        let Some(store) = self.wsclusters.get() else {
            return Ok(());
        };
        for wsc in store.state() {
            let ready = wsc.status.as_ref().is_some_and(|status| {
                status
                    .conditions
                    .iter()
                    .any(|condition| condition.type_ == READY && condition.status == "True")
            });
            let labels = WsClusterLabels {
                namespace: wsc.namespace().unwrap_or_default(),
                wscluster: wsc.name_any(),
            };
            ConstGauge::new(i64::from(ready)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Observes the reconcile duration when dropped (controller-rs).
pub struct ReconcileMeasurer {
    start: Instant,
    metric: Histogram,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.metric.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher};
    use wsgate_crds::WsClusterStatus;

    use super::*;
    use crate::fixtures::wsc;

    /// `wscluster_ready` has one series per cached WsCluster, 1 only with
    /// `Ready=True`, and a deleted WsCluster's series goes at the next scrape.
    #[test]
    fn wscluster_ready_follows_the_cached_ready_condition() {
        let metrics = Metrics::default();
        let (store, mut writer) = reflector::store::<WsCluster>();
        let mut ready = wsc("chat");
        ready.status = Some(WsClusterStatus {
            conditions: vec![crate::status::condition(
                READY,
                true,
                "Available",
                "2/2",
                Some(1),
            )],
            ..Default::default()
        });
        let not_ready = wsc("games");
        writer.apply_watcher_event(&watcher::Event::Apply(ready));
        writer.apply_watcher_event(&watcher::Event::Apply(not_ready.clone()));
        metrics.observe(store);

        let text = metrics.encode();
        assert!(
            text.contains(
                r#"wsgate_operator_wscluster_ready{namespace="prod",wscluster="chat"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"wsgate_operator_wscluster_ready{namespace="prod",wscluster="games"} 0"#
            ),
            "{text}"
        );

        writer.apply_watcher_event(&watcher::Event::Delete(not_ready));
        let text = metrics.encode();
        assert!(!text.contains(r#"wscluster="games""#), "{text}");
    }
}
