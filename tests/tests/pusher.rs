//! Pusher Channels compatibility with the real libraries: pusher-js 8 clients,
//! Laravel Echo, and the official server SDKs (npm `pusher`, PyPI `pusher`) against two
//! `wsgate` processes sharing one nats-server (docs/pusher.md).
//!
//! The cases themselves are in `tests/pusher/suite.mjs` (Node), which calls
//! `tests/pusher/sdk.py` for the Python SDK; this suite starts the processes,
//! runs it, and fails with its output. `tests/run` installs the packages
//! (`npm ci --prefix tests/pusher`, `pip install pusher`), pinned.
//!
//! Run serially: `cargo test -p wsgate-tests --test pusher -- --test-threads=1`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use wsgate_tests::http::Request;
use wsgate_tests::{Gateway, GatewayOptions, NatsOptions, NatsServer, TempDir};

/// The app every gateway of this suite serves.
const APP_ID: &str = "1001";
const APP_KEY: &str = "app-key";
const APP_SECRET: &str = "app-secret-7ad3773142a6692b25b8";

/// How long the whole Node suite may take.
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

fn pusher_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pusher")
}

/// The second app, with small limits: one connection per gateway, two
/// client events per second, one presence member.
const SMALL_ID: &str = "1002";
const SMALL_KEY: &str = "small-key";

/// A gateway on `nats` serving both apps, their secrets in `secrets`.
fn options(node: &str, nats: &NatsServer, secrets: &TempDir) -> Result<GatewayOptions> {
    let secret = secrets.path().join(APP_ID);
    std::fs::write(&secret, format!("{APP_SECRET}\n"))?;
    Ok(GatewayOptions::new()
        .node(node)
        .nats(nats)
        .raw_toml(&format!(
            "[pusher]\n[[pusher.apps]]\nid = \"{APP_ID}\"\nkey = \"{APP_KEY}\"\nsecret_file = {secret:?}\n\
             [[pusher.apps]]\nid = \"{SMALL_ID}\"\nkey = \"{SMALL_KEY}\"\nsecret_file = {secret:?}\n\
             max_connections = 1\nmax_client_events_per_second = 2\nmax_presence_members = 1\n",
            secret = secret.display().to_string()
        )))
}

/// pusher-js and both server SDKs pass every case of `suite.mjs` against two
/// replicas: public, private and presence channels, client events, exclusion
/// by socket id, batches in order, channel info and users, a bad signature,
/// an unknown key, one user on two replicas, encrypted channels relayed, the
/// limits of an app (4004, 4301, `max_presence_members`), sign-in with
/// `sendToUser` and `terminate_connections`, cache channels of every kind
/// (their last event kept in JetStream, served on the other replica, and
/// `pusher:cache_miss`), one user joining a presence channel twice at once
/// announced once, a repeated presence subscribe answered with the members,
/// Laravel Echo, the command budget, the metric, and a drain's 4200.
#[tokio::test]
async fn pusher_js_and_the_server_sdks_work_against_two_replicas() -> Result<()> {
    let dir = pusher_dir();
    ensure!(
        dir.join("node_modules/pusher-js").is_dir() && dir.join("node_modules/pusher").is_dir(),
        "the npm packages are missing: run `npm ci --prefix tests/pusher` (tests/run does)"
    );
    // JetStream keeps cache channels' last events.
    let nats = NatsServer::start_with(NatsOptions { jetstream: true }).await?;
    let secrets = TempDir::new("pusher-secrets")?;
    let a = Gateway::start(options("gw-a", &nats, &secrets)?).await?;
    let b = Gateway::start(options("gw-b", &nats, &secrets)?).await?;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("suite.mjs"))
        .current_dir(&dir)
        .env("GATEWAY_A", a.public().to_string())
        .env("GATEWAY_A_PID", a.pid().to_string())
        .env("GATEWAY_B", b.public().to_string())
        .env("ADMIN_A", a.admin().to_string())
        .env("ADMIN_B", b.admin().to_string())
        .env("PUSHER_APP_ID", APP_ID)
        .env("PUSHER_KEY", APP_KEY)
        .env("PUSHER_SECRET", APP_SECRET)
        .env("SMALL_APP_ID", SMALL_ID)
        .env("SMALL_KEY", SMALL_KEY)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SUITE_TIMEOUT, command.output())
        .await
        .context("the Node suite timed out")?
        .context("node could not be started")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    if !output.status.success() {
        bail!(
            "the Node suite failed ({})\n{stdout}\n{stderr}",
            output.status
        );
    }
    ensure!(!stdout.contains("FAILED"), "{stdout}");
    Ok(())
}

