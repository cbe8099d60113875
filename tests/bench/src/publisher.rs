//! Publishers (senders in `direct`): connections held by the coordinator that publish at a
//! paced rate, each message stamped with the time it was meant to be sent (so a stalled
//! publisher shows up as latency rather than hiding it), and count the server's answers.
//!
//! In the Pusher protocol (Sockudo, and wsgate with `--proto pusher`) a publisher is no
//! connection but a client of a node's HTTP events API ([`crate::pusher_api`]): each message
//! is one request on its own task, so a slow answer delays no later message, as a WebSocket
//! publisher does not wait for its acknowledgements.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Endpoint, Frame, Mode, NatsOp, NatsParser, Protocol, Ws};
use crate::pusher_api::{EventsApi, PusherApp};

/// Most HTTP publishes in flight per Pusher publisher; when they are all waiting, pacing
/// waits too (and falls behind, which the step reports).
const HTTP_IN_FLIGHT: usize = 256;

/// What a publisher's reader counts.
#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    /// `delivered` of `send` replies.
    delivered: AtomicU64,
    failed: AtomicU64,
    pongs: AtomicU64,
    /// Keep-alive answers the server asked for (NATS `PING`, Engine.IO ping) and the reader,
    /// which cannot write, leaves to the sender.
    owed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// How a publisher reaches its server.
enum Link {
    /// A WebSocket connection: messages go out on `sink`; `reader` counts the answers.
    WebSocket {
        sink: SplitSink<Ws, Message>,
        reader: JoinHandle<()>,
    },
    /// A Pusher HTTP events API: one request per message on a task of its own, at most
    /// [`HTTP_IN_FLIGHT`] at once; each task counts its answer.
    Http {
        api: Arc<EventsApi>,
        in_flight: Arc<Semaphore>,
    },
}

/// One publisher.
struct Publisher {
    link: Link,
    counters: Arc<Counters>,
    /// Where this publisher's messages go, in turn.
    destinations: Vec<String>,
    next: usize,
    next_id: u64,
}

/// What one step of publishing did.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub sent: u64,
    /// Accepted by the server (`ok` replies, acknowledgements or HTTP 200; every sent message
    /// for NATS).
    pub ok: u64,
    /// Deliveries the server reported queuing (`direct` on wsgate).
    pub delivered: u64,
    pub errors: BTreeMap<String, u64>,
    /// From the first to the last send.
    pub seconds: f64,
}

/// The publishers of a run.
pub struct Publishers {
    list: Vec<Publisher>,
    protocol: Protocol,
    mode: Mode,
    padding: String,
}

/// What publishers present to be allowed to publish.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// wsgate's HS256 secret, to mint the senders' tokens in `direct`.
    pub jwt_secret: Option<&'a str>,
    /// The Pusher app whose secret signs HTTP API requests (Sockudo, wsgate's `--proto pusher`).
    pub pusher_app: Option<&'a PusherApp>,
    /// Where each endpoint's Pusher HTTP API listens (`host:port`, in the endpoints' order).
    pub pusher_api: &'a [String],
}

impl Publishers {
    /// Connects `count` publishers spread over `endpoints`; publisher `p` publishes to
    /// `destinations[p], destinations[p + count], ...` (every destination when there are fewer
    /// destinations than publishers).
    ///
    /// # Errors
    /// When a publisher cannot connect, or Pusher publishers have no app to sign with or no
    /// API to call.
    pub async fn connect(
        count: u64,
        endpoints: &[String],
        protocol: Protocol,
        mode: Mode,
        destinations: &[String],
        credentials: Credentials<'_>,
        padding: usize,
    ) -> Result<Self> {
        let mut list = Vec::new();
        for p in 0..count.max(1) as usize {
            let url = &endpoints[p % endpoints.len()];
            let mine: Vec<String> = if destinations.len() <= p {
                destinations.to_vec()
            } else {
                destinations
                    .iter()
                    .skip(p)
                    .step_by(count as usize)
                    .cloned()
                    .collect()
            };
            let counters = Arc::new(Counters::default());
            if protocol == Protocol::Pusher {
                let app = credentials
                    .pusher_app
                    .ok_or_else(|| anyhow!("publishing over Pusher needs the app's secret"))?;
                let api = credentials
                    .pusher_api
                    .get(p % endpoints.len())
                    .ok_or_else(|| {
                        anyhow!("publishing over Pusher needs the HTTP API's address")
                    })?;
                let address = tokio::net::lookup_host(api.as_str())
                    .await
                    .with_context(|| format!("resolving {api}"))?
                    .next()
                    .ok_or_else(|| anyhow!("{api} resolves to no address"))?;
                list.push(Publisher {
                    link: Link::Http {
                        api: Arc::new(EventsApi::new(address, app.clone())),
                        in_flight: Arc::new(Semaphore::new(HTTP_IN_FLIGHT)),
                    },
                    counters,
                    destinations: mine,
                    next: 0,
                    next_id: 1,
                });
                continue;
            }
            let token = match (protocol, mode, credentials.jwt_secret) {
                (Protocol::Wsgate, Mode::Direct, Some(secret)) => {
                    Some(client::token(secret, &format!("pub-{p}"))?)
                }
                (Protocol::Wsgate, Mode::Direct, None) => {
                    return Err(anyhow!("direct needs --jwt-secret with --target"));
                }
                _ => None,
            };
            let endpoint = Endpoint::resolve(url).await?;
            let mut ws = client::open(&endpoint, None, token.as_deref())
                .await
                .map_err(|e| anyhow!("publisher {p} to {url}: {e}"))?;
            let parser = client::setup(&mut ws, protocol, mode, "", false)
                .await
                .with_context(|| format!("publisher {p} to {url}"))?;
            let (sink, stream) = ws.split();
            let reader = tokio::spawn(read_replies(stream, protocol, parser, counters.clone()));
            list.push(Publisher {
                link: Link::WebSocket { sink, reader },
                counters,
                destinations: mine,
                next: 0,
                next_id: 1,
            });
        }
        Ok(Self {
            list,
            protocol,
            mode,
            padding: "x".repeat(padding),
        })
    }

