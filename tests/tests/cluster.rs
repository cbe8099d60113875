//! Three `wsgate` processes sharing one nats-server behave as one service: the shared
//! behaviours across replicas, room interest at the NATS server (`/subsz`), the node
//! registry (`stats`, `partial`), NATS outages and draining one replica.
//!
//! Run serially: `cargo test -p wsgate-tests --test cluster -- --test-threads=1`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use wsgate_tests::behaviour::{self, FRAME, QUIET, connect_user, options, unique_room};
use wsgate_tests::{
    Client, Deployment, Gateway, NatsServer, SIGTERM, SOON, Subscription, Topology, eventually,
    within,
};

const CLUSTER: Topology = Topology::CLUSTER;

// ---------------------------------------------------------------------------------------
// Behaviours shared with the single-node suite, across three replicas.

/// Members on all three replicas get each message exactly once (publisher's included).
#[tokio::test]
async fn publish_reaches_members_on_all_three_replicas_exactly_once() -> Result<()> {
    behaviour::publish_reaches_every_member_exactly_once(CLUSTER).await
}

/// A publish on one replica right after another replica's `join` reply is delivered.
#[tokio::test]
async fn publish_right_after_another_replicas_join_reply_is_delivered() -> Result<()> {
    behaviour::publish_right_after_a_join_reply_is_delivered(CLUSTER).await
}

/// A connection joining a busy room on another replica gets its reply first.
#[tokio::test]
async fn join_reply_comes_before_any_message_of_the_room_across_replicas() -> Result<()> {
    behaviour::join_reply_comes_before_any_message_of_the_room(CLUSTER).await
}

/// `send` to a user counts its connections on every replica; 0 for nobody.
#[tokio::test]
async fn send_to_a_user_counts_connections_on_every_replica() -> Result<()> {
    behaviour::send_to_a_user_counts_every_connection(CLUSTER).await
}

/// Sends not waiting for their replies: one reply each, directs in order.
#[tokio::test]
async fn pipelined_sends_across_replicas_are_answered_once_and_arrive_in_order() -> Result<()> {
    behaviour::pipelined_sends_are_answered_once_each_and_arrive_in_order(CLUSTER).await
}

/// `send` to a connection on another replica reaches it alone, and 0 once it closed.
#[tokio::test]
async fn send_to_a_connection_on_another_replica_reaches_only_it() -> Result<()> {
    behaviour::send_to_a_connection_reaches_only_that_connection(CLUSTER).await
}

/// A user id full of subject syntax is one subject token: exact delivery everywhere.
#[tokio::test]
async fn user_ids_with_subject_characters_are_delivered_exactly_across_replicas() -> Result<()> {
    behaviour::user_ids_with_subject_characters_are_delivered_exactly(CLUSTER).await
}

/// `send` needs the claim and one target, with NATS as with the in-process broker.
#[tokio::test]
async fn send_needs_the_claim_and_one_target_over_nats() -> Result<()> {
    behaviour::send_needs_the_claim_and_one_target(Topology::Nats { replicas: 1 }).await
}

/// Bad room names are refused; no wildcard or multi-token subject reaches NATS.
#[tokio::test]
async fn room_name_injection_reaches_no_nats_subject() -> Result<()> {
    behaviour::room_name_injection_is_refused_and_leaks_nothing(CLUSTER).await
}

/// The handshake matrix holds for a gateway running on NATS.
#[tokio::test]
async fn handshake_answers_with_exact_statuses_over_nats() -> Result<()> {
    behaviour::handshake_answers_with_exact_statuses(Topology::Nats { replicas: 1 }).await
}

/// The backend API needs a key on a gateway running on NATS.
#[tokio::test]
async fn backend_api_needs_a_key_over_nats() -> Result<()> {
    behaviour::backend_api_needs_a_key(Topology::Nats { replicas: 1 }).await
}

