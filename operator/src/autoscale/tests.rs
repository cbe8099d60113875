//! The pure autoscaler, and load traces replayed against it.

use super::*;

fn target() -> Target {
    Target {
        min: 2,
        max: 10,
        connections_per_pod: 1000,
        stabilization: Duration::from_secs(300),
        scale_down_max_percent: 10,
    }
}

fn reading(connections: u64) -> Reading {
    Reading {
        connections,
        ..Reading::default()
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

/// Steps are `max(1, 10%)`: up while refusals rise, down at most
/// `maxPercent`, each within the bounds.
#[test]
fn steps_are_at_least_one_pod_and_at_most_the_percent() {
    let wide = Target {
        max: 100,
        ..target()
    };
    assert_eq!(refusal_step(2, &wide), 3);
    assert_eq!(refusal_step(30, &wide), 33);
    assert_eq!(refusal_step(10, &target()), 10);
    assert_eq!(scale_down_floor(6, &target()), 5);
    assert_eq!(scale_down_floor(60, &target()), 54);
    let half = Target {
        scale_down_max_percent: 50,
        ..target()
    };
    assert_eq!(scale_down_floor(9, &half), 5);
}

/// Load within 10% of the target per pod changes nothing.
#[test]
fn load_within_tolerance_keeps_the_replicas() {
    let now = Instant::now();
    let mut autoscaler = Autoscaler::resume(now, 3);
    assert_eq!(autoscaler.next(now, 3, &reading(3250), &target()), None);
    assert_eq!(autoscaler.next(now, 3, &reading(2750), &target()), None);
}

/// A surge scales up at the first sample.
#[test]
fn a_surge_scales_up_at_once() {
    let now = Instant::now();
    let mut autoscaler = Autoscaler::resume(now, 2);
    assert_eq!(autoscaler.next(now, 2, &reading(7400), &target()), Some(8));
}

/// Recorded stats of a morning peak and an evening decline, sampled every
/// 15 s: the fleet grows with the load at once and shrinks only after the
/// load stayed low for the whole stabilization window, one step at a time.
#[test]
fn recorded_stats_scale_up_fast_and_down_after_the_window() {
    let start = Instant::now();
    let mut autoscaler = Autoscaler::resume(start, 2);
    let samples: &[u64] = &[
        1500, 1800, 2600, 4100, 5900, 6100, 6000, 2500, 2400, 2600, 2500,
    ];
    let mut replicas = 2;
    let mut history = Vec::new();
    for (i, &connections) in samples.iter().enumerate() {
        let now = start + Duration::from_secs(15 * i as u64);
        if let Some(next) = autoscaler.next(now, replicas, &reading(connections), &target()) {
            replicas = next;
        }
        history.push(replicas);
    }
    // Up with the load, no drop on the decline inside the window.
    assert_eq!(history, vec![2, 2, 3, 5, 6, 6, 6, 6, 6, 6, 6]);

    // Ten minutes later the window holds only low samples: one step down
    // (10% of 6 is less than a pod, so one pod).
    let later = start + Duration::from_secs(15 * samples.len() as u64 + 600);
    assert_eq!(
        autoscaler.next(later, replicas, &reading(2500), &target()),
        Some(5)
    );
}

/// A dip shorter than the window does not remove pods.
#[test]
fn a_short_dip_does_not_scale_down() {
    let start = Instant::now();
    let mut autoscaler = Autoscaler::resume(start, 6);
    assert_eq!(autoscaler.next(start, 6, &reading(6000), &target()), None);
    let dip = start + Duration::from_secs(60);
    assert_eq!(autoscaler.next(dip, 6, &reading(1000), &target()), None);
}

/// Partial stats (a replica did not answer) never scale down.
#[test]
fn partial_stats_never_scale_down() {
    let start = Instant::now();
    let mut autoscaler = Autoscaler::resume(start, 6);
    let later = start + Duration::from_secs(3600);
    let partial = Reading {
        connections: 100,
        partial: true,
        ..Reading::default()
    };
    assert_eq!(autoscaler.next(later, 6, &partial, &target()), None);
}

/// Replicas outside changed bounds move inside them.
#[test]
fn replicas_outside_the_bounds_move_inside() {
    let now = Instant::now();
    let mut autoscaler = Autoscaler::resume(now, 12);
    assert_eq!(
        autoscaler.next(now, 12, &reading(12000), &target()),
        Some(10)
    );
    assert_eq!(autoscaler.next(now, 1, &reading(0), &target()), Some(2));
}

/// A node whose counter falls (it restarted) or that appears with refusals
/// already counted sets a baseline; only a count above a node's own last
/// one is a rise, even when the sum over the fleet fell.
#[test]
fn a_node_restart_is_not_a_rise_in_refusals() {
    let now = Instant::now();
    let mut autoscaler = Autoscaler::resume(now, 3);
    let refused = |counts: &[(&str, u64)]| Reading {
        connections: 3000,
        refused_for_capacity: counts.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect(),
        ..Reading::default()
    };
    let t = target();
    assert_eq!(
        autoscaler.next(now, 3, &refused(&[("a", 500), ("b", 40)]), &t),
        None
    );
    // a restarted (500 → 0), c is new with 70: the sum rose, no node did.
    let restarted = refused(&[("a", 0), ("b", 40), ("c", 70)]);
    assert_eq!(autoscaler.next(now, 3, &restarted, &t), None);
    // b refused one more client: a rise, although the sum is below 540.
    let rose = refused(&[("a", 0), ("b", 41), ("c", 70)]);
    assert_eq!(autoscaler.next(now, 3, &rose, &t), Some(4));
}

/// A simulated fleet: `demand` clients want a connection, each pod accepts
/// up to `max_connections` (spread evenly, as an ingress does) and counts
/// the clients it refuses, as the gateways' `upgrades_refused_capacity`
/// does. New pods are ready by the next reading.
struct Fleet {
    replicas: i32,
    max_connections: u64,
    refused: Vec<u64>,
}

impl Fleet {
    fn new(replicas: i32, max_connections: u64) -> Self {
        Self {
            replicas,
            max_connections,
            refused: Vec::new(),
        }
    }

    /// The stats answer while `demand` clients try to connect.
    fn read(&mut self, demand: u64) -> Reading {
        let pods = usize::try_from(self.replicas).unwrap();
        self.refused.resize(pods, 0);
        let capacity = self.max_connections * pods as u64;
        let excess = demand.saturating_sub(capacity);
        for count in &mut self.refused {
            *count += excess / pods as u64;
        }
        Reading {
            connections: demand.min(capacity),
            partial: false,
            refused_for_capacity: self
                .refused
                .iter()
                .enumerate()
                .map(|(i, count)| (format!("pod-{i}"), *count))
                .collect(),
        }
    }
}

/// Replays `demand` (one reading every 15 s from `start`) and returns the
/// replicas after each reading.
fn replay(
    autoscaler: &mut Autoscaler,
    fleet: &mut Fleet,
    start: Instant,
    demand: &[u64],
    target: &Target,
) -> Vec<i32> {
    let mut history = Vec::new();
    for (i, &clients) in demand.iter().enumerate() {
        let now = start + Duration::from_secs(15 * i as u64);
        let reading = fleet.read(clients);
        if let Some(next) = autoscaler.next(now, fleet.replicas, &reading, target) {
            fleet.replicas = next;
        }
        history.push(fleet.replicas);
    }
    history
}

/// A step up: the fleet grows to the recommendation at the first reading
/// of a surge, and only grows while the load does.
#[test]
fn replay_a_step_up_grows_at_once() {
    let start = Instant::now();
    let mut autoscaler = Autoscaler::resume(start, 2);
    let mut fleet = Fleet::new(2, 10_000);
    let demand = [1500, 1800, 7400, 7400, 7600, 9800, 9900];
    let history = replay(&mut autoscaler, &mut fleet, start, &demand, &target());
    assert_eq!(history, vec![2, 2, 8, 8, 8, 10, 10]);
}

/// A step down: after the load falls, nothing is removed for the whole
/// stabilization window, then each reading removes at most `max(1, 10%)`
/// until the recommendation is reached.
#[test]
fn replay_a_step_down_waits_for_the_window_then_steps() {
    let start = Instant::now();
    let target = Target {
        max: 40,
        ..target()
    };
    let mut autoscaler = Autoscaler::resume(start, 30);
    let mut fleet = Fleet::new(30, 10_000);
    // 30,000 clients for a minute, then 4,000 for half an hour.
    let mut demand = vec![30_000; 4];
    demand.extend([4_000; 120]);
    let history = replay(&mut autoscaler, &mut fleet, start, &demand, &target);

    // The last high reading is at 45 s: no removal before 45 s + 300 s.
    let first_drop = history.iter().position(|&r| r < 30).unwrap();
    assert!(
        15 * first_drop > 45 + 300,
        "dropped at {}s",
        15 * first_drop
    );
    for pair in history.windows(2) {
        let removed = pair[0] - pair[1];
        assert!(removed <= (pair[0] / 10).max(1), "{pair:?} in {history:?}");
    }
    assert_eq!(history[first_drop], 27, "30 less 10%");
    assert_eq!(*history.last().unwrap(), 4);
}

/// An operator restart in mid-window: the load fell a minute before the
/// restart, so the lost window still held 6 pods. The new autoscaler,
/// seeded from the current replicas, keeps them for a whole window, and
/// then steps down one pod at a time (10% of 6 is less than one).
#[test]
fn replay_an_operator_restart_in_mid_window_does_not_drop_replicas() {
    let start = Instant::now();
    let mut before = Autoscaler::resume(start, 2);
    let mut fleet = Fleet::new(2, 10_000);
    let demand = [6000, 6000, 6000, 2500, 2500, 2500, 2500];
    let history = replay(&mut before, &mut fleet, start, &demand, &target());
    assert_eq!(*history.last().unwrap(), 6);
    drop(before);

    let restart = start + Duration::from_secs(15 * demand.len() as u64);
    let mut after = Autoscaler::resume(restart, fleet.replicas);
    let history = replay(&mut after, &mut fleet, restart, &[2500; 40], &target());
    assert_eq!(history[0], 6, "the first reading after the restart kept 6");
    let first_drop = history.iter().position(|&r| r < 6).unwrap();
    assert!(15 * first_drop > 300, "dropped {}s after", 15 * first_drop);
    assert_eq!(&history[first_drop..first_drop + 3], &[5, 4, 3]);
    assert_eq!(*history.last().unwrap(), 3);
}

/// Refusals at capacity: target 9,500 per pod, 10,000 accepted per pod,
/// 50,000 clients. Two full pods look like 10,000 per pod, inside the
/// tolerance band of 9,500; the refused clients drive the fleet up until
/// nobody is refused (5 full pods), and the next refused client adds one.
#[test]
fn replay_refusals_at_capacity_grow_the_fleet_until_nobody_is_refused() {
    let start = Instant::now();
    let target = Target {
        connections_per_pod: 9_500,
        ..target()
    };
    let mut autoscaler = Autoscaler::resume(start, 2);
    let mut fleet = Fleet::new(2, 10_000);
    let history = replay(&mut autoscaler, &mut fleet, start, &[50_000; 20], &target);
    // The first reading only sets the baseline of the counters.
    assert_eq!(&history[..4], &[2, 3, 4, 5], "{history:?}");
    assert!(history[4..].iter().all(|&r| r == 5), "{history:?}");
    assert_eq!(fleet.read(50_000).connections, 50_000, "nobody refused");

    let later = start + Duration::from_secs(15 * 20);
    let history = replay(&mut autoscaler, &mut fleet, later, &[50_100; 10], &target);
    assert_eq!(history, vec![6; 10]);
    assert_eq!(fleet.read(50_100).connections, 50_100, "nobody refused");
}

/// A stats outage: nothing changes while the stats cannot be read, and
/// the load that fell meanwhile removes no pod before a whole window of
/// readings after the stats return.
#[test]
fn replay_a_stats_outage_changes_nothing_and_delays_the_scale_down() {
    let start = Instant::now();
    let mut autoscaler = Autoscaler::resume(start, 2);
    let mut fleet = Fleet::new(2, 10_000);
    let history = replay(&mut autoscaler, &mut fleet, start, &[6000; 4], &target());
    assert_eq!(*history.last().unwrap(), 6);

    // Ten minutes without stats, one failed reading every 15 s.
    let outage = start + Duration::from_secs(60);
    for i in 0..40 {
        let now = outage + Duration::from_secs(15 * i);
        autoscaler.stats_unavailable(now, fleet.replicas, &target());
    }
    assert_eq!(fleet.replicas, 6);

    let back = outage + Duration::from_secs(600);
    let history = replay(&mut autoscaler, &mut fleet, back, &[1000; 30], &target());
    let first_drop = history.iter().position(|&r| r < 6).unwrap();
    // The last failed reading was at 585 s into the outage, 15 s before.
    assert!(
        15 * first_drop + 15 > 300,
        "dropped {}s after",
        15 * first_drop
    );
    assert_eq!(history[first_drop], 5);
}