    /// Publishes `rate` messages per second (over all publishers) for `duration`, stamped with
    /// `step`, then waits (bounded) for the server's answers.
    ///
    /// # Errors
    /// When a publisher's connection breaks.
    pub async fn run(&mut self, rate: f64, duration: Duration, step: u32) -> Result<Published> {
        let each = rate / self.list.len() as f64;
        let total = (each * duration.as_secs_f64()).round() as u64;
        let before: Vec<(u64, u64, u64, u64)> =
            self.list.iter().map(|p| p.counters.snapshot()).collect();
        let started = Instant::now();
        let mut handles = Vec::new();
        for mut publisher in self.list.drain(..) {
            let (protocol, mode, padding) = (self.protocol, self.mode, self.padding.clone());
            handles.push(tokio::spawn(async move {
                let result = publisher
                    .pace(protocol, mode, &padding, each, total, step)
                    .await;
                (publisher, result)
            }));
        }
        let mut sent = 0;
        let mut failure = None;
        for handle in handles {
            let (publisher, result) = handle.await?;
            match result {
                Ok(n) => sent += n,
                Err(e) => failure = Some(e),
            }
            self.list.push(publisher);
        }
        let seconds = started.elapsed().as_secs_f64();
        if let Some(e) = failure {
            return Err(e);
        }
        // Wait for the answers: one per publish on wsgate, Socket.IO and Sockudo, a PONG after
        // a PING on NATS.
        if self.protocol == Protocol::Nats {
            for publisher in &mut self.list {
                if let Link::WebSocket { sink, .. } = &mut publisher.link {
                    sink.send(Message::binary(b"PING\r\n".to_vec())).await?;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered: u64 = self
                .list
                .iter()
                .zip(&before)
                .map(|(p, b)| {
                    let now = p.counters.snapshot();
                    match self.protocol {
                        Protocol::Wsgate | Protocol::Socketio | Protocol::Pusher => {
                            (now.0 - b.0) + (now.2 - b.2)
                        }
                        Protocol::Nats => u64::from(now.3 > b.3) * total,
                    }
                })
                .sum();
            if answered >= sent || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for publisher in &mut self.list {
            publisher.pay_keepalives(self.protocol).await?;
        }
        let mut published = Published {
            sent,
            seconds,
            ..Published::default()
        };
        for (publisher, before) in self.list.iter().zip(&before) {
            let now = publisher.counters.snapshot();
            match self.protocol {
                Protocol::Wsgate | Protocol::Socketio | Protocol::Pusher => {
                    published.ok += now.0 - before.0;
                    published.delivered += now.1 - before.1;
                }
                Protocol::Nats => published.ok += total,
            }
            if let Ok(mut errors) = publisher.counters.errors.lock() {
                for (code, n) in std::mem::take(&mut *errors) {
                    *published.errors.entry(code).or_default() += n;
                }
            }
        }
        Ok(published)
    }

    /// Closes every publisher.
    pub async fn close(self) {
        for publisher in self.list {
            if let Link::WebSocket { mut sink, reader } = publisher.link {
                let _ = sink.close().await;
                reader.abort();
            }
        }
    }
}

impl Counters {
    /// `(ok, delivered, failed, pongs)`.
    fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.pongs.load(Ordering::Relaxed),
        )
    }

    fn error(&self, code: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(code.to_owned()).or_default() += 1;
        }
    }
}

