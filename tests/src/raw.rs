//! A raw WebSocket peer for hostile input: it writes frames byte by byte as the test
//! says (bad opcodes, fragmented control frames, lying length headers), which no
//! well-behaved client library will do, and reads the gateway's frames back.
//! Also [`vm_rss_kib`], a process's resident memory, to bound what hostile input costs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// One frame read from the gateway.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The payload as text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// How a raw connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code (`None`: a close frame without a code).
    Close(Option<u16>),
    /// The TCP connection ended without a close frame.
    Dropped,
}

/// A WebSocket connection driven frame by frame.
pub struct RawSocket {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawSocket {
    /// Connects and upgrades `path` (with its query) on `addr`; any status but 101 is an error.
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<Self> {
        let mut stream = timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::new();
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .context("handshake timed out")??;
            ensure!(n > 0, "connection closed during the handshake");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        ensure!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        buffer.drain(..end);
        Ok(Self { stream, buffer })
    }

    /// Drops the connection abruptly: a TCP reset, no close frame.
    pub fn abort(self) {
        // A zero linger resets at once; it does not block on drop.
        #[allow(deprecated)]
        let _ = self.stream.set_linger(Some(Duration::ZERO));
        drop(self.stream);
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Writes one masked frame with the given first byte's FIN and opcode.
    pub async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Result<()> {
        self.write(&encode(fin, opcode, payload, true)).await
    }

    /// Writes one text frame.
    pub async fn text(&mut self, text: &str) -> Result<()> {
        self.frame(true, opcode::TEXT, text.as_bytes()).await
    }

    /// Reads the next frame from the gateway; `None` when the connection ended.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<Option<Frame>> {
        timeout(wait, self.read_frame())
            .await
            .context("no frame from the gateway in time")?
    }

    async fn fill(&mut self, n: usize) -> Result<bool> {
        while self.buffer.len() < n {
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(false),
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
        Ok(true)
    }

    async fn read_frame(&mut self) -> Result<Option<Frame>> {
        if !self.fill(2).await? {
            return Ok(None);
        }
        let fin = self.buffer[0] & 0x80 != 0;
        let opcode = self.buffer[0] & 0x0F;
        ensure!(self.buffer[1] & 0x80 == 0, "the server masked a frame");
        let (header, len) = match self.buffer[1] & 0x7F {
            126 => {
                if !self.fill(4).await? {
                    return Ok(None);
                }
                (
                    4,
                    u64::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                )
            }
            127 => {
                if !self.fill(10).await? {
                    return Ok(None);
                }
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.buffer[2..10]);
                (10, u64::from_be_bytes(bytes))
            }
            len => (2, u64::from(len)),
        };
        if len > 64 * 1024 * 1024 {
            bail!("the server sent a {len}-byte frame");
        }
        let total = header + len as usize;
        if !self.fill(total).await? {
            return Ok(None);
        }
        let payload = self.buffer[header..total].to_vec();
        self.buffer.drain(..total);
        Ok(Some(Frame {
            fin,
            opcode,
            payload,
        }))
    }

    /// Reads until the gateway closes: its close code, skipping every other frame.
    pub async fn ending(&mut self, wait: Duration) -> Result<Ending> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await? {
                None => return Ok(Ending::Dropped),
                Some(frame) if frame.opcode == opcode::CLOSE => {
                    return Ok(Ending::Close(frame.close_code()));
                }
                Some(_) => {}
            }
        }
    }

    /// The next text frame, skipping pings.
    pub async fn next_text(&mut self, wait: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await? {
                None => bail!("connection ended while waiting for a text frame"),
                Some(frame) if frame.opcode == opcode::TEXT => return Ok(frame.text()),
                Some(frame) if frame.opcode == opcode::CLOSE => {
                    bail!(
                        "closed with {:?} while waiting for a text frame",
                        frame.close_code()
                    )
                }
                Some(_) => {}
            }
        }
    }
}

/// Encodes one frame; a masked frame uses a fixed, non-zero mask.
pub fn encode(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The header of a masked frame that announces `len` payload bytes, without the payload.
pub fn header_only(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    out
}

/// A process's resident memory in KiB, from `/proc/<pid>/status`.
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}
