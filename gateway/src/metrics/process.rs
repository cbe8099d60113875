//! The standard process metrics of the Prometheus client libraries
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, ...), read from `/proc/self` at each
//! scrape: prometheus-client has no process collector of its own, and these
//! names are the ones dashboards and alerts (fds near the limit) already use.
//!
//! Off Linux nothing is exported. A value `/proc` cannot give is left out of
//! that scrape rather than reported as zero.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads the process's metrics at each scrape.
#[derive(Debug)]
pub(super) struct Collector;

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for reading in readings() {
            match reading {
                Reading::Counter(name, help, value) => {
                    let counter = ConstCounter::new(value);
                    let metric =
                        encoder.encode_descriptor(name, help, None, counter.metric_type())?;
                    counter.encode(metric)?;
                }
                Reading::Gauge(name, help, value) => {
                    let gauge = ConstGauge::new(value);
                    let metric =
                        encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                    gauge.encode(metric)?;
                }
            }
        }
        Ok(())
    }
}

/// One value read, with its name (the encoder adds `_total` to counters) and help.
enum Reading {
    Counter(&'static str, &'static str, f64),
    Gauge(&'static str, &'static str, i64),
}

#[cfg(target_os = "linux")]
fn readings() -> Vec<Reading> {
    use procfs::process::{LimitValue, Process};

    let mut readings = Vec::with_capacity(7);
    let Ok(me) = Process::myself() else {
        return readings;
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second().max(1) as f64;
        readings.push(Reading::Counter(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            (stat.utime + stat.stime) as f64 / ticks,
        ));
        readings.push(Reading::Gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            saturating_i64(stat.rss.saturating_mul(procfs::page_size())),
        ));
        readings.push(Reading::Gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            saturating_i64(stat.vsize),
        ));
        readings.push(Reading::Gauge(
            "process_threads",
            "Number of OS threads in the process",
            stat.num_threads,
        ));
        if let Ok(boot) = procfs::boot_time_secs() {
            readings.push(Reading::Gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                saturating_i64(boot.saturating_add(stat.starttime / ticks as u64)),
            ));
        }
    }
    if let Ok(open) = me.fd_count() {
        readings.push(Reading::Gauge(
            "process_open_fds",
            "Number of open file descriptors",
            saturating_i64(open as u64),
        ));
    }
    if let Ok(limits) = me.limits() {
        let max = match limits.max_open_files.soft_limit {
            LimitValue::Value(max) => saturating_i64(max),
            LimitValue::Unlimited => i64::MAX,
        };
        readings.push(Reading::Gauge(
            "process_max_fds",
            "Maximum number of open file descriptors",
            max,
        ));
    }
    readings
}

#[cfg(not(target_os = "linux"))]
fn readings() -> Vec<Reading> {
    Vec::new()
}

#[cfg(target_os = "linux")]
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A scrape carries the process's CPU, memory and descriptors, with the
    /// open descriptors under their limit.
    #[test]
    fn the_process_metrics_are_read_from_proc() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Collector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {text}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_open_fds") <= value("process_max_fds"));
        assert!(value("process_start_time_seconds") > 1.0e9);
        assert!(value("process_threads") >= 1.0);
    }
}