/// A backend publish on one replica reaches members on all three with `from: null`.
#[tokio::test]
async fn backend_publish_reaches_members_on_every_replica() -> Result<()> {
    behaviour::backend_publish_reaches_members_with_from_null(CLUSTER).await
}

/// Backend `send` and `disconnect` reach connections on every replica.
#[tokio::test]
async fn backend_send_and_disconnect_reach_every_replica() -> Result<()> {
    behaviour::backend_send_and_disconnect_reach_every_gateway(CLUSTER).await
}

/// `stats` on one replica counts all three, `partial: false`.
#[tokio::test]
async fn stats_count_connections_across_three_replicas() -> Result<()> {
    behaviour::stats_count_every_gateway(CLUSTER).await
}

// ---------------------------------------------------------------------------------------
// Room interest at the NATS server.

fn check_room_subject(sub: &Subscription, cluster: &str) -> Result<()> {
    let prefix = format!("wsgate.{cluster}.room.");
    let token = sub.subject.strip_prefix(&prefix);
    ensure!(
        token.is_some_and(|t| !t.is_empty() && !t.contains(['.', '*', '>'])),
        "room subscription {:?} is not `{prefix}<one token>`",
        sub.subject
    );
    ensure!(
        sub.qgroup.is_none(),
        "room subscription in a queue group: {sub:?}"
    );
    Ok(())
}

async fn wait_for_room_subscriptions(
    deployment: &Deployment,
    count: usize,
) -> Result<Vec<Subscription>> {
    let nats = deployment.nats();
    let cluster = deployment.cluster();
    eventually(
        SOON,
        &format!("{count} room subscriptions at the NATS server"),
        || async move {
            let subs = nats.room_subscriptions(cluster).await?;
            if subs.len() == count {
                Ok(Some(subs))
            } else {
                bail!("{} room subscriptions: {subs:?}", subs.len())
            }
        },
    )
    .await
}

/// A replica subscribes to a room's subject when its first local member joins (active at
/// the server by the time of the `join` reply), once however many members it has, and
/// unsubscribes when the last one leaves or disconnects; a replica without members holds
/// no subscription and its clients get nothing.
#[tokio::test]
async fn memberless_replicas_hold_no_room_subscription() -> Result<()> {
    let deployment = Deployment::start(CLUSTER, options()).await?;
    let nats = deployment.nats();
    let cluster = deployment.cluster().to_owned();
    let initial = nats.room_subscriptions(&cluster).await?;
    ensure!(
        initial.is_empty(),
        "room subscriptions before any join: {initial:?}"
    );
    let room = unique_room("interest");

    let mut first = connect_user(&deployment, 0, "first").await?;
    first.join(&room).await?;
    // No polling: the join reply promises the subscription is active at the server.
    let subs = nats.room_subscriptions(&cluster).await?;
    ensure!(subs.len() == 1, "after one join on gw-0: {subs:?}");
    check_room_subject(&subs[0], &cluster)?;
    let subject = subs[0].subject.clone();

    let mut second = connect_user(&deployment, 1, "second").await?;
    second.join(&room).await?;
    let mut third = connect_user(&deployment, 0, "third").await?;
    third.join(&room).await?;
    let subs = nats.room_subscriptions(&cluster).await?;
    ensure!(subs.len() == 2, "members on gw-0 (two) and gw-1: {subs:?}");
    ensure!(
        subs.iter().all(|s| s.subject == subject),
        "one subject per room: {subs:?}"
    );
    ensure!(
        subs[0].cid != subs[1].cid,
        "both from one NATS connection: {subs:?}"
    );

    // gw-2 has a connected client in no room: it publishes, members everywhere receive,
    // and it receives nothing.
    let mut outsider = connect_user(&deployment, 2, "outsider").await?;
    outsider.publish(&room, json!("from gw-2")).await?;
    for (name, member) in [
        ("first", &mut first),
        ("second", &mut second),
        ("third", &mut third),
    ] {
        let message = member.next_message(&room, FRAME).await.context(name)?;
        ensure!(
            message["data"] == "from gw-2" && message["from"] == "outsider",
            "{name}: {message}"
        );
    }
    outsider.expect_silence(QUIET).await?;
    let subs = nats.room_subscriptions(&cluster).await?;
    ensure!(
        subs.len() == 2,
        "publishing from gw-2 subscribed it: {subs:?}"
    );

    second.leave(&room).await?;
    wait_for_room_subscriptions(&deployment, 1)
        .await
        .context("after the only gw-1 member left")?;
    first.close().await;
    let subs = wait_for_room_subscriptions(&deployment, 1).await?;
    ensure!(subs[0].subject == subject, "{subs:?}");
    drop(third);
    wait_for_room_subscriptions(&deployment, 0)
        .await
        .context("after the last member disconnected")?;
    Ok(())
}

