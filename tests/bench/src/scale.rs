//! `scale`: gateways added to a fleet holding connections, and how the connections move.
//!
//! Once the workers hold their members on the first gateways, the coordinator samples every
//! gateway's `wsgate_connections` gauge (its admin listener's `/metrics`) each `--sample-ms`,
//! starts `--add-gateways` more, tells the workers about the new endpoints, and samples on for
//! `--observe-seconds`. The workers' members follow `reconnect` (a 1012) to the next endpoint
//! round robin, as through an ingress, so the figures are those of the rebalancing alone:
//! moves against the fewest that even out the fleet, members moved twice, and the time until
//! every node stays within `--band` of the mean.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::args::ScaleArgs;
use crate::stack::Stack;
use crate::worker::{self, Event, MoveSummary, Worker};

/// Longest wait for one `/metrics` answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a scale-out measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    /// The gateways, in start order.
    pub nodes: Vec<String>,
    /// When the gateways were added, seconds from the first sample.
    pub added_at_seconds: f64,
    /// Each sample: its time and each node's connections (`None` before the node started, or
    /// when its metrics could not be read).
    pub timeline: Vec<Sample>,
    /// The fewest moves that bring every node to the mean, from the counts when the gateways
    /// were added.
    pub minimum_moves: u64,
    pub moves: MoveSummary,
    /// From adding the gateways until every node stayed within `band` of the mean to the end.
    pub converged_after_seconds: Option<f64>,
    pub band: f64,
}

/// One sample of every node's connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub seconds: f64,
    pub connections: Vec<Option<u64>>,
}

