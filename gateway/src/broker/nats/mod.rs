//! The NATS broker: rooms, direct messages and stats across replicas.
//!
//! - **Rooms** (`rooms`). One core-NATS subject per room; a node subscribes
//!   while it has local members. A subscription is reported active only after a
//!   *barrier*: a message this node publishes to its own barrier subject after
//!   the SUB and receives back, which proves the server processed the SUB (the
//!   server handles one connection's commands in order). A publish is one NATS
//!   publish; every subscribed node, the publisher's included, gets it exactly
//!   once.
//! - **Node registry** (`registry`). Every node publishes a heartbeat on
//!   `wsgate.<cluster>.nodes` every `nats.node_heartbeat_ms` and forgets a node
//!   not heard from for three of its intervals; a leaving node says so, and a
//!   starting node says hello so the others answer at once.
//! - **Scatter-gather** (`gather`, and `control` for the answering side). A
//!   `send` or `disconnect` to a user, and `stats`, go to every node; each
//!   answers with its count (0 included). The requester waits for every live
//!   node, or `nats.request_timeout_ms`, then reports `partial`.
//!   Connection-addressed operations go to the one node the id names.
//! - **History** (`jetstream`). One JetStream stream per history namespace,
//!   which republishes each stored message on the room's subject.
//! - **Last values** (`last`). One JetStream stream keeping a key's last
//!   frame (Pusher's cache channels).
//!
//! This file holds the connection and the [`Broker`] implementation, which
//! delegates to those modules.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::connection::State;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info, info_span, warn};
use wsgate_config::{Config, NatsConfig};

use super::{
    Ack, Availability, Broker, BrokerError, ClusterStats, Gathered, LocalNode, PresencePage,
    Recovery, RoomSink, Subscription,
};
use crate::metrics::{Metrics, nats_error};
use crate::protocol::{Since, Target};

mod control;
mod gather;
mod jetstream;
mod last;
mod registry;
mod rooms;
mod subject;
mod unreachable;

use gather::Requests;
use jetstream::Streams;
use last::LastValues;
use registry::Registry;
use rooms::Barriers;
use subject::{Subjects, Verb};
use unreachable::UnreachableLog;

