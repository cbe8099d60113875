//! The NATS broker: rooms, direct messages and stats across replicas.
//!
//! - **Rooms.** One core-NATS subject per room; a node subscribes while it has
//!   local members. A subscription is reported active only after a *barrier*: a
//!   message this node publishes to its own barrier subject after the SUB and
//!   receives back, which proves the server processed the SUB (the server
//!   handles one connection's commands in order). A publish is one NATS publish;
//!   every subscribed node, the publisher's included, gets it exactly once.
//! - **Node registry.** Every node publishes a heartbeat on
//!   `wsgate.<cluster>.nodes` every `nats.node_heartbeat_ms` and forgets a node
//!   not heard from for three of its intervals; a leaving node says so, and a
//!   starting node says hello so the others answer at once.
//! - **Scatter-gather.** A `send` or `disconnect` to a user, and `stats`, go to
//!   every node; each answers with its count (0 included). The requester waits
//!   for every live node, or `nats.request_timeout_ms`, then reports `partial`.
//!   Connection-addressed operations go to the one node the id names.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Client, Message};
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::history::{Entry, Recovery, namespace_name, recover, safety_horizon, stamp};
use super::subject::{Control, Subjects, Verb, node_of_conn};
use super::{Broker, BrokerError, ClusterStats, Gathered, NodeStats, Pending, Subscription};
use crate::hub::{Hub, Room, lock};
use crate::metrics::Metrics;
use crate::protocol::{Since, Target};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DirectGetErrorKind, Republish, StorageType,
};
use wsgate_config::{Namespace, Namespaces, Storage};

/// How to reach NATS and how this node takes part in the cluster.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Comma-separated server URLs.
    pub url: String,
    pub cluster: String,
    pub node: String,
    pub credentials_file: Option<std::path::PathBuf>,
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    /// How often the client pings the server; a dead connection is noticed after two missed pings.
    pub ping_interval: Duration,
    /// Registry heartbeat interval.
    pub node_heartbeat: Duration,
    /// How long scatter-gather and barriers wait.
    pub request_timeout: Duration,
    /// Per-namespace behaviour; namespaces with history get a JetStream stream.
    pub namespaces: Namespaces,
    /// JetStream storage of history streams.
    pub storage: Storage,
    /// JetStream replicas of history streams.
    pub replicas: u32,
}

/// A registry heartbeat.
#[derive(Serialize, Deserialize)]
struct Heartbeat {
    node: String,
    interval_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    hello: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gone: bool,
}

/// A node's answer to a scatter-gather count request.
#[derive(Serialize, Deserialize)]
struct CountReply {
    node: String,
    count: u64,
}

/// The most members one node returns for one presence page.
const MAX_PRESENCE_PAGE: usize = 10_000;

/// Most room messages handed to the members in one batch (those that had
/// already arrived when the first was taken).
const ROOM_BATCH: usize = 64;

/// A presence page request, scattered to every node.
#[derive(Serialize, Deserialize)]
struct PresenceRequest {
    room: String,
    after: Option<(String, String)>,
    limit: usize,
}

/// One node's page of a room's members.
#[derive(Serialize, Deserialize)]
struct PresenceReply {
    node: String,
    members: Vec<super::Present>,
    more: bool,
}

