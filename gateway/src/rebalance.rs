//! Rebalancing: after a scale-out, a node holding more than its share of the
//! fleet's connections hands the excess to the others, gradually and without
//! losing a message.
//!
//! Connections live for hours, so new nodes would otherwise sit idle until
//! clients happen to reconnect. Every node's registry heartbeat carries its
//! load (`connections / max_connections`, and whether it is ready and
//! draining: [`NodeLoad`]). A node whose load exceeds the fleet's mean by more
//! than `rebalance.tolerance` (relative) starts *shedding*: it picks at random
//! connections older than `rebalance.min_age_ms`, at most
//! `rebalance.max_per_second`, and hands each over as the drain does
//! ([`shutdown::hand_over`]): a `reconnect` event with `after_ms` spread over
//! `rebalance.spread_ms`, then close 1012. The clients reconnect through the
//! ingress and recover with `since`.
//!
//! Once a node starts shedding it goes down to the mean (not to the edge of
//! the band), computed when it started: the other nodes' counts lag by up to
//! a heartbeat, so recomputing the mean as its own count falls would shed too
//! much. While it sheds and is above that target it refuses new upgrades
//! with 503 ([`Admission`]), so that a round-robin ingress does not send the
//! shed clients straight back; at or below it, it never refuses. Nothing is
//! shed while any node is draining or not ready, or while the registry is
//! partial (a node's counts are missing or stale). After shedding, a node
//! waits until the fleet's counts show where the clients went before it
//! judges again.
//!
//! [`Planner`] holds the decisions, as pure logic over the fleet's counts and
//! the clock; [`spawn`] runs it against the hub and the broker's registry.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::seq::SliceRandom as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info, info_span};
use wsgate_config::Rebalance;

use crate::app::AppState;
use crate::broker::{Fleet, LoadReport, NodeLoad};
use crate::outbox::Outbox;
use crate::shutdown;

/// How often the rebalancer looks at the fleet: the per-second budget is
/// spent in tenths, so closes are spread within each second too.
const TICK: Duration = Duration::from_millis(100);

/// Time allowed beyond `rebalance.spread_ms` for the last shed connection to
/// close before the node stops refusing anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Whether upgrades are refused because this node is shedding: set by the
/// rebalancer, read by the handshake (docs/protocol.md, "Connecting", rule 1).
#[derive(Debug)]
pub struct Admission {
    /// Refuse while the node holds more connections than this; `u64::MAX`
    /// while it is not shedding.
    refuse_above: AtomicU64,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            refuse_above: AtomicU64::new(u64::MAX),
        }
    }
}

impl Admission {
    /// Whether a node holding `connections` refuses a new upgrade: only while
    /// it sheds and is above its target, never at or below the mean.
    pub fn refuses(&self, connections: usize) -> bool {
        connections as u64 > self.refuse_above.load(Ordering::Acquire)
    }

    fn set(&self, refuse_above: Option<u64>) {
        self.refuse_above
            .store(refuse_above.unwrap_or(u64::MAX), Ordering::Release);
    }
}

/// The number of connections a node holding `own` should shed down to, when
/// its load exceeds the fleet's mean load by more than `tolerance`
/// (relative): the mean load times its own `max_connections`, rounded up, so
/// it never sheds below the mean. `None` when it is within the band, or the
/// fleet cannot be judged (see [`settled`]).
pub fn target(own: &NodeLoad, fleet: &Fleet, tolerance: f64) -> Option<u64> {
    if !settled(fleet) {
        return None;
    }
    let mean =
        fleet.nodes.iter().map(|(_, load)| load.load()).sum::<f64>() / fleet.nodes.len() as f64;
    if own.load() <= mean * (1.0 + tolerance) {
        return None;
    }
    // The epsilon keeps an exact mean (200.000…01) from rounding up a whole connection.
    let target = (mean * own.max_connections as f64 - 1e-9).ceil().max(0.0) as u64;
    (target < own.connections).then_some(target)
}

