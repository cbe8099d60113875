//! Connection-aware autoscaling, without a metrics adapter.
//!
//! With `autoscaling.targetConnectionsPerPod`, the stats poller feeds the
//! fleet's total connections to an [`Autoscaler`] per WsCluster every
//! interval, and writes the result through the WsCluster's `/scale`:
//!
//! 1. **Recommendation**: `ceil(connections / target)`, clamped to
//!    `[minReplicas, maxReplicas]`.
//! 2. **Tolerance**: while the load per current replica is within 10% of the
//!    target, nothing changes (as the HPA does), so noise does not scale.
//! 3. **Scale up at once** to the recommendation: new clients must find
//!    room.
//! 4. **Scale down stabilized**: the replicas chosen are the highest
//!    recommendation of the last `scaleDownStabilizationSeconds`, so a
//!    short dip does not close pods (each removal drains its clients).
//!
//! Stats that are `partial` (a replica did not answer) never scale down.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Relative distance from the target within which nothing changes.
pub const TOLERANCE: f64 = 0.1;

/// The bounds and target of one WsCluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// `autoscaling.minReplicas`.
    pub min: i32,
    /// `autoscaling.maxReplicas`.
    pub max: i32,
    /// `autoscaling.targetConnectionsPerPod`.
    pub connections_per_pod: i64,
    /// `autoscaling.scaleDownStabilizationSeconds`.
    pub stabilization: Duration,
}

/// The raw recommendation for `connections`: `ceil(connections / target)`
/// within the bounds.
pub fn recommend(connections: u64, target: &Target) -> i32 {
    let per_pod = u64::try_from(target.connections_per_pod.max(1)).unwrap_or(1);
    let wanted = connections.div_ceil(per_pod);
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    wanted.clamp(target.min, target.max.max(target.min))
}

/// The stabilization state of one WsCluster: recent recommendations.
#[derive(Debug, Default)]
pub struct Autoscaler {
    recommendations: VecDeque<(Instant, i32)>,
}

impl Autoscaler {
    /// The replicas to run given the current replicas and the observed
    /// connections at `now`; `None` when nothing should change.
    pub fn next(
        &mut self,
        now: Instant,
        current: i32,
        connections: u64,
        partial: bool,
        target: &Target,
    ) -> Option<i32> {
        let recommendation = recommend(connections, target);
        self.recommendations.push_back((now, recommendation));
        while let Some(&(at, _)) = self.recommendations.front() {
            if now.duration_since(at) > target.stabilization {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }

        // Out of bounds (the bounds changed): move inside them at once.
        if current < target.min || current > target.max {
            return Some(current.clamp(target.min, target.max.max(target.min)));
        }

        let capacity = f64::from(current.max(1)) * target.connections_per_pod.max(1) as f64;
        let ratio = connections as f64 / capacity;
        if (ratio - 1.0).abs() <= TOLERANCE {
            return None;
        }

        if recommendation > current {
            return Some(recommendation);
        }
        if partial {
            return None;
        }
        let stabilized = self
            .recommendations
            .iter()
            .map(|&(_, replicas)| replicas)
            .max()
            .unwrap_or(recommendation);
        (stabilized < current).then_some(stabilized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            min: 2,
            max: 10,
            connections_per_pod: 1000,
            stabilization: Duration::from_secs(300),
        }
    }

    /// The recommendation is the ceiling of connections over the target,
    /// within the bounds.
    #[test]
    fn recommendation_is_the_ceiling_within_bounds() {
        assert_eq!(recommend(0, &target()), 2);
        assert_eq!(recommend(2001, &target()), 3);
        assert_eq!(recommend(5000, &target()), 5);
        assert_eq!(recommend(1_000_000, &target()), 10);
    }

    /// Load within 10% of the target per pod changes nothing.
    #[test]
    fn load_within_tolerance_keeps_the_replicas() {
        let mut autoscaler = Autoscaler::default();
        let now = Instant::now();
        assert_eq!(autoscaler.next(now, 3, 3250, false, &target()), None);
        assert_eq!(autoscaler.next(now, 3, 2750, false, &target()), None);
    }

    /// A surge scales up at the first sample.
    #[test]
    fn a_surge_scales_up_at_once() {
        let mut autoscaler = Autoscaler::default();
        assert_eq!(
            autoscaler.next(Instant::now(), 2, 7400, false, &target()),
            Some(8)
        );
    }

    /// Recorded stats of a morning peak and an evening decline, sampled every
    /// 15 s: the fleet grows with the load at once and shrinks only after the
    /// load stayed low for the whole stabilization window.
    #[test]
    fn recorded_stats_scale_up_fast_and_down_after_the_window() {
        let mut autoscaler = Autoscaler::default();
        let start = Instant::now();
        let samples: &[u64] = &[
            1500, 1800, 2600, 4100, 5900, 6100, 6000, 2500, 2400, 2600, 2500,
        ];
        let mut replicas = 2;
        let mut history = Vec::new();
        for (i, &connections) in samples.iter().enumerate() {
            let now = start + Duration::from_secs(15 * i as u64);
            if let Some(next) = autoscaler.next(now, replicas, connections, false, &target()) {
                replicas = next;
            }
            history.push(replicas);
        }
        // Up with the load, no drop on the decline inside the window.
        assert_eq!(history, vec![2, 2, 3, 5, 6, 6, 6, 6, 6, 6, 6]);

        // Ten minutes later the window holds only low samples: scale down.
        let later = start + Duration::from_secs(15 * samples.len() as u64 + 600);
        assert_eq!(
            autoscaler.next(later, replicas, 2500, false, &target()),
            Some(3)
        );
    }

    /// A dip shorter than the window does not remove pods.
    #[test]
    fn a_short_dip_does_not_scale_down() {
        let mut autoscaler = Autoscaler::default();
        let start = Instant::now();
        assert_eq!(autoscaler.next(start, 6, 6000, false, &target()), None);
        let dip = start + Duration::from_secs(60);
        assert_eq!(autoscaler.next(dip, 6, 1000, false, &target()), None);
    }

    /// Partial stats (a replica did not answer) never scale down.
    #[test]
    fn partial_stats_never_scale_down() {
        let mut autoscaler = Autoscaler::default();
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(autoscaler.next(later, 6, 100, true, &target()), None);
    }

    /// Replicas outside changed bounds move inside them.
    #[test]
    fn replicas_outside_the_bounds_move_inside() {
        let mut autoscaler = Autoscaler::default();
        assert_eq!(
            autoscaler.next(Instant::now(), 12, 12000, false, &target()),
            Some(10)
        );
        assert_eq!(
            autoscaler.next(Instant::now(), 1, 0, false, &target()),
            Some(2)
        );
    }
}
