//! A connection's outbound side as the rest of the gateway sees it: its bounded
//! queue of frames, the writer's wake-up, its user id, the switch that closes
//! it, and its heartbeat (when the client was last heard from, and the node's
//! request to ping it). Sessions push replies into it, rooms push their
//! messages, the node's [`crate::heartbeat`] asks for pings, and the
//! connection's writer drains it.
//!
//! A full queue is a decision, not growth: the connection is closed with 1013
//! (slow consumer) and everyone else carries on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::metrics::{Ending, Metrics};
use crate::protocol::close;

/// What the hub holds of one connection: its bounded outbound queue and the
/// switch that closes it.
///
/// The queue is a plain `VecDeque` behind a mutex rather than a channel: an idle
/// connection's queue then holds no allocation at all (the writer takes the
/// whole batch, leaving an empty deque behind), which matters at tens of
/// thousands of idle connections per pod. For the same reason the close switch
/// is a `OnceLock` and a [`Notify`] inside the outbox, not a
/// `CancellationToken` (a separate allocation of about 100 bytes per
/// connection).
pub struct Outbox {
    /// Local key, unique for the life of the process.
    pub key: u64,
    /// Connection id, `<node>:<boot>-<n>`, unique across the cluster.
    pub id: Arc<str>,
    /// The connection's user id; changes when an anonymous connection authenticates.
    user: Mutex<Arc<str>>,
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
    closing: OnceLock<(u16, &'static str)>,
    /// Set when the close was decided by [`Outbox::end`]: the client or the network ended
    /// the connection, so nothing more is written to it but the answer to a close frame.
    ended: AtomicBool,
    /// Wakes whoever waits in [`Outbox::closed`] when the close is requested.
    closed: Notify,
    /// Set by [`Outbox::beat`]: the writer's next wake-up pings the client, or closes it
    /// when it has been silent too long.
    beat: AtomicBool,
    /// When the client was last heard from, in milliseconds of [`clock`].
    heard: AtomicU64,
    metrics: Arc<Metrics>,
}

/// What the writer does next.
#[derive(Debug)]
pub enum Next {
    /// Send these frames.
    Frames(VecDeque<Utf8Bytes>),
    /// The heartbeat is due: ping the client, or close it if it has been silent too long.
    Beat,
    /// The connection is asked to close (what is still queued stays for [`Outbox::shut`]).
    Closed,
}

/// Milliseconds since the process's clock origin: when clients were last heard from.
fn clock() -> u64 {
    static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
    ORIGIN.elapsed().as_millis() as u64
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Utf8Bytes>,
    /// Set when the writer has stopped: nothing is queued any more.
    closed: bool,
}

impl Outbox {
    /// Creates an outbox holding at most `capacity` frames.
    pub fn new(key: u64, id: Arc<str>, capacity: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        let user = Arc::from(format!("anon:{id}"));
        Arc::new(Self {
            key,
            id,
            user: Mutex::new(user),
            queue: Mutex::default(),
            ready: Notify::new(),
            capacity: capacity.max(1),
            closing: OnceLock::new(),
            ended: AtomicBool::new(false),
            closed: Notify::new(),
            beat: AtomicBool::new(false),
            heard: AtomicU64::new(clock()),
            metrics,
        })
    }

    /// Queues a frame; a full queue closes the connection with 1013.
    /// Returns whether the frame was queued.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_all(std::iter::once(frame)) == 1
    }

    /// Queues frames in order under one lock and wakes the writer once; a full
    /// queue closes the connection with 1013. Returns how many were queued.
    ///
    /// The writer is woken only when the queue was empty: it takes the whole
    /// queue each time, so a non-empty queue already has a wake-up pending.
    pub fn push_all(&self, frames: impl IntoIterator<Item = Utf8Bytes>) -> usize {
        let mut queue = self.queue.lock();
        if queue.closed {
            return 0;
        }
        let was_empty = queue.frames.is_empty();
        let mut queued = 0;
        let mut overflow = false;
        for frame in frames {
            if queue.frames.len() >= self.capacity {
                overflow = true;
                break;
            }
            queue.frames.push_back(frame);
            queued += 1;
        }
        drop(queue);
        if was_empty && queued > 0 {
            self.ready.notify_one();
        }
        if overflow && self.close(close::TRY_AGAIN_LATER, "slow consumer") {
            self.metrics.slow_consumers.inc();
        }
        self.metrics.frames_queued.inc_by(queued as u64);
        queued
    }