/// Nodes heard from recently: name → (last heard, how long until forgotten).
#[derive(Default)]
struct Registry {
    nodes: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl Registry {
    fn heard(&self, heartbeat: &Heartbeat) {
        let mut nodes = lock(&self.nodes);
        if heartbeat.gone {
            nodes.remove(&heartbeat.node);
        } else {
            let expiry = Duration::from_millis(heartbeat.interval_ms.saturating_mul(3));
            nodes.insert(heartbeat.node.clone(), (Instant::now(), expiry));
        }
    }

    fn live(&self) -> HashSet<String> {
        let now = Instant::now();
        let mut nodes = lock(&self.nodes);
        nodes.retain(|_, (seen, expiry)| now.duration_since(*seen) <= *expiry);
        nodes.keys().cloned().collect()
    }

    fn is_live(&self, node: &str) -> bool {
        self.live().contains(node)
    }
}

/// The NATS-backed broker.
pub struct NatsBroker {
    streams: Streams,
    /// This node's reply inbox: scatter-gather replies arrive on `<inbox>.<request id>`
    /// through one long-lived subscription.
    inbox: String,
    requests: Arc<Requests>,
    next_request: AtomicU64,
    client: Client,
    subjects: Subjects,
    node: String,
    hub: Arc<Hub>,
    registry: Registry,
    heartbeat: Duration,
    request_timeout: Duration,
    barriers: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_barrier: AtomicU64,
    metrics: Arc<Metrics>,
}

impl NatsBroker {
    /// Connects (retrying in the background while NATS is unreachable) and starts
    /// the control subscriptions and the heartbeat, as tasks of `tracker` that end
    /// with `cancel`.
    ///
    /// # Errors
    /// When the options are unusable (a credentials file that cannot be read, an
    /// invalid URL).
    pub async fn connect(
        options: NatsOptions,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        let NatsOptions {
            url,
            cluster,
            node,
            credentials_file,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            ping_interval,
            node_heartbeat,
            request_timeout,
            namespaces,
            storage,
            replicas,
        } = options;
        let event_metrics = metrics.clone();
        let mut connect = async_nats::ConnectOptions::new()
            .name(format!("wsgate {cluster}/{node}"))
            .ping_interval(ping_interval)
            .connection_timeout(request_timeout.max(Duration::from_secs(2)))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                let base = Duration::from_millis(100).saturating_mul(attempts.min(20) as u32);
                base.min(Duration::from_secs(2)) + Duration::from_millis(rand::random_range(0..100))
            })
            .event_callback(move |event| {
                let metrics = event_metrics.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            metrics.broker_connected.set(1);
                            info!("nats connected");
                        }
                        async_nats::Event::Disconnected => {
                            metrics.broker_connected.set(0);
                            warn!("nats disconnected");
                        }
                        other => debug!(event = %other, "nats event"),
                    }
                }
            });
        if let Some(path) = credentials_file {
            connect = connect.credentials_file(&path).await.map_err(|error| {
                BrokerError::Internal(format!(
                    "reading nats.credentials_file {}: {error}",
                    path.display()
                ))
            })?;
        }
        if let Some(path) = tls_ca_file {
            connect = connect.add_root_certificates(path).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (tls_cert_file, tls_key_file) {
            connect = connect.add_client_certificate(cert, key).require_tls(true);
        }
        let servers: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = connect
            .connect(servers.as_slice())
            .await
            .map_err(|error| BrokerError::Unavailable(format!("connecting to NATS: {error}")))?;
        let streams = Streams {
            jetstream: async_nats::jetstream::new(client.clone()),
            cluster: cluster.clone(),
            namespaces,
            storage: match storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            replicas: replicas.max(1) as usize,
            ensured: Arc::default(),
            epochs: Arc::default(),
        };
        let inbox = client.new_inbox();
        let broker = Arc::new(Self {
            streams,
            inbox,
            requests: Arc::default(),
            next_request: AtomicU64::new(1),
            client,
            subjects: Subjects::new(&cluster, &node),
            node,
            hub,
            registry: Registry::default(),
            heartbeat: node_heartbeat,
            request_timeout,
            barriers: Mutex::default(),
            next_barrier: AtomicU64::new(1),
            metrics,
        });
        broker.start(tracker, cancel).await?;
        Ok(broker)
    }

    /// Subscribes the control subjects and starts the heartbeat.
    async fn start(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<(), BrokerError> {
        let mut replies = self
            .client
            .subscribe(format!("{}.*", self.inbox))
            .await
            .map_err(unavailable)?;
        let broker = self.clone();
        let stop = cancel.clone();
        tracker.spawn(
            async move {
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => break,
                        message = replies.next() => message,
                    };
                    let Some(message) = message else { break };
                    let id = message
                        .subject
                        .rsplit('.')
                        .next()
                        .and_then(|id| id.parse::<u64>().ok());
                    if let Some(waiting) =
                        id.and_then(|id| lock(&broker.requests).get(&id).cloned())
                    {
                        let _ = waiting.send(message.payload);
                    }
                }
            }
            .instrument(info_span!("nats_replies")),
        );
        for subject in [
            self.subjects.own_node(),
            self.subjects.users(),
            self.subjects.stats(),
            self.subjects.presence(),
            self.subjects.registry(),
        ] {
            let mut subscriber = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(unavailable)?;
            let broker = self.clone();
            let cancel = cancel.clone();
            tracker.spawn(
                async move {
                    loop {
                        let message = tokio::select! {
                            () = cancel.cancelled() => break,
                            message = subscriber.next() => message,
                        };
                        let Some(message) = message else { break };
                        broker.handle_control(message).await;
                    }
                }
                .instrument(info_span!("nats_control", %subject)),
            );
        }
        let broker = self.clone();
        tracker.spawn(
            async move {
                let mut hello = true;
                let mut ticker = tokio::time::interval(broker.heartbeat);
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        _ = ticker.tick() => {}
                    }
                    broker.beat(hello, false).await;
                    hello = false;
                    broker.metrics.nodes.set(broker.live_nodes().len() as i64);
                }
            }
            .instrument(info_span!("nats_heartbeat")),
        );
        Ok(())
    }

    /// Publishes a registry heartbeat.
    async fn beat(&self, hello: bool, gone: bool) {
        let heartbeat = Heartbeat {
            node: self.node.clone(),
            interval_ms: self.heartbeat.as_millis() as u64,
            hello,
            gone,
        };
        if let Ok(payload) = serde_json::to_vec(&heartbeat)
            && let Err(error) = self
                .client
                .publish(self.subjects.registry(), payload.into())
                .await
        {
            debug!(%error, "heartbeat not sent");
        }
    }

    /// Live nodes, this one included.
    fn live_nodes(&self) -> HashSet<String> {
        let mut nodes = self.registry.live();
        nodes.insert(self.node.clone());
        nodes
    }

    /// Handles one message on a control subject.
    async fn handle_control(&self, message: Message) {
        let subject = message.subject.as_str();
        if subject == self.subjects.registry() {
            if let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&message.payload) {
                if heartbeat.node != self.node {
                    self.registry.heard(&heartbeat);
                    if heartbeat.hello {
                        self.beat(false, false).await;
                    }
                }
            }
            return;
        }
        if subject == self.subjects.presence() {
            let Ok(request) = serde_json::from_slice::<PresenceRequest>(&message.payload) else {
                return;
            };
            let limit = request.limit.min(MAX_PRESENCE_PAGE);
            let (members, more) = self
                .hub
                .presence(&request.room, request.after.as_ref(), limit);
            let reply = PresenceReply {
                node: self.node.clone(),
                members,
                more,
            };
            self.reply(&message, serde_json::to_vec(&reply).unwrap_or_default())
                .await;
            return;
        }
        if subject == self.subjects.stats() {
            let stats = self.hub.stats();
            self.reply(&message, serde_json::to_vec(&stats).unwrap_or_default())
                .await;
            return;
        }
        let count = match self.subjects.control(subject) {
            Some(Control::Barrier) => {
                let id = std::str::from_utf8(&message.payload)
                    .ok()
                    .and_then(|id| id.parse().ok());
                if let Some(waiter) = id.and_then(|id: u64| lock(&self.barriers).remove(&id)) {
                    let _ = waiter.send(());
                }
                return;
            }
            Some(Control::User { user, verb }) => {
                self.apply(Target::User(user), verb, &message.payload)
            }
            Some(Control::Conn { conn, verb }) => {
                self.apply(Target::Conn(conn), verb, &message.payload)
            }
            None => {
                debug!(subject, "unexpected control subject");
                return;
            }
        };
        let reply = CountReply {
            node: self.node.clone(),
            count,
        };
        self.reply(&message, serde_json::to_vec(&reply).unwrap_or_default())
            .await;
    }

    /// Applies a send or disconnect to the local connections `target` names.
    fn apply(&self, target: Target, verb: Verb, payload: &Bytes) -> u64 {
        match verb {
            Verb::Send => match Utf8Bytes::try_from(payload.clone()) {
                Ok(frame) => self.hub.deliver(&target, &frame) as u64,
                Err(_) => 0,
            },
            Verb::Disconnect => self.hub.disconnect(&target) as u64,
        }
    }

    async fn reply(&self, message: &Message, payload: Vec<u8>) {
        if let Some(reply) = &message.reply
            && let Err(error) = self.client.publish(reply.clone(), payload.into()).await
        {
            debug!(%error, "reply not sent");
        }
    }

    /// Refuses a payload over the server's `max_payload`.
    fn fits(&self, payload: &str) -> Result<(), BrokerError> {
        let limit = self.max_payload();
        if payload.len() > limit {
            return Err(BrokerError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    fn ensure_connected(&self) -> Result<(), BrokerError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(BrokerError::Unavailable(format!(
                "NATS connection is {state}"
            ))),
        }
    }

    /// Waits until the server has processed every command this client sent before.
    async fn barrier(&self) -> Result<(), BrokerError> {
        let id = self.next_barrier.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.barriers).insert(id, tx);
        let result = async {
            self.client
                .publish(self.subjects.barrier(), id.to_string().into())
                .await
                .map_err(unavailable)?;
            match tokio::time::timeout(self.request_timeout, rx).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(BrokerError::Unavailable(
                    "NATS did not confirm the subscription in time".into(),
                )),
            }
        }
        .await;
        lock(&self.barriers).remove(&id);
        result
    }

    /// Publishes `payload` on `subject` and gathers replies from `expected` nodes,
    /// until all have answered or the request timeout passes.
    async fn gather(
        &self,
        subject: String,
        payload: Bytes,
        expected: HashSet<String>,
    ) -> Result<(Vec<Bytes>, bool), BrokerError> {
        Ok(self.start_gather(subject, payload, expected).await?.await)
    }

    /// Publishes the request (in call order) and returns the wait for its
    /// replies, which borrows nothing: a connection can have several in flight.
    async fn start_gather(
        &self,
        subject: String,
        payload: Bytes,
        mut expected: HashSet<String>,
    ) -> Result<BoxFuture<'static, (Vec<Bytes>, bool)>, BrokerError> {
        self.ensure_connected()?;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut replies) = mpsc::unbounded_channel();
        lock(&self.requests).insert(id, tx);
        let forget = Forget {
            requests: self.requests.clone(),
            id,
        };
        let reply_to = format!("{}.{id}", self.inbox);
        self.client
            .publish_with_reply(subject, reply_to, payload)
            .await
            .map_err(unavailable)?;
        self.client.flush().await.map_err(unavailable)?;
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        Ok(async move {
            let _forget = forget;
            let mut answers = Vec::new();
            let mut heard = HashSet::new();
            while !expected.is_empty() {
                let Ok(Some(payload)) = tokio::time::timeout_at(deadline, replies.recv()).await
                else {
                    break;
                };
                #[derive(Deserialize)]
                struct From {
                    node: String,
                }
                let Ok(From { node }) = serde_json::from_slice::<From>(&payload) else {
                    continue;
                };
                if heard.insert(node.clone()) {
                    expected.remove(&node);
                    answers.push(payload);
                }
            }
            // Late or unexpected answers are dropped by the dispatcher once `_forget` runs.
            (answers, !expected.is_empty())
        }
        .boxed())
    }

    /// A count request to `target` on every node that may hold it.
    async fn count(
        &self,
        target: Target,
        verb: Verb,
        payload: Bytes,
    ) -> Result<Gathered, BrokerError> {
        self.start_count(target, verb, payload).await?.await
    }

    /// Publishes a count request; the returned future gathers the counts.
    async fn start_count(
        &self,
        target: Target,
        verb: Verb,
        payload: Bytes,
    ) -> Result<Pending<Gathered>, BrokerError> {
        let (subject, expected) = match &target {
            Target::User(user) => (self.subjects.user(user, verb), self.live_nodes()),
            Target::Conn(conn) => {
                let Some(node) = node_of_conn(conn) else {
                    return Ok(async { Ok(Gathered::default()) }.boxed());
                };
                if node != self.node && !self.registry.is_live(node) {
                    return Ok(async { Ok(Gathered::default()) }.boxed());
                }
                (
                    self.subjects.conn(node, conn, verb),
                    HashSet::from([node.to_owned()]),
                )
            }
        };
        let gathering = self.start_gather(subject, payload, expected).await?;
        Ok(async move {
            let (answers, partial) = gathering.await;
            let count = answers
                .iter()
                .filter_map(|answer| serde_json::from_slice::<CountReply>(answer).ok())
                .map(|reply| reply.count)
                .sum();
            Ok(Gathered { count, partial })
        }
        .boxed())
    }
}

