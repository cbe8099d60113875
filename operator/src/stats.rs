//! Reading the gateways' stats (`GET /api/v1/stats` on the admin port).
//!
//! The operator authenticates with its own API key: the first line of the
//! API keys Secret it owns per WsCluster (see
//! [`resources::api_keys_secret`]). It needs no access to pods.
//!
//! Each reading also sets the `HistoryAvailable` condition (see
//! [`status::history_condition`]) from the nodes' `history` maps, or
//! `Unknown` when the stats cannot be read, and with a connections target
//! `ScalingActive` (see [`status::scaling_condition`]). The poller owns
//! those conditions; the reconciler carries them over. The poller writes the conditions with the
//! WsCluster's `resourceVersion` as a precondition, so it never overwrites a
//! status the reconciler wrote since: a conflict is retried at the next
//! reading.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{Client as HttpClient, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wsgate_crds::WsCluster;
use wsgate_crds::condition::{HISTORY_AVAILABLE, SCALING_ACTIVE};

use crate::autoscale::{Autoscaler, Reading, Target};
use crate::metrics::Metrics;
use crate::owned_secret::OwnedSecrets;
use crate::status::{self, HistoryReport};
use crate::{Error, Result, resources};

/// The part of the stats answer the operator uses.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Connections across the fleet.
    pub connections: u64,
    /// Rooms with members across the fleet.
    pub rooms: u64,
    /// A replica did not answer in time: the numbers are a lower bound.
    #[serde(default)]
    pub partial: bool,
    /// Each node that answered.
    #[serde(default)]
    pub nodes: Vec<NodeStats>,
}

impl Stats {
    /// What the nodes say about history, for [`status::history_condition`].
    pub fn history_report(&self) -> HistoryReport<'_> {
        HistoryReport::Nodes {
            nodes: self.nodes.iter().map(|node| &node.history).collect(),
            partial: self.partial,
        }
    }

    /// What the autoscaler reads of this answer: nodes that do not report
    /// `upgrades_refused_capacity` (older gateways) are left out.
    pub fn reading(&self) -> Reading {
        Reading {
            connections: self.connections,
            partial: self.partial,
            refused_for_capacity: self
                .nodes
                .iter()
                .filter_map(|node| Some((node.node.clone(), node.upgrades_refused_capacity?)))
                .collect(),
        }
    }
}

/// The part of one node's entry the operator uses.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct NodeStats {
    /// The node's name.
    #[serde(default)]
    pub node: String,
    /// Each history namespace and whether this node can store its messages;
    /// absent (empty) on nodes that keep no history and on older gateways.
    #[serde(default)]
    pub history: BTreeMap<String, bool>,
    /// Upgrades this node refused at `limits.max_connections` since it
    /// started (only the `capacity` reason: not while draining or
    /// rebalancing); absent on older gateways.
    #[serde(default)]
    pub upgrades_refused_capacity: Option<u64>,
}

/// An HTTP client for the gateways' admin listeners.
#[derive(Clone)]
pub struct StatsClient {
    client: HttpClient<HttpConnector, Empty<bytes::Bytes>>,
    timeout: Duration,
}