/// The NATS-backed broker.
pub struct NatsBroker {
    client: Client,
    subjects: Subjects,
    node: String,
    /// This node's connections, for the requests of other nodes.
    local: Arc<dyn LocalNode>,
    registry: Registry,
    requests: Requests,
    barriers: Barriers,
    streams: Streams,
    last: LastValues,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl NatsBroker {
    /// Connects to the NATS servers `url` lists (comma-separated; retrying in
    /// the background while NATS is unreachable), as `config`'s node of its
    /// cluster, and starts the control subscriptions and the heartbeat, as
    /// tasks of `tracker` that end with `cancel`.
    ///
    /// # Errors
    /// When the options are unusable (a credentials file that cannot be read, an
    /// invalid URL).
    pub async fn connect(
        url: &str,
        config: &Config,
        local: Arc<dyn LocalNode>,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, BrokerError> {
        let Config {
            cluster,
            node,
            nats,
            namespaces,
            history,
            ..
        } = config;
        let NatsConfig {
            credentials_file,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            ping_interval,
            node_heartbeat,
            request_timeout,
        } = nats;
        let (ping_interval, node_heartbeat, request_timeout) =
            (*ping_interval, *node_heartbeat, *request_timeout);
        let event_metrics = metrics.clone();
        let unreachable = Arc::new(UnreachableLog::default());
        let event_unreachable = unreachable.clone();
        // The first `Connected` is the connection; every later one a reconnect.
        let connected_before = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
            // Called before every attempt, with each server's last error: the cause of an
            // outage, which the events only give as "IO error". Never picks a server itself.
            .reconnect_to_server_callback(move |pool, _info| {
                unreachable.report(&pool, std::time::Instant::now());
                std::future::ready(None)
            })
            .event_callback(move |event| {
                let metrics = event_metrics.clone();
                let unreachable = event_unreachable.clone();
                let connected_before = connected_before.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            metrics.broker_connected.set(1);
                            unreachable.connected();
                            if connected_before.swap(true, std::sync::atomic::Ordering::Relaxed) {
                                metrics.nats_reconnects.inc();
                            }
                            info!("nats connected");
                        }
                        async_nats::Event::Disconnected => {
                            metrics.broker_connected.set(0);
                            warn!("nats disconnected");
                        }
                        async_nats::Event::ServerError(_) => {
                            metrics.nats_error(nats_error::SERVER);
                            warn!(event = %event, "nats error");
                        }
                        async_nats::Event::ClientError(_) => {
                            metrics.nats_error(nats_error::CLIENT);
                            debug!(event = %event, "nats error");
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            metrics.nats_error(nats_error::SLOW_CONSUMER);
                            warn!(event = %event, "nats slow consumer");
                        }
                        other => debug!(event = %other, "nats event"),
                    }
                }
            });
        if let Some(path) = credentials_file {
            connect = connect.credentials_file(path).await.map_err(|error| {
                BrokerError::Internal(format!(
                    "reading nats.credentials_file {}: {error}",
                    path.display()
                ))
            })?;
        }
        if let Some(path) = tls_ca_file {
            connect = connect
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        if let (Some(cert), Some(key)) = (tls_cert_file, tls_key_file) {
            connect = connect
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
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
        let broker = Arc::new(Self {
            streams: Streams::new(
                &client,
                cluster,
                namespaces.clone(),
                history,
                Arc::new(Availability::new(metrics.clone(), namespaces, false)),
                metrics.clone(),
            ),
            last: LastValues::new(&client, cluster, history),
            requests: Requests::new(client.new_inbox()),
            client,
            subjects: Subjects::new(cluster, node),
            node: node.clone(),
            local,
            registry: Registry::new(node_heartbeat),
            barriers: Barriers::default(),
            request_timeout,
            metrics,
        });
        broker.start(tracker, cancel).await?;
        Ok(broker)
    }

    /// Subscribes the reply inbox and the control subjects, and starts the heartbeat.
    async fn start(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<(), BrokerError> {
        self.start_replies(tracker, cancel.clone()).await?;
        self.start_control(tracker, cancel.clone()).await?;
        self.start_heartbeat(tracker, cancel.clone());
        self.start_history_check(tracker, cancel);
        Ok(())
    }

    /// Checks every history namespace now and then every five heartbeats, so
    /// that `wsgate_history_available` and the stats tell whether history can
    /// be stored before a publish finds out.
    fn start_history_check(self: &Arc<Self>, tracker: &TaskTracker, cancel: CancellationToken) {
        let namespaces = self.streams.availability.namespaces();
        if namespaces.is_empty() {
            return;
        }
        let broker = self.clone();
        let every = self.registry.interval().saturating_mul(5);
        tracker.spawn(
            async move {
                let mut ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        _ = ticker.tick() => {}
                    }
                    for namespace in &namespaces {
                        if broker.ensure_connected().is_ok() {
                            broker.streams.check(namespace).await;
                        } else {
                            broker
                                .streams
                                .availability
                                .down(namespace, &"the NATS connection is down");
                        }
                    }
                }
            }
            .instrument(info_span!("history_check")),
        );
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
}

fn unavailable(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(error.to_string())
}

impl Broker for NatsBroker {
    fn subscribe<'a>(
        &'a self,
        room: &'a str,
        members: Arc<dyn RoomSink>,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>> {
        self.subscribe_room(room, members).boxed()
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

    fn publish_stored<'a>(&'a self, room: &'a str, frame: String) -> BoxFuture<'a, Ack<u64>> {
        async move {
            if let Err(error) = self.ensure_connected().and_then(|()| self.fits(&frame)) {
                return Ack::failed(error);
            }
            self.streams.publish(room, frame).await
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

    fn keep_last<'a>(
        &'a self,
        key: &'a str,
        frame: String,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        async move {
            self.ensure_connected()?;
            self.fits(&frame)?;
            self.last.keep(key, frame).await
        }
        .boxed()
    }

    fn last<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        async move {
            self.ensure_connected()?;
            self.last.get(key).await
        }
        .boxed()
    }

    fn send(&self, target: Target, frame: String) -> BoxFuture<'_, Ack<Gathered>> {
        async move {
            if let Err(error) = self.fits(&frame) {
                return Ack::failed(error);
            }
            self.start_count(target, Verb::Send, frame.into()).await
        }
        .boxed()
    }

    fn disconnect(&self, target: Target) -> BoxFuture<'_, Result<Gathered, BrokerError>> {
        async move {
            self.start_count(target, Verb::Disconnect, bytes::Bytes::new())
                .await
                .await
        }
        .boxed()
    }

    fn presence<'a>(
        &'a self,
        room: &'a str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<PresencePage, BrokerError>> {
        self.gather_presence(room, after, limit).boxed()
    }

    fn stats(&self) -> BoxFuture<'_, Result<ClusterStats, BrokerError>> {
        self.gather_stats().boxed()
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

    fn report_load(&self, report: super::LoadReport) {
        self.registry.set_report(report);
    }

    fn fleet(&self) -> super::Fleet {
        self.fleet_loads()
    }
}
