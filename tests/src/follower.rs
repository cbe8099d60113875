//! Clients and a backend for fault and rolling-restart tests.
//!
//! A [`Follower`] is a client that follows docs/protocol.md's reconnect-and-recover rules in a
//! room with history: it records every `message` it receives (live or in a join reply's
//! `missed`), and whenever its connection ends or it gets `reconnect`, it connects again
//! (to the next URL of its list) and rejoins with `since` = the last `seq` it holds. A
//! [`Publisher`] publishes numbered messages through the backend API throughout and keeps
//! the `seq` of every acknowledged one. [`Tally`] compares the two.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::Client;
use crate::http::Request;

/// What one follower saw.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Every `seq` received, in arrival order (duplicates included).
    pub seqs: Vec<u64>,
    /// Rejoins answered with `recovered: false`.
    pub unrecovered: usize,
    /// Live messages whose `prev` was not the last `seq` held (a gap noticed live, then
    /// recovered by rejoining with `since` on the same connection).
    pub gaps_seen_live: usize,
    /// When each reconnect (after the first connection) succeeded.
    pub reconnects: Vec<Instant>,
    /// `reconnect` events received.
    pub reconnect_events: usize,
    /// When each `reconnect` event arrived.
    pub reconnect_event_times: Vec<Instant>,
    /// Failed connection attempts.
    pub failed_attempts: usize,
}

/// Shared controls of a set of followers.
#[derive(Clone)]
pub struct Controls {
    /// Followers stop once they hold this seq (set when publishing is over).
    target: Arc<AtomicU64>,
    /// Followers stop at once (a deadline passed).
    abort: Arc<AtomicBool>,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            target: Arc::new(AtomicU64::new(u64::MAX)),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Controls {
    /// Followers stop once they hold `seq`.
    pub fn finish_at(&self, seq: u64) {
        self.target.store(seq, Ordering::Release);
    }

    /// Followers stop now.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Release);
    }
}

/// A following client, running in its own task.
pub struct Follower {
    handle: JoinHandle<Result<Received>>,
}

/// How a follower connects.
#[derive(Clone)]
pub struct FollowerSpec {
    /// WebSocket URLs (with token) tried in turn, starting at `first`.
    pub urls: Vec<String>,
    pub first: usize,
    pub room: String,
    /// Extra delay before each reconnect, besides `after_ms`.
    pub backoff: Duration,
}

impl Follower {
    /// Starts `clients` followers of `room` at `url` (through an ingress), 50 at a time, each
    /// with its own user's token (`client-<k>`, all rooms) and a 20 ms backoff.
    ///
    /// # Errors
    /// When a follower cannot connect and join.
    pub async fn start_many(
        url: &str,
        room: &str,
        clients: usize,
        controls: &Controls,
    ) -> Result<Vec<Follower>> {
        let mut followers = Vec::with_capacity(clients);
        for chunk in 0..clients.div_ceil(50) {
            let batch = (chunk * 50..(chunk * 50 + 50).min(clients)).map(|k| {
                let token = crate::behaviour::user_token(&format!("client-{k}"));
                let spec = FollowerSpec {
                    urls: vec![format!("{url}?token={token}")],
                    first: 0,
                    room: room.to_owned(),
                    backoff: Duration::from_millis(20),
                };
                Follower::start(spec, controls.clone())
            });
            followers.extend(futures::future::try_join_all(batch).await?);
        }
        Ok(followers)
    }

    /// Connects, joins `spec.room` (without `since`), and returns once joined; the
    /// follower then runs until `controls` stop it.
    ///
    /// # Errors
    /// When the first connection or join fails.
    pub async fn start(spec: FollowerSpec, controls: Controls) -> Result<Self> {
        let mut client = Client::connect(&spec.urls[spec.first % spec.urls.len()])
            .await
            .context("follower's first connection")?;
        let reply = client
            .call(json!({"op": "join", "room": spec.room}))
            .await?;
        if reply["ok"] != true {
            bail!("follower's join failed: {reply}");
        }
        let epoch = reply["epoch"]
            .as_str()
            .context("room without history")?
            .to_owned();
        let seq = reply["seq"].as_u64().context("join reply without seq")?;
        let handle = tokio::spawn(follow(spec, controls, client, epoch, seq));
        Ok(Self { handle })
    }