/// Without `[pusher]` nothing Pusher is served: neither `/app/{key}` nor the
/// HTTP API.
#[tokio::test]
async fn without_a_pusher_section_nothing_is_served() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions::new()).await?;
    let upgrade = Request::get("/app/app-key?protocol=7")
        .send(gateway.public())
        .await?;
    ensure!(upgrade.status == 404, "{}", upgrade.status);
    let api = Request::post("/apps/1001/events")
        .send(gateway.admin())
        .await?;
    ensure!(api.status == 404, "{}", api.status);
    Ok(())
}

/// An app whose secret file cannot be read stops the gateway at startup,
/// naming the file.
#[tokio::test]
async fn an_unreadable_secret_file_stops_the_gateway() -> Result<()> {
    let options = GatewayOptions::new().raw_toml(
        "[pusher]\n[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret_file = \"/nonexistent/pusher/1\"\n",
    );
    let exited = options.run_to_exit(Duration::from_secs(10)).await?;
    let output = [exited.stdout.join("\n"), exited.stderr.join("\n")].join("\n");
    ensure!(!exited.status.success(), "{output}");
    ensure!(output.contains("/nonexistent/pusher/1"), "{output}");
    Ok(())
}

/// A Pusher client speaking the protocol by hand, for what pusher-js does not
/// show: every frame, in order.
struct RawClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawClient {
    /// Connects to `gateway` and reads `pusher:connection_established`.
    async fn connect(gateway: &Gateway) -> Result<Self> {
        let url = format!("ws://{}/app/{APP_KEY}?protocol=7", gateway.public());
        let (socket, _) = tokio_tungstenite::connect_async(&url).await?;
        let mut client = Self { socket };
        let established = client.next().await?;
        ensure!(
            established["event"] == "pusher:connection_established",
            "{established}"
        );
        Ok(client)
    }

    /// The next frame, as JSON.
    async fn next(&mut self) -> Result<serde_json::Value> {
        use futures::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .context("no frame in time")?
                .context("closed")??;
            if let Message::Text(text) = frame {
                return Ok(serde_json::from_str(&text)?);
            }
        }
    }

    /// Subscribes to a public channel; returns the answer,
    /// `subscription_succeeded`.
    async fn subscribe(&mut self, channel: &str) -> Result<serde_json::Value> {
        use futures::SinkExt as _;
        let frame = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::text(
                frame.to_string(),
            ))
            .await?;
        let answer = self.next().await?;
        ensure!(
            answer["event"] == "pusher_internal:subscription_succeeded"
                && answer["channel"] == channel,
            "{answer}"
        );
        Ok(answer)
    }
}

