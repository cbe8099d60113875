//! Faults (issue 8): a gateway SIGKILLed under load, nats-server stopped with SIGSTOP and
//! continued, a slow reader in a busy room, and thousands of connections dropped abruptly.
//!
//! Run serially: `cargo test -p wsgate-tests --test faults -- --test-threads=1 --nocapture`
//! (the figures are printed). `WSGATE_LONG=1` runs the long forms (more clients, longer
//! load, 10 rounds of connections).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use wsgate_tests::behaviour::{connect_user, options, unique_room, user_token};
use wsgate_tests::follower::{Controls, Follower, FollowerSpec, Publisher, Received, Tally};
use wsgate_tests::raw::{RawSocket, vm_rss_kib};
use wsgate_tests::{
    Client, ConnectOptions, Deployment, Gateway, GatewayOptions, REPLY_TIMEOUT, SIGKILL,
    TEST_API_KEY, error_code, eventually,
};

fn long() -> bool {
    std::env::var("WSGATE_LONG").is_ok_and(|v| v == "1")
}

/// A namespace `hist` with a large history, publish limits out of the way.
fn history_options() -> GatewayOptions {
    options()
        .set("namespaces.hist.history_size", 1_000_000)
        .set("namespaces.hist.recovery_max", 100_000)
        .set("limits.publish_rate", 100_000.0)
        .set("limits.publish_burst", 100_000)
        .set("limits.command_rate", 100_000.0)
        .set("limits.command_burst", 100_000)
}

/// One `nats-server -js` (file storage) and `replicas` gateways on it.
async fn cluster(replicas: usize, options: GatewayOptions) -> Result<Deployment> {
    Deployment::start_jetstream(replicas, options).await
}

/// Waits for every follower, aborting them at `deadline` after `finish_at`.
async fn finish(
    followers: Vec<Follower>,
    controls: &Controls,
    last: u64,
    deadline: Duration,
) -> Result<Vec<Received>> {
    controls.finish_at(last);
    let abort = controls.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(deadline).await;
        abort.abort();
    });
    let mut received = Vec::new();
    for follower in followers {
        received.push(follower.finish().await?);
    }
    timer.abort();
    Ok(received)
}

fn print_tally(what: &str, tally: &Tally, failed_publishes: usize) {
    println!(
        "{what}: followers {}, acknowledged {}, lost {}, duplicates {}, out of order {}, \
         unrecovered rejoins {}, gaps seen live {}, reconnects {}, peak reconnects/s {}, \
         publishes not acknowledged {failed_publishes}",
        tally.followers,
        tally.acked,
        tally.lost,
        tally.duplicates,
        tally.out_of_order,
        tally.unrecovered,
        tally.gaps_seen_live,
        tally.reconnects,
        tally.peak_reconnects_per_second,
    );
}

/// A SIGKILLed gateway under load: the clients of the other replicas keep their connections
/// and miss nothing; its clients reconnect to another replica and recover everything with
/// `since`. Every acknowledged message reaches every client exactly once after dedup by seq.
#[tokio::test]
async fn a_killed_gateways_clients_recover_elsewhere_and_the_others_are_unaffected() -> Result<()> {
    let mut deployment = cluster(3, history_options()).await?;
    let room = unique_room("hist:kill");
    let per_gateway = if long() { 100 } else { 10 };
    let controls = Controls::default();
    let mut followers = Vec::new();
    for i in 0..3 {
        for k in 0..per_gateway {
            let token = user_token(&format!("follower-{i}-{k}"));
            let urls = (0..3)
                .map(|j| deployment.gateway(j).ws_url_with_token(&token))
                .collect();
            let spec = FollowerSpec {
                urls,
                first: i,
                room: room.clone(),
                backoff: Duration::from_millis(50),
            };
            followers.push((i, Follower::start(spec, controls.clone()).await?));
        }
    }
    let targets = Arc::new(Mutex::new(vec![
        deployment.gateway(1).admin(),
        deployment.gateway(2).admin(),
    ]));
    let publisher = Publisher::start(
        targets,
        TEST_API_KEY.to_owned(),
        room.clone(),
        Duration::from_millis(10),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    deployment.gateway_mut(0).signal(SIGKILL)?;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(if long() { 20 } else { 3 })).await;
    let published = publisher.stop().await?;
    let last = *published.acked.last().context("nothing acknowledged")?;
    let (on_killed, others): (Vec<_>, Vec<_>) = followers.into_iter().partition(|(i, _)| *i == 0);
    let on_killed = finish(
        on_killed.into_iter().map(|(_, f)| f).collect(),
        &controls,
        last,
        Duration::from_secs(30),
    )
    .await?;
    let others = finish(
        others.into_iter().map(|(_, f)| f).collect(),
        &controls,
        last,
        Duration::from_secs(30),
    )
    .await?;
    let moved = Tally::of(&published.acked, &on_killed);
    let stayed = Tally::of(&published.acked, &others);
    print_tally("clients of the killed gateway", &moved, published.failed);
    print_tally("clients of the other gateways", &stayed, published.failed);
    let first_back = on_killed
        .iter()
        .filter_map(|r| r.reconnects.first())
        .map(|t| t.duration_since(killed))
        .max();
    println!("slowest first reconnect after the SIGKILL: {first_back:?}");
    ensure!(
        moved.is_lossless() && moved.duplicates == 0,
        "killed gateway's clients: {moved:?}"
    );
    ensure!(
        stayed.is_lossless() && stayed.duplicates == 0,
        "other clients: {stayed:?}"
    );
    ensure!(
        stayed.reconnects == 0,
        "clients of live gateways reconnected: {stayed:?}"
    );
    ensure!(
        on_killed.iter().all(|r| !r.reconnects.is_empty()),
        "a client of the killed gateway never reconnected"
    );
    ensure!(
        published.failed == 0,
        "{} publishes failed on live gateways",
        published.failed
    );
    Ok(())
}

