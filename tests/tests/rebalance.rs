//! Rebalancing after a scale-out (issue 16): gateways behind nginx (Debian's, configured as
//! ingress-nginx is: retry on another upstream on errors, 502 and 503, no passive failure
//! marking), clients following docs/protocol.md's reconnect-and-recover rules in a namespace
//! with history, a backend publishing through the API throughout. A node above the fleet's
//! mean load sheds down to the mean (`reconnect`, then 1012) and refuses upgrades meanwhile,
//! so nginx sends the moved clients to the idle node.
//!
//! Heartbeats every 250 ms, shedding at up to 100 connections a second spread over 2 s, so
//! the tests take about a minute and a half together.
//!
//! Run: `cargo test -p wsgate-tests --test rebalance -- --test-threads=1 --nocapture`.
//! Needs nginx (`apt-get install nginx`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use wsgate_tests::behaviour::{options, unique_room};
use wsgate_tests::follower::{Controls, Follower, Publisher, Received, Tally};
use wsgate_tests::nginx::Nginx;
use wsgate_tests::{Gateway, GatewayOptions, NatsOptions, NatsServer, SIGKILL, TEST_API_KEY};

/// The registry's heartbeat interval in these tests.
const HEARTBEAT_MS: u64 = 250;

/// Gateway options for a fleet that rebalances quickly: short heartbeats, a fast shedding
/// rate, and `min_age` as each test needs it.
fn fleet_options(min_age: Duration) -> GatewayOptions {
    options()
        .set("namespaces.hist.history_size", 1_000_000)
        .set("namespaces.hist.recovery_max", 100_000)
        .set("limits.publish_rate", 100_000.0)
        .set("limits.publish_burst", 100_000)
        .set("limits.command_rate", 100_000.0)
        .set("limits.command_burst", 100_000)
        .set("limits.max_connections_per_user", 100_000)
        .set("limits.max_connections", 1000)
        .set("nats.node_heartbeat_ms", HEARTBEAT_MS)
        .set("rebalance.spread_ms", 2000)
        .set("rebalance.max_per_second", 100)
        .set("rebalance.min_age_ms", min_age.as_millis() as u64)
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

/// Each gateway's open connections and connections shed so far.
async fn counts(gateways: &[Gateway]) -> Result<Vec<(u64, u64)>> {
    let mut counts = Vec::with_capacity(gateways.len());
    for gateway in gateways {
        let metrics = gateway.metrics().await?;
        counts.push((
            metric_sum(&metrics, "wsgate_connections") as u64,
            metric_sum(&metrics, "wsgate_rebalance_shed_total") as u64,
        ));
    }
    Ok(counts)
}

/// `reconnect` events each follower received before `end`.
fn events_before(received: &[Received], end: Instant) -> Vec<usize> {
    received
        .iter()
        .map(|r| {
            r.reconnect_event_times
                .iter()
                .filter(|at| **at < end)
                .count()
        })
        .collect()
}

/// Connections shed by every gateway together.
fn shed(counts: &[(u64, u64)]) -> u64 {
    counts.iter().map(|(_, shed)| shed).sum()
}

/// Whether every gateway holds `per_node` ± 20% and all `clients` are connected.
fn balanced(counts: &[(u64, u64)], clients: usize) -> bool {
    let per_node = clients as f64 / counts.len() as f64;
    let total: u64 = counts.iter().map(|(connections, _)| connections).sum();
    total == clients as u64
        && counts.iter().all(|(connections, _)| {
            (*connections as f64) >= per_node * 0.8 && (*connections as f64) <= per_node * 1.2
        })
}

/// Polls the gateways' counts every 100 ms until `done` holds them, or `within` passes.
async fn await_counts(
    gateways: &[Gateway],
    within: Duration,
    what: &str,
    done: impl Fn(&[(u64, u64)]) -> bool,
) -> Result<Vec<(u64, u64)>> {
    let deadline = Instant::now() + within;
    loop {
        let now = counts(gateways).await?;
        if done(&now) {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            bail!("{what} not within {within:?}: (connections, shed) per gateway {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops publishing, lets every follower catch up to the last acknowledged seq (30 s at
/// most), and compares. Followers that finish leave their gateway, so the fleet may
/// rebalance meanwhile: count what happened before with [`events_before`].
async fn finish(
    publisher: Publisher,
    followers: Vec<Follower>,
    controls: &Controls,
) -> Result<(Tally, Vec<Received>, usize)> {
    let published = publisher.stop().await?;
    let last = *published.acked.last().context("nothing acknowledged")?;
    controls.finish_at(last);
    let abort = controls.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        abort.abort();
    });
    let mut received = Vec::with_capacity(followers.len());
    for follower in followers {
        received.push(follower.finish().await?);
    }
    timer.abort();
    Ok((
        Tally::of(&published.acked, &received),
        received,
        published.failed,
    ))
}

/// Gateway A holds 400 clients; B starts. Within 60 s both hold 200 ± 20%; every client
/// holds every acknowledged message exactly once after dedup by seq; no client moved twice;
/// the connections shed are at most 1.5 × the 200 needed; nothing more is shed for 30 s
/// after convergence.
///
/// `rebalance.min_age_ms` is 12 s: below the 13 s the test waits after the last client
/// joined before starting B (so every client may be shed), and above the time the fleet
/// takes to converge (asserted under 10 s), so that no client can be moved twice.
#[tokio::test]
async fn a_scale_out_moves_the_excess_to_the_new_gateway_and_loses_nothing() -> Result<()> {
    const CLIENTS: usize = 400;
    let min_age = Duration::from_secs(12);
    let wait_before_b = Duration::from_secs(13);
    let options = fleet_options(min_age);
    let nats = NatsServer::start_with(NatsOptions { jetstream: true }).await?;
    let mut gateways = vec![Gateway::start(options.clone().node("gw-a").nats(&nats)).await?];
    let mut nginx = Nginx::start(&[gateways[0].public()]).await?;

    let room = unique_room("hist:rebalance");
    let controls = Controls::default();
    let started = Instant::now();
    let followers = Follower::start_many(&nginx.ws_url(), &room, CLIENTS, &controls).await?;
    let joined = Instant::now();
    println!(
        "{CLIENTS} clients joined gw-a through nginx in {:?}",
        joined - started
    );
    let targets = Arc::new(Mutex::new(vec![gateways[0].admin()]));
    let publisher = Publisher::start(
        targets.clone(),
        TEST_API_KEY.to_owned(),
        room.clone(),
        Duration::from_millis(20),
    );
    let before = counts(&gateways).await?;
    ensure!(
        before == [(CLIENTS as u64, 0)],
        "before the scale-out: {before:?}"
    );

    tokio::time::sleep_until((joined + wait_before_b).into()).await;
    gateways.push(Gateway::start(options.clone().node("gw-b").nats(&nats)).await?);
    let scaled = Instant::now();
    nginx.set_upstreams(&[gateways[0].public(), gateways[1].public()])?;
    targets.lock().expect("targets").push(gateways[1].admin());

    let converged = await_counts(&gateways, Duration::from_secs(60), "200 ± 20% each", |c| {
        balanced(c, CLIENTS)
    })
    .await?;
    let convergence = scaled.elapsed();
    println!("converged {convergence:?} after gw-b started: (connections, shed) {converged:?}");
    ensure!(
        convergence < min_age - Duration::from_secs(2),
        "convergence took {convergence:?}, too close to rebalance.min_age_ms ({min_age:?})"
    );

    // Nothing more is shed for 30 s, and the balance holds.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = counts(&gateways).await?;
    println!("30 s later: (connections, shed) {after:?}");
    ensure!(
        shed(&after) == shed(&converged),
        "shed after convergence: {converged:?} then {after:?}"
    );
    ensure!(balanced(&after, CLIENTS), "balance lost: {after:?}");
    ensure!(after[1].1 == 0, "the new gateway shed: {after:?}");

    let end = Instant::now();
    let (tally, received, failed) = finish(publisher, followers, &controls).await?;
    let log = nginx.access_log()?;
    let needed = (CLIENTS / 2) as u64;
    let events = events_before(&received, end);
    let moved_twice = events.iter().filter(|n| **n > 1).count();
    let reconnect_events: usize = events.iter().sum();
    let dropped = received
        .iter()
        .filter(|r| r.reconnects.len() > r.reconnect_events)
        .count();
    println!(
        "scale-out 1 → 2: clients {}, acknowledged {}, publishes not acknowledged {failed}, \
         messages lost {}, duplicates delivered {}, out of order {}, unrecovered rejoins {}, \
         connections shed {} (minimum needed {needed}), reconnect events {}, clients moved \
         twice {moved_twice}, convergence {:.1} s (rebalance.min_age_ms {} ms, gw-b started \
         {} ms after the last join), proxy requests {}, 5xx at the proxy {}, upstream attempts \
         retried {}",
        tally.followers,
        tally.acked,
        tally.lost,
        tally.duplicates,
        tally.out_of_order,
        tally.unrecovered,
        shed(&after),
        reconnect_events,
        convergence.as_secs_f64(),
        min_age.as_millis(),
        wait_before_b.as_millis(),
        log.requests,
        log.server_errors,
        log.retried,
    );
    ensure!(tally.is_lossless(), "not lossless: {tally:?}");
    ensure!(moved_twice == 0, "{moved_twice} clients moved twice");
    ensure!(
        dropped == 0,
        "{dropped} clients lost their connection unasked"
    );
    ensure!(
        shed(&after) * 2 <= needed * 3,
        "shed {} connections, more than 1.5 × the {needed} needed",
        shed(&after)
    );
    ensure!(
        reconnect_events as u64 == shed(&after),
        "{reconnect_events} reconnect events for {} connections shed",
        shed(&after)
    );
    Ok(())
}

/// Three gateways; one is SIGKILLed. The two survivors absorb its clients without shedding
/// to each other; when it returns, the fleet converges again to 100 ± 20% each, and no
/// acknowledged message is lost.
///
/// `rebalance.min_age_ms` is 10 s: the gateway is killed 7.5 s after the last client joined
/// and returns 10.5 s after it, so the clients that never moved may be shed, while those that
/// moved at the kill are too young until 17.5 s, 7 s after the return: the fleet converges
/// well before (asserted under 6.5 s).
#[tokio::test]
async fn survivors_absorb_a_killed_gateway_without_shedding_and_rebalance_when_it_returns()
-> Result<()> {
    const CLIENTS: usize = 300;
    let min_age = Duration::from_secs(10);
    let options = fleet_options(min_age);
    let nats = NatsServer::start_with(NatsOptions { jetstream: true }).await?;
    let starts =
        (0..3).map(|i| Gateway::start(options.clone().node(format!("gw-{i}")).nats(&nats)));
    let mut gateways = futures::future::try_join_all(starts).await?;
    let publics = |gateways: &[Gateway]| gateways.iter().map(Gateway::public).collect::<Vec<_>>();
    let mut nginx = Nginx::start(&publics(&gateways)).await?;

    let room = unique_room("hist:absorb");
    let controls = Controls::default();
    let followers = Follower::start_many(&nginx.ws_url(), &room, CLIENTS, &controls).await?;
    let joined = Instant::now();
    let spread = await_counts(&gateways, Duration::from_secs(10), "clients spread", |c| {
        balanced(c, CLIENTS)
    })
    .await?;
    println!("{CLIENTS} clients over three gateways: (connections, shed) {spread:?}");
    let survivors = vec![gateways[0].admin(), gateways[1].admin()];
    let publisher = Publisher::start(
        Arc::new(Mutex::new(survivors)),
        TEST_API_KEY.to_owned(),
        room.clone(),
        Duration::from_millis(20),
    );

    tokio::time::sleep_until((joined + Duration::from_millis(7500)).into()).await;
    gateways[2].signal(SIGKILL)?;
    // The endpoint goes away, as Kubernetes removes a dead pod's.
    nginx.set_upstreams(&publics(&gateways[..2]))?;
    let absorbed = await_counts(
        &gateways[..2],
        Duration::from_secs(10),
        "the killed gateway's clients absorbed",
        |c| c.iter().map(|(n, _)| n).sum::<u64>() == CLIENTS as u64,
    )
    .await?;
    println!("absorbed by the survivors: (connections, shed) {absorbed:?}");
    // Past the killed node's expiry (three heartbeats): the survivors judge each other.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = counts(&gateways[..2]).await?;
    ensure!(
        shed(&held) == 0,
        "the survivors shed to each other: {held:?}"
    );

    tokio::time::sleep_until((joined + Duration::from_millis(10_500)).into()).await;
    let held = counts(&gateways[..2]).await?;
    ensure!(
        shed(&held) == 0,
        "the survivors shed to each other: {held:?}"
    );
    gateways[2] = Gateway::start(gateways[2].options().clone()).await?;
    let returned = Instant::now();
    nginx.set_upstreams(&publics(&gateways))?;
    let converged = await_counts(&gateways, Duration::from_secs(60), "100 ± 20% each", |c| {
        balanced(c, CLIENTS)
    })
    .await?;
    let convergence = returned.elapsed();
    println!("converged {convergence:?} after gw-2 returned: (connections, shed) {converged:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = counts(&gateways).await?;
    ensure!(balanced(&after, CLIENTS), "balance lost: {after:?}");

    let end = Instant::now();
    let (tally, received, failed) = finish(publisher, followers, &controls).await?;
    let moved_twice = events_before(&received, end)
        .iter()
        .filter(|n| **n > 1)
        .count();
    let needed = CLIENTS as u64 / 3;
    println!(
        "kill and return of one of three: clients {}, acknowledged {}, publishes not \
         acknowledged {failed}, messages lost {}, duplicates delivered {}, out of order {}, \
         unrecovered rejoins {}, connections shed {} (minimum needed {needed}), clients moved \
         twice {moved_twice}, convergence {:.1} s",
        tally.followers,
        tally.acked,
        tally.lost,
        tally.duplicates,
        tally.out_of_order,
        tally.unrecovered,
        shed(&after),
        convergence.as_secs_f64(),
    );
    ensure!(tally.is_lossless(), "not lossless: {tally:?}");
    ensure!(moved_twice == 0, "{moved_twice} clients moved twice");
    ensure!(
        shed(&after) * 2 <= needed * 3,
        "shed {} connections, more than 1.5 × the {needed} needed",
        shed(&after)
    );
    ensure!(
        convergence < Duration::from_millis(6500),
        "convergence took {convergence:?}: clients moved at the kill may have been moved again"
    );
    Ok(())
}