/// The PyPI SDK's trigger through `admin`, as `sdk.py` prints its answer.
async fn python_trigger(
    admin: std::net::SocketAddr,
    channel: &str,
    data: &str,
) -> Result<serde_json::Value> {
    let output = tokio::process::Command::new("python3")
        .arg(pusher_dir().join("sdk.py"))
        .args(["trigger", channel, "state", data])
        .env("PUSHER_APP_ID", APP_ID)
        .env("PUSHER_KEY", APP_KEY)
        .env("PUSHER_SECRET", APP_SECRET)
        .env("PUSHER_HOST", admin.ip().to_string())
        .env("PUSHER_PORT", admin.port().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("python3 could not be started")?;
    ensure!(
        output.status.success(),
        "sdk.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// A single gateway without NATS keeps a cache channel's last event in its
/// memory: triggered through the PyPI SDK, it is the frame right after
/// `subscription_succeeded`; a channel with none answers `pusher:cache_miss`.
#[tokio::test]
async fn a_single_node_keeps_cache_channels_last_events() -> Result<()> {
    let secrets = TempDir::new("pusher-secrets")?;
    let secret = secrets.path().join(APP_ID);
    std::fs::write(&secret, format!("{APP_SECRET}\n"))?;
    let gateway = Gateway::start(GatewayOptions::new().raw_toml(&format!(
        "[pusher]\n[[pusher.apps]]\nid = \"{APP_ID}\"\nkey = \"{APP_KEY}\"\nsecret_file = {:?}\n",
        secret.display().to_string()
    )))
    .await?;
    let answer = python_trigger(gateway.admin(), "cache-single", r#"{"n":1}"#).await?;
    ensure!(answer == serde_json::json!({}), "{answer}");
    python_trigger(gateway.admin(), "cache-single", r#"{"n":2}"#).await?;
    let mut client = RawClient::connect(&gateway).await?;
    client.subscribe("cache-single").await?;
    let kept = client.next().await?;
    ensure!(
        kept["event"] == "state" && kept["channel"] == "cache-single",
        "{kept}"
    );
    // The SDK sends `data` as a string of JSON, relayed as it came.
    let data: serde_json::Value = serde_json::from_str(kept["data"].as_str().unwrap_or_default())?;
    ensure!(data == serde_json::json!({"n": 2}), "the last one: {kept}");
    client.subscribe("cache-empty").await?;
    let missed = client.next().await?;
    ensure!(
        missed == serde_json::json!({"event": "pusher:cache_miss", "channel": "cache-empty"}),
        "{missed}"
    );
    Ok(())
}

/// Cache channels need JetStream in a cluster: without it, a trigger on one
/// is refused with 503 (the event neither kept nor published), its
/// subscribers get `pusher:cache_miss`, and other channels work as before.
#[tokio::test]
async fn without_jetstream_cache_channels_refuse_triggers_and_miss() -> Result<()> {
    let nats = NatsServer::start().await?;
    let secrets = TempDir::new("pusher-secrets")?;
    let gateway = Gateway::start(options("gw-nojs", &nats, &secrets)?).await?;
    let refused = python_trigger(gateway.admin(), "cache-x", "1").await?;
    ensure!(refused["status"] == 503, "{refused}");
    let mut client = RawClient::connect(&gateway).await?;
    client.subscribe("cache-x").await?;
    let missed = client.next().await?;
    ensure!(missed["event"] == "pusher:cache_miss", "{missed}");
    client.subscribe("plain").await?;
    let answer = python_trigger(gateway.admin(), "plain", "1").await?;
    ensure!(answer == serde_json::json!({}), "{answer}");
    let event = client.next().await?;
    ensure!(
        event["event"] == "state" && event["channel"] == "plain",
        "{event}"
    );
    Ok(())
}

/// The `protocol` query parameter is checked after the upgrade, as pusher-js
/// needs: missing gets `pusher:error` 4008 and close 4008, an unsupported
/// version 4007, and 7 the connection.
#[tokio::test]
async fn the_protocol_version_is_checked() -> Result<()> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;

    let nats = NatsServer::start().await?;
    let secrets = TempDir::new("pusher-secrets")?;
    let gateway = Gateway::start(options("gw-p", &nats, &secrets)?).await?;
    for (query, code) in [
        ("", Some(4008)),
        ("?protocol=3", Some(4007)),
        ("?protocol=7", None),
    ] {
        let url = format!("ws://{}/app/{APP_KEY}{query}", gateway.public());
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await?;
        let first = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .context("no first frame")?
            .context("closed before a frame")??;
        let Message::Text(text) = first else {
            bail!("{query}: {first:?}");
        };
        let frame: serde_json::Value = serde_json::from_str(&text)?;
        match code {
            Some(code) => {
                ensure!(frame["event"] == "pusher:error", "{query}: {frame}");
                ensure!(frame["data"]["code"] == code, "{query}: {frame}");
                let close = tokio::time::timeout(Duration::from_secs(5), socket.next())
                    .await
                    .context("no close")?
                    .context("ended without a close frame")??;
                let Message::Close(Some(close)) = close else {
                    bail!("{query}: {close:?}");
                };
                ensure!(u16::from(close.code) == code, "{query}: {close:?}");
            }
            None => {
                ensure!(frame["event"] == "pusher:connection_established", "{frame}");
            }
        }
    }
    Ok(())
}
