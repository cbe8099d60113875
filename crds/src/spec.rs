//! The `WsCluster` resource and its spec.
//!
//! Static defaults (those of `docs/config.md`) live in the schema, through
//! `#[serde(default = ...)]`, so `kubectl get -o yaml` shows what applies and
//! `wsgate-operator render` sees the same values as the API server. They are
//! the second copy of the gateway's defaults (this crate stays free of the
//! gateway's config crate): a test in the operator
//! (`crd_schema_defaults_are_the_gateway_defaults`) compares every schema
//! default of a gateway section with the gateway's key table. Defaults
//! that depend on the operator (the gateway image) are resolved at reconcile
//! time instead. Cross-field rules are CEL rules with messages meant for a
//! person.

// kube's `printcolumn(..)` repeats `type_ = ..` by design; clippy reads that
// as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::WsClusterStatus;

/// A fleet of wsgate gateways: one Deployment, its Service, optionally an
/// Ingress or HTTPRoute, and the configuration they share.
///
/// Gateways of one WsCluster form one cluster on NATS (subjects are
/// namespaced by a token derived from the WsCluster's namespace and name);
/// without `nats` every replica is a single node, so keep `replicas: 1`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "wsgate.io",
    version = "v1alpha1",
    kind = "WsCluster",
    plural = "wsclusters",
    shortname = "wsc",
    category = "wsgate",
    namespaced,
    status = "WsClusterStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A fleet of wsgate WebSocket gateways, managed by wsgate-operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Connections",
        type_ = "integer",
        json_path = ".status.connections"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Broker",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"BrokerReady\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!(has(self.ingress) && has(self.httpRoute))").message("set either ingress or httpRoute, not both"))]
#[x_kube(validation = Rule::new("has(self.nats) || !has(self.replicas) || self.replicas <= 1").message("without nats every pod is a separate single node: set nats to run more than one replica"))]
#[x_kube(validation = Rule::new("has(self.nats) || !has(self.autoscaling)").message("autoscaling needs nats: without it every pod is a separate single node"))]
#[x_kube(validation = Rule::new("!has(self.nats) || !has(self.nats.managed) || !has(self.history) || !has(self.history.replicas) || self.history.replicas <= self.nats.managed.replicas").message("history.replicas must not exceed nats.managed.replicas: JetStream cannot place more replicas than it has servers"))]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || !has(self.autoscaling.targetConnectionsPerPod) || self.autoscaling.targetConnectionsPerPod * 10 <= (has(self.limits) && has(self.limits.maxConnections) ? self.limits.maxConnections : 10000) * 9").message("autoscaling.targetConnectionsPerPod must be at most 90% of limits.maxConnections (default 10000): at the limit, refused clients never show in the load and the autoscaler could not see the demand"))]
#[x_kube(validation = Rule::new("(has(self.nats) && has(self.nats.managed)) == (has(oldSelf.nats) && has(oldSelf.nats.managed))").message("nats.managed cannot be added to or removed from an existing WsCluster: see \"Changing the managed NATS size\" in docs/operator.md"))]
#[x_kube(validation = Rule::new("has(self.auth) && (has(self.auth.jwtSecret) || has(self.auth.jwtPublicKey) || has(self.auth.jwks) || (has(self.auth.allowAnonymous) && self.auth.allowAnonymous))").message("auth: set jwtSecret, jwtPublicKey or jwks, or allowAnonymous: true; as written every client would be refused"))]
#[serde(rename_all = "camelCase")]
pub struct WsClusterSpec {
    /// Number of gateway pods. Leave it out when `autoscaling` is set: then
    /// it is written only through the scale subresource (by the HPA or the
    /// operator). Absent without autoscaling: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Gateway image. Absent: `ghcr.io/wsgate/wsgate:<operator version>`,
    /// resolved by the operator at reconcile time so that upgrading the
    /// operator upgrades fleets that do not pin an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Pull policy of the gateway image. Absent: Kubernetes' default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Secrets for pulling the gateway image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// NATS connecting the replicas. Absent: every pod is a single node with
    /// an in-process broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSpec>,