/// Whether the fleet's counts can be compared: more than one node, none
/// draining or not ready, and every live node's counts fresh.
pub fn settled(fleet: &Fleet) -> bool {
    !fleet.partial
        && fleet.nodes.len() > 1
        && fleet
            .nodes
            .iter()
            .all(|(_, load)| load.ready && !load.draining)
}

/// What the rebalancer does at one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Connections to shed now.
    pub shed: usize,
}

/// One shedding: from the first connection shed until the last has closed.
#[derive(Debug)]
struct Episode {
    /// Shed down to this many connections (the mean when it started).
    target: u64,
    /// Connections still to shed.
    remaining: u64,
    /// When the last connection was shed; `None` before the first.
    last_shed: Option<Instant>,
}

/// The rebalancer's decisions, as pure logic over the fleet's counts and the
/// clock: [`Planner::step`] at every tick, [`Planner::shed`] with what was
/// actually shed.
#[derive(Debug)]
pub struct Planner {
    tolerance: f64,
    max_per_second: usize,
    spread: Duration,
    /// After shedding, how long to wait for the fleet's counts to show where
    /// the clients went before judging again.
    settle: Duration,
    /// How long an excess must last before shedding starts: one heartbeat
    /// interval, so that every other node has reported since (a burst of new
    /// connections shows in a node's own count before in the others').
    persist: Duration,
    /// Since when the node has been above the band, while not shedding.
    over_since: Option<Instant>,
    episode: Option<Episode>,
    quiet_until: Option<Instant>,
    /// When each connection shed in the last second was shed.
    recent: VecDeque<Instant>,
}

impl Planner {
    /// A planner with `config`'s tolerance, rate and spread, in a fleet whose
    /// registry heartbeat is `heartbeat`: an excess must last one interval
    /// before shedding starts, and after shedding it waits two (by then every
    /// node has announced the clients it took).
    pub fn new(config: &Rebalance, heartbeat: Duration) -> Self {
        Self {
            tolerance: config.tolerance,
            max_per_second: usize::try_from(config.max_per_second)
                .unwrap_or(usize::MAX)
                .max(1),
            spread: config.spread,
            settle: heartbeat.saturating_mul(2),
            persist: heartbeat,
            over_since: None,
            episode: None,
            quiet_until: None,
            recent: VecDeque::new(),
        }
    }

    /// Whether the node is shedding (or waiting for the last shed connections
    /// to close).
    pub fn is_shedding(&self) -> bool {
        self.episode.is_some()
    }

    /// Refuse upgrades while holding more connections than this: the target of
    /// a shedding that has shed at least one connection. Never at or below the
    /// mean, and never for an excess it cannot shed (nothing old enough).
    pub fn refuse_above(&self) -> Option<u64> {
        self.episode
            .as_ref()
            .filter(|episode| episode.last_shed.is_some())
            .map(|episode| episode.target)
    }

    /// What to do at `now`, for the node named `own` in `fleet`.
    pub fn step(&mut self, now: Instant, own: &str, fleet: &Fleet) -> Step {
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        let Some(load) = fleet
            .nodes
            .iter()
            .find(|(name, _)| name == own)
            .map(|(_, load)| *load)
        else {
            self.stop(now);
            return Step::default();
        };
        if !settled(fleet) {
            self.over_since = None;
            self.stop(now);
            return Step::default();
        }
        if self.episode.is_none() {
            if self.quiet_until.is_some_and(|until| now < until) {
                return Step::default();
            }
            let Some(target) = target(&load, fleet, self.tolerance) else {
                self.over_since = None;
                return Step::default();
            };
            let since = *self.over_since.get_or_insert(now);
            if now.duration_since(since) < self.persist {
                return Step::default();
            }
            self.over_since = None;
            self.episode = Some(Episode {
                target,
                remaining: load.connections - target,
                last_shed: None,
            });
        }
        let Some(episode) = &mut self.episode else {
            return Step::default();
        };
        if load.connections <= episode.target {
            // Clients left on their own, or the shed ones have closed.
            episode.remaining = 0;
        }
        if episode.remaining > 0 {
            // A tenth of the per-second budget per tick, within the last second's.
            let per_tick = self.max_per_second.div_ceil(10);
            let allowed = self
                .max_per_second
                .saturating_sub(self.recent.len())
                .min(per_tick);
            let shed = usize::try_from(episode.remaining)
                .unwrap_or(usize::MAX)
                .min(allowed);
            return Step { shed };
        }
        // Nothing shed at all (none old enough), or the shed ones closed by now.
        let closed = load.connections <= episode.target
            || episode
                .last_shed
                .is_none_or(|last| now >= last + self.spread + CLOSE_GRACE);
        if closed {
            self.stop(now);
        }
        Step::default()
    }

