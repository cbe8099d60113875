//! Condition types and reasons of a `WsCluster`'s status.
//!
//! They follow the Kubernetes API conventions: `type` in PascalCase, `status`
//! `"True"`, `"False"` or `"Unknown"`, `reason` a PascalCase word a program
//! can branch on, `message` a sentence for a person.

/// The fleet serves clients: every wanted replica is ready and the spec is
/// valid.
pub const READY: &str = "Ready";

/// The operator is moving the fleet toward the spec: a rollout, a scale or a
/// first start is under way.
pub const PROGRESSING: &str = "Progressing";

/// The fleet cannot reach the spec without a person: an invalid spec, a
/// failed apply, or pods that do not become ready.
pub const DEGRADED: &str = "Degraded";

/// Present with `spec.nats.managed`: every server of the managed NATS is
/// ready (its JetStream is up). `kubectl get wsc` shows it as `Broker`.
pub const BROKER_READY: &str = "BrokerReady";

/// Present when a namespace of `spec.namespaces` keeps history
/// (`historySize > 0`): every gateway that reports can store every history
/// namespace's messages. Read from the gateways' stats by the operator's
/// stats poller; `Unknown` while the stats cannot be read or no gateway
/// reports history. Absent without a history namespace.
pub const HISTORY_AVAILABLE: &str = "HistoryAvailable";

/// Present with `autoscaling.targetConnectionsPerPod`: the operator's
/// connections autoscaler can read the gateways' stats and so can act.
/// `False` with [`reason::STATS_UNAVAILABLE`] while it cannot: the fleet
/// then keeps its replicas (it neither grows nor shrinks). Set by the
/// stats poller; absent with a CPU target (the HPA reports its own) or
/// without autoscaling.
pub const SCALING_ACTIVE: &str = "ScalingActive";

/// Reasons set on the conditions above.
pub mod reason {
    /// Every wanted replica is ready and up to date.
    pub const AVAILABLE: &str = "Available";
    /// Fewer replicas are ready than wanted.
    pub const REPLICAS_NOT_READY: &str = "ReplicasNotReady";
    /// A new pod template is being rolled out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// The Deployment has caught up with the spec.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// The spec passed the schema but cannot work (see the message).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A Secret the spec references does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// The API server refused a child object.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// A child's name is taken by an object this WsCluster does not
    /// control; it is left alone (never adopted).
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// Nothing is wrong.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// The Deployment made no progress within its
    /// `progressDeadlineSeconds` (the Deployment controller's own reason,
    /// carried over to `Degraded`).
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// The Deployment reports `ReplicaFailure` without a reason of its own
    /// (it usually gives one, such as `FailedCreate`, which is used instead).
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// `httpRoute` is set but the Gateway API (`HTTPRoute` of
    /// `gateway.networking.k8s.io`) is not installed: no route is applied.
    pub const ROUTE_NOT_APPLIED: &str = "RouteNotApplied";
    /// A gateway reports that it cannot store a history namespace's
    /// messages: publishes to those rooms fail.
    pub const HISTORY_UNAVAILABLE: &str = "HistoryUnavailable";
    /// The connections autoscaler reads the gateways' stats and acts on
    /// them (`ScalingActive=True`).
    pub const ACTIVE: &str = "Active";
    /// The gateways' stats could not be read.
    pub const STATS_UNAVAILABLE: &str = "StatsUnavailable";
    /// The gateways answered but none reports a history namespace (older
    /// gateways, or a config that has not rolled out yet).
    pub const NOT_REPORTED: &str = "NotReported";
}