    /// How clients authenticate and how backends reach the HTTP API.
    #[serde(default)]
    pub auth: AuthSpec,

    /// Origin allow-list for WebSocket upgrades. Empty: any origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,

    /// Refuse upgrades that carry no `Origin` header.
    #[serde(default)]
    pub require_origin: bool,

    /// Per-pod and per-connection limits.
    #[serde(default)]
    pub limits: LimitsSpec,

    /// Behaviour per room namespace (the part of a room name before `:`);
    /// `default` configures rooms without a configured namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, NamespaceSpec>,

    /// History storage: JetStream's with NATS (`storage`, `replicas`), the
    /// gateway's memory without (`memoryMaxBytes`).
    #[serde(default)]
    pub history: HistorySpec,

    /// Graceful shutdown of a pod.
    #[serde(default)]
    pub drain: DrainSpec,

    /// Rebalancing after a scale-out: a pod above the fleet's mean load
    /// hands its excess connections to the others (`reconnect`, then 1012).
    #[serde(default)]
    pub rebalance: RebalanceSpec,

    /// Log format of the gateways.
    #[serde(default)]
    pub log_format: LogFormat,

    /// The Service in front of the pods.
    #[serde(default)]
    pub service: ServiceSpec,

    /// An optional NetworkPolicy on the gateway pods: the public port from
    /// anywhere, the admin port only from the operator and backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// An Ingress exposing the public port (`/ws`). Mutually exclusive with
    /// `httpRoute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// A Gateway API HTTPRoute exposing the public port (`/ws`), the
    /// successor of Ingress. Mutually exclusive with `ingress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteSpec>,

    /// Compute resources of the gateway container. Absent: requests of
    /// 100m CPU and 128Mi memory, no limits (the pods are not BestEffort);
    /// `{}` runs them BestEffort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Topology spread constraints of the pods. Their `labelSelector` may be
    /// left out: the operator fills in the pods' own selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Extra annotations on the pods (for example for a service mesh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Autoscaling between `minReplicas` and `maxReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// The Pusher Channels protocol (docs/pusher.md): clients at `/app/{key}`,
    /// the server SDKs' HTTP API at `/apps/{id}/`. Absent: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pusher: Option<PusherSpec>,
}

/// When the kubelet pulls the gateway image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// One key of a Secret in the WsCluster's namespace. The operator mounts it
/// as a file and names the file in the gateway config; the value never
/// leaves the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The NATS servers connecting the replicas: either `url` (NATS you run)
/// or `managed` (a NATS JetStream cluster the operator runs for this
/// WsCluster).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.url) != has(self.managed)").message("set exactly one of nats.url (NATS you run) and nats.managed (NATS the operator runs)"))]
#[x_kube(validation = Rule::new("!has(self.managed) || (!has(self.credentialsSecret) && !has(self.tls))").message("nats.credentialsSecret and nats.tls apply to nats.url only: the operator makes the managed NATS credentials itself"))]
#[serde(rename_all = "camelCase")]
pub struct NatsSpec {
    /// Comma-separated NATS URLs, e.g. `nats://nats.nats:4222`, each
    /// `nats://`, `tls://`, `ws://`, `wss://` or a bare `host[:port]` (as the
    /// gateway's `nats_url`). Exclusive with `managed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.matches('^ *((nats|tls|ws|wss)://[^ ,]+|[^ ,:/]+(:[0-9]+)?) *(, *((nats|tls|ws|wss)://[^ ,]+|[^ ,:/]+(:[0-9]+)?) *)*$')").message("nats.url must be comma-separated nats://, tls://, ws:// or wss:// URLs (or host:port), like nats://nats.nats:4222"))]
    pub url: Option<String>,
    /// A NATS JetStream cluster run by the operator, owned by this
    /// WsCluster. Exclusive with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedNatsSpec>,
    /// A NATS `.creds` file (JWT and NKey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretKeyRef>,
    /// TLS to NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NatsTlsSpec>,
    /// How fast a dead NATS connection is noticed, in milliseconds.
    #[serde(default = "default_nats_ping_interval_ms")]
    #[schemars(range(min = 100))]
    pub ping_interval_ms: u64,
}

