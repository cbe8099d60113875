//! The WsCluster status: conditions and counts computed from the children.
//!
//! Conditions follow the API conventions: `lastTransitionTime` moves only
//! when `status` changes, so an unchanged fleet yields an identical status
//! and the controller skips the write.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use wsgate_crds::condition::{
    BROKER_READY, DEGRADED, HISTORY_AVAILABLE, PROGRESSING, READY, SCALING_ACTIVE, reason,
};
use wsgate_crds::{WsCluster, WsClusterStatus};

/// A condition with `status` `"True"` or `"False"`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    with_status(
        type_,
        if status { "True" } else { "False" },
        reason,
        message,
        generation,
    )
}

/// A condition with `status` `"Unknown"`: the operator cannot tell, and
/// says why, rather than guess `True`.
pub fn unknown(
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    with_status(type_, "Unknown", reason, message, generation)
}

fn with_status(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// `new` with each condition's `lastTransitionTime` carried over from `old`
/// when its status did not change.
pub fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut condition| {
            if let Some(previous) = old.iter().find(|c| c.type_ == condition.type_)
                && previous.status == condition.status
            {
                condition.last_transition_time = previous.last_transition_time.clone();
            }
            condition
        })
        .collect()
}

/// Why the children could not all be applied: the conditions' reason
/// ([`reason::APPLY_FAILED`], [`reason::NAME_CONFLICT`]) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError {
    /// The conditions' reason.
    pub reason: &'static str,
    /// The API server's (or the operator's) message.
    pub message: String,
}

impl From<&crate::Error> for ApplyError {
    fn from(error: &crate::Error) -> Self {
        Self {
            reason: error.condition_reason(),
            message: error.to_string(),
        }
    }
}

/// What the reconcile learned, for [`status`].
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    /// The Deployment as the API server holds it (after the apply).
    pub deployment: Option<&'a Deployment>,
    /// The managed NATS StatefulSet as the API server holds it.
    pub statefulset: Option<&'a StatefulSet>,
    /// Servers of the managed NATS wanted; `None` without one.
    pub broker_replicas: Option<i32>,
    /// Replicas wanted.
    pub desired_replicas: i32,
    /// Problems making the spec unusable (see [`crate::validate`]).
    pub invalid: Vec<String>,
    /// An apply that failed (or was refused by the operator itself).
    pub apply_error: Option<ApplyError>,
    /// Where clients connect.
    pub endpoint: Option<String>,
    /// The pods' selector.
    pub selector: String,
    /// Referenced Secrets that do not exist: the pods cannot start.
    pub missing_secrets: Vec<String>,
    /// `httpRoute` is set but the Gateway API is not installed, so no
    /// HTTPRoute was applied.
    pub route_not_applied: bool,
}

/// Why the Deployment controller gave up on the Deployment: its
/// `Progressing` condition is `False` with `ProgressDeadlineExceeded`, or its
/// `ReplicaFailure` condition is `True` (a quota, an admission webhook, a
/// missing ServiceAccount). The Deployment's reason and message, or `None`
/// while it is healthy or still trying.
pub fn deployment_failure(deployment: &Deployment) -> Option<(String, String)> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let stalled = conditions.iter().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some(reason::PROGRESS_DEADLINE_EXCEEDED)
    });
    let failed = || {
        conditions
            .iter()
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
    };
    let found = stalled.or_else(failed)?;
    let reason = found
        .reason
        .clone()
        .filter(|reason| !reason.is_empty())
        .unwrap_or_else(|| reason::REPLICA_FAILURE.to_owned());
    let message = format!(
        "Deployment {name}: {}",
        found.message.as_deref().unwrap_or(&reason)
    );
    Some((reason, message))
}

