//! History, recovery, presence and join/leave events (issue 6), with a real
//! `nats-server -js` and three gateways, and the same recovery rules on the
//! single-node broker's in-memory history.
//!
//! Run serially: `cargo test -p wsgate-tests --test history -- --test-threads=1`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use wsgate_tests::behaviour::{FRAME, connect_user, options, unique_room};
use wsgate_tests::{Client, Deployment, GatewayOptions, SIGKILL, SOON, Topology, eventually};

/// A namespace with history, presence and join/leave events; `plain` has none.
fn history_options() -> GatewayOptions {
    options()
        .set("namespaces.hist.history_size", 100)
        .set("namespaces.hist.presence", true)
        .set("namespaces.hist.join_leave", true)
        .set("limits.publish_rate", 100_000.0)
        .set("limits.publish_burst", 100_000)
        .set("limits.command_rate", 100_000.0)
        .set("limits.command_burst", 100_000)
}

/// One `nats-server -js` (file storage) and `replicas` gateways on it.
async fn cluster(replicas: usize, options: GatewayOptions) -> Result<Deployment> {
    Deployment::start_jetstream(replicas, options).await
}

/// Joins `room` without `since` and returns its epoch.
async fn join_epoch(client: &mut Client, room: &str) -> Result<String> {
    let reply = client.join(room).await?;
    let epoch = reply["epoch"]
        .as_str()
        .with_context(|| format!("join reply without epoch: {reply}"))?;
    Ok(epoch.to_owned())
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().filter_map(|m| m["seq"].as_u64()).collect()
}

/// Asserts that `messages` form an unbroken chain starting after `since`.
fn assert_chain(messages: &[Value], since: u64) -> Result<()> {
    let mut last = since;
    for message in messages {
        let seq = message["seq"].as_u64().context("message without seq")?;
        ensure!(
            message["prev"] == last,
            "prev {} after seq {last}: {message}",
            message["prev"]
        );
        ensure!(seq > last, "seq {seq} not after {last}");
        last = seq;
    }
    Ok(())
}

/// Runs the disconnect-and-recover scenario on a deployment.
async fn missed_messages_are_recovered_exactly(deployment: &Deployment) -> Result<()> {
    let room = unique_room("hist:recover");
    let mut away = connect_user(deployment, 0, "away").await?;
    let mut publisher_a = connect_user(deployment, 1, "pub-a").await?;
    let mut publisher_b = connect_user(deployment, 2, "pub-b").await?;
    let reply = away.join_since(&room, None).await?;
    let epoch = reply["epoch"]
        .as_str()
        .context("join reply without epoch")?
        .to_owned();
    ensure!(reply["seq"] == 0, "a new room starts at seq 0: {reply}");
    publisher_a.publish_seq(&room, json!("seen-1")).await?;
    let seen = publisher_b.publish_seq(&room, json!("seen-2")).await?;
    let mut live = Vec::new();
    for _ in 0..2 {
        live.push(away.next_message(&room, FRAME).await?);
    }
    assert_chain(&live, 0)?;
    away.close().await;

    let mut expected = Vec::new();
    for i in 0..10 {
        let publisher = if i % 2 == 0 {
            &mut publisher_a
        } else {
            &mut publisher_b
        };
        expected.push(
            publisher
                .publish_seq(&room, json!(format!("missed-{i}")))
                .await?,
        );
    }
    let mut back = connect_user(deployment, 0, "away").await?;
    let reply = back.join_since(&room, Some((&epoch, seen))).await?;
    ensure!(reply["recovered"] == true, "rejoin should recover: {reply}");
    let missed = reply["missed"].as_array().context("no missed")?.clone();
    ensure!(
        seqs(&missed) == expected,
        "missed {:?}, expected {expected:?}",
        seqs(&missed)
    );
    assert_chain(&missed, seen)?;
    let data: Vec<&str> = missed.iter().filter_map(|m| m["data"].as_str()).collect();
    ensure!(
        data == (0..10).map(|i| format!("missed-{i}")).collect::<Vec<_>>(),
        "data {data:?}"
    );
    // Live delivery continues the chain, with nothing delivered twice.
    let next = publisher_a.publish_seq(&room, json!("after")).await?;
    let message = back.next_message(&room, FRAME).await?;
    ensure!(
        message["seq"] == next && message["prev"] == expected[9],
        "live after recovery: {message}"
    );
    Ok(())
}

