//! The gateways' Deployment.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SecretProjection,
    SleepAction, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use wsgate_crds::{PullPolicy, SecretKeyRef, WsCluster};

use super::config::{CONFIG_DIR, CONFIG_KEY, SECRETS_DIR, path};
use super::security;
use super::{
    ADMIN_PORT, ADMIN_PORT_NAME, API_KEYS_KEY, PUBLIC_PORT, PUBLIC_PORT_NAME, Settings,
    api_keys_secret_name, child_meta, config_map_name, labels, namespace_and_name, selector_labels,
    sha256_hex,
};
use crate::Result;

/// Pod-template annotation carrying the SHA-256 of the rendered config, so
/// that a config change rolls the pods.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "wsgate.io/config-checksum";

/// Seconds added to the termination grace period beyond preStop and drain,
/// for the process to exit after the drain deadline.
const GRACE_MARGIN_SECONDS: i64 = 5;

/// Replicas the Deployment runs: `spec.replicas`, else the autoscaling
/// minimum, else 1; with autoscaling, clamped to `[min, max]`.
pub fn desired_replicas(wsc: &WsCluster) -> i32 {
    let spec = &wsc.spec;
    match &spec.autoscaling {
        Some(autoscaling) => {
            let min = autoscaling.min_replicas.max(0);
            let max = autoscaling.max_replicas.max(min);
            spec.replicas.unwrap_or(min).clamp(min, max)
        }
        None => spec.replicas.unwrap_or(1).max(0),
    }
}

/// CPU request of a gateway container when the spec names no resources.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
/// Memory request of a gateway container when the spec names no resources.
pub const DEFAULT_MEMORY_REQUEST: &str = "128Mi";

/// The gateway container's resources: `spec.resources` when given (an empty
/// `resources: {}` is the explicit way to run BestEffort), else requests of
/// [`DEFAULT_CPU_REQUEST`] and [`DEFAULT_MEMORY_REQUEST`] and no limits, so
/// the pods are Burstable rather than BestEffort: evicted last under node
/// pressure, scheduled where they fit, and a CPU autoscaler has a request
/// to measure against.
pub fn gateway_resources(wsc: &WsCluster) -> ResourceRequirements {
    wsc.spec
        .resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), Quantity(DEFAULT_CPU_REQUEST.to_owned())),
                    (
                        "memory".to_owned(),
                        Quantity(DEFAULT_MEMORY_REQUEST.to_owned()),
                    ),
                ]
                .into(),
            ),
            ..ResourceRequirements::default()
        })
}