fn default_nats_ping_interval_ms() -> u64 {
    5000
}

/// A NATS JetStream cluster the operator runs for one WsCluster: a
/// StatefulSet with a volume per server, routes between every pod, and
/// credentials the operator generates (the servers refuse clients without
/// them).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedNatsSpec {
    /// NATS servers: 1, 3 or 5 (JetStream needs a majority). Immutable:
    /// the servers' routes and the streams' placement depend on it.
    #[serde(default = "default_managed_nats_replicas")]
    #[x_kube(validation = Rule::new("self in [1, 3, 5]").message("nats.managed.replicas must be 1, 3 or 5: JetStream needs a majority of its servers"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("nats.managed.replicas is immutable: see \"Changing the managed NATS size\" in docs/operator.md"))]
    pub replicas: i32,
    /// The nats-server image. Absent: the official `nats` image of the
    /// version the operator was tested with ([`DEFAULT_NATS_IMAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The JetStream volume of each server.
    #[serde(default)]
    pub storage: ManagedNatsStorage,
    /// Compute resources of the nats-server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The official NATS image the operator runs when `nats.managed.image` is
/// absent: pinned, so that upgrading NATS is a decision.
pub const DEFAULT_NATS_IMAGE: &str = "nats:2.15.1-alpine";

impl Default for ManagedNatsSpec {
    fn default() -> Self {
        Self {
            replicas: default_managed_nats_replicas(),
            image: None,
            storage: ManagedNatsStorage::default(),
            resources: None,
        }
    }
}

fn default_managed_nats_replicas() -> i32 {
    3
}

/// The JetStream volume of each managed NATS server (a
/// `volumeClaimTemplate`: size and class cannot change after creation).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.size == oldSelf.size && has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("nats.managed.storage.size and storageClassName are immutable (a StatefulSet's volumeClaimTemplates are): see \"Changing the managed NATS size\" in docs/operator.md"))]
#[serde(rename_all = "camelCase")]
pub struct ManagedNatsStorage {
    /// Size of each server's volume.
    #[serde(default = "default_managed_nats_storage_size")]
    pub size: Quantity,
    /// StorageClass of the volumes. Absent: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep the volumes (and the history on them) when the WsCluster is
    /// deleted or the StatefulSet scaled down; `false` deletes them with it.
    #[serde(default = "default_true")]
    pub retain_on_delete: bool,
}

impl Default for ManagedNatsStorage {
    fn default() -> Self {
        Self {
            size: default_managed_nats_storage_size(),
            storage_class_name: None,
            retain_on_delete: true,
        }
    }
}

fn default_managed_nats_storage_size() -> Quantity {
    Quantity("10Gi".to_owned())
}

/// TLS to NATS: a CA to trust and an optional client certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsTlsSpec {
    /// The CA bundle that signed the NATS servers' certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) holding the client
    /// certificate, for NATS servers that verify clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_name: Option<String>,
}