    /// Records that `shed` of the `asked` connections were shed at `now`.
    /// Fewer than asked means none other may be shed yet (all too young):
    /// the shedding ends once those close.
    pub fn shed(&mut self, now: Instant, asked: usize, shed: usize) {
        self.recent.extend(std::iter::repeat_n(now, shed));
        if let Some(episode) = &mut self.episode {
            episode.remaining = episode.remaining.saturating_sub(shed as u64);
            if shed < asked {
                episode.remaining = 0;
            }
            if shed > 0 {
                episode.last_shed = Some(now);
            }
        }
    }

    /// Ends a shedding, if one is under way, and waits `settle` before the next.
    fn stop(&mut self, now: Instant) {
        if self.episode.take().is_some() {
            self.quiet_until = Some(now + self.settle);
        }
    }
}

/// What this node reports of its load in its heartbeats: its connections,
/// `max_connections` (as applied, capped below the open-file limit), and
/// whether it is ready and draining.
pub fn load_report(state: &Arc<AppState>, max_connections: usize) -> LoadReport {
    let state = Arc::downgrade(state);
    Arc::new(move || {
        let state = state.upgrade()?;
        Some(NodeLoad {
            connections: state.hub.connection_count() as u64,
            max_connections: max_connections as u64,
            ready: state.is_ready(),
            draining: state.draining.load(Ordering::Acquire),
        })
    })
}

/// Runs the rebalancer as a task of `tracker` until `cancel` or the drain.
/// `heartbeat` is the registry's interval (`nats.node_heartbeat_ms`).
pub fn spawn(
    state: Arc<AppState>,
    heartbeat: Duration,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    tracker.spawn(run(state, heartbeat, cancel).instrument(info_span!("rebalance")));
}

