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
//! - carries its peer address into the request as [`ConnectInfo`], for the per-address cap.
//!
//! When the public sockets near their budget, one warning is logged; it is logged again only
//! after their number has fallen back well below it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::metrics::Metrics;

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
        let io = TokioIo::new(CountedStream::new(stream, place));
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
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

/// Bytes of writes gathered before they go to the socket: the WebSocket writer feeds a whole
/// batch of queued frames and flushes once, so a batch leaves in one `send` (or a few) instead
/// of one per frame. A few dozen typical messages per `send` already make the syscall's cost
/// marginal.
pub const WRITE_BATCH: usize = 4 * 1024;

/// Bytes read from the socket at once when the reader asks for less: the WebSocket's own read
/// buffer is kept small (idle connections dominate a gateway's memory), and its small reads are
/// then served from here rather than one `recv` each.
pub const READ_AHEAD: usize = 4 * 1024;

/// A public socket holding its place in the [`SocketBudget`] for as long as it is open: the
/// place follows the socket into the WebSocket session after the upgrade, and is freed when
/// the session drops the socket.
///
/// It also holds the socket's buffers only while they hold bytes, so an idle connection holds
/// none and one that saw a burst does not keep the burst's capacity (tungstenite's buffers
/// never shrink, so the WebSocket is configured to keep its own small):
/// - writes are gathered, up to [`WRITE_BATCH`] bytes, until they are flushed, and the buffer
///   is freed once it has been sent;
/// - a read smaller than [`READ_AHEAD`] reads up to that much from the socket, serves the
///   following reads from it, and frees it once they have taken it all.
struct CountedStream {
    stream: TcpStream,
    /// Written but not yet sent; unallocated when empty.
    pending: Vec<u8>,
    /// Read from the socket but not yet taken, from `read_at` on; unallocated when empty.
    read_ahead: Vec<u8>,
    read_at: usize,
    _place: OwnedSemaphorePermit,
}

impl CountedStream {
    fn new(stream: TcpStream, place: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            pending: Vec::new(),
            read_ahead: Vec::new(),
            read_at: 0,
            _place: place,
        }
    }

    /// Fills the read-ahead buffer from the socket (empty at the end of the stream). Allocates
    /// only once the socket is readable.
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let mut chunk = vec![0; READ_AHEAD];
            match self.stream.try_read(&mut chunk) {
                Ok(read) => {
                    chunk.truncate(read);
                    self.read_ahead = chunk;
                    self.read_at = 0;
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale (and is now cleared): wait again.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    /// Sends everything gathered, then frees the buffer.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.pending.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.stream).poll_write(cx, &self.pending[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if sent == self.pending.len() {
            self.pending = Vec::new();
        } else {
            self.pending.drain(..sent);
        }
        result
    }
}

impl Drop for CountedStream {
    /// Sends what is still gathered, without waiting. tungstenite answers a client's close
    /// frame and then, as the server, ends the connection without flushing the stream (its
    /// `flush` returns `ConnectionClosed` before it calls the stream's): the answer is written
    /// but may still be gathered here when the socket is dropped. A close frame fits any socket
    /// buffer that is not full, so the client sees a clean closing handshake.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.stream.try_write(&self.pending);
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read_at == this.read_ahead.len() {
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.stream).poll_read(cx, buf);
            }
            ready!(this.poll_read_ahead(cx))?;
        }
        let available = &this.read_ahead[this.read_at..];
        let taken = available.len().min(buf.remaining());
        buf.put_slice(&available[..taken]);
        this.read_at += taken;
        if this.read_at == this.read_ahead.len() {
            this.read_ahead = Vec::new();
            this.read_at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.len() + buf.len() > WRITE_BATCH {
            ready!(this.poll_send_pending(cx))?;
        }
        if buf.len() >= WRITE_BATCH {
            // Nothing gathered is left: a large write goes straight to the socket.
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
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

    /// A connected pair on loopback: the server's end counted, and the client's.
    async fn pair() -> (CountedStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let place = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        (CountedStream::new(server, place), client)
    }

    /// Writes are gathered until the flush, which sends them in order and frees the buffer:
    /// a burst leaves no capacity behind.
    #[tokio::test]
    async fn gathered_writes_leave_on_flush_and_free_their_buffer() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, mut client) = pair().await;
        for frame in 0..100u8 {
            server.write_all(&[frame; 30]).await.unwrap();
        }
        assert!(server.pending.capacity() > 0, "gathered until the flush");
        server.flush().await.unwrap();
        assert_eq!(server.pending.capacity(), 0, "freed once sent");
        let mut received = vec![0; 3000];
        client.read_exact(&mut received).await.unwrap();
        let expected: Vec<u8> = (0..100u8).flat_map(|frame| [frame; 30]).collect();
        assert_eq!(received, expected);
    }

    /// What is gathered when the socket is dropped still leaves (tungstenite writes its answer
    /// to a client's close frame and drops the socket without a flush).
    #[tokio::test]
    async fn gathered_writes_leave_when_the_socket_is_dropped() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, mut client) = pair().await;
        let close = [0x88, 0x02, 0x03, 0xe8];
        server.write_all(&close).await.unwrap();
        assert!(!server.pending.is_empty(), "gathered, not sent");
        drop(server);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, close);
    }

    /// A small read reads ahead; the following reads take what was read, in order, and the
    /// buffer is freed once they have taken it all.
    #[tokio::test]
    async fn reads_ahead_are_served_in_order_and_freed_once_taken() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut server, mut client) = pair().await;
        let sent: Vec<u8> = (0..1000u32).map(|n| n as u8).collect();
        client.write_all(&sent).await.unwrap();
        let mut received = Vec::new();
        let mut small = [0; 100];
        while received.len() < sent.len() {
            let read = server.read(&mut small).await.unwrap();
            assert!(read > 0, "the stream ended early");
            received.extend_from_slice(&small[..read]);
        }
        assert_eq!(received, sent);
        assert_eq!(server.read_ahead.capacity(), 0, "freed once taken");
        drop(client);
        assert_eq!(
            server.read(&mut small).await.unwrap(),
            0,
            "the end of the stream"
        );
    }
}
