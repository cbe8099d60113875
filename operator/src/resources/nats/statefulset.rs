//! The managed NATS StatefulSet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Probe, Secret, SecretVolumeSource, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use wsgate_crds::{DEFAULT_NATS_IMAGE, ManagedNatsSpec, WsCluster};

use super::super::security;
use super::super::{namespace_and_name, sha256_hex};
use super::{
    CLIENT_PORT, CLUSTER_PORT, CONFIG_DIR, MONITOR_PORT, NATS_CONFIG_KEY, PID_DIR, POD_NAME_ENV,
    ROUTES_CONF_KEY, ROUTES_DIR, STORE_DIR, TERMINATION_GRACE_SECONDS, headless_service_name,
    nats_config_map_name, nats_labels, nats_meta, nats_name, nats_secret_name,
    nats_selector_labels,
};
use crate::Result;

/// Pod-template annotation carrying the SHA-256 of `nats-server.conf` and
/// of the routes' part of it, so that a config change rolls the servers.
pub const NATS_CONFIG_CHECKSUM_ANNOTATION: &str = "wsgate.io/nats-config-checksum";

/// The StatefulSet running the servers: a volume per server from
/// `volumeClaimTemplates` (kept or deleted with the WsCluster as
/// `storage.retainOnDelete` says), all pods started in parallel (JetStream
/// needs a majority to become ready), the probes of the official NATS Helm
/// chart, lame-duck mode in preStop, and the PodSecurity "restricted"
/// profile.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn statefulset(
    wsc: &WsCluster,
    managed: &ManagedNatsSpec,
    config_map: &ConfigMap,
    secret: &Secret,
) -> Result<StatefulSet> {
    let (_, name) = namespace_and_name(wsc)?;
    let conf = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(NATS_CONFIG_KEY))
        .map(String::as_bytes)
        .unwrap_or_default();
    let routes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(ROUTES_CONF_KEY))
        .map(|value| value.0.as_slice())
        .unwrap_or_default();
    let checksum = sha256_hex(&[sha256_hex(conf), sha256_hex(routes)].concat().into_bytes());

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("monitor".to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(10),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let container_port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let mount = |volume: &str, path: &str, read_only: bool| VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let pid_file = format!("{PID_DIR}/nats.pid");

    let container = Container {
        name: "nats".to_owned(),
        image: Some(
            managed
                .image
                .clone()
                .unwrap_or_else(|| DEFAULT_NATS_IMAGE.to_owned()),
        ),
        args: Some(vec![
            "--config".to_owned(),
            format!("{CONFIG_DIR}/{NATS_CONFIG_KEY}"),
        ]),
        env: Some(vec![EnvVar {
            name: POD_NAME_ENV.to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("cluster", CLUSTER_PORT),
            container_port("monitor", MONITOR_PORT),
        ]),
        startup_probe: Some(probe("/healthz", 10, 90)),
        readiness_probe: Some(probe("/healthz?js-server-only=true", 10, 3)),
        liveness_probe: Some(probe("/healthz?js-enabled-only=true", 30, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "nats-server".to_owned(),
                        format!("-sl=ldm={pid_file}"),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: managed.resources.clone(),
        security_context: Some(security::restricted_container()),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("routes", ROUTES_DIR, true),
            mount("data", parent(STORE_DIR), false),
            mount("pid", PID_DIR, false),
        ]),
        ..Container::default()
    };

    let pod_spec = PodSpec {
        service_account_name: Some(name.clone()),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        containers: vec![container],
        security_context: Some(security::restricted_pod(1000)),
        volumes: Some(vec![
            Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: nats_config_map_name(&name),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "routes".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(nats_secret_name(&name)),
                    items: Some(vec![KeyToPath {
                        key: ROUTES_CONF_KEY.to_owned(),
                        path: ROUTES_CONF_KEY.to_owned(),
                        mode: None,
                    }]),
                    default_mode: Some(0o440),
                    optional: Some(false),
                }),
                ..Volume::default()
            },
            Volume {
                name: "pid".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };

    let storage = &managed.storage;
    let retention = if storage.retain_on_delete {
        "Retain"
    } else {
        "Delete"
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".to_owned()),
            labels: Some(nats_labels(&name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    let selector = nats_selector_labels(&name);
    Ok(StatefulSet {
        metadata: nats_meta(wsc, nats_name(&name))?,
        spec: Some(StatefulSetSpec {
            replicas: Some(managed.replicas),
            service_name: Some(headless_service_name(&name)),
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.to_owned()),
                    when_scaled: Some(retention.to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(nats_labels(&name)),
                    annotations: Some(BTreeMap::from([(
                        NATS_CONFIG_CHECKSUM_ANNOTATION.to_owned(),
                        checksum,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// The directory above `path` (the volume holds the store directory).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(parent, _)| parent)
}