impl Default for StatsClient {
    fn default() -> Self {
        Self {
            client: HttpClient::builder(TokioExecutor::new()).build_http(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl StatsClient {
    /// Reads `url` (`http://<name>-admin.<namespace>.svc:<adminPort>/api/v1/stats`)
    /// with `api_key`.
    ///
    /// # Errors
    ///
    /// [`Error::Stats`] on a transport error, a timeout, a status other than
    /// 200 or a body that is not stats.
    pub async fn fetch(&self, url: &str, api_key: &str) -> Result<Stats> {
        let request = http::Request::get(url)
            .header(http::header::AUTHORIZATION, format!("Bearer {api_key}"))
            .body(Empty::new())
            .map_err(|error| Error::Stats(error.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| Error::Stats(format!("{url}: timed out")))?
            .map_err(|error| Error::Stats(format!("{url}: {error}")))?;
        let status = response.status();
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| Error::Stats(format!("{url}: timed out")))?
            .map_err(|error| Error::Stats(format!("{url}: {error}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::Stats(format!("{url}: status {status}")));
        }
        serde_json::from_slice(&body).map_err(|error| Error::Stats(format!("{url}: {error}")))
    }
}

/// Whether new stats differ enough from what the status shows to be worth a
/// status write: the first value, any change in rooms or connections of
/// more than `max(10, 5%)`, or a return to zero.
pub fn changed_enough(old: Option<(u64, u64)>, new: &Stats) -> bool {
    let Some((connections, rooms)) = old else {
        return true;
    };
    let threshold = (connections / 20).max(10);
    connections.abs_diff(new.connections) > threshold
        || rooms.abs_diff(new.rooms) > (rooms / 20).max(10)
        || (new.connections == 0 && connections != 0)
}

/// How often a WsCluster whose stats keep failing is logged at WARN: the
/// first failure is logged at once, then one line per this interval with
/// the count of failures since, rather than one per reading.
pub const STATS_WARNING_INTERVAL: Duration = Duration::from_secs(300);

/// What the poller keeps of one WsCluster between readings.
struct Polled {
    /// The window of recommendations and the nodes' refusal counts.
    autoscaler: Autoscaler,
    /// When a failure was last logged at WARN; `None` while readings
    /// succeed.
    warned: Option<Instant>,
    /// Failures since that warning, for the next one.
    failures: u64,
}

impl Polled {
    /// The state of a WsCluster first seen at `now` (operator start, a new
    /// leader, or a new WsCluster): the window starts from its current
    /// replicas (see [`Autoscaler::resume`]).
    fn new(wsc: &WsCluster, now: Instant) -> Self {
        Self {
            autoscaler: Autoscaler::resume(now, resources::desired_replicas(wsc)),
            warned: None,
            failures: 0,
        }
    }

    /// Logs a failed reading at WARN, rate-limited per WsCluster.
    fn failed(&mut self, name: &str, error: &Error, now: Instant) {
        self.failures += 1;
        let due = self
            .warned
            .is_none_or(|at| now.saturating_duration_since(at) >= STATS_WARNING_INTERVAL);
        if due {
            tracing::warn!(%error, wscluster = %name, failures = self.failures, "stats reading failed");
            self.warned = Some(now);
            self.failures = 0;
        }
    }

    /// Logs the end of a run of failures.
    fn succeeded(&mut self, name: &str) {
        if self.warned.take().is_some() {
            tracing::info!(wscluster = %name, "stats readable again");
        }
        self.failures = 0;
    }
}

/// The stats poller: every `interval`, for each WsCluster, reads the stats,
/// writes `connections`/`rooms` to the status when they moved by more than
/// the threshold, and with a connections target runs the [`Autoscaler`].
pub async fn poll(
    client: Client,
    wscs: Store<WsCluster>,
    secrets: OwnedSecrets,
    metrics: Metrics,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let http = StatsClient::default();
    let mut polled: HashMap<(String, String), Polled> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for wsc in wscs.state() {
            let name = wsc.metadata.name.clone().unwrap_or_default();
            let key = (
                wsc.metadata.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            let state = polled
                .entry(key)
                .or_insert_with(|| Polled::new(&wsc, Instant::now()));
            match poll_one(
                &client,
                &http,
                &wsc,
                &secrets,
                &metrics,
                &mut state.autoscaler,
            )
            .await
            {
                Ok(()) => state.succeeded(&name),
                Err(error) => {
                    metrics.stats_failures.inc();
                    state.failed(&name, &error, Instant::now());
                }
            }
        }
        polled.retain(|(namespace, name), _| {
            wscs.get(&ObjectRef::new(name).within(namespace)).is_some()
        });
    }
}

async fn poll_one(
    client: &Client,
    http: &StatsClient,
    wsc: &WsCluster,
    secrets: &OwnedSecrets,
    metrics: &Metrics,
    autoscaler: &mut Autoscaler,
) -> Result<()> {
    let (namespace, name) = resources::namespace_and_name(wsc)?;
    let own = resources::api_keys_secret_name(&name);
    let Some(secret) = secrets
        .get(&namespace, &own, wsc.metadata.uid.as_deref())
        .await?
    else {
        return Ok(()); // not reconciled yet
    };
    let key = secret
        .data
        .as_ref()
        .and_then(|data| data.get(resources::API_KEYS_KEY))
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
        .and_then(|text| resources::operator_key(&text).map(str::to_owned))
        .ok_or_else(|| Error::Stats("the API keys Secret has no operator key".to_owned()));
    let url = format!(
        "http://{}.{namespace}.svc:{}/api/v1/stats",
        resources::admin_service_name(&name),
        wsc.spec.service.admin_port
    );
    let fetched = match key {
        Ok(key) => http.fetch(&url, &key).await,
        Err(error) => Err(error),
    };
    match fetched {
        Ok(stats) => apply_stats(client, wsc, &stats, metrics, autoscaler, Instant::now()).await,
        Err(error) => {
            stats_unavailable(client, wsc, &error, autoscaler, Instant::now()).await;
            Err(error)
        }
    }
}

/// Acts on a reading that failed with `error` at `now`: the autoscaler
/// holds the current replicas (see [`Autoscaler::stats_unavailable`]) and
/// the status says so (`HistoryAvailable=Unknown`, `ScalingActive=False`).
/// A failed status write is logged at debug level: the reading's own
/// error is the one reported.
pub(crate) async fn stats_unavailable(
    client: &Client,
    wsc: &WsCluster,
    error: &Error,
    autoscaler: &mut Autoscaler,
    now: Instant,
) {
    if let Some(target) = wsc.spec.autoscaling.as_ref().and_then(Target::of) {
        autoscaler.stats_unavailable(now, resources::desired_replicas(wsc), &target);
    }
    let message = error.to_string();
    let report = HistoryReport::Unreadable(&message);
    if let Err(write) = write_status(client, wsc, None, &report, None).await {
        let name = wsc.metadata.name.as_deref().unwrap_or_default();
        tracing::debug!(error = %write, wscluster = %name, "status after a failed reading");
    }
}

/// What the connections autoscaler decided at one reading, for the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Autoscaled {
    /// The replicas it wants (`status.desiredReplicas`).
    pub desired: i32,
    /// It changed `spec.replicas` (`status.lastScaleTime` becomes now).
    pub scaled: bool,
}

/// Writes what a reading changed in the status: `connections`, `rooms` and
/// `statsTime` when `counts` moved enough (see [`changed_enough`]), the
/// `HistoryAvailable` condition from `report` and `ScalingActive` when they
/// changed, and with `autoscaled` `desiredReplicas` when it changed and
/// `lastScaleTime` after a scale. One merge patch, or none when nothing
/// changed; a conditions write carries the WsCluster's `resourceVersion`,
/// so it fails with a conflict rather than undo a status written since
/// `wsc` was read.
///
/// # Errors
///
/// [`Error::PatchStatus`] when the write fails (a conflict included).
pub(crate) async fn write_status(
    client: &Client,
    wsc: &WsCluster,
    counts: Option<&Stats>,
    report: &HistoryReport<'_>,
    autoscaled: Option<Autoscaled>,
) -> Result<()> {
    let (namespace, name) = resources::namespace_and_name(wsc)?;
    let current = wsc.status.as_ref();
    let mut status = serde_json::Map::new();
    let old = current.and_then(|s| s.connections.zip(s.rooms));
    if let Some(stats) = counts
        && changed_enough(old, stats)
    {
        let time = Time(k8s_openapi::jiff::Timestamp::now());
        status.insert("connections".into(), json!(stats.connections));
        status.insert("rooms".into(), json!(stats.rooms));
        status.insert("statsTime".into(), json!(time));
    }
    if let Some(Autoscaled { desired, scaled }) = autoscaled {
        if current.and_then(|s| s.desired_replicas) != Some(desired) {
            status.insert("desiredReplicas".into(), json!(desired));
        }
        if scaled {
            let time = Time(k8s_openapi::jiff::Timestamp::now());
            status.insert("lastScaleTime".into(), json!(time));
        }
    } else if !status::connections_autoscaling(wsc)
        && current.is_some_and(|s| s.desired_replicas.is_some())
    {
        // The connections target went: no autoscaler wants anything. A
        // merge patch removes a field only when told to with null.
        status.insert("desiredReplicas".into(), Value::Null);
    }
    let old_conditions = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let stats_error = match report {
        HistoryReport::Unreadable(error) => Some(*error),
        HistoryReport::Nodes { .. } => None,
    };
    let mut conditions = old_conditions.to_vec();
    let mut conditions_changed = false;
    for (type_, new) in [
        (HISTORY_AVAILABLE, status::history_condition(wsc, report)),
        (SCALING_ACTIVE, status::scaling_condition(wsc, stats_error)),
    ] {
        if let Some(replaced) = status::replace_condition(&conditions, type_, new) {
            conditions = replaced;
            conditions_changed = true;
        }
    }
    let mut patch = json!({});
    if conditions_changed {
        status.insert("conditions".into(), serde_json::to_value(conditions)?);
        if let Some(version) = &wsc.metadata.resource_version {
            patch["metadata"] = json!({ "resourceVersion": version });
        }
    }
    if status.is_empty() {
        return Ok(());
    }
    patch["status"] = Value::Object(status);
    let api: Api<WsCluster> = Api::namespaced(client.clone(), &namespace);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::PatchStatus)?;
    Ok(())
}

/// Acts on one reading: with a connections target scales the WsCluster
/// through its `/scale` subresource when the [`Autoscaler`] says so, then
/// writes what changed to the status (see [`write_status`]): the counts,
/// the conditions, `desiredReplicas` and `lastScaleTime`. The status is
/// written even when the scale failed, without `lastScaleTime`.
///
/// # Errors
///
/// When the scale or status write fails.
pub(crate) async fn apply_stats(
    client: &Client,
    wsc: &WsCluster,
    stats: &Stats,
    metrics: &Metrics,
    autoscaler: &mut Autoscaler,
    now: Instant,
) -> Result<()> {
    let (namespace, name) = resources::namespace_and_name(wsc)?;
    let api: Api<WsCluster> = Api::namespaced(client.clone(), &namespace);

    let mut autoscaled = None;
    let mut scale_error = None;
    if let Some(target) = wsc.spec.autoscaling.as_ref().and_then(Target::of) {
        let current = resources::desired_replicas(wsc);
        let next = autoscaler.next(now, current, &stats.reading(), &target);
        let mut scaled = false;
        if let Some(replicas) = next {
            tracing::info!(wscluster = %name, from = current, to = replicas, connections = stats.connections, "autoscale");
            let patch = serde_json::json!({"spec": {"replicas": replicas}});
            match api
                .patch_scale(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    scaled = true;
                    metrics.autoscale_changes.inc();
                }
                Err(error) => scale_error = Some(Error::Kube(error)),
            }
        }
        autoscaled = Some(Autoscaled {
            desired: next.unwrap_or(current),
            scaled,
        });
    }
    write_status(
        client,
        wsc,
        Some(stats),
        &stats.history_report(),
        autoscaled,
    )
    .await?;
    match scale_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the status `reading` makes of `wsc`, in a task, so the test
    /// can answer its requests.
    fn spawn_write(
        client: &Client,
        wsc: &WsCluster,
        reading: Stats,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let (client, wsc) = (client.clone(), wsc.clone());
        tokio::spawn(async move {
            write_status(
                &client,
                &wsc,
                Some(&reading),
                &reading.history_report(),
                None,
            )
            .await
        })
    }

    fn stats(connections: u64, rooms: u64) -> Stats {
        Stats {
            connections,
            rooms,
            ..Stats::default()
        }
    }

    /// Small fluctuations are not written; the first value, big changes and a
    /// drop to zero are.
    #[test]
    fn status_is_written_only_for_changes_above_the_threshold() {
        assert!(changed_enough(None, &stats(0, 0)));
        assert!(!changed_enough(Some((1000, 10)), &stats(1040, 12)));
        assert!(changed_enough(Some((1000, 10)), &stats(1100, 10)));
        assert!(changed_enough(Some((1000, 10)), &stats(1000, 40)));
        assert!(changed_enough(Some((5, 1)), &stats(0, 0)));
        assert!(!changed_enough(Some((0, 0)), &stats(3, 1)));
    }

    /// The gateway's stats answer parses, with each node's history map
    /// (absent on nodes without history) and its capacity refusals (absent
    /// on older gateways).
    #[test]
    fn stats_answer_parses() {
        let body = r#"{"nodes":[{"node":"a","connections":3,"rooms":2},{"node":"b","connections":0,"rooms":0,"history":{"chat":true,"events":false},"upgrades_refused_capacity":12}],"connections":3,"rooms":2,"partial":false}"#;
        let parsed = serde_json::from_str::<Stats>(body).unwrap();
        assert_eq!((parsed.connections, parsed.rooms), (3, 2));
        assert!(parsed.nodes[0].history.is_empty());
        assert_eq!(parsed.nodes[0].upgrades_refused_capacity, None);
        assert_eq!(parsed.nodes[1].upgrades_refused_capacity, Some(12));
        // An older gateway's node is left out of the autoscaler's reading.
        assert_eq!(
            parsed.reading().refused_for_capacity,
            vec![("b".to_owned(), 12)]
        );
        assert_eq!(
            parsed.nodes[1].history,
            [("chat".to_owned(), true), ("events".to_owned(), false)].into()
        );
    }

    /// The client sends the operator's key as a bearer token and reads the
    /// answer of a real HTTP server; a refused key is an error.
    #[tokio::test]
    async fn fetch_reads_stats_with_the_operator_key() {
        use axum::{Router, http::HeaderMap, http::StatusCode, routing::get};
        let app = Router::new().route(
            "/api/v1/stats",
            get(|headers: HeaderMap| async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some("Bearer right")
                {
                    (
                        StatusCode::OK,
                        r#"{"nodes":[],"connections":42,"rooms":7,"partial":true}"#,
                    )
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        r#"{"error":{"code":"unauthorized","message":"no"}}"#,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/stats", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = StatsClient::default();
        let stats = client.fetch(&url, "right").await.unwrap();
        assert_eq!(
            stats,
            Stats {
                connections: 42,
                rooms: 7,
                partial: true,
                nodes: Vec::new(),
            }
        );
        let error = client.fetch(&url, "wrong").await.unwrap_err();
        assert!(error.to_string().contains("401"), "{error}");
    }

    /// With a connections target over capacity, a reading scales the
    /// WsCluster through `/scale`, then writes the stats, `desiredReplicas`,
    /// `lastScaleTime` and `ScalingActive=True` to the status. A second,
    /// similar reading once the status shows all that writes nothing.
    #[tokio::test]
    async fn readings_scale_through_the_scale_subresource_then_update_status() {
        use crate::controller::Context;
        use crate::fixtures::{self, WsClusterExt};
        use wsgate_crds::condition::reason;

        let (ctx, mut server, _caches) = Context::test();
        let mut wsc = fixtures::wsc("chat").with_connections_autoscaling(1000);
        let reading = Stats {
            connections: 4600,
            rooms: 80,
            ..Stats::default()
        };
        let client = ctx.client.clone();
        let metrics = ctx.metrics.clone();
        let task = {
            let wsc = wsc.clone();
            let reading = reading.clone();
            tokio::spawn(async move {
                let now = Instant::now();
                let mut autoscaler = Autoscaler::resume(now, 2);
                apply_stats(&client, &wsc, &reading, &metrics, &mut autoscaler, now).await
            })
        };
        let scale = server.next().await;
        assert!(
            scale
                .uri
                .starts_with("/apis/wsgate.io/v1alpha1/namespaces/prod/wsclusters/chat/scale?"),
            "{}",
            scale.uri
        );
        assert_eq!(scale.body["spec"]["replicas"], 5);
        let status = server.next().await;
        assert!(
            status
                .uri
                .starts_with("/apis/wsgate.io/v1alpha1/namespaces/prod/wsclusters/chat/status?"),
            "{}",
            status.uri
        );
        assert_eq!(status.body["status"]["connections"], 4600);
        assert_eq!(status.body["status"]["rooms"], 80);
        assert_eq!(status.body["status"]["desiredReplicas"], 5);
        assert!(status.body["status"]["lastScaleTime"].is_string());
        let conditions = status.body["status"]["conditions"].as_array().unwrap();
        let scaling = conditions
            .iter()
            .find(|c| c["type"] == SCALING_ACTIVE)
            .unwrap();
        assert_eq!(scaling["status"], "True");
        assert_eq!(scaling["reason"], reason::ACTIVE);
        task.await.unwrap().unwrap();
        assert_eq!(ctx.metrics.autoscale_changes.get(), 1);

        // The status already shows ~4600, 5 replicas carry the load and
        // ScalingActive is True: no request.
        wsc.spec.replicas = Some(5);
        let conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> =
            serde_json::from_value(status.body["status"]["conditions"].clone()).unwrap();
        wsc.status = Some(wsgate_crds::WsClusterStatus {
            connections: Some(4600),
            rooms: Some(80),
            desired_replicas: Some(5),
            conditions,
            ..Default::default()
        });
        let mut autoscaler = Autoscaler::resume(Instant::now(), 5);
        let steady = Stats {
            connections: 4620,
            rooms: 81,
            ..Stats::default()
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(2),
            apply_stats(
                &ctx.client,
                &wsc,
                &steady,
                &ctx.metrics,
                &mut autoscaler,
                Instant::now(),
            ),
        )
        .await;
        outcome.expect("a steady reading made a request").unwrap();
        drop(server);
    }

    /// A reading that fails sets `ScalingActive=False` with the error and
    /// changes no replicas: the only request is the status write.
    #[tokio::test]
    async fn a_failed_reading_sets_scaling_active_false_and_scales_nothing() {
        use crate::controller::Context;
        use crate::fixtures::{self, WsClusterExt};
        use wsgate_crds::condition::reason;

        let (ctx, mut server, _caches) = Context::test();
        let wsc = fixtures::wsc("chat")
            .with_connections_autoscaling(1000)
            .replicas(6);
        let task = {
            let (client, wsc) = (ctx.client.clone(), wsc.clone());
            tokio::spawn(async move {
                let now = Instant::now();
                let mut autoscaler = Autoscaler::resume(now, 6);
                let error = Error::Stats("http://chat-admin.prod.svc:9090: timed out".into());
                stats_unavailable(&client, &wsc, &error, &mut autoscaler, now).await;
                autoscaler
            })
        };
        let seen = server.next().await;
        assert!(
            seen.uri.contains("/wsclusters/chat/status?"),
            "{}",
            seen.uri
        );
        let conditions = seen.body["status"]["conditions"].as_array().unwrap();
        let scaling = conditions
            .iter()
            .find(|c| c["type"] == SCALING_ACTIVE)
            .unwrap();
        assert_eq!(scaling["status"], "False");
        assert_eq!(scaling["reason"], reason::STATS_UNAVAILABLE);
        assert!(scaling["message"].as_str().unwrap().contains("timed out"));
        let mut autoscaler = task.await.unwrap();
        drop(server);

        // The window now holds the 6 replicas: a low reading right after
        // the outage removes nothing.
        let target = Target::of(wsc.spec.autoscaling.as_ref().unwrap()).unwrap();
        let low = Stats {
            connections: 100,
            ..Stats::default()
        };
        assert_eq!(
            autoscaler.next(Instant::now(), 6, &low.reading(), &target),
            None
        );
    }

    /// Once the connections target goes, the poller removes
    /// `desiredReplicas` (a merge patch with null): no autoscaler wants
    /// anything any more.
    #[tokio::test]
    async fn desired_replicas_go_with_the_connections_target() {
        use crate::controller::Context;
        use crate::fixtures;

        let (ctx, mut server, _caches) = Context::test();
        let mut wsc = fixtures::wsc("chat");
        wsc.status = Some(wsgate_crds::WsClusterStatus {
            connections: Some(0),
            rooms: Some(0),
            desired_replicas: Some(4),
            ..Default::default()
        });
        let task = spawn_write(&ctx.client, &wsc, Stats::default());
        let seen = server.next().await;
        assert!(seen.body["status"]["desiredReplicas"].is_null());
        assert!(
            seen.body["status"]
                .as_object()
                .unwrap()
                .contains_key("desiredReplicas")
        );
        task.await.unwrap().unwrap();
        drop(server);
    }

    /// A failing WsCluster is logged at WARN at the first failure, then at
    /// most once per [`STATS_WARNING_INTERVAL`], and a success resets it.
    #[test]
    fn stats_failures_are_warned_at_most_once_per_interval() {
        let start = Instant::now();
        let wsc = crate::fixtures::wsc("chat");
        let mut polled = Polled::new(&wsc, start);
        let error = Error::Stats("timed out".into());
        polled.failed("chat", &error, start);
        assert_eq!(polled.warned, Some(start));
        for i in 1..20 {
            polled.failed("chat", &error, start + Duration::from_secs(15 * i));
        }
        assert_eq!(polled.warned, Some(start), "no second warning within 5 min");
        assert_eq!(polled.failures, 19);
        let later = start + STATS_WARNING_INTERVAL;
        polled.failed("chat", &error, later);
        assert_eq!((polled.warned, polled.failures), (Some(later), 0));
        polled.succeeded("chat");
        assert_eq!(polled.warned, None);
        let again = later + Duration::from_secs(15);
        polled.failed("chat", &error, again);
        assert_eq!(polled.warned, Some(again), "a new outage warns at once");
    }

    /// A reading where a node cannot store `chat` writes `HistoryAvailable:
    /// False` naming it, the other conditions kept and the resourceVersion
    /// as a precondition, and no counts that did not move; the same reading
    /// again writes nothing; stats that cannot be read write `Unknown`.
    #[tokio::test]
    async fn gateways_history_reports_set_history_available() {
        use crate::controller::Context;
        use crate::fixtures::{self, WsClusterExt};
        use wsgate_crds::condition::{READY, reason};

        let (ctx, mut server, _caches) = Context::test();
        let mut wsc = fixtures::wsc("chat")
            .with_history_namespace("chat")
            .with_history_namespace("events");
        let mut ready = status::condition(
            READY,
            true,
            reason::AVAILABLE,
            "3/3 replicas ready",
            Some(1),
        );
        // As read from the API server: whole seconds.
        ready.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        wsc.status = Some(wsgate_crds::WsClusterStatus {
            connections: Some(0),
            rooms: Some(0),
            conditions: vec![ready.clone()],
            ..Default::default()
        });
        let node = |name: &str, chat: bool| NodeStats {
            node: name.into(),
            history: [("chat".to_owned(), chat), ("events".to_owned(), true)].into(),
            upgrades_refused_capacity: None,
        };
        let reading = Stats {
            nodes: vec![node("a", true), node("b", false), node("c", true)],
            ..Stats::default()
        };

        let task = spawn_write(&ctx.client, &wsc, reading.clone());
        let seen = server.next().await;
        assert!(
            seen.uri
                .starts_with("/apis/wsgate.io/v1alpha1/namespaces/prod/wsclusters/chat/status?"),
            "{}",
            seen.uri
        );
        assert_eq!(seen.body["metadata"]["resourceVersion"], "1");
        assert!(seen.body["status"].get("connections").is_none());
        let conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> =
            serde_json::from_value(seen.body["status"]["conditions"].clone()).unwrap();
        assert!(conditions.contains(&ready), "{conditions:?}");
        let history = conditions
            .iter()
            .find(|c| c.type_ == HISTORY_AVAILABLE)
            .unwrap();
        assert_eq!(
            (history.status.as_str(), history.reason.as_str()),
            ("False", reason::HISTORY_UNAVAILABLE)
        );
        assert!(
            history.message.contains("namespace chat on 1/3 nodes")
                && !history.message.contains("events"),
            "{}",
            history.message
        );
        task.await.unwrap().unwrap();

        // The status now holds it: the same reading writes nothing.
        if let Some(status) = wsc.status.as_mut() {
            status.conditions = conditions;
        }
        tokio::time::timeout(
            Duration::from_secs(2),
            write_status(
                &ctx.client,
                &wsc,
                Some(&reading),
                &reading.history_report(),
                None,
            ),
        )
        .await
        .expect("an unchanged reading made a request")
        .unwrap();

        let task = {
            let (client, wsc) = (ctx.client.clone(), wsc.clone());
            tokio::spawn(async move {
                let report = HistoryReport::Unreadable(
                    "http://chat-admin.prod.svc:9090/api/v1/stats: timed out",
                );
                write_status(&client, &wsc, None, &report, None).await
            })
        };
        let seen = server.next().await;
        let conditions = seen.body["status"]["conditions"].as_array().unwrap();
        let history = conditions
            .iter()
            .find(|c| c["type"] == HISTORY_AVAILABLE)
            .unwrap();
        assert_eq!(history["status"], "Unknown");
        assert_eq!(history["reason"], reason::STATS_UNAVAILABLE);
        assert!(history["message"].as_str().unwrap().contains("timed out"));
        task.await.unwrap().unwrap();
        drop(server);
    }
}
