//! The figures of a run, printed as a table or as JSON, and the sanity checks of `--check`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::client::Protocol;
use crate::histogram::Latency;

/// Everything one invocation measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// CPUs the kernel offers (the load generator shares them with the servers).
    pub cpus: usize,
    pub runs: Vec<Run>,
    /// Peers that could not run, and why.
    pub skipped: Vec<String>,
    /// wsgate's figures over each peer's, from the same invocation.
    pub ratios: Vec<Ratio>,
    /// wsgate's p99 against nats-server's at each rate both ran (`--compare nats` on a ramp):
    /// the latency target holds at a step when wsgate's p99 is at most the larger of 1.5 ×
    /// nats-server's and nats-server's + 5 ms, with every message delivered.
    #[serde(default)]
    pub step_bounds: Vec<StepBound>,
}

/// wsgate's p99 at one rate against the bound nats-server's p99 at the same rate sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepBound {
    /// Messages per second published.
    pub rate: f64,
    pub demanded_per_second: f64,
    pub wsgate_p99_ms: f64,
    pub nats_p99_ms: f64,
    /// `max(1.5 × nats p99, nats p99 + 5 ms)`.
    pub bound_ms: f64,
    /// Whether wsgate delivered every message of the step.
    pub wsgate_delivered_all: bool,
    pub met: bool,
}

impl StepBound {
    /// The bound a nats-server p99 sets.
    pub fn bound(nats_p99_ms: f64) -> f64 {
        (1.5 * nats_p99_ms).max(nats_p99_ms + 5.0)
    }
}

/// One system under the scenario's load.
#[derive(Debug, Serialize, Deserialize)]
pub struct Run {
    /// `wsgate` or the peer's name.
    pub system: String,
    /// The protocol the clients spoke: `wsgate` (native), `nats`, `socketio` or `pusher`
    /// (Sockudo, and wsgate with `--proto pusher`). Absent from reports written before it
    /// existed.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// What was started (or targeted).
    pub setup: String,
    pub connect: Option<Connect>,
    pub servers: Vec<ServerFigures>,
    /// CPU time of this tool's processes (coordinator with the publishers, and workers) during
    /// the measured phases: on a small machine the load generator competes with the servers.
    pub load_generator_cpu_seconds: f64,
    /// The machine's one-minute load average at the start and at the end of the run.
    pub load_average: (f64, f64),
    /// Growth of the servers' resident memory per established connection (gateways only for
    /// wsgate, nodes only for Sockudo: not the nats-server they share), KiB.
    pub rss_per_connection_kib: Option<f64>,
    pub steps: Vec<Step>,
    /// The passing step with the highest rate (ramp), or the only step.
    pub best: Option<Step>,
    pub churn: Option<Churn>,
    /// The scale-out (`scale`).
    #[serde(default)]
    pub scale: Option<crate::scale::Figures>,
    /// Members the server closed with 1013 (slow consumer).
    pub closed_1013: u64,
    /// Members closed otherwise.
    pub closed_other: u64,
    /// Error replies and protocol errors seen by members.
    pub member_errors: u64,
    /// A few error messages, for diagnosis.
    pub samples: Vec<String>,
}

impl Run {
    /// The run's name in tables and plots: the system, and the protocol when it is Pusher's
    /// (`wsgate (pusher)`, `sockudo (pusher)`), so the lines of one protocol read as
    /// comparable and wsgate's two protocols are told apart.
    pub fn label(&self) -> String {
        label(&self.system, self.protocol)
    }
}

/// The name of `system`'s run in `protocol` (see [`Run::label`]).
pub fn label(system: &str, protocol: Option<Protocol>) -> String {
    match protocol {
        Some(Protocol::Pusher) => format!("{system} (pusher)"),
        _ => system.to_owned(),
    }
}

/// The connect phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connect {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    /// TCP refused, HTTP 503 or 429.
    pub refused: u64,
    pub timeouts: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// From starting a connection to its welcome (and join reply).
    pub latency: Latency,
}

/// One started server process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerFigures {
    pub name: String,
    pub pid: u32,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// CPU time used during the measured phases.
    pub cpu_seconds: f64,
}

/// One publishing step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Target messages per second.
    pub rate: f64,
    pub sent: u64,
    pub accepted: u64,
    pub expected: u64,
    pub received: u64,
    pub deliveries_per_second: f64,
    /// Deliveries per second the step asks for: the rate times the members of a room (or the
    /// rate, for `direct`). Absent from reports written before it existed.
    #[serde(default)]
    pub demanded_per_second: f64,
    pub latency: Latency,
    pub publish_errors: BTreeMap<String, u64>,
    pub passed: bool,
    /// Why the step failed.
    pub failure: Option<String>,
}

