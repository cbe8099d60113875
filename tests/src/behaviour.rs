//! Behaviours both brokers must show, written once and run by the `single_node` suite
//! (one gateway, in-process broker) and the `cluster` suite (three gateways on one
//! nats-server). Clients are spread over the gateways round-robin, so on one gateway
//! everything happens locally and on three it crosses replicas.
//!
//! Each function starts its own [`Deployment`] and returns `Err` with what went wrong.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::client::{Client, ConnectOptions, error_code};
use crate::deployment::{Deployment, Topology};
use crate::gateway::GatewayOptions;
use crate::token::{Token, now, tampered};
use crate::wait::{SOON, eventually};

/// How long "nothing arrives" is watched. Absence cannot be awaited; this bounds it.
pub const QUIET: Duration = Duration::from_millis(400);

/// A short wait for one expected frame.
pub const FRAME: Duration = Duration::from_secs(5);

/// The options the behaviour tests start from: the test HS256 secret and API key.
pub fn options() -> GatewayOptions {
    GatewayOptions::new().test_jwt_secret().test_api_key()
}

/// A token for `user` that may join and publish anywhere and send.
pub fn user_token(user: &str) -> String {
    Token::new(user).all_rooms().send(true).signed()
}

/// Connects `user` (all rooms, send allowed) to gateway `i` and reads the welcome.
///
/// # Errors
/// A refused upgrade or no welcome.
pub async fn connect_user(deployment: &Deployment, i: usize, user: &str) -> Result<Client> {
    Client::connect_token(&deployment.ws_url(i), &user_token(user))
        .await
        .with_context(|| format!("connecting {user} to {}", deployment.gateway(i).node()))
}