/// Scatter-gather requests in flight: where each request's replies go.
type Requests = Mutex<HashMap<u64, mpsc::UnboundedSender<Bytes>>>;

/// Removes a scatter-gather request from the dispatcher's table when dropped.
struct Forget {
    requests: Arc<Requests>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.requests).remove(&self.id);
    }
}

fn unavailable(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

impl Broker for NatsBroker {
    fn subscribe(&self, room: Arc<Room>) -> BoxFuture<'_, Result<Subscription, BrokerError>> {
        async move {
            self.ensure_connected()?;
            // A history room's messages are stamped with its stream's epoch: know it first.
            if self.streams.keeps_history(room.name()) {
                self.streams.ensure(room.name()).await?;
            }
            let mut subscriber = self
                .client
                .subscribe(self.subjects.room(room.name()))
                .await
                .map_err(unavailable)?;
            self.barrier().await?;
            let span = info_span!("room", room = room.name());
            let epochs = self.streams.epochs_handle();
            let pump = tokio::spawn(
                async move {
                    let mut batch = Vec::new();
                    while let Some(message) = subscriber.next().await {
                        // Messages already received join this one: each member's
                        // writer then sends them in one write.
                        let ready =
                            std::iter::from_fn(|| subscriber.next().now_or_never().flatten());
                        for message in std::iter::once(message).chain(ready).take(ROOM_BATCH) {
                            // Validated as UTF-8 once; plain messages are delivered as they came.
                            let Ok(frame) = Utf8Bytes::try_from(message.payload) else {
                                warn!("dropped a room message that is not UTF-8");
                                continue;
                            };
                            batch.push(match stamped(&epochs, message.headers.as_ref(), &frame) {
                                Some((seq, stamped)) => (Some(seq), Utf8Bytes::from(stamped)),
                                None => (None, frame),
                            });
                        }
                        room.deliver_all(&batch);
                        batch.clear();
                    }
                }
                .instrument(span),
            );
            Ok(Subscription::new(AbortOnDropHandle::new(pump)))
        }
        .boxed()
    }

    fn publish<'a>(
        &'a self,
        room: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            self.ensure_connected()?;
            self.fits(&frame)?;
            self.client
                .publish(self.subjects.room(room), frame.into())
                .await
                .map_err(unavailable)?;
            self.client.flush().await.map_err(unavailable)?;
            Ok(())
        }
        .boxed()
    }

    fn start_publish_stored<'a>(
        &'a self,
        room: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<Pending<u64>, BrokerError>> {
        async move {
            self.ensure_connected()?;
            self.fits(&frame)?;
            let stream = self.streams.ensure(room).await?;
            let subject = format!("{}{room}", stream.prefix);
            // Handed to the connection now, in call order; its failure, like the
            // acknowledgement's, is reported when the result is awaited.
            let sent = self.streams.jetstream.publish(subject, frame.into()).await;
            let ensured = self.streams.ensured.clone();
            let namespace = stream.namespace.clone();
            Ok(async move {
                let acknowledged = match sent {
                    Ok(acknowledgement) => acknowledgement.await,
                    Err(error) => Err(error),
                };
                match acknowledged {
                    Ok(ack) => Ok(ack.sequence),
                    Err(error) => {
                        // The stream may be gone (a NATS restart with memory
                        // storage): look it up again next time.
                        ensured.lock().await.remove(&namespace);
                        Err(BrokerError::Unavailable(format!(
                            "history not stored: {error}"
                        )))
                    }
                }
            }
            .boxed())
        }
        .boxed()
    }

    fn recover<'a>(
        &'a self,
        room: &'a str,
        since: Option<&'a Since>,
    ) -> BoxFuture<'a, Result<Recovery, BrokerError>> {
        async move {
            self.ensure_connected()?;
            let stream = self.streams.ensure(room).await?;
            stream.recover(room, since).await
        }
        .boxed()
    }

    fn start_send(
        &self,
        target: Target,
        frame: String,
    ) -> BoxFuture<'_, Result<Pending<Gathered>, BrokerError>> {
        async move {
            self.fits(&frame)?;
            self.start_count(target, Verb::Send, frame.into()).await
        }
        .boxed()
    }

    fn disconnect(&self, target: Target) -> BoxFuture<'_, Result<Gathered, BrokerError>> {
        self.count(target, Verb::Disconnect, Bytes::new()).boxed()
    }

    fn presence<'a>(
        &'a self,
        room: &'a str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<super::PresencePage, BrokerError>> {
        async move {
            let request = PresenceRequest {
                room: room.to_owned(),
                after,
                limit,
            };
            let payload = serde_json::to_vec(&request)
                .map_err(|error| BrokerError::Internal(error.to_string()))?;
            let (answers, partial) = self
                .gather(self.subjects.presence(), payload.into(), self.live_nodes())
                .await?;
            let pages = answers
                .iter()
                .filter_map(|answer| serde_json::from_slice::<PresenceReply>(answer).ok())
                .map(|reply| (reply.members, reply.more));
            Ok(super::PresencePage::merge(pages, limit, partial))
        }
        .boxed()
    }

    fn stats(&self) -> BoxFuture<'_, Result<ClusterStats, BrokerError>> {
        async move {
            let (answers, partial) = self
                .gather(self.subjects.stats(), Bytes::new(), self.live_nodes())
                .await?;
            let mut nodes: Vec<NodeStats> = answers
                .iter()
                .filter_map(|answer| serde_json::from_slice(answer).ok())
                .collect();
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            Ok(ClusterStats { nodes, partial })
        }
        .boxed()
    }

    fn is_ready(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn max_payload(&self) -> usize {
        match self.client.server_info().max_payload {
            0 => 1024 * 1024,
            limit => limit,
        }
    }

    fn leave_cluster(&self) -> BoxFuture<'_, ()> {
        async move {
            self.beat(false, true).await;
            let _ = tokio::time::timeout(self.request_timeout, self.client.flush()).await;
        }
        .boxed()
    }
}

