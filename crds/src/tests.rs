//! Tests of the generated CRD.

use super::*;

/// The committed `crds/wscluster.yaml` is what the types generate; run
/// `cargo run -p wsgate-operator -- crd > crds/wscluster.yaml` after
/// changing them.
#[test]
fn committed_crd_matches_the_types() {
    let committed = include_str!("../wscluster.yaml");
    let generated = crd_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/wscluster.yaml is stale: run `cargo run -p wsgate-operator -- crd > crds/wscluster.yaml` \
         and copy it to charts/wsgate/crds/"
    );
}

/// The chart ships the same CRD file.
#[test]
fn chart_ships_the_same_crd() {
    let committed = include_str!("../wscluster.yaml");
    let chart = include_str!("../../charts/wsgate/crds/wscluster.yaml");
    assert!(
        committed == chart,
        "charts/wsgate/crds/wscluster.yaml differs from crds/wscluster.yaml"
    );
}

/// The CRD's openAPIV3Schema as JSON.
fn schema() -> serde_json::Value {
    let crd = crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// Runs the CRD's CEL rules on `manifest` (schema defaults applied first, as
/// the API server does) and returns the failure messages.
fn cel_failures(manifest: &serde_json::Value) -> Vec<String> {
    cel_update_failures(manifest, None)
}

/// As [`cel_failures`] for an update from `old` (transition rules, those
/// naming `oldSelf`, run only then).
fn cel_update_failures(
    manifest: &serde_json::Value,
    old: Option<&serde_json::Value>,
) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&schema(), manifest, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

fn yaml(text: &str) -> serde_json::Value {
    yaml_serde::from_str(text).unwrap()
}

fn minimal() -> serde_json::Value {
    yaml(include_str!("../../examples/wscluster.yaml"))
}

/// Every example passes every CEL rule.
#[test]
fn examples_pass_the_cel_rules() {
    assert_eq!(cel_failures(&minimal()), Vec::<String>::new());
    let full = yaml(include_str!("../../examples/wscluster-full.yaml"));
    assert_eq!(cel_failures(&full), Vec::<String>::new());
    let managed = yaml(include_str!("../../examples/wscluster-managed-nats.yaml"));
    assert_eq!(cel_failures(&managed), Vec::<String>::new());
    assert_eq!(
        cel_update_failures(&managed, Some(&managed)),
        Vec::<String>::new(),
        "an unchanged managed NATS passes the transition rules"
    );
}

/// `minimal()` with `spec.<key>` set to each value of `spec`.
fn with_spec(spec: serde_json::Value) -> serde_json::Value {
    let mut manifest = minimal();
    for (key, value) in spec.as_object().unwrap() {
        manifest["spec"][key] = value.clone();
    }
    manifest
}

/// The managed NATS rules refuse, with a message pointing at the fix:
/// both `url` and `managed` (or neither), an even or too large server
/// count, user credentials or TLS on a managed NATS, and history replicas
/// the servers cannot place.
#[test]
fn cel_rules_refuse_inconsistent_managed_nats() {
    let cases = [
        (
            serde_json::json!({"nats": {"url": "nats://n:4222", "managed": {}}}),
            "set exactly one of nats.url",
        ),
        (
            serde_json::json!({"nats": {"pingIntervalMs": 5000}}),
            "set exactly one of nats.url",
        ),
        (
            serde_json::json!({"nats": {"managed": {"replicas": 2}}}),
            "nats.managed.replicas must be 1, 3 or 5",
        ),
        (
            serde_json::json!({"nats": {"managed": {"replicas": 7}}}),
            "nats.managed.replicas must be 1, 3 or 5",
        ),
        (
            serde_json::json!({"nats": {"managed": {}, "credentialsSecret": {"name": "c", "key": "k"}}}),
            "apply to nats.url only",
        ),
        (
            serde_json::json!({"nats": {"managed": {"replicas": 1}}, "history": {"replicas": 3}}),
            "history.replicas must not exceed nats.managed.replicas",
        ),
    ];
    for (spec, expected) in cases {
        let failures = cel_failures(&with_spec(spec.clone()));
        assert!(
            failures.iter().any(|m| m.contains(expected)),
            "{spec}: expected {expected:?}, got {failures:?}"
        );
    }
    let fits = with_spec(
        serde_json::json!({"nats": {"managed": {"replicas": 5}}, "history": {"replicas": 5}}),
    );
    assert_eq!(cel_failures(&fits), Vec::<String>::new());
}

/// What a StatefulSet cannot change in place is immutable, with a message
/// naming the documented procedure: the server count, the volume size and
/// class, and whether NATS is managed at all. `retainOnDelete` (the PVC
/// retention policy) may change.
#[test]
fn cel_transition_rules_keep_the_managed_nats_shape() {
    let old = with_spec(
        serde_json::json!({"nats": {"managed": {"replicas": 3, "storage": {"size": "1Gi"}}}}),
    );
    let cases = [
        (
            serde_json::json!({"nats": {"managed": {"replicas": 5, "storage": {"size": "1Gi"}}}}),
            "nats.managed.replicas is immutable",
        ),
        (
            serde_json::json!({"nats": {"managed": {"replicas": 3, "storage": {"size": "2Gi"}}}}),
            "storage.size and storageClassName are immutable",
        ),
        (
            serde_json::json!({"nats": {"managed": {"replicas": 3, "storage": {"size": "1Gi", "storageClassName": "fast"}}}}),
            "storage.size and storageClassName are immutable",
        ),
        (
            serde_json::json!({"nats": {"url": "nats://n:4222"}}),
            "nats.managed cannot be added to or removed from",
        ),
    ];
    for (spec, expected) in cases {
        let failures = cel_update_failures(&with_spec(spec.clone()), Some(&old));
        assert!(
            failures
                .iter()
                .any(|m| m.contains(expected) && m.contains("docs/operator.md")),
            "{spec}: expected {expected:?}, got {failures:?}"
        );
    }
    let retention = with_spec(
        serde_json::json!({"nats": {"managed": {"replicas": 3, "storage": {"size": "1Gi", "retainOnDelete": false}}}}),
    );
    assert_eq!(
        cel_update_failures(&retention, Some(&old)),
        Vec::<String>::new()
    );
    let added = with_spec(serde_json::json!({"nats": {"managed": {}}}));
    let failures = cel_update_failures(&added, Some(&minimal()));
    assert!(
        failures.iter().any(|m| m.contains("cannot be added")),
        "{failures:?}"
    );
}

/// History replicas follow the managed NATS when not set: min(3, servers);
/// 1 without managed NATS; an explicit value wins.
#[test]
fn history_replicas_default_to_the_managed_servers_up_to_three() {
    let spec = |value: serde_json::Value| -> WsClusterSpec {
        serde_json::from_value(with_spec(value)["spec"].clone()).unwrap()
    };
    let managed = |servers: i32| serde_json::json!({"nats": {"managed": {"replicas": servers}}});
    assert_eq!(spec(managed(1)).history_replicas(), 1);
    assert_eq!(spec(managed(3)).history_replicas(), 3);
    assert_eq!(spec(managed(5)).history_replicas(), 3);
    assert_eq!(spec(serde_json::json!({})).history_replicas(), 1);
    let explicit =
        serde_json::json!({"nats": {"managed": {"replicas": 5}}, "history": {"replicas": 5}});
    assert_eq!(spec(explicit).history_replicas(), 5);
    let defaults = spec(serde_json::json!({"nats": {"managed": {}}}));
    let managed = defaults.nats.unwrap().managed.unwrap();
    assert_eq!(managed.replicas, 3);
    assert!(managed.storage.retain_on_delete);
    assert_eq!(managed.storage.size.0, "10Gi");
    assert_eq!(
        managed.image, None,
        "the pinned default is resolved by the operator"
    );
}

/// Each cross-field rule refuses its case with a message a person
/// understands.
#[test]
fn cel_rules_refuse_inconsistent_specs_with_clear_messages() {
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({"nats": {"url": "nats://n:4222"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetConnectionsPerPod": 100}}),
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            serde_json::json!({"nats": {"url": "nats://n:4222"}, "autoscaling": {"maxReplicas": 4}}),
            "autoscaling needs exactly one target",
        ),
        (
            serde_json::json!({"nats": {"url": "nats://n:4222"}, "autoscaling": {"maxReplicas": 4, "targetCpuUtilization": 70, "targetConnectionsPerPod": 100}}),
            "autoscaling needs exactly one target",
        ),
        (
            serde_json::json!({"ingress": {"tlsSecretName": "tls"}}),
            "ingress.host is required when ingress.tlsSecretName is set",
        ),
        (
            serde_json::json!({"ingress": {"host": "a.example.com"}, "httpRoute": {"parentRefs": [{"name": "gw"}]}}),
            "set either ingress or httpRoute, not both",
        ),
        (
            serde_json::json!({"httpRoute": {"parentRefs": []}}),
            "httpRoute.parentRefs needs at least one Gateway",
        ),
        (
            serde_json::json!({"ingress": {"path": "ws"}}),
            "ingress.path must start with /",
        ),
        (
            serde_json::json!({"replicas": 3}),
            "without nats every pod is a separate single node",
        ),
        (
            serde_json::json!({"autoscaling": {"maxReplicas": 4, "targetConnectionsPerPod": 100}}),
            "autoscaling needs nats",
        ),
        (
            serde_json::json!({"auth": {}}),
            "auth: set jwtSecret, jwtPublicKey or jwks, or allowAnonymous: true",
        ),
        (
            serde_json::json!({"auth": {"allowAnonymous": false}}),
            "auth: set jwtSecret, jwtPublicKey or jwks, or allowAnonymous: true",
        ),
        (
            serde_json::json!({"limits": {"heartbeatMs": 30000, "heartbeatTimeoutMs": 20000}}),
            "limits.heartbeatTimeoutMs must be greater than limits.heartbeatMs",
        ),
        (
            serde_json::json!({"limits": {"heartbeatMs": 30000, "heartbeatTimeoutMs": 30000}}),
            "limits.heartbeatTimeoutMs must be greater than limits.heartbeatMs",
        ),
        (
            serde_json::json!({"nats": {"url": "http://nats:4222"}}),
            "nats.url must be comma-separated",
        ),
        (
            serde_json::json!({"nats": {"url": "nats://a:4222,,b"}}),
            "nats.url must be comma-separated",
        ),
        (
            serde_json::json!({"nats": {"url": "a:port"}}),
            "nats.url must be comma-separated",
        ),
    ];
    for (spec, expected) in cases {
        let mut manifest = minimal();
        for (key, value) in spec.as_object().unwrap() {
            manifest["spec"][key] = value.clone();
        }
        let failures = cel_failures(&manifest);
        assert!(
            failures.iter().any(|m| m.contains(expected)),
            "{spec}: expected {expected:?}, got {failures:?}"
        );
    }
}

/// The NATS URL rule accepts what the gateway's `nats_url` accepts: every
/// scheme it reads, bare `host[:port]`, and blanks around commas.
#[test]
fn cel_nats_url_rule_accepts_the_gateways_forms() {
    for url in [
        "nats://nats.nats:4222",
        "nats://a:4222, tls://b:4222,ws://c:80/path,wss://user:pass@d,e:4222,f",
        "nats",
    ] {
        let manifest = with_spec(serde_json::json!({"nats": {"url": url}}));
        assert_eq!(cel_failures(&manifest), Vec::<String>::new(), "{url}");
    }
}

/// Anonymous access alone is a working auth: the auth rule passes it.
#[test]
fn cel_auth_rule_accepts_anonymous_access() {
    let mut manifest = minimal();
    manifest["spec"]["auth"] = serde_json::json!({"allowAnonymous": true});
    assert_eq!(cel_failures(&manifest), Vec::<String>::new());
    let mut manifest = minimal();
    manifest["spec"]["auth"] = serde_json::json!({"jwks": {"name": "j", "key": "k"}});
    assert_eq!(cel_failures(&manifest), Vec::<String>::new());
}

/// Schema defaults are the docs/config.md defaults, and a spec deserializes to
/// the same values the API server would fill in.
#[test]
fn schema_defaults_match_the_gateway_defaults() {
    let wsc: WsCluster =
        yaml_serde::from_str(include_str!("../../examples/wscluster.yaml")).unwrap();
    assert_eq!(wsc.spec.limits.max_connections, 10_000);
    assert_eq!(wsc.spec.limits.max_message_bytes, 65_536);
    assert_eq!(wsc.spec.drain.seconds, 30);
    assert_eq!(wsc.spec.auth.leeway_seconds, 30);
    assert!(wsc.spec.auth.require_exp);
    assert_eq!(wsc.spec.replicas, None, "replicas has no schema default");
    assert_eq!(
        wsc.spec.image, None,
        "the image is resolved by the operator"
    );
    let schema = schema();
    let spec = &schema["properties"]["spec"]["properties"];
    assert!(spec["replicas"].get("default").is_none());
    assert!(spec["image"].get("default").is_none());
    assert_eq!(spec["limits"]["default"]["maxConnections"], 10_000);
}

/// The CRD has the status and scale subresources, the printer columns and
/// the short name the docs promise.
#[test]
fn crd_has_scale_status_columns_and_short_name() {
    let crd = crd();
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["wsc".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    let subresources = version.subresources.as_ref().unwrap();
    assert!(subresources.status.is_some());
    let scale = subresources.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Replicas",
            "Ready",
            "Status",
            "Connections",
            "Endpoint",
            "Broker",
            "Age"
        ]
    );
}

/// `status.conditions` is a list map keyed by `type`, so server-side apply
/// and strategic tools treat each condition as its own entry.
#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    let required = conditions["items"]["required"].as_array().unwrap();
    assert!(required.iter().any(|key| key == "type"), "{required:?}");
}

