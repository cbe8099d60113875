//! One public socket after `accept`: its place in the listener's socket budget, the buffers
//! it holds only while they hold bytes, and the direct path by which a session's writer
//! frames its text messages straight into the socket's outgoing bytes.
//!
//! Why a direct path: every message a connection receives is a text frame the gateway has
//! already encoded once for all the room's members. Handing it to tungstenite as a `Message`
//! costs, per frame and per member, the sink's lock, a copy into tungstenite's own write
//! buffer (which keeps the capacity of the largest frame it was handed, for the connection's
//! life), and a second copy into the socket. Here the writer appends the frame's header and
//! its payload to the bytes the socket gathers anyway, once, and flushes through the
//! WebSocket as before. tungstenite still writes everything else (pings, pongs, the close
//! handshake) into the same buffer, in call order.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// Bytes of writes gathered before they go to the socket: the WebSocket writer feeds a whole
/// batch of queued frames and flushes once, so a batch leaves in one `send` (or a few) instead
/// of one per frame. A few dozen typical messages per `send` already make the syscall's cost
/// marginal.
pub const WRITE_BATCH: usize = 4 * 1024;

/// Bytes read from the socket at once when the reader asks for less: the WebSocket's own read
/// buffer is kept small (idle connections dominate a gateway's memory), and its small reads are
/// then served from here rather than one `recv` each.
pub const READ_AHEAD: usize = 4 * 1024;

/// Bytes written to a socket and not yet sent, shared by the socket and its [`FrameWriter`];
/// unallocated when empty.
type Pending = Arc<Mutex<Vec<u8>>>;

/// A public socket holding its place in the listener's socket budget for as long as it is
/// open: the place follows the socket into the WebSocket session after the upgrade, and is
/// freed when the session drops the socket.
///
/// It also holds the socket's buffers only while they hold bytes, so an idle connection holds
/// none and one that saw a burst does not keep the burst's capacity (tungstenite's buffers
/// never shrink, so the WebSocket is configured to keep its own small, and the session's
/// messages bypass its write buffer through the [`FrameWriter`]):
/// - writes are gathered, up to [`WRITE_BATCH`] bytes, until they are flushed, and the buffer
///   is freed once it has been sent;
/// - a read smaller than [`READ_AHEAD`] reads up to that much from the socket, serves the
///   following reads from it, and frees it once they have taken it all.
pub struct CountedStream {
    stream: TcpStream,
    /// Written but not yet sent, by tungstenite or by the [`FrameWriter`].
    pending: Pending,
    /// Read from the socket but not yet taken, from `read_at` on; unallocated when empty.
    read_ahead: Vec<u8>,
    read_at: usize,
    _place: OwnedSemaphorePermit,
}

