//! The Pusher HTTP events API, as Sockudo and wsgate (on its admin listener) serve it: how
//! `--compare sockudo` and `fanout --proto pusher` publish.
//!
//! Pusher clients cannot publish to public channels (client events need private channels, an
//! auth signature per subscription and the app's `enable_client_messages`, and are not
//! acknowledged); a Pusher application publishes with `POST /apps/{app_id}/events`, signed
//! with the app's secret. An accepted publish is answered with HTTP 200.
//!
//! Sockudo answers every API request with `Connection: close`, so each publish is one short
//! TCP connection: connect, request, response, close. Requests go through hyper-util's client,
//! which reuses connections where the server keeps them open (wsgate does).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

/// The event name of every published message.
pub const EVENT: &str = "bench";

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

/// A client of one node's events API.
#[derive(Debug, Clone)]
pub struct EventsApi {
    address: SocketAddr,
    app: PusherApp,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl EventsApi {
    /// A client of the node listening on `address`, publishing as `app`.
    pub fn new(address: SocketAddr, app: PusherApp) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            address,
            app,
            timeout: Duration::from_secs(10),
            client: Client::builder(TokioExecutor::new()).build(connector),
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
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| PublishError::Timeout)?
            .map_err(|error| connection_error(&error))?;
        // The body is not read: the status is the whole answer, and dropping the response
        // closes a connection the server has not closed already.
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(PublishError::Status(status)),
        }
    }

    /// A signed request publishing `data` to `channel`.
    fn request(&self, channel: &str, data: &str) -> Result<http::Request<Full<Bytes>>> {
        let body = event_body(channel, data);
        let path = self.app.events_path();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let query = self
            .app
            .signed_query("POST", &path, body.as_bytes(), timestamp)?;
        Ok(
            http::Request::post(format!("http://{}{path}?{query}", self.address))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))?,
        )
    }
}

/// The error code of a failed exchange: `refused` when nothing listens, else the innermost
/// cause (the I/O error, when there is one), which says more than hyper's own summary.
fn connection_error(error: &(dyn std::error::Error + 'static)) -> PublishError {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    match innermost.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            PublishError::Connection("refused".to_owned())
        }
        _ => PublishError::Connection(innermost.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

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

    /// A server answering each request with `status` and closing, as Sockudo does; returns
    /// its address.
    async fn server(status: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // The body is the last thing sent and ends the JSON object.
                while !request.ends_with(b"}") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        address
    }

    /// A 200 is a publish; any other status is counted by its code.
    #[tokio::test]
    async fn publishes_succeed_on_200_and_fail_with_the_status_otherwise() {
        let api = EventsApi::new(server("200 OK").await, app());
        assert!(api.trigger("bench-0", "{}").await.is_ok());
        assert!(api.trigger("bench-0", "{}").await.is_ok());
        let api = EventsApi::new(server("401 Unauthorized").await, app());
        let error = api.trigger("bench-0", "{}").await.unwrap_err();
        assert_eq!(error.to_string(), "HTTP 401");
    }

    /// Nothing listening is the `refused` error code.
    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = EventsApi::new(address, app())
            .trigger("bench-0", "{}")
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "refused");
    }
}