/// `kubectl get wsc` shows the Ready condition's reason as `Status`, beside
/// the ready replicas.
#[test]
fn status_column_shows_the_ready_reason() {
    let crd = crd();
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap();
    let status = columns.iter().find(|c| c.name == "Status").unwrap();
    assert_eq!(
        status.json_path,
        ".status.conditions[?(@.type==\"Ready\")].reason"
    );
    assert!(columns.iter().any(|c| c.name == "Ready"));
}

/// `targetConnectionsPerPod` may be at most 90% of `limits.maxConnections`,
/// with the default maximum (10,000) when `limits` leaves it out: at the
/// limit the refused clients would hide the demand from the load per pod.
#[test]
fn cel_rule_keeps_the_connections_target_below_the_limit() {
    let message =
        "autoscaling.targetConnectionsPerPod must be at most 90% of limits.maxConnections";
    let autoscaling = |target: u64| serde_json::json!({"minReplicas": 2, "maxReplicas": 10, "targetConnectionsPerPod": target});
    let nats = serde_json::json!({"url": "nats://n:4222"});
    let cases = [
        (
            serde_json::json!({"nats": nats, "autoscaling": autoscaling(9_000)}),
            true,
        ),
        (
            serde_json::json!({"nats": nats, "autoscaling": autoscaling(9_001)}),
            false,
        ),
        (
            serde_json::json!({"nats": nats, "autoscaling": autoscaling(9_500), "limits": {"maxConnections": 10_000}}),
            false,
        ),
        (
            serde_json::json!({"nats": nats, "autoscaling": autoscaling(13_500), "limits": {"maxConnections": 15_000}}),
            true,
        ),
        (
            serde_json::json!({"nats": nats, "autoscaling": autoscaling(9_500), "limits": {"maxConnectionsPerUser": 10}}),
            false,
        ),
        (
            serde_json::json!({"nats": nats, "autoscaling": {"maxReplicas": 4, "targetCpuUtilization": 70}, "limits": {"maxConnections": 10}}),
            true,
        ),
    ];
    for (spec, passes) in cases {
        let failures = cel_failures(&with_spec(spec.clone()));
        let refused = failures.iter().any(|m| m.contains(message));
        assert_eq!(!refused, passes, "{spec}: {failures:?}");
        if passes {
            assert_eq!(failures, Vec::<String>::new(), "{spec}");
        }
    }
}

