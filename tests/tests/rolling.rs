//! The zero-loss rolling restart (issue 8): three gateways behind nginx (Debian's, standing in
//! for the cluster's ingress, retrying another upstream on errors, 502 and 503), clients
//! following docs/protocol.md's reconnect-and-recover rules in a namespace with history, a backend
//! publishing through the API throughout, and each gateway restarted in turn with SIGTERM
//! (drain) and started again.
//!
//! Run: `cargo test -p wsgate-tests --test rolling -- --test-threads=1 --nocapture`
//! (300 clients); `WSGATE_LONG=1` for 1,000 clients. Needs nginx (`apt-get install nginx`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use wsgate_tests::behaviour::{options, unique_room};
use wsgate_tests::follower::{Controls, Follower, Publisher, Tally};
use wsgate_tests::nginx::Nginx;
use wsgate_tests::{
    Deployment, Gateway, GatewayOptions, NatsOptions, NatsServer, SIGTERM, TEST_API_KEY,
};

fn long() -> bool {
    std::env::var("WSGATE_LONG").is_ok_and(|v| v == "1")
}

/// Every client holds every acknowledged message exactly once after dedup by seq, in order,
/// with no unrecovered rejoin, across a rolling restart of all three gateways behind nginx;
/// the reconnects spread over the drain's `after_ms` window; nginx answers no 5xx.
#[tokio::test]
async fn a_rolling_restart_behind_nginx_loses_no_acknowledged_message() -> Result<()> {
    let clients = if long() { 1_000 } else { 300 };
    let spread_ms = if long() { 5_000 } else { 2_000 };
    let options: GatewayOptions = options()
        .set("namespaces.hist.history_size", 1_000_000)
        .set("namespaces.hist.recovery_max", 100_000)
        .set("limits.publish_rate", 100_000.0)
        .set("limits.publish_burst", 100_000)
        .set("limits.command_rate", 100_000.0)
        .set("limits.command_burst", 100_000)
        .set("limits.max_connections_per_user", 100_000)
        .set("drain.reconnect_spread_ms", spread_ms)
        .set("drain.seconds", spread_ms / 1000 + 10);
    let nats = NatsServer::start_with(NatsOptions { jetstream: true }).await?;
    let starts =
        (0..3).map(|i| Gateway::start(options.clone().node(format!("gw-{i}")).nats(&nats)));
    let mut deployment = Deployment {
        gateways: futures::future::try_join_all(starts).await?,
        nats: Some(nats),
    };
    let publics = |d: &Deployment| (0..3).map(|i| d.gateway(i).public()).collect::<Vec<_>>();
    let mut nginx = Nginx::start(&publics(&deployment)).await?;

    let room = unique_room("hist:rolling");
    let controls = Controls::default();
    let started = Instant::now();
    let followers = Follower::start_many(&nginx.ws_url(), &room, clients, &controls).await?;
    println!(
        "{clients} clients joined through nginx in {:?}",
        started.elapsed()
    );

    let targets = Arc::new(Mutex::new(
        (0..3)
            .map(|i| deployment.gateway(i).admin())
            .collect::<Vec<_>>(),
    ));
    let publisher = Publisher::start(
        targets.clone(),
        TEST_API_KEY.to_owned(),
        room.clone(),
        Duration::from_millis(20),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    for i in 0..3 {
        let began = Instant::now();
        // Publish only through the others while this one drains and restarts.
        *targets.lock().expect("targets") = (0..3)
            .filter(|&j| j != i)
            .map(|j| deployment.gateway(j).admin())
            .collect();
        let gateway = deployment.gateway_mut(i);
        gateway.signal(SIGTERM)?;
        let status = gateway
            .wait_exit(Duration::from_secs(spread_ms / 1000 + 20))
            .await?;
        ensure!(status.success(), "gw-{i} exited with {status}");
        let restarted = Gateway::start(gateway.options().clone()).await?;
        *gateway = restarted;
        nginx.set_upstreams(&publics(&deployment))?;
        *targets.lock().expect("targets") = (0..3).map(|j| deployment.gateway(j).admin()).collect();
        println!("gw-{i} drained and restarted in {:?}", began.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let published = publisher.stop().await?;
    let last = *published.acked.last().context("nothing acknowledged")?;
    controls.finish_at(last);
    let abort = controls.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        abort.abort();
    });
    let mut received = Vec::with_capacity(clients);
    for follower in followers {
        received.push(follower.finish().await?);
    }
    timer.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = Tally::of(&published.acked, &received);
    let log = nginx.access_log()?;
    let failed_attempts: usize = received.iter().map(|r| r.failed_attempts).sum();
    println!(
        "rolling restart: clients {}, acknowledged {}, publishes not acknowledged {}, \
         messages lost {}, duplicates delivered {}, out of order {}, unrecovered rejoins {}, \
         reconnect events {}, reconnects {}, failed connection attempts {failed_attempts}, \
         peak reconnect rate {}/s, proxy requests {}, 5xx at the proxy {}, upstream attempts \
         retried by the proxy {}",
        tally.followers,
        tally.acked,
        published.failed,
        tally.lost,
        tally.duplicates,
        tally.out_of_order,
        tally.unrecovered,
        tally.reconnect_events,
        tally.reconnects,
        tally.peak_reconnects_per_second,
        log.requests,
        log.server_errors,
        log.retried,
    );
    ensure!(tally.is_lossless(), "not lossless: {tally:?}");
    ensure!(
        log.server_errors == 0,
        "nginx answered {} requests with 5xx; error.log:\n{}",
        log.server_errors,
        nginx.error_log()
    );
    // Each client moved at least once (its gateway drained), some more often.
    ensure!(
        tally.reconnects >= clients,
        "only {} reconnects",
        tally.reconnects
    );
    // Spread over the window: the last gateway to drain holds about half the clients; no
    // one-second window holds them all.
    ensure!(
        tally.peak_reconnects_per_second < clients / 2,
        "reconnects arrived at once: peak {}/s",
        tally.peak_reconnects_per_second
    );
    Ok(())
}
