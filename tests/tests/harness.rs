//! The harness checked on its own: nats-server starts, answers its monitoring port,
//! shows subscriptions in `/subsz`, dies with its guard and comes back on the same port
//! after a kill; the NATS observer sees publishes; a gateway dies with its guard, also
//! when the test panics.

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use wsgate_tests::{Gateway, GatewayOptions, NatsServer, SOON, eventually, http, within};

/// A raw NATS client: CONNECT, SUB, then PING/PONG so the server has processed the SUB.
async fn raw_subscriber(port: u16, subject: &str) -> Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    ensure!(line.starts_with("INFO "), "expected INFO, got {line:?}");
    let hello = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"harness\"}}\r\nSUB {subject} 1\r\nPING\r\n"
    );
    stream.get_mut().write_all(hello.as_bytes()).await?;
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        ensure!(!line.is_empty(), "nats-server closed the connection");
        if line.starts_with("PONG") {
            return Ok(stream);
        }
        ensure!(!line.starts_with("-ERR"), "nats-server said {line:?}");
    }
}

/// nats-server starts on free ports, answers `/varz`, and stops when its guard drops.
#[tokio::test]
async fn nats_server_starts_answers_monitoring_and_stops_on_drop() -> Result<()> {
    let nats = NatsServer::start().await?;
    let varz = http::get(nats.monitor_addr(), "/varz").await?;
    ensure!(varz.status == 200, "/varz answered {}", varz.status);
    ensure!(
        varz.json()?["port"] == nats.port(),
        "varz names another port: {}",
        varz.text()
    );
    let port = nats.port();
    drop(nats);
    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    ensure!(
        refused.is_err(),
        "something still listens on {port} after the guard dropped"
    );
    Ok(())
}

/// `/subsz?subs=1` lists a subscription by subject while its client is connected, and
/// forgets it once the client goes away.
#[tokio::test]
async fn subsz_shows_a_room_subscription_until_its_client_leaves() -> Result<()> {
    let nats = NatsServer::start().await?;
    ensure!(
        nats.room_subscriptions("harness").await?.is_empty(),
        "room subscriptions at start"
    );
    let subscriber = within(
        SOON,
        "raw subscriber",
        raw_subscriber(nats.port(), "wsgate.harness.room.lobby"),
    )
    .await?;
    let subs = nats.room_subscriptions("harness").await?;
    ensure!(
        subs.len() == 1,
        "expected one room subscription, got {subs:?}"
    );
    ensure!(subs[0].subject == "wsgate.harness.room.lobby", "{subs:?}");
    ensure!(
        nats.room_subscriptions("other").await?.is_empty(),
        "another cluster sees it"
    );
    let connz = nats.connz().await?;
    let connection = connz
        .connections
        .iter()
        .find(|c| c.cid == subs[0].cid)
        .context("the subscription's connection is not in /connz")?;
    ensure!(
        connection.name.as_deref() == Some("harness"),
        "{connection:?}"
    );
    drop(subscriber);
    eventually(SOON, "subscription gone after disconnect", || async {
        Ok(nats
            .room_subscriptions("harness")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await
}

/// After `kill` nothing listens on the client port; `restart` brings the server back on
/// the same port, so gateways can reconnect to the URL they were given.
#[tokio::test]
async fn nats_server_comes_back_on_the_same_port_after_a_kill() -> Result<()> {
    let mut nats = NatsServer::start().await?;
    let url = nats.url();
    nats.kill();
    ensure!(!nats.is_running(), "still running after kill");
    ensure!(
        TcpStream::connect(("127.0.0.1", nats.port()))
            .await
            .is_err(),
        "port still open"
    );
    nats.restart().await?;
    ensure!(nats.is_running(), "not running after restart");
    ensure!(nats.url() == url, "the URL changed");
    let _subscriber = within(
        SOON,
        "subscriber after restart",
        raw_subscriber(nats.port(), "x.y"),
    )
    .await?;
    Ok(())
}

/// The JetStream option starts a server with JetStream enabled (for the history suites).
#[tokio::test]
async fn nats_server_with_jetstream_reports_it_enabled() -> Result<()> {
    let nats = NatsServer::start_with(wsgate_tests::NatsOptions { jetstream: true }).await?;
    let jsz = http::get(nats.monitor_addr(), "/jsz").await?;
    ensure!(
        jsz.status == 200,
        "/jsz answered {}: {}",
        jsz.status,
        jsz.text()
    );
    let varz = http::get(nats.monitor_addr(), "/varz").await?.json()?;
    ensure!(
        varz["jetstream"]["config"].is_object(),
        "JetStream not enabled: {varz}"
    );
    Ok(())
}

/// A `NatsObserver` sees what another client publishes on a matching subject, answers
/// the server's pings, and is left out of `room_subscriptions`.
#[tokio::test]
async fn an_observer_sees_publishes_and_is_not_a_room_subscription() -> Result<()> {
    let nats = NatsServer::start().await?;
    let mut observer = nats.observe("wsgate.harness.room.>").await?;
    ensure!(
        nats.room_subscriptions("harness").await?.is_empty(),
        "the observer was counted"
    );
    let mut publisher =
        within(SOON, "raw client", raw_subscriber(nats.port(), "unrelated")).await?;
    publisher
        .get_mut()
        .write_all(b"PUB wsgate.harness.room.lobby 5\r\nhello\r\nPUB elsewhere 1\r\nx\r\n")
        .await?;
    let message = observer
        .next_message(SOON)
        .await?
        .context("the observer saw nothing")?;
    ensure!(
        message.subject == "wsgate.harness.room.lobby",
        "{message:?}"
    );
    ensure!(message.payload == b"hello", "{message:?}");
    let rest = observer
        .drain(std::time::Duration::from_millis(300))
        .await?;
    ensure!(rest.is_empty(), "unexpected messages {rest:?}");
    Ok(())
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A gateway's guard stops and reaps its process on drop, also when the test that held
/// it panicked.
#[tokio::test]
async fn a_gateway_guard_stops_its_process_even_when_the_test_panics() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions::new().anonymous()).await?;
    let pid = gateway.pid();
    ensure!(process_exists(pid), "gateway {pid} not running");
    drop(gateway);
    ensure!(
        !process_exists(pid),
        "gateway {pid} still exists after drop"
    );

    let gateway = Gateway::start(GatewayOptions::new().anonymous()).await?;
    let pid = gateway.pid();
    let panicked = tokio::spawn(async move {
        let _held = gateway;
        panic!("a failing test");
    })
    .await;
    ensure!(
        panicked.is_err_and(|e| e.is_panic()),
        "the task did not panic"
    );
    ensure!(
        !process_exists(pid),
        "gateway {pid} survived a panicking test"
    );
    Ok(())
}
