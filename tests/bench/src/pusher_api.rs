//! The Pusher HTTP events API, as Sockudo serves it: how `--compare sockudo` publishes.
//!
//! Pusher clients cannot publish to public channels (client events need private channels, an
//! auth signature per subscription and the app's `enable_client_messages`, and are not
//! acknowledged); a Pusher application publishes with `POST /apps/{app_id}/events`, signed
//! with the app's secret. An accepted publish is answered with HTTP 200.
//!
//! Sockudo answers every API request with `Connection: close`, so each publish is one short
//! TCP connection: connect, request, response, close.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The event name of every published message.
pub const EVENT: &str = "bench";

/// Most bytes of a response read (its status line is all that matters).
const RESPONSE_LIMIT: usize = 64 * 1024;

/// A Pusher app: clients connect with its key, API requests are signed with its secret.
#[derive(Debug, Clone)]
pub struct PusherApp {
    pub id: String,
    pub key: String,
    pub secret: String,
}

impl PusherApp {
    /// A fresh app for one run (the secret only has to differ from run to run).
    pub fn generate() -> Self {
        let nonce = crate::client::mono_ns();
        Self {
            id: "wsgate-bench".to_owned(),
            key: format!("bench-key-{nonce}"),
            secret: format!("bench-secret-{nonce:x}-{}", std::process::id()),
        }
    }

    /// The WebSocket path clients connect to (protocol 7, as pusher-js 8 sends it).
    pub fn websocket_path(&self) -> String {
        format!("/app/{}?protocol=7&client=js&version=8.0.0", self.key)
    }

    /// The path of the events API.
    pub fn events_path(&self) -> String {
        format!("/apps/{}/events", self.id)
    }

    /// The query string authenticating `method path` with `body` at `timestamp` (Unix
    /// seconds): `auth_key`, `auth_timestamp`, `auth_version=1.0` and `body_md5` sorted by
    /// name, then `auth_signature`, the hex HMAC-SHA256 over `METHOD\npath\nquery` with the
    /// app's secret.
    ///
    /// # Errors
    /// Never in practice: HMAC takes keys of any length.
    pub fn signed_query(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp: u64,
    ) -> Result<String> {
        let body_md5 = format!("{:x}", md5::compute(body));
        let query = format!(
            "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}",
            self.key
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())
            .map_err(|e| anyhow!("signing key: {e}"))?;
        mac.update(format!("{method}\n{path}\n{query}").as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        Ok(format!("{query}&auth_signature={signature}"))
    }
}

/// The JSON body of a publish of `data` (a JSON text, sent as Pusher's string `data`) to
/// `channel`.
pub fn event_body(channel: &str, data: &str) -> String {
    serde_json::json!({"name": EVENT, "channel": channel, "data": data}).to_string()
}

/// Why a publish was not accepted; its text is the error code the report counts.
#[derive(Debug)]
pub enum PublishError {
    /// The server answered with another status than 200.
    Status(u16),
    /// The connection failed, or the answer was not HTTP.
    Connection(String),
    /// No answer in time.
    Timeout,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status) => write!(f, "HTTP {status}"),
            Self::Connection(why) => write!(f, "{why}"),
            Self::Timeout => write!(f, "timed out"),
        }
    }
}

/// A client of one Sockudo node's events API.
#[derive(Debug, Clone)]
pub struct EventsApi {
    address: SocketAddr,
    app: PusherApp,
    timeout: Duration,
}

impl EventsApi {
    /// A client of the node listening on `address`, publishing as `app`.
    pub fn new(address: SocketAddr, app: PusherApp) -> Self {
        Self {
            address,
            app,
            timeout: Duration::from_secs(10),
        }
    }

    /// Publishes `data` (a JSON text) to `channel`.
    ///
    /// # Errors
    /// When the server does not answer 200 in time.
    pub async fn trigger(&self, channel: &str, data: &str) -> Result<(), PublishError> {
        let request = self
            .request(channel, data)
            .map_err(|e| PublishError::Connection(e.to_string()))?;
        let status = tokio::time::timeout(self.timeout, self.exchange(&request))
            .await
            .map_err(|_| PublishError::Timeout)??;
        if status == 200 {
            Ok(())
        } else {
            Err(PublishError::Status(status))
        }
    }

    /// The bytes of a signed request publishing `data` to `channel`.
    fn request(&self, channel: &str, data: &str) -> Result<Vec<u8>> {
        let body = event_body(channel, data);
        let path = self.app.events_path();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let query = self
            .app
            .signed_query("POST", &path, body.as_bytes(), timestamp)?;
        let mut request = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.address,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        Ok(request)
    }

    /// Sends `request` on a new connection and returns the response's status code.
    async fn exchange(&self, request: &[u8]) -> Result<u16, PublishError> {
        let failed = |e: std::io::Error| PublishError::Connection(e.to_string());
        let mut stream = TcpStream::connect(self.address).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                PublishError::Connection("refused".to_owned())
            } else {
                failed(e)
            }
        })?;
        let _ = stream.set_nodelay(true);
        stream.write_all(request).await.map_err(failed)?;
        // The server closes the connection after its answer; read until then.
        let mut response = Vec::with_capacity(512);
        let mut limited = (&mut stream).take(RESPONSE_LIMIT as u64);
        limited.read_to_end(&mut response).await.map_err(failed)?;
        status_code(&response)
            .ok_or_else(|| PublishError::Connection("no HTTP status line in the answer".to_owned()))
    }
}

/// The status code of an HTTP/1.x response.
fn status_code(response: &[u8]) -> Option<u16> {
    let line_end = response.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&response[..line_end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> PusherApp {
        PusherApp {
            id: "3".to_owned(),
            key: "278d425bdf160c739803".to_owned(),
            secret: "7ad3773142a6692b25b8".to_owned(),
        }
    }

    /// The signature is the one Pusher's documentation works out for its example request.
    #[test]
    fn requests_are_signed_as_pusher_documents() {
        // https://pusher.com/docs/channels/library_auth_reference/rest-api/#worked-authentication-example
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let query = app()
            .signed_query("POST", "/apps/3/events", body, 1353088179)
            .unwrap();
        assert_eq!(
            query,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    /// The body carries the stamp as Pusher's string `data`.
    #[test]
    fn event_bodies_carry_the_data_as_a_string() {
        let body: serde_json::Value =
            serde_json::from_str(&event_body("bench-0", r#"{"t":1,"s":2}"#)).unwrap();
        assert_eq!(body["name"], EVENT);
        assert_eq!(body["channel"], "bench-0");
        assert_eq!(body["data"], r#"{"t":1,"s":2}"#);
    }

    /// Status lines are read; anything else is not.
    #[test]
    fn status_codes_are_read_from_the_status_line() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n\r\n{}"), Some(200));
        assert_eq!(status_code(b"HTTP/1.1 401 Unauthorized\r\n"), Some(401));
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), None);
        assert_eq!(status_code(b"SSH-2.0\r\n"), None);
    }
}