/// The churn phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Churn {
    pub cycles: u64,
    pub failed: u64,
    pub refused: u64,
    pub seconds: f64,
    pub cycles_per_second: f64,
    /// A whole connect/join/leave/close cycle.
    pub latency: Latency,
    /// The servers' (gateways' for wsgate, nodes' for Sockudo) resident memory after the
    /// warm-up and at the end.
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub growth_percent: f64,
}

/// wsgate against a peer on one figure.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ratio {
    pub metric: String,
    pub peer: String,
    pub wsgate: f64,
    pub other: f64,
    /// `wsgate / other`.
    pub ratio: f64,
}

impl Report {
    /// Ratios of wsgate's headline figure to each peer's.
    pub fn compute_ratios(&mut self) {
        let Some(wsgate) = self.runs.iter().find(|run| run.system == "wsgate") else {
            return;
        };
        let mut ratios = Vec::new();
        for peer in self.runs.iter().filter(|run| run.system != "wsgate") {
            let mut push = |metric: &str, a: Option<f64>, b: Option<f64>| {
                if let (Some(a), Some(b)) = (a, b) {
                    ratios.push(Ratio {
                        metric: metric.to_owned(),
                        peer: peer.label(),
                        wsgate: a,
                        other: b,
                        ratio: if b > 0.0 { a / b } else { f64::NAN },
                    });
                }
            };
            match self.scenario.as_str() {
                "idle" => push(
                    "KiB per connection (lower is better)",
                    wsgate.rss_per_connection_kib,
                    peer.rss_per_connection_kib,
                ),
                "storm" => push(
                    "connections per second",
                    wsgate.connect.as_ref().map(|c| c.per_second),
                    peer.connect.as_ref().map(|c| c.per_second),
                ),
                "churn" => push(
                    "cycles per second",
                    wsgate.churn.as_ref().map(|c| c.cycles_per_second),
                    peer.churn.as_ref().map(|c| c.cycles_per_second),
                ),
                _ => {
                    let best = |run: &Run| run.best.as_ref().map(|s| s.deliveries_per_second);
                    push(
                        "best passing deliveries per second",
                        best(wsgate),
                        best(peer),
                    );
                    let p99 = |run: &Run| run.best.as_ref().map(|s| s.latency.p99_ms);
                    push(
                        "p99 ms at that step (lower is better)",
                        p99(wsgate),
                        p99(peer),
                    );
                }
            }
        }
        self.ratios = ratios;
        self.step_bounds = self.compute_step_bounds();
    }

    /// wsgate's steps against nats-server's at the same rates.
    fn compute_step_bounds(&self) -> Vec<StepBound> {
        let (Some(wsgate), Some(nats)) = (
            self.runs.iter().find(|run| run.system == "wsgate"),
            self.runs.iter().find(|run| run.system == "nats"),
        ) else {
            return Vec::new();
        };
        wsgate
            .steps
            .iter()
            .filter_map(|ours| {
                let theirs = nats
                    .steps
                    .iter()
                    .find(|step| (step.rate - ours.rate).abs() <= ours.rate * 1e-9)?;
                let bound_ms = StepBound::bound(theirs.latency.p99_ms);
                let wsgate_delivered_all = ours.received >= ours.expected;
                Some(StepBound {
                    rate: ours.rate,
                    demanded_per_second: ours.demanded_per_second,
                    wsgate_p99_ms: ours.latency.p99_ms,
                    nats_p99_ms: theirs.latency.p99_ms,
                    bound_ms,
                    wsgate_delivered_all,
                    met: wsgate_delivered_all && ours.latency.p99_ms <= bound_ms,
                })
            })
            .collect()
    }