/// Each message goes to NATS once, on its room's subject, whether a client or the
/// backend API published it and however many replicas have members.
#[tokio::test]
async fn each_message_is_published_to_nats_once() -> Result<()> {
    let deployment = Deployment::start(CLUSTER, options()).await?;
    let cluster = deployment.cluster().to_owned();
    let mut observer = deployment
        .nats()
        .observe(&format!("wsgate.{cluster}.room.>"))
        .await?;
    let room = unique_room("once");
    let mut members = Vec::new();
    for i in 0..3 {
        let mut member = connect_user(&deployment, i, &format!("m{i}")).await?;
        member.join(&room).await?;
        members.push(member);
    }
    for k in 0..4 {
        members[k % 3].publish(&room, json!({"k": k})).await?;
    }
    deployment
        .gateway(1)
        .api("/api/v1/publish", &json!({"room": room, "data": {"k": 4}}))
        .await?;
    for member in &mut members {
        behaviour::collect_data(member, &room, 5).await?;
    }
    let seen = observer.drain(QUIET).await?;
    ensure!(
        seen.len() == 5,
        "{} NATS messages for 5 publishes: {seen:?}",
        seen.len()
    );
    let subject = &seen[0].subject;
    ensure!(
        seen.iter().all(|m| &m.subject == subject),
        "one subject per room: {seen:?}"
    );
    let subs = deployment.nats().room_subscriptions(&cluster).await?;
    ensure!(
        subs.iter().all(|s| &s.subject == subject),
        "published on {subject}, subscribed {subs:?}"
    );
    Ok(())
}