/// Client authentication and backend API keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The HS256 key tokens are signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<SecretKeyRef>,
    /// An RS256 or ES256 public key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_public_key: Option<SecretKeyRef>,
    /// A JWKS document; keys are chosen by `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<SecretKeyRef>,
    /// Required `aud` claim, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Required `iss` claim, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub leeway_seconds: u64,
    /// Refuse tokens without `exp`.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Accept connections without a token.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Join patterns for tokens without a `rooms` claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_rooms: Vec<String>,
    /// Join and publish patterns for anonymous users. Absent: `["**"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_rooms: Option<Vec<String>>,
    /// Backend API keys, one per line. The operator adds a key of its own
    /// (for reading stats) in a Secret it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret: Option<SecretKeyRef>,
    /// Time a client has to send its first-frame `auth` op, in milliseconds.
    #[serde(default = "default_auth_timeout_ms")]
    #[schemars(range(min = 100))]
    pub auth_timeout_ms: u64,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key: None,
            jwks: None,
            audience: None,
            issuer: None,
            leeway_seconds: default_leeway_seconds(),
            require_exp: true,
            allow_anonymous: false,
            user_rooms: Vec::new(),
            anonymous_rooms: None,
            api_keys_secret: None,
            auth_timeout_ms: default_auth_timeout_ms(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_leeway_seconds() -> u64 {
    30
}
fn default_auth_timeout_ms() -> u64 {
    5000
}

/// Limits per pod and per connection (`limits.*` in docs/config.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.heartbeatTimeoutMs > self.heartbeatMs").message("limits.heartbeatTimeoutMs must be greater than limits.heartbeatMs"))]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Connections one pod accepts; over it, upgrades get 503.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: u64,
    /// Connections one user may hold on one pod.
    #[serde(default = "default_max_connections_per_user")]
    #[schemars(range(min = 1))]
    pub max_connections_per_user: u64,
    /// Most presence members per page.
    #[serde(default = "default_max_page_size")]
    #[schemars(range(min = 1))]
    pub max_page_size: u64,
    /// Rooms one connection may join.
    #[serde(default = "default_max_rooms_per_connection")]
    #[schemars(range(min = 1))]
    pub max_rooms_per_connection: u64,
    /// Largest message, in bytes; must not exceed NATS `max_payload`.
    #[serde(default = "default_max_message_bytes")]
    #[schemars(range(min = 128))]
    pub max_message_bytes: u64,
    /// Largest backend API body, in bytes.
    #[serde(default = "default_max_http_body_bytes")]
    #[schemars(range(min = 1024))]
    pub max_http_body_bytes: u64,
    /// Outgoing queue per connection, in messages; full: close 1013.
    #[serde(default = "default_send_queue")]
    #[schemars(range(min = 1))]
    pub send_queue: u64,
    /// Messages per second one connection may publish.
    #[serde(default = "default_publish_rate")]
    #[schemars(range(min = 1))]
    pub publish_rate: u64,
    /// Burst above `publishRate`.
    #[serde(default = "default_publish_burst")]
    #[schemars(range(min = 1))]
    pub publish_burst: u64,
    /// Command cost units per second one connection may spend: every command
    /// pays its cost (1 for a ping, up to 10 for auth and refresh; see
    /// docs/protocol.md); over it: `rate_limited`.
    #[serde(default = "default_command_rate")]
    #[schemars(range(min = 1))]
    pub command_rate: u64,
    /// Command cost units allowed at once above `commandRate`.
    #[serde(default = "default_command_burst")]
    #[schemars(range(min = 1))]
    pub command_burst: u64,
    /// Client-fault errors per minute before a connection is closed (1008).
    #[serde(default = "default_max_errors_per_minute")]
    #[schemars(range(min = 1))]
    pub max_errors_per_minute: u64,
    /// Server ping interval, in milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    #[schemars(range(min = 1000))]
    pub heartbeat_ms: u64,
    /// No pong within this many milliseconds: close 1011.
    #[serde(default = "default_heartbeat_timeout_ms")]
    #[schemars(range(min = 1000))]
    pub heartbeat_timeout_ms: u64,
    /// Milliseconds a socket on the public port has to send a request's
    /// headers (the first, and each next one on a kept-alive connection);
    /// then it is closed, so idle sockets cannot pile up.
    #[serde(default = "default_handshake_timeout_ms")]
    #[schemars(range(min = 1))]
    pub handshake_timeout_ms: u64,
    /// WebSocket connections one client address may hold on one pod; over
    /// it, upgrades get 429. 0: no cap. Behind a proxy, set
    /// `trustedProxies` so that clients are told apart.
    #[serde(default)]
    pub max_connections_per_ip: u64,
    /// Proxies (CIDRs such as `10.0.0.0/8`, or single addresses) whose
    /// `X-Forwarded-For` header names the client address. From any other
    /// peer the header is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_connections_per_user: default_max_connections_per_user(),
            max_page_size: default_max_page_size(),
            max_rooms_per_connection: default_max_rooms_per_connection(),
            max_message_bytes: default_max_message_bytes(),
            max_http_body_bytes: default_max_http_body_bytes(),
            send_queue: default_send_queue(),
            publish_rate: default_publish_rate(),
            publish_burst: default_publish_burst(),
            command_rate: default_command_rate(),
            command_burst: default_command_burst(),
            max_errors_per_minute: default_max_errors_per_minute(),
            heartbeat_ms: default_heartbeat_ms(),
            heartbeat_timeout_ms: default_heartbeat_timeout_ms(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            max_connections_per_ip: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_max_connections() -> u64 {
    10_000
}
fn default_max_connections_per_user() -> u64 {
    100
}
fn default_max_page_size() -> u64 {
    1000
}
fn default_max_rooms_per_connection() -> u64 {
    100
}
fn default_max_message_bytes() -> u64 {
    65_536
}
fn default_max_http_body_bytes() -> u64 {
    1_048_576
}
fn default_send_queue() -> u64 {
    256
}
fn default_publish_rate() -> u64 {
    50
}
fn default_publish_burst() -> u64 {
    100
}
fn default_command_rate() -> u64 {
    100
}
fn default_command_burst() -> u64 {
    200
}
fn default_max_errors_per_minute() -> u64 {
    60
}
fn default_heartbeat_ms() -> u64 {
    25_000
}
fn default_heartbeat_timeout_ms() -> u64 {
    60_000
}
fn default_handshake_timeout_ms() -> u64 {
    10_000
}

/// Behaviour of one room namespace (`namespaces.<ns>.*` in docs/config.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// Messages kept per room; 0: no history.
    #[serde(default)]
    pub history_size: u64,
    /// Seconds a message is kept; 0: until pushed out by size.
    #[serde(default)]
    pub history_ttl_seconds: u64,
    /// Bytes of history over all the namespace's rooms (the JetStream
    /// stream's `max_bytes`); beyond it the oldest messages are discarded.
    #[serde(default = "default_history_max_bytes")]
    #[schemars(range(min = 1))]
    pub history_max_bytes: u64,
    /// Messages of history over all the namespace's rooms (the stream's
    /// `max_msgs`); beyond it the oldest are discarded.
    #[serde(default = "default_history_max_msgs")]
    #[schemars(range(min = 1))]
    pub history_max_msgs: u64,
    /// Most messages one recovery returns.
    #[serde(default = "default_recovery_max")]
    #[schemars(range(min = 1))]
    pub recovery_max: u64,
    /// Keep cluster-wide presence.
    #[serde(default)]
    pub presence: bool,
    /// Send `joined`/`left` events to members.
    #[serde(default)]
    pub join_leave: bool,
    /// `false`: only backends publish.
    #[serde(default = "default_true")]
    pub client_publish: bool,
}

impl Default for NamespaceSpec {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl_seconds: 0,
            history_max_bytes: default_history_max_bytes(),
            history_max_msgs: default_history_max_msgs(),
            recovery_max: default_recovery_max(),
            presence: false,
            join_leave: false,
            client_publish: true,
        }
    }
}

