//! The operator's managed NATS without a Kubernetes cluster (issue 13): the
//! `nats-server.conf` files of three servers are rendered by the operator's own builder
//! with per-server parameters, checked with `nats-server -t`, booted as three real
//! nats-servers, and two real gateways use them with the credentials the operator
//! generates. What only a real cluster can show (the StatefulSet, its DNS names, volumes
//! and probes) is left to the KUBECONFIG-gated suite in `tests/k8s-e2e`.
//!
//! Run serially: `cargo test -p wsgate-tests --test managed_nats -- --test-threads=1`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use wsgate_tests::behaviour::{options, unique_room, user_token};
use wsgate_tests::{Client, Gateway, GatewayOptions, ManagedNatsCluster, eventually};

/// JetStream elections and route meshes take seconds, not milliseconds.
const CLUSTER_SOON: Duration = Duration::from_secs(30);

/// A gateway on the managed cluster: every server in `nats_url`, the operator's `.creds`,
/// a history namespace replicated on three servers.
fn gateway_options(cluster: &ManagedNatsCluster, node: &str) -> Result<GatewayOptions> {
    let creds = cluster
        .creds_path()
        .to_str()
        .context("creds path is not UTF-8")?
        .to_owned();
    Ok(options()
        .node(node)
        .nats_url(cluster.url())
        .set("nats.credentials_file", creds)
        // JetStream acknowledgements wait out a leader election after a server dies.
        .set("nats.request_timeout_ms", 10_000)
        .set("history.replicas", 3)
        .set("namespaces.hist.history_size", 100))
}

/// The one history stream of the gateways' account, as server `i` reports it.
async fn history_stream(cluster: &ManagedNatsCluster, i: usize) -> Result<Option<Value>> {
    let streams = cluster.streams(i).await?;
    ensure!(streams.len() <= 1, "more than one stream: {streams:?}");
    Ok(streams.into_iter().next())
}

/// The history stream as its leader reports it (only the leader knows whether each
/// replica is current), asking server `via` who leads.
async fn stream_at_leader(cluster: &ManagedNatsCluster, via: usize) -> Result<Value> {
    let stream = history_stream(cluster, via)
        .await?
        .with_context(|| format!("no history stream at nats-{via}"))?;
    let leader = stream["cluster"]["leader"]
        .as_str()
        .with_context(|| format!("no stream leader yet: {}", stream["cluster"]))?;
    let index = cluster
        .names()
        .iter()
        .position(|name| name == leader)
        .with_context(|| format!("unknown leader {leader}"))?;
    history_stream(cluster, index)
        .await?
        .with_context(|| format!("no history stream at its leader {leader}"))
}