/// A client that disconnects while messages flow through the other replicas
/// rejoins with `since` and gets exactly the missed ones, in order.
#[tokio::test]
async fn rejoining_with_since_recovers_exactly_the_missed_messages_across_replicas() -> Result<()> {
    let deployment = cluster(3, history_options()).await?;
    missed_messages_are_recovered_exactly(&deployment).await
}

/// The single-node broker's in-memory history follows the same rules.
#[tokio::test]
async fn the_in_memory_history_recovers_exactly_too() -> Result<()> {
    let deployment = Deployment::start(Topology::Single, history_options()).await?;
    missed_messages_are_recovered_exactly(&deployment).await
}

/// Missing more than history holds, or coming back to another epoch, is not
/// recovered; more than `recovery_max` returns the newest ones.
#[tokio::test]
async fn recovery_beyond_history_or_across_epochs_is_not_recovered() -> Result<()> {
    let options = history_options()
        .set("namespaces.hist.history_size", 5)
        .set("namespaces.hist.recovery_max", 3);
    let deployment = cluster(2, options).await?;
    let room = unique_room("hist:beyond");
    let mut publisher = connect_user(&deployment, 1, "pub").await?;
    let mut client = connect_user(&deployment, 0, "c").await?;
    let epoch = join_epoch(&mut client, &room).await?;
    let first = publisher.publish_seq(&room, json!(0)).await?;
    let mut all = vec![first];
    for i in 1..10 {
        all.push(publisher.publish_seq(&room, json!(i)).await?);
    }
    // Four missed, history holds them, but recovery_max is 3: the newest three.
    let reply = client.join_since(&room, Some((&epoch, all[5]))).await?;
    ensure!(reply["recovered"] == false, "over recovery_max: {reply}");
    ensure!(
        seqs(reply["missed"].as_array().context("missed")?) == all[7..],
        "newest three: {reply}"
    );
    // Evicted from history.
    let reply = client.join_since(&room, Some((&epoch, first))).await?;
    ensure!(reply["recovered"] == false, "evicted: {reply}");
    // Another epoch: nothing, not recovered.
    let reply = client
        .join_since(&room, Some(("not-this-epoch", all[8])))
        .await?;
    ensure!(
        reply["recovered"] == false && reply["missed"] == json!([]),
        "other epoch: {reply}"
    );
    // Up to date: recovered, nothing missed.
    let reply = client.join_since(&room, Some((&epoch, all[9]))).await?;
    ensure!(
        reply["recovered"] == true && reply["missed"] == json!([]),
        "current: {reply}"
    );
    Ok(())
}

/// After messages expire, a client that missed them is not recovered, a client
/// that saw the last one is, and the next message's `prev` is still that seq.
#[tokio::test]
async fn expiry_keeps_prev_and_the_position_right() -> Result<()> {
    let options = history_options().set("namespaces.hist.history_ttl_seconds", 1);
    let deployment = cluster(2, options).await?;
    let room = unique_room("hist:ttl");
    let mut publisher = connect_user(&deployment, 1, "pub").await?;
    let mut client = connect_user(&deployment, 0, "c").await?;
    let epoch = join_epoch(&mut client, &room).await?;
    let early = publisher.publish_seq(&room, json!("early")).await?;
    let last = publisher.publish_seq(&room, json!("last")).await?;
    for _ in 0..2 {
        client.next_message(&room, FRAME).await?;
    }
    let gateway = deployment.gateway(0);
    let path = format!("/api/v1/rooms/{room}/history");
    eventually(SOON, "history to expire", || async {
        let response = gateway.api_get(&path, Some(gateway.api_key())).await?;
        let body: Value = serde_json::from_slice(&response.body)?;
        Ok((body["messages"] == json!([])).then_some(()))
    })
    .await?;
    let reply = client.join_since(&room, Some((&epoch, early))).await?;
    ensure!(
        reply["recovered"] == false,
        "the message after {early} expired: {reply}"
    );
    ensure!(
        reply["seq"] == last,
        "the position survives expiry: {reply}"
    );
    let reply = client.join_since(&room, Some((&epoch, last))).await?;
    ensure!(reply["recovered"] == true, "saw the last message: {reply}");
    let next = publisher.publish_seq(&room, json!("next")).await?;
    let message = client.next_message(&room, FRAME).await?;
    ensure!(
        message["seq"] == next && message["prev"] == last,
        "prev across expiry: {message}"
    );
    Ok(())
}