fn default_recovery_max() -> u64 {
    1000
}
fn default_history_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_history_max_msgs() -> u64 {
    1_000_000
}

/// History storage: JetStream's with NATS, the gateway's memory without.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistorySpec {
    /// `file` survives NATS restarts; `memory` is faster.
    #[serde(default)]
    pub storage: HistoryStorage,
    /// JetStream stream replicas. Absent: min(3, `nats.managed.replicas`)
    /// with managed NATS, else 1 (see [`WsClusterSpec::history_replicas`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: Option<u64>,
    /// Without NATS (one gateway), bytes of in-memory history over all
    /// rooms; beyond it the least recently used rooms are dropped whole.
    #[serde(default = "default_memory_max_bytes")]
    #[schemars(range(min = 1))]
    pub memory_max_bytes: u64,
}

impl Default for HistorySpec {
    fn default() -> Self {
        Self {
            storage: HistoryStorage::default(),
            replicas: None,
            memory_max_bytes: default_memory_max_bytes(),
        }
    }
}

fn default_memory_max_bytes() -> u64 {
    256 * 1024 * 1024
}

impl WsClusterSpec {
    /// The JetStream stream replicas history uses: `history.replicas`, else
    /// min(3, `nats.managed.replicas`) with managed NATS, else 1. A
    /// default that follows the managed size keeps history available while
    /// one server restarts.
    pub fn history_replicas(&self) -> u64 {
        let managed = self.nats.as_ref().and_then(|nats| nats.managed.as_ref());
        match (self.history.replicas, managed) {
            (Some(replicas), _) => replicas,
            (None, Some(managed)) => u64::try_from(managed.replicas.clamp(1, 3)).unwrap_or(1),
            (None, None) => default_history_replicas(),
        }
    }
}