/// The Deployment running the gateways.
///
/// Production details: a config checksum on the pod template; readiness on
/// `/readyz` and liveness on `/healthz` (admin port); `WSGATE_NODE` from the
/// pod name; a preStop sleep (none with `drain.preStopSeconds: 0`) so
/// endpoints are removed before the drain starts, and a grace period covering preStop, drain and a margin; rolling
/// updates with `maxUnavailable: 0`; a restricted security context.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn deployment(
    wsc: &WsCluster,
    settings: &Settings,
    config_map: &ConfigMap,
) -> Result<Deployment> {
    let (_, name) = namespace_and_name(wsc)?;
    let spec = &wsc.spec;
    let config = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(CONFIG_KEY))
        .map(String::as_str)
        .unwrap_or_default();

    let mut pod_annotations = spec.pod_annotations.clone();
    pod_annotations.insert(
        CONFIG_CHECKSUM_ANNOTATION.to_owned(),
        sha256_hex(config.as_bytes()),
    );

    let pre_stop = i64::try_from(spec.drain.pre_stop_seconds).unwrap_or(i64::MAX);
    let drain = i64::try_from(spec.drain.seconds).unwrap_or(i64::MAX);
    let grace = pre_stop
        .saturating_add(drain)
        .saturating_add(GRACE_MARGIN_SECONDS);

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };

    let container = Container {
        name: "wsgate".to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| settings.default_image.clone()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|policy| {
            match policy {
                PullPolicy::Always => "Always",
                PullPolicy::IfNotPresent => "IfNotPresent",
                PullPolicy::Never => "Never",
            }
            .to_owned()
        }),
        args: Some(vec!["--config".to_owned(), super::CONFIG_FILE.to_owned()]),
        env: Some(vec![EnvVar {
            name: "WSGATE_NODE".to_owned(),
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
            ContainerPort {
                name: Some(PUBLIC_PORT_NAME.to_owned()),
                container_port: PUBLIC_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some(ADMIN_PORT_NAME.to_owned()),
                container_port: ADMIN_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        // API servers before 1.33 refuse a sleep of 0 seconds: no pause
        // means no hook at all.
        lifecycle: (pre_stop > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: pre_stop }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(gateway_resources(wsc)),
        security_context: Some(security::restricted_container()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_owned(),
                mount_path: CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "secrets".to_owned(),
                mount_path: SECRETS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };

    let selector = selector_labels(&name);
    let mut pod_labels = labels(&name);
    pod_labels.extend(selector.clone());

    let topology_spread_constraints: Vec<_> = spec
        .topology_spread_constraints
        .iter()
        .cloned()
        .map(|mut constraint| {
            constraint
                .label_selector
                .get_or_insert_with(|| LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..LabelSelector::default()
                });
            constraint
        })
        .collect();

    let pod_spec = PodSpec {
        service_account_name: Some(name.clone()),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(grace),
        containers: vec![container],
        security_context: Some(security::restricted_pod(65532)),
        volumes: Some(vec![
            Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map_name(&name),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "secrets".to_owned(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(secret_projections(wsc, &name)),
                    default_mode: Some(0o440),
                }),
                ..Volume::default()
            },
        ]),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        affinity: spec.affinity.clone(),
        topology_spread_constraints: (!topology_spread_constraints.is_empty())
            .then_some(topology_spread_constraints),
        ..PodSpec::default()
    };

    Ok(Deployment {
        metadata: child_meta(wsc, name.clone())?,
        spec: Some(DeploymentSpec {
            replicas: Some(desired_replicas(wsc)),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// One projected source per referenced Secret key, at the path the config
/// file names.
fn secret_projections(wsc: &WsCluster, name: &str) -> Vec<VolumeProjection> {
    let spec = &wsc.spec;
    let one = |secret: &str, items: Vec<(&str, &str)>| VolumeProjection {
        secret: Some(SecretProjection {
            name: secret.to_owned(),
            items: Some(
                items
                    .into_iter()
                    .map(|(key, path)| KeyToPath {
                        key: key.to_owned(),
                        path: path.to_owned(),
                        mode: None,
                    })
                    .collect(),
            ),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    };
    let key_ref = |reference: &SecretKeyRef, path: &'static str| {
        one(&reference.name, vec![(&reference.key, path)])
    };

    let mut sources = vec![one(
        &api_keys_secret_name(name),
        vec![(API_KEYS_KEY, path::API_KEYS)],
    )];
    let auth = &spec.auth;
    sources.extend(
        auth.jwt_secret
            .as_ref()
            .map(|r| key_ref(r, path::JWT_SECRET)),
    );
    sources.extend(
        auth.jwt_public_key
            .as_ref()
            .map(|r| key_ref(r, path::JWT_PUBLIC_KEY)),
    );
    sources.extend(auth.jwks.as_ref().map(|r| key_ref(r, path::JWKS)));
    sources.extend(
        auth.api_keys_secret
            .as_ref()
            .map(|r| key_ref(r, path::USER_API_KEYS)),
    );
    if let Some(pusher) = &spec.pusher {
        for app in &pusher.apps {
            let path = path::pusher_secret(&app.id);
            sources.push(one(&app.secret_name, vec![(&app.secret_key, &path)]));
        }
    }
    if let Some(nats) = &spec.nats {
        sources.extend(
            nats.credentials_secret
                .as_ref()
                .map(|r| key_ref(r, path::NATS_CREDENTIALS)),
        );
        if nats.managed.is_some() {
            sources.push(one(
                &super::nats::nats_secret_name(name),
                vec![(super::nats::CREDS_KEY, path::NATS_CREDENTIALS)],
            ));
        }
        if let Some(tls) = &nats.tls {
            sources.extend(tls.ca_secret.as_ref().map(|r| key_ref(r, path::NATS_CA)));
            sources.extend(tls.client_cert_secret_name.as_ref().map(|secret| {
                one(
                    secret,
                    vec![("tls.crt", path::NATS_CERT), ("tls.key", path::NATS_KEY)],
                )
            }));
        }
    }
    sources
}
