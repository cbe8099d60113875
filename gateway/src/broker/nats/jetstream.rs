//! History on JetStream: one stream per cluster and history namespace, created
//! or updated on first use, which republishes every stored message on its
//! room's subject (stamped there with `seq`, `prev` and the epoch); publishing
//! to it, and recovery by direct gets, newest first, reading at most
//! `recovery_max` + 1 messages whatever `history_size` is.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{
    Config as StreamConfig, DirectGetErrorKind, DiscardPolicy, Republish, StorageType,
};
use async_nats::{Client, StatusCode};
use parking_lot::Mutex;
use tracing::{info, warn};
use wsgate_config::{History, Namespace, Namespaces, Storage};

use super::unavailable;
use crate::broker::history::{Entry, Recovery, namespace_name, recover, safety_horizon};
use crate::broker::{Ack, Availability, BrokerError};
use crate::metrics::{Metrics, nats_error};
use crate::protocol::Since;

/// The JetStream streams that keep history: one per cluster and history
/// namespace, created or updated on first use.
pub(super) struct Streams {
    jetstream: async_nats::jetstream::Context,
    cluster: String,
    namespaces: Namespaces,
    storage: StorageType,
    replicas: usize,
    /// Shared with acknowledgements in flight, which forget a stream that failed.
    ensured: Arc<tokio::sync::Mutex<HashMap<String, Arc<HistoryStream>>>>,
    /// Whether each history namespace can store messages.
    pub(super) availability: Arc<Availability>,
    /// Stream name → epoch, for stamping republished messages.
    epochs: Arc<Mutex<HashMap<String, String>>>,
    /// Publish latency and failures.
    metrics: Arc<Metrics>,
}

/// One namespace's history stream.
pub(super) struct HistoryStream {
    stream: async_nats::jetstream::stream::Stream,
    /// For the direct gets async-nats has no call for (see
    /// [`HistoryStream::last_up_to`]).
    client: Client,
    namespace: String,
    settings: Namespace,
    /// `wsgate.<cluster>.hist.<ns>.`: a room's subject is this plus its name.
    prefix: String,
    epoch: String,
}