    /// The connection's user id.
    pub fn user(&self) -> Arc<str> {
        self.user.lock().clone()
    }

    /// Records the connection's (new) user id.
    pub fn set_user(&self, user: &str) {
        *self.user.lock() = Arc::from(user);
    }

    /// Takes every queued frame, leaving the queue empty (and unallocated).
    pub fn take(&self) -> VecDeque<Utf8Bytes> {
        std::mem::take(&mut self.queue.lock().frames)
    }

    /// Waits for what the writer does next: the heartbeat, queued frames (all of them), or
    /// the close. The close wins over both; the heartbeat comes before frames, so a
    /// connection that is always sent something is still pinged and timed out.
    ///
    /// The writer waits here alone, not also in [`Outbox::closed`] or on a timer of its
    /// own: one wake-up source keeps the per-frame path to a lock and a notify, and an idle
    /// connection to no timer at all.
    ///
    /// # Cancel safety
    /// Cancel-safe: frames are taken only when the future completes.
    pub async fn next(&self) -> Next {
        loop {
            if self.closing.get().is_some() {
                return Next::Closed;
            }
            if self.beat.swap(false, Ordering::AcqRel) {
                return Next::Beat;
            }
            let batch = self.take();
            if !batch.is_empty() {
                return Next::Frames(batch);
            }
            self.ready.notified().await;
            // Let other tasks run once before taking: under load, frames queued
            // meanwhile leave in the same write instead of one syscall each.
            tokio::task::yield_now().await;
        }
    }

    /// Asks the writer to ping the client (or to close it, when it has been silent too long);
    /// the node's heartbeat calls it once per `limits.heartbeat_ms`.
    pub fn beat(&self) {
        self.beat.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Records that the client was heard from.
    pub fn heard(&self) {
        self.heard.store(clock(), Ordering::Relaxed);
    }

    /// How long the client has been silent.
    pub fn silence(&self) -> Duration {
        Duration::from_millis(clock().saturating_sub(self.heard.load(Ordering::Relaxed)))
    }

    /// Stops queueing: later pushes are dropped. Returns what was still queued.
    pub fn shut(&self) -> VecDeque<Utf8Bytes> {
        let mut queue = self.queue.lock();
        queue.closed = true;
        std::mem::take(&mut queue.frames)
    }

    /// Asks the connection to close with `code`; the first request wins.
    /// Returns whether this call decided the code.
    pub fn close(&self, code: u16, reason: &'static str) -> bool {
        self.decide(code, reason, Ending::Server(code))
    }

    /// Records that the client ended the connection (a close frame, or a lost
    /// connection): the close frame sent back, if any, is 1000, and
    /// `wsgate_closes_total` counts `ending`, not a server close. The first
    /// request wins, as with [`Outbox::close`].
    pub fn end(&self, ending: Ending) -> bool {
        self.decide(close::NORMAL, "", ending)
    }

    /// Whether the client or the network ended the connection ([`Outbox::end`] decided its
    /// close), rather than the server closing it.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn decide(&self, code: u16, reason: &'static str, ending: Ending) -> bool {
        let decided = self.closing.set((code, reason)).is_ok();
        if decided {
            if !matches!(ending, Ending::Server(_)) {
                self.ended.store(true, Ordering::Release);
            }
            self.metrics.ended(ending);
        }
        self.closed.notify_waiters();
        self.ready.notify_one();
        decided
    }

    /// The close requested so far, if any.
    pub fn closing(&self) -> Option<(u16, &'static str)> {
        self.closing.get().copied()
    }

    /// Completes once the connection is asked to close (at once if it was already).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub async fn closed(&self) {
        let notified = self.closed.notified();
        // Created before the check, `notified` sees a close requested after it.
        if self.closing.get().is_some() {
            return;
        }
        notified.await;
    }
}
