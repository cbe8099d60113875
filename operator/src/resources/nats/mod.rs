//! Managed NATS: the NATS JetStream cluster the operator runs for a
//! WsCluster with `spec.nats.managed`.
//!
//! Children, all owned by the WsCluster: the credentials Secret
//! ([`credentials`]), a ConfigMap with `nats-server.conf` ([`conf`]), a
//! headless Service for the routes and the pods' stable names, a client
//! Service, the StatefulSet ([`statefulset`]) and a PodDisruptionBudget.
//! The NATS pods carry their own selector (`app.kubernetes.io/name: nats`),
//! so the gateways' Service and PodDisruptionBudget never select them.

mod conf;
mod credentials;
mod statefulset;

pub use conf::{ConfValue, ServerConf, nats_server_conf, route_conf};
pub use credentials::{
    ACCOUNT_JWT_KEY, CREDS_KEY, CredentialsError, NatsCredentials, OPERATOR_JWT_KEY,
    ROUTE_PASSWORD_KEY, ROUTE_USER, SYSTEM_ACCOUNT_JWT_KEY, generate_password,
};
pub use statefulset::{NATS_CONFIG_CHECKSUM_ANNOTATION, statefulset};

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use wsgate_crds::{ManagedNatsSpec, WsCluster};

use super::{child_meta, namespace_and_name};
use crate::Result;

/// Port of client connections.
pub const CLIENT_PORT: u16 = 4222;
/// Port of routes between the servers.
pub const CLUSTER_PORT: u16 = 6222;
/// Port of the monitoring endpoint (probes).
pub const MONITOR_PORT: u16 = 8222;
/// Key of the config file in the ConfigMap.
pub const NATS_CONFIG_KEY: &str = "nats-server.conf";
/// Key of the routes' part of the config ([`route_conf`]) in the Secret.
pub const ROUTES_CONF_KEY: &str = "routes.conf";
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/nats-config";
/// Directory the Secret's [`ROUTES_CONF_KEY`] is mounted at.
pub const ROUTES_DIR: &str = "/etc/nats-routes";
/// Environment variable carrying the pod name (the server name).
pub const POD_NAME_ENV: &str = "POD_NAME";
/// Where the JetStream volume is mounted.
pub const STORE_DIR: &str = "/data/jetstream";
/// Where the pid file lives (an emptyDir: the root filesystem is read-only).
pub const PID_DIR: &str = "/var/run/nats";
/// Lame-duck duration, in seconds: clients are moved off a stopping server
/// over this window, within the termination grace period.
pub const LAME_DUCK_SECONDS: u64 = 30;
/// Termination grace period of a NATS pod, in seconds: longer than lame
/// duck, so the server finishes it before the kubelet kills it.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// Every child of a managed NATS.
#[derive(Clone, Debug, Default)]
pub struct ManagedNats {
    /// Credentials: JWTs, the gateways' `.creds`, the route password.
    pub secret: Secret,
    /// `nats-server.conf`.
    pub config_map: ConfigMap,
    /// Stable pod names for the routes (publishes not-ready addresses).
    pub headless_service: Service,
    /// Client port, for tools in the cluster.
    pub service: Service,
    /// The servers.
    pub statefulset: StatefulSet,
    /// `maxUnavailable: 1`: JetStream keeps its majority through drains.
    pub pod_disruption_budget: PodDisruptionBudget,
}

/// The managed NATS spec of `wsc`, if it asks for one.
pub fn managed_spec(wsc: &WsCluster) -> Option<&ManagedNatsSpec> {
    wsc.spec.nats.as_ref()?.managed.as_ref()
}

/// Name of the StatefulSet, the client Service and the PDB.
pub fn nats_name(wsc_name: &str) -> String {
    format!("{wsc_name}-nats")
}

/// Name of the headless Service.
pub fn headless_service_name(wsc_name: &str) -> String {
    format!("{wsc_name}-nats-headless")
}

/// Name of the ConfigMap.
pub fn nats_config_map_name(wsc_name: &str) -> String {
    format!("{wsc_name}-nats-config")
}

/// Name of the credentials Secret.
pub fn nats_secret_name(wsc_name: &str) -> String {
    format!("{wsc_name}-nats-credentials")
}

/// Labels selecting the NATS pods of one WsCluster.
pub fn nats_selector_labels(wsc_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "nats".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), wsc_name.to_owned()),
    ])
}

/// The recommended labels of every managed NATS child.
pub fn nats_labels(wsc_name: &str) -> BTreeMap<String, String> {
    let mut labels = nats_selector_labels(wsc_name);
    labels.insert(
        "app.kubernetes.io/component".to_owned(),
        "broker".to_owned(),
    );
    labels.insert("app.kubernetes.io/part-of".to_owned(), "wsgate".to_owned());
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        crate::FIELD_MANAGER.to_owned(),
    );
    labels
}

/// Metadata of a NATS child: owner reference and the NATS labels.
fn nats_meta(wsc: &WsCluster, name: String) -> Result<ObjectMeta> {
    let (_, wsc_name) = namespace_and_name(wsc)?;
    let mut meta = child_meta(wsc, name)?;
    meta.labels = Some(nats_labels(&wsc_name));
    Ok(meta)
}

