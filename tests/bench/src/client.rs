//! One client connection: TCP from a chosen loopback source address, the WebSocket upgrade,
//! and the protocols the tool speaks: wsgate's JSON frames, the NATS text protocol over
//! nats-server's WebSocket listener, Socket.IO, and the Pusher protocol (Sockudo, and wsgate's
//! `/app/{key}`).
//!
//! A connection is opened and set up ([`open`], [`setup`]) by one future, then becomes a
//! [`Member`]: a stream of [`Event`]s that many of can be polled by one task (a `SelectAll`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// An open WebSocket connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// wsgate's protocol (docs/protocol.md).
    Wsgate,
    /// The NATS text protocol over nats-server's WebSocket listener.
    Nats,
    /// Socket.IO (Engine.IO 4 over WebSocket) to the peer's `server.js`: `join`, `leave` and
    /// `publish` events with acknowledgements, `message` events to members.
    Socketio,
    /// The Pusher protocol (version 7) to Sockudo or wsgate: members subscribe to a public
    /// channel named after their room (or user); publishers use the HTTP events API
    /// ([`crate::pusher_api`]).
    Pusher,
}

/// What members receive: room messages (fan-out) or direct messages to their user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Rooms,
    Direct,
}

/// Room `index`'s name (valid for wsgate, as a NATS subject token and as a Pusher channel).
pub fn room_name(index: u64) -> String {
    format!("bench-{index}")
}

/// The user id of member `index` in `direct`.
pub fn user_name(index: u64) -> String {
    format!("u-{index}")
}

/// The NATS subject standing for a room or a user.
pub fn nats_subject(mode: Mode, destination: &str) -> String {
    match mode {
        Mode::Rooms => format!("bench.room.{destination}"),
        Mode::Direct => format!("bench.user.{destination}"),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine, so a
/// timestamp taken by a publisher can be compared with the time a worker receives it.
pub fn mono_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The `data` of every message: when it was meant to be sent, and the step it belongs to.
#[derive(Debug, Deserialize)]
pub struct Stamp {
    /// [`mono_ns`] at the publisher.
    pub t: u64,
    /// The publishing step, so late deliveries are not counted in the next step.
    pub s: u32,
}

/// The JSON of a message's `data`, padded with `padding` bytes.
pub fn stamp_json(t: u64, step: u32, padding: &str) -> String {
    if padding.is_empty() {
        format!(r#"{{"t":{t},"s":{step}}}"#)
    } else {
        format!(r#"{{"t":{t},"s":{step},"p":"{padding}"}}"#)
    }
}

/// A WebSocket endpoint: where to connect, and what to ask for.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL as given (`ws://host:port/path`).
    pub url: String,
    /// The resolved address.
    pub address: SocketAddr,
}

impl Endpoint {
    /// Parses and resolves `url`.
    ///
    /// # Errors
    /// When the URL is not `ws://host:port/...` or the host does not resolve.
    pub async fn resolve(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("{url}: only ws:// URLs are supported"))?;
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let address = tokio::net::lookup_host(&authority)
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to no address"))?;
        Ok(Self {
            url: url.to_owned(),
            address,
        })
    }

    /// Whether source addresses can be chosen in 127.0.0.0/8 for this endpoint.
    pub fn is_loopback(&self) -> bool {
        matches!(self.address, SocketAddr::V4(v4) if v4.ip().is_loopback())
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP refused, or the server answered 503 (at capacity, draining) or 429.
    Refused(String),
    /// The connection or its setup took too long.
    Timeout,
    /// Anything else.
    Failed(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::Timeout => write!(f, "timed out"),
            Self::Failed(why) => write!(f, "{why}"),
        }
    }
}

/// `IP_BIND_ADDRESS_NO_PORT`: lets the kernel pick the source port at connect time, per
/// destination, instead of at bind time from one shared pool.
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

/// Small buffers: the tool holds tens of thousands of mostly idle connections.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens a WebSocket to `endpoint` from `source` (when given), with `token` in the query.
pub async fn open(
    endpoint: &Endpoint,
    source: Option<Ipv4Addr>,
    token: Option<&str>,
) -> Result<Ws, ConnectError> {
    let failed = |e: std::io::Error| ConnectError::Failed(e.to_string());
    let socket = match endpoint.address {
        SocketAddr::V4(_) => TcpSocket::new_v4().map_err(failed)?,
        SocketAddr::V6(_) => TcpSocket::new_v6().map_err(failed)?,
    };
    if let Some(ip) = source {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the given length on a socket we own. A failure
        // only means ports are chosen at bind time, which still works.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket
            .bind(SocketAddr::from((ip, 0)))
            .map_err(|e| ConnectError::Failed(format!("bind {ip}: {e}")))?;
    }
    let stream = socket.connect(endpoint.address).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ConnectError::Refused(e.to_string())
        } else {
            failed(e)
        }
    })?;
    let _ = stream.set_nodelay(true);
    let url = match token {
        Some(token) if endpoint.url.contains('?') => format!("{}&token={token}", endpoint.url),
        Some(token) => format!("{}?token={token}", endpoint.url),
        None => endpoint.url.clone(),
    };
    match tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status();
            if status == 503 || status == 429 {
                Err(ConnectError::Refused(format!("HTTP {status}")))
            } else {
                Err(ConnectError::Failed(format!("HTTP {status}")))
            }
        }
        Err(e) => Err(ConnectError::Failed(e.to_string())),
    }
}