/// `behavior.scaleDown` defaults to 10% per step, and its window, when
/// set, wins over the older `scaleDownStabilizationSeconds`.
#[test]
fn scale_down_behavior_defaults_and_supersedes_the_older_field() {
    let parse = |json: serde_json::Value| -> crate::AutoscalingSpec {
        serde_json::from_value(json).unwrap()
    };
    let plain = parse(serde_json::json!({"maxReplicas": 4, "targetConnectionsPerPod": 100}));
    assert_eq!(plain.scale_down_max_percent(), 10);
    assert_eq!(plain.scale_down_stabilization().as_secs(), 300);
    let older = parse(
        serde_json::json!({"maxReplicas": 4, "targetConnectionsPerPod": 100, "scaleDownStabilizationSeconds": 60, "behavior": {"scaleDown": {}}}),
    );
    assert_eq!(older.scale_down_max_percent(), 10);
    assert_eq!(older.scale_down_stabilization().as_secs(), 60);
    let newer = parse(
        serde_json::json!({"maxReplicas": 4, "targetConnectionsPerPod": 100, "scaleDownStabilizationSeconds": 60, "behavior": {"scaleDown": {"stabilizationSeconds": 600, "maxPercent": 25}}}),
    );
    assert_eq!(newer.scale_down_max_percent(), 25);
    assert_eq!(newer.scale_down_stabilization().as_secs(), 600);
}
