//! Tests of the builders: what production relies on, asserted directly.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wsgate_crds::{AutoscalingSpec, IngressSpec, NatsSpec, SecretKeyRef};

use super::*;
use crate::fixtures::{self, WsClusterExt};

fn build(wsc: &WsCluster) -> Children {
    children(wsc, &Settings::default(), "operator-key\n", None).unwrap()
}

fn pod_spec(children: &Children) -> &k8s_openapi::api::core::v1::PodSpec {
    children
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

/// Every child is controlled by its WsCluster (garbage collection) and
/// carries the recommended labels.
#[test]
fn every_child_is_owned_and_labelled() {
    let wsc = fixtures::wsc("chat").with_ingress().with_cpu_autoscaling();
    for value in build(&wsc).to_values().unwrap() {
        let kind = value["kind"].as_str().unwrap().to_owned();
        let owners = value["metadata"]["ownerReferences"]
            .as_array()
            .unwrap_or_else(|| panic!("{kind}: no owner"));
        assert_eq!(owners.len(), 1, "{kind}");
        assert_eq!(owners[0]["kind"], "WsCluster", "{kind}");
        assert_eq!(owners[0]["uid"], fixtures::UID, "{kind}");
        assert_eq!(owners[0]["controller"], true, "{kind}");
        let labels = &value["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "wsgate", "{kind}");
        assert_eq!(labels["app.kubernetes.io/instance"], "chat", "{kind}");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "wsgate-operator",
            "{kind}"
        );
        assert_eq!(value["metadata"]["namespace"], "prod", "{kind}");
    }
}

/// The pods run the default image of this operator version, read the
/// mounted config, take `node` from the pod name and probe the admin port.
#[test]
fn deployment_runs_the_gateway_as_production_needs() {
    let children = build(&fixtures::wsc("chat"));
    let pod = pod_spec(&children);
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(format!("ghcr.io/wsgate/wsgate:{}", crate::VERSION).as_str())
    );
    assert_eq!(
        container.args.as_ref().unwrap(),
        &["--config", "/etc/wsgate/config/wsgate.toml"]
    );
    let env = &container.env.as_ref().unwrap()[0];
    assert_eq!(env.name, "WSGATE_NODE");
    assert_eq!(
        env.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    let readiness = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert_eq!(readiness.port, IntOrString::String("admin".into()));
    let liveness = container
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    let ports: Vec<_> = container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        vec![("ws".to_owned(), 8080), ("admin".to_owned(), 9090)]
    );
    let strategy = children
        .deployment
        .spec
        .as_ref()
        .unwrap()
        .strategy
        .as_ref()
        .unwrap();
    assert_eq!(
        strategy.rolling_update.as_ref().unwrap().max_unavailable,
        Some(IntOrString::Int(0))
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.service_account_name.as_deref(), Some("chat"));
}

/// The grace period covers the preStop pause, the drain and a margin, and
/// the preStop pause needs no binary in the image.
#[test]
fn termination_grace_covers_pre_stop_and_drain() {
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.drain.seconds = 40;
    wsc.spec.drain.pre_stop_seconds = 7;
    let children = build(&wsc);
    let pod = pod_spec(&children);
    assert_eq!(pod.termination_grace_period_seconds, Some(7 + 40 + 5));
    let pre_stop = pod.containers[0]
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap();
    assert_eq!(pre_stop.sleep.as_ref().unwrap().seconds, 7);
}

/// `drain.preStopSeconds: 0` leaves out the preStop hook (API servers
/// before 1.33 refuse a sleep of 0) and the grace period is drain plus
/// margin.
#[test]
fn zero_pre_stop_seconds_leaves_out_the_hook() {
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.drain.pre_stop_seconds = 0;
    wsc.spec.drain.seconds = 30;
    let children = build(&wsc);
    let pod = pod_spec(&children);
    assert_eq!(pod.containers[0].lifecycle, None);
    assert_eq!(pod.termination_grace_period_seconds, Some(30 + 5));
}