/// The fields of a wsgate frame the tool looks at.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<&'a str>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub ok: Option<bool>,
    #[serde(borrow, default)]
    pub error: Option<ErrorBody<'a>>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
    #[serde(default)]
    pub delivered: Option<u64>,
}

/// `error` of a wsgate reply.
#[derive(Debug, Deserialize)]
pub struct ErrorBody<'a> {
    #[serde(borrow)]
    pub code: &'a str,
}

/// Reads text frames until one satisfies `done`, failing on close or an error reply.
async fn read_until(ws: &mut Ws, mut done: impl FnMut(&Frame<'_>) -> bool) -> Result<()> {
    while let Some(message) = ws.next().await {
        match message? {
            Message::Text(text) => {
                let frame: Frame<'_> = serde_json::from_str(text.as_str())
                    .with_context(|| format!("unreadable frame {text}"))?;
                if let Some(error) = &frame.error {
                    bail!("error reply {}", error.code);
                }
                if done(&frame) {
                    return Ok(());
                }
            }
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
    bail!("connection closed")
}

/// Reads NATS operations until `PONG`, answering `PING`s and failing on `-ERR`.
async fn nats_until_pong(ws: &mut Ws, parser: &mut NatsParser) -> Result<()> {
    loop {
        while let Some(op) = parser.next_op()? {
            match op {
                NatsOp::Pong => return Ok(()),
                NatsOp::Ping => ws.send(Message::binary(b"PONG\r\n".to_vec())).await?,
                NatsOp::Err(message) => bail!("nats error {message}"),
                _ => {}
            }
        }
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => parser.feed(&bytes),
            Some(Ok(Message::Text(text))) => parser.feed(text.as_bytes()),
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// After the upgrade: waits for wsgate's welcome, or does the NATS `CONNECT`; then joins
/// `destination` (a room, or the user's subject in NATS) when `join` is set. Returns the NATS
/// parser, which may already hold bytes.
pub async fn setup(
    ws: &mut Ws,
    protocol: Protocol,
    mode: Mode,
    destination: &str,
    join: bool,
) -> Result<NatsParser> {
    let mut parser = NatsParser::default();
    match protocol {
        Protocol::Wsgate => {
            read_until(ws, |frame| frame.kind == Some("welcome")).await?;
            if join && mode == Mode::Rooms {
                let join = serde_json::json!({"op": "join", "id": 1, "room": destination});
                ws.send(Message::text(join.to_string())).await?;
                read_until(ws, |frame| frame.id == Some(1) && frame.ok == Some(true)).await?;
            }
        }
        Protocol::Nats => {
            let mut hello = String::from(
                "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":true,\
                 \"lang\":\"wsgate-bench\",\"version\":\"0.1\"}\r\n",
            );
            if join {
                hello.push_str(&format!("SUB {} 1\r\n", nats_subject(mode, destination)));
            }
            hello.push_str("PING\r\n");
            ws.send(Message::binary(hello.into_bytes())).await?;
            nats_until_pong(ws, &mut parser).await?;
        }
        Protocol::Socketio => {
            // Engine.IO open, then the Socket.IO connect to the main namespace.
            socketio_until(ws, |text| text.starts_with('0')).await?;
            ws.send(Message::text("40")).await?;
            socketio_until(ws, |text| text.starts_with("40")).await?;
            if join {
                let join = serde_json::json!(["join", destination]);
                ws.send(Message::text(format!("421{join}"))).await?;
                socketio_until(ws, |text| text.starts_with("431")).await?;
            }
        }
        Protocol::Pusher => {
            pusher_until(ws, |event, _| event == "pusher:connection_established").await?;
            if join {
                let subscribe = serde_json::json!({
                    "event": "pusher:subscribe",
                    "data": {"channel": destination},
                });
                ws.send(Message::text(subscribe.to_string())).await?;
                pusher_until(ws, |event, channel| {
                    event == "pusher_internal:subscription_succeeded"
                        && channel == Some(destination)
                })
                .await?;
            }
        }
    }
    Ok(parser)
}

/// Reads Socket.IO text frames until one satisfies `done`, answering Engine.IO pings.
async fn socketio_until(ws: &mut Ws, mut done: impl FnMut(&str) -> bool) -> Result<()> {
    while let Some(message) = ws.next().await {
        match message? {
            Message::Text(text) if text.as_str() == "2" => ws.send(Message::text("3")).await?,
            Message::Text(text) if text.starts_with("44") => bail!("connect error {text}"),
            Message::Text(text) if done(text.as_str()) => return Ok(()),
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
    bail!("connection closed")
}

/// The stamp in a Socket.IO `message` event (`42["message",{...}]`), if it is one.
pub fn socketio_stamp(text: &str) -> Option<Result<Stamp>> {
    let body = text.strip_prefix("42")?;
    let (name, data): (&str, &RawValue) = match serde_json::from_str(body) {
        Ok(event) => event,
        Err(e) => return Some(Err(e.into())),
    };
    if name != "message" {
        return None;
    }
    Some(serde_json::from_str(data.get()).map_err(Into::into))
}

/// `pusher:pong`, the answer to a server's `pusher:ping`.
const PUSHER_PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// The fields of a Pusher frame the tool looks at.
#[derive(Debug, Deserialize)]
struct PusherFrame<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// What a frame from a Pusher server means to the tool.
#[derive(Debug)]
pub enum PusherEvent<'a> {
    /// An event on a channel: a published message, its stamp decoded.
    Delivery(Stamp),
    /// `pusher:ping`, to be answered with `pusher:pong`.
    Ping,
    /// `pusher:error` or `pusher:subscription_error`, with its data.
    Error(String),
    /// Any other protocol event (`pusher:connection_established`,
    /// `pusher_internal:subscription_succeeded`, `pusher:pong`, ...).
    Control {
        event: Cow<'a, str>,
        channel: Option<Cow<'a, str>>,
    },
}

/// Decodes a Pusher frame. A channel event's `data` is a JSON string holding the stamp's JSON
/// (as the HTTP API publishes it); a `data` that is the stamp's object itself is read too.
///
/// # Errors
/// When the frame is not a Pusher event, or a channel event carries no readable stamp.
pub fn pusher_event(text: &str) -> Result<PusherEvent<'_>> {
    let frame: PusherFrame<'_> = serde_json::from_str(text)?;
    let data = frame.data.map(RawValue::get);
    Ok(match frame.event.as_ref() {
        "pusher:ping" => PusherEvent::Ping,
        "pusher:error" | "pusher:subscription_error" => {
            PusherEvent::Error(format!("{} {}", frame.event, data.unwrap_or("")))
        }
        event if event.starts_with("pusher:") || event.starts_with("pusher_internal:") => {
            PusherEvent::Control {
                event: frame.event,
                channel: frame.channel,
            }
        }
        event => {
            let data = data.ok_or_else(|| anyhow!("event {event} without data"))?;
            let stamp = if data.starts_with('"') {
                let inner: String = serde_json::from_str(data)?;
                serde_json::from_str(&inner)?
            } else {
                serde_json::from_str(data)?
            };
            PusherEvent::Delivery(stamp)
        }
    })
}

/// Reads Pusher frames until a protocol event satisfies `done` (given the event's name and
/// channel), answering pings and failing on errors.
async fn pusher_until(ws: &mut Ws, mut done: impl FnMut(&str, Option<&str>) -> bool) -> Result<()> {
    while let Some(message) = ws.next().await {
        match message? {
            Message::Text(text) => match pusher_event(text.as_str())
                .with_context(|| format!("unreadable frame {text}"))?
            {
                PusherEvent::Ping => ws.send(Message::text(PUSHER_PONG)).await?,
                PusherEvent::Error(message) => bail!("{message}"),
                PusherEvent::Control { event, channel } if done(&event, channel.as_deref()) => {
                    return Ok(());
                }
                _ => {}
            },
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
    bail!("connection closed")
}

/// Leaves `destination` (a `leave` op, or `UNSUB`), waiting for the answer.
pub async fn leave(
    ws: &mut Ws,
    protocol: Protocol,
    parser: &mut NatsParser,
    destination: &str,
) -> Result<()> {
    match protocol {
        Protocol::Wsgate => {
            let leave = serde_json::json!({"op": "leave", "id": 2, "room": destination});
            ws.send(Message::text(leave.to_string())).await?;
            read_until(ws, |frame| frame.id == Some(2) && frame.ok == Some(true)).await
        }
        Protocol::Nats => {
            ws.send(Message::binary(b"UNSUB 1\r\nPING\r\n".to_vec()))
                .await?;
            nats_until_pong(ws, parser).await
        }
        Protocol::Socketio => {
            let leave = serde_json::json!(["leave", destination]);
            ws.send(Message::text(format!("422{leave}"))).await?;
            socketio_until(ws, |text| text.starts_with("432")).await
        }
        Protocol::Pusher => {
            // `pusher:unsubscribe` has no answer; a ping behind it does, once the server has
            // handled the unsubscribe (it handles a connection's frames in order).
            let unsubscribe = serde_json::json!({
                "event": "pusher:unsubscribe",
                "data": {"channel": destination},
            });
            ws.send(Message::text(unsubscribe.to_string())).await?;
            ws.send(Message::text(r#"{"event":"pusher:ping","data":{}}"#))
                .await?;
            pusher_until(ws, |event, _| event == "pusher:pong").await
        }
    }
}

/// Closes `ws` politely: a close frame, then waits (bounded) for the server's.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// One NATS protocol operation the tool cares about.
#[derive(Debug)]
pub enum NatsOp {
    Info,
    Msg(Vec<u8>),
    Ping,
    Pong,
    Ok,
    Err(String),
}

/// An incremental parser of server-to-client NATS operations (which WebSocket frames may split
/// or coalesce).
#[derive(Debug, Default)]
pub struct NatsParser {
    buffer: Vec<u8>,
    start: usize,
}

impl NatsParser {
    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete operation, if any.
    ///
    /// # Errors
    /// On a line that is not NATS protocol.
    pub fn next_op(&mut self) -> Result<Option<NatsOp>> {
        let pending = &self.buffer[self.start..];
        let Some(end) = pending.windows(2).position(|w| w == b"\r\n") else {
            if pending.len() > 1 << 20 {
                bail!("nats: line over 1 MiB");
            }
            return Ok(None);
        };
        let line = &pending[..end];
        let word_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        let op = match &line[..word_end] {
            b"MSG" | b"msg" => {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size: usize = std::str::from_utf8(line)?
                    .rsplit(' ')
                    .next()
                    .and_then(|size| size.parse().ok())
                    .ok_or_else(|| anyhow!("nats: bad MSG line"))?;
                let payload_start = end + 2;
                if pending.len() < payload_start + size + 2 {
                    return Ok(None);
                }
                let payload = pending[payload_start..payload_start + size].to_vec();
                self.start += payload_start + size + 2;
                return Ok(Some(NatsOp::Msg(payload)));
            }
            b"PING" | b"ping" => NatsOp::Ping,
            b"PONG" | b"pong" => NatsOp::Pong,
            b"+OK" | b"+ok" => NatsOp::Ok,
            b"INFO" | b"info" => NatsOp::Info,
            b"-ERR" | b"-err" => NatsOp::Err(String::from_utf8_lossy(line).into_owned()),
            other => bail!("nats: unexpected {}", String::from_utf8_lossy(other)),
        };
        self.start += end + 2;
        Ok(Some(op))
    }
}

/// What a [`Member`] reports.
#[derive(Debug)]
pub enum Event {
    /// A message arrived: its stamp's send time and step.
    Delivery { sent_ns: u64, step: u32 },
    /// The server closed the connection with this code (1013: slow consumer).
    Closed(Option<u16>),
    /// A protocol error, an error reply, or a broken connection.
    Error(String),
}

/// A receiving connection, polled as a stream of [`Event`]s; answers NATS `PING`s, Engine.IO
/// pings and `pusher:ping`s itself.
pub struct Member {
    ws: Ws,
    protocol: Protocol,
    parser: NatsParser,
    /// Frames to send (answers to pings), written before reading on.
    outbox: VecDeque<Message>,
    /// Events decoded from one frame and not yet returned.
    pending: VecDeque<Event>,
    /// The connection ended; the next poll ends the stream.
    finished: bool,
}

impl Member {
    /// Wraps a set-up connection.
    pub fn new(ws: Ws, protocol: Protocol, parser: NatsParser) -> Self {
        let mut member = Self {
            ws,
            protocol,
            parser,
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            finished: false,
        };
        // Setup may have read operations that are already waiting.
        member.drain_nats();
        member
    }

    fn drain_nats(&mut self) {
        loop {
            match self.parser.next_op() {
                Ok(Some(NatsOp::Msg(payload))) => match serde_json::from_slice::<Stamp>(&payload) {
                    Ok(stamp) => self.pending.push_back(Event::Delivery {
                        sent_ns: stamp.t,
                        step: stamp.s,
                    }),
                    Err(e) => self
                        .pending
                        .push_back(Event::Error(format!("payload: {e}"))),
                },
                Ok(Some(NatsOp::Ping)) => {
                    self.outbox.push_back(Message::binary(b"PONG\r\n".to_vec()));
                }
                Ok(Some(NatsOp::Err(message))) => self.pending.push_back(Event::Error(message)),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    self.pending.push_back(Event::Error(e.to_string()));
                    self.finished = true;
                    break;
                }
            }
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Text(text) if self.protocol == Protocol::Wsgate => {
                match serde_json::from_str::<Frame<'_>>(text.as_str()) {
                    Ok(frame) if frame.kind == Some("message") || frame.kind == Some("direct") => {
                        match frame.data.map(|d| serde_json::from_str::<Stamp>(d.get())) {
                            Some(Ok(stamp)) => self.pending.push_back(Event::Delivery {
                                sent_ns: stamp.t,
                                step: stamp.s,
                            }),
                            _ => self
                                .pending
                                .push_back(Event::Error("message without stamp".into())),
                        }
                    }
                    Ok(frame) => {
                        if let Some(error) = frame.error {
                            self.pending.push_back(Event::Error(error.code.to_owned()));
                        }
                    }
                    Err(e) => self.pending.push_back(Event::Error(format!("frame: {e}"))),
                }
            }
            Message::Text(text) if self.protocol == Protocol::Socketio => {
                let text = text.as_str();
                if text == "2" {
                    self.outbox.push_back(Message::text("3"));
                } else if let Some(stamp) = socketio_stamp(text) {
                    match stamp {
                        Ok(stamp) => self.pending.push_back(Event::Delivery {
                            sent_ns: stamp.t,
                            step: stamp.s,
                        }),
                        Err(e) => self.pending.push_back(Event::Error(format!("event: {e}"))),
                    }
                } else if text.starts_with('1') || text.starts_with("41") {
                    self.pending.push_back(Event::Closed(None));
                    self.finished = true;
                }
            }
            Message::Text(text) if self.protocol == Protocol::Pusher => {
                match pusher_event(text.as_str()) {
                    Ok(PusherEvent::Delivery(stamp)) => self.pending.push_back(Event::Delivery {
                        sent_ns: stamp.t,
                        step: stamp.s,
                    }),
                    Ok(PusherEvent::Ping) => self.outbox.push_back(Message::text(PUSHER_PONG)),
                    Ok(PusherEvent::Error(message)) => {
                        self.pending.push_back(Event::Error(message))
                    }
                    Ok(PusherEvent::Control { .. }) => {}
                    Err(e) => self.pending.push_back(Event::Error(format!("frame: {e}"))),
                }
            }
            Message::Text(text) => {
                self.parser.feed(text.as_bytes());
                self.drain_nats();
            }
            Message::Binary(bytes) => {
                if self.protocol == Protocol::Nats {
                    self.parser.feed(&bytes);
                    self.drain_nats();
                } else {
                    self.pending.push_back(Event::Error("binary frame".into()));
                }
            }
            Message::Close(frame) => {
                self.pending
                    .push_back(Event::Closed(frame.map(|f| u16::from(f.code))));
                self.finished = true;
            }
            _ => {}
        }
    }

    /// Writes what the outbox holds, as far as the socket takes it.
    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> Result<(), tungstenite::Error> {
        while !self.outbox.is_empty() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(message) = self.outbox.pop_front() {
                        Pin::new(&mut self.ws).start_send(message)?;
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
        match Pin::new(&mut self.ws).poll_flush(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl Stream for Member {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(event));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            if let Err(e) = this.poll_outbox(cx) {
                this.finished = true;
                return Poll::Ready(Some(Event::Error(e.to_string())));
            }
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => this.handle(message),
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Event::Error(e.to_string())));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    return Poll::Ready(Some(Event::Closed(None)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Mints an HS256 token for `user` allowed to join and publish anywhere and to `send`.
///
/// # Errors
/// When signing fails (it does not for HS256 with any key).
pub fn token(secret: &str, user: &str) -> Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 86_400;
    let claims = serde_json::json!({"sub": user, "exp": exp, "rooms": ["**"], "send": true});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NATS operations split over frames and coalesced in one are both decoded.
    #[test]
    fn nats_parser_handles_split_and_coalesced_operations() {
        let mut parser = NatsParser::default();
        parser.feed(b"INFO {}\r\nMSG a.b 1 5\r\nhe");
        assert!(matches!(parser.next_op().unwrap(), Some(NatsOp::Info)));
        assert!(parser.next_op().unwrap().is_none());
        parser.feed(b"llo\r\nPING\r\nMSG a 1 r 2\r\nhi\r\n");
        assert!(matches!(parser.next_op().unwrap(), Some(NatsOp::Msg(p)) if p == b"hello"));
        assert!(matches!(parser.next_op().unwrap(), Some(NatsOp::Ping)));
        assert!(matches!(parser.next_op().unwrap(), Some(NatsOp::Msg(p)) if p == b"hi"));
        assert!(parser.next_op().unwrap().is_none());
    }

    /// A Socket.IO `message` event yields its stamp; other events none.
    #[test]
    fn socketio_events_are_decoded() {
        let stamp = socketio_stamp(r#"42["message",{"t":5,"s":1}]"#)
            .unwrap()
            .unwrap();
        assert_eq!((stamp.t, stamp.s), (5, 1));
        assert!(socketio_stamp(r#"42["other",1]"#).is_none());
        assert!(socketio_stamp("431[true]").is_none());
    }

    /// A Pusher channel event yields its stamp, whether `data` is the JSON string the HTTP API
    /// publishes or an object; protocol events are told apart.
    #[test]
    fn pusher_events_are_decoded() {
        let text = r#"{"event":"bench","channel":"bench-0","data":"{\"t\":5,\"s\":1}"}"#;
        let PusherEvent::Delivery(stamp) = pusher_event(text).unwrap() else {
            panic!("not a delivery");
        };
        assert_eq!((stamp.t, stamp.s), (5, 1));
        let text = r#"{"event":"bench","channel":"bench-0","data":{"t":6,"s":2,"p":"xx"}}"#;
        let PusherEvent::Delivery(stamp) = pusher_event(text).unwrap() else {
            panic!("not a delivery");
        };
        assert_eq!((stamp.t, stamp.s), (6, 2));
        assert!(matches!(
            pusher_event(r#"{"event":"pusher:ping","data":{}}"#).unwrap(),
            PusherEvent::Ping
        ));
        let established = r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#;
        assert!(matches!(
            pusher_event(established).unwrap(),
            PusherEvent::Control { event, channel: None } if event == "pusher:connection_established"
        ));
        let succeeded =
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"bench-3","data":"{}"}"#;
        assert!(matches!(
            pusher_event(succeeded).unwrap(),
            PusherEvent::Control { channel: Some(channel), .. } if channel == "bench-3"
        ));
        let error =
            r#"{"event":"pusher:error","data":{"code":4001,"message":"App key not found"}}"#;
        assert!(
            matches!(pusher_event(error).unwrap(), PusherEvent::Error(m) if m.contains("4001"))
        );
    }

    /// A channel event without a stamp, or a frame that is not a Pusher event, is an error.
    #[test]
    fn pusher_frames_without_stamps_are_errors() {
        assert!(pusher_event(r#"{"event":"bench","channel":"c","data":"hello"}"#).is_err());
        assert!(pusher_event(r#"{"event":"bench","channel":"c"}"#).is_err());
        assert!(pusher_event("[1,2]").is_err());
    }

    /// A stamp survives the trip through JSON, padded or not.
    #[test]
    fn stamps_round_trip() {
        for padding in ["", "xx"] {
            let stamp: Stamp = serde_json::from_str(&stamp_json(42, 7, padding)).unwrap();
            assert_eq!((stamp.t, stamp.s), (42, 7));
        }
    }
}