/// nats-server (JetStream, file storage) SIGKILLed under load and started again: the
/// gateways refuse publishes meanwhile and resume without a restart; clients stay connected,
/// notice any gap live, rejoin with `since`, and end up holding every acknowledged message.
#[tokio::test]
async fn a_killed_nats_loses_no_acknowledged_message() -> Result<()> {
    let mut deployment = cluster(2, history_options()).await?;
    let room = unique_room("hist:natskill");
    let controls = Controls::default();
    let mut followers = Vec::new();
    for i in 0..2 {
        for k in 0..(if long() { 100 } else { 10 }) {
            let token = user_token(&format!("follower-{i}-{k}"));
            let spec = FollowerSpec {
                urls: vec![deployment.gateway(i).ws_url_with_token(&token)],
                first: 0,
                room: room.clone(),
                backoff: Duration::from_millis(50),
            };
            followers.push(Follower::start(spec, controls.clone()).await?);
        }
    }
    let targets = Arc::new(Mutex::new(vec![
        deployment.gateway(0).admin(),
        deployment.gateway(1).admin(),
    ]));
    let publisher = Publisher::start(
        targets,
        TEST_API_KEY.to_owned(),
        room.clone(),
        Duration::from_millis(10),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    deployment.nats_mut().kill();
    let killed = Instant::now();
    for i in 0..2 {
        deployment
            .gateway(i)
            .await_readyz(503, Duration::from_secs(10))
            .await?;
    }
    let unready_after = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    deployment.nats_mut().restart().await?;
    let restarted = Instant::now();
    for i in 0..2 {
        deployment
            .gateway(i)
            .await_readyz(200, Duration::from_secs(30))
            .await?;
    }
    let ready_after = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let published = publisher.stop().await?;
    let last = *published.acked.last().context("nothing acknowledged")?;
    let received = finish(followers, &controls, last, Duration::from_secs(30)).await?;
    let tally = Tally::of(&published.acked, &received);
    println!(
        "NATS killed: unready after {unready_after:?}, ready {ready_after:?} after the restart"
    );
    print_tally("NATS killed and restarted", &tally, published.failed);
    ensure!(tally.is_lossless(), "{tally:?}");
    ensure!(
        published.failed > 0,
        "no publish was refused while NATS was down"
    );
    ensure!(
        tally.reconnects == 0,
        "clients were disconnected: {tally:?}"
    );
    Ok(())
}

/// The pid of the nats-server listening on `port` (read from /proc: the harness does not
/// hand it out).
fn nats_pid(port: u16) -> Result<u32> {
    let wanted = port.to_string();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_nats = args
            .first()
            .is_some_and(|a| String::from_utf8_lossy(a).ends_with("nats-server"));
        if is_nats
            && args
                .windows(2)
                .any(|w| w[0] == b"-p" && w[1] == wanted.as_bytes())
        {
            return Ok(pid);
        }
    }
    bail!("no nats-server with -p {port}")
}

