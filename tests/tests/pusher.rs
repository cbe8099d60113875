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
