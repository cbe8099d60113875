//! A WebSocket client that speaks the wsgate protocol, for tests.
//!
//! Every read has a deadline. [`Client::call`] assigns an `id`, sends the command and
//! returns the reply with that `id`, keeping any event that arrives meanwhile for
//! [`Client::next_json`]. A refused upgrade is a [`ConnectError::Refused`] with the exact
//! HTTP status, so handshake tests can assert 401/403/429/503.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::HeaderName;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

/// The default deadline for one reply or event.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection attempt (TCP and upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for [`Client::connect_opts`].
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Extra request headers (`Authorization`, `Origin`, `Sec-WebSocket-Protocol`).
    pub headers: Vec<(String, String)>,
    /// `SO_RCVBUF` for the client socket: a small one makes a client that stops reading
    /// back up quickly (the kernel stops auto-tuning it).
    pub recv_buffer: Option<u32>,
}

impl ConnectOptions {
    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// `Origin: <origin>`.
    pub fn origin(self, origin: &str) -> Self {
        self.header("Origin", origin)
    }

    /// A small receive buffer (see [`Self::recv_buffer`]).
    pub fn recv_buffer(mut self, bytes: u32) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade request with a non-101 HTTP response.
    Refused {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Anything else: no listener, a timeout, a protocol error.
    Failed(anyhow::Error),
}

impl ConnectError {
    /// The HTTP status of a refused upgrade.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            Self::Failed(_) => None,
        }
    }

    /// A response header of a refused upgrade (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        match self {
            Self::Refused { headers, .. } => {
                let name = name.to_ascii_lowercase();
                headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            }
            Self::Failed(_) => None,
        }
    }

    /// The `error.code` of a refused upgrade's JSON body.
    pub fn error_code(&self) -> Option<String> {
        match self {
            Self::Refused { body, .. } => {
                let body: Value = serde_json::from_str(body).ok()?;
                body.pointer("/error/code")?.as_str().map(str::to_owned)
            }
            Self::Failed(_) => None,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { status, body, .. } => {
                write!(f, "upgrade refused with {status}: {body}")
            }
            Self::Failed(error) => write!(f, "connection failed: {error:#}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// One thing read from the socket.
#[derive(Debug)]
enum Received {
    Json(Value),
    Binary(Vec<u8>),
    /// A close frame: its code (absent for an empty close frame) and reason.
    Close(Option<u16>, String),
    /// The stream ended or failed without a close frame.
    Ended(String),
}

/// How a connection ended, as far as the client has read.
#[derive(Debug, Clone)]
enum Closed {
    /// A close frame with its code (absent for an empty frame) and reason.
    Frame(Option<u16>, String),
    /// The stream ended or failed without a close frame.
    Ended(String),
}

/// A protocol client over one WebSocket connection.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Frames read while waiting for something else, returned first by `next_json`.
    pending: VecDeque<Value>,
    welcome: Option<Value>,
    /// Set once a close frame (or the end of the stream) has been read.
    closed: Option<Closed>,
    /// The `Sec-WebSocket-Protocol` the server chose, if any.
    subprotocol: Option<String>,
    /// Server pings seen (tungstenite answers them itself).
    pings: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("welcome", &self.welcome)
            .field("pending", &self.pending.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a WebSocket to `url` (`ws://host:port/ws?...`).
    ///
    /// # Errors
    /// [`ConnectError::Refused`] with the status when the upgrade is refused.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::connect_opts(url, ConnectOptions::default()).await
    }

    /// Opens a WebSocket with extra request headers.
    ///
    /// # Errors
    /// See [`Self::connect`].
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Self, ConnectError> {
        let options = ConnectOptions {
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            recv_buffer: None,
        };
        Self::connect_opts(url, options).await
    }

    /// Opens a WebSocket with [`ConnectOptions`].
    ///
    /// # Errors
    /// See [`Self::connect`].
    pub async fn connect_opts(url: &str, options: ConnectOptions) -> Result<Self, ConnectError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(url, options)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Failed(anyhow!(
                "connecting to {url}: timed out"
            ))),
        }
    }

    async fn connect_inner(url: &str, options: ConnectOptions) -> Result<Self, ConnectError> {
        let failed =
            |e: anyhow::Error| ConnectError::Failed(e.context(format!("connecting to {url}")));
        let mut request = url.into_client_request().map_err(|e| failed(e.into()))?;
        for (name, value) in &options.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| failed(e.into()))?;
            let value = HeaderValue::from_str(value).map_err(|e| failed(e.into()))?;
            request.headers_mut().append(name, value);
        }
        let uri = request.uri().clone();
        let host = uri.host().ok_or_else(|| failed(anyhow!("no host")))?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| failed(e.into()))?
            .next()
            .ok_or_else(|| failed(anyhow!("{host} has no address")))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| failed(e.into()))?;
        if let Some(bytes) = options.recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(|e| failed(e.into()))?;
        }
        let stream = socket.connect(addr).await.map_err(|e| failed(e.into()))?;
        stream.set_nodelay(true).map_err(|e| failed(e.into()))?;
        let config = WebSocketConfig::default();
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok((ws, response)) => {
                let subprotocol = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok(Self {
                    ws,
                    next_id: 1,
                    pending: VecDeque::new(),
                    welcome: None,
                    closed: None,
                    subprotocol,
                    pings: 0,
                })
            }
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(ConnectError::Refused {
                    status,
                    headers,
                    body,
                })
            }
            Err(error) => Err(failed(error.into())),
        }
    }

    /// The status of an upgrade attempt: 101 when it succeeded (the connection is then
    /// closed), else the refusal's status.
    ///
    /// # Errors
    /// When the attempt failed without an HTTP answer.
    pub async fn handshake_status(url: &str, headers: &[(&str, &str)]) -> Result<u16> {
        match Self::connect_with(url, headers).await {
            Ok(client) => {
                client.close().await;
                Ok(101)
            }
            Err(ConnectError::Refused { status, .. }) => Ok(status),
            Err(ConnectError::Failed(error)) => Err(error),
        }
    }

    /// Connects with `Authorization: Bearer <token>` and reads the welcome frame.
    ///
    /// # Errors
    /// A refused upgrade or no welcome.
    pub async fn connect_token(url: &str, token: &str) -> Result<Self> {
        let mut client = Self::connect_opts(url, ConnectOptions::default().bearer(token)).await?;
        client.welcome().await?;
        Ok(client)
    }

    /// Connects without a token to a gateway that allows anonymous connections and reads
    /// the anonymous welcome.
    ///
    /// # Errors
    /// A refused upgrade or no welcome.
    pub async fn connect_anonymous(url: &str) -> Result<Self> {
        let mut client = Self::connect(url).await?;
        client.welcome().await?;
        Ok(client)
    }

    /// The subprotocol the server selected.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Reads the next frame, which must be a welcome, and keeps it.
    ///
    /// # Errors
    /// Anything else, or nothing within [`REPLY_TIMEOUT`].
    pub async fn welcome(&mut self) -> Result<Value> {
        let frame = self
            .next_json(REPLY_TIMEOUT)
            .await
            .context("waiting for the welcome")?;
        self.accept_welcome(frame)
    }

    fn accept_welcome(&mut self, frame: Value) -> Result<Value> {
        ensure!(
            frame["type"] == "welcome",
            "expected a welcome frame, got {frame}"
        );
        for field in ["conn", "user", "node"] {
            ensure!(
                frame[field].is_string(),
                "welcome without a string `{field}`: {frame}"
            );
        }
        ensure!(
            frame["heartbeat_ms"].is_u64(),
            "welcome without `heartbeat_ms`: {frame}"
        );
        self.welcome = Some(frame.clone());
        Ok(frame)
    }

    /// The last welcome received.
    ///
    /// # Panics
    /// Before any welcome.
    pub fn welcome_frame(&self) -> &Value {
        self.welcome.as_ref().expect("no welcome received yet")
    }

    /// This connection's id, from the welcome.
    ///
    /// # Panics
    /// Before any welcome.
    pub fn conn(&self) -> String {
        self.welcome_frame()["conn"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// This connection's user id, from the welcome.
    ///
    /// # Panics
    /// Before any welcome.
    pub fn user(&self) -> String {
        self.welcome_frame()["user"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The node that serves this connection, from the welcome.
    ///
    /// # Panics
    /// Before any welcome.
    pub fn node(&self) -> String {
        self.welcome_frame()["node"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Sends one JSON text frame.
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send_json(&mut self, value: &Value) -> Result<()> {
        self.send_raw(Message::text(value.to_string())).await
    }

    /// Sends one text frame as is.
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.send_raw(Message::text(text)).await
    }

    /// Sends any message (binary, ping, close, raw frames).
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send_raw(&mut self, message: Message) -> Result<()> {
        tokio::time::timeout(REPLY_TIMEOUT, self.ws.send(message))
            .await
            .context("sending timed out")?
            .context("sending a frame")
    }

    /// Sends a text frame whose payload is not valid UTF-8 (the server must close 1007).
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send_invalid_utf8(&mut self) -> Result<()> {
        let payload = Bytes::from_static(b"{\"op\":\"ping\",\"id\":1,\"x\":\"\xff\xfe\"}");
        self.send_raw(Message::Frame(Frame::message(
            payload,
            OpCode::Data(Data::Text),
            true,
        )))
        .await
    }

    /// Sends `text` as one message split into `fragments` frames (first a text frame, then
    /// continuations), so size limits must apply to the reassembled message.
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send_fragmented_text(&mut self, text: &str, fragments: usize) -> Result<()> {
        let bytes = text.as_bytes();
        let fragments = fragments.clamp(1, bytes.len().max(1));
        let size = bytes.len().div_ceil(fragments);
        let chunks: Vec<&[u8]> = bytes.chunks(size.max(1)).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame =
                Frame::message(Bytes::copy_from_slice(chunk), opcode, i + 1 == chunks.len());
            self.ws
                .feed(Message::Frame(frame))
                .await
                .context("sending a fragment")?;
        }
        self.ws.flush().await.context("flushing fragments")
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Received> {
        if let Some(closed) = &self.closed {
            return Ok(Received::Ended(format!("already closed: {closed:?}")));
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let next = match tokio::time::timeout(remaining, self.ws.next()).await {
                Ok(next) => next,
                Err(_) => bail!("nothing received within the deadline"),
            };
            let received = match next {
                None => Received::Ended(String::from("stream ended")),
                Some(Err(error)) => Received::Ended(format!("{error}")),
                Some(Ok(Message::Text(text))) => {
                    let value = serde_json::from_str(text.as_str()).with_context(|| {
                        format!("server sent a text frame that is not JSON: {text}")
                    })?;
                    Received::Json(value)
                }
                Some(Ok(Message::Binary(bytes))) => Received::Binary(bytes.to_vec()),
                Some(Ok(Message::Ping(_))) => {
                    self.pings += 1;
                    continue;
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(frame) => {
                        Received::Close(Some(u16::from(frame.code)), frame.reason.to_string())
                    }
                    None => Received::Close(None, String::new()),
                },
            };
            match &received {
                Received::Close(code, reason) => {
                    self.closed = Some(Closed::Frame(*code, reason.clone()));
                }
                Received::Ended(why) => self.closed = Some(Closed::Ended(why.clone())),
                _ => {}
            }
            return Ok(received);
        }
    }

    /// The next JSON frame (events kept by [`Self::call`] first), skipping pings.
    ///
    /// # Errors
    /// A close, a binary frame, or nothing within `timeout`.
    pub async fn next_json(&mut self, timeout: Duration) -> Result<Value> {
        if let Some(value) = self.pending.pop_front() {
            return Ok(value);
        }
        let deadline = Instant::now() + timeout;
        match self
            .recv(deadline)
            .await
            .context("waiting for a JSON frame")?
        {
            Received::Json(value) => Ok(value),
            Received::Binary(bytes) => bail!("server sent a binary frame ({} bytes)", bytes.len()),
            Received::Close(code, reason) => bail!("connection closed with {code:?} {reason:?}"),
            Received::Ended(why) => bail!("connection ended without a close frame: {why}"),
        }
    }

    /// The next frame with `"type": ty`; other frames read meanwhile stay queued.
    ///
    /// # Errors
    /// See [`Self::next_json`].
    pub async fn next_of_type(&mut self, ty: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let result = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.next_json(remaining).await {
                Ok(value) if value["type"] == ty => break Ok(value),
                Ok(value) => skipped.push(value),
                Err(error) => break Err(error.context(format!("waiting for a `{ty}` frame"))),
            }
        };
        for value in skipped.into_iter().rev() {
            self.pending.push_front(value);
        }
        result
    }

    /// The next `message` event of `room`; other frames read meanwhile stay queued.
    ///
    /// # Errors
    /// See [`Self::next_json`].
    pub async fn next_message(&mut self, room: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let result = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.next_json(remaining).await {
                Ok(value) if value["type"] == "message" && value["room"] == room => {
                    break Ok(value);
                }
                Ok(value) => skipped.push(value),
                Err(error) => break Err(error.context(format!("waiting for a message in {room}"))),
            }
        };
        for value in skipped.into_iter().rev() {
            self.pending.push_front(value);
        }
        result
    }

    /// Sends `command` with a fresh `id` (unless it has one) and returns the reply with
    /// that `id`; events that arrive meanwhile are kept for [`Self::next_json`].
    ///
    /// # Errors
    /// No reply within [`REPLY_TIMEOUT`], or the connection closed.
    pub async fn call(&mut self, command: Value) -> Result<Value> {
        self.call_within(command, REPLY_TIMEOUT).await
    }

    /// [`Self::call`] with a chosen deadline.
    ///
    /// # Errors
    /// See [`Self::call`].
    pub async fn call_within(&mut self, mut command: Value, timeout: Duration) -> Result<Value> {
        let id = match command.get("id") {
            Some(id) => id.clone(),
            None => {
                let id = json!(self.next_id);
                self.next_id += 1;
                command["id"] = id.clone();
                id
            }
        };
        self.send_json(&command).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let received = self
                .recv(deadline)
                .await
                .with_context(|| format!("waiting for the reply to {command}"))?;
            match received {
                Received::Json(value) if value.get("id") == Some(&id) => return Ok(value),
                Received::Json(value) => self.pending.push_back(value),
                Received::Binary(bytes) => bail!(
                    "binary frame ({} bytes) while waiting for {command}",
                    bytes.len()
                ),
                Received::Close(code, reason) => {
                    bail!(
                        "closed with {code:?} {reason:?} while waiting for the reply to {command}"
                    )
                }
                Received::Ended(why) => {
                    bail!("connection ended ({why}) while waiting for the reply to {command}")
                }
            }
        }
    }

    /// [`Self::call`], requiring `"ok": true`.
    ///
    /// # Errors
    /// An error reply, or see [`Self::call`].
    pub async fn call_ok(&mut self, command: Value) -> Result<Value> {
        let reply = self.call(command.clone()).await?;
        ensure!(reply["ok"] == true, "{command} got {reply}, expected ok");
        Ok(reply)
    }

    /// [`Self::call`], requiring an error reply; returns its code.
    ///
    /// # Errors
    /// A success reply, or see [`Self::call`].
    pub async fn call_err(&mut self, command: Value) -> Result<String> {
        let reply = self.call(command.clone()).await?;
        error_code(&reply)
            .map(str::to_owned)
            .with_context(|| format!("{command} got {reply}, expected an error reply"))
    }

    /// `join` that must succeed; returns the reply.
    ///
    /// # Errors
    /// An error reply or no reply.
    pub async fn join(&mut self, room: &str) -> Result<Value> {
        self.call_ok(json!({"op": "join", "room": room})).await
    }

    /// `join` that must succeed, recovering after `since` (`(epoch, seq)`)
    /// when given; returns the reply.
    ///
    /// # Errors
    /// An error reply or no reply.
    pub async fn join_since(&mut self, room: &str, since: Option<(&str, u64)>) -> Result<Value> {
        let mut command = json!({"op": "join", "room": room});
        if let Some((epoch, seq)) = since {
            command["since"] = json!({"epoch": epoch, "seq": seq});
        }
        self.call_ok(command).await
    }

    /// `leave` that must succeed.
    ///
    /// # Errors
    /// An error reply or no reply.
    pub async fn leave(&mut self, room: &str) -> Result<Value> {
        self.call_ok(json!({"op": "leave", "room": room})).await
    }

    /// `publish` that must succeed.
    ///
    /// # Errors
    /// An error reply or no reply.
    pub async fn publish(&mut self, room: &str, data: Value) -> Result<Value> {
        self.call_ok(json!({"op": "publish", "room": room, "data": data}))
            .await
    }

    /// `publish` that must succeed in a room with history; returns the
    /// acknowledged `seq`.
    ///
    /// # Errors
    /// An error reply, no reply, or a reply without `seq`.
    pub async fn publish_seq(&mut self, room: &str, data: Value) -> Result<u64> {
        let reply = self.publish(room, data).await?;
        reply["seq"]
            .as_u64()
            .with_context(|| format!("publish reply without seq: {reply}"))
    }

    /// `auth` with a good token: the reply is a welcome (with the `auth`'s id), which is
    /// kept as the new welcome.
    ///
    /// # Errors
    /// Anything but a welcome.
    pub async fn auth(&mut self, token: &str) -> Result<Value> {
        let reply = self.call(json!({"op": "auth", "token": token})).await?;
        self.accept_welcome(reply)
    }

    /// Reads until a close frame arrives (skipping data frames) and checks its code;
    /// returns the reason.
    ///
    /// # Errors
    /// Another code, no close frame, or nothing within `timeout`.
    pub async fn expect_close(&mut self, code: u16, timeout: Duration) -> Result<String> {
        let (got, reason) = self.wait_close(timeout).await?;
        ensure!(
            got == Some(code),
            "expected close {code}, got close {got:?} {reason:?}"
        );
        Ok(reason)
    }

    /// Reads until the close frame (skipping data frames); returns its code and reason.
    ///
    /// # Errors
    /// The stream ended without a close frame, or nothing within `timeout`.
    pub async fn wait_close(&mut self, timeout: Duration) -> Result<(Option<u16>, String)> {
        match self.closed.clone() {
            Some(Closed::Frame(code, reason)) => return Ok((code, reason)),
            Some(Closed::Ended(why)) => bail!("connection ended without a close frame: {why}"),
            None => {}
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .recv(deadline)
                .await
                .context("waiting for a close frame")?
            {
                Received::Json(_) | Received::Binary(_) => {}
                Received::Close(code, reason) => return Ok((code, reason)),
                Received::Ended(why) => bail!("connection ended without a close frame: {why}"),
            }
        }
    }

    /// Checks that no frame arrives for `quiet` (nothing is queued either).
    ///
    /// # Errors
    /// A frame, a close, or a queued event.
    pub async fn expect_silence(&mut self, quiet: Duration) -> Result<()> {
        if let Some(value) = self.pending.pop_front() {
            bail!("expected silence, but {value} was received");
        }
        let deadline = Instant::now() + quiet;
        match self.recv(deadline).await {
            Err(_) => Ok(()),
            Ok(Received::Json(value)) => bail!("expected silence, but {value} was received"),
            Ok(other) => bail!("expected silence, but got {other:?}"),
        }
    }

    /// Server pings seen so far.
    pub fn pings(&self) -> u64 {
        self.pings
    }

    /// Frames read but not yet returned by [`Self::next_json`], oldest first.
    pub fn queued(&self) -> impl Iterator<Item = &Value> {
        self.pending.iter()
    }

    /// Forgets the queued frames.
    pub fn clear_queue(&mut self) {
        self.pending.clear();
    }

    /// True once a close frame was read or the stream ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Reads the rest of the connection as raw bytes, without answering anything (no
    /// pongs, no close reply), and returns the code of the server's close frame.
    ///
    /// For a client that must look unresponsive: tungstenite answers pings while it
    /// reads, and its pong to a server that already closed fails with a broken pipe
    /// before the close frame is handed out.
    ///
    /// # Errors
    /// No close frame before the server closed the socket or `timeout` passed.
    pub async fn raw_close_code(self, timeout: Duration) -> Result<u16> {
        use tokio::io::AsyncReadExt;
        let mut stream = self.ws.into_inner();
        let mut bytes = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = close_code_in(&bytes) {
                return Ok(code);
            }
            let mut chunk = [0u8; 4096];
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, stream.read(&mut chunk)).await {
                Err(_) => bail!("no close frame within {timeout:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return close_code_in(&bytes)
                        .context("the server closed without a close frame");
                }
                Ok(Ok(read)) => bytes.extend_from_slice(&chunk[..read]),
            }
        }
    }

    /// Sends a close frame and waits briefly for the server's.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The code of the first close frame in raw server-to-client bytes, once it is complete.
fn close_code_in(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let masked = bytes[1] & 0x80 != 0;
        let (len, mut header) = match bytes[1] & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
                4,
            ),
            127 => {
                let raw: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
                (usize::try_from(u64::from_be_bytes(raw)).ok()?, 10)
            }
            short => (usize::from(short), 2),
        };
        if masked {
            header += 4;
        }
        let payload = bytes.get(header..header + len)?;
        if opcode == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
        bytes = &bytes[header + len..];
    }
    None
}

/// The `error.code` of a reply.
pub fn error_code(reply: &Value) -> Option<&str> {
    reply.pointer("/error/code").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_found_after_other_frames() {
        // ping "ab", text "{}", close 1011 "x"
        let bytes = [
            0x89, 2, b'a', b'b', 0x81, 2, b'{', b'}', 0x88, 3, 0x03, 0xf3, b'x',
        ];
        assert_eq!(close_code_in(&bytes), Some(1011));
        assert_eq!(close_code_in(&bytes[..10]), None);
        let long = [
            &[0x82u8, 126, 0x01, 0x00][..],
            &[0u8; 256],
            &[0x88, 2, 0x03, 0xe9],
        ]
        .concat();
        assert_eq!(close_code_in(&long), Some(1001));
    }
}
