//! The operator's Prometheus metrics (`wsgate_operator_*`).

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Error;

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
        Self {
            reconciles,
            failures,
            duration,
            applies,
            applies_skipped,
            stats_failures,
            autoscale_changes,
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

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