/// The stable DNS name of server `ordinal`.
pub fn pod_host(namespace: &str, wsc_name: &str, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}.{}.{namespace}.svc",
        nats_name(wsc_name),
        headless_service_name(wsc_name)
    )
}

/// The gateways' `nats_url`: every managed server by its stable name, so
/// a gateway reaches the cluster while any majority of it is up.
pub fn gateway_nats_url(namespace: &str, wsc_name: &str, managed: &ManagedNatsSpec) -> String {
    (0..managed.replicas.max(1))
        .map(|ordinal| {
            format!(
                "nats://{}:{CLIENT_PORT}",
                pod_host(namespace, wsc_name, ordinal)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The parameters of the servers in the StatefulSet: one file for every
/// pod, the server name from the pod name.
pub fn kubernetes_server_conf(wsc_name: &str) -> ServerConf {
    ServerConf {
        server_name: ConfValue::Env(POD_NAME_ENV.to_owned()),
        host: "0.0.0.0".to_owned(),
        client_port: CLIENT_PORT,
        cluster_port: CLUSTER_PORT,
        monitor_port: MONITOR_PORT,
        cluster_name: nats_name(wsc_name),
        route_include: format!("../{}/{ROUTES_CONF_KEY}", parent_less(ROUTES_DIR)),
        store_dir: STORE_DIR.to_owned(),
        pid_file: format!("{PID_DIR}/nats.pid"),
        lame_duck_duration_seconds: LAME_DUCK_SECONDS,
    }
}

/// `/etc/x` without its parent: `x` (the include is relative to the
/// config's directory, a sibling of the routes' directory).
fn parent_less(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, last)| last)
}

/// The cluster port of every server of the StatefulSet, by stable name.
pub fn kubernetes_routes(namespace: &str, wsc_name: &str, replicas: i32) -> Vec<String> {
    (0..replicas.max(1))
        .map(|ordinal| format!("{}:{CLUSTER_PORT}", pod_host(namespace, wsc_name, ordinal)))
        .collect()
}

/// Every child of the managed NATS of `wsc`; `None` without
/// `spec.nats.managed`.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn managed_nats(wsc: &WsCluster, credentials: &NatsCredentials) -> Result<Option<ManagedNats>> {
    let Some(managed) = managed_spec(wsc) else {
        return Ok(None);
    };
    let (namespace, name) = namespace_and_name(wsc)?;
    let conf = nats_server_conf(&kubernetes_server_conf(&name), credentials);
    let routes = route_conf(
        &kubernetes_routes(&namespace, &name, managed.replicas),
        credentials,
    );
    let config_map = ConfigMap {
        metadata: nats_meta(wsc, nats_config_map_name(&name))?,
        data: Some(BTreeMap::from([(NATS_CONFIG_KEY.to_owned(), conf)])),
        ..ConfigMap::default()
    };
    let secret = secret(wsc, credentials, &routes)?;
    Ok(Some(ManagedNats {
        statefulset: statefulset(wsc, managed, &config_map, &secret)?,
        secret,
        config_map,
        headless_service: headless_service(wsc)?,
        service: client_service(wsc)?,
        pod_disruption_budget: pod_disruption_budget(wsc)?,
    }))
}

/// The credentials Secret: the credentials and the routes' part of the
/// config (`routes`, see [`route_conf`]).
fn secret(wsc: &WsCluster, credentials: &NatsCredentials, routes: &str) -> Result<Secret> {
    let (_, name) = namespace_and_name(wsc)?;
    let mut data = credentials.to_secret_data();
    data.insert(ROUTES_CONF_KEY.to_owned(), routes.to_owned());
    Ok(Secret {
        metadata: nats_meta(wsc, nats_secret_name(&name))?,
        type_: Some("Opaque".to_owned()),
        data: Some(
            data.into_iter()
                .map(|(key, value)| (key, ByteString(value.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    })
}

fn port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The headless Service: stable pod DNS names for the routes and the
/// gateways, published before the pods are ready (a server needs its
/// routes to become ready).
fn headless_service(wsc: &WsCluster) -> Result<Service> {
    let (_, name) = namespace_and_name(wsc)?;
    Ok(Service {
        metadata: nats_meta(wsc, headless_service_name(&name))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(nats_selector_labels(&name)),
            ports: Some(vec![
                port("client", CLIENT_PORT),
                port("cluster", CLUSTER_PORT),
                port("monitor", MONITOR_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The client Service (ready servers only).
fn client_service(wsc: &WsCluster) -> Result<Service> {
    let (_, name) = namespace_and_name(wsc)?;
    Ok(Service {
        metadata: nats_meta(wsc, nats_name(&name))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(nats_selector_labels(&name)),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// `maxUnavailable: 1`: a node drain stops one server at a time, so
/// JetStream keeps a majority.
fn pod_disruption_budget(wsc: &WsCluster) -> Result<PodDisruptionBudget> {
    let (_, name) = namespace_and_name(wsc)?;
    Ok(PodDisruptionBudget {
        metadata: nats_meta(wsc, nats_name(&name))?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(nats_selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests;