impl Publisher {
    /// Sends `total` messages at `rate` per second; returns how many were sent.
    async fn pace(
        &mut self,
        protocol: Protocol,
        mode: Mode,
        padding: &str,
        rate: f64,
        total: u64,
        step: u32,
    ) -> Result<u64> {
        if total == 0 || rate <= 0.0 || self.destinations.is_empty() {
            return Ok(0);
        }
        let interval_ns = 1e9 / rate;
        let start_ns = client::mono_ns();
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sent = 0;
        while sent < total {
            ticker.tick().await;
            // Every message whose intended time has come; the first is due at once.
            let due = ((started.elapsed().as_nanos() as f64 / interval_ns) as u64 + 1).min(total);
            while sent < due {
                let intended = start_ns + (sent as f64 * interval_ns) as u64;
                let destination = &self.destinations[self.next % self.destinations.len()];
                self.next += 1;
                let data = client::stamp_json(intended, step, padding);
                match &mut self.link {
                    Link::WebSocket { sink, .. } => {
                        let id = self.next_id;
                        self.next_id += 1;
                        let message = ws_message(protocol, mode, id, destination, &data)?;
                        sink.feed(message).await?;
                    }
                    Link::Http { api, in_flight } => {
                        let permit = in_flight.clone().acquire_owned().await?;
                        let (api, counters) = (api.clone(), self.counters.clone());
                        let channel = destination.clone();
                        tokio::spawn(async move {
                            match api.trigger(&channel, &data).await {
                                Ok(()) => {
                                    counters.ok.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(error) => counters.error(&error.to_string()),
                            }
                            drop(permit);
                        });
                    }
                }
                sent += 1;
            }
            if let Link::WebSocket { sink, .. } = &mut self.link {
                sink.flush().await?;
            }
            self.pay_keepalives(protocol).await?;
        }
        Ok(sent)
    }

    /// Answers the keep-alives the reader saw.
    async fn pay_keepalives(&mut self, protocol: Protocol) -> Result<()> {
        let owed = self.counters.owed.swap(0, Ordering::Relaxed);
        let Link::WebSocket { sink, .. } = &mut self.link else {
            return Ok(());
        };
        for _ in 0..owed {
            let answer = match protocol {
                Protocol::Nats => Message::binary(b"PONG\r\n".to_vec()),
                Protocol::Socketio => Message::text("3"),
                Protocol::Wsgate | Protocol::Pusher => continue,
            };
            sink.send(answer).await?;
        }
        Ok(())
    }
}

/// The WebSocket frame publishing `data` to `destination` (request `id` where the protocol
/// numbers requests).
///
/// # Errors
/// For the Pusher protocol, whose publishers use the HTTP API instead.
fn ws_message(
    protocol: Protocol,
    mode: Mode,
    id: u64,
    destination: &str,
    data: &str,
) -> Result<Message> {
    Ok(match protocol {
        Protocol::Wsgate => {
            let text = match mode {
                Mode::Rooms => {
                    format!(r#"{{"op":"publish","id":{id},"room":"{destination}","data":{data}}}"#)
                }
                Mode::Direct => {
                    format!(r#"{{"op":"send","id":{id},"user":"{destination}","data":{data}}}"#)
                }
            };
            Message::text(text)
        }
        Protocol::Nats => {
            let subject = client::nats_subject(mode, destination);
            Message::binary(format!("PUB {subject} {}\r\n{data}\r\n", data.len()).into_bytes())
        }
        // Room names are plain tokens; no JSON escaping is needed.
        Protocol::Socketio => Message::text(format!(r#"42{id}["publish","{destination}",{data}]"#)),
        Protocol::Pusher => bail!("Pusher publishers use the HTTP events API"),
    })
}

/// Counts a publisher's answers until its connection ends.
async fn read_replies(
    mut stream: SplitStream<Ws>,
    protocol: Protocol,
    mut parser: NatsParser,
    counters: Arc<Counters>,
) {
    while let Some(Ok(message)) = stream.next().await {
        match (protocol, message) {
            (Protocol::Wsgate, Message::Text(text)) => {
                let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
                    counters.error("unreadable");
                    continue;
                };
                if let Some(error) = frame.error {
                    counters.error(error.code);
                } else if frame.ok == Some(true) {
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                    counters
                        .delivered
                        .fetch_add(frame.delivered.unwrap_or(0), Ordering::Relaxed);
                }
            }
            (Protocol::Nats, Message::Binary(bytes)) => {
                parser.feed(&bytes);
                while let Ok(Some(op)) = parser.next_op() {
                    match op {
                        NatsOp::Pong => {
                            counters.pongs.fetch_add(1, Ordering::Relaxed);
                        }
                        NatsOp::Ping => {
                            counters.owed.fetch_add(1, Ordering::Relaxed);
                        }
                        NatsOp::Err(message) => counters.error(&message),
                        _ => {}
                    }
                }
            }
            (Protocol::Socketio, Message::Text(text)) => {
                let text = text.as_str();
                if text == "2" {
                    counters.owed.fetch_add(1, Ordering::Relaxed);
                } else if text.starts_with("43") {
                    counters.ok.fetch_add(1, Ordering::Relaxed);
                } else if text.starts_with("44") || text.starts_with('1') {
                    counters.error("disconnected");
                }
            }
            (_, Message::Close(_)) => {
                counters.error("closed");
                break;
            }
            _ => {}
        }
    }
}