/// The status of `wsc` given what was observed. Stats (`connections`,
/// `rooms`, `statsTime`) and the `HistoryAvailable` condition are carried
/// over: the stats poller owns them. With an invalid spec or a failed apply
/// the endpoint is carried over too: the children stay as they were.
pub fn status(wsc: &WsCluster, observed: &Observed<'_>) -> WsClusterStatus {
    let generation = wsc.metadata.generation;
    let old = wsc.status.clone().unwrap_or_default();
    let deployment_status = observed
        .deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let replicas = deployment_status.replicas.unwrap_or(0);
    let ready = deployment_status.ready_replicas.unwrap_or(0);
    let updated = deployment_status.updated_replicas.unwrap_or(0);
    let deployment_current = observed.deployment.is_some_and(|d| {
        d.metadata.generation.is_some()
            && deployment_status.observed_generation >= d.metadata.generation
    });
    let wanted = observed.desired_replicas;
    let rolled_out = deployment_current && updated >= wanted && replicas == wanted;
    let all_ready = ready >= wanted;

    let mut conditions = if !observed.invalid.is_empty() {
        let message = observed.invalid.join("; ");
        vec![
            condition(
                READY,
                false,
                reason::INVALID_SPEC,
                message.clone(),
                generation,
            ),
            condition(
                PROGRESSING,
                false,
                reason::INVALID_SPEC,
                "the spec is not applied until fixed",
                generation,
            ),
            condition(DEGRADED, true, reason::INVALID_SPEC, message, generation),
        ]
    } else if let Some(ApplyError { reason, message }) = &observed.apply_error {
        vec![
            condition(
                READY,
                all_ready && wanted > 0,
                reason,
                message.clone(),
                generation,
            ),
            condition(PROGRESSING, false, reason, message.clone(), generation),
            condition(DEGRADED, true, reason, message.clone(), generation),
        ]
    } else if !observed.missing_secrets.is_empty() {
        let message = format!(
            "Secret {} not found in namespace {}: the pods cannot start until it exists",
            observed.missing_secrets.join(", "),
            wsc.metadata.namespace.as_deref().unwrap_or_default()
        );
        vec![
            condition(
                READY,
                all_ready && rolled_out && wanted > 0,
                reason::SECRET_NOT_FOUND,
                message.clone(),
                generation,
            ),
            condition(
                PROGRESSING,
                !(all_ready && rolled_out),
                reason::SECRET_NOT_FOUND,
                message.clone(),
                generation,
            ),
            condition(
                DEGRADED,
                true,
                reason::SECRET_NOT_FOUND,
                message,
                generation,
            ),
        ]
    } else {
        let failure = observed.deployment.and_then(deployment_failure);
        let ready_condition = if all_ready && rolled_out {
            condition(
                READY,
                true,
                reason::AVAILABLE,
                format!("{ready}/{wanted} replicas ready"),
                generation,
            )
        } else if let Some((reason, message)) = &failure {
            condition(
                READY,
                false,
                reason,
                format!("{ready}/{wanted} replicas ready; {message}"),
                generation,
            )
        } else {
            condition(
                READY,
                false,
                reason::REPLICAS_NOT_READY,
                format!("{ready}/{wanted} replicas ready, {updated} up to date"),
                generation,
            )
        };
        let degraded = match &failure {
            Some((reason, message)) => {
                condition(DEGRADED, true, reason, message.clone(), generation)
            }
            None if observed.route_not_applied => condition(
                DEGRADED,
                true,
                reason::ROUTE_NOT_APPLIED,
                ROUTE_NOT_APPLIED_MESSAGE,
                generation,
            ),
            None => condition(DEGRADED, false, reason::AS_EXPECTED, "", generation),
        };
        let stalled = failure
            .as_ref()
            .filter(|(why, _)| why == reason::PROGRESS_DEADLINE_EXCEEDED);
        let progressing = if let Some((why, message)) = stalled {
            // The Deployment controller stopped trying: nothing is moving.
            condition(PROGRESSING, false, why, message.clone(), generation)
        } else if rolled_out && all_ready {
            condition(
                PROGRESSING,
                false,
                reason::UP_TO_DATE,
                "the fleet matches the spec",
                generation,
            )
        } else {
            condition(
                PROGRESSING,
                true,
                reason::ROLLING_OUT,
                format!("rolling out: {updated}/{wanted} up to date, {ready} ready"),
                generation,
            )
        };
        vec![ready_condition, progressing, degraded]
    };

    conditions.extend(broker_condition(observed, generation));
    if !history_namespaces(wsc).is_empty() {
        conditions.extend(
            old.conditions
                .iter()
                .find(|c| c.type_ == HISTORY_AVAILABLE)
                .cloned(),
        );
    }
    let autoscaled = connections_autoscaling(wsc);
    if autoscaled {
        conditions.extend(
            old.conditions
                .iter()
                .find(|c| c.type_ == SCALING_ACTIVE)
                .cloned(),
        );
    }
    let endpoint = if observed.invalid.is_empty() && observed.apply_error.is_none() {
        observed.endpoint.clone()
    } else {
        old.endpoint.clone()
    };

    WsClusterStatus {
        observed_generation: generation,
        conditions: merge_conditions(&old.conditions, conditions),
        replicas,
        ready_replicas: ready,
        selector: Some(observed.selector.clone()),
        endpoint,
        connections: old.connections,
        rooms: old.rooms,
        stats_time: old.stats_time,
        desired_replicas: old.desired_replicas,
        last_scale_time: old.last_scale_time,
    }
}