fn default_history_replicas() -> u64 {
    1
}

/// Where JetStream keeps history.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStorage {
    /// On disk.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// Graceful shutdown: how a pod hands its clients to the others.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// Hard deadline of a drain, in seconds (then close 1001).
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub seconds: u64,
    /// `reconnect` hints are spread over this window, in milliseconds.
    #[serde(default = "default_reconnect_spread_ms")]
    pub reconnect_spread_ms: u64,
    /// Pause before SIGTERM so that endpoints and load balancers stop
    /// sending new clients to a terminating pod; 0 leaves out the preStop
    /// hook.
    #[serde(default = "default_pre_stop_seconds")]
    #[schemars(range(min = 0, max = 300))]
    pub pre_stop_seconds: u64,
}

impl Default for DrainSpec {
    fn default() -> Self {
        Self {
            seconds: default_drain_seconds(),
            reconnect_spread_ms: default_reconnect_spread_ms(),
            pre_stop_seconds: default_pre_stop_seconds(),
        }
    }
}

fn default_drain_seconds() -> u64 {
    30
}
fn default_reconnect_spread_ms() -> u64 {
    10_000
}
fn default_pre_stop_seconds() -> u64 {
    5
}

/// Rebalancing after a scale-out (the gateway's `[rebalance]`): a pod whose
/// load (connections / `limits.maxConnections`) exceeds the fleet's mean by
/// more than `tolerance` sheds connections down to the mean, gradually, and
/// refuses new upgrades with 503 meanwhile. Clients reconnect through the
/// Ingress and recover what they missed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Whether pods shed connections above the fleet's mean load.
    #[serde(default = "default_rebalance_enabled")]
    pub enabled: bool,
    /// How far above the mean load a pod may be before it sheds, relative
    /// to the mean (0.2: 20%).
    #[serde(default = "default_rebalance_tolerance")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub tolerance: f64,
    /// `after_ms` of a shed connection's `reconnect` is spread over this
    /// window, in milliseconds.
    #[serde(default = "default_rebalance_spread_ms")]
    pub spread_ms: u64,
    /// Most connections one pod sheds per second.
    #[serde(default = "default_rebalance_max_per_second")]
    #[schemars(range(min = 1, max = 4_294_967_295u64))]
    pub max_per_second: u64,
    /// Only connections older than this are shed, in milliseconds, so a
    /// client just moved is not moved again.
    #[serde(default = "default_rebalance_min_age_ms")]
    pub min_age_ms: u64,
    /// Also shed connections that cannot recover what they miss.
    #[serde(default)]
    pub include_unrecoverable: bool,
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            enabled: default_rebalance_enabled(),
            tolerance: default_rebalance_tolerance(),
            spread_ms: default_rebalance_spread_ms(),
            max_per_second: default_rebalance_max_per_second(),
            min_age_ms: default_rebalance_min_age_ms(),
            include_unrecoverable: false,
        }
    }
}

