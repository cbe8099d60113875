//! Logging an unreachable NATS so that an operator can act on it: a WARN line naming the
//! server's URL and the cause ("Connection refused", "timed out"), at once for a new outage and
//! then at most once per [`INTERVAL`], saying how many failed attempts it held back. async-nats
//! retries every few hundred milliseconds and reports only "IO error" in its events; a line per
//! attempt would bury everything else in the log and still not say why.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::warn;

/// The shortest time between two lines about the same outage.
pub(super) const INTERVAL: Duration = Duration::from_secs(30);

/// The rate limit of the "nats unreachable" line, shared by the connection callbacks.
#[derive(Debug, Default)]
pub(super) struct UnreachableLog {
    /// When the last line was written, and the failed attempts since.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last line of the current outage; `None`: no outage logged yet.
    last: Option<Instant>,
    /// Failed attempts not logged since `last`.
    held_back: u64,
}

/// One server's failure, as logged: the URL without credentials and the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// `scheme://host:port`; a user and password in the configured URL are left out.
    pub(super) url: String,
    /// What the last attempt to reach it said.
    pub(super) cause: String,
}

impl UnreachableLog {
    /// Records a failed attempt at `now`: `Some(held_back)` when it is to be logged, with the
    /// number of failed attempts since the last line; `None` when it is held back.
    pub(super) fn attempt(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        match state.last {
            Some(last) if now.saturating_duration_since(last) < INTERVAL => {
                state.held_back += 1;
                None
            }
            _ => {
                let held_back = std::mem::take(&mut state.held_back);
                state.last = Some(now);
                Some(held_back)
            }
        }
    }

    /// The connection is up: the next outage is logged at once.
    pub(super) fn connected(&self) {
        *self.state.lock() = State::default();
    }

    /// Logs the servers of `pool` whose last attempt failed, rate-limited as
    /// [`UnreachableLog::attempt`] says. Called before each connection attempt, when the pool
    /// holds the previous attempt's cause.
    pub(super) fn report(&self, pool: &[async_nats::Server], now: Instant) {
        let failures = failures(pool);
        if failures.is_empty() {
            return;
        }
        if let Some(held_back) = self.attempt(now) {
            for Failure { url, cause } in failures {
                warn!(
                    url,
                    cause, held_back, "nats unreachable; retrying (logged at most every 30 s)"
                );
            }
        }
    }
}

/// The servers of `pool` whose last attempt failed.
pub(super) fn failures(pool: &[async_nats::Server]) -> Vec<Failure> {
    pool.iter()
        .filter(|server| server.failed_attempts > 0)
        .filter_map(|server| {
            let cause = server.last_error.clone()?;
            let addr = &server.addr;
            Some(Failure {
                url: format!("{}://{}:{}", addr.scheme(), addr.host(), addr.port()),
                cause,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first failure is logged at once; the next ones within the interval are held back
    /// and counted in the next line; a connection starts a new outage.
    #[test]
    fn failures_are_logged_at_once_then_at_most_once_per_interval() {
        let log = UnreachableLog::default();
        let start = Instant::now();
        assert_eq!(log.attempt(start), Some(0));
        for step in 1..=10 {
            let now = start + Duration::from_millis(600 * step);
            assert_eq!(
                log.attempt(now),
                None,
                "eleven attempts in six seconds: one line"
            );
        }
        assert_eq!(log.attempt(start + INTERVAL), Some(10));
        assert_eq!(log.attempt(start + INTERVAL + Duration::from_secs(1)), None);
        log.connected();
        assert_eq!(
            log.attempt(start + INTERVAL + Duration::from_secs(2)),
            Some(0)
        );
    }
}