    /// Waits for the follower's end.
    ///
    /// # Errors
    /// When the follower failed.
    pub async fn finish(self) -> Result<Received> {
        self.handle.await.context("follower panicked")?
    }
}

async fn follow(
    spec: FollowerSpec,
    controls: Controls,
    mut client: Client,
    epoch: String,
    joined_at: u64,
) -> Result<Received> {
    let mut received = Received::default();
    let mut last = joined_at;
    let mut attempt = spec.first;
    loop {
        if controls.abort.load(Ordering::Acquire) || last >= controls.target.load(Ordering::Acquire)
        {
            client.close().await;
            return Ok(received);
        }
        let frame = match client.next_json(Duration::from_millis(200)).await {
            Ok(frame) => Some(frame),
            Err(_) if client.is_closed() => None,
            Err(_) => continue,
        };
        let mut wait = None;
        if let Some(frame) = frame {
            match frame["type"].as_str() {
                Some("message") if frame["room"] == spec.room.as_str() => {
                    let seq = frame["seq"].as_u64().unwrap_or(0);
                    if frame["prev"].as_u64() == Some(last) || seq <= last {
                        record(&mut received, &mut last, &frame);
                    } else {
                        // A gap noticed live: rejoin with `since` on this connection
                        // (docs/protocol.md); the reply's `missed` holds this message too.
                        received.gaps_seen_live += 1;
                        let join = json!({"op": "join", "room": spec.room, "since": {"epoch": epoch, "seq": last}});
                        match client.call(join).await {
                            Ok(reply) if reply["ok"] == true => {
                                if reply["recovered"] != true {
                                    received.unrecovered += 1;
                                }
                                for message in reply["missed"].as_array().into_iter().flatten() {
                                    record(&mut received, &mut last, message);
                                }
                            }
                            _ => wait = Some(Duration::ZERO),
                        }
                    }
                }
                Some("reconnect") => {
                    received.reconnect_events += 1;
                    received.reconnect_event_times.push(Instant::now());
                    wait = Some(Duration::from_millis(
                        frame["after_ms"].as_u64().unwrap_or(0),
                    ));
                }
                _ => {}
            }
            if wait.is_none() {
                continue;
            }
        }
        // The connection ended, or will: wait out `after_ms`, then connect elsewhere.
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        drop(client);
        client = loop {
            if controls.abort.load(Ordering::Acquire) {
                return Ok(received);
            }
            tokio::time::sleep(spec.backoff).await;
            attempt += 1;
            let url = &spec.urls[attempt % spec.urls.len()];
            let mut next = match Client::connect(url).await {
                Ok(next) => next,
                Err(_) => {
                    received.failed_attempts += 1;
                    continue;
                }
            };
            let join =
                json!({"op": "join", "room": spec.room, "since": {"epoch": epoch, "seq": last}});
            match next.call(join).await {
                Ok(reply) if reply["ok"] == true => {
                    if reply["recovered"] != true {
                        received.unrecovered += 1;
                    }
                    for message in reply["missed"].as_array().into_iter().flatten() {
                        record(&mut received, &mut last, message);
                    }
                    // Messages held during the join arrive after the reply, in order.
                    received.reconnects.push(Instant::now());
                    break next;
                }
                _ => received.failed_attempts += 1,
            }
        };
    }
}

/// Records a message (live or from a join reply's `missed`).
fn record(received: &mut Received, last: &mut u64, message: &Value) {
    if let Some(seq) = message["seq"].as_u64() {
        received.seqs.push(seq);
        *last = (*last).max(seq);
    }
}