fn default_rebalance_enabled() -> bool {
    true
}
fn default_rebalance_tolerance() -> f64 {
    0.2
}
fn default_rebalance_spread_ms() -> u64 {
    5000
}
fn default_rebalance_max_per_second() -> u64 {
    50
}
fn default_rebalance_min_age_ms() -> u64 {
    120_000
}

/// Log format of the gateways.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
}

/// The Services in front of the gateway pods: `<name>` carries the public
/// port (`ws`) with this type; `<name>-admin` carries the admin port
/// (`admin`: backend API, health, metrics) and is always ClusterIP, so the
/// admin listener is never public.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Type of the public Service `<name>`; the admin Service is always ClusterIP.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port of the public listener on the Service `<name>`.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Port of the admin listener on the ClusterIP Service `<name>-admin`.
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin_port: i32,
    /// Annotations on the public Service `<name>` (for example for a cloud
    /// load balancer); not on `<name>-admin`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_service_port(),
            admin_port: default_admin_port(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_service_port() -> i32 {
    80
}
fn default_admin_port() -> i32 {
    9090
}

/// A NetworkPolicy `<name>` selecting the gateway pods. It admits the
/// public port from anywhere and the admin port (backend API, metrics)
/// only from the operator's namespace, from pods in the WsCluster's
/// namespace labelled `wsgate.io/backend: "true"`, and from `adminFrom`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy. It takes effect only where the cluster's
    /// network plugin enforces NetworkPolicies.
    #[serde(default)]
    pub enabled: bool,
    /// Extra peers admitted to the admin port, for example Prometheus:
    /// `[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

/// Kubernetes Service types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

/// An Ingress routing the public listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("!has(self.tlsSecretName) || has(self.host)").message("ingress.host is required when ingress.tlsSecretName is set"))]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass name. Absent: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Host name. Absent: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix routed to the gateways.
    #[serde(default = "default_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("ingress.path must start with /"))]
    pub path: String,
    /// A `kubernetes.io/tls` Secret for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Annotations on the Ingress (WebSocket timeouts of your controller go
    /// here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_path() -> String {
    "/".to_owned()
}

/// A Gateway API HTTPRoute routing the public listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Gateways (or listeners) the route attaches to.
    #[x_kube(validation = Rule::new("size(self) > 0").message("httpRoute.parentRefs needs at least one Gateway"))]
    pub parent_refs: Vec<ParentRef>,
    /// Host names matched. Empty: those of the parent listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Path prefix routed to the gateways.
    #[serde(default = "default_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("httpRoute.path must start with /"))]
    pub path: String,
    /// Annotations on the HTTPRoute.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A reference to a Gateway API Gateway (`gateway.networking.k8s.io`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Gateway name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Gateway namespace. Absent: the WsCluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A listener of the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Autoscaling between `minReplicas` and `maxReplicas` on one target.
///
/// With `targetCpuUtilization` the operator creates a HorizontalPodAutoscaler
/// whose scale target is the WsCluster itself. With `targetConnectionsPerPod`
/// the operator reads the gateways' stats and scales the WsCluster itself;
/// no metrics adapter is needed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("has(self.targetCpuUtilization) != has(self.targetConnectionsPerPod)").message("autoscaling needs exactly one target: targetCpuUtilization or targetConnectionsPerPod"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest replicas.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilization, in percent of the requests (needs
    /// `resources.requests.cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,
    /// Average WebSocket connections per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_connections_per_pod: Option<i64>,
    /// A scale-down takes the highest recommendation of this window, so a
    /// short dip does not remove pods (and their clients' connections).
    /// Superseded by `behavior.scaleDown.stabilizationSeconds`, which wins
    /// when set; kept so existing manifests keep their meaning.
    #[serde(default = "default_scale_down_stabilization_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: u64,
    /// How fast the fleet may shrink, as an HPA's `behavior`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<AutoscalingBehavior>,
}

