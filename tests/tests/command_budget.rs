//! Every command bounded over time (issue 15, item 3; docs/protocol.md,
//! "Command budget"): one budget per connection that every command pays by its
//! cost, failed `auth` counted as a client fault, and recovery reads bounded by
//! `recovery_max`. Real gateways, real sockets, a real `nats-server -js`.
//!
//! Run serially: `cargo test -p wsgate-tests --test command_budget -- --test-threads=1`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use wsgate_tests::behaviour::{FRAME, connect_user, options, unique_room};
use wsgate_tests::{Client, Deployment, GatewayOptions, Topology};

/// The gateway's defaults for the command budget (docs/config.md), which the
/// flood tests below run against.
const COMMAND_RATE: f64 = 100.0;
const COMMAND_BURST: f64 = 200.0;

/// Room for every reply and event a flood earns, so that it is answered to
/// its end instead of closed with 1008 (errors) or 1013 (the queue of a
/// client that reads only once it has sent everything) half-way.
fn flood_options() -> GatewayOptions {
    options()
        .anonymous()
        .set("limits.max_errors_per_minute", 100_000)
        .set("limits.send_queue", 10_000)
        .set("namespaces.churn.join_leave", true)
        .set("namespaces.churn.presence", true)
}

/// Sends every command at once, then reads until each has its reply; returns
/// the count of each outcome (`ok` or the error code) and the seconds from the
/// first send to the last reply.
async fn flood(client: &mut Client, commands: Vec<Value>) -> Result<(BTreeMap<String, u64>, f64)> {
    let started = Instant::now();
    let total = commands.len();
    for (id, mut command) in commands.into_iter().enumerate() {
        command["id"] = json!(id);
        client.send_json(&command).await?;
    }
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut answered = 0;
    while answered < total {
        let frame = client.next_json(FRAME).await.with_context(|| {
            format!("{answered} of {total} replies, then nothing: {outcomes:?}")
        })?;
        if frame.get("id").is_none() || frame.get("type").is_some() {
            continue;
        }
        let outcome = match frame["error"]["code"].as_str() {
            Some(code) => code.to_owned(),
            None if frame["ok"] == true => "ok".to_owned(),
            None => anyhow::bail!("neither ok nor an error: {frame}"),
        };
        *outcomes.entry(outcome).or_default() += 1;
        answered += 1;
    }
    Ok((outcomes, started.elapsed().as_secs_f64()))
}

/// Checks that the budget refused part of a flood of commands costing `cost`
/// each, and let through no more than the burst and the rate allow over
/// `seconds` (with a margin for commands answered late).
fn check_budget(outcomes: &BTreeMap<String, u64>, seconds: f64, cost: f64) -> Result<()> {
    let limited = outcomes.get("rate_limited").copied().unwrap_or(0);
    ensure!(limited > 0, "nothing was rate_limited: {outcomes:?}");
    let paid: u64 = outcomes
        .iter()
        .filter(|(outcome, _)| *outcome != "rate_limited")
        .map(|(_, count)| count)
        .sum();
    let allowed = (COMMAND_BURST + COMMAND_RATE * (seconds + 0.5)) / cost;
    ensure!(
        (paid as f64) <= allowed,
        "{paid} commands of cost {cost} went through in {seconds:.2} s, over {allowed:.0}: {outcomes:?}"
    );
    Ok(())
}

/// Join/leave churn, which sends a `joined` and a `left` event to every member
/// per pair, is held to the command budget like a publish: past the default
/// burst, commands get `rate_limited`, and the members hear of few of them.
#[tokio::test]
async fn join_and_leave_churn_is_rate_limited() -> Result<()> {
    let deployment = Deployment::start(Topology::Single, flood_options()).await?;
    let room = format!("churn:{}", unique_room("churn"));
    let mut member = connect_user(&deployment, 0, "member").await?;
    member.join(&room).await?;
    let mut churner = Client::connect_anonymous(&deployment.ws_url(0)).await?;
    let commands = (0..400)
        .flat_map(|_| {
            [
                json!({"op": "join", "room": room}),
                json!({"op": "leave", "room": room}),
            ]
        })
        .collect();
    let (outcomes, seconds) = flood(&mut churner, commands).await?;
    check_budget(&outcomes, seconds, 1.0)?;
    let reply = member.call(json!({"op": "ping"})).await?;
    ensure!(reply["ok"] == true, "the member is not served: {reply}");
    Ok(())
}

/// `send` (every node counts its recipients) and anonymous `presence` (every
/// node lists its members) cost five pings each: a flood of either is
/// refused past the burst.
#[tokio::test]
async fn send_and_presence_floods_are_rate_limited() -> Result<()> {
    let deployment = Deployment::start(Topology::CLUSTER, flood_options()).await?;
    let room = format!("churn:{}", unique_room("presence"));
    let mut sender = connect_user(&deployment, 0, "sender").await?;
    let sends = (0..200)
        .map(|n| json!({"op": "send", "user": "nobody", "data": n}))
        .collect();
    let (outcomes, seconds) = flood(&mut sender, sends).await?;
    check_budget(&outcomes, seconds, 5.0)?;

    let mut anonymous = Client::connect_anonymous(&deployment.ws_url(1)).await?;
    let asks = (0..200)
        .map(|_| json!({"op": "presence", "room": room}))
        .collect();
    let (outcomes, seconds) = flood(&mut anonymous, asks).await?;
    check_budget(&outcomes, seconds, 5.0)
}