impl Streams {
    pub(super) fn new(
        client: &Client,
        cluster: &str,
        namespaces: Namespaces,
        history: &History,
        availability: Arc<Availability>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            jetstream: async_nats::jetstream::new(client.clone()),
            cluster: cluster.to_owned(),
            namespaces,
            storage: storage_type(history.storage),
            replicas: history.replicas.max(1) as usize,
            ensured: Arc::default(),
            availability,
            epochs: Arc::default(),
            metrics,
        }
    }

    /// Hands a `message` frame to its room's stream, in call order; the
    /// acknowledgement resolves with its seq once JetStream stored it.
    pub(super) async fn publish(&self, room: &str, frame: String) -> Ack<u64> {
        let stream = match self.ensure(room).await {
            Ok(stream) => stream,
            Err(error) => return Ack::failed(error),
        };
        let subject = format!("{}{room}", stream.prefix);
        let start = std::time::Instant::now();
        let metrics = self.metrics.clone();
        // Handed to the connection now, in call order; its failure, like the
        // acknowledgement's, is reported when the acknowledgement is awaited.
        let sent = self.jetstream.publish(subject, frame.into()).await;
        let ensured = self.ensured.clone();
        let availability = self.availability.clone();
        let namespace = stream.namespace.clone();
        Ack::later(async move {
            let acknowledged = match sent {
                Ok(acknowledgement) => acknowledgement.await,
                Err(error) => Err(error),
            };
            match acknowledged {
                Ok(ack) => {
                    metrics
                        .jetstream_publish_seconds
                        .observe(start.elapsed().as_secs_f64());
                    Ok(ack.sequence)
                }
                Err(error) => {
                    metrics.nats_error(nats_error::JETSTREAM_PUBLISH);
                    // The stream may be gone (a NATS restart with memory
                    // storage): look it up again next time.
                    ensured.lock().await.remove(&namespace);
                    let error = BrokerError::Unavailable(format!("history not stored: {error}"));
                    availability.down(&namespace, &error);
                    Err(error)
                }
            }
        })
    }

    pub(super) fn epochs_handle(&self) -> Arc<Mutex<HashMap<String, String>>> {
        self.epochs.clone()
    }

    pub(super) fn keeps_history(&self, room: &str) -> bool {
        // Pusher channels keep none: their rooms are in no namespace.
        !super::subject::is_pusher(room) && self.namespaces.for_room(room).history_size > 0
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
            // The namespace's budgets: any number of rooms fits within them,
            // the oldest messages making way for new ones.
            max_bytes: i64::try_from(settings.history_max_bytes).unwrap_or(i64::MAX),
            max_messages: i64::try_from(settings.history_max_msgs).unwrap_or(i64::MAX),
            discard: DiscardPolicy::Old,
            // With a time to live, a room's last message is kept up to the
            // safety horizon; without one, messages are kept until pushed out
            // by the size and the budgets, as docs/config.md says.
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
    pub(super) async fn ensure(&self, room: &str) -> Result<Arc<HistoryStream>, BrokerError> {
        let namespace = namespace_name(&self.namespaces, room);
        let result = self.ensure_namespace(namespace).await;
        if let Err(error) = &result {
            self.availability.down(namespace, error);
        }
        result
    }

    /// Checks that `namespace`'s stream can be reached (creating it when
    /// missing), and records the outcome in the availability.
    pub(super) async fn check(&self, namespace: &str) {
        let checked = match self.ensure_namespace(namespace).await {
            Ok(history) => match history.stream.clone().info().await {
                Ok(_) => Ok(()),
                Err(error) => {
                    self.ensured.lock().await.remove(namespace);
                    Err(unavailable(error))
                }
            },
            Err(error) => Err(error),
        };
        match checked {
            Ok(()) => self.availability.up(namespace),
            Err(error) => self.availability.down(namespace, &error),
        }
    }

    /// The history stream of `namespace`, created or updated as [`Streams::ensure`] says.
    async fn ensure_namespace(&self, namespace: &str) -> Result<Arc<HistoryStream>, BrokerError> {
        let namespace = namespace.to_owned();
        let mut ensured = self.ensured.lock().await;
        if let Some(stream) = ensured.get(&namespace) {
            return Ok(stream.clone());
        }
        let settings = self
            .namespaces
            .named
            .get(&namespace)
            .unwrap_or(&self.namespaces.default)
            .clone();
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
                    || current.max_bytes != wanted.max_bytes
                    || current.max_messages != wanted.max_messages
                    || current.discard != wanted.discard
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
        self.epochs.lock().insert(name, epoch.clone());
        let prefix = format!("wsgate.{}.hist.{namespace}.", self.cluster);
        let history = Arc::new(HistoryStream {
            stream,
            client: self.jetstream.client(),
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

/// JetStream's name for `history.storage`, which every stream of the gateway uses.
pub(super) fn storage_type(storage: Storage) -> StorageType {
    match storage {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    }
}

fn unix_nanos_now() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i128)
}

impl HistoryStream {
    /// Whether the stream ever lost a message from its front: the budgets
    /// (`max_bytes`, `max_msgs`) and `max_age` discard the oldest messages, so
    /// any of them leaves the first stored seq above 1. Eviction by a room's
    /// own `history_size` may too, which only makes the answer cautious.
    async fn discarded_any(&self) -> Result<bool, BrokerError> {
        let info = self.stream.get_info().await.map_err(unavailable)?;
        Ok(info.state.first_sequence > 1)
    }

    /// The room's position and, with `since`, the messages after it.
    ///
    /// Reads by direct gets, newest first: the room's last message, then each
    /// one's predecessor, until `since` is reached or `recovery_max` + 1
    /// messages are read (one more than a reply holds tells that more were
    /// missed). The cost of a join with `since` is so bounded by
    /// `recovery_max`, however long the room's history (`history_size`).
    pub(super) async fn recover(
        &self,
        room: &str,
        since: Option<&Since>,
    ) -> Result<Recovery, BrokerError> {
        let subject = format!("{}{room}", self.prefix);
        let last = match self
            .stream
            .direct_get_last_for_subject(subject.clone())
            .await
        {
            Ok(message) => Some(message),
            Err(error) if matches!(error.kind(), DirectGetErrorKind::NotFound) => None,
            Err(error) => return Err(unavailable(error)),
        };
        let current = last.as_ref().map_or(0, |message| message.sequence);
        let since_pair = since.map(|since| (since.epoch.as_str(), since.seq));
        let max = self.settings.recovery_max;
        let Some(since) = since.filter(|since| since.epoch == self.epoch && since.seq < current)
        else {
            let mut recovery = recover(&self.epoch, since_pair, current, Vec::new(), max);
            // An empty room may be one whose every message the budgets or
            // max_age discarded after the client's seq 0.
            if recovery.recovered && current == 0 && self.discarded_any().await? {
                recovery.recovered = false;
            }
            return Ok(recovery);
        };
        // Newest first, each message's predecessor read after it.
        let mut newest_first: Vec<StreamMessage> = Vec::new();
        let mut older = last;
        // The seq of the room's message before the oldest one read, when stored.
        let anchor = loop {
            let Some(message) = older else {
                // Nothing older is stored: with `since` 0 the oldest message
                // read is the room's first, unless history_size pushed older
                // ones out, or the stream's budgets or max_age discarded any.
                let first = since.seq == 0
                    && (newest_first.len() as u64) < self.settings.history_size
                    && !self.discarded_any().await?;
                break first.then_some(0);
            };
            if message.sequence <= since.seq {
                break Some(message.sequence);
            }
            let before = message.sequence - 1;
            newest_first.push(message);
            if newest_first.len() > max {
                // More than `recovery_max` were missed: `recover` keeps the
                // newest and says `recovered: false` whatever comes before.
                break None;
            }
            // Stream sequences start at 1 (and `up_to_seq` 0 would mean none).
            older = match before {
                0 => None,
                before => self.last_up_to(&subject, before).await?,
            };
        };
        let ttl = self.settings.history_ttl;
        let now = unix_nanos_now();
        let prevs: Vec<Option<u64>> = newest_first
            .iter()
            .skip(1)
            .map(|message| Some(message.sequence))
            .chain([anchor])
            .collect();
        let entries = newest_first
            .into_iter()
            .zip(prevs)
            .rev()
            .filter_map(|(message, prev)| {
                let frame = String::from_utf8(message.payload.to_vec()).ok()?;
                let age = now - message.time.unix_timestamp_nanos();
                Some(Entry {
                    seq: message.sequence,
                    prev,
                    fresh: ttl.is_zero() || age <= ttl.as_nanos() as i128,
                    frame,
                })
            })
            .collect();
        Ok(recover(&self.epoch, since_pair, current, entries, max))
    }

    /// The room's last message at or before stream sequence `seq` (at least
    /// 1), or `None` when none is stored.
    ///
    /// A direct get with `multi_last` and `up_to_seq` (nats-server 2.11 and
    /// later), which async-nats 0.51 cannot send: the server answers the
    /// message, then an end-of-batch status that the request no longer waits
    /// for; or 404 when there is none.
    async fn last_up_to(
        &self,
        subject: &str,
        seq: u64,
    ) -> Result<Option<StreamMessage>, BrokerError> {
        let request = serde_json::json!({ "multi_last": [subject], "up_to_seq": seq });
        let api = format!(
            "$JS.API.DIRECT.GET.{}",
            self.stream.cached_info().config.name
        );
        let reply = self
            .client
            .request(api, request.to_string().into())
            .await
            .map_err(unavailable)?;
        match reply.status {
            None => StreamMessage::try_from(reply)
                .map(Some)
                .map_err(unavailable),
            Some(StatusCode::NOT_FOUND) => Ok(None),
            Some(status) => Err(BrokerError::Unavailable(format!(
                "history read failed: {status} {}",
                reply.description.as_deref().unwrap_or_default()
            ))),
        }
    }
}