/// A member connected through 10,000 messages from three publishers on three
/// replicas sees an unbroken `seq`/`prev` chain.
#[tokio::test]
async fn ten_thousand_messages_from_three_replicas_form_an_unbroken_chain() -> Result<()> {
    const TOTAL: usize = 10_000;
    let deployment = cluster(3, history_options().set("limits.send_queue", 20_000)).await?;
    let room = unique_room("hist:chain");
    let mut member = connect_user(&deployment, 0, "member").await?;
    member.join_since(&room, None).await?;
    let publishers = (0..3).map(|i| {
        let url = deployment.ws_url(i);
        let room = room.clone();
        tokio::spawn(async move {
            let mut client =
                Client::connect_token(&url, &wsgate_tests::behaviour::user_token(&format!("p{i}")))
                    .await?;
            for n in 0..TOTAL / 3 + usize::from(i < TOTAL % 3) {
                // Without id: no reply unless it fails; a failure closes the test below.
                client
                    .send_json(&json!({"op": "publish", "room": room, "data": [i, n]}))
                    .await?;
            }
            client.call(json!({"op": "ping"})).await?;
            anyhow::Ok(client)
        })
    });
    // The member's frames wait in its queue (send_queue is larger than TOTAL).
    for publisher in publishers {
        let client = publisher.await??;
        ensure!(
            client.queued().count() == 0,
            "a publish failed: {:?}",
            client.queued().collect::<Vec<_>>()
        );
    }
    let mut received = Vec::with_capacity(TOTAL);
    for _ in 0..TOTAL {
        received.push(member.next_message(&room, Duration::from_secs(20)).await?);
    }
    assert_chain(&received, 0)
}

/// Publishes to a history room sent without waiting for their replies are stored
/// in the order they were sent: each reply carries its seq, the seqs rise with the
/// command order, and members on other replicas receive them in that order.
#[tokio::test]
async fn pipelined_publishes_are_stored_in_command_order() -> Result<()> {
    // Under `limits.send_queue` (256): replies and messages queue while nobody reads.
    const PUBLISHES: u64 = 200;
    let deployment = cluster(3, history_options()).await?;
    let room = unique_room("hist:pipelined");
    let mut member = connect_user(&deployment, 1, "member").await?;
    member.join_since(&room, None).await?;
    let mut publisher = connect_user(&deployment, 0, "publisher").await?;
    for k in 0..PUBLISHES {
        publisher
            .send_json(&json!({"op": "publish", "id": k, "room": room, "data": k}))
            .await?;
    }
    let mut seq_of = std::collections::BTreeMap::new();
    while (seq_of.len() as u64) < PUBLISHES {
        let reply = publisher
            .next_json(FRAME)
            .await
            .context("a publish reply")?;
        let id = reply["id"]
            .as_u64()
            .with_context(|| format!("not a reply: {reply}"))?;
        let seq = reply["seq"]
            .as_u64()
            .with_context(|| format!("publish {id} without seq: {reply}"))?;
        ensure!(
            seq_of.insert(id, seq).is_none(),
            "publish {id} answered twice"
        );
    }
    let seqs: Vec<u64> = seq_of.values().copied().collect();
    ensure!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "seqs out of command order: {seqs:?}"
    );
    let mut received = Vec::new();
    for _ in 0..PUBLISHES {
        received.push(member.next_message(&room, FRAME).await?);
    }
    let data: Vec<u64> = received.iter().filter_map(|m| m["data"].as_u64()).collect();
    ensure!(
        data == (0..PUBLISHES).collect::<Vec<_>>(),
        "messages out of order: {data:?}"
    );
    ensure!(
        self::seqs(&received) == seqs,
        "delivered seqs differ from the replies'"
    );
    assert_chain(&received, 0)
}

/// A room in a namespace without history carries no `seq`, `prev` or `epoch`.
#[tokio::test]
async fn rooms_without_history_carry_no_seq() -> Result<()> {
    let deployment = cluster(2, history_options()).await?;
    let room = unique_room("plain");
    let mut client = connect_user(&deployment, 0, "c").await?;
    let reply = client.join_since(&room, None).await?;
    ensure!(
        reply.get("epoch").is_none() && reply["recovered"] == false,
        "plain join: {reply}"
    );
    let mut publisher = connect_user(&deployment, 1, "p").await?;
    let reply = publisher
        .call(json!({"op": "publish", "room": room, "data": 1}))
        .await?;
    ensure!(
        reply["ok"] == true && reply.get("seq").is_none(),
        "plain publish: {reply}"
    );
    let message = client.next_message(&room, FRAME).await?;
    for key in ["seq", "prev", "epoch"] {
        ensure!(
            message.get(key).is_none(),
            "{key} in a plain room: {message}"
        );
    }
    Ok(())
}

