//! HTTP requests on loopback: admin endpoints, the backend API, nats-server's monitoring
//! port.
//!
//! A thin layer over hyper-util's client (the hyper stack the workspace already builds):
//! requests are built and sent as values, the response read whole. One request per
//! connection (`Connection: close`) and one client per request, so nothing outlives the test
//! runtime that sent it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long one request may take, connection included.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Errors
    /// When the body is not JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("HTTP {} body is not JSON: {:?}", self.status, self.text()))
    }

    /// The `error.code` of a JSON error body, if there is one.
    pub fn error_code(&self) -> Option<String> {
        let body = self.json().ok()?;
        body.pointer("/error/code")?.as_str().map(str::to_owned)
    }
}

/// A request under construction.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    /// A JSON body with its content type.
    pub fn json(mut self, body: &Value) -> Self {
        self.body = serde_json::to_vec(body).expect("a JSON value serializes");
        self.header("Content-Type", "application/json")
    }

    /// A raw body (no content type added).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request to `addr` and reads the whole response.
    ///
    /// # Errors
    /// Connection failures, a malformed response, or [`HTTP_TIMEOUT`].
    pub async fn send(&self, addr: SocketAddr) -> Result<Response> {
        tokio::time::timeout(HTTP_TIMEOUT, self.send_inner(addr))
            .await
            .with_context(|| format!("{} http://{addr}{} timed out", self.method, self.path))?
            .with_context(|| format!("{} http://{addr}{}", self.method, self.path))
    }

    async fn send_inner(&self, addr: SocketAddr) -> Result<Response> {
        let mut request = http::Request::builder()
            .method(self.method.as_str())
            .uri(format!("http://{addr}{}", self.path))
            .header(http::header::CONNECTION, "close");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(Bytes::from(self.body.clone())))?;
        let response = Client::builder(TokioExecutor::new())
            .build_http()
            .request(request)
            .await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// `GET http://addr{path}`.
///
/// # Errors
/// See [`Request::send`].
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    Request::get(path).send(addr).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A chunked answer arrives whole, with its status and lowercased headers; the request
    /// carried its method, path, headers and body.
    #[tokio::test]
    async fn a_chunked_response_is_read_whole() -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await?;
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !String::from_utf8_lossy(&request).ends_with("\r\n\r\n{\"a\":1}") {
                let read = stream.read(&mut buffer).await?;
                anyhow::ensure!(read > 0, "request ended early");
                request.extend_from_slice(&buffer[..read]);
            }
            stream
                .write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\
                      Retry-After: 3\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                )
                .await?;
            Ok(String::from_utf8_lossy(&request).into_owned())
        });
        let response = Request::post("/api/v1/publish?x=1")
            .bearer("key")
            .json(&serde_json::json!({"a": 1}))
            .send(addr)
            .await?;
        assert_eq!(response.status, 503);
        assert_eq!(response.header("Retry-After"), Some("3"));
        assert_eq!(response.body, b"abcde");
        let request = server.await??.to_ascii_lowercase();
        assert!(
            request.starts_with("post /api/v1/publish?x=1 http/1.1\r\n"),
            "{request}"
        );
        for line in [
            "authorization: bearer key\r\n",
            "content-type: application/json\r\n",
            "content-length: 7\r\n",
            "connection: close\r\n",
        ] {
            assert!(request.contains(line), "{line:?} missing in {request:?}");
        }
        Ok(())
    }
}