/// Whether the operator's connections autoscaler runs for `wsc`
/// (`autoscaling.targetConnectionsPerPod` is set).
pub fn connections_autoscaling(wsc: &WsCluster) -> bool {
    wsc.spec
        .autoscaling
        .as_ref()
        .is_some_and(|autoscaling| autoscaling.target_connections_per_pod.is_some())
}

/// `ScalingActive` of `wsc` after one reading: `True` (`Active`) when the
/// stats were read, `False` (`StatsUnavailable`, with `error`) when not;
/// `None` (no condition) without a connections target.
pub fn scaling_condition(wsc: &WsCluster, error: Option<&str>) -> Option<Condition> {
    if !connections_autoscaling(wsc) {
        return None;
    }
    let generation = wsc.metadata.generation;
    Some(match error {
        None => condition(
            SCALING_ACTIVE,
            true,
            reason::ACTIVE,
            "the autoscaler reads the gateways' stats",
            generation,
        ),
        Some(error) => condition(
            SCALING_ACTIVE,
            false,
            reason::STATS_UNAVAILABLE,
            format!("cannot read the gateways' stats, so the replicas stay as they are: {error}"),
            generation,
        ),
    })
}

/// `BrokerReady` with a managed NATS: every wanted server is ready (its
/// JetStream is up); `None` without one.
pub fn broker_condition(observed: &Observed<'_>, generation: Option<i64>) -> Option<Condition> {
    let wanted = observed.broker_replicas?;
    let ready = observed
        .statefulset
        .and_then(|statefulset| statefulset.status.as_ref())
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0);
    let message = format!("{ready}/{wanted} NATS servers ready");
    Some(if ready >= wanted {
        condition(BROKER_READY, true, reason::AVAILABLE, message, generation)
    } else {
        condition(
            BROKER_READY,
            false,
            reason::REPLICAS_NOT_READY,
            message,
            generation,
        )
    })
}

/// The message of `Degraded` with [`reason::ROUTE_NOT_APPLIED`].
pub const ROUTE_NOT_APPLIED_MESSAGE: &str = "httpRoute is set but the Gateway API is not installed \
     (no HTTPRoute in gateway.networking.k8s.io/v1): no route is applied and clients reach \
     the gateways only through the Service; the operator applies the route within a minute \
     of the Gateway API being installed";

/// Where clients connect, naming only what is served: `wss://host/ws` with
/// an Ingress host and TLS, `ws://host/ws` without TLS, `wss://host/ws` for
/// the first HTTPRoute host name when the route can be applied
/// (`route_applied`, the Gateway API is installed), else the Service's
/// in-cluster URL. An Ingress or route whose path does not lead to `/ws`
/// (the gateways serve WebSockets only there; a rewrite the operator
/// cannot see would be needed) is not named either.
pub fn endpoint(wsc: &WsCluster, route_applied: bool) -> Option<String> {
    let namespace = wsc.metadata.namespace.as_deref()?;
    let name = wsc.metadata.name.as_deref()?;
    let spec = &wsc.spec;
    if let Some(ingress) = &spec.ingress
        && let Some(host) = &ingress.host
        && leads_to_ws(&ingress.path)
    {
        let scheme = if ingress.tls_secret_name.is_some() {
            "wss"
        } else {
            "ws"
        };
        return Some(format!("{scheme}://{host}/ws"));
    }
    if let Some(route) = &spec.http_route
        && route_applied
        && let Some(host) = route.hostnames.first()
        && leads_to_ws(&route.path)
    {
        return Some(format!("wss://{host}/ws"));
    }
    Some(format!(
        "ws://{name}.{namespace}.svc:{}/ws",
        spec.service.port
    ))
}