/// A failed `auth` costs the gateway a signature check and is the client's
/// fault: an anonymous connection that keeps sending bad tokens is closed
/// with 1008 once over `limits.max_errors_per_minute`.
#[tokio::test]
async fn repeated_failed_auth_closes_the_connection_with_1008() -> Result<()> {
    const MAX_ERRORS: u64 = 5;
    let options = options()
        .anonymous()
        .set("limits.max_errors_per_minute", MAX_ERRORS);
    let deployment = Deployment::start(Topology::Single, options).await?;
    let mut client = Client::connect_anonymous(&deployment.ws_url(0)).await?;
    // One over the budget: the last is the one that closes, so every send
    // reaches an open connection.
    for id in 0..=MAX_ERRORS {
        client
            .send_json(&json!({"op": "auth", "id": id, "token": "not.a.token"}))
            .await?;
    }
    client.expect_close(1008, FRAME).await?;
    Ok(())
}

/// A join with `since` reads at most `recovery_max` + 1 messages from
/// JetStream, newest first, however many were missed and however long the
/// history; the reply still follows the recovery rule exactly (the newest
/// `recovery_max`, `recovered: false`; or everything, `recovered: true`).
#[tokio::test]
async fn a_join_with_since_reads_at_most_recovery_max_messages_from_jetstream() -> Result<()> {
    const RECOVERY_MAX: usize = 10;
    let options = options()
        .set("namespaces.hist.history_size", 1000)
        .set("namespaces.hist.recovery_max", RECOVERY_MAX)
        .set("limits.publish_rate", 100_000.0)
        .set("limits.publish_burst", 100_000)
        .set("limits.command_rate", 100_000.0)
        .set("limits.command_burst", 100_000);
    let deployment = Deployment::start_jetstream(1, options).await?;
    let room = format!("hist:{}", unique_room("long"));
    let other = format!("hist:{}", unique_room("other"));
    let mut publisher = connect_user(&deployment, 0, "publisher").await?;
    let epoch = publisher.join(&room).await?["epoch"]
        .as_str()
        .context("a join reply without epoch")?
        .to_owned();
    // The room's messages are interleaved with another room's in the stream.
    let mut seqs = Vec::new();
    for n in 0..100 {
        let reply = publisher
            .call(json!({"op": "publish", "room": room, "data": n}))
            .await?;
        seqs.push(reply["seq"].as_u64().with_context(|| format!("{reply}"))?);
        publisher
            .call(json!({"op": "publish", "room": other, "data": n}))
            .await?;
    }

    let mut reads = deployment.nats().observe("$JS.API.DIRECT.GET.>").await?;
    let mut late = connect_user(&deployment, 0, "late").await?;
    let join =
        |seq: u64| json!({"op": "join", "room": room, "since": {"epoch": epoch, "seq": seq}});

    let reply = late.call(join(seqs[0])).await?;
    ensure!(
        reply["recovered"] == false,
        "99 missed, yet recovered: {reply}"
    );
    ensure!(
        missed_seqs(&reply)? == seqs[seqs.len() - RECOVERY_MAX..],
        "not the newest {RECOVERY_MAX}: {reply}"
    );
    check_prevs(&reply, None)?;
    let requests = reads.drain(Duration::from_millis(300)).await?.len();
    ensure!(
        requests <= RECOVERY_MAX + 1,
        "{requests} direct gets for a recovery of at most {RECOVERY_MAX} messages"
    );

    // Five missed, fewer than recovery_max: all of them, exactly.
    let since = seqs[94];
    let reply = late.call(join(since)).await?;
    ensure!(
        reply["recovered"] == true,
        "five missed, not recovered: {reply}"
    );
    ensure!(missed_seqs(&reply)? == seqs[95..], "{reply}");
    check_prevs(&reply, Some(since))?;
    let requests = reads.drain(Duration::from_millis(300)).await?.len();
    ensure!(
        requests <= 6 + 1,
        "{requests} direct gets for five missed messages"
    );

    // Nothing missed.
    let reply = late.call(join(seqs[99])).await?;
    ensure!(reply["recovered"] == true, "{reply}");
    ensure!(missed_seqs(&reply)?.is_empty(), "{reply}");
    Ok(())
}

/// The `seq`s of a join reply's `missed`.
fn missed_seqs(reply: &Value) -> Result<Vec<u64>> {
    reply["missed"]
        .as_array()
        .with_context(|| format!("no missed: {reply}"))?
        .iter()
        .map(|message| {
            message["seq"]
                .as_u64()
                .with_context(|| format!("a missed message without seq: {message}"))
        })
        .collect()
}

/// Each missed message's `prev` is the one before it; the first's is `first`
/// when given.
fn check_prevs(reply: &Value, first: Option<u64>) -> Result<()> {
    let missed = reply["missed"].as_array().context("no missed")?;
    if let (Some(first), Some(message)) = (first, missed.first()) {
        ensure!(
            message["prev"] == first,
            "first prev is not {first}: {message}"
        );
    }
    for pair in missed.windows(2) {
        ensure!(
            pair[1]["prev"] == pair[0]["seq"],
            "prev chain broken: {} then {}",
            pair[0],
            pair[1]
        );
    }
    Ok(())
}