/// Stamps a message republished by a history stream with its `seq`, `prev`
/// and the stream's epoch; `None` for plain room messages.
fn stamped(
    epochs: &Mutex<HashMap<String, String>>,
    headers: Option<&async_nats::HeaderMap>,
    text: &str,
) -> Option<(u64, String)> {
    let headers = headers?;
    let number = |name| -> Option<u64> { headers.get(name)?.as_str().parse().ok() };
    let seq = number(async_nats::header::NATS_SEQUENCE)?;
    let prev = number(async_nats::header::NATS_LAST_SEQUENCE).unwrap_or(0);
    let stream = headers.get(async_nats::header::NATS_STREAM)?.as_str();
    let epoch = lock(epochs).get(stream).cloned()?;
    Some((seq, stamp(text, seq, prev, &epoch)))
}

/// The JetStream streams that keep history: one per cluster and history
/// namespace, created or updated on first use.
struct Streams {
    jetstream: async_nats::jetstream::Context,
    cluster: String,
    namespaces: Namespaces,
    storage: StorageType,
    replicas: usize,
    /// Shared with acknowledgements in flight, which forget a stream that failed.
    ensured: Arc<tokio::sync::Mutex<HashMap<String, Arc<HistoryStream>>>>,
    /// Stream name → epoch, for stamping republished messages.
    epochs: Arc<Mutex<HashMap<String, String>>>,
}