/// Without `resources` the gateway container requests CPU and memory (the
/// pod is Burstable, not BestEffort); resources the spec names are used as
/// they are, `{}` included.
#[test]
fn gateway_pods_request_resources_by_default() {
    let default = build(&fixtures::wsc("chat"));
    let resources = pod_spec(&default).containers[0].resources.clone().unwrap();
    let requests = resources.requests.unwrap();
    assert_eq!(requests["cpu"], Quantity("100m".into()));
    assert_eq!(requests["memory"], Quantity("128Mi".into()));
    assert_eq!(resources.limits, None);

    let mut explicit = fixtures::wsc("chat");
    let named = ResourceRequirements {
        limits: Some([("memory".to_owned(), Quantity("1Gi".into()))].into()),
        ..Default::default()
    };
    explicit.spec.resources = Some(named.clone());
    assert_eq!(
        pod_spec(&build(&explicit)).containers[0].resources,
        Some(named)
    );
    explicit.spec.resources = Some(ResourceRequirements::default());
    assert_eq!(
        pod_spec(&build(&explicit)).containers[0].resources,
        Some(ResourceRequirements::default())
    );
}

/// A config change changes the pod template's checksum (so the pods roll);
/// a change outside the config does not.
#[test]
fn config_changes_roll_the_pods() {
    let checksum = |wsc: &WsCluster| {
        build(wsc)
            .deployment
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[CONFIG_CHECKSUM_ANNOTATION]
            .clone()
    };
    let base = fixtures::wsc("chat");
    let mut more = base.clone();
    more.spec.limits.max_connections = 20_000;
    let mut annotated = base.clone();
    annotated
        .spec
        .service
        .annotations
        .insert("a".into(), "b".into());
    assert_ne!(checksum(&base), checksum(&more));
    assert_eq!(checksum(&base), checksum(&annotated));
}

