//! Sockets bounded before their handshake (docs/security.md, "Limits"): idle TCP sockets on
//! the public listener are timed out and counted, so they cannot starve the descriptors that
//! health checks, metrics and key reloads need; and an optional cap on WebSocket connections
//! per client address, which believes `X-Forwarded-For` only from trusted proxies. Real
//! gateways with a low open-file limit, real sockets on loopback.
//!
//! Run serially: `cargo test -p wsgate-tests --test idle_sockets -- --test-threads=1`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wsgate_tests::{Client, Gateway, GatewayOptions, TempDir, eventually, within};

/// The open-file limit the gateway runs with: small enough for a few hundred sockets to
/// exhaust it.
const OPEN_FILE_LIMIT: u64 = 256;

/// The public sockets the gateway may hold under [`OPEN_FILE_LIMIT`]: 64 descriptors are kept
/// for everything else.
const SOCKET_BUDGET: usize = 256 - 64;

/// Idle sockets opened: more than the open-file limit.
const IDLE_SOCKETS: usize = 300;

/// `limits.handshake_timeout_ms` in these tests.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(2000);

/// `limits.handshake_timeout_ms` under the flood: long enough for a key reload (every 2 s)
/// to happen while the idle sockets are held.
const FLOOD_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(6000);

/// How long after the flood the rotated key must work: within the flood's timeout.
const RELOAD_WITHIN: Duration = Duration::from_millis(4000);

/// The warning logged once when the public sockets near the budget.
const NEAR_LIMIT_WARNING: &str = "public sockets near the open-file limit";

/// Opens a TCP connection to `address` and sends nothing. `None` when the connection itself
/// failed (the kernel's queue was full): that socket holds nothing at the gateway either.
async fn idle_socket(address: SocketAddr) -> Option<TcpStream> {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
        .await
        .ok()?
        .ok()
}

/// Waits until the gateway closes `socket` (end of stream or a reset), at most `limit`, and
/// returns when that was.
async fn closed_at(mut socket: TcpStream, limit: Duration) -> Option<Instant> {
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| Instant::now())
}

