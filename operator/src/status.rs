//! The WsCluster status: conditions and counts computed from the children.
//!
//! Conditions follow the API conventions: `lastTransitionTime` moves only
//! when `status` changes, so an unchanged fleet yields an identical status
//! and the controller skips the write.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use wsgate_crds::condition::{BROKER_READY, DEGRADED, PROGRESSING, READY, reason};
use wsgate_crds::{WsCluster, WsClusterStatus};

/// A condition with `status` `"True"` or `"False"`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
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
}

/// The status of `wsc` given what was observed. Stats (`connections`,
/// `rooms`, `statsTime`) are carried over: the stats poller owns them.
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
        let ready_condition = if all_ready && rolled_out {
            condition(
                READY,
                true,
                reason::AVAILABLE,
                format!("{ready}/{wanted} replicas ready"),
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
        let progressing = if rolled_out && all_ready {
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
        vec![
            ready_condition,
            progressing,
            condition(DEGRADED, false, reason::AS_EXPECTED, "", generation),
        ]
    };

    conditions.extend(broker_condition(observed, generation));

    WsClusterStatus {
        observed_generation: generation,
        conditions: merge_conditions(&old.conditions, conditions),
        replicas,
        ready_replicas: ready,
        selector: Some(observed.selector.clone()),
        endpoint: observed.endpoint.clone(),
        connections: old.connections,
        rooms: old.rooms,
        stats_time: old.stats_time,
    }
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

/// Where clients connect: `wss://host/ws` with an Ingress host and TLS,
/// `ws://host/ws` without TLS, the first HTTPRoute host name, or the
/// Service's in-cluster URL.
pub fn endpoint(wsc: &WsCluster) -> Option<String> {
    let namespace = wsc.metadata.namespace.as_deref()?;
    let name = wsc.metadata.name.as_deref()?;
    let spec = &wsc.spec;
    if let Some(ingress) = &spec.ingress
        && let Some(host) = &ingress.host
    {
        let scheme = if ingress.tls_secret_name.is_some() {
            "wss"
        } else {
            "ws"
        };
        return Some(format!("{scheme}://{host}/ws"));
    }
    if let Some(route) = &spec.http_route
        && let Some(host) = route.hostnames.first()
    {
        return Some(format!("wss://{host}/ws"));
    }
    Some(format!(
        "ws://{name}.{namespace}.svc:{}/ws",
        spec.service.port
    ))
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
            endpoint(&fixtures::wsc("chat").with_ingress()).unwrap(),
            "wss://chat.example.com/ws"
        );
        let mut plain = fixtures::wsc("chat").with_ingress();
        if let Some(ingress) = plain.spec.ingress.as_mut() {
            ingress.tls_secret_name = None;
        }
        assert_eq!(endpoint(&plain).unwrap(), "ws://chat.example.com/ws");
        assert_eq!(
            endpoint(&fixtures::wsc("chat").with_http_route()).unwrap(),
            "wss://chat.example.com/ws"
        );
        assert_eq!(
            endpoint(&fixtures::wsc("chat")).unwrap(),
            "ws://chat.prod.svc:80/ws"
        );
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
}