/// One namespace's history stream.
struct HistoryStream {
    stream: async_nats::jetstream::stream::Stream,
    namespace: String,
    settings: Namespace,
    /// `wsgate.<cluster>.hist.<ns>.`: a room's subject is this plus its name.
    prefix: String,
    epoch: String,
}

impl Streams {
    fn epochs_handle(&self) -> Arc<Mutex<HashMap<String, String>>> {
        self.epochs.clone()
    }

    fn keeps_history(&self, room: &str) -> bool {
        self.namespaces.for_room(room).history_size > 0
    }

    fn config(&self, namespace: &str, settings: &Namespace) -> StreamConfig {
        let prefix = format!("wsgate.{}.hist.{namespace}.", self.cluster);
        StreamConfig {
            name: format!("WSGATE_{}_{namespace}", self.cluster),
            description: Some(format!(
                "wsgate history of namespace {namespace} in cluster {}",
                self.cluster
            )),
            subjects: vec![format!("{prefix}*")],
            max_messages_per_subject: i64::try_from(settings.history_size).unwrap_or(i64::MAX),
            max_age: safety_horizon(settings.history_ttl),
            storage: self.storage,
            num_replicas: self.replicas,
            allow_direct: true,
            republish: Some(Republish {
                source: format!("{prefix}*"),
                destination: format!("wsgate.{}.room.{{{{wildcard(1)}}}}", self.cluster),
                headers_only: false,
            }),
            ..Default::default()
        }
    }

