//! Bounded waiting: every wait in the suites has a deadline, and conditions that no event
//! announces (a subscription gone at the NATS server, `/readyz` turning 503) are polled.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// The default deadline for things that should happen "soon" on loopback.
pub const SOON: Duration = Duration::from_secs(10);

/// How often [`eventually`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `check` until it returns `Ok(Some(value))`, at most `timeout`.
///
/// `Ok(None)` and errors mean "not yet"; the last error is reported when time runs out.
///
/// # Errors
/// When the condition did not hold within `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("condition never held");
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining.max(POLL_INTERVAL), check()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => last = format!("{error:#}"),
            Err(_) => last = String::from("a check did not finish in time"),
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("{what}: not within {timeout:?} ({last})"));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Awaits `future` for at most `timeout`.
///
/// # Errors
/// The future's error, or a timeout naming `what`.
pub async fn within<T>(
    timeout: Duration,
    what: &str,
    future: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| anyhow!("{what}: not within {timeout:?}"))?
}
