//! Pure desired-state builders: `WsCluster` in, Kubernetes objects out.
//!
//! Nothing here does I/O, so every builder is unit-tested directly and
//! `wsgate-operator render` prints exactly what the controller applies.
//! Every child carries the recommended `app.kubernetes.io/*` labels and a
//! controller owner reference to its WsCluster, so deleting the WsCluster
//! garbage-collects the fleet.

mod config;
mod deployment;
mod hpa;
mod http_route;
mod ingress;
pub mod nats;
mod network_policy;
mod pdb;
mod secret;
mod security;
mod service;
mod service_account;

pub use config::{CONFIG_FILE, CONFIG_KEY, config_map, gateway_config};
pub use deployment::{
    CONFIG_CHECKSUM_ANNOTATION, DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_REQUEST, deployment,
    desired_replicas, gateway_resources,
};
pub use hpa::horizontal_pod_autoscaler;
pub use http_route::{HTTPRoute, HTTPRouteSpec, http_route};
pub use ingress::ingress;
pub use network_policy::{BACKEND_LABEL, network_policy};
pub use pdb::pod_disruption_budget;
pub use secret::{
    API_KEYS_KEY, api_keys_file, api_keys_file_keeping, api_keys_secret, generate_api_key,
    keeps_copied_user_keys, operator_key,
};
pub use service::{admin_service, admin_service_name, service};
pub use service_account::service_account;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Resource, ResourceExt, api::ObjectMeta};
use sha2::{Digest, Sha256};
use wsgate_crds::WsCluster;

use crate::{Error, Result};

/// Port of the gateway's public listener inside the pod.
pub const PUBLIC_PORT: i32 = 8080;
/// Port of the gateway's admin listener inside the pod.
pub const ADMIN_PORT: i32 = 9090;
/// Name of the public port on the pod and the Service.
pub const PUBLIC_PORT_NAME: &str = "ws";
/// Name of the admin port on the pod and the Service.
pub const ADMIN_PORT_NAME: &str = "admin";

/// The default gateway image repository; the tag is the operator's version.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/wsgate/wsgate";

/// The namespace the chart installs the operator in by default.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "wsgate-system";

/// What the builders need beside the WsCluster: decisions made by the
/// operator at reconcile time rather than in the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The gateway image used when the spec names none.
    pub default_image: String,
    /// The operator's own namespace: a NetworkPolicy admits it to the admin
    /// port, where the operator reads the gateways' stats.
    pub operator_namespace: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_image: format!("{DEFAULT_IMAGE_REPOSITORY}:{}", crate::VERSION),
            operator_namespace: DEFAULT_OPERATOR_NAMESPACE.to_owned(),
        }
    }
}

/// Every object the operator wants for one WsCluster.
#[derive(Clone, Debug, Default)]
pub struct Children {
    /// Identity of the pods (no API access: the token is not mounted).
    pub service_account: ServiceAccount,
    /// The gateway config file.
    pub config_map: ConfigMap,
    /// The backend API keys file: the operator's key and the user's keys.
    pub api_keys_secret: Secret,
    /// The gateways.
    pub deployment: Deployment,
    /// `<name>`: the public (WebSocket) port, with the spec's type.
    pub service: Service,
    /// `<name>-admin`: the admin port, always ClusterIP.
    pub admin_service: Service,
    /// `maxUnavailable: 1`.
    pub pod_disruption_budget: PodDisruptionBudget,
    /// Present with `spec.ingress`.
    pub ingress: Option<Ingress>,
    /// Present with `networkPolicy.enabled`.
    pub network_policy: Option<NetworkPolicy>,
    /// Present with `spec.httpRoute`.
    pub http_route: Option<HTTPRoute>,
    /// Present with `autoscaling.targetCpuUtilization`.
    pub horizontal_pod_autoscaler: Option<HorizontalPodAutoscaler>,
    /// Present with `nats.managed`: the NATS cluster the gateways use.
    pub nats: Option<nats::ManagedNats>,
}

/// Builds every child of `wsc`.
///
/// `api_keys` is the content of the API keys file (see
/// [`api_keys_secret`]); the controller reads it from the cache or makes a
/// new key, `render` uses a placeholder. `nats_credentials` are those of a
/// managed NATS (see [`nats::NatsCredentials`]), kept the same way; they
/// are needed only with `nats.managed`.
///
/// # Errors
///
/// [`Error::MissingMetadata`] without a namespace or name;
/// [`Error::MissingNatsCredentials`] with `nats.managed` but no credentials.
pub fn children(
    wsc: &WsCluster,
    settings: &Settings,
    api_keys: &str,
    nats_credentials: Option<&nats::NatsCredentials>,
) -> Result<Children> {
    let config_map = config_map(wsc)?;
    let nats = match (nats::managed_spec(wsc), nats_credentials) {
        (None, _) => None,
        (Some(_), None) => return Err(Error::MissingNatsCredentials),
        (Some(_), Some(credentials)) => nats::managed_nats(wsc, credentials)?,
    };
    Ok(Children {
        nats,
        service_account: service_account(wsc)?,
        api_keys_secret: api_keys_secret(wsc, api_keys)?,
        deployment: deployment(wsc, settings, &config_map)?,
        service: service(wsc)?,
        admin_service: admin_service(wsc)?,
        pod_disruption_budget: pod_disruption_budget(wsc)?,
        ingress: ingress(wsc)?,
        network_policy: network_policy(wsc, settings)?,
        http_route: http_route(wsc)?,
        horizontal_pod_autoscaler: horizontal_pod_autoscaler(wsc)?,
        config_map,
    })
}

