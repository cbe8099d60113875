//! Connection-aware autoscaling, without a metrics adapter.
//!
//! With `autoscaling.targetConnectionsPerPod`, the stats poller feeds each
//! reading of the gateways' stats to an [`Autoscaler`] per WsCluster every
//! interval, and writes the result through the WsCluster's `/scale`:
//!
//! 1. **Recommendation**: `ceil(connections / target)`, clamped to
//!    `[minReplicas, maxReplicas]`.
//! 2. **Refused clients count**: clients refused at `limits.maxConnections`
//!    never show up in `connections`, so a full fleet looks like one at its
//!    target. While the gateways' `upgrades_refused_capacity` counters rise,
//!    the recommendation is at least the current replicas plus
//!    `max(1, 10%)`, whatever the load per pod says.
//! 3. **Tolerance**: otherwise, while the load per current replica is
//!    within 10% of the target, nothing changes (as the HPA does), so noise
//!    does not scale.
//! 4. **Scale up at once** to the recommendation: new clients must find
//!    room.
//! 5. **Scale down stabilized and stepwise**: the replicas chosen are the
//!    highest recommendation of the last `stabilizationSeconds`, and one
//!    step removes at most `max(1, maxPercent)` of the current replicas,
//!    since every removed pod drains its clients onto the others.
//!
//! The window of recommendations lives in memory, so it is rebuilt
//! pessimistically: a new [`Autoscaler`] (operator start, new leader) and
//! every reading that fails hold the current replicas as a recommendation.
//! No scale-down can follow a restart or a stats outage before a whole
//! window of readings says so. Stats that are `partial` (a replica did not
//! answer) never scale down.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use wsgate_crds::AutoscalingSpec;

/// Relative distance from the target within which nothing changes.
pub const TOLERANCE: f64 = 0.1;

/// The share of the current replicas added while capacity refusals rise
/// (at least one pod).
pub const REFUSAL_STEP_PERCENT: i32 = 10;

/// The bounds, target and pace of one WsCluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// `autoscaling.minReplicas`.
    pub min: i32,
    /// `autoscaling.maxReplicas`.
    pub max: i32,
    /// `autoscaling.targetConnectionsPerPod`.
    pub connections_per_pod: i64,
    /// `autoscaling.behavior.scaleDown.stabilizationSeconds`.
    pub stabilization: Duration,
    /// `autoscaling.behavior.scaleDown.maxPercent`.
    pub scale_down_max_percent: u32,
}

impl Target {
    /// The target of `autoscaling`; `None` without a connections target
    /// (a CPU target is the HPA's business).
    pub fn of(autoscaling: &AutoscalingSpec) -> Option<Self> {
        Some(Self {
            min: autoscaling.min_replicas,
            max: autoscaling.max_replicas,
            connections_per_pod: autoscaling.target_connections_per_pod?,
            stabilization: autoscaling.scale_down_stabilization(),
            scale_down_max_percent: autoscaling.scale_down_max_percent(),
        })
    }

    fn clamp(&self, replicas: i32) -> i32 {
        replicas.clamp(self.min, self.max.max(self.min))
    }
}

/// What the autoscaler reads of one stats answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Connections across the fleet.
    pub connections: u64,
    /// A replica did not answer in time: the numbers are a lower bound.
    pub partial: bool,
    /// Per node that reports it: its name and its count of upgrades refused
    /// at `limits.max_connections` since it started. Gateways count only
    /// the `capacity` reason here: refusals while a node drains or
    /// rebalances are not in this counter, so by construction they never
    /// cause a scale-up. Older gateways do not report it; they are left out
    /// and can never look like rising refusals.
    pub refused_for_capacity: Vec<(String, u64)>,
}

/// The raw recommendation for `connections`: `ceil(connections / target)`
/// within the bounds.
pub fn recommend(connections: u64, target: &Target) -> i32 {
    let per_pod = u64::try_from(target.connections_per_pod.max(1)).unwrap_or(1);
    let wanted = connections.div_ceil(per_pod);
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    target.clamp(wanted)
}

/// The replicas to run while capacity refusals rise: `current` plus
/// `max(1, 10%)`, within the bounds.
pub fn refusal_step(current: i32, target: &Target) -> i32 {
    let step = i32::try_from(i64::from(current) * i64::from(REFUSAL_STEP_PERCENT) / 100)
        .unwrap_or(i32::MAX)
        .max(1);
    target.clamp(current.saturating_add(step))
}