/// Acknowledged messages survive a nats-server kill and restart (file storage).
#[tokio::test]
async fn history_survives_a_nats_server_restart() -> Result<()> {
    let mut deployment = cluster(2, history_options()).await?;
    let room = unique_room("hist:restart");
    let mut publisher = connect_user(&deployment, 1, "p").await?;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        acknowledged.push(publisher.publish_seq(&room, json!(i)).await?);
    }
    let mut client = connect_user(&deployment, 0, "c").await?;
    let epoch = join_epoch(&mut client, &room).await?;
    deployment.nats_mut().kill();
    deployment.nats_mut().restart().await?;
    deployment.gateway(0).await_readyz(200, SOON).await?;
    let mut back = connect_user(&deployment, 0, "c2").await?;
    let reply = back.join_since(&room, Some((&epoch, 0))).await?;
    ensure!(reply["recovered"] == true, "after restart: {reply}");
    ensure!(
        seqs(reply["missed"].as_array().context("missed")?) == acknowledged,
        "kept: {reply}"
    );
    Ok(())
}

/// Presence spans replicas, pages with a cursor, and drops the members of a
/// gateway killed with SIGKILL within the registry bound.
#[tokio::test]
async fn presence_spans_replicas_pages_and_forgets_a_killed_gateway() -> Result<()> {
    let mut deployment = cluster(3, history_options()).await?;
    let room = unique_room("hist:presence");
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut client = connect_user(&deployment, i % 3, &format!("user-{i}")).await?;
        client.join_since(&room, None).await?;
        clients.push(client);
    }
    // Pages of two cover all six exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut command = json!({"op": "presence", "room": room, "limit": 2});
        if let Some(cursor) = &cursor {
            command["cursor"] = json!(cursor);
        }
        let reply = clients[0].call(command).await?;
        ensure!(reply["ok"] == true, "presence: {reply}");
        for member in reply["members"].as_array().context("members")? {
            seen.push(member["user"].as_str().context("user")?.to_owned());
        }
        match reply["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    seen.sort();
    ensure!(
        seen == (0..6).map(|i| format!("user-{i}")).collect::<Vec<_>>(),
        "pages: {seen:?}"
    );

    deployment.gateway_mut(2).signal(SIGKILL)?;
    let gateway = deployment.gateway(0);
    let path = format!("/api/v1/rooms/{room}/presence");
    // Bound: three heartbeats (300 ms in tests) plus a request timeout; generous slack.
    eventually(
        Duration::from_secs(15),
        "the killed gateway's members to leave presence",
        || async {
            let response = gateway.api_get(&path, Some(gateway.api_key())).await?;
            let body: Value = serde_json::from_slice(&response.body)?;
            let nodes: Vec<&str> = body["members"]
                .as_array()
                .map(|members| members.iter().filter_map(|m| m["node"].as_str()).collect())
                .unwrap_or_default();
            Ok(
                (nodes.len() == 4 && !nodes.contains(&"gw-2") && body.get("partial").is_none())
                    .then_some(()),
            )
        },
    )
    .await?;
    Ok(())
}

/// Members of a namespace with join/leave events see others join and leave,
/// across replicas.
#[tokio::test]
async fn join_and_leave_events_reach_members_on_other_replicas() -> Result<()> {
    let deployment = cluster(2, history_options()).await?;
    let room = unique_room("hist:events");
    let mut watcher = connect_user(&deployment, 0, "watcher").await?;
    watcher.join_since(&room, None).await?;
    let mut visitor = connect_user(&deployment, 1, "visitor").await?;
    visitor.join_since(&room, None).await?;
    let own = watcher.next_of_type("joined", FRAME).await?;
    ensure!(
        own["user"] == "watcher",
        "a member sees its own join first: {own}"
    );
    let joined = watcher.next_of_type("joined", FRAME).await?;
    ensure!(
        joined["user"] == "visitor" && joined["room"] == room,
        "joined: {joined}"
    );
    visitor.leave(&room).await?;
    let left = watcher.next_of_type("left", FRAME).await?;
    ensure!(
        left["user"] == "visitor" && left["conn"] == visitor.conn(),
        "left: {left}"
    );
    // A plain room announces nothing.
    let plain = unique_room("plain");
    watcher.join_since(&plain, None).await?;
    let mut quiet = connect_user(&deployment, 1, "quiet").await?;
    quiet.join_since(&plain, None).await?;
    watcher.expect_silence(Duration::from_millis(400)).await
}

