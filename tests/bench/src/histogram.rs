//! Latency histograms (HDR, microseconds) and their summary in milliseconds, and the form in
//! which workers hand them to the coordinator.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest value recorded, in microseconds (one hour); larger values are clamped.
const HIGHEST_US: u64 = 3_600_000_000;

/// An empty latency histogram: 1 µs to an hour, three significant digits.
pub fn new() -> Histogram<u64> {
    // The bounds are constants that satisfy `new_with_bounds` (low >= 1, high >= 2 * low,
    // 3 significant figures), so this cannot fail.
    Histogram::new_with_bounds(1, HIGHEST_US, 3).unwrap_or_else(|_| unreachable!())
}

/// Records a duration given in nanoseconds.
pub fn record_ns(histogram: &mut Histogram<u64>, ns: u64) {
    histogram.saturating_record((ns / 1000).clamp(1, HIGHEST_US));
}

/// A histogram as `(value, count)` pairs: compact enough for a JSON line from a worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Wire(pub Vec<(u64, u64)>);

impl Wire {
    /// The recorded values of `histogram`.
    pub fn from(histogram: &Histogram<u64>) -> Self {
        Self(
            histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Adds these values to `histogram`.
    pub fn add_to(&self, histogram: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            // Values came from a histogram with the same bounds; clamp anyway.
            let _ = histogram.record_n(value.clamp(1, HIGHEST_US), count);
        }
    }
}

/// The percentiles a report shows, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarizes `histogram`.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.5)),
            p90_ms: ms(histogram.value_at_quantile(0.9)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}