/// The servers holding a current copy of `stream` (as its leader reports it): the
/// leader and every replica that is `current`.
fn current_copies(stream: &Value) -> BTreeSet<String> {
    let cluster = &stream["cluster"];
    let mut names: BTreeSet<String> = cluster["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|replica| replica["current"] == true)
        .filter_map(|replica| replica["name"].as_str().map(str::to_owned))
        .collect();
    names.extend(cluster["leader"].as_str().map(str::to_owned));
    names
}

/// Waits until the history stream has a current copy on every server in `all`.
async fn await_current_copies(
    cluster: &ManagedNatsCluster,
    via: usize,
    all: &BTreeSet<String>,
    what: &str,
) -> Result<Value> {
    eventually(CLUSTER_SOON, what, || async move {
        let stream = stream_at_leader(cluster, via).await?;
        let copies = current_copies(&stream);
        ensure!(
            &copies == all,
            "current copies {copies:?}: {}",
            stream["cluster"]
        );
        Ok(Some(stream))
    })
    .await
}

/// Every file the builder renders for three loopback servers is accepted by
/// `nats-server -t`, and the files differ only where the parameters do.
#[test]
fn rendered_configs_pass_nats_server_check() -> Result<()> {
    let cluster = ManagedNatsCluster::render(3)?;
    let outputs = cluster.check_configs()?;
    ensure!(outputs.len() == 3);
    for output in &outputs {
        ensure!(output.contains("is valid"), "{output}");
    }
    Ok(())
}

/// Three managed servers and two gateways: a client without credentials is refused;
/// with `history.replicas = 3` the history stream lives on all three servers; with one
/// server killed, publishes to a history room are still acknowledged and a client that
/// was away recovers them; once the server is back, the stream again has three current
/// copies. The gateways never log the credentials.
#[tokio::test]
async fn three_managed_servers_keep_history_through_the_loss_of_one() -> Result<()> {
    let mut cluster = ManagedNatsCluster::render(3)?;
    cluster.check_configs()?;
    cluster.start().await?;

    for i in 0..3 {
        let reply = cluster.anonymous_connect_reply(i).await?;
        ensure!(
            reply.contains("Authorization Violation"),
            "server {i} let a client without credentials in: {reply:?}"
        );
    }

    let gateways = [
        Gateway::start(gateway_options(&cluster, "gw-0")?).await?,
        Gateway::start(gateway_options(&cluster, "gw-1")?).await?,
    ];
    let room = unique_room("hist:managed");
    let mut away = Client::connect_token(&gateways[0].ws_url(), &user_token("away")).await?;
    let mut publisher =
        Client::connect_token(&gateways[1].ws_url(), &user_token("publisher")).await?;
    let joined = away.join(&room).await?;
    let epoch = joined["epoch"]
        .as_str()
        .with_context(|| format!("join reply without epoch: {joined}"))?
        .to_owned();
    let seen = publisher.publish_seq(&room, json!("before")).await?;
    let live = away.next_message(&room, Duration::from_secs(5)).await?;
    ensure!(live["seq"] == seen, "live message {live} is not seq {seen}");

    let all: BTreeSet<String> = cluster.names().into_iter().collect();
    let stream = await_current_copies(&cluster, 1, &all, "history stream on three servers").await?;
    ensure!(
        stream["config"]["num_replicas"] == 3,
        "history.replicas = 3 should make an R3 stream: {stream}"
    );

    away.close().await;
    cluster.kill(0);
    eventually(
        CLUSTER_SOON,
        "the stream has a leader among the survivors",
        || {
            let cluster = &cluster;
            async move {
                let Some(stream) = history_stream(cluster, 1).await? else {
                    return Ok(None);
                };
                let leader = stream["cluster"]["leader"].as_str().unwrap_or_default();
                Ok((!leader.is_empty() && leader != "nats-0").then_some(()))
            }
        },
    )
    .await?;
    eventually(
        CLUSTER_SOON,
        "both gateways connected to the survivors",
        || {
            let cluster = &cluster;
            async move {
                let mut names = cluster.connection_names(1).await?;
                names.extend(cluster.connection_names(2).await?);
                let both = ["gw-0", "gw-1"]
                    .iter()
                    .all(|node| names.iter().any(|name| name.ends_with(&format!("/{node}"))));
                Ok(both.then_some(()))
            }
        },
    )
    .await?;

    let mut acknowledged = Vec::new();
    for i in 0..5 {
        acknowledged.push(
            publisher
                .publish_seq(&room, json!(format!("missed-{i}")))
                .await?,
        );
    }
    let mut back = Client::connect_token(&gateways[0].ws_url(), &user_token("away")).await?;
    let reply = back
        .call(json!({"op": "join", "room": room, "since": {"epoch": epoch, "seq": seen}}))
        .await?;
    ensure!(reply["recovered"] == true, "rejoin should recover: {reply}");
    let missed: Vec<u64> = reply["missed"]
        .as_array()
        .context("no missed")?
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    ensure!(
        missed == acknowledged,
        "recovered {missed:?}, acknowledged {acknowledged:?}"
    );

    cluster.restart(0).await?;
    await_current_copies(&cluster, 1, &all, "three current copies after the restart").await?;

    let credentials = cluster.credentials();
    let seed = credentials
        .user_creds
        .lines()
        .find(|line| line.starts_with("SU"))
        .context("no seed in the creds file")?;
    for gateway in &gateways {
        let logs = [gateway.stdout_lines(), gateway.stderr_lines()].concat();
        ensure!(
            logs.iter()
                .all(|line| !line.contains(seed) && !line.contains(&credentials.route_password)),
            "{} logged a credential",
            gateway.node()
        );
    }
    Ok(())
}