    /// The history stream of `room`'s namespace, created when missing and
    /// updated when its limits differ from the configuration.
    async fn ensure(&self, room: &str) -> Result<Arc<HistoryStream>, BrokerError> {
        let namespace = namespace_name(&self.namespaces, room).to_owned();
        let mut ensured = self.ensured.lock().await;
        if let Some(stream) = ensured.get(&namespace) {
            return Ok(stream.clone());
        }
        let settings = self.namespaces.for_room(room).clone();
        let wanted = self.config(&namespace, &settings);
        let name = wanted.name.clone();
        let mut stream = match self.jetstream.get_stream(&name).await {
            Ok(mut stream) => {
                let current = stream.info().await.map_err(unavailable)?.config.clone();
                if current.storage != wanted.storage {
                    warn!(stream = %name, "history storage changed: recreating the stream (its epoch changes)");
                    self.jetstream
                        .delete_stream(&name)
                        .await
                        .map_err(unavailable)?;
                    self.create(wanted).await?
                } else if current.max_messages_per_subject != wanted.max_messages_per_subject
                    || current.max_age != wanted.max_age
                    || current.num_replicas != wanted.num_replicas
                    || current
                        .republish
                        .as_ref()
                        .map(|r| (&r.source, &r.destination))
                        != wanted
                            .republish
                            .as_ref()
                            .map(|r| (&r.source, &r.destination))
                    || !current.allow_direct
                {
                    info!(stream = %name, "history limits changed: updating the stream");
                    self.jetstream
                        .update_stream(wanted)
                        .await
                        .map_err(unavailable)?;
                    self.jetstream
                        .get_stream(&name)
                        .await
                        .map_err(unavailable)?
                } else {
                    stream
                }
            }
            Err(_) => self.create(wanted).await?,
        };
        let created = stream.info().await.map_err(unavailable)?.created;
        let epoch = format!("{:x}", created.unix_timestamp_nanos());
        lock(&self.epochs).insert(name, epoch.clone());
        let prefix = format!("wsgate.{}.hist.{namespace}.", self.cluster);
        let history = Arc::new(HistoryStream {
            stream,
            namespace: namespace.clone(),
            settings,
            prefix,
            epoch,
        });
        ensured.insert(namespace, history.clone());
        Ok(history)
    }