/// Presence is refused where the namespace keeps none, and the backend API
/// publishes into history with a seq.
#[tokio::test]
async fn presence_needs_the_namespace_and_the_api_publishes_with_seq() -> Result<()> {
    let deployment = cluster(1, history_options()).await?;
    let mut client = connect_user(&deployment, 0, "c").await?;
    let code = client
        .call_err(json!({"op": "presence", "room": unique_room("plain")}))
        .await?;
    ensure!(
        code == "not_supported",
        "presence in a plain namespace: {code}"
    );
    let room = unique_room("hist:api");
    client.join_since(&room, None).await?;
    let reply = deployment
        .gateway(0)
        .api("/api/v1/publish", &json!({"room": room, "data": "x"}))
        .await?;
    let seq = reply["seq"]
        .as_u64()
        .context("API publish into history returns seq")?;
    let message = client.next_message(&room, FRAME).await?;
    ensure!(
        message["seq"] == seq && message["from"] == Value::Null,
        "API message: {message}"
    );
    Ok(())
}

/// The history of `namespace` as gateway `i`'s stats report it.
async fn history_in_stats(deployment: &Deployment, i: usize, namespace: &str) -> Result<Value> {
    let stats = deployment.gateway(i).stats().await?;
    let node = deployment.gateway(i).node().to_owned();
    let entry = stats["nodes"]
        .as_array()
        .context("no nodes")?
        .iter()
        .find(|entry| entry["node"] == node.as_str())
        .with_context(|| format!("{node} not in {stats}"))?
        .clone();
    Ok(entry["history"][namespace].clone())
}

/// Waits until gateway 0 reports `namespace`'s history as `available`, in its
/// stats and in `wsgate_history_available`.
async fn history_becomes(deployment: &Deployment, namespace: &str, available: bool) -> Result<()> {
    let gauge = format!(
        "wsgate_history_available{{namespace=\"{namespace}\"}} {}",
        u8::from(available)
    );
    let what = format!("history of {namespace} reported as available = {available}");
    eventually(Duration::from_secs(20), &what, || async {
        let reported = history_in_stats(deployment, 0, namespace).await?;
        ensure!(reported == available, "stats say {reported}");
        let metrics = deployment.gateway(0).metrics().await?;
        ensure!(metrics.contains(&gauge), "no `{gauge}` in the metrics");
        Ok(Some(()))
    })
    .await
}

/// With JetStream, a history namespace is reported available; rooms without
/// history are not listed.
#[tokio::test]
async fn history_on_jetstream_is_reported_available() -> Result<()> {
    let deployment = cluster(1, history_options()).await?;
    history_becomes(&deployment, "hist", true).await?;
    ensure!(history_in_stats(&deployment, 0, "plain").await?.is_null());
    Ok(())
}

/// On a nats-server without JetStream, or one too small for
/// `history.replicas`, the namespace is reported unavailable (the gateway
/// itself stays ready: rooms without history still work), and a join of one
/// of its rooms is `unavailable`, never a false success.
#[tokio::test]
async fn history_that_cannot_be_stored_is_reported_unavailable() -> Result<()> {
    let without_jetstream =
        Deployment::start(Topology::Nats { replicas: 1 }, history_options()).await?;
    history_becomes(&without_jetstream, "hist", false).await?;
    let too_small = cluster(1, history_options().set("history.replicas", 3)).await?;
    history_becomes(&too_small, "hist", false).await?;
    for deployment in [&without_jetstream, &too_small] {
        let mut client = connect_user(deployment, 0, "alice").await?;
        let code = client
            .call_err(json!({"op": "join", "room": format!("hist:{}", unique_room("x"))}))
            .await?;
        ensure!(
            code == "unavailable",
            "join in an unavailable history namespace: {code}"
        );
        let plain = client.join(&unique_room("plain")).await?;
        ensure!(plain["ok"] == true, "{plain}");
        let ready = deployment.gateway(0).api_get("/readyz", None).await?;
        ensure!(ready.status == 200, "readyz {}", ready.status);
    }
    Ok(())
}
