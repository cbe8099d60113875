//! Scatter-gather, the asking side: a request published to every node that may
//! hold its target, and the wait for each live node's answer, or the request
//! timeout, after which the result is `partial`. Answers arrive on this node's
//! inbox through one long-lived subscription and are dispatched by request id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, info_span};

use super::subject::{Verb, node_of_conn};
use super::{NatsBroker, unavailable};
use crate::broker::{Ack, BrokerError, ClusterStats, Gathered, NodeStats, PresencePage, Present};
use crate::protocol::Target;

/// A node's answer to a scatter-gather count request.
#[derive(Serialize, Deserialize)]
pub(super) struct CountReply {
    pub(super) node: String,
    pub(super) count: u64,
}

/// A presence page request, scattered to every node.
#[derive(Serialize, Deserialize)]
pub(super) struct PresenceRequest {
    pub(super) room: String,
    pub(super) after: Option<(String, String)>,
    pub(super) limit: usize,
}

/// One node's page of a room's members.
#[derive(Serialize, Deserialize)]
pub(super) struct PresenceReply {
    pub(super) node: String,
    pub(super) members: Vec<Present>,
    pub(super) more: bool,
}

/// Where each request in flight wants its answers.
type Table = Mutex<HashMap<u64, mpsc::UnboundedSender<Bytes>>>;

/// The requests this node has in flight.
pub(super) struct Requests {
    /// This node's reply inbox: answers arrive on `<inbox>.<request id>`.
    inbox: String,
    table: Arc<Table>,
    next: AtomicU64,
}

impl Requests {
    pub(super) fn new(inbox: String) -> Self {
        Self {
            inbox,
            table: Arc::default(),
            next: AtomicU64::new(1),
        }
    }
}

/// Removes a request from the dispatcher's table when dropped.
struct Forget {
    table: Arc<Table>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

/// The wait for a request's answers: each answer, and whether a node was missing.
type Gathering = futures::future::BoxFuture<'static, (Vec<Bytes>, bool)>;

impl NatsBroker {
    /// Subscribes the reply inbox and dispatches each answer to its request.
    pub(super) async fn start_replies(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<(), BrokerError> {
        let mut replies = self
            .client
            .subscribe(format!("{}.*", self.requests.inbox))
            .await
            .map_err(unavailable)?;
        let table = self.requests.table.clone();
        tracker.spawn(
            async move {
                loop {
                    let message = tokio::select! {
                        () = cancel.cancelled() => break,
                        message = replies.next() => message,
                    };
                    let Some(message) = message else { break };
                    let id = message
                        .subject
                        .rsplit('.')
                        .next()
                        .and_then(|id| id.parse::<u64>().ok());
                    if let Some(waiting) = id.and_then(|id| table.lock().get(&id).cloned()) {
                        let _ = waiting.send(message.payload);
                    }
                }
            }
            .instrument(info_span!("nats_replies")),
        );
        Ok(())
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
    ) -> Result<Gathering, BrokerError> {
        self.ensure_connected()?;
        let requests = &self.requests;
        let id = requests.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut replies) = mpsc::unbounded_channel();
        requests.table.lock().insert(id, tx);
        let forget = Forget {
            table: requests.table.clone(),
            id,
        };
        let reply_to = format!("{}.{id}", requests.inbox);
        self.client
            .publish_with_reply(subject, reply_to, payload)
            .await
            .map_err(unavailable)?;
        self.client.flush().await.map_err(unavailable)?;
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        Ok(Box::pin(async move {
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
        }))
    }

    /// Publishes a count request to `target` on every node that may hold it;
    /// the acknowledgement gathers the counts.
    pub(super) async fn start_count(
        &self,
        target: Target,
        verb: Verb,
        payload: Bytes,
    ) -> Ack<Gathered> {
        let (subject, expected) = match &target {
            Target::User(user) => (self.subjects.user(user, verb), self.live_nodes()),
            Target::Conn(conn) => {
                let Some(node) = node_of_conn(conn) else {
                    return Ack::ready(Ok(Gathered::default()));
                };
                if node != self.node && !self.registry.is_live(node) {
                    return Ack::ready(Ok(Gathered::default()));
                }
                (
                    self.subjects.conn(node, conn, verb),
                    HashSet::from([node.to_owned()]),
                )
            }
        };
        let gathering = match self.start_gather(subject, payload, expected).await {
            Ok(gathering) => gathering,
            Err(error) => return Ack::failed(error),
        };
        Ack::later(async move {
            let (answers, partial) = gathering.await;
            let count = answers
                .iter()
                .filter_map(|answer| serde_json::from_slice::<CountReply>(answer).ok())
                .map(|reply| reply.count)
                .sum();
            Ok(Gathered { count, partial })
        })
    }

    /// A page of `room`'s members from every live node.
    pub(super) async fn gather_presence(
        &self,
        room: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<PresencePage, BrokerError> {
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
        Ok(PresencePage::merge(pages, limit, partial))
    }

    /// Every live node's counts.
    pub(super) async fn gather_stats(&self) -> Result<ClusterStats, BrokerError> {
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
}