impl Figures {
    /// The lines of the human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let last = self.timeline.last().map(|s| s.connections.clone());
        let _ = writeln!(
            out,
            "scale-out     {} nodes; gateways added at {:.1} s; at the end: {}",
            self.nodes.len(),
            self.added_at_seconds,
            last.unwrap_or_default()
                .iter()
                .zip(&self.nodes)
                .map(|(count, node)| match count {
                    Some(count) => format!("{node} {count}"),
                    None => format!("{node} ?"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            out,
            "moved         {} connections for at least {} needed ({:.2}×); {} moved twice; {} retries after a refusal; {} lost",
            self.moves.moves,
            self.minimum_moves,
            self.moves.moves as f64 / self.minimum_moves.max(1) as f64,
            self.moves.moved_twice,
            self.moves.retries,
            self.moves.lost,
        );
        let _ = writeln!(
            out,
            "converged     {}",
            match self.converged_after_seconds {
                Some(seconds) => format!(
                    "{seconds:.1} s after the gateways were added (every node within {:.0}% of the mean to the end)",
                    self.band * 100.0
                ),
                None => format!(
                    "not within {:.0}% of the mean by the end",
                    self.band * 100.0
                ),
            }
        );
        out
    }

    /// Sanity problems (not thresholds): members that could not reopen, no samples.
    pub fn insanities(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.moves.lost > 0 {
            problems.push(format!(
                "{} members could not reconnect after a move",
                self.moves.lost
            ));
        }
        if self.timeline.is_empty() {
            problems.push("no samples of the gateways' connections".to_owned());
        }
        problems
    }
}

/// The fewest moves that bring every node to the fleet's mean once `nodes` share the
/// connections `before` counts.
pub fn minimum_moves(before: &[u64], nodes: usize) -> u64 {
    let total: u64 = before.iter().sum();
    let mean = total as f64 / nodes.max(1) as f64;
    before
        .iter()
        .map(|&count| (count as f64 - mean).max(0.0))
        .sum::<f64>()
        .round() as u64
}

/// Seconds after `from` until every node of every later sample is within `band` of the mean
/// of that sample (a node without a reading counts as outside).
pub fn converged_after(timeline: &[Sample], from: f64, band: f64) -> Option<f64> {
    let inside = |sample: &Sample| {
        let counts: Option<Vec<u64>> = sample.connections.iter().copied().collect();
        let Some(counts) = counts else { return false };
        let mean = counts.iter().sum::<u64>() as f64 / counts.len().max(1) as f64;
        counts
            .iter()
            .all(|&count| (count as f64 - mean).abs() <= band * mean)
    };
    let after: Vec<&Sample> = timeline.iter().filter(|s| s.seconds >= from).collect();
    let mut first_inside = None;
    for sample in &after {
        if inside(sample) {
            first_inside.get_or_insert(sample.seconds);
        } else {
            first_inside = None;
        }
    }
    first_inside.map(|seconds| seconds - from)
}

/// Runs the scale-out on a stack whose workers hold their members.
///
/// # Errors
/// When a gateway cannot start or the workers are gone.
pub async fn run(
    args: &ScaleArgs,
    stack: &mut Stack,
    workers: &mut [Worker],
    events: &mut mpsc::UnboundedReceiver<(usize, Event)>,
) -> Result<Figures> {
    let initial = stack.admin.len();
    let total_nodes = initial + args.add_gateways;
    let interval = Duration::from_millis(args.sample_ms.max(10));
    let started = Instant::now();
    let mut timeline = Vec::new();
    let mut before = Vec::new();
    let add_at = Duration::from_secs(args.add_after_seconds);
    let end = add_at + Duration::from_secs(args.observe_seconds);
    let mut added_at = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < end {
        ticker.tick().await;
        if added_at.is_none() && started.elapsed() >= add_at {
            before = timeline
                .last()
                .map(|s: &Sample| s.connections.iter().map(|c| c.unwrap_or(0)).collect())
                .unwrap_or_default();
            stack.add_gateways(args.add_gateways)?;
            for worker in workers.iter_mut() {
                worker.send(&worker::Command::Endpoints {
                    urls: stack.endpoints.clone(),
                })?;
            }
            added_at = Some(started.elapsed().as_secs_f64());
        }
        let mut connections = Vec::with_capacity(total_nodes);
        for admin in &stack.admin {
            connections.push(scrape_connections(admin).await);
        }
        connections.resize(total_nodes, None);
        timeline.push(Sample {
            seconds: started.elapsed().as_secs_f64(),
            connections,
        });
        stack.check_alive()?;
    }
    for worker in workers.iter_mut() {
        worker.send(&worker::Command::Moves)?;
    }
    let summaries =
        crate::scenario::gather(events, workers.len(), None, stack, |event| match event {
            Event::Moved(summary) => Some(summary),
            _ => None,
        })
        .await?;
    let mut moves = MoveSummary::default();
    for summary in summaries {
        moves.moves += summary.moves;
        moves.moved_twice += summary.moved_twice;
        moves.retries += summary.retries;
        moves.lost += summary.lost;
    }
    let added_at_seconds = added_at.unwrap_or_default();
    Ok(Figures {
        nodes: (1..=total_nodes).map(|i| format!("wsgate-{i}")).collect(),
        added_at_seconds,
        minimum_moves: minimum_moves(&before, total_nodes),
        converged_after_seconds: converged_after(&timeline, added_at_seconds, args.band),
        timeline,
        moves,
        band: args.band,
    })
}

/// The `wsgate_connections` gauge of the gateway whose admin listener is at `admin`.
async fn scrape_connections(admin: &str) -> Option<u64> {
    let scrape = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        gauge(&body, "wsgate_connections")
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, scrape).await.ok()?
}

/// The value of the unlabelled series `name` in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds: f64, counts: &[Option<u64>]) -> Sample {
        Sample {
            seconds,
            connections: counts.to_vec(),
        }
    }

    #[test]
    fn the_fewest_moves_bring_every_node_down_to_the_mean() {
        // 400 on two nodes, two more join: 100 each must leave the first two.
        assert_eq!(minimum_moves(&[200, 200], 4), 200);
        // All on one node of two.
        assert_eq!(minimum_moves(&[400], 2), 200);
        assert_eq!(minimum_moves(&[], 3), 0);
    }

    #[test]
    fn convergence_is_the_start_of_the_last_run_of_samples_inside_the_band() {
        let timeline = [
            sample(0.0, &[Some(400), None]),
            sample(1.0, &[Some(400), Some(0)]),
            sample(2.0, &[Some(210), Some(190)]),
            // Out again (a node overshoots), then in to the end.
            sample(3.0, &[Some(100), Some(300)]),
            sample(4.0, &[Some(190), Some(210)]),
            sample(5.0, &[Some(200), Some(200)]),
        ];
        assert_eq!(converged_after(&timeline, 1.0, 0.2), Some(3.0));
        // A node without a reading is not converged.
        let unread = [sample(1.0, &[Some(200), None])];
        assert_eq!(converged_after(&unread, 0.0, 0.2), None);
    }

    #[test]
    fn the_gauge_is_read_from_the_exposition_and_not_from_a_longer_name() {
        let text = "# HELP wsgate_connections Open WebSocket connections.\n\
                    # TYPE wsgate_connections gauge\n\
                    wsgate_connections_accepted_total 9\n\
                    wsgate_connections 123\n";
        assert_eq!(gauge(text, "wsgate_connections"), Some(123));
        assert_eq!(gauge("wsgate_connections -1\n", "wsgate_connections"), None);
        assert_eq!(gauge("", "wsgate_connections"), None);
    }
}
