//! The node's heartbeat: one task that asks every connection, once per
//! `limits.heartbeat_ms`, to ping its client, or to close it with 1011 when nothing was
//! heard from it within `limits.heartbeat_timeout_ms` (the connection's writer does either,
//! see [`crate::session::writer`]).
//!
//! One task for the node rather than a timer per connection: an idle connection then holds
//! no timer (about a hundred bytes each), and a connection's writer, woken for every batch
//! of frames, does not poll a timer at each wake-up. The connections are visited in
//! [`SLICES`] slices spread over the interval, by key, so the pings of tens of thousands
//! of connections do not all leave at once, and each connection is still asked once per
//! interval.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info_span};

use crate::hub::Hub;

/// Slices of the connections visited in turn, each `heartbeat_ms / SLICES` apart.
pub const SLICES: u64 = 16;

/// Starts the node's heartbeat; it stops when `cancel` is cancelled.
pub fn spawn(hub: Arc<Hub>, interval: Duration, tracker: &TaskTracker, cancel: CancellationToken) {
    tracker.spawn(run(hub, interval, cancel).instrument(info_span!("heartbeat")));
}

/// Visits one slice every `interval / slices`, the slices in turn. Fewer slices than
/// [`SLICES`] for an interval under 16 ms, so a slice is at least a millisecond apart.
async fn run(hub: Arc<Hub>, interval: Duration, cancel: CancellationToken) {
    let slices = SLICES.min(interval.as_millis().max(1) as u64);
    let step = interval / slices as u32;
    let start = tokio::time::Instant::now() + step;
    let mut ticker = tokio::time::interval_at(start, step);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slice = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        hub.beat(slice, slices);
        slice = (slice + 1) % slices;
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;
    use crate::metrics::Metrics;
    use crate::outbox::{Next, Outbox};

    /// Every attached connection is asked once per interval, in slices spread over it; the
    /// heartbeat comes before queued frames, and a close wins over both.
    #[tokio::test(start_paused = true)]
    async fn every_connection_is_asked_once_per_interval() {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new("n".into(), metrics.clone());
        let outboxes: Vec<Arc<Outbox>> = (0..40)
            .map(|key| Outbox::new(key, Arc::from(format!("n:{key}")), 8, metrics.clone()))
            .collect();
        for outbox in &outboxes {
            hub.attach(outbox);
        }
        let cancel = CancellationToken::new();
        let interval = Duration::from_millis(1600);
        spawn(hub.clone(), interval, &TaskTracker::new(), cancel.clone());
        let beats = |outboxes: &[Arc<Outbox>]| {
            outboxes
                .iter()
                .filter(|outbox| matches!(outbox.next().now_or_never(), Some(Next::Beat)))
                .count()
        };

        // Half an interval: about half the slices, never a connection twice.
        tokio::time::sleep(interval / 2 + Duration::from_millis(1)).await;
        let first = beats(&outboxes);
        assert!(
            (15..=25).contains(&first),
            "{first} of 40 after half an interval"
        );
        tokio::time::sleep(interval / 2).await;
        assert_eq!(
            first + beats(&outboxes),
            40,
            "each once in the first interval"
        );
        tokio::time::sleep(interval).await;
        assert_eq!(beats(&outboxes), 40, "and once in the next");

        // The heartbeat before queued frames; the close over both.
        let outbox = &outboxes[0];
        outbox.push("frame".into());
        outbox.beat();
        assert!(matches!(outbox.next().now_or_never(), Some(Next::Beat)));
        assert!(
            matches!(outbox.next().now_or_never(), Some(Next::Frames(frames)) if frames.len() == 1)
        );
        outbox.beat();
        outbox.close(crate::protocol::close::NORMAL, "");
        assert!(matches!(outbox.next().now_or_never(), Some(Next::Closed)));
        cancel.cancel();
    }
}