/// Whether a path prefix (Ingress `Prefix`, HTTPRoute `PathPrefix`: matched
/// by whole segments, a trailing `/` ignored) passes `/ws` unchanged.
fn leads_to_ws(prefix: &str) -> bool {
    matches!(prefix.trim_end_matches('/'), "" | "/ws")
}

/// The namespaces of `wsc` that keep history (`historySize > 0`), sorted.
pub fn history_namespaces(wsc: &WsCluster) -> Vec<String> {
    wsc.spec
        .namespaces
        .iter()
        .filter(|(_, namespace)| namespace.history_size > 0)
        .map(|(name, _)| name.clone())
        .collect()
}

/// What one reading of the gateways' stats says about history, for
/// [`history_condition`].
#[derive(Clone, Debug)]
pub enum HistoryReport<'a> {
    /// The stats could not be read: why.
    Unreadable(&'a str),
    /// The answering nodes' `history` maps (namespace → can store), empty
    /// for a node that reports none, and whether a node did not answer.
    Nodes {
        /// One map per answering node.
        nodes: Vec<&'a BTreeMap<String, bool>>,
        /// A node did not answer in time.
        partial: bool,
    },
}

/// `HistoryAvailable` of `wsc` from one reading; `None` (no condition)
/// without a history namespace.
///
/// - `True` (`Available`): every node that reports history can store
///   every history namespace;
/// - `False` (`HistoryUnavailable`): a node cannot; the message names each
///   such namespace and on how many nodes;
/// - `Unknown` (`StatsUnavailable`): the stats could not be read;
/// - `Unknown` (`NotReported`): a history namespace is reported by no node
///   (gateways older than the report, or a config not rolled out yet).
pub fn history_condition(wsc: &WsCluster, report: &HistoryReport<'_>) -> Option<Condition> {
    let namespaces = history_namespaces(wsc);
    if namespaces.is_empty() {
        return None;
    }
    let generation = wsc.metadata.generation;
    let (nodes, partial) = match report {
        HistoryReport::Unreadable(error) => {
            return Some(unknown(
                HISTORY_AVAILABLE,
                reason::STATS_UNAVAILABLE,
                format!("cannot read the gateways' stats: {error}"),
                generation,
            ));
        }
        HistoryReport::Nodes { nodes, partial } => (nodes, *partial),
    };
    let reporting: Vec<_> = nodes.iter().filter(|node| !node.is_empty()).collect();
    let total = reporting.len();
    let mut unavailable = Vec::new();
    let mut unreported = Vec::new();
    for namespace in &namespaces {
        let states: Vec<bool> = reporting
            .iter()
            .filter_map(|node| node.get(namespace).copied())
            .collect();
        let down = states.iter().filter(|available| !**available).count();
        if down > 0 {
            unavailable.push(format!("{namespace} on {down}/{total} nodes"));
        } else if states.is_empty() {
            unreported.push(namespace.as_str());
        }
    }
    let unanswered = if partial {
        "; a gateway did not answer in time and is not counted"
    } else {
        ""
    };
    Some(if !unavailable.is_empty() {
        condition(
            HISTORY_AVAILABLE,
            false,
            reason::HISTORY_UNAVAILABLE,
            format!(
                "history cannot be stored for namespace {}: publishes to those rooms fail; \
                 the gateways' logs say why (metric wsgate_history_available){unanswered}",
                unavailable.join(", ")
            ),
            generation,
        )
    } else if !unreported.is_empty() {
        unknown(
            HISTORY_AVAILABLE,
            reason::NOT_REPORTED,
            format!(
                "no gateway reports history for namespace {}: older gateways, or the config \
                 has not rolled out yet{unanswered}",
                unreported.join(", ")
            ),
            generation,
        )
    } else {
        condition(
            HISTORY_AVAILABLE,
            true,
            reason::AVAILABLE,
            format!(
                "history can be stored for {} on {total}/{total} reporting nodes{unanswered}",
                namespaces.join(", ")
            ),
            generation,
        )
    })
}

