//! The answering side: what this node does with the messages on its control
//! subjects — other nodes' heartbeats, presence and stats requests, sends and
//! disconnects addressed to its users or connections, and its own barriers.

use std::sync::Arc;

use async_nats::Message;
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info_span};

use super::gather::{CountReply, PresenceReply, PresenceRequest};
use super::subject::{Control, Verb};
use super::{NatsBroker, unavailable};
use crate::broker::BrokerError;
use crate::protocol::Target;

/// The most members one node returns for one presence page.
const MAX_PRESENCE_PAGE: usize = 10_000;

impl NatsBroker {
    /// Subscribes the control subjects, one task each.
    pub(super) async fn start_control(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<(), BrokerError> {
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
        Ok(())
    }

    /// Handles one message on a control subject.
    async fn handle_control(&self, message: Message) {
        let subject = message.subject.as_str();
        if subject == self.subjects.registry() {
            self.on_heartbeat(&message.payload).await;
            return;
        }
        if subject == self.subjects.presence() {
            let Ok(request) = serde_json::from_slice::<PresenceRequest>(&message.payload) else {
                return;
            };
            let limit = request.limit.min(MAX_PRESENCE_PAGE);
            let (members, more) = self
                .local
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
            let mut stats = self.local.stats();
            stats.history = self.streams.availability.snapshot();
            self.reply(&message, serde_json::to_vec(&stats).unwrap_or_default())
                .await;
            return;
        }
        let count = match self.subjects.control(subject) {
            Some(Control::Barrier) => {
                self.barriers.passed(&message.payload);
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
                Ok(frame) => self.local.send(&target, &frame) as u64,
                Err(_) => 0,
            },
            Verb::Disconnect => self.local.disconnect(&target) as u64,
        }
    }

    async fn reply(&self, message: &Message, payload: Vec<u8>) {
        if let Some(reply) = &message.reply
            && let Err(error) = self.client.publish(reply.clone(), payload.into()).await
        {
            debug!(%error, "reply not sent");
        }
    }
}
