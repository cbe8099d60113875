//! The status the operator writes through the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed of a `WsCluster`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WsClusterStatus {
    /// The `metadata.generation` this status describes; older than the
    /// current generation means the operator has not caught up yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, with `BrokerReady` and
    /// `HistoryAvailable` where they apply (see `wsgate_crds::condition`).
    /// A map keyed by `type`, so server-side apply and `kubectl` treat each
    /// condition as its own entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Pods of the fleet, as the Deployment counts them (the scale
    /// subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// Pods passing their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods, for the scale subresource and the HPA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Where clients connect: the Ingress or HTTPRoute URL, else the
    /// Service's in-cluster URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// WebSocket connections across the fleet, from the gateways' stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Rooms with members across the fleet, from the gateways' stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<u64>,
    /// When `connections` and `rooms` were last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_time: Option<Time>,
    /// The replicas the connections autoscaler last asked for (after its
    /// stabilization window and step limit); absent without
    /// `autoscaling.targetConnectionsPerPod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When the connections autoscaler last changed `spec.replicas`, as an
    /// HPA's `status.lastScaleTime`: for people and tooling asking whether
    /// the fleet just moved. (A restarted operator does not need it: it
    /// starts its scale-down window from the current replicas.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}