/// A room name no other test uses.
pub fn unique_room(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Checks, concurrently, that none of `clients` receives anything for [`QUIET`].
///
/// # Errors
/// The first client that received something.
pub async fn expect_all_silent(clients: &mut [Client]) -> Result<()> {
    let checks = clients.iter_mut().map(|c| c.expect_silence(QUIET));
    for (i, result) in futures::future::join_all(checks)
        .await
        .into_iter()
        .enumerate()
    {
        result.with_context(|| format!("client {i}"))?;
    }
    Ok(())
}

/// Reads `count` message events of `room` and returns their `data`.
///
/// # Errors
/// When fewer arrive within [`FRAME`] each.
pub async fn collect_data(client: &mut Client, room: &str, count: usize) -> Result<Vec<Value>> {
    let mut data = Vec::with_capacity(count);
    for i in 0..count {
        let message = client
            .next_message(room, FRAME)
            .await
            .with_context(|| format!("message {i} of {count} in {room}"))?;
        data.push(message["data"].clone());
    }
    Ok(data)
}

fn check_message_shape(message: &Value, room: &str, from: &Value) -> Result<()> {
    ensure!(message["type"] == "message", "not a message: {message}");
    ensure!(message["room"] == room, "wrong room: {message}");
    ensure!(&message["from"] == from, "expected from {from}: {message}");
    for key in ["seq", "prev", "epoch"] {
        ensure!(
            message.get(key).is_none(),
            "`{key}` in a room without history: {message}"
        );
    }
    Ok(())
}

/// Members on every gateway (two each, the publisher among them) receive every message
/// exactly once, with `room`, `data` and `from` and no history fields; members of
/// another room receive nothing.
///
/// # Errors
/// Any deviation.
pub async fn publish_reaches_every_member_exactly_once(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let room = unique_room("fanout");
    let mut members = Vec::new();
    for i in 0..2 * n {
        let mut client = connect_user(&deployment, i, &format!("member{i}")).await?;
        client.join(&room).await?;
        members.push(client);
    }
    let mut outsiders = Vec::new();
    for i in 0..n {
        let mut client = connect_user(&deployment, i, &format!("outsider{i}")).await?;
        client.join(&unique_room("elsewhere")).await?;
        outsiders.push(client);
    }
    // Five from a member on the first gateway, five from one on the last.
    let last = members.len() - 1;
    for k in 0..5 {
        let reply = members[0].publish(&room, json!({"k": k})).await?;
        ensure!(
            reply.get("seq").is_none(),
            "publish reply with seq without history: {reply}"
        );
    }
    for k in 5..10 {
        members[last].publish(&room, json!({"k": k})).await?;
    }
    for (i, member) in members.iter_mut().enumerate() {
        let mut seen = BTreeMap::new();
        for _ in 0..10 {
            let message = member
                .next_message(&room, FRAME)
                .await
                .with_context(|| format!("member {i} on gw-{}", i % n))?;
            let k = message["data"]["k"]
                .as_u64()
                .with_context(|| format!("bad data {message}"))?;
            let from = if k < 5 {
                String::from("member0")
            } else {
                format!("member{last}")
            };
            check_message_shape(&message, &room, &json!(from))?;
            *seen.entry(k).or_insert(0) += 1;
        }
        let expected: BTreeMap<u64, i32> = (0..10).map(|k| (k, 1)).collect();
        ensure!(seen == expected, "member {i} saw {seen:?}");
    }
    expect_all_silent(&mut members)
        .await
        .context("a member got a duplicate")?;
    expect_all_silent(&mut outsiders)
        .await
        .context("a non-member got a message")?;
    Ok(())
}

/// A message published on one gateway right after a member on another gateway got its
/// `join` reply reaches that member: the join is answered only once the subscription is
/// active.
///
/// # Errors
/// A message that did not arrive.
pub async fn publish_right_after_a_join_reply_is_delivered(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let mut joiners = Vec::new();
    let mut publishers = Vec::new();
    for i in 0..n {
        joiners.push(connect_user(&deployment, i, &format!("joiner{i}")).await?);
        publishers.push(connect_user(&deployment, i, &format!("publisher{i}")).await?);
    }
    for round in 0..12 {
        let room = unique_room("race");
        let joiner = (round + 1) % n;
        joiners[joiner].join(&room).await?;
        publishers[round % n]
            .publish(&room, json!({"round": round}))
            .await?;
        let message = joiners[joiner]
            .next_message(&room, FRAME)
            .await
            .with_context(|| {
                format!(
                    "round {round}: gw-{} joined, gw-{} published",
                    joiner,
                    round % n
                )
            })?;
        ensure!(
            message["data"]["round"] == round,
            "round {round} got {message}"
        );
    }
    Ok(())
}

/// While a room receives a stream of messages, a connection joining it gets its `join`
/// reply before any message of the room.
///
/// # Errors
/// A message queued before the join reply.
pub async fn join_reply_comes_before_any_message_of_the_room(topology: Topology) -> Result<()> {
    let options = options()
        .set("limits.publish_rate", 100_000)
        .set("limits.publish_burst", 100_000)
        .set("limits.command_rate", 100_000)
        .set("limits.command_burst", 100_000);
    let deployment = Deployment::start(topology, options).await?;
    let n = deployment.replicas();
    let room = unique_room("busy");
    let mut publisher = connect_user(&deployment, 0, "flooder").await?;
    let flood_room = room.clone();
    let flood = tokio::spawn(async move {
        for k in 0..2000u32 {
            // Without `id`: no reply unless it fails.
            publisher
                .send_json(&json!({"op": "publish", "room": flood_room, "data": k}))
                .await?;
            if k % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        publisher.call_ok(json!({"op": "ping"})).await?;
        anyhow::Ok(publisher)
    });
    for round in 0..8 {
        let mut joiner = connect_user(&deployment, round + 1, &format!("late{round}")).await?;
        joiner.join(&room).await?;
        let early: Vec<&Value> = joiner
            .queued()
            .filter(|v| v["type"] == "message" && v["room"] == room)
            .collect();
        ensure!(
            early.is_empty(),
            "round {round} (gw-{}): messages before the join reply: {early:?}",
            (round + 1) % n
        );
    }
    let mut publisher = flood.await.context("flood task")??;
    let errors: Vec<&Value> = publisher
        .queued()
        .filter(|v| v.get("error").is_some())
        .collect();
    ensure!(
        errors.is_empty(),
        "the flooding publisher got errors: {errors:?}"
    );
    publisher.clear_queue();
    Ok(())
}

/// `send` to a user reaches every connection of that user on every gateway as a
/// `direct` event, `delivered` counts them cluster-wide, and a user without connections
/// gives `delivered: 0` (a success).
///
/// # Errors
/// Any deviation.
pub async fn send_to_a_user_counts_every_connection(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let mut alice = connect_user(&deployment, 0, "alice").await?;
    let mut bobs = Vec::new();
    for i in 0..=n {
        bobs.push(connect_user(&deployment, i, "bob").await?);
    }
    let reply = alice
        .call_ok(json!({"op": "send", "user": "bob", "data": {"hi": 1}}))
        .await?;
    ensure!(
        reply["delivered"] == n + 1,
        "expected delivered {}: {reply}",
        n + 1
    );
    for (i, bob) in bobs.iter_mut().enumerate() {
        let direct = bob
            .next_of_type("direct", FRAME)
            .await
            .with_context(|| format!("bob #{i}"))?;
        ensure!(
            direct["from"] == "alice" && direct["data"] == json!({"hi": 1}),
            "bob #{i}: {direct}"
        );
    }
    expect_all_silent(&mut bobs)
        .await
        .context("a duplicate direct")?;
    let reply = alice
        .call_ok(json!({"op": "send", "user": "nobody", "data": 1}))
        .await?;
    ensure!(
        reply["delivered"] == 0,
        "send to a user without connections: {reply}"
    );
    alice
        .expect_silence(QUIET)
        .await
        .context("the sender got its own send")?;
    Ok(())
}

/// A connection may send many `send`s without waiting for their replies: every one
/// is answered once, with its own id and full count, and the `direct` events arrive
/// at each receiving connection in the order they were sent.
///
/// # Errors
/// Any deviation.
pub async fn pipelined_sends_are_answered_once_each_and_arrive_in_order(
    topology: Topology,
) -> Result<()> {
    // Under `limits.send_queue` (256): the replies and directs queue while nobody reads.
    const SENDS: u64 = 200;
    // 200 sends cost 1000, over the default command burst.
    let options = options()
        .set("limits.command_rate", 100_000)
        .set("limits.command_burst", 100_000);
    let deployment = Deployment::start(topology, options).await?;
    let n = deployment.replicas();
    let mut alice = connect_user(&deployment, 0, "alice").await?;
    let mut bobs = Vec::new();
    for i in 0..n {
        bobs.push(connect_user(&deployment, i, "bob").await?);
    }
    for k in 0..SENDS {
        alice
            .send_json(&json!({"op": "send", "id": k, "user": "bob", "data": k}))
            .await?;
    }
    let mut answered = std::collections::BTreeSet::new();
    while (answered.len() as u64) < SENDS {
        let reply = alice.next_json(FRAME).await.context("a send reply")?;
        let id = reply["id"]
            .as_u64()
            .with_context(|| format!("not a reply: {reply}"))?;
        ensure!(
            reply["ok"] == true && reply["delivered"] == n,
            "send {id}: expected delivered {n}: {reply}"
        );
        ensure!(answered.insert(id), "send {id} answered twice");
    }
    alice
        .expect_silence(QUIET)
        .await
        .context("a reply too many")?;
    for (i, bob) in bobs.iter_mut().enumerate() {
        for k in 0..SENDS {
            let direct = bob
                .next_of_type("direct", FRAME)
                .await
                .with_context(|| format!("bob #{i}, direct {k}"))?;
            ensure!(direct["data"] == k, "bob #{i}: expected {k}, got {direct}");
        }
    }
    expect_all_silent(&mut bobs)
        .await
        .context("a duplicate direct")
}

/// `send` to a connection id reaches that one connection (on whichever gateway), not
/// the user's other connections; once it has closed, `delivered` is 0.
///
/// # Errors
/// Any deviation.
pub async fn send_to_a_connection_reaches_only_that_connection(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let mut alice = connect_user(&deployment, 0, "alice").await?;
    let mut target = connect_user(&deployment, n - 1, "bob").await?;
    let mut sibling = connect_user(&deployment, n - 1, "bob").await?;
    let conn = target.conn();
    ensure!(
        conn != sibling.conn(),
        "two connections share the id {conn}"
    );
    let reply = alice
        .call_ok(json!({"op": "send", "conn": conn, "data": "psst"}))
        .await?;
    ensure!(reply["delivered"] == 1, "{reply}");
    let direct = target.next_of_type("direct", FRAME).await?;
    ensure!(
        direct["from"] == "alice" && direct["data"] == "psst",
        "{direct}"
    );
    sibling
        .expect_silence(QUIET)
        .await
        .context("another connection of the user")?;
    target.close().await;
    // The gateway notices the close asynchronously: poll until it is forgotten.
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let reply = alice
            .call_ok(json!({"op": "send", "conn": conn, "data": "gone?"}))
            .await?;
        if reply["delivered"] == 0 {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "send to a closed connection: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sibling.expect_silence(QUIET).await?;
    Ok(())
}

/// User ids may hold any characters (`sub` is the token's): a user whose id holds NATS
/// subject syntax gets its `direct` events on every gateway, and neither a user whose id
/// is a prefix of it nor one with a wildcard in its id receives them.
///
/// # Errors
/// Any deviation.
pub async fn user_ids_with_subject_characters_are_delivered_exactly(
    topology: Topology,
) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let weird = "we.ird *>\t user\r\nPUB x 1";
    let mut sender = connect_user(&deployment, 0, "sender").await?;
    let mut targets = Vec::new();
    for i in 0..n {
        targets.push(connect_user(&deployment, i, weird).await?);
        ensure!(
            targets[i].user() == weird,
            "welcome user: {:?}",
            targets[i].welcome_frame()
        );
    }
    let mut bystanders = Vec::new();
    for (i, user) in ["we", "we.ird", "*", ">"].into_iter().enumerate() {
        bystanders.push(connect_user(&deployment, i, user).await?);
    }
    let reply = sender
        .call_ok(json!({"op": "send", "user": weird, "data": "exact"}))
        .await?;
    ensure!(reply["delivered"] == n, "send to {weird:?}: {reply}");
    for target in &mut targets {
        let direct = target.next_of_type("direct", FRAME).await?;
        ensure!(
            direct["data"] == "exact" && direct["from"] == "sender",
            "{direct}"
        );
    }
    for user in ["*", ">"] {
        let reply = sender
            .call_ok(json!({"op": "send", "user": user, "data": user}))
            .await?;
        ensure!(
            reply["delivered"] == 1,
            "send to {user:?} must reach that user only: {reply}"
        );
    }
    let mut wildcard_users = bystanders.split_off(2);
    for (user, client) in ["*", ">"].iter().zip(&mut wildcard_users) {
        let direct = client.next_of_type("direct", FRAME).await?;
        ensure!(direct["data"] == *user, "{user}: {direct}");
    }
    expect_all_silent(&mut targets).await?;
    expect_all_silent(&mut bystanders).await?;
    expect_all_silent(&mut wildcard_users).await?;
    let answer = deployment
        .gateway(n - 1)
        .api("/api/v1/disconnect", &json!({"user": weird}))
        .await?;
    ensure!(
        answer["disconnected"] == n,
        "disconnect {weird:?}: {answer}"
    );
    for target in &mut targets {
        target.expect_close(4003, FRAME).await?;
    }
    Ok(())
}

/// `send` needs the `send` claim (`forbidden` without it), and exactly one of `user` and
/// `conn` plus `data` (`bad_request` otherwise).
///
/// # Errors
/// Any deviation.
pub async fn send_needs_the_claim_and_one_target(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let url = deployment.ws_url(0);
    let mut plain = Client::connect_token(&url, &Token::new("plain").all_rooms().signed()).await?;
    let code = plain
        .call_err(json!({"op": "send", "user": "x", "data": 1}))
        .await?;
    ensure!(code == "forbidden", "send without the claim: {code}");
    let mut denied =
        Client::connect_token(&url, &Token::new("denied").all_rooms().send(false).signed()).await?;
    let code = denied
        .call_err(json!({"op": "send", "user": "x", "data": 1}))
        .await?;
    ensure!(code == "forbidden", "send with send:false: {code}");
    let mut sender = connect_user(&deployment, 0, "sender").await?;
    let conn = sender.conn();
    for bad in [
        json!({"op": "send", "user": "x", "conn": conn, "data": 1}),
        json!({"op": "send", "data": 1}),
        json!({"op": "send", "user": "x"}),
        json!({"op": "send", "user": 7, "data": 1}),
    ] {
        let code = sender.call_err(bad.clone()).await?;
        ensure!(code == "bad_request", "{bad} got {code}");
    }
    Ok(())
}

/// Room names outside the allowed bytes get `invalid_room` for `join` and `publish`
/// (before permissions are looked at), and nothing reaches the members of any room; on
/// NATS, the only room subscriptions are one plain subject per gateway for the one room
/// that was joined.
///
/// # Errors
/// Any deviation.
pub async fn room_name_injection_is_refused_and_leaks_nothing(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let legit = unique_room("legit");
    let mut members = Vec::new();
    for i in 0..n {
        let mut member = connect_user(&deployment, i, &format!("member{i}")).await?;
        member.join(&legit).await?;
        members.push(member);
    }
    let mut attacker = connect_user(&deployment, 0, "attacker").await?;
    let bad_rooms = [
        String::from("a.b"),
        String::from("*"),
        String::from(">"),
        String::from("a b"),
        String::from("room.*"),
        format!("{legit}.>"),
        format!("{legit}*"),
        "a".repeat(129),
        String::new(),
        String::from("é"),
        String::from("chat:café"),
        String::from("PUB x 1\r\n"),
        format!("{legit}\r\nPUB {legit} 2\r\nhi\r\n"),
        String::from("a\tb"),
        String::from("a\0b"),
        String::from("chat:"),
        String::from(":x"),
        String::from("a::b"),
    ];
    for room in &bad_rooms {
        let code = attacker
            .call_err(json!({"op": "join", "room": room}))
            .await?;
        ensure!(code == "invalid_room", "join {room:?} got {code}");
        let code = attacker
            .call_err(json!({"op": "publish", "room": room, "data": "leak"}))
            .await?;
        ensure!(code == "invalid_room", "publish {room:?} got {code}");
    }
    // Validated before permissions: a token that may join only chat:* gets invalid_room.
    let mut narrow = Client::connect_token(
        &deployment.ws_url(n - 1),
        &Token::new("narrow").rooms(&["chat:*"]).signed(),
    )
    .await?;
    let code = narrow
        .call_err(json!({"op": "join", "room": "chat:a.b"}))
        .await?;
    ensure!(
        code == "invalid_room",
        "join chat:a.b with rooms [chat:*] got {code}"
    );
    // 128 bytes is still a valid name.
    let longest = "b".repeat(128);
    attacker
        .join(&longest)
        .await
        .context("a 128-byte room name")?;
    expect_all_silent(&mut members)
        .await
        .context("a message leaked into another room")?;
    if let Some(nats) = &deployment.nats {
        let subscriptions = nats.room_subscriptions(deployment.cluster()).await?;
        for sub in &subscriptions {
            let tokens: Vec<&str> = sub.subject.split('.').collect();
            ensure!(
                tokens.len() == 4 && !tokens.iter().any(|t| *t == "*" || *t == ">"),
                "room subscription {:?} is not one plain subject per room",
                sub.subject
            );
        }
        // The legitimate room on every gateway, plus the 128-byte room on gw-0.
        ensure!(
            subscriptions.len() == n + 1,
            "expected {} room subscriptions: {subscriptions:?}",
            n + 1
        );
    }
    Ok(())
}

/// The handshake decides with exact statuses: 401 for every bad token (malformed,
/// forged, tampered, expired, not yet valid, missing `sub` or `exp`, another algorithm,
/// `none`, header and query disagreeing, empty), 403 for a forbidden origin (checked
/// before the token), 429 at the per-user cap; good tokens in the header or the query,
/// allowed origins (case-insensitive host, wildcard subdomain) and no origin pass.
///
/// # Errors
/// Any deviation.
pub async fn handshake_answers_with_exact_statuses(topology: Topology) -> Result<()> {
    let options = options()
        .set(
            "allowed_origins",
            json!(["https://app.example.com", "https://*.example.org"]),
        )
        .set("limits.max_connections_per_user", 2);
    let deployment = Deployment::start(topology, options).await?;
    let url = deployment.ws_url(0);
    let good = Token::new("carol").all_rooms().signed();
    let other = Token::new("dave").all_rooms().signed();
    let carol = || Token::new("carol").all_rooms();
    let header = |what: &'static str, token: String, expected: u16| HandshakeCase {
        what,
        query: None,
        bearer: Some(token),
        origin: None,
        expected,
    };
    let origin = |what: &'static str, origin: &'static str, expected: u16| HandshakeCase {
        what,
        query: None,
        bearer: Some(good.clone()),
        origin: Some(origin),
        expected,
    };
    let forged_claims = json!({"sub": "mallory", "rooms": ["**"], "exp": now() + 600});
    let cases = vec![
        header("good token in the header", good.clone(), 101),
        HandshakeCase {
            query: Some(good.clone()),
            bearer: None,
            ..header("good token in the query", String::new(), 101)
        },
        HandshakeCase {
            query: Some(good.clone()),
            ..header("same token in both", good.clone(), 101)
        },
        HandshakeCase {
            query: Some(other.clone()),
            ..header("header and query differ", good.clone(), 401)
        },
        header("malformed token", String::from("not-a-jwt"), 401),
        header("three garbage parts", String::from("a.b.c"), 401),
        header("empty bearer", String::new(), 401),
        HandshakeCase {
            query: Some(String::new()),
            bearer: None,
            ..header("empty query token", String::new(), 401)
        },
        header(
            "forged: another secret",
            carol().hs256("not-the-secret"),
            401,
        ),
        header(
            "forged: tampered claims",
            tampered(&good, &forged_claims),
            401,
        ),
        header(
            "expired beyond the leeway",
            carol().expires_in(-3600).signed(),
            401,
        ),
        header(
            "expired within the 30 s leeway",
            carol().expires_in(-5).signed(),
            101,
        ),
        header(
            "not valid for another hour",
            carol().not_before_in(3600).signed(),
            401,
        ),
        header(
            "not valid for 5 s, within the leeway",
            carol().not_before_in(5).signed(),
            101,
        ),
        header("no sub", carol().without("sub").signed(), 401),
        header("no exp", carol().without("exp").signed(), 401),
        header("RS256 where HS256 is configured", carol().rs256(), 401),
        header("ES256 where HS256 is configured", carol().es256(), 401),
        header("HS512 with the right secret", carol().hs512(), 401),
        header("alg none", carol().unsigned(), 401),
        header("alg None with a signature", carol().unsigned_variant(), 401),
        HandshakeCase {
            query: Some(carol().unsigned()),
            bearer: None,
            ..header("alg none in the query", String::new(), 401)
        },
        origin("allowed origin", "https://app.example.com", 101),
        origin(
            "allowed origin, host in capitals",
            "https://APP.Example.COM",
            101,
        ),
        origin("wildcard subdomain", "https://eu.example.org", 101),
        header("no origin", good.clone(), 101),
        origin("forbidden origin", "https://evil.example.net", 403),
        origin("allowed host, other scheme", "http://app.example.com", 403),
        origin(
            "allowed host, other port",
            "https://app.example.com:8443",
            403,
        ),
        origin(
            "a suffix that is no subdomain",
            "https://evilexample.org",
            403,
        ),
        HandshakeCase {
            bearer: Some(String::from("not-a-jwt")),
            ..origin(
                "forbidden origin before a bad token",
                "https://evil.example.net",
                403,
            )
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let mut target = url.clone();
        if let Some(token) = &case.query {
            target = format!("{url}?token={token}");
        }
        let mut options = ConnectOptions::default();
        if let Some(token) = &case.bearer {
            options = options.header("Authorization", &format!("Bearer {token}"));
        }
        if let Some(origin) = case.origin {
            options = options.origin(origin);
        }
        let (what, expected) = (case.what, case.expected);
        match Client::connect_opts(&target, options).await {
            Ok(client) => {
                client.close().await;
                if expected != 101 {
                    failures.push(format!("{what}: upgraded, expected {expected}"));
                }
            }
            Err(error) => match error.status() {
                Some(status) if status == expected => {
                    let code = error.error_code();
                    let want = if status == 401 {
                        "unauthorized"
                    } else {
                        "forbidden"
                    };
                    if code.as_deref() != Some(want) {
                        failures.push(format!("{what}: {status} with code {code:?}, not {want}"));
                    }
                }
                _ => failures.push(format!("{what}: {error}, expected {expected}")),
            },
        }
    }
    // The per-user cap: two connections of erin are fine, the third is 429.
    let erin = Token::new("erin").all_rooms().signed();
    let first = Client::connect_token(&url, &erin).await?;
    // All on one gateway: whether the cap is per gateway or cluster-wide is not said.
    let second = Client::connect_token(&url, &erin).await?;
    match Client::connect_opts(&url, ConnectOptions::default().bearer(&erin)).await {
        Ok(_) => failures.push(String::from(
            "third connection of a user at the cap: upgraded, expected 429",
        )),
        Err(error) if error.status() == Some(429) => {
            if error.error_code().as_deref() != Some("limit_exceeded") {
                failures.push(format!(
                    "429 with code {:?}, expected limit_exceeded",
                    error.error_code()
                ));
            }
        }
        Err(error) => failures.push(format!(
            "third connection of a user at the cap: {error}, expected 429"
        )),
    }
    // A bad token is 401 even for a user at the cap (the token is checked first).
    let bad = format!("Bearer {}", Token::new("erin").hs256("wrong"));
    let status = Client::handshake_status(&url, &[("Authorization", &bad)]).await?;
    if status != 401 {
        failures.push(format!(
            "bad token of a capped user: {status}, expected 401"
        ));
    }
    drop((first, second));
    ensure!(
        failures.is_empty(),
        "handshake matrix:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// The backend API refuses requests without a key or with a wrong one (401
/// `unauthorized`) and accepts the configured key; bad bodies get 400 with a fitting code.
///
/// # Errors
/// Any deviation.
pub async fn backend_api_needs_a_key(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let gateway = deployment.gateway(0);
    let room = unique_room("api");
    let calls = [
        ("/api/v1/publish", json!({"room": room, "data": 1})),
        ("/api/v1/send", json!({"user": "nobody", "data": 1})),
        ("/api/v1/disconnect", json!({"user": "nobody"})),
    ];
    for (path, body) in &calls {
        for key in [None, Some("wrong-key"), Some("")] {
            let response = gateway.api_post(path, key, body).await?;
            ensure!(
                response.status == 401 && response.error_code().as_deref() == Some("unauthorized"),
                "{path} with key {key:?}: {} {}",
                response.status,
                response.text()
            );
        }
        let response = gateway
            .api_post(path, Some(gateway.api_key()), body)
            .await?;
        ensure!(
            response.status == 200,
            "{path} with the key: {} {}",
            response.status,
            response.text()
        );
    }
    let response = gateway.api_get("/api/v1/stats", None).await?;
    ensure!(
        response.status == 401,
        "stats without a key: {}",
        response.status
    );
    let response = gateway.api_get("/api/v1/stats", Some("wrong-key")).await?;
    ensure!(
        response.status == 401,
        "stats with a wrong key: {}",
        response.status
    );
    ensure!(
        gateway
            .api("/api/v1/publish", &json!({"room": room, "data": 1}))
            .await?
            == json!({}),
        "publish answer without history"
    );
    let key = Some(gateway.api_key());
    let response = gateway
        .api_post("/api/v1/publish", key, &json!({"room": "a.b", "data": 1}))
        .await?;
    ensure!(
        response.status == 400 && response.error_code().as_deref() == Some("invalid_room"),
        "publish to a.b: {} {}",
        response.status,
        response.text()
    );
    let response = gateway
        .api_post(
            "/api/v1/send",
            key,
            &json!({"user": "u", "conn": "c", "data": 1}),
        )
        .await?;
    ensure!(
        response.status == 400 && response.error_code().as_deref() == Some("bad_request"),
        "send to user and conn: {} {}",
        response.status,
        response.text()
    );
    let response = crate::http::Request::post("/api/v1/publish")
        .bearer(gateway.api_key())
        .header("Content-Type", "application/json")
        .body("{not json")
        .send(gateway.admin())
        .await?;
    ensure!(
        response.status == 400,
        "malformed JSON body: {} {}",
        response.status,
        response.text()
    );
    Ok(())
}

/// A message published through the backend API of one gateway reaches the room's
/// members on every gateway once, with `from: null`.
///
/// # Errors
/// Any deviation.
pub async fn backend_publish_reaches_members_with_from_null(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let room = unique_room("api-fanout");
    let mut members = Vec::new();
    for i in 0..n {
        let mut member = connect_user(&deployment, i, &format!("member{i}")).await?;
        member.join(&room).await?;
        members.push(member);
    }
    let answer = deployment
        .gateway(n - 1)
        .api(
            "/api/v1/publish",
            &json!({"room": room, "data": {"from": "backend"}}),
        )
        .await?;
    ensure!(
        answer == json!({}),
        "publish answer in a room without history: {answer}"
    );
    for (i, member) in members.iter_mut().enumerate() {
        let message = member
            .next_message(&room, FRAME)
            .await
            .with_context(|| format!("member {i}"))?;
        check_message_shape(&message, &room, &Value::Null)?;
        ensure!(message["data"] == json!({"from": "backend"}), "{message}");
    }
    expect_all_silent(&mut members).await
}

/// The backend API's `send` counts a user's connections on every gateway and reaches a
/// single connection; `disconnect` closes a connection, or all of a user's, with 4003
/// and counts them.
///
/// # Errors
/// Any deviation.
pub async fn backend_send_and_disconnect_reach_every_gateway(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let api = deployment.gateway(0);
    let mut bobs = Vec::new();
    for i in 0..n {
        bobs.push(connect_user(&deployment, i, "bob").await?);
    }
    let answer = api
        .api("/api/v1/send", &json!({"user": "bob", "data": "to all"}))
        .await?;
    ensure!(answer["delivered"] == n, "send to bob: {answer}");
    for bob in &mut bobs {
        let direct = bob.next_of_type("direct", FRAME).await?;
        ensure!(
            direct["from"].is_null() && direct["data"] == "to all",
            "{direct}"
        );
    }
    let answer = api
        .api("/api/v1/send", &json!({"user": "nobody", "data": 1}))
        .await?;
    ensure!(answer["delivered"] == 0, "send to nobody: {answer}");
    let last_conn = bobs[n - 1].conn();
    let answer = api
        .api("/api/v1/send", &json!({"conn": last_conn, "data": "one"}))
        .await?;
    ensure!(answer["delivered"] == 1, "send to one connection: {answer}");
    let direct = bobs[n - 1].next_of_type("direct", FRAME).await?;
    ensure!(direct["data"] == "one", "{direct}");
    expect_all_silent(&mut bobs).await?;

    let mut carol = connect_user(&deployment, n - 1, "carol").await?;
    let answer = api
        .api("/api/v1/disconnect", &json!({"conn": carol.conn()}))
        .await?;
    ensure!(
        answer["disconnected"] == 1,
        "disconnect carol's connection: {answer}"
    );
    carol.expect_close(4003, FRAME).await?;
    let answer = api
        .api("/api/v1/disconnect", &json!({"user": "bob"}))
        .await?;
    ensure!(answer["disconnected"] == n, "disconnect bob: {answer}");
    for bob in &mut bobs {
        bob.expect_close(4003, FRAME).await?;
    }
    let answer = api
        .api("/api/v1/disconnect", &json!({"user": "nobody"}))
        .await?;
    ensure!(answer["disconnected"] == 0, "disconnect nobody: {answer}");
    Ok(())
}

/// `GET /api/v1/stats` on any gateway counts every gateway's connections and rooms,
/// with `partial: false` when all answer.
///
/// # Errors
/// Any deviation.
pub async fn stats_count_every_gateway(topology: Topology) -> Result<()> {
    let deployment = Deployment::start(topology, options()).await?;
    let n = deployment.replicas();
    let mut clients = Vec::new();
    // Gateway i holds i + 1 connections, all in one room of its own.
    for i in 0..n {
        let room = unique_room(&format!("stats{i}"));
        for k in 0..=i {
            let mut client = connect_user(&deployment, i, &format!("u{i}-{k}")).await?;
            client.join(&room).await?;
            clients.push(client);
        }
    }
    let total = n * (n + 1) / 2;
    let asked = deployment.gateway(n - 1);
    let stats = eventually(SOON, "stats count every connection", || async {
        let stats = asked.stats().await?;
        Ok((stats["connections"] == total).then_some(stats))
    })
    .await?;
    ensure!(stats["partial"] == false, "{stats}");
    ensure!(
        stats["rooms"] == n,
        "one room per gateway, disjoint: {stats}"
    );
    let nodes = stats["nodes"].as_array().context("nodes is not an array")?;
    ensure!(nodes.len() == n, "{stats}");
    for i in 0..n {
        let node = format!("gw-{i}");
        let entry = nodes
            .iter()
            .find(|e| e["node"] == node.as_str())
            .with_context(|| format!("{node} missing: {stats}"))?;
        ensure!(
            entry["connections"] == i + 1 && entry["rooms"] == 1,
            "{node}: {entry}"
        );
    }
    Ok(())
}

/// One row of the handshake matrix.
struct HandshakeCase {
    what: &'static str,
    /// `?token=` (may be empty).
    query: Option<String>,
    /// `Authorization: Bearer` (may be empty).
    bearer: Option<String>,
    origin: Option<&'static str>,
    expected: u16,
}

/// Checks that `reply` is an error reply with `code`.
///
/// # Errors
/// When `reply` is not that error.
pub fn expect_error(reply: &Value, code: &str) -> Result<()> {
    match error_code(reply) {
        Some(got) if got == code => Ok(()),
        _ => bail!("expected error {code}, got {reply}"),
    }
}