/// Two clusters on one nats-server share nothing: the same room name in another
/// cluster gets none of the messages, and a user there is not counted by `send`.
#[tokio::test]
async fn clusters_sharing_a_nats_server_are_isolated() -> Result<()> {
    let nats = NatsServer::start().await?;
    let (blue, green) = futures::future::try_join(
        Gateway::start(options().cluster("blue").node("blue-0").nats(&nats)),
        Gateway::start(options().cluster("green").node("green-0").nats(&nats)),
    )
    .await?;
    let token = |user: &str| behaviour::user_token(user);
    let mut alice = Client::connect_token(&blue.ws_url(), &token("alice")).await?;
    let mut bob = Client::connect_token(&green.ws_url(), &token("bob")).await?;
    alice.join("lobby").await?;
    bob.join("lobby").await?;
    alice.publish("lobby", json!("blue only")).await?;
    let message = alice.next_message("lobby", FRAME).await?;
    ensure!(message["data"] == "blue only", "{message}");
    bob.expect_silence(QUIET)
        .await
        .context("a message crossed clusters")?;
    let reply = alice
        .call_ok(json!({"op": "send", "user": "bob", "data": 1}))
        .await?;
    ensure!(reply["delivered"] == 0, "send crossed clusters: {reply}");
    bob.expect_silence(QUIET).await?;
    let stats = blue.stats().await?;
    ensure!(
        stats["nodes"].as_array().map(Vec::len) == Some(1),
        "blue sees green's node: {stats}"
    );
    drop((alice, bob, blue, green));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The node registry.

/// Right after one replica is SIGKILLed, `stats` is `partial: true` (it waited for a
/// reply that never came) and counts the others; once the registry expires the dead
/// node, it is whole again with two nodes.
#[tokio::test]
async fn stats_turn_partial_when_a_replica_dies_until_the_registry_expires_it() -> Result<()> {
    let mut deployment = Deployment::start(CLUSTER, options()).await?;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(connect_user(&deployment, i, &format!("u{i}")).await?);
    }
    let asked = deployment.gateway(0);
    eventually(SOON, "all three replicas counted", || async move {
        let stats = asked.stats().await?;
        Ok((stats["connections"] == 3 && stats["partial"] == false).then_some(()))
    })
    .await?;
    deployment.gateway_mut(2).kill();
    let started = Instant::now();
    let stats = deployment.gateway(0).stats().await?;
    ensure!(
        stats["partial"] == true,
        "stats right after a SIGKILL: {stats}"
    );
    ensure!(stats["connections"] == 2, "{stats}");
    ensure!(
        started.elapsed() < Duration::from_secs(8),
        "stats took {:?}",
        started.elapsed()
    );
    let asked = deployment.gateway(1);
    let stats = eventually(
        Duration::from_secs(20),
        "the registry forgets the dead node",
        || async move {
            let stats = asked.stats().await?;
            Ok((stats["partial"] == false).then_some(stats))
        },
    )
    .await?;
    let nodes: Vec<&Value> = stats["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .map(|n| &n["node"])
        .collect();
    ensure!(
        nodes.len() == 2 && !nodes.contains(&&json!("gw-2")),
        "{stats}"
    );
    ensure!(stats["connections"] == 2, "{stats}");
    Ok(())
}

/// Right after a replica is SIGKILLed, `send` to a user still answers in time (the
/// scatter-gather has a timeout), counting the connections on the live replicas.
#[tokio::test]
async fn send_to_a_user_answers_in_time_when_a_replica_died() -> Result<()> {
    let mut deployment = Deployment::start(CLUSTER, options()).await?;
    let mut alice = connect_user(&deployment, 0, "alice").await?;
    let mut bobs = Vec::new();
    for i in 0..3 {
        bobs.push(connect_user(&deployment, i, "bob").await?);
    }
    let reply = alice
        .call_ok(json!({"op": "send", "user": "bob", "data": "all"}))
        .await?;
    ensure!(reply["delivered"] == 3, "{reply}");
    deployment.gateway_mut(2).kill();
    let started = Instant::now();
    let reply = alice
        .call_within(
            json!({"op": "send", "user": "bob", "data": "live"}),
            Duration::from_secs(10),
        )
        .await?;
    ensure!(
        reply["ok"] == true && reply["delivered"] == 2,
        "send after a SIGKILL: {reply}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "send took {:?}",
        started.elapsed()
    );
    for bob in &mut bobs[..2] {
        let first = bob.next_of_type("direct", FRAME).await?;
        let second = bob.next_of_type("direct", FRAME).await?;
        ensure!(
            first["data"] == "all" && second["data"] == "live",
            "{first} {second}"
        );
    }
    Ok(())
}

/// A replica started after the others joins the registry: `stats` counts it, and a
/// `send` from an older replica reaches its connections.
#[tokio::test]
async fn a_replica_started_later_is_counted_and_reached() -> Result<()> {
    let deployment = Deployment::start(Topology::Nats { replicas: 2 }, options()).await?;
    let late = Gateway::start(options().node("gw-late").nats(deployment.nats())).await?;
    let mut bob = Client::connect_token(&late.ws_url(), &behaviour::user_token("bob")).await?;
    let mut alice = connect_user(&deployment, 0, "alice").await?;
    let asked = deployment.gateway(0);
    let stats = eventually(SOON, "stats count the late replica", || async move {
        let stats = asked.stats().await?;
        Ok((stats["nodes"].as_array().map(Vec::len) == Some(3)).then_some(stats))
    })
    .await?;
    ensure!(
        stats["partial"] == false && stats["connections"] == 2,
        "{stats}"
    );
    let reply = alice
        .call_ok(json!({"op": "send", "user": "bob", "data": "welcome"}))
        .await?;
    ensure!(reply["delivered"] == 1, "{reply}");
    let direct = bob.next_of_type("direct", FRAME).await?;
    ensure!(direct["data"] == "welcome", "{direct}");
    drop((alice, bob, late));
    Ok(())
}

/// A replica that crashes and comes back under the same node name (a restarted pod) is
/// counted once; its old connection ids reach nobody, its new connections are reached.
#[tokio::test]
async fn a_replica_restarted_under_its_name_is_counted_once() -> Result<()> {
    let mut deployment = Deployment::start(CLUSTER, options()).await?;
    let mut alice = connect_user(&deployment, 0, "alice").await?;
    let old = connect_user(&deployment, 2, "bob").await?;
    let old_conn = old.conn();
    deployment.gateway_mut(2).kill();
    drop(old);
    let restarted = options().node("gw-2").nats(deployment.nats());
    deployment.gateways[2] = Gateway::start(restarted).await?;
    let mut bob = connect_user(&deployment, 2, "bob").await?;
    ensure!(
        bob.conn() != old_conn,
        "the restarted replica reused the connection id {old_conn}"
    );
    let asked = deployment.gateway(1);
    let stats = eventually(
        Duration::from_secs(20),
        "stats count gw-2 once",
        || async move {
            let stats = asked.stats().await?;
            Ok((stats["partial"] == false && stats["connections"] == 2).then_some(stats))
        },
    )
    .await?;
    let nodes = stats["nodes"].as_array().context("nodes")?;
    ensure!(nodes.len() == 3, "{stats}");
    ensure!(
        nodes.iter().filter(|n| n["node"] == "gw-2").count() == 1,
        "{stats}"
    );
    let reply = alice
        .call_ok(json!({"op": "send", "conn": old_conn, "data": "old"}))
        .await?;
    ensure!(
        reply["delivered"] == 0,
        "send to a connection of the crashed process: {reply}"
    );
    let reply = alice
        .call_ok(json!({"op": "send", "user": "bob", "data": "new"}))
        .await?;
    ensure!(reply["delivered"] == 1, "{reply}");
    let direct = bob.next_of_type("direct", FRAME).await?;
    ensure!(direct["data"] == "new", "{direct}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Outages and drain.

/// Killing nats-server turns `/readyz` 503 on every replica and publishes get
/// `unavailable` (never a false `ok`); restarting it on the same port brings `/readyz`
/// back and delivery across replicas resumes without restarting any gateway.
#[tokio::test]
async fn nats_outage_gives_unavailable_and_delivery_resumes_after_restart() -> Result<()> {
    let mut deployment = Deployment::start(CLUSTER, options()).await?;
    let room = unique_room("outage");
    let mut members = Vec::new();
    for i in 0..2 {
        let mut member = connect_user(&deployment, i, &format!("m{i}")).await?;
        member.join(&room).await?;
        members.push(member);
    }
    let mut publisher = connect_user(&deployment, 2, "publisher").await?;
    publisher.publish(&room, json!("before")).await?;
    for member in &mut members {
        member
            .next_message(&room, FRAME)
            .await
            .context("before the outage")?;
    }

    deployment.nats_mut().kill();
    for gateway in &deployment.gateways {
        let admin = gateway.admin();
        eventually(
            SOON,
            &format!("{} /readyz 503 during the outage", gateway.node()),
            || async move {
                Ok((wsgate_tests::http::get(admin, "/readyz").await?.status == 503).then_some(()))
            },
        )
        .await?;
        ensure!(
            gateway.healthz().await? == 200,
            "{} /healthz during the outage",
            gateway.node()
        );
    }
    for k in 0..3 {
        let reply = publisher
            .call_within(
                json!({"op": "publish", "room": room, "data": {"during": k}}),
                Duration::from_secs(15),
            )
            .await?;
        behaviour::expect_error(&reply, "unavailable").context("publish during the outage")?;
    }
    let api = deployment.gateway(0);
    let response = api
        .api_post(
            "/api/v1/publish",
            Some(api.api_key()),
            &json!({"room": room, "data": "api during"}),
        )
        .await?;
    ensure!(
        response.status == 503,
        "API publish during the outage: {} {}",
        response.status,
        response.text()
    );

    deployment.nats_mut().restart().await?;
    for gateway in &deployment.gateways {
        let admin = gateway.admin();
        eventually(
            Duration::from_secs(20),
            &format!("{} /readyz 200 after the restart", gateway.node()),
            || async move {
                Ok((wsgate_tests::http::get(admin, "/readyz").await?.status == 200).then_some(()))
            },
        )
        .await?;
    }
    // Subscriptions resume asynchronously after the reconnect: probe until both see one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut probe = 0;
    loop {
        probe += 1;
        publisher.publish(&room, json!({"probe": probe})).await?;
        let mut all = true;
        for member in &mut members {
            all &= member
                .next_message(&room, Duration::from_millis(500))
                .await
                .is_ok();
        }
        if all {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "delivery did not resume after {probe} probes"
        );
    }
    publisher.publish(&room, json!("after")).await?;
    for (i, member) in members.iter_mut().enumerate() {
        within(FRAME, "the message after the restart", async {
            loop {
                let message = member.next_message(&room, FRAME).await?;
                ensure!(
                    message.get("data").and_then(|d| d.get("during")).is_none(),
                    "member {i} got a message refused as unavailable: {message}"
                );
                if message["data"] == "after" {
                    return Ok(());
                }
            }
        })
        .await?;
    }
    Ok(())
}

/// SIGTERM to one replica drains only its clients (`reconnect`, then 1012) and it exits
/// 0; the other replicas stay ready, keep exchanging messages, and the registry drops
/// the drained node.
#[tokio::test]
async fn draining_one_replica_leaves_the_others_serving() -> Result<()> {
    let mut deployment = Deployment::start(CLUSTER, options()).await?;
    let room = unique_room("drain");
    let mut members = Vec::new();
    for i in 0..3 {
        let mut member = connect_user(&deployment, i, &format!("m{i}")).await?;
        member.join(&room).await?;
        members.push(member);
    }
    deployment.gateway_mut(2).signal(SIGTERM)?;
    let mut drained = members.pop().context("three members")?;
    let event = drained.next_of_type("reconnect", FRAME).await?;
    ensure!(
        event["after_ms"].as_u64().is_some_and(|ms| ms <= 500),
        "{event}"
    );
    drained.expect_close(1012, FRAME).await?;
    let status = deployment
        .gateway_mut(2)
        .wait_exit(Duration::from_secs(10))
        .await?;
    ensure!(
        status.code() == Some(0),
        "drained replica exited with {status}"
    );
    for i in 0..2 {
        ensure!(
            deployment.gateway(i).readyz().await? == 200,
            "gw-{i} not ready"
        );
    }
    members[0].publish(&room, json!("0 to 1")).await?;
    members[1].publish(&room, json!("1 to 0")).await?;
    for member in &mut members {
        let data = behaviour::collect_data(member, &room, 2).await?;
        ensure!(
            data.contains(&json!("0 to 1")) && data.contains(&json!("1 to 0")),
            "{data:?}"
        );
    }
    let asked = deployment.gateway(0);
    eventually(SOON, "stats without the drained node", || async move {
        let stats = asked.stats().await?;
        let nodes = stats["nodes"].as_array().map(Vec::len);
        Ok((stats["partial"] == false && nodes == Some(2)).then_some(()))
    })
    .await?;
    Ok(())
}