    async fn create(
        &self,
        config: StreamConfig,
    ) -> Result<async_nats::jetstream::stream::Stream, BrokerError> {
        let name = config.name.clone();
        match self.jetstream.create_stream(config).await {
            Ok(stream) => {
                info!(stream = %name, "history stream created");
                Ok(stream)
            }
            // Another gateway may have created it first.
            Err(error) => self
                .jetstream
                .get_stream(&name)
                .await
                .map_err(|_| unavailable(error)),
        }
    }
}

fn unix_nanos_now() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i128)
}

impl HistoryStream {
    /// The room's position and, with `since`, the messages after it. Reads with
    /// direct gets: one request per stored message after `since`.
    async fn recover(&self, room: &str, since: Option<&Since>) -> Result<Recovery, BrokerError> {
        let subject = format!("{}{room}", self.prefix);
        let current = match self
            .stream
            .direct_get_last_for_subject(subject.clone())
            .await
        {
            Ok(message) => message.sequence,
            Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => 0,
            Err(error) => return Err(unavailable(error)),
        };
        let since_pair = since.map(|since| (since.epoch.as_str(), since.seq));
        let Some(since) = since.filter(|since| since.epoch == self.epoch && since.seq < current)
        else {
            return Ok(recover(
                &self.epoch,
                since_pair,
                current,
                Vec::new(),
                self.settings.recovery_max,
            ));
        };
        let ttl = self.settings.history_ttl;
        let now = unix_nanos_now();
        let mut entries: Vec<Entry> = Vec::new();
        let mut next = since.seq + 1;
        // Bounded: a subject holds at most history_size messages.
        let bound = self.settings.history_size.saturating_add(1);
        while next <= current && (entries.len() as u64) < bound {
            let message = match self
                .stream
                .direct_get_next_for_subject(subject.clone(), Some(next))
                .await
            {
                Ok(message) => message,
                Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => break,
                Err(error) => return Err(unavailable(error)),
            };
            let Ok(frame) = String::from_utf8(message.payload.to_vec()) else {
                next = message.sequence + 1;
                continue;
            };
            let age = now - message.time.unix_timestamp_nanos();
            let fresh = ttl.is_zero() || age <= ttl.as_nanos() as i128;
            let prev = entries.last().map(|entry| entry.seq);
            entries.push(Entry {
                seq: message.sequence,
                prev,
                fresh,
                frame,
            });
            next = message.sequence + 1;
        }
        // The first entry's prev: `since` itself when that message is still
        // stored; 0 when `since` is 0 and nothing was ever evicted.
        let anchor = if since.seq == 0 {
            ((entries.len() as u64) < self.settings.history_size).then_some(0)
        } else {
            match self.stream.direct_get(since.seq).await {
                Ok(message) if message.subject.as_str() == subject => Some(since.seq),
                Ok(_) => None,
                Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => None,
                Err(error) => return Err(unavailable(error)),
            }
        };
        if let Some(first) = entries.first_mut() {
            first.prev = anchor;
        }
        Ok(recover(
            &self.epoch,
            since_pair,
            current,
            entries,
            self.settings.recovery_max,
        ))
    }
}