/// The fewest replicas one scale-down step from `current` may reach:
/// `current` less `max(1, maxPercent)` of it.
pub fn scale_down_floor(current: i32, target: &Target) -> i32 {
    let percent = i64::from(target.scale_down_max_percent.clamp(1, 100));
    let removable = i64::from(current) * percent / 100;
    let removable = i32::try_from(removable).unwrap_or(i32::MAX).max(1);
    current.saturating_sub(removable)
}

/// The scaling state of one WsCluster: recent recommendations and each
/// node's last capacity refusal count.
#[derive(Debug)]
pub struct Autoscaler {
    /// Recommendations of the last stabilization window, oldest first.
    recommendations: VecDeque<(Instant, i32)>,
    /// Each node's `upgrades_refused_capacity` at the last reading, so a
    /// rise is seen per node and a node restart (its counter back to zero)
    /// is a new baseline rather than a fall hiding another node's rise.
    refused: HashMap<String, u64>,
}

impl Autoscaler {
    /// A new autoscaler for a fleet running `current` replicas at `now`.
    ///
    /// The window starts holding `current`, not empty: the previous
    /// operator's window (before a restart or a leader change) is lost, and
    /// an empty one would let the first low reading remove pods the load
    /// needed a minute ago.
    pub fn resume(now: Instant, current: i32) -> Self {
        Self {
            recommendations: VecDeque::from([(now, current)]),
            refused: HashMap::new(),
        }
    }

    /// Records a reading that failed at `now`: without stats the current
    /// replicas are the only safe recommendation, so the window holds them
    /// and no scale-down follows the outage before a whole window of
    /// readings. Nothing is scaled.
    pub fn stats_unavailable(&mut self, now: Instant, current: i32, target: &Target) {
        self.record(now, current, target);
    }

    /// The replicas to run given the current replicas and a reading at
    /// `now`; `None` when nothing should change.
    pub fn next(
        &mut self,
        now: Instant,
        current: i32,
        reading: &Reading,
        target: &Target,
    ) -> Option<i32> {
        let refusals_rising = self.refusals_rising(reading);
        let mut recommendation = recommend(reading.connections, target);
        if refusals_rising {
            recommendation = recommendation.max(refusal_step(current, target));
        }
        self.record(now, recommendation, target);

        // Out of bounds (the bounds changed): move inside them at once.
        if current < target.min || current > target.max {
            return Some(target.clamp(current));
        }

        // Refused clients are demand the load per pod cannot show: the
        // tolerance band does not apply.
        if refusals_rising && recommendation > current {
            return Some(recommendation);
        }

        let capacity = f64::from(current.max(1)) * target.connections_per_pod.max(1) as f64;
        let ratio = reading.connections as f64 / capacity;
        if (ratio - 1.0).abs() <= TOLERANCE {
            return None;
        }

        if recommendation > current {
            return Some(recommendation);
        }
        if reading.partial {
            return None;
        }
        let stabilized = self
            .recommendations
            .iter()
            .map(|&(_, replicas)| replicas)
            .max()
            .unwrap_or(recommendation);
        let next = stabilized.max(scale_down_floor(current, target));
        (next < current).then_some(next)
    }

    /// Adds `recommendation` at `now` to the window and forgets what fell
    /// out of it.
    fn record(&mut self, now: Instant, recommendation: i32, target: &Target) {
        self.recommendations.push_back((now, recommendation));
        while let Some(&(at, _)) = self.recommendations.front() {
            if now.saturating_duration_since(at) > target.stabilization {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether any node refused more upgrades for capacity than at the last
    /// reading, and remembers this reading's counts.
    ///
    /// A node seen for the first time (a new pod, or every node after an
    /// operator restart) sets a baseline; a count below the last one is a
    /// restarted node and sets a new baseline. Neither is a rise. Nodes
    /// missing from a partial reading keep their baseline: they did not
    /// answer, they did not go.
    fn refusals_rising(&mut self, reading: &Reading) -> bool {
        let rising = reading.refused_for_capacity.iter().any(|(node, count)| {
            self.refused
                .get(node)
                .is_some_and(|&previous| *count > previous)
        });
        if !reading.partial {
            self.refused.retain(|node, _| {
                reading
                    .refused_for_capacity
                    .iter()
                    .any(|(reported, _)| reported == node)
            });
        }
        for (node, count) in &reading.refused_for_capacity {
            self.refused.insert(node.clone(), *count);
        }
        rising
    }
}

#[cfg(test)]
mod tests;
