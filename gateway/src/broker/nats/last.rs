//! The last-value store on JetStream: one stream per cluster,
//! `WSGATE-LAST_<cluster>`, on `wsgate.<cluster>.last.>`, that keeps one
//! message per subject (a key's last frame) for [`LAST_TTL`] (`max_age`), all
//! within [`LAST_MAX_BYTES`] (the oldest discarded first). Written by a
//! JetStream publish, read from the stream's leader (never a direct get,
//! which a lagging replica may answer): once a publish is acknowledged, every
//! node reads it or a later one. Created on first use, with the history's
//! storage and replicas.

use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, LastRawMessageErrorKind, StorageType, Stream,
};
use wsgate_config::History;

use super::unavailable;
use crate::broker::BrokerError;
use crate::broker::last::{LAST_MAX_BYTES, LAST_TTL};

/// The cluster's last-value stream, ensured on first use.
pub(super) struct LastValues {
    jetstream: async_nats::jetstream::Context,
    cluster: String,
    storage: StorageType,
    replicas: usize,
    /// The stream once ensured; forgotten after a failure, so that a NATS
    /// restart (which may lose a memory stream) is recovered from.
    stream: tokio::sync::Mutex<Option<Stream>>,
}

impl LastValues {
    pub(super) fn new(client: &async_nats::Client, cluster: &str, history: &History) -> Self {
        Self {
            jetstream: async_nats::jetstream::new(client.clone()),
            cluster: cluster.to_owned(),
            storage: super::jetstream::storage_type(history.storage),
            replicas: history.replicas.max(1) as usize,
            stream: tokio::sync::Mutex::default(),
        }
    }

    fn subject(&self, key: &str) -> String {
        format!("wsgate.{}.last.{key}", self.cluster)
    }

    fn config(&self) -> StreamConfig {
        StreamConfig {
            // Not `WSGATE_<cluster>_<ns>`: no history namespace can take it.
            name: format!("WSGATE-LAST_{}", self.cluster),
            description: Some(format!(
                "wsgate's last frame per key (Pusher cache channels) in cluster {}",
                self.cluster
            )),
            subjects: vec![format!("wsgate.{}.last.>", self.cluster)],
            max_messages_per_subject: 1,
            max_age: LAST_TTL,
            max_bytes: i64::try_from(LAST_MAX_BYTES).unwrap_or(i64::MAX),
            discard: DiscardPolicy::Old,
            storage: self.storage,
            num_replicas: self.replicas,
            // Reads go to the leader (see the module docs).
            allow_direct: false,
            ..Default::default()
        }
    }

    /// The stream, created (or brought to this configuration) when first used.
    async fn ensure(&self) -> Result<Stream, BrokerError> {
        let mut ensured = self.stream.lock().await;
        if let Some(stream) = &*ensured {
            return Ok(stream.clone());
        }
        let config = self.config();
        let name = config.name.clone();
        let stream = match self.jetstream.create_or_update_stream(config).await {
            Ok(_) => self
                .jetstream
                .get_stream(&name)
                .await
                .map_err(unavailable)?,
            // Another node's settings (say, another storage) cannot be
            // updated in place: use the stream as it is.
            Err(error) => self
                .jetstream
                .get_stream(&name)
                .await
                .map_err(|_| unavailable(error))?,
        };
        *ensured = Some(stream.clone());
        Ok(stream)
    }

    async fn forget(&self) {
        *self.stream.lock().await = None;
    }

    /// Keeps `frame` as `key`'s last; resolves once JetStream stored it.
    pub(super) async fn keep(&self, key: &str, frame: String) -> Result<(), BrokerError> {
        self.ensure().await?;
        let stored = async {
            self.jetstream
                .publish(self.subject(key), frame.into())
                .await
                .map_err(unavailable)?
                .await
                .map_err(unavailable)
        }
        .await;
        if stored.is_err() {
            self.forget().await;
        }
        stored.map(|_| ())
    }

    /// `key`'s last frame, if one is kept.
    pub(super) async fn get(&self, key: &str) -> Result<Option<String>, BrokerError> {
        let stream = self.ensure().await?;
        match stream
            .get_last_raw_message_by_subject(&self.subject(key))
            .await
        {
            Ok(message) => Ok(String::from_utf8(message.payload.to_vec()).ok()),
            Err(error) if matches!(error.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                Ok(None)
            }
            Err(error) => {
                self.forget().await;
                Err(unavailable(error))
            }
        }
    }
}