    /// Sanity problems in the figures (not timing thresholds): missing connections, nothing
    /// delivered, impossible values.
    pub fn insanities(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for run in &self.runs {
            let name = &run.label();
            if let Some(connect) = &run.connect {
                if connect.established != connect.attempted {
                    problems.push(format!(
                        "{name}: {} of {} connections established",
                        connect.established, connect.attempted
                    ));
                }
                if !(connect.per_second.is_finite() && connect.per_second > 0.0) {
                    problems.push(format!("{name}: connect rate {}", connect.per_second));
                }
            }
            if let Some(kib) = run.rss_per_connection_kib
                && !(kib.is_finite() && kib < 1024.0)
            {
                problems.push(format!("{name}: {kib} KiB per connection"));
            }
            for server in &run.servers {
                if server.rss_after_kib == 0
                    || server.cpu_seconds.is_nan()
                    || server.cpu_seconds < 0.0
                {
                    problems.push(format!("{name}: no /proc figures for {}", server.name));
                }
            }
            for step in &run.steps {
                if step.received == 0 || step.received > step.expected {
                    problems.push(format!(
                        "{name}: {} deliveries for {} expected at {}/s",
                        step.received, step.expected, step.rate
                    ));
                }
                let l = &step.latency;
                if !(l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms && l.max_ms < 600_000.0) {
                    problems.push(format!("{name}: impossible latencies {l:?}"));
                }
            }
            if let Some(churn) = &run.churn
                && (churn.cycles == 0 || churn.failed > churn.cycles)
            {
                problems.push(format!(
                    "{name}: {} churn cycles, {} failed",
                    churn.cycles, churn.failed
                ));
            }
            if let Some(scale) = &run.scale {
                problems.extend(
                    scale
                        .insanities()
                        .into_iter()
                        .map(|p| format!("{name}: {p}")),
                );
            }
            if run.closed_other > 0 || run.member_errors > 0 {
                problems.push(format!(
                    "{name}: {} members closed, {} member errors: {:?}",
                    run.closed_other, run.member_errors, run.samples
                ));
            }
        }
        problems
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nwsgate-bench {} ({} CPUs, shared with the load generator)",
            self.scenario, self.cpus
        );
        for run in &self.runs {
            let _ = writeln!(out, "\n== {} ({}) ==", run.label(), run.setup);
            if let Some(c) = &run.connect {
                let _ = writeln!(
                    out,
                    "connections   {} of {} in {:.2} s: {:.0}/s; refused {}, timed out {}, other failures {}",
                    c.established,
                    c.attempted,
                    c.seconds,
                    c.per_second,
                    c.refused,
                    c.timeouts,
                    c.failed - c.refused - c.timeouts
                );
                let _ = writeln!(out, "connect time  {}", latency_line(&c.latency));
            }
            if let Some(kib) = run.rss_per_connection_kib {
                let _ = writeln!(out, "memory        {kib:.2} KiB resident per connection");
            }
            if !run.servers.is_empty() {
                let _ = writeln!(
                    out,
                    "{:<14}{:<14}{:>8}{:>14}{:>14}{:>10}",
                    "servers", "name", "pid", "RSS before", "RSS after", "CPU s"
                );
                for s in &run.servers {
                    let _ = writeln!(
                        out,
                        "{:<14}{:<14}{:>8}{:>10} KiB{:>10} KiB{:>10.2}",
                        "", s.name, s.pid, s.rss_before_kib, s.rss_after_kib, s.cpu_seconds
                    );
                }
            }
            if !run.steps.is_empty() {
                let _ = writeln!(
                    out,
                    "{:>10}{:>9}{:>21}{:>13}{:>9}{:>9}{:>9}{:>9}{:>9}  result",
                    "msgs/s",
                    "sent",
                    "delivered/expected",
                    "deliveries/s",
                    "p50 ms",
                    "p90",
                    "p99",
                    "p99.9",
                    "max"
                );
                for s in &run.steps {
                    let l = &s.latency;
                    let _ = writeln!(
                        out,
                        "{:>10.0}{:>9}{:>21}{:>13.0}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{:>9.2}  {}",
                        s.rate,
                        s.sent,
                        format!("{}/{}", s.received, s.expected),
                        s.deliveries_per_second,
                        l.p50_ms,
                        l.p90_ms,
                        l.p99_ms,
                        l.p999_ms,
                        l.max_ms,
                        match &s.failure {
                            None => "pass".to_owned(),
                            Some(why) => format!("FAIL: {why}"),
                        }
                    );
                }
                if let Some(best) = &run.best {
                    let _ = writeln!(
                        out,
                        "best          {:.0} msgs/s, {:.0} deliveries/s, p99 {:.2} ms",
                        best.rate, best.deliveries_per_second, best.latency.p99_ms
                    );
                }
            }
            if let Some(scale) = &run.scale {
                out.push_str(&scale.table());
            }
            if let Some(c) = &run.churn {
                let _ = writeln!(
                    out,
                    "churn         {} cycles in {:.1} s ({:.0}/s), {} failed ({} refused)",
                    c.cycles, c.seconds, c.cycles_per_second, c.failed, c.refused
                );
                let _ = writeln!(out, "cycle time    {}", latency_line(&c.latency));
                let _ = writeln!(
                    out,
                    "memory        {} KiB after warm-up, {} KiB at the end: {:+.1}%",
                    c.rss_start_kib, c.rss_end_kib, c.growth_percent
                );
            }
            let _ = writeln!(
                out,
                "load CPU s    {:.2} (wsgate-bench's own processes); machine load average {:.2} -> {:.2}",
                run.load_generator_cpu_seconds, run.load_average.0, run.load_average.1
            );
            let _ = writeln!(
                out,
                "closes        1013 (slow consumer): {}, other: {}; member errors: {}",
                run.closed_1013, run.closed_other, run.member_errors
            );
            for sample in &run.samples {
                let _ = writeln!(out, "  e.g. {sample}");
            }
        }
        if !self.step_bounds.is_empty() {
            let _ = writeln!(
                out,
                "\n== wsgate p99 against max(1.5 × nats p99, nats p99 + 5 ms), same rates ==\n{:>10}{:>16}{:>14}{:>12}{:>12}  result",
                "msgs/s", "deliveries/s", "wsgate p99", "nats p99", "bound"
            );
            for b in &self.step_bounds {
                let _ = writeln!(
                    out,
                    "{:>10.0}{:>16.0}{:>14.2}{:>12.2}{:>12.2}  {}",
                    b.rate,
                    b.demanded_per_second,
                    b.wsgate_p99_ms,
                    b.nats_p99_ms,
                    b.bound_ms,
                    match (b.met, b.wsgate_delivered_all) {
                        (true, _) => "met",
                        (false, false) => "MISSED (not all delivered)",
                        (false, true) => "MISSED",
                    }
                );
            }
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "\nskipped: {skipped}");
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(out, "\n== wsgate / peer, same run ==");
            for r in &self.ratios {
                let _ = writeln!(
                    out,
                    "{:<40} wsgate {:>12.2}  {:<8} {:>12.2}  ratio {:.2}",
                    r.metric, r.wsgate, r.peer, r.other, r.ratio
                );
            }
        }
        out
    }
}

fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2} ({} samples)",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
    )
}

/// Reports written as JSON, as `--json` writes them, for the tests of this module and of
/// [`crate::plot`].
#[cfg(test)]
pub mod fixtures {
    use super::Report;

    pub fn report(json: &str) -> Report {
        match serde_json::from_str(json) {
            Ok(report) => report,
            Err(error) => panic!("test report does not parse: {error}"),
        }
    }

    pub fn step(
        rate: f64,
        expected: u64,
        accepted: u64,
        demanded: Option<f64>,
        p99: f64,
    ) -> String {
        let demanded =
            demanded.map_or(String::new(), |d| format!(r#""demanded_per_second": {d},"#));
        format!(
            r#"{{"rate": {rate}, "sent": {accepted}, "accepted": {accepted}, "expected": {expected},
               "received": {expected}, "deliveries_per_second": 0, {demanded}
               "latency": {{"count": 1, "p50_ms": 0, "p90_ms": 1, "p99_ms": {p99},
                           "p999_ms": {p99}, "max_ms": {p99}}},
               "publish_errors": {{}}, "passed": true, "failure": null}}"#
        )
    }

    pub fn run(system: &str, steps: &[String]) -> String {
        format!(
            r#"{{"system": "{system}", "setup": "", "connect": null, "servers": [],
               "load_generator_cpu_seconds": 0, "load_average": [0, 0],
               "rss_per_connection_kib": null, "steps": [{}], "best": null, "churn": null,
               "closed_1013": 0, "closed_other": 0, "member_errors": 0, "samples": []}}"#,
            steps.join(",")
        )
    }

    pub fn whole(runs: &[String]) -> String {
        format!(
            r#"{{"scenario": "fanout", "cpus": 2, "runs": [{}], "skipped": [], "ratios": []}}"#,
            runs.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{report, run, step, whole};
    use super::*;

    #[test]
    fn the_bound_is_half_again_nats_p99_or_five_milliseconds_more_whichever_is_larger() {
        assert_eq!(StepBound::bound(4.0), 9.0);
        assert_eq!(StepBound::bound(10.0), 15.0);
        assert_eq!(StepBound::bound(40.0), 60.0);
    }

    #[test]
    fn every_rate_both_ran_is_compared_and_a_miss_is_reported_not_hidden() {
        let mut report = report(&whole(&[
            run(
                "wsgate",
                &[
                    step(100.0, 1000, 10, Some(10_000.0), 8.0),
                    step(150.0, 1500, 15, Some(15_000.0), 70.0),
                    step(225.0, 2250, 22, Some(22_500.0), 9.0),
                ],
            ),
            run(
                "nats",
                &[
                    step(100.0, 1000, 10, Some(10_000.0), 4.0),
                    step(150.0, 1500, 15, Some(15_000.0), 40.0),
                ],
            ),
        ]));
        report.compute_ratios();
        let verdicts: Vec<_> = report
            .step_bounds
            .iter()
            .map(|b| (b.rate, b.bound_ms, b.met))
            .collect();
        // 225/s has no nats-server step to compare with; 70 ms is over 1.5 × 40 ms.
        assert_eq!(verdicts, vec![(100.0, 9.0, true), (150.0, 60.0, false)]);
        assert!(report.table().contains("MISSED"), "{}", report.table());
    }
}