impl Children {
    /// Every child as JSON, in apply order, for `render`.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] if an object cannot be serialized.
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>> {
        let mut values = vec![serde_json::to_value(&self.service_account)?];
        if let Some(nats) = &self.nats {
            values.extend([
                serde_json::to_value(&nats.secret)?,
                serde_json::to_value(&nats.config_map)?,
                serde_json::to_value(&nats.headless_service)?,
                serde_json::to_value(&nats.service)?,
                serde_json::to_value(&nats.statefulset)?,
                serde_json::to_value(&nats.pod_disruption_budget)?,
            ]);
        }
        values.extend([
            serde_json::to_value(&self.config_map)?,
            serde_json::to_value(&self.api_keys_secret)?,
            serde_json::to_value(&self.deployment)?,
            serde_json::to_value(&self.service)?,
            serde_json::to_value(&self.admin_service)?,
            serde_json::to_value(&self.pod_disruption_budget)?,
        ]);
        if let Some(ingress) = &self.ingress {
            values.push(serde_json::to_value(ingress)?);
        }
        if let Some(policy) = &self.network_policy {
            values.push(serde_json::to_value(policy)?);
        }
        if let Some(route) = &self.http_route {
            values.push(serde_json::to_value(route)?);
        }
        if let Some(hpa) = &self.horizontal_pod_autoscaler {
            values.push(serde_json::to_value(hpa)?);
        }
        Ok(values)
    }
}

/// The namespace and name of a WsCluster.
///
/// # Errors
///
/// [`Error::MissingMetadata`] when either is missing.
pub fn namespace_and_name(wsc: &WsCluster) -> Result<(String, String)> {
    let namespace = wsc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = wsc
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    Ok((namespace, name))
}

/// Name of the ConfigMap holding the gateway config.
pub fn config_map_name(wsc_name: &str) -> String {
    format!("{wsc_name}-config")
}

/// Name of the Secret holding the API keys file.
pub fn api_keys_secret_name(wsc_name: &str) -> String {
    format!("{wsc_name}-api-keys")
}

/// Labels selecting the pods of one WsCluster. Stable for the life of the
/// Deployment (a selector is immutable).
pub fn selector_labels(wsc_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "wsgate".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), wsc_name.to_owned()),
    ])
}

/// The recommended `app.kubernetes.io/*` labels of every child.
pub fn labels(wsc_name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(wsc_name);
    labels.insert(
        "app.kubernetes.io/component".to_owned(),
        "gateway".to_owned(),
    );
    labels.insert("app.kubernetes.io/part-of".to_owned(), "wsgate".to_owned());
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        crate::FIELD_MANAGER.to_owned(),
    );
    labels
}

/// The label selector of the pods as a string, for the status and the
/// scale subresource.
pub fn selector_string(wsc_name: &str) -> String {
    selector_labels(wsc_name)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Metadata of a child named `name`: namespace, labels and the controller
/// owner reference.
///
/// # Errors
///
/// [`Error::MissingMetadata`] when the WsCluster lacks a namespace or name.
pub fn child_meta(wsc: &WsCluster, name: String) -> Result<ObjectMeta> {
    let (namespace, wsc_name) = namespace_and_name(wsc)?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: Some(labels(&wsc_name)),
        owner_references: wsc.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    })
}

/// Most characters of a NATS subject token the operator derives.
pub const MAX_CLUSTER_TOKEN_LEN: usize = 64;

/// The gateway `cluster` of a WsCluster: one NATS subject token of
/// `[A-Za-z0-9_-]`, at most 64 characters, unique per namespace and name.
///
/// `<namespace>_<name>` when that fits: Kubernetes names hold no `_`, so the
/// mapping is injective. Otherwise (a name with `.`, or too long) the
/// sanitized prefix is cut and the first 16 hex digits of the SHA-256 of
/// `<namespace>/<name>` appended, which keeps distinct WsClusters apart.
pub fn cluster_token(namespace: &str, name: &str) -> String {
    let plain = format!("{namespace}_{name}");
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if plain.len() <= MAX_CLUSTER_TOKEN_LEN && plain.chars().all(valid) {
        return plain;
    }
    let digest = hex::encode(Sha256::digest(format!("{namespace}/{name}").as_bytes()));
    let sanitized: String = plain
        .chars()
        .map(|c| if valid(c) { c } else { '-' })
        .take(MAX_CLUSTER_TOKEN_LEN - 17)
        .collect();
    format!("{sanitized}_{}", &digest[..16])
}

/// Hex SHA-256 of `data`, used for the config checksum and desired hashes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests;