/// The sum of the samples of the metric `name` (all its label sets) in a Prometheus text
/// exposition.
fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// With an open-file limit of 256, 300 idle sockets on the public listener: the sockets over
/// the budget are closed at once and the rest after `limits.handshake_timeout_ms`; meanwhile
/// `/healthz`, `/readyz`, `/metrics` and an API key reload keep working, one warning is logged, and once
/// the idle sockets are gone an upgrade succeeds.
#[tokio::test]
async fn idle_sockets_are_shed_or_timed_out_while_admin_and_key_reloads_keep_working() -> Result<()>
{
    let dir = TempDir::new("idle-sockets")?;
    let keys = dir.path().join("api-keys");
    std::fs::write(&keys, "key-one\n")?;
    let gateway = Gateway::start(
        GatewayOptions::new()
            .anonymous()
            .open_file_limit(OPEN_FILE_LIMIT)
            .set(
                "limits.handshake_timeout_ms",
                FLOOD_HANDSHAKE_TIMEOUT.as_millis() as u64,
            )
            .set("auth.api_keys_file", keys.display().to_string()),
    )
    .await?;
    let public = gateway.public();

    // Each socket is watched from its connection on, so the time until the gateway closes it
    // does not depend on how long opening the others takes.
    let mut watchers = Vec::new();
    for _ in 0..IDLE_SOCKETS {
        if let Some(socket) = idle_socket(public).await {
            let connected = Instant::now();
            watchers.push(tokio::spawn(async move {
                let closed = closed_at(socket, FLOOD_HANDSHAKE_TIMEOUT * 5).await?;
                Some(closed.duration_since(connected))
            }));
        }
    }
    ensure!(
        watchers.len() > SOCKET_BUDGET,
        "only {} idle sockets connected",
        watchers.len()
    );
    let opened = watchers.len();

    // The admin listener answers while the idle sockets are held.
    let status = within(Duration::from_secs(5), "/healthz under the flood", async {
        gateway.healthz().await
    })
    .await?;
    ensure!(status == 200, "/healthz answered {status}");
    let status = within(Duration::from_secs(5), "/readyz under the flood", async {
        gateway.readyz().await
    })
    .await?;
    ensure!(status == 200, "/readyz answered {status}");
    let metrics = within(Duration::from_secs(5), "/metrics under the flood", async {
        gateway.metrics().await
    })
    .await?;
    ensure!(
        metrics.contains("wsgate_sockets_shed_total"),
        "no shed sockets counted:\n{metrics}"
    );
    // A key reload needs a descriptor for the file.
    wsgate_tests::replace_file(&keys, "key-two\n")?;
    eventually(
        RELOAD_WITHIN,
        "the rotated API key works under the flood",
        || async {
            let status = gateway
                .api_get("/api/v1/stats", Some("key-two"))
                .await?
                .status;
            Ok((status == 200).then_some(()))
        },
    )
    .await?;

    let mut at_once = 0;
    let mut after_timeout = 0;
    for watcher in watchers {
        let open_for = watcher
            .await
            .context("watcher task")?
            .context("an idle socket was still open long after the handshake timeout")?;
        if open_for < FLOOD_HANDSHAKE_TIMEOUT / 2 {
            at_once += 1;
        } else {
            ensure!(
                open_for >= FLOOD_HANDSHAKE_TIMEOUT.mul_f32(0.9),
                "an idle socket was closed after {open_for:?}, before the timeout"
            );
            after_timeout += 1;
        }
    }
    ensure!(
        at_once >= opened - SOCKET_BUDGET,
        "{at_once} of {opened} idle sockets closed at once; over the budget of {SOCKET_BUDGET} all should be"
    );
    ensure!(
        after_timeout > 0 && after_timeout <= SOCKET_BUDGET,
        "{after_timeout} idle sockets were held until the timeout"
    );

    let metrics = gateway.metrics().await?;
    let timed_out = metric_sum(&metrics, "wsgate_handshake_timeouts_total");
    ensure!(
        timed_out >= after_timeout as f64,
        "{timed_out} handshake timeouts counted for {after_timeout} idle sockets:\n{metrics}"
    );
    let shed = metric_sum(&metrics, "wsgate_sockets_shed_total");
    ensure!(
        shed >= at_once as f64,
        "{shed} shed sockets counted for {at_once} closed at once:\n{metrics}"
    );

    let mut client = Client::connect_anonymous(&gateway.ws_url())
        .await
        .context("an upgrade after the idle sockets were closed")?;
    let reply = client.call(serde_json::json!({"op": "ping"})).await?;
    ensure!(reply["ok"] == true, "{reply}");
    let warnings = gateway
        .stderr_lines()
        .iter()
        .filter(|line| line.contains(NEAR_LIMIT_WARNING))
        .count();
    ensure!(
        warnings == 1,
        "{warnings} near-limit warnings:\n{}",
        gateway.logs_tail(40)
    );
    Ok(())
}

/// A socket that sends part of a request head and then nothing is closed after
/// `limits.handshake_timeout_ms`, not before; a socket that finished one request and idles on
/// the kept-alive connection is closed after as long again.
#[tokio::test]
async fn a_request_head_must_arrive_within_the_handshake_timeout() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions::new().anonymous().set(
        "limits.handshake_timeout_ms",
        HANDSHAKE_TIMEOUT.as_millis() as u64,
    ))
    .await?;
    let started = Instant::now();
    let mut slow = TcpStream::connect(gateway.public()).await?;
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await?;
    let closed = closed_at(slow, HANDSHAKE_TIMEOUT * 5)
        .await
        .context("a half-sent request head was never timed out")?;
    let after = closed.duration_since(started);
    ensure!(
        after >= HANDSHAKE_TIMEOUT.mul_f32(0.9),
        "closed after {after:?}, before the timeout"
    );

    let mut kept = TcpStream::connect(gateway.public()).await?;
    kept.write_all(b"GET /client/wsgate.js HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let started = Instant::now();
    let closed = closed_at(kept, HANDSHAKE_TIMEOUT * 5)
        .await
        .context("an idle kept-alive connection was never timed out")?;
    let after = closed.duration_since(started);
    ensure!(
        after >= HANDSHAKE_TIMEOUT.mul_f32(0.9),
        "kept-alive connection closed after {after:?}"
    );
    Ok(())
}

