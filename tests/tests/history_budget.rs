//! History budgets (issue 15, item 2), with a real `nats-server -js` and real
//! gateways: each namespace's stream is bounded in bytes and messages with
//! discard `old`, a room whose messages the budget discarded recovers as one
//! past the safety horizon (position 0, `recovered: false`), changing a
//! budget updates the existing stream in place, and the single node's
//! in-memory history obeys the same budgets.
//!
//! Run serially: `cargo test -p wsgate-tests --test history_budget -- --test-threads=1`.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use wsgate_tests::behaviour::{FRAME, connect_user, options, unique_room};
use wsgate_tests::{Deployment, Gateway, GatewayOptions, Topology, http};

/// A namespace `hist` keeping 100 messages per room, with `max_msgs` messages
/// over all its rooms.
fn budget_options(max_msgs: u64) -> GatewayOptions {
    options()
        .set("namespaces.hist.history_size", 100)
        .set("namespaces.hist.history_max_msgs", max_msgs)
        .set("limits.publish_rate", 100_000.0)
        .set("limits.publish_burst", 100_000)
}

/// The configuration of the JetStream stream named `name`, as the server's
/// monitoring endpoint reports it.
async fn stream_config(deployment: &Deployment, name: &str) -> Result<Value> {
    let response = http::get(
        deployment.nats().monitor_addr(),
        "/jsz?streams=true&config=true",
    )
    .await?;
    let jsz = response.json()?;
    let streams = jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|account| account["stream_detail"].as_array())
        .flatten();
    for stream in streams {
        if stream["name"] == name {
            return Ok(stream["config"].clone());
        }
    }
    anyhow::bail!("no stream {name} in /jsz: {jsz}")
}

/// The room whose only message the stream's message budget discarded (the
/// namespace's other rooms filled it) is at position 0 again, and a client
/// returning with its seq, or with seq 0, is told `recovered: false`; a room
/// whose messages are all still stored recovers exactly.
#[tokio::test]
async fn a_room_whose_messages_the_stream_budget_discarded_is_not_recovered() -> Result<()> {
    let deployment = Deployment::start_jetstream(2, budget_options(3)).await?;
    let quiet = unique_room("hist:quiet");
    let busy = unique_room("hist:busy");
    let mut publisher = connect_user(&deployment, 1, "pub").await?;
    let mut client = connect_user(&deployment, 0, "c").await?;
    let reply = client.join_since(&quiet, None).await?;
    let epoch = reply["epoch"].as_str().context("no epoch")?.to_owned();
    let only = publisher.publish_seq(&quiet, json!("only")).await?;
    client.next_message(&quiet, FRAME).await?;
    client.leave(&quiet).await?;

    let config = stream_config(
        &deployment,
        &format!("WSGATE_{}_hist", deployment.cluster()),
    )
    .await?;
    ensure!(
        config["max_msgs"] == 3 && config["discard"] == "old",
        "the stream carries the budget: {config}"
    );

    let first_busy = publisher.publish_seq(&busy, json!(1)).await?;
    for i in 2..=3 {
        publisher.publish_seq(&busy, json!(i)).await?;
    }
    let reply = client.join_since(&quiet, Some((&epoch, only))).await?;
    ensure!(
        reply["seq"] == 0 && reply["recovered"] == false && reply["missed"] == json!([]),
        "the budget discarded {only}: {reply}"
    );
    client.leave(&quiet).await?;
    let reply = client.join_since(&quiet, Some((&epoch, 0))).await?;
    ensure!(
        reply["seq"] == 0 && reply["recovered"] == false,
        "a message after seq 0 was discarded: {reply}"
    );
    let reply = client.join_since(&busy, Some((&epoch, first_busy))).await?;
    ensure!(
        reply["recovered"] == true && reply["missed"].as_array().map(Vec::len) == Some(2),
        "nothing of the busy room after {first_busy} was discarded: {reply}"
    );
    Ok(())
}

/// A gateway started with smaller budgets than the existing stream's updates
/// the stream in place: publishing keeps working, the epoch stays, and the
/// new budget applies.
#[tokio::test]
async fn smaller_budgets_update_the_existing_stream_in_place() -> Result<()> {
    let mut deployment = Deployment::start_jetstream(1, budget_options(1000)).await?;
    let room = unique_room("hist:update");
    let mut publisher = connect_user(&deployment, 0, "pub").await?;
    let reply = publisher.join_since(&room, None).await?;
    let epoch = reply["epoch"].as_str().context("no epoch")?.to_owned();
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(publisher.publish_seq(&room, json!(i)).await?);
    }
    publisher.close().await;
    let stream = format!("WSGATE_{}_hist", deployment.cluster());
    ensure!(stream_config(&deployment, &stream).await?["max_msgs"] == 1000);

    // The same cluster and NATS, a smaller budget.
    let smaller = budget_options(2)
        .set("namespaces.hist.history_max_bytes", 1_000_000)
        .node("gw-0")
        .cluster(deployment.cluster().to_owned())
        .nats(deployment.nats());
    deployment.gateways.clear();
    deployment.gateways.push(Gateway::start(smaller).await?);
    let mut client = connect_user(&deployment, 0, "c").await?;
    let next = client.publish_seq(&room, json!("after")).await?;
    ensure!(next > seqs[4], "publishing works after the update: {next}");
    let config = stream_config(&deployment, &stream).await?;
    ensure!(
        config["max_msgs"] == 2 && config["max_bytes"] == 1_000_000,
        "the stream was updated: {config}"
    );
    let reply = client.join_since(&room, Some((&epoch, seqs[4]))).await?;
    ensure!(reply["epoch"] == epoch.as_str(), "the epoch stays: {reply}");
    ensure!(
        reply["recovered"] == true && reply["seq"] == next,
        "seqs[4] and the new message are the two kept: {reply}"
    );
    client.leave(&room).await?;
    let reply = client.join_since(&room, Some((&epoch, seqs[1]))).await?;
    ensure!(
        reply["recovered"] == false,
        "older messages went with the budget: {reply}"
    );
    Ok(())
}

/// The single node's in-memory history applies the namespace's message budget
/// too, with the same answer for a room it emptied.
#[tokio::test]
async fn the_in_memory_history_applies_the_namespace_budget() -> Result<()> {
    let deployment = Deployment::start(Topology::Single, budget_options(3)).await?;
    let quiet = unique_room("hist:quiet");
    let busy = unique_room("hist:busy");
    let mut publisher = connect_user(&deployment, 0, "pub").await?;
    let mut client = connect_user(&deployment, 0, "c").await?;
    let reply = client.join_since(&quiet, None).await?;
    let epoch = reply["epoch"].as_str().context("no epoch")?.to_owned();
    let only = publisher.publish_seq(&quiet, json!("only")).await?;
    client.next_message(&quiet, FRAME).await?;
    client.leave(&quiet).await?;
    for i in 1..=3 {
        publisher.publish_seq(&busy, json!(i)).await?;
    }
    let reply = client.join_since(&quiet, Some((&epoch, only))).await?;
    ensure!(
        reply["seq"] == 0 && reply["recovered"] == false,
        "the budget discarded {only}: {reply}"
    );
    client.leave(&quiet).await?;
    let reply = client.join_since(&quiet, Some((&epoch, 0))).await?;
    ensure!(
        reply["recovered"] == false,
        "a message after seq 0 was discarded: {reply}"
    );
    Ok(())
}
