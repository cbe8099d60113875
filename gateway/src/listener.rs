//! The public listener's accept loop: every socket bounded in time and in number, before
//! it has said anything.
//!
//! `axum::serve` gives hyper no timer, so a socket that never sends a request head is held
//! forever, and it counts against nothing until the upgrade handler runs. Here each accepted
//! socket:
//! - must send a request's headers within `limits.handshake_timeout_ms` (hyper's
//!   `header_read_timeout`, which also covers the wait for each next request on a kept-alive
//!   connection), or it is closed;
//! - takes one of [`SocketLimits::handshakes`] places until it is upgraded or closed, and one
//!   of [`SocketLimits::sockets`] places (the open-file limit less a reserve) until the socket
//!   itself is closed, the WebSocket session included. A socket over either bound is closed as
//!   soon as it is accepted, so the reserve stays free for the admin listener, NATS and the
//!   key files, and health checks, metrics and key reloads keep working under a flood;
//! - carries its peer address into the request as [`ConnectInfo`], for the per-address cap,
//!   and its [`FrameWriter`](crate::socket::FrameWriter), for the session's writer.
//!
//! When the public sockets near their budget, one warning is logged; it is logged again only
//! after their number has fallen back well below it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::socket::CountedStream;

/// How many sockets the public listener holds, and for how long before they speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketLimits {
    /// Time a socket has to send a request's headers (`limits.handshake_timeout_ms`).
    pub handshake_timeout: Duration,
    /// Sockets accepted but not yet upgraded (or closed), at most.
    pub handshakes: usize,
    /// Public sockets open at once, upgraded ones included: the open-file limit less the
    /// descriptors kept for everything else.
    pub sockets: usize,
}

/// Share of [`SocketLimits::sockets`] in use at which the warning is logged (nine tenths).
const WARN_AT: (usize, usize) = (9, 10);

/// Share below which the warning is re-armed (three quarters), so a count hovering near the
/// threshold logs once, not on every socket.
const REARM_BELOW: (usize, usize) = (3, 4);

/// Pause after an accept error that is not about one connection (e.g. `EMFILE`), so the loop
/// does not spin while descriptors are short.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The budget of public sockets and its one-time warning.
struct SocketBudget {
    places: Arc<Semaphore>,
    total: usize,
    /// Set while the warning has been logged and not yet re-armed.
    warned: AtomicBool,
}

impl SocketBudget {
    fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            places: Arc::new(Semaphore::new(total)),
            total,
            warned: AtomicBool::new(false),
        }
    }

    /// A place for one more socket, or `None` when the budget is used up; logs the warning
    /// when the sockets near the budget.
    fn take(&self) -> Option<OwnedSemaphorePermit> {
        let place = self.places.clone().try_acquire_owned().ok();
        let open = self.total - self.places.available_permits();
        let share = |(numerator, denominator): (usize, usize)| {
            // `open × denominator ≥ total × numerator`, without overflow.
            open as u128 * denominator as u128 >= self.total as u128 * numerator as u128
        };
        if share(WARN_AT) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                warn!(
                    open,
                    budget = self.total,
                    "public sockets near the open-file limit: sockets over the budget are closed at once"
                );
            }
        } else if !share(REARM_BELOW) {
            self.warned.store(false, Ordering::Relaxed);
        }
        place
    }
}

/// Serves `router` on `listener` within `limits` until `stop` is cancelled, then lets the
/// HTTP requests in flight finish (upgraded sessions are not waited for: they have their own
/// drain).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: SocketLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let budget = SocketBudget::new(limits.sockets);
    let handshakes = Arc::new(Semaphore::new(
        limits.handshakes.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout);
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                if !is_connection_error(&error) {
                    debug!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                continue;
            }
        };
        // Over a bound the socket is dropped here, before anything is read from it.
        let Some(place) = budget.take() else {
            metrics.socket_shed("descriptors");
            continue;
        };
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            metrics.socket_shed("handshakes");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = CountedStream::new(stream, place);
        let frames = stream.frame_writer();
        let io = TokioIo::new(stream);
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(frames.clone());
                request
            });
        let connection = http
            .serve_connection(io, TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // Upgraded or closed: either way no longer waiting for its handshake.
            drop(handshake);
            if let Err(error) = result {
                if error.is_timeout() {
                    metrics.handshake_timeouts.inc();
                }
                debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Errors of one incoming connection (it was reset before `accept` returned): the listener
/// itself is fine.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget hands out exactly its places, and a place comes back when its holder
    /// drops; the warning is armed again only well below the threshold.
    #[test]
    fn the_socket_budget_hands_out_its_places_and_warns_once_near_the_end() {
        let budget = SocketBudget::new(10);
        let mut places: Vec<_> = (0..10).map(|_| budget.take()).collect();
        assert!(places.iter().all(Option::is_some));
        assert!(budget.warned.load(Ordering::Relaxed));
        assert!(budget.take().is_none(), "the eleventh socket has no place");
        places.truncate(8);
        assert!(budget.take().is_some());
        assert!(
            budget.warned.load(Ordering::Relaxed),
            "still near the budget: not re-armed"
        );
        places.truncate(2);
        let again = budget.take();
        assert!(again.is_some());
        assert!(
            !budget.warned.load(Ordering::Relaxed),
            "well below the budget: re-armed"
        );
    }
}