/// The status and body of a raw upgrade request from `source`, and its socket (open after a
/// 101, so the connection holds its place).
async fn upgrade_from(
    source: Ipv4Addr,
    gateway: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<(u16, String, TcpStream)> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .with_context(|| format!("binding {source}"))?;
    let mut stream = socket.connect(gateway).await?;
    let mut request = String::from(
        "GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = within(Duration::from_secs(5), "the upgrade's answer", async {
            Ok(stream.read(&mut byte).await?)
        })
        .await?;
        if read == 0 {
            bail!(
                "closed before answering: {}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if status != 101 {
        within(Duration::from_secs(5), "the refusal's body", async {
            Ok(stream.read_exact(&mut body).await?)
        })
        .await?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned(), stream))
}

/// The address clients connect from in this test.
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// The address of the trusted proxy in this test (`limits.trusted_proxies`).
const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// With `limits.max_connections_per_ip = 2`: a third upgrade from one address gets 429
/// `limit_exceeded`, after the Origin rule and before the token; `X-Forwarded-For` names the
/// client only when the peer is a trusted proxy; a closed connection frees its place.
#[tokio::test]
async fn the_per_address_cap_believes_forwarded_for_only_from_trusted_proxies() -> Result<()> {
    let gateway = Gateway::start(
        GatewayOptions::new()
            .anonymous()
            .set(
                "allowed_origins",
                serde_json::json!(["https://app.example.com"]),
            )
            .set("limits.max_connections_per_ip", 2)
            .set(
                "limits.trusted_proxies",
                serde_json::json!([PROXY.to_string()]),
            ),
    )
    .await?;
    let public = gateway.public();
    let origin = ("Origin", "https://app.example.com");
    let mut held = Vec::new();

    for n in 0..2 {
        let (status, body, socket) = upgrade_from(CLIENT, public, &[origin]).await?;
        ensure!(status == 101, "upgrade {n} from {CLIENT}: {status} {body}");
        held.push(socket);
    }
    let (status, body, _) = upgrade_from(CLIENT, public, &[origin]).await?;
    ensure!(
        status == 429 && body.contains("\"limit_exceeded\""),
        "a third upgrade from one address: {status} {body}"
    );
    let (status, body, _) = upgrade_from(
        CLIENT,
        public,
        &[origin, ("X-Forwarded-For", "203.0.113.9")],
    )
    .await?;
    ensure!(
        status == 429,
        "X-Forwarded-For from an untrusted peer was believed: {status} {body}"
    );
    let (status, body, _) =
        upgrade_from(CLIENT, public, &[("Origin", "https://evil.example.net")]).await?;
    ensure!(
        status == 403,
        "the Origin rule comes first: {status} {body}"
    );
    let (status, body, _) = upgrade_from(
        CLIENT,
        public,
        &[origin, ("Authorization", "Bearer not-a-token")],
    )
    .await?;
    ensure!(
        status == 429,
        "the cap comes before the token: {status} {body}"
    );

    for n in 0..2 {
        let (status, body, socket) = upgrade_from(
            PROXY,
            public,
            &[origin, ("X-Forwarded-For", "198.51.100.1, 203.0.113.7")],
        )
        .await?;
        ensure!(
            status == 101,
            "upgrade {n} through the proxy: {status} {body}"
        );
        held.push(socket);
    }
    let (status, body, _) =
        upgrade_from(PROXY, public, &[origin, ("X-Forwarded-For", "203.0.113.7")]).await?;
    ensure!(
        status == 429,
        "a third connection of 203.0.113.7 through the proxy: {status} {body}"
    );
    let (status, body, socket) =
        upgrade_from(PROXY, public, &[origin, ("X-Forwarded-For", "203.0.113.8")]).await?;
    ensure!(
        status == 101,
        "another client behind the proxy: {status} {body}"
    );
    held.push(socket);

    // Closing one of the client's connections frees its place.
    drop(held.remove(0));
    eventually(
        Duration::from_secs(10),
        "a closed connection frees its place",
        || async {
            let (status, _, socket) = upgrade_from(CLIENT, public, &[origin]).await?;
            Ok((status == 101).then_some(socket))
        },
    )
    .await?;
    Ok(())
}
