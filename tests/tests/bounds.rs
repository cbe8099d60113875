//! Every input bounded over time (docs/security.md, "Limits"): frames the
//! server builds always fit what it can write, whatever clients and backends
//! put into them. Real gateways, real sockets; the single node's in-memory
//! history and JetStream's alike.
//!
//! Run serially: `cargo test -p wsgate-tests --test bounds -- --test-threads=1`.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use wsgate_tests::behaviour::{FRAME, connect_user, options, unique_room};
use wsgate_tests::{Client, Deployment, GatewayOptions, Token, Topology};

/// A history namespace, and room for many publishes.
fn history_options() -> GatewayOptions {
    options()
        .set("namespaces.hist.history_size", 100)
        .set("namespaces.hist.presence", true)
        .set("limits.publish_rate", 100_000.0)
        .set("limits.publish_burst", 100_000)
        .set("limits.command_rate", 100_000.0)
        .set("limits.command_burst", 100_000)
}

/// A string of `bytes` characters: one message near the 64 KiB message limit.
fn big(bytes: usize) -> String {
    "x".repeat(bytes)
}

/// Checks that `client` is still connected: a ping is answered.
async fn still_connected(client: &mut Client) -> Result<()> {
    let reply = client.call(json!({"op": "ping"})).await?;
    ensure!(reply["ok"] == true, "ping after the frame: {reply}");
    Ok(())
}

/// Publishes four 50 KB messages, then joins with `since` 0: the reply would
/// be over 200 KB, more than a frame holds. It arrives, cut to the newest
/// messages that fit, says `recovered: false`, and the connection lives on.
async fn recovery_of_large_messages_fits_one_frame(deployment: &Deployment) -> Result<()> {
    let room = format!("hist:{}", unique_room("big"));
    let mut publisher = connect_user(deployment, 0, "publisher").await?;
    let joined = publisher.join(&room).await?;
    let epoch = joined["epoch"]
        .as_str()
        .with_context(|| format!("join reply without epoch: {joined}"))?
        .to_owned();
    let mut seqs = Vec::new();
    for n in 0..4 {
        let reply = publisher
            .call(json!({"op": "publish", "room": room, "data": {"n": n, "pad": big(50_000)}}))
            .await?;
        seqs.push(reply["seq"].as_u64().with_context(|| format!("{reply}"))?);
    }
    let mut late = connect_user(deployment, deployment.replicas() - 1, "late").await?;
    let reply = late
        .call(json!({"op": "join", "room": room, "since": {"epoch": epoch, "seq": 0}}))
        .await
        .context("the join reply with four 50 KB messages never came")?;
    ensure!(reply["ok"] == true, "{reply}");
    ensure!(
        reply["recovered"] == false,
        "cut short, yet recovered: {reply}"
    );
    let missed: Vec<u64> = reply["missed"]
        .as_array()
        .context("no missed")?
        .iter()
        .filter_map(|message| message["seq"].as_u64())
        .collect();
    ensure!(
        !missed.is_empty() && missed.len() < 4,
        "missed seqs {missed:?} of {seqs:?}"
    );
    ensure!(
        seqs.ends_with(&missed),
        "missed {missed:?} are not the newest of {seqs:?}"
    );
    still_connected(&mut late).await?;
    publisher
        .call(json!({"op": "publish", "room": room, "data": "after"}))
        .await?;
    let message = late.next_message(&room, FRAME).await?;
    ensure!(message["data"] == "after", "{message}");
    Ok(())
}

#[tokio::test]
async fn recovery_of_large_messages_fits_one_frame_on_one_node() -> Result<()> {
    let deployment = Deployment::start(Topology::Single, history_options()).await?;
    recovery_of_large_messages_fits_one_frame(&deployment).await
}

#[tokio::test]
async fn recovery_of_large_messages_fits_one_frame_on_jetstream() -> Result<()> {
    let deployment = Deployment::start_jetstream(2, history_options()).await?;
    recovery_of_large_messages_fits_one_frame(&deployment).await
}

/// A backend's `data` obeys `limits.max_message_bytes` like a client's: 200 KB
/// is 413 `too_large`, and the room's members never see it.
#[tokio::test]
async fn backend_data_over_the_message_limit_is_too_large() -> Result<()> {
    let deployment = Deployment::start(Topology::Single, options()).await?;
    let room = unique_room("api-big");
    let mut member = connect_user(&deployment, 0, "member").await?;
    member.join(&room).await?;
    let gateway = deployment.gateway(0);
    for (path, body) in [
        (
            "/api/v1/publish",
            json!({"room": room, "data": big(200_000)}),
        ),
        (
            "/api/v1/send",
            json!({"user": "member", "data": big(200_000)}),
        ),
    ] {
        let response = gateway
            .api_post(path, Some(gateway.api_key()), &body)
            .await?;
        ensure!(response.status == 413, "{path}: {}", response.text());
        ensure!(
            response.error_code().as_deref() == Some("too_large"),
            "{path}: {}",
            response.text()
        );
    }
    gateway
        .api("/api/v1/publish", &json!({"room": room, "data": "small"}))
        .await?;
    let message = member.next_message(&room, FRAME).await?;
    ensure!(
        message["data"] == "small",
        "the big one came through: {message}"
    );
    still_connected(&mut member).await
}

/// A presence page of members with 8 KB user ids would be far over a frame:
/// it is cut, with `next`, and the pages together list every member once.
#[tokio::test]
async fn presence_pages_of_long_user_ids_fit_one_frame() -> Result<()> {
    let deployment = Deployment::start(Topology::Single, history_options()).await?;
    let room = format!("hist:{}", unique_room("long-ids"));
    let mut members = Vec::new();
    for i in 0..40 {
        let user = format!("{i:02}{}", "u".repeat(8_000));
        let token = Token::new(&user).all_rooms().signed();
        let mut client = Client::connect_token(&deployment.ws_url(0), &token).await?;
        client.join(&room).await?;
        members.push(client);
    }
    let asker = &mut members[0];
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..40 {
        let reply = asker
            .call(json!({"op": "presence", "room": room, "cursor": cursor}))
            .await
            .context("a presence page never came")?;
        ensure!(reply["ok"] == true, "presence failed: {}", reply["error"]);
        for member in reply["members"].as_array().context("no members")? {
            seen.push(member["user"].as_str().context("no user")?[..2].to_owned());
        }
        cursor = reply["next"].clone();
        if cursor.is_null() {
            break;
        }
    }
    let expected: Vec<String> = (0..40).map(|i| format!("{i:02}")).collect();
    ensure!(seen == expected, "pages listed {seen:?}");
    still_connected(asker).await
}