impl CountedStream {
    /// Wraps an accepted socket and its place in the budget.
    pub fn new(stream: TcpStream, place: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            pending: Pending::default(),
            read_ahead: Vec::new(),
            read_at: 0,
            _place: place,
        }
    }

    /// The handle through which the session's writer appends its frames to this socket's
    /// outgoing bytes.
    pub fn frame_writer(&self) -> FrameWriter {
        FrameWriter {
            pending: self.pending.clone(),
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
}

/// Sends everything gathered in `pending`, then frees the buffer.
fn poll_send(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    let mut sent = 0;
    let result = loop {
        if sent == pending.len() {
            break Poll::Ready(Ok(()));
        }
        match Pin::new(&mut *stream).poll_write(cx, &pending[sent..]) {
            Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => sent += n,
            Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
            Poll::Pending => break Poll::Pending,
        }
    };
    if sent == pending.len() {
        *pending = Vec::new();
    } else {
        pending.drain(..sent);
    }
    result
}

impl Drop for CountedStream {
    /// Sends what is still gathered, without waiting. tungstenite answers a client's close
    /// frame and then, as the server, ends the connection without flushing the stream (its
    /// `flush` returns `ConnectionClosed` before it calls the stream's): the answer is written
    /// but may still be gathered here when the socket is dropped. A close frame fits any socket
    /// buffer that is not full, so the client sees a clean closing handshake.
    fn drop(&mut self) {
        let pending = self.pending.lock();
        if !pending.is_empty() {
            let _ = self.stream.try_write(&pending);
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
    /// Gathers `buf`, sending what is gathered first when `buf` would take it past
    /// [`WRITE_BATCH`]. Takes all of `buf` or none of it (or, for a write of at least
    /// [`WRITE_BATCH`] bytes with nothing gathered, writes straight to the socket), so a
    /// frame tungstenite wrote is never split by a frame the [`FrameWriter`] appends.
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let mut pending = this.pending.lock();
        if pending.len() + buf.len() > WRITE_BATCH {
            ready!(poll_send(&mut this.stream, &mut pending, cx))?;
        }
        if buf.len() >= WRITE_BATCH {
            // Nothing gathered is left: a large write goes straight to the socket.
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        }
        pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(poll_send(&mut this.stream, &mut this.pending.lock(), cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(poll_send(&mut this.stream, &mut this.pending.lock(), cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// Appends whole WebSocket text frames, as the server sends them (final, unmasked), to a
/// socket's outgoing bytes. They leave at the WebSocket's next flush, in order with what
/// tungstenite writes.
///
/// Only whole frames are appended, and the socket takes each of tungstenite's writes whole
/// or not at all, so the two never split each other's frames. The session stops appending
/// once it asks tungstenite to close, so no data frame follows the close frame.
#[derive(Clone)]
pub struct FrameWriter {
    pending: Pending,
}

impl FrameWriter {
    /// A writer whose frames go to no socket: the in-memory sockets of unit tests take them
    /// with [`FrameWriter::take`].
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self {
            pending: Pending::default(),
        }
    }

    /// Takes the bytes appended so far.
    #[cfg(test)]
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.pending.lock())
    }

    /// Appends one text frame carrying `payload`; returns how many bytes are now waiting to be
    /// sent, so the caller flushes once a batch's worth has gathered.
    pub fn text(&self, payload: &[u8]) -> usize {
        let mut pending = self.pending.lock();
        let len = payload.len();
        // FIN and the text opcode, then the payload length in the shortest form.
        pending.push(0x81);
        if len < 126 {
            pending.push(len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            pending.push(126);
            pending.extend_from_slice(&len.to_be_bytes());
        } else {
            pending.push(127);
            pending.extend_from_slice(&(len as u64).to_be_bytes());
        }
        pending.extend_from_slice(payload);
        pending.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt as _;
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    use super::*;

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

    /// Frames appended directly and frames tungstenite writes arrive whole and in order, with
    /// every payload length form (7-bit, 16-bit, 64-bit) a client's WebSocket parses; the
    /// buffer is freed once sent.
    #[tokio::test]
    async fn appended_frames_interleave_with_tungstenite_s_and_parse_at_the_client() {
        let (server, client) = pair().await;
        let frames = server.frame_writer();
        let pending = server.pending.clone();
        // As the gateway configures it: every frame goes straight to the socket.
        let config = WebSocketConfig::default().write_buffer_size(0);
        let mut server =
            tokio_tungstenite::WebSocketStream::from_raw_socket(server, Role::Server, Some(config))
                .await;
        let mut client =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let sizes = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000];
        let text = |size: usize| "é".repeat(size / 2) + &"x".repeat(size % 2);
        // The client reads while the server writes: the frames are larger than a socket buffer.
        let writer = tokio::spawn(async move {
            for size in sizes {
                frames.text(text(size).as_bytes());
                // tungstenite writes a ping between two appended frames.
                let ping = Message::Ping(vec![size as u8].into());
                futures::SinkExt::feed(&mut server, ping).await.unwrap();
            }
            futures::SinkExt::flush(&mut server).await.unwrap();
            assert_eq!(pending.lock().capacity(), 0, "freed once sent");
            server
        });
        for size in sizes {
            match client.next().await.unwrap().unwrap() {
                Message::Text(received) => assert_eq!(received.as_str(), text(size)),
                other => panic!("expected a text frame of {size} bytes, got {other:?}"),
            }
            match client.next().await.unwrap().unwrap() {
                Message::Ping(payload) => assert_eq!(&payload[..], &[size as u8]),
                other => panic!("expected the ping after {size} bytes, got {other:?}"),
            }
        }
        writer.await.unwrap();
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
        assert!(
            server.pending.lock().capacity() > 0,
            "gathered until the flush"
        );
        server.flush().await.unwrap();
        assert_eq!(server.pending.lock().capacity(), 0, "freed once sent");
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
        assert!(!server.pending.lock().is_empty(), "gathered, not sent");
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
