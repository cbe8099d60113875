//! Graceful shutdown: the signal that starts it and the drain that follows.
//!
//! On SIGTERM (or Ctrl-C) readiness turns 503 at once and new upgrades are
//! refused. Every connection gets a `reconnect` event whose `after_ms` is spread
//! over `drain.reconnect_spread_ms`, and is closed with 1012 when that time has
//! passed, so clients reconnect to other replicas a few at a time instead of all
//! at once. At `drain.seconds` whatever is left is closed with 1001.
//!
//! The rebalancer hands connections over the same way ([`hand_over`], then
//! [`close_on_schedule`]), a few at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use rand::seq::SliceRandom as _;
use tokio::time::Instant;
use tracing::info;

use crate::app::AppState;
use crate::outbox::Outbox;
use crate::protocol::{close, frame};

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The `after_ms` of the `i`-th of `n` connections: evenly spaced over the
/// window, each with up to one slot of jitter.
fn after_ms(i: usize, n: usize, spread_ms: u64) -> u64 {
    if n == 0 || spread_ms == 0 {
        return 0;
    }
    let slot = spread_ms / n as u64;
    let base = spread_ms * i as u64 / n as u64;
    (base + rand::random_range(0..=slot)).min(spread_ms)
}

/// Tells each connection, in random order, to reconnect after an `after_ms`
/// spread evenly over `spread_ms`; returns the schedule of their closes, by
/// `after_ms`.
pub fn hand_over(mut outboxes: Vec<Arc<Outbox>>, spread_ms: u64) -> Vec<(u64, Arc<Outbox>)> {
    outboxes.shuffle(&mut rand::rng());
    let n = outboxes.len();
    let mut schedule: Vec<_> = outboxes
        .into_iter()
        .enumerate()
        .map(|(i, outbox)| {
            let after = after_ms(i, n, spread_ms);
            outbox.push(Utf8Bytes::from(
                frame::Event::Reconnect { after_ms: after }.text(),
            ));
            (after, outbox)
        })
        .collect();
    schedule.sort_by_key(|(after, _)| *after);
    schedule
}

/// Closes each connection of a [`hand_over`] schedule with 1012 when its
/// `after_ms` has passed since `start`, stopping before `deadline`.
pub async fn close_on_schedule(
    schedule: Vec<(u64, Arc<Outbox>)>,
    start: Instant,
    deadline: Option<Instant>,
) {
    for (after, outbox) in schedule {
        let at = start + Duration::from_millis(after);
        if deadline.is_some_and(|deadline| at >= deadline) {
            break;
        }
        tokio::time::sleep_until(at).await;
        outbox.close(close::RESTART, "service restart");
    }
}

/// Drains every connection; returns when all are closed or the deadline passed.
pub async fn drain(state: &Arc<AppState>) {
    state.draining.store(true, Ordering::Release);
    let config = &state.config.drain;
    let start = Instant::now();
    let deadline = start + config.deadline;
    let spread_ms = config.reconnect_spread.as_millis() as u64;
    let outboxes = state.hub.all();
    info!(connections = outboxes.len(), spread_ms, "draining");
    let schedule = hand_over(outboxes, spread_ms);
    state.sessions.close();
    // Those told to reconnect later than the drain lasts are closed with 1001 below.
    close_on_schedule(schedule, start, Some(deadline)).await;
    if tokio::time::timeout_at(deadline, state.sessions.wait())
        .await
        .is_err()
    {
        let rest = state.hub.all();
        info!(connections = rest.len(), "drain deadline passed");
        for outbox in rest {
            outbox.close(close::GOING_AWAY, "going away");
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), state.sessions.wait()).await;
    }
    info!(elapsed_ms = start.elapsed().as_millis() as u64, "drained");
}

#[cfg(test)]
mod tests {
    use super::after_ms;

    #[test]
    fn reconnects_spread_over_the_window() {
        let n = 1000;
        let values: Vec<u64> = (0..n).map(|i| after_ms(i, n, 10_000)).collect();
        assert!(values.iter().all(|v| *v <= 10_000));
        // Every tenth of the window gets about a tenth of the connections.
        for decile in 0..10 {
            let count = values.iter().filter(|v| **v / 1000 == decile).count();
            assert!((80..=120).contains(&count), "decile {decile}: {count}");
        }
        assert_eq!(after_ms(0, 0, 10_000), 0);
        assert_eq!(after_ms(3, 5, 0), 0);
    }
}