/// The conditions of `old` with `new` in place of its condition of type
/// `type_` (removed when `new` is `None`), the transition time kept when
/// the status did not change; `None` when that changes nothing.
pub fn replace_condition(
    old: &[Condition],
    type_: &str,
    new: Option<Condition>,
) -> Option<Vec<Condition>> {
    let mut conditions: Vec<Condition> = old.iter().filter(|c| c.type_ != type_).cloned().collect();
    conditions.extend(merge_conditions(old, new.into_iter().collect()));
    let unchanged = conditions.len() == old.len()
        && conditions
            .iter()
            .all(|condition| old.iter().any(|previous| previous == condition));
    (!unchanged).then_some(conditions)
}

/// Whether two statuses differ other than in condition timestamps.
pub fn differs(old: Option<&WsClusterStatus>, new: &WsClusterStatus) -> bool {
    old != Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, WsClusterExt};

    /// A condition keeps its `lastTransitionTime` while its status holds,
    /// and gets a new one when the status flips.
    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut old = condition(READY, false, reason::REPLICAS_NOT_READY, "0/1", Some(1));
        old.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        let same = merge_conditions(
            std::slice::from_ref(&old),
            vec![condition(
                READY,
                false,
                reason::REPLICAS_NOT_READY,
                "0/2",
                Some(2),
            )],
        );
        assert_eq!(same[0].last_transition_time, old.last_transition_time);
        let flipped = merge_conditions(
            std::slice::from_ref(&old),
            vec![condition(READY, true, reason::AVAILABLE, "1/1", Some(2))],
        );
        assert_ne!(flipped[0].last_transition_time, old.last_transition_time);
    }

    /// The endpoint follows the Ingress (TLS or not), then the HTTPRoute,
    /// then the Service.
    #[test]
    fn endpoint_prefers_ingress_then_route_then_service() {
        assert_eq!(
            endpoint(&fixtures::wsc("chat").with_ingress(), true).unwrap(),
            "wss://chat.example.com/ws"
        );
        let mut plain = fixtures::wsc("chat").with_ingress();
        if let Some(ingress) = plain.spec.ingress.as_mut() {
            ingress.tls_secret_name = None;
        }
        assert_eq!(endpoint(&plain, true).unwrap(), "ws://chat.example.com/ws");
        assert_eq!(
            endpoint(&fixtures::wsc("chat").with_http_route(), true).unwrap(),
            "wss://chat.example.com/ws"
        );
        assert_eq!(
            endpoint(&fixtures::wsc("chat"), true).unwrap(),
            "ws://chat.prod.svc:80/ws"
        );
    }

    /// The endpoint names only what is served: not a route the Gateway API
    /// cannot hold, nor an Ingress or route whose path does not lead to
    /// `/ws`; then the Service's URL.
    #[test]
    fn endpoint_names_only_what_is_served() {
        let service = "ws://chat.prod.svc:80/ws";
        let route = fixtures::wsc("chat").with_http_route();
        assert_eq!(endpoint(&route, false).unwrap(), service);
        let mut elsewhere = fixtures::wsc("chat").with_ingress();
        if let Some(ingress) = elsewhere.spec.ingress.as_mut() {
            ingress.path = "/chat".into();
        }
        assert_eq!(endpoint(&elsewhere, true).unwrap(), service);
        let mut under_ws = route.clone();
        if let Some(route) = under_ws.spec.http_route.as_mut() {
            route.path = "/ws/".into();
        }
        assert_eq!(
            endpoint(&under_ws, true).unwrap(),
            "wss://chat.example.com/ws"
        );
        let mut wsx = route;
        if let Some(route) = wsx.spec.http_route.as_mut() {
            route.path = "/wsx".into();
        }
        assert_eq!(endpoint(&wsx, true).unwrap(), service);
    }

    /// A rolled-out, ready Deployment makes the WsCluster Ready and not
    /// Progressing; one still rolling is Progressing.
    #[test]
    fn ready_and_progressing_follow_the_deployment() {
        use k8s_openapi::api::apps::v1::DeploymentStatus;
        let wsc = fixtures::wsc("chat").replicas(1);
        let mut deployment = Deployment::default();
        deployment.metadata.generation = Some(3);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(1),
            ready_replicas: Some(1),
            updated_replicas: Some(1),
            ..Default::default()
        });
        fn observed(deployment: &Deployment) -> Observed<'_> {
            Observed {
                deployment: Some(deployment),
                desired_replicas: 1,
                ..Default::default()
            }
        }
        let done = status(&wsc, &observed(&deployment));
        let get = |status: &WsClusterStatus, type_: &str| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == type_)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(get(&done, READY), "True");
        assert_eq!(get(&done, PROGRESSING), "False");
        assert_eq!(get(&done, DEGRADED), "False");
        assert_eq!((done.replicas, done.ready_replicas), (1, 1));

        deployment.metadata.generation = Some(4); // the controller has not seen the new template yet
        let rolling = status(&wsc, &observed(&deployment));
        assert_eq!(get(&rolling, READY), "False");
        assert_eq!(get(&rolling, PROGRESSING), "True");
    }

    fn history(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
        pairs
            .iter()
            .map(|(name, available)| ((*name).to_owned(), *available))
            .collect()
    }

    /// `HistoryAvailable` is True only when every reporting node can store
    /// every history namespace; False names each namespace that cannot, on
    /// how many nodes; nodes that report nothing are not counted.
    #[test]
    fn history_available_names_the_namespaces_and_nodes_that_cannot_store() {
        let wsc = fixtures::wsc("chat")
            .with_history_namespace("chat")
            .with_history_namespace("events");
        let good = history(&[("chat", true), ("events", true)]);
        let chat_down = history(&[("chat", false), ("events", true)]);
        let both_down = history(&[("chat", false), ("events", false)]);
        let silent = BTreeMap::new();

        let all = history_condition(
            &wsc,
            &HistoryReport::Nodes {
                nodes: vec![&good, &good, &silent],
                partial: false,
            },
        )
        .unwrap();
        assert_eq!(
            (all.type_.as_str(), all.status.as_str(), all.reason.as_str()),
            (HISTORY_AVAILABLE, "True", reason::AVAILABLE)
        );
        assert_eq!(
            all.message,
            "history can be stored for chat, events on 2/2 reporting nodes"
        );

        let some = history_condition(
            &wsc,
            &HistoryReport::Nodes {
                nodes: vec![&good, &chat_down, &both_down],
                partial: true,
            },
        )
        .unwrap();
        assert_eq!(
            (some.status.as_str(), some.reason.as_str()),
            ("False", reason::HISTORY_UNAVAILABLE)
        );
        assert!(
            some.message.starts_with(
                "history cannot be stored for namespace chat on 2/3 nodes, events on 1/3 nodes:"
            ),
            "{}",
            some.message
        );
        assert!(some.message.contains("did not answer"), "{}", some.message);
    }

    /// Without a history namespace there is no condition; unreadable stats
    /// and gateways that report no history say Unknown, never True.
    #[test]
    fn history_available_is_unknown_rather_than_guessed() {
        let plain = fixtures::wsc("chat");
        let good = history(&[("chat", true)]);
        let nodes = HistoryReport::Nodes {
            nodes: vec![&good],
            partial: false,
        };
        assert_eq!(history_condition(&plain, &nodes), None);

        let wsc = fixtures::wsc("chat").with_history_namespace("chat");
        let unreadable = history_condition(&wsc, &HistoryReport::Unreadable("timed out")).unwrap();
        assert_eq!(
            (unreadable.status.as_str(), unreadable.reason.as_str()),
            ("Unknown", reason::STATS_UNAVAILABLE)
        );
        assert!(unreadable.message.contains("timed out"));

        let silent = BTreeMap::new();
        let old_gateways = HistoryReport::Nodes {
            nodes: vec![&silent, &silent],
            partial: false,
        };
        let unreported = history_condition(&wsc, &old_gateways).unwrap();
        assert_eq!(
            (unreported.status.as_str(), unreported.reason.as_str()),
            ("Unknown", reason::NOT_REPORTED)
        );
        assert!(unreported.message.contains("namespace chat"));
    }

    /// The reconciler keeps the poller's `HistoryAvailable` while a history
    /// namespace exists, and drops it with the last one.
    #[test]
    fn reconciler_carries_history_available_over() {
        let mut wsc = fixtures::wsc("chat").with_history_namespace("chat");
        let written = unknown(HISTORY_AVAILABLE, reason::STATS_UNAVAILABLE, "x", Some(1));
        wsc.status = Some(WsClusterStatus {
            conditions: vec![written.clone()],
            ..Default::default()
        });
        let kept = status(&wsc, &Observed::default());
        assert!(kept.conditions.contains(&written));
        wsc.spec.namespaces.clear();
        let dropped = status(&wsc, &Observed::default());
        assert!(
            dropped
                .conditions
                .iter()
                .all(|c| c.type_ != HISTORY_AVAILABLE)
        );
    }

    /// `ScalingActive` exists only with a connections target: True while
    /// the stats are read, False naming the error while not; the reconciler
    /// carries the poller's condition and the scale fields over (the
    /// poller owns them), and drops the condition when the target goes.
    #[test]
    fn scaling_active_follows_the_stats_and_the_reconciler_keeps_it() {
        let mut wsc = fixtures::wsc("chat").with_connections_autoscaling(1000);
        let active = scaling_condition(&wsc, None).unwrap();
        assert_eq!(
            (active.status.as_str(), active.reason.as_str()),
            ("True", reason::ACTIVE)
        );
        let failed = scaling_condition(&wsc, Some("timed out")).unwrap();
        assert_eq!(
            (failed.status.as_str(), failed.reason.as_str()),
            ("False", reason::STATS_UNAVAILABLE)
        );
        assert!(failed.message.contains("timed out"), "{}", failed.message);

        let scaled = Time(Timestamp::UNIX_EPOCH);
        wsc.status = Some(WsClusterStatus {
            conditions: vec![failed.clone()],
            desired_replicas: Some(4),
            last_scale_time: Some(scaled.clone()),
            ..Default::default()
        });
        let kept = status(&wsc, &Observed::default());
        assert!(kept.conditions.contains(&failed));
        assert_eq!(kept.desired_replicas, Some(4));
        assert_eq!(kept.last_scale_time, Some(scaled));

        wsc.spec.autoscaling = None;
        assert_eq!(scaling_condition(&wsc, None), None);
        let dropped = status(&wsc, &Observed::default());
        assert!(dropped.conditions.iter().all(|c| c.type_ != SCALING_ACTIVE));
    }

    /// A Deployment past its progress deadline: Degraded with the
    /// Deployment's reason and message, Progressing False (nothing moves),
    /// not Ready.
    #[test]
    fn progress_deadline_exceeded_is_degraded_and_not_progressing() {
        use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
        let wsc = fixtures::wsc("chat").replicas(2);
        let mut deployment = Deployment::default();
        deployment.metadata.name = Some("chat".into());
        deployment.metadata.generation = Some(2);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            ready_replicas: Some(1),
            updated_replicas: Some(1),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some(reason::PROGRESS_DEADLINE_EXCEEDED.into()),
                message: Some("ReplicaSet \"chat-5c\" has timed out progressing.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let observed = Observed {
            deployment: Some(&deployment),
            desired_replicas: 2,
            ..Default::default()
        };
        let written = status(&wsc, &observed);
        let get = |type_: &str| {
            written
                .conditions
                .iter()
                .find(|c| c.type_ == type_)
                .unwrap()
                .clone()
        };
        let degraded = get(DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", reason::PROGRESS_DEADLINE_EXCEEDED)
        );
        assert_eq!(
            degraded.message,
            "Deployment chat: ReplicaSet \"chat-5c\" has timed out progressing."
        );
        assert_eq!(get(PROGRESSING).status, "False");
        assert_eq!(get(READY).status, "False");
        assert_eq!(get(READY).reason, reason::PROGRESS_DEADLINE_EXCEEDED);
    }
}