/// Secrets are mounted as files at the paths the config names; no secret
/// value reaches the ConfigMap.
#[test]
fn secrets_are_mounted_where_the_config_points() {
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.nats = Some(NatsSpec {
        url: Some("nats://nats:4222".into()),
        credentials_secret: Some(SecretKeyRef {
            name: "creds".into(),
            key: "c".into(),
        }),
        ping_interval_ms: 5000,
        tls: None,
        managed: None,
    });
    let children = build(&wsc);
    let config = &children.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    let pod = pod_spec(&children);
    let projected = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "secrets")
        .unwrap();
    let mounted: Vec<(String, String, String)> = projected
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap()
        .iter()
        .flat_map(|source| {
            let secret = source.secret.as_ref().unwrap();
            secret
                .items
                .as_ref()
                .unwrap()
                .iter()
                .map(|item| (secret.name.clone(), item.key.clone(), item.path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(mounted.contains(&(
        "chat-api-keys".into(),
        "api-keys".into(),
        "auth/api-keys".into()
    )));
    assert!(mounted.contains(&("chat-jwt".into(), "secret".into(), "auth/jwt-secret".into())));
    assert!(mounted.contains(&("creds".into(), "c".into(), "nats/credentials.creds".into())));
    assert!(config.contains("jwt_secret_file = \"/etc/wsgate/secrets/auth/jwt-secret\""));
    assert!(config.contains("api_keys_file = \"/etc/wsgate/secrets/auth/api-keys\""));
    assert!(config.contains("credentials_file = \"/etc/wsgate/secrets/nats/credentials.creds\""));
    assert!(!config.contains("operator-key"));
}

/// The config listens on the pod ports and names the cluster after the
/// WsCluster's namespace and name.
#[test]
fn config_listens_on_pod_ports_with_a_per_wscluster_cluster() {
    let config = gateway_config(&fixtures::wsc("chat")).unwrap();
    let parsed: toml::Table = toml::from_str(&config).unwrap();
    assert_eq!(parsed["version"].as_integer(), Some(1));
    assert_eq!(parsed["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(parsed["admin_listen"].as_str(), Some("0.0.0.0:9090"));
    assert_eq!(parsed["cluster"].as_str(), Some("prod_chat"));
    assert!(parsed.get("node").is_none(), "node comes from WSGATE_NODE");
}

/// The command budget of the spec (`limits.commandRate`, `commandBurst`)
/// reaches the gateway's `limits.command_rate` and `limits.command_burst`,
/// as the gateway reads them.
#[test]
fn config_carries_the_command_budget() {
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.limits.command_rate = 40;
    wsc.spec.limits.command_burst = 80;
    let config = gateway_config(&wsc).unwrap();
    let resolved = wsgate_config::Config::from_toml(&config, std::path::Path::new("wsgate.toml"))
        .unwrap_or_else(|error| panic!("{error}\n{config}"));
    assert_eq!(resolved.limits.command_rate, 40.0);
    assert_eq!(resolved.limits.command_burst, 80);
    let defaults = gateway_config(&fixtures::wsc("chat")).unwrap();
    let resolved = wsgate_config::Config::from_toml(&defaults, std::path::Path::new("wsgate.toml"))
        .unwrap_or_else(|error| panic!("{error}\n{defaults}"));
    assert_eq!(resolved.limits.command_rate, 100.0);
    assert_eq!(resolved.limits.command_burst, 200);
}

/// Cluster tokens are one subject token, at most 64 characters, distinct
/// for distinct WsClusters even when cut.
#[test]
fn cluster_tokens_are_single_bounded_distinct_subject_tokens() {
    let valid = |t: &str| {
        t.len() <= 64
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    assert_eq!(cluster_token("prod", "chat"), "prod_chat");
    let long_a = cluster_token(&"n".repeat(63), &"a".repeat(60));
    let long_b = cluster_token(&"n".repeat(63), &format!("{}b", "a".repeat(59)));
    let dotted = cluster_token("prod", "chat.v2");
    let dashed = cluster_token("prod", "chat-v2");
    for token in [&long_a, &long_b, &dotted, &dashed] {
        assert!(valid(token), "{token}");
    }
    assert_ne!(long_a, long_b);
    assert_ne!(dotted, dashed);
}

/// The ports (name, port) and type of a Service.
fn ports_and_type(service: &k8s_openapi::api::core::v1::Service) -> (Vec<(String, i32)>, String) {
    let spec = service.spec.as_ref().unwrap();
    let ports = spec
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect();
    (ports, spec.type_.clone().unwrap())
}

/// With `service.type: LoadBalancer`, the public Service `<name>` carries
/// only the WebSocket port (and the spec's annotations): the backend API and
/// `/metrics` are never on the load balancer.
#[test]
fn public_service_carries_only_the_websocket_port_with_the_spec_type() {
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.service.type_ = wsgate_crds::ServiceType::LoadBalancer;
    wsc.spec
        .service
        .annotations
        .insert("lb.example.com/internal".into(), "false".into());
    let children = build(&wsc);
    assert_eq!(children.service.metadata.name.as_deref(), Some("chat"));
    assert_eq!(
        ports_and_type(&children.service),
        (vec![("ws".to_owned(), 80)], "LoadBalancer".to_owned())
    );
    assert_eq!(
        children.service.metadata.annotations.as_ref().unwrap()["lb.example.com/internal"],
        "false"
    );
    assert_eq!(
        children.service.spec.unwrap().selector,
        Some(selector_labels("chat"))
    );
}

/// The admin Service `<name>-admin` carries only the admin port, is
/// ClusterIP whatever `service.type` says, selects the same pods and does
/// not take the public Service's (load balancer) annotations.
#[test]
fn admin_service_is_always_cluster_ip_with_only_the_admin_port() {
    for type_ in [
        wsgate_crds::ServiceType::ClusterIP,
        wsgate_crds::ServiceType::NodePort,
        wsgate_crds::ServiceType::LoadBalancer,
    ] {
        let mut wsc = fixtures::wsc("chat");
        wsc.spec.service.type_ = type_;
        wsc.spec.service.admin_port = 9191;
        wsc.spec.service.annotations.insert("a".into(), "b".into());
        let admin = build(&wsc).admin_service;
        assert_eq!(admin.metadata.name.as_deref(), Some("chat-admin"));
        assert_eq!(
            ports_and_type(&admin),
            (vec![("admin".to_owned(), 9191)], "ClusterIP".to_owned())
        );
        assert!(admin.metadata.annotations.is_none());
        assert_eq!(admin.spec.unwrap().selector, Some(selector_labels("chat")));
    }
}

/// The Ingress routes only the public port of the public Service.
#[test]
fn ingress_exposes_only_the_public_port() {
    let children = build(&fixtures::wsc("chat").with_ingress());
    let ingress = children.ingress.unwrap();
    let spec = ingress.spec.unwrap();
    let rules = spec.rules.unwrap();
    let backend = rules[0].http.as_ref().unwrap().paths[0]
        .backend
        .service
        .as_ref()
        .unwrap();
    assert_eq!(backend.name, "chat");
    assert_eq!(backend.port.as_ref().unwrap().name.as_deref(), Some("ws"));
    assert_eq!(rules[0].host.as_deref(), Some("chat.example.com"));
    assert_eq!(
        spec.tls.unwrap()[0].secret_name.as_deref(),
        Some("chat-tls")
    );
    assert!(children.http_route.is_none());
}

/// The HTTPRoute sends its path prefix to the Service's public port.
#[test]
fn http_route_targets_the_public_port() {
    let children = build(&fixtures::wsc("chat").with_http_route());
    let route = children.http_route.unwrap();
    assert_eq!(route.spec.parent_refs[0].name, "public");
    assert_eq!(route.spec.rules[0].backend_refs[0].name, "chat");
    assert_eq!(route.spec.rules[0].backend_refs[0].port, 80);
    assert_eq!(
        route.spec.rules[0].matches[0].path.as_ref().unwrap().type_,
        "PathPrefix"
    );
    assert!(children.ingress.is_none());
}

/// The PDB allows one pod down at a time.
#[test]
fn pdb_allows_one_unavailable_pod() {
    let pdb = build(&fixtures::wsc("chat")).pod_disruption_budget;
    assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
}

/// A CPU target makes an HPA scaling the WsCluster, not the Deployment; a
/// connections target makes none (the operator scales).
#[test]
fn hpa_scales_the_wscluster_for_a_cpu_target_only() {
    let children = build(&fixtures::wsc("chat").with_cpu_autoscaling());
    let hpa = children.horizontal_pod_autoscaler.unwrap().spec.unwrap();
    assert_eq!(hpa.scale_target_ref.kind, "WsCluster");
    assert_eq!(
        hpa.scale_target_ref.api_version.as_deref(),
        Some("wsgate.io/v1alpha1")
    );
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 10));
    let mut wsc = fixtures::wsc("chat").with_cpu_autoscaling();
    if let Some(a) = wsc.spec.autoscaling.as_mut() {
        a.target_cpu_utilization = None;
        a.target_connections_per_pod = Some(1000);
    }
    assert!(build(&wsc).horizontal_pod_autoscaler.is_none());
}

/// The HPA's scale-down follows `autoscaling.behavior.scaleDown` as the
/// operator's autoscaler does: its window, and at most the larger of one
/// pod and `maxPercent` per step.
#[test]
fn hpa_scale_down_is_stabilized_and_stepwise_as_behavior_says() {
    let mut wsc = fixtures::wsc("chat").with_cpu_autoscaling();
    if let Some(a) = wsc.spec.autoscaling.as_mut() {
        a.behavior = Some(wsgate_crds::AutoscalingBehavior {
            scale_down: wsgate_crds::ScaleDownBehavior {
                stabilization_seconds: Some(120),
                max_percent: 25,
            },
        });
    }
    let hpa = build(&wsc).horizontal_pod_autoscaler.unwrap().spec.unwrap();
    let down = hpa.behavior.unwrap().scale_down.unwrap();
    assert_eq!(down.stabilization_window_seconds, Some(120));
    assert_eq!(down.select_policy.as_deref(), Some("Max"));
    let policies: Vec<_> = down
        .policies
        .unwrap()
        .into_iter()
        .map(|p| (p.type_, p.value, p.period_seconds))
        .collect();
    assert_eq!(
        policies,
        vec![("Pods".to_owned(), 1, 60), ("Percent".to_owned(), 25, 60)]
    );
    // Without behavior: the defaults (300 s, 10%).
    let hpa = build(&fixtures::wsc("chat").with_cpu_autoscaling())
        .horizontal_pod_autoscaler
        .unwrap()
        .spec
        .unwrap();
    let down = hpa.behavior.unwrap().scale_down.unwrap();
    assert_eq!(down.stabilization_window_seconds, Some(300));
    assert_eq!(down.policies.unwrap()[1].value, 10);
}

/// Replicas: spec, else the autoscaling minimum, else 1; clamped with
/// autoscaling.
#[test]
fn desired_replicas_follow_spec_and_bounds() {
    let mut wsc = fixtures::wsc("chat");
    assert_eq!(desired_replicas(&wsc), 1);
    wsc.spec.replicas = Some(3);
    assert_eq!(desired_replicas(&wsc), 3);
    wsc.spec.autoscaling = Some(AutoscalingSpec {
        min_replicas: 4,
        max_replicas: 6,
        target_cpu_utilization: None,
        target_connections_per_pod: Some(100),
        scale_down_stabilization_seconds: 300,
        behavior: None,
    });
    assert_eq!(desired_replicas(&wsc), 4);
    wsc.spec.replicas = None;
    assert_eq!(desired_replicas(&wsc), 4);
    wsc.spec.replicas = Some(9);
    assert_eq!(desired_replicas(&wsc), 6);
}

/// Topology spread constraints without a selector get the pods' own.
#[test]
fn topology_spread_defaults_to_the_pod_selector() {
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.topology_spread_constraints =
        vec![k8s_openapi::api::core::v1::TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            ..Default::default()
        }];
    wsc.spec.resources = Some(ResourceRequirements {
        requests: Some([("cpu".to_owned(), Quantity("100m".into()))].into()),
        ..Default::default()
    });
    let children = build(&wsc);
    let constraint = &pod_spec(&children)
        .topology_spread_constraints
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        constraint
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &selector_labels("chat")
    );
}

/// `render` of the full example yields every child kind the spec asks for,
/// and is deterministic.
#[test]
fn render_of_the_full_example_is_complete_and_stable() {
    let text = include_str!("../../../examples/wscluster-full.yaml");
    let first = crate::args::render(text, "default", &Settings::default()).unwrap();
    let second = crate::args::render(text, "default", &Settings::default()).unwrap();
    assert_eq!(first, second);
    for kind in [
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Ingress",
        "NetworkPolicy",
    ] {
        assert!(
            first.contains(&format!("\nkind: {kind}\n")),
            "{kind} missing"
        );
    }
    assert!(first.contains("image: ghcr.io/wsgate/wsgate:0.1.0"));
}

/// The minimal example renders, with the operator's default image.
#[test]
fn render_of_the_minimal_example_uses_the_default_image() {
    let text = include_str!("../../../examples/wscluster.yaml");
    let out = crate::args::render(text, "default", &Settings::default()).unwrap();
    assert!(out.contains(&format!("image: ghcr.io/wsgate/wsgate:{}", crate::VERSION)));
    assert!(
        out.contains("cluster = \\\"default_chat\\\"")
            || out.contains("cluster = \"default_chat\"")
    );
    let _ = IngressSpec {
        class_name: None,
        host: None,
        path: "/".into(),
        tls_secret_name: None,
        annotations: Default::default(),
    };
}

/// What the operator renders is accepted by the gateway's strict parser
/// (unknown keys are errors there), for the minimal and the full example.
#[test]
fn rendered_config_parses_with_the_gateway_strict_parser() {
    for text in [
        include_str!("../../../examples/wscluster.yaml"),
        include_str!("../../../examples/wscluster-full.yaml"),
    ] {
        let mut wsc: WsCluster = yaml_serde::from_str(text).unwrap();
        wsc.metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        let config = gateway_config(&wsc).unwrap();
        let path = std::path::Path::new("wsgate.toml");
        let parsed = wsgate_config::FileConfig::parse(&config, path).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let resolved = wsgate_config::Config::from_toml(&config, path)
            .unwrap_or_else(|error| panic!("{error}\n{config}"));
        assert_eq!(
            resolved.limits.max_connections as u64,
            wsc.spec
                .limits
                .max_connections
                .min(resolved.limits.max_connections as u64)
        );
    }
}

/// `networkPolicy.enabled` yields a NetworkPolicy on the gateway pods: the
/// public port from anywhere; the admin port from the operator's namespace,
/// labelled backends of the WsCluster's namespace and `adminFrom`. Absent or
/// disabled: none.
#[test]
fn network_policy_admits_the_admin_port_only_from_operator_backends_and_listed_peers() {
    use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    assert!(build(&fixtures::wsc("chat")).network_policy.is_none());
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.network_policy = Some(wsgate_crds::NetworkPolicySpec {
        enabled: false,
        admin_from: Vec::new(),
    });
    assert!(build(&wsc).network_policy.is_none());

    let prometheus = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(
                [(
                    "kubernetes.io/metadata.name".to_owned(),
                    "monitoring".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    wsc.spec.network_policy = Some(wsgate_crds::NetworkPolicySpec {
        enabled: true,
        admin_from: vec![prometheus.clone()],
    });
    let settings = Settings {
        operator_namespace: "ops".into(),
        ..Settings::default()
    };
    let policy = children(&wsc, &settings, "k\n", None)
        .unwrap()
        .network_policy
        .unwrap();
    assert_eq!(policy.metadata.name.as_deref(), Some("chat"));
    let spec = policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels,
        Some(selector_labels("chat"))
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    let rules = spec.ingress.unwrap();
    let port_of = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        rule.ports.as_ref().unwrap()[0].port.clone().unwrap()
    };
    assert_eq!(rules.len(), 2);
    assert_eq!(port_of(&rules[0]), IntOrString::String("ws".into()));
    assert_eq!(rules[0].from, None, "the public port is open to anyone");
    assert_eq!(port_of(&rules[1]), IntOrString::String("admin".into()));
    let from = rules[1].from.clone().unwrap();
    let labels = |selector: &Option<LabelSelector>| {
        selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default()
    };
    assert_eq!(from.len(), 3);
    assert_eq!(
        labels(&from[0].namespace_selector)["kubernetes.io/metadata.name"],
        "ops"
    );
    assert!(from[0].pod_selector.is_none());
    assert_eq!(labels(&from[1].pod_selector)[BACKEND_LABEL], "true");
    assert!(
        from[1].namespace_selector.is_none(),
        "backends only from the WsCluster's own namespace"
    );
    assert_eq!(from[2], prometheus);
}

/// `auth.apiKeysSecret` is mounted into the pod beside the operator's own
/// key file and named in `auth.api_keys_files`, so the operator never reads
/// it; the operator's Secret holds its own key only. The rendered config
/// passes the gateway's strict parser, which resolves both files.
#[test]
fn user_api_keys_are_mounted_as_a_second_key_file_never_copied() {
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.auth.api_keys_secret = Some(SecretKeyRef {
        name: "backend".into(),
        key: "keys".into(),
    });
    let children = children(&wsc, &Settings::default(), &api_keys_file("op"), None).unwrap();
    let own = &children.api_keys_secret.data.as_ref().unwrap()[API_KEYS_KEY];
    assert_eq!(own.0, b"op\n", "the operator's Secret holds its key only");

    let sources = pod_spec(&children)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "secrets")
        .and_then(|v| v.projected.as_ref())
        .and_then(|p| p.sources.clone())
        .unwrap();
    let backend = sources
        .iter()
        .filter_map(|source| source.secret.as_ref())
        .find(|secret| secret.name == "backend")
        .expect("the user's Secret is projected");
    let items = backend.items.as_ref().unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("keys", "auth/user-api-keys")
    );
    assert_eq!(backend.optional, Some(false));

    let text = &children.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    let config = wsgate_config::Config::from_toml(text, std::path::Path::new(CONFIG_FILE)).unwrap();
    assert_eq!(
        config.auth.api_keys_files,
        [std::path::PathBuf::from(
            "/etc/wsgate/secrets/auth/user-api-keys"
        )]
    );
    assert_eq!(
        config.auth.api_keys,
        Some(wsgate_config::Secret::File(
            "/etc/wsgate/secrets/auth/api-keys".into()
        ))
    );

    let without = build(&fixtures::wsc("chat"));
    let text = &without.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    assert!(!text.contains("api_keys_files"), "{text}");
}

/// Each Pusher app's Secret key is projected into the pods at the file the
/// rendered config names (`pusher/<id>` under the Secrets directory), so the
/// operator never reads the app secret; without `pusher` nothing is mounted.
#[test]
fn pusher_app_secrets_are_mounted_at_the_files_the_config_names() {
    let mut wsc = fixtures::wsc("chat");
    let projected = |children: &Children| {
        pod_spec(children)
            .volumes
            .as_ref()
            .and_then(|volumes| volumes.iter().find(|v| v.name == "secrets"))
            .and_then(|v| v.projected.as_ref())
            .and_then(|p| p.sources.clone())
            .unwrap_or_default()
    };
    let without = projected(&build(&wsc));
    wsc.spec.pusher = Some(wsgate_crds::PusherSpec {
        apps: ["1001", "1002"]
            .iter()
            .map(|id| wsgate_crds::PusherAppSpec {
                id: (*id).into(),
                key: format!("key-{id}"),
                secret_name: "pusher".into(),
                secret_key: format!("secret-{id}"),
                max_connections: None,
                enable_client_messages: true,
                max_client_events_per_second: 10,
                max_presence_members: 100,
                max_event_bytes: 10_240,
            })
            .collect(),
    });
    let children = build(&wsc);
    let with = projected(&children);
    assert_eq!(with.len(), without.len() + 2);
    let items: Vec<(String, String)> = with
        .iter()
        .filter_map(|source| source.secret.as_ref())
        .filter(|secret| secret.name == "pusher")
        .flat_map(|secret| secret.items.clone().unwrap_or_default())
        .map(|item| (item.key, item.path))
        .collect();
    assert_eq!(
        items,
        [
            ("secret-1001".to_owned(), "pusher/1001".to_owned()),
            ("secret-1002".to_owned(), "pusher/1002".to_owned())
        ]
    );
    let text = &children.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    let config = wsgate_config::Config::from_toml(text, std::path::Path::new(CONFIG_FILE)).unwrap();
    let files: Vec<wsgate_config::Secret> = config
        .pusher
        .map(|pusher| pusher.apps.into_iter().map(|app| app.secret).collect())
        .unwrap_or_default();
    assert_eq!(
        files,
        [
            wsgate_config::Secret::File("/etc/wsgate/secrets/pusher/1001".into()),
            wsgate_config::Secret::File("/etc/wsgate/secrets/pusher/1002".into())
        ]
    );
}