impl AutoscalingSpec {
    /// The scale-down window in effect: `behavior.scaleDown.stabilizationSeconds`
    /// when set, else `scaleDownStabilizationSeconds` (default 300).
    pub fn scale_down_stabilization(&self) -> std::time::Duration {
        let seconds = self
            .behavior
            .as_ref()
            .and_then(|behavior| behavior.scale_down.stabilization_seconds)
            .unwrap_or(self.scale_down_stabilization_seconds);
        std::time::Duration::from_secs(seconds)
    }

    /// The most of the current replicas one scale-down step removes, in
    /// percent (`behavior.scaleDown.maxPercent`, default 10).
    pub fn scale_down_max_percent(&self) -> u32 {
        self.behavior
            .as_ref()
            .map_or_else(default_scale_down_max_percent, |behavior| {
                behavior.scale_down.max_percent
            })
    }
}

/// `autoscaling.behavior`: the pace of scaling, named as the HPA's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingBehavior {
    /// How the fleet shrinks. Every removed pod drains its clients, who
    /// reconnect elsewhere, so shrinking is slow and stepwise; growing is
    /// immediate (new clients must find room) and has no knobs.
    #[serde(default)]
    pub scale_down: ScaleDownBehavior,
}

/// `autoscaling.behavior.scaleDown`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDownBehavior {
    /// The fleet shrinks only to the highest recommendation of this many
    /// past seconds, so a short dip does not remove pods. Absent:
    /// `autoscaling.scaleDownStabilizationSeconds` (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_seconds: Option<u64>,
    /// One scale-down step removes at most this percent of the current
    /// replicas, and at least one pod, so a drop in load drains the fleet
    /// gradually rather than at once.
    #[serde(default = "default_scale_down_max_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub max_percent: u32,
}

impl Default for ScaleDownBehavior {
    fn default() -> Self {
        Self {
            stabilization_seconds: None,
            max_percent: default_scale_down_max_percent(),
        }
    }
}

fn default_scale_down_max_percent() -> u32 {
    10
}

fn default_min_replicas() -> i32 {
    1
}
fn default_scale_down_stabilization_seconds() -> u64 {
    300
}

/// `pusher`: the Pusher apps served (`[pusher]` in docs/config.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.apps.all(a, self.apps.exists_one(b, b.id == a.id))").message("pusher.apps: every id must be distinct"))]
#[x_kube(validation = Rule::new("self.apps.all(a, self.apps.exists_one(b, b.key == a.key))").message("pusher.apps: every key must be distinct"))]
#[serde(rename_all = "camelCase")]
pub struct PusherSpec {
    /// The apps, each with its own id, key and secret.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub apps: Vec<PusherAppSpec>,
}

/// One Pusher app. Its secret stays in the named Secret: the operator mounts
/// the key into the pods and names the file, and never reads it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PusherAppSpec {
    /// The app id of the HTTP API's `/apps/{id}/` (letters, digits, `_`, `-`).
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub id: String,
    /// The key clients connect with at `/app/{key}`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub key: String,
    /// Name of the Secret holding the app secret.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub secret_key: String,
    /// Connections of this app per pod; absent: only `limits.maxConnections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u64>,
    /// Accept `client-` events on private and presence channels.
    #[serde(default = "default_true")]
    pub enable_client_messages: bool,
    /// Client events per second per connection.
    #[serde(default = "default_max_client_events_per_second")]
    #[schemars(range(min = 1, max = 4294967295u64))]
    pub max_client_events_per_second: u64,
    /// Distinct users per presence channel.
    #[serde(default = "default_max_presence_members")]
    #[schemars(range(min = 1))]
    pub max_presence_members: u64,
    /// Largest event `data`, in bytes.
    #[serde(default = "default_max_event_bytes")]
    #[schemars(range(min = 1))]
    pub max_event_bytes: u64,
}

fn default_max_client_events_per_second() -> u64 {
    10
}
fn default_max_presence_members() -> u64 {
    100
}
fn default_max_event_bytes() -> u64 {
    10_240
}