/// Publishes numbered messages through the backend API until stopped, trying the next
/// admin address when one fails.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Published>,
}

/// What a publisher got acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// `seq` of every acknowledged publish, in order.
    pub acked: Vec<u64>,
    /// Publishes answered with an error or not answered (not acknowledged: may or may not
    /// have been stored).
    pub failed: usize,
}

impl Publisher {
    /// Starts publishing to `room` every `interval` through the admin addresses that
    /// `targets` returns at each publish (so that restarted gateways are picked up).
    pub fn start(
        targets: Arc<Mutex<Vec<SocketAddr>>>,
        api_key: String,
        room: String,
        interval: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut published = Published::default();
            let mut n = 0u64;
            let mut next = tokio::time::Instant::now();
            while !flag.load(Ordering::Acquire) {
                n += 1;
                let addrs = targets.lock().expect("targets").clone();
                let addr = addrs[(n as usize) % addrs.len()];
                let request = Request::post("/api/v1/publish")
                    .bearer(&api_key)
                    .json(&json!({"room": room, "data": {"n": n}}));
                match request.send(addr).await.ok().filter(|r| r.status == 200) {
                    Some(response) => match response.json().ok().and_then(|v| v["seq"].as_u64()) {
                        Some(seq) => published.acked.push(seq),
                        None => published.failed += 1,
                    },
                    None => published.failed += 1,
                }
                next += interval;
                tokio::time::sleep_until(next).await;
            }
            published
        });
        Self { stop, handle }
    }

    /// Stops publishing and returns what was acknowledged.
    ///
    /// # Errors
    /// When the publishing task panicked.
    pub async fn stop(self) -> Result<Published> {
        self.stop.store(true, Ordering::Release);
        self.handle.await.context("publisher panicked")
    }
}

/// Acknowledged messages against what the followers hold.
#[derive(Debug, Default)]
pub struct Tally {
    pub followers: usize,
    pub acked: usize,
    /// Acknowledged messages some follower does not hold, summed over followers.
    pub lost: usize,
    /// Messages delivered more than once to the same follower, summed.
    pub duplicates: usize,
    /// Followers whose deduplicated seqs were not in increasing order.
    pub out_of_order: usize,
    pub unrecovered: usize,
    pub gaps_seen_live: usize,
    pub reconnects: usize,
    pub reconnect_events: usize,
    /// Most reconnects completed within one second, over all followers.
    pub peak_reconnects_per_second: usize,
}

impl Tally {
    /// Compares each follower's messages with the acknowledged `seq`s.
    pub fn of(acked: &[u64], followers: &[Received]) -> Self {
        let acked_set: BTreeSet<u64> = acked.iter().copied().collect();
        let mut tally = Tally {
            followers: followers.len(),
            acked: acked_set.len(),
            ..Tally::default()
        };
        let mut times = Vec::new();
        for received in followers {
            let mut seen = BTreeSet::new();
            let mut order = Vec::new();
            for &seq in &received.seqs {
                if seen.insert(seq) {
                    order.push(seq);
                } else {
                    tally.duplicates += 1;
                }
            }
            if order.windows(2).any(|w| w[0] >= w[1]) {
                tally.out_of_order += 1;
            }
            tally.lost += acked_set.difference(&seen).count();
            tally.unrecovered += received.unrecovered;
            tally.gaps_seen_live += received.gaps_seen_live;
            tally.reconnects += received.reconnects.len();
            tally.reconnect_events += received.reconnect_events;
            times.extend(received.reconnects.iter().copied());
        }
        times.sort();
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= Duration::from_secs(1) {
                start += 1;
            }
            tally.peak_reconnects_per_second =
                tally.peak_reconnects_per_second.max(end - start + 1);
        }
        tally
    }

    /// Zero loss: nothing lost, nothing out of order, no unrecovered rejoin.
    pub fn is_lossless(&self) -> bool {
        self.lost == 0 && self.out_of_order == 0 && self.unrecovered == 0
    }
}