async fn run(state: Arc<AppState>, heartbeat: Duration, cancel: CancellationToken) {
    let config = state.config.rebalance.clone();
    let spread_ms = config.spread.as_millis() as u64;
    let mut planner = Planner::new(&config, heartbeat);
    // Told to reconnect and not closed yet: never told twice.
    let mut told: Vec<Arc<Outbox>> = Vec::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if state.draining.load(Ordering::Acquire) {
            // The drain hands over every connection.
            break;
        }
        let fleet = state.broker.fleet();
        let now = Instant::now();
        let was_refusing = planner.refuse_above();
        let step = planner.step(now, &state.config.node, &fleet);
        let mut candidates = Vec::new();
        if step.shed > 0 {
            told.retain(|outbox| outbox.closing().is_none());
            candidates = state
                .hub
                .sheddable(config.min_age, config.include_unrecoverable);
            candidates.retain(|candidate| !told.iter().any(|outbox| outbox.key == candidate.key));
            candidates.shuffle(&mut rand::rng());
            candidates.truncate(step.shed);
            planner.shed(now, step.shed, candidates.len());
        }
        let refusing = planner.refuse_above();
        state.rebalance.set(refusing);
        match (was_refusing, refusing) {
            (None, Some(target)) => info!(
                connections = state.hub.connection_count(),
                target,
                nodes = fleet.nodes.len(),
                "rebalancing: shedding down to the fleet's mean"
            ),
            (Some(_), None) => info!(
                connections = state.hub.connection_count(),
                "rebalancing: done"
            ),
            _ => {}
        }
        if candidates.is_empty() {
            continue;
        }
        state.metrics.rebalance_shed.inc_by(candidates.len() as u64);
        told.extend(candidates.iter().cloned());
        let schedule = shutdown::hand_over(candidates, spread_ms);
        tokio::spawn(shutdown::close_on_schedule(schedule, now, None));
    }
    state.rebalance.set(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, connections: u64) -> (String, NodeLoad) {
        (
            name.to_owned(),
            NodeLoad {
                connections,
                max_connections: 1000,
                ready: true,
                draining: false,
            },
        )
    }

    fn fleet(nodes: &[(&str, u64)]) -> Fleet {
        Fleet {
            nodes: nodes.iter().map(|(name, n)| node(name, *n)).collect(),
            partial: false,
        }
    }

    fn config(max_per_second: u32) -> Rebalance {
        Rebalance {
            max_per_second,
            spread: Duration::from_secs(5),
            ..Rebalance::default()
        }
    }

    fn own(fleet: &Fleet, name: &str) -> NodeLoad {
        fleet
            .nodes
            .iter()
            .find(|(node, _)| node == name)
            .map(|(_, load)| *load)
            .unwrap()
    }

    /// A node above the mean by more than the tolerance sheds down to the
    /// mean, rounded up; within the band, or at or below the mean, it keeps
    /// every connection.
    #[test]
    fn a_node_above_the_band_sheds_down_to_the_mean() {
        let two = fleet(&[("a", 400), ("b", 0)]);
        assert_eq!(target(&own(&two, "a"), &two, 0.2), Some(200));
        assert_eq!(target(&own(&two, "b"), &two, 0.2), None);
        // Mean 100, band up to 120: 119 stays, 121 sheds to 100.
        let within = fleet(&[("a", 119), ("b", 90), ("c", 91)]);
        assert_eq!(target(&own(&within, "a"), &within, 0.2), None);
        let over = fleet(&[("a", 121), ("b", 90), ("c", 89)]);
        assert_eq!(target(&own(&over, "a"), &over, 0.2), Some(100));
        // A mean that is not whole rounds up: never below the mean.
        let odd = fleet(&[("a", 301), ("b", 0)]);
        assert_eq!(target(&own(&odd, "a"), &odd, 0.2), Some(151));
    }

    /// Loads compare relative to each node's own maximum.
    #[test]
    fn loads_are_relative_to_each_nodes_maximum() {
        let mut mixed = fleet(&[("big", 400), ("small", 100)]);
        mixed.nodes[0].1.max_connections = 2000;
        // Loads 0.2 and 0.1: mean 0.15, band up to 0.18; big sheds to 300.
        assert_eq!(target(&own(&mixed, "big"), &mixed, 0.2), Some(300));
        mixed.nodes[1].1.connections = 200;
        assert_eq!(
            target(&own(&mixed, "big"), &mixed, 0.2),
            None,
            "both at 0.2"
        );
    }

    /// Nothing is shed in a fleet of one, while any node drains or is not
    /// ready, or while the registry is partial.
    #[test]
    fn nothing_is_shed_unless_the_fleet_is_settled() {
        let alone = fleet(&[("a", 400)]);
        assert_eq!(target(&own(&alone, "a"), &alone, 0.2), None);
        let mut partial = fleet(&[("a", 400), ("b", 0)]);
        partial.partial = true;
        assert_eq!(target(&own(&partial, "a"), &partial, 0.2), None);
        let mut draining = fleet(&[("a", 400), ("b", 0), ("c", 0)]);
        draining.nodes[2].1.draining = true;
        assert_eq!(target(&own(&draining, "a"), &draining, 0.2), None);
        let mut unready = fleet(&[("a", 400), ("b", 0)]);
        unready.nodes[1].1.ready = false;
        assert_eq!(target(&own(&unready, "a"), &unready, 0.2), None);
    }

    /// The heartbeat of these tests: an excess must last 500 ms before
    /// shedding starts, and the planner waits 1 s after shedding.
    const HEARTBEAT: Duration = Duration::from_millis(500);

    /// A planner that has seen `fleet` long enough to start shedding at the
    /// returned instant.
    fn started(max_per_second: u32, fleet: &Fleet) -> (Planner, Instant) {
        let mut planner = Planner::new(&config(max_per_second), HEARTBEAT);
        let start = Instant::now();
        assert_eq!(planner.step(start, "a", fleet), Step::default());
        (planner, start + HEARTBEAT)
    }

    /// An excess starts no shedding until it has lasted one heartbeat
    /// interval: a burst of new connections shows in a node's own count
    /// before the others report theirs.
    #[test]
    fn an_excess_must_last_one_heartbeat_before_shedding_starts() {
        let mut planner = Planner::new(&config(50), HEARTBEAT);
        let start = Instant::now();
        let over = fleet(&[("a", 400), ("b", 0)]);
        assert_eq!(planner.step(start, "a", &over), Step::default());
        let brief = fleet(&[("a", 400), ("b", 380)]);
        assert_eq!(planner.step(start + TICK, "a", &brief), Step::default());
        // Over again: the interval starts anew.
        assert_eq!(planner.step(start + TICK * 2, "a", &over), Step::default());
        assert_eq!(planner.step(start + HEARTBEAT, "a", &over), Step::default());
        let step = planner.step(start + TICK * 2 + HEARTBEAT, "a", &over);
        assert_eq!(step.shed, 5);
    }

    /// Shedding keeps to `max_per_second` over any second, spent a tenth per
    /// tick, sheds exactly the excess, refuses upgrades above the target
    /// until the shed connections have closed, then waits before judging
    /// again.
    #[test]
    fn shedding_is_rate_limited_and_stops_at_the_mean() {
        let (mut planner, start) = started(50, &fleet(&[("a", 400), ("b", 0)]));
        let mut now = start;
        let mut connections = 400u64;
        let mut shed_total = 0;
        let mut per_second = vec![0usize; 20];
        // Shed connections close 1 s after they are shed, and b has them at once.
        let mut closing: Vec<Instant> = Vec::new();
        while now < start + Duration::from_secs(12) {
            let closed = closing.iter().filter(|at| **at <= now).count();
            closing.retain(|at| *at > now);
            connections -= closed as u64;
            let moved = 400 - connections;
            let step = planner.step(now, "a", &fleet(&[("a", connections), ("b", moved)]));
            planner.shed(now, step.shed, step.shed);
            if connections > 200 {
                assert_eq!(planner.refuse_above(), Some(200), "refuses while shedding");
            }
            shed_total += step.shed;
            per_second[now.duration_since(start).as_secs() as usize] += step.shed;
            closing.extend(std::iter::repeat_n(now + Duration::from_secs(1), step.shed));
            now += TICK;
        }
        assert_eq!(shed_total, 200, "exactly the excess");
        assert_eq!(connections, 200);
        assert!(per_second.iter().all(|n| *n <= 50), "{per_second:?}");
        assert_eq!(per_second[0], 50);
        // Done and balanced: nothing more to shed, nothing refused.
        assert!(!planner.is_shedding());
        assert_eq!(planner.refuse_above(), None);
        let step = planner.step(now, "a", &fleet(&[("a", 200), ("b", 200)]));
        assert_eq!(step, Step::default());
    }

    /// Right after a shedding, counts that still look unbalanced (the other
    /// node's heartbeat lagging) start none until the settle time has passed.
    #[test]
    fn after_shedding_the_planner_waits_for_fresh_counts() {
        let (mut planner, now) = started(50, &fleet(&[("a", 400), ("b", 0)]));
        let step = planner.step(now, "a", &fleet(&[("a", 400), ("b", 0)]));
        planner.shed(now, step.shed, step.shed);
        let lagging = fleet(&[("a", 395), ("b", 0)]);
        let mut draining = lagging.clone();
        draining.nodes[1].1.draining = true;
        assert_eq!(planner.step(now + TICK, "a", &draining), Step::default());
        assert!(!planner.is_shedding());
        for tick in 2..15 {
            assert_eq!(
                planner.step(now + TICK * tick, "a", &lagging),
                Step::default()
            );
        }
    }

    /// Once shedding, a node goes down to the mean computed when it started,
    /// even when its own falling count (against the others' lagging counts)
    /// would make the mean look lower.
    #[test]
    fn the_target_holds_for_the_whole_shedding() {
        let (mut planner, now) = started(1000, &fleet(&[("a", 400), ("b", 0)]));
        let step = planner.step(now, "a", &fleet(&[("a", 400), ("b", 0)]));
        assert_eq!(step.shed, 100, "a tenth of the per-second budget");
        assert_eq!(planner.refuse_above(), None, "nothing shed yet");
        planner.shed(now, step.shed, step.shed);
        assert_eq!(planner.refuse_above(), Some(200));
        let later = now + TICK;
        let step = planner.step(later, "a", &fleet(&[("a", 300), ("b", 0)]));
        assert_eq!(step.shed, 100);
        planner.shed(later, step.shed, step.shed);
        assert_eq!(planner.refuse_above(), Some(200), "not 150");
        let step = planner.step(later + TICK, "a", &fleet(&[("a", 250), ("b", 0)]));
        assert_eq!(step.shed, 0, "the whole excess is told");
        assert_eq!(
            planner.refuse_above(),
            Some(200),
            "refusing until it closes"
        );
        let step = planner.step(later + TICK * 2, "a", &fleet(&[("a", 200), ("b", 150)]));
        assert_eq!(step, Step::default());
        assert_eq!(planner.refuse_above(), None, "at the mean: never refuses");
    }

    /// A node that starts draining, or a node with no connection old enough,
    /// ends the shedding, and the refusals with it; nothing is refused for an
    /// excess that cannot be shed.
    #[test]
    fn shedding_stops_when_the_fleet_unsettles_or_nothing_is_old_enough() {
        let settled = fleet(&[("a", 395), ("b", 5)]);
        let (mut planner, now) = started(50, &settled);
        let step = planner.step(now, "a", &settled);
        assert!(step.shed > 0);
        planner.shed(now, step.shed, step.shed);
        assert_eq!(planner.refuse_above(), Some(200));
        let mut draining = settled.clone();
        draining.nodes[1].1.draining = true;
        assert_eq!(planner.step(now + TICK, "a", &draining), Step::default());
        assert_eq!(planner.refuse_above(), None);
        // After the settle time and one more interval, shedding again; none old enough ends it.
        let later = now + TICK + HEARTBEAT * 2;
        assert_eq!(planner.step(later, "a", &settled), Step::default());
        let step = planner.step(later + HEARTBEAT, "a", &settled);
        assert!(step.shed > 0);
        planner.shed(later + HEARTBEAT, step.shed, 0);
        assert_eq!(
            planner.refuse_above(),
            None,
            "nothing shed, nothing refused"
        );
        assert_eq!(
            planner.step(later + HEARTBEAT + TICK, "a", &settled),
            Step::default()
        );
        assert!(!planner.is_shedding());
    }

    /// Upgrades are refused only above the target, never at or below it.
    #[test]
    fn admission_refuses_only_above_the_target() {
        let admission = Admission::default();
        assert!(!admission.refuses(1_000_000));
        admission.set(Some(200));
        assert!(admission.refuses(201));
        assert!(!admission.refuses(200));
        admission.set(None);
        assert!(!admission.refuses(201));
    }
}