/// SIGSTOP on a process, undone (SIGCONT) on drop so that a failing test leaves nothing
/// stopped behind.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Result<Self> {
        // SAFETY: kill(2) with a pid we found and a valid signal.
        ensure!(
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) } == 0,
            "SIGSTOP failed"
        );
        Ok(Self(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGCONT);
        }
    }
}

/// nats-server frozen (SIGSTOP) and thawed (SIGCONT): the gateways report unready within a
/// few `nats.ping_interval_ms` (500 ms here), refuse publishes with `unavailable` (never a
/// false `ok`), and are ready again after SIGCONT without a restart; every message
/// acknowledged before, during or after is in the room's history.
#[tokio::test]
async fn a_frozen_nats_makes_gateways_unready_and_refuse_publishes_until_it_thaws() -> Result<()> {
    let ping_ms = 500u64;
    let deployment = cluster(2, history_options().set("nats.ping_interval_ms", ping_ms)).await?;
    let room = unique_room("hist:frozen");
    let mut client = connect_user(&deployment, 0, "writer").await?;
    let join = client.call(json!({"op": "join", "room": room})).await?;
    let epoch = join["epoch"].as_str().context("no epoch")?.to_owned();
    let mut acked = Vec::new();
    for n in 0..20 {
        let reply = client.publish(&room, json!({"before": n})).await?;
        acked.push(reply["seq"].as_u64().context("no seq")?);
    }

    let pid = nats_pid(deployment.nats().port())?;
    let stopped = Stopped::new(pid)?;
    let frozen = Instant::now();
    for i in 0..2 {
        deployment
            .gateway(i)
            .await_readyz(503, Duration::from_secs(10))
            .await?;
    }
    let unready_after = frozen.elapsed();
    // Publishes are refused, by the WebSocket op and the API.
    let mut refused = 0;
    for n in 0..5 {
        let reply = client
            .call_within(
                json!({"op": "publish", "room": room, "data": {"frozen": n}}),
                REPLY_TIMEOUT,
            )
            .await?;
        match reply["seq"].as_u64() {
            Some(seq) => bail!("publish acknowledged (seq {seq}) while NATS is frozen: {reply}"),
            None => {
                ensure!(error_code(&reply) == Some("unavailable"), "{reply}");
                refused += 1;
            }
        }
    }
    let api = deployment
        .gateway(1)
        .api_post(
            "/api/v1/publish",
            Some(TEST_API_KEY),
            &json!({"room": room, "data": "frozen"}),
        )
        .await?;
    ensure!(
        api.status == 503,
        "API publish while frozen: {} {}",
        api.status,
        api.text()
    );

    drop(stopped);
    let thawed = Instant::now();
    for i in 0..2 {
        deployment
            .gateway(i)
            .await_readyz(200, Duration::from_secs(30))
            .await?;
    }
    let ready_after = thawed.elapsed();
    let resumed = Instant::now();
    let seq = loop {
        let reply = client
            .call(json!({"op": "publish", "room": room, "data": "after"}))
            .await?;
        if let Some(seq) = reply["seq"].as_u64() {
            break seq;
        }
        ensure!(
            resumed.elapsed() < Duration::from_secs(30),
            "publish still refused: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    acked.push(seq);
    for n in 0..20 {
        let reply = client.publish(&room, json!({"after": n})).await?;
        acked.push(reply["seq"].as_u64().context("no seq")?);
    }
    println!(
        "NATS frozen: unready after {unready_after:?} (ping interval {ping_ms} ms), \
         {refused} publishes refused with unavailable, ready again {ready_after:?} after SIGCONT"
    );
    ensure!(
        unready_after <= Duration::from_millis(ping_ms * 6 + 1000),
        "unready only after {unready_after:?}"
    );

    // Nothing acknowledged is lost, and the epoch did not change.
    let mut reader = connect_user(&deployment, 1, "reader").await?;
    let reply = reader
        .call(json!({"op": "join", "room": room, "since": {"epoch": epoch, "seq": 0}}))
        .await?;
    ensure!(reply["epoch"] == epoch.as_str(), "epoch changed: {reply}");
    let held: Vec<u64> = reply["missed"]
        .as_array()
        .context("no missed")?
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    let lost: Vec<&u64> = acked.iter().filter(|s| !held.contains(s)).collect();
    ensure!(lost.is_empty(), "acknowledged messages lost: {lost:?}");
    Ok(())
}

/// A client that stops reading (16 KiB messages, more than socket buffers hold) is cut off
/// with 1013 when its queue fills; the room's other member receives every message, in
/// order, meanwhile.
#[tokio::test]
async fn a_slow_reader_never_stalls_its_room() -> Result<()> {
    let gateway = Gateway::start(
        options()
            .set("limits.send_queue", 64)
            .set("limits.max_message_bytes", 65_536),
    )
    .await?;
    let room = unique_room("slow");
    let slow_url = gateway.ws_url_with_token(&user_token("slow"));
    let mut slow = Client::connect_opts(&slow_url, ConnectOptions::default().recv_buffer(4096))
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    slow.welcome().await?;
    slow.join(&room).await?;
    let mut fast = Client::connect_token(&gateway.ws_url(), &user_token("fast")).await?;
    fast.join(&room).await?;

    let count = if long() { 20_000 } else { 2_000 };
    let payload = "x".repeat(16 * 1024);
    let started = Instant::now();
    let admin = gateway.admin();
    let room_for_publisher = room.clone();
    let publisher = tokio::spawn(async move {
        for n in 0..count {
            let request = wsgate_tests::http::Request::post("/api/v1/publish")
                .bearer(TEST_API_KEY)
                .json(&json!({"room": room_for_publisher, "data": {"n": n, "pad": payload}}));
            let response = request.send(admin).await?;
            ensure!(response.status == 200, "publish {n}: {}", response.status);
        }
        Ok::<_, anyhow::Error>(())
    });
    let mut next = 0u64;
    while next < count {
        let message = fast.next_message(&room, Duration::from_secs(10)).await?;
        ensure!(
            message["data"]["n"] == next,
            "fast reader got {} for {next}",
            message["data"]["n"]
        );
        next += 1;
    }
    publisher.await??;
    let elapsed = started.elapsed();
    let code = slow.raw_close_code(Duration::from_secs(10)).await?;
    println!("slow reader closed with {code}; the fast reader got {count} messages in {elapsed:?}");
    ensure!(code == 1013, "slow reader closed with {code}");
    Ok(())
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Connections opened and dropped abruptly (TCP reset, no close frame), in rounds of 2,000
/// (10,000 in all; 20,000 with `WSGATE_LONG=1`): after each round the `wsgate_connections`
/// gauge returns to 0, and the resident memory after the last round is within 16 MiB of its
/// level after the first (no per-connection leak).
#[tokio::test]
async fn ten_thousand_connections_dropped_abruptly_leak_no_memory_or_tasks() -> Result<()> {
    let gateway = Gateway::start(GatewayOptions::new().anonymous()).await?;
    let pid = gateway.pid();
    let rounds = if long() { 10 } else { 5 };
    let per_round = 2_000;
    let mut after_round = Vec::new();
    let start_rss = vm_rss_kib(pid)?;
    for round in 0..rounds {
        let mut sockets = Vec::with_capacity(per_round);
        for chunk in 0..per_round / 200 {
            let opened = futures::future::try_join_all((0..200).map(|_| async {
                let mut socket = RawSocket::connect(gateway.public(), "/ws").await?;
                socket.next_text(Duration::from_secs(10)).await?;
                Ok::<_, anyhow::Error>(socket)
            }))
            .await
            .with_context(|| format!("round {round}, chunk {chunk}"))?;
            sockets.extend(opened);
        }
        let metrics = gateway.metrics().await?;
        let open = gauge(&metrics, "wsgate_connections").context("no wsgate_connections gauge")?;
        ensure!(open >= per_round as f64, "only {open} connections counted");
        let peak = vm_rss_kib(pid)?;
        for socket in sockets {
            socket.abort();
        }
        eventually(
            Duration::from_secs(20),
            "wsgate_connections back to 0",
            || async {
                let metrics = gateway.metrics().await?;
                Ok((gauge(&metrics, "wsgate_connections") == Some(0.0)).then_some(()))
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss = vm_rss_kib(pid)?;
        println!("round {round}: {per_round} connections, VmRSS peak {peak} KiB, after {rss} KiB");
        after_round.push(rss);
    }
    let first = after_round[0];
    let last = *after_round.last().expect("rounds");
    println!(
        "VmRSS: {start_rss} KiB at start, {first} KiB after round 0, {last} KiB after round {}",
        rounds - 1
    );
    ensure!(
        last <= first + 16 * 1024,
        "resident memory grew from {first} KiB to {last} KiB over {rounds} rounds"
    );
    Ok(())
}
