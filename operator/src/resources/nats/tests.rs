//! Tests of the managed NATS builders.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::fixtures::{self, WsClusterExt};
use crate::resources::{Settings, children, gateway_config, selector_labels};

fn credentials() -> NatsCredentials {
    NatsCredentials::generate().unwrap()
}

fn build(servers: i32, credentials: &NatsCredentials) -> ManagedNats {
    let wsc = fixtures::wsc("chat").with_managed_nats(servers);
    managed_nats(&wsc, credentials).unwrap().unwrap()
}

fn pod(nats: &ManagedNats) -> &PodSpec {
    nats.statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn container(nats: &ManagedNats) -> &Container {
    &pod(nats).containers[0]
}

fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// Without `nats.managed` there is no NATS child; with it every child is
/// owned by the WsCluster and selects the NATS pods only, never the
/// gateways (whose Service and PDB must not select NATS pods either).
#[test]
fn managed_nats_children_are_owned_and_select_only_nats_pods() {
    assert!(
        managed_nats(&fixtures::wsc("chat"), &credentials())
            .unwrap()
            .is_none()
    );
    let nats = build(3, &credentials());
    let selector = nats_selector_labels("chat");
    assert_ne!(selector, selector_labels("chat"));
    let metas = [
        &nats.secret.metadata,
        &nats.config_map.metadata,
        &nats.headless_service.metadata,
        &nats.service.metadata,
        &nats.statefulset.metadata,
        &nats.pod_disruption_budget.metadata,
    ];
    for meta in metas {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, fixtures::UID);
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "wsgate-operator"
        );
        assert_eq!(
            meta.labels.as_ref().unwrap()["app.kubernetes.io/name"],
            "nats"
        );
    }
    let statefulset = nats.statefulset.spec.as_ref().unwrap();
    assert_eq!(statefulset.selector.match_labels.as_ref(), Some(&selector));
    let template_labels = statefulset
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref();
    assert!(
        selector
            .iter()
            .all(|(key, value)| template_labels.unwrap().get(key) == Some(value))
    );
    for service in [&nats.headless_service, &nats.service] {
        assert_eq!(
            service.spec.as_ref().unwrap().selector.as_ref(),
            Some(&selector)
        );
    }
    let headless = nats.headless_service.spec.as_ref().unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    assert_eq!(
        statefulset.service_name.as_deref(),
        Some("chat-nats-headless")
    );
    let pdb = nats.pod_disruption_budget.spec.as_ref().unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        pdb.selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&selector)
    );
}

/// The StatefulSet runs the pinned official image, starts every server at
/// once, probes as the official NATS chart does, enters lame duck before
/// stopping within its grace period, and meets PodSecurity "restricted".
#[test]
fn statefulset_runs_nats_as_production_needs() {
    let nats = build(3, &credentials());
    let spec = nats.statefulset.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let container = container(&nats);
    assert_eq!(
        container.image.as_deref(),
        Some(wsgate_crds::DEFAULT_NATS_IMAGE)
    );
    let path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap()
    };
    assert_eq!(path(&container.startup_probe), "/healthz");
    assert_eq!(
        path(&container.readiness_probe),
        "/healthz?js-server-only=true"
    );
    assert_eq!(
        path(&container.liveness_probe),
        "/healthz?js-enabled-only=true"
    );
    let pre_stop = container
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap();
    assert_eq!(
        pre_stop.exec.as_ref().unwrap().command.as_ref().unwrap(),
        &["nats-server", "-sl=ldm=/var/run/nats/nats.pid"]
    );
    let pod = pod(&nats);
    assert!(
        pod.termination_grace_period_seconds.unwrap() > i64::try_from(LAME_DUCK_SECONDS).unwrap(),
        "lame duck must end before the kubelet kills the server"
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let env: Vec<_> = container.env.iter().flatten().collect();
    assert!(
        env.iter().all(|var| var.value.is_none()),
        "no literal values (and no secret) in the pod spec"
    );
}

/// The volume claim template takes the size and class of the spec, and
/// `retainOnDelete` maps to the claims' retention policy.
#[test]
fn volumes_follow_the_storage_spec() {
    let mut wsc = fixtures::wsc("chat").with_managed_nats(3);
    let managed = wsc.spec.nats.as_mut().unwrap().managed.as_mut().unwrap();
    managed.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into());
    managed.storage.storage_class_name = Some("fast".into());
    let nats = managed_nats(&wsc, &credentials()).unwrap().unwrap();
    let spec = nats.statefulset.spec.as_ref().unwrap();
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "5Gi"
    );
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));

    wsc.spec
        .nats
        .as_mut()
        .unwrap()
        .managed
        .as_mut()
        .unwrap()
        .storage
        .retain_on_delete = false;
    let nats = managed_nats(&wsc, &credentials()).unwrap().unwrap();
    let retention = nats
        .statefulset
        .spec
        .unwrap()
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
}

/// `nats-server.conf` names every server by its stable DNS name, enables
/// JetStream on the volume, trusts only the operator's JWT (no anonymous
/// users), and holds no secret: neither the route password nor the
/// gateways' NKey seed.
#[test]
fn nats_config_requires_credentials_and_holds_no_secret() {
    let credentials = credentials();
    let nats = build(3, &credentials);
    let conf = &nats.config_map.data.as_ref().unwrap()[NATS_CONFIG_KEY];
    assert!(conf.contains("server_name: $POD_NAME"));
    assert!(conf.contains("store_dir: \"/data/jetstream\""));
    assert!(conf.contains(&format!("operator: \"{}\"", credentials.operator_jwt)));
    assert!(conf.contains("resolver: MEMORY"));
    assert!(conf.contains("lame_duck_duration: \"30s\""));
    assert!(conf.contains("pid_file: \"/var/run/nats/nats.pid\""));
    assert!(conf.contains("include \"../nats-routes/routes.conf\""));
    assert!(!conf.contains("no_auth_user"));
    assert!(!conf.contains(&credentials.route_password));
    let seed = credentials
        .user_creds
        .lines()
        .find(|line| line.starts_with("SU"))
        .unwrap();
    assert!(!conf.contains(seed));

    let routes = text(&nats.secret, ROUTES_CONF_KEY);
    for ordinal in 0..3 {
        let url = format!(
            "nats://route:{}@chat-nats-{ordinal}.chat-nats-headless.prod.svc:6222",
            credentials.route_password
        );
        assert!(routes.contains(&url), "{routes}");
    }
    assert_eq!(text(&nats.secret, CREDS_KEY), credentials.user_creds);
}

/// The parameters of a server are parameters: two servers rendered with
/// different names, ports and directories differ exactly there.
#[test]
fn server_parameters_reach_the_file() {
    let credentials = credentials();
    let server = |name: &str, base: u16| ServerConf {
        server_name: ConfValue::Literal(name.into()),
        host: "127.0.0.1".into(),
        client_port: base,
        cluster_port: base + 1,
        monitor_port: base + 2,
        cluster_name: "test".into(),
        route_include: "routes.conf".into(),
        store_dir: format!("/tmp/{name}"),
        pid_file: format!("/tmp/{name}.pid"),
        lame_duck_duration_seconds: 45,
    };
    let one = nats_server_conf(&server("n1", 4000), &credentials);
    assert!(one.contains("server_name: \"n1\""));
    assert!(one.contains("listen: \"127.0.0.1:4000\""));
    assert!(one.contains("listen: \"127.0.0.1:4001\""));
    assert!(one.contains("http: \"127.0.0.1:4002\""));
    assert!(one.contains("store_dir: \"/tmp/n1\""));
    assert!(one.contains("lame_duck_grace_period: \"15s\""));
    let two = nats_server_conf(&server("n2", 5000), &credentials);
    assert_ne!(one, two);
}

/// A change of the NATS config (here new credentials, so new JWTs and a new
/// route password) changes the pod template's checksum: the servers roll.
#[test]
fn nats_config_changes_roll_the_servers() {
    let checksum = |nats: &ManagedNats| {
        nats.statefulset
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[NATS_CONFIG_CHECKSUM_ANNOTATION]
            .clone()
    };
    let kept = credentials();
    assert_eq!(checksum(&build(3, &kept)), checksum(&build(3, &kept)));
    assert_ne!(
        checksum(&build(3, &kept)),
        checksum(&build(3, &credentials()))
    );
}

/// The gateways list every managed server, read the `.creds` file from the
/// operator's Secret, and default history to three replicas.
#[test]
fn gateways_use_every_managed_server_with_its_credentials() {
    let wsc = fixtures::wsc("chat").with_managed_nats(3).replicas(3);
    let config = gateway_config(&wsc).unwrap();
    let urls = (0..3)
        .map(|i| format!("nats://chat-nats-{i}.chat-nats-headless.prod.svc:4222"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        config.contains(&format!("nats_url = \"{urls}\"")),
        "{config}"
    );
    assert!(config.contains("credentials_file = \"/etc/wsgate/secrets/nats/credentials.creds\""));
    assert!(config.contains("replicas = 3"), "{config}");
    let parsed = wsgate_config::Config::from_toml(&config, std::path::Path::new("wsgate.toml"));
    assert!(parsed.is_ok(), "{parsed:?}");

    let credentials = credentials();
    let all = children(&wsc, &Settings::default(), "key\n", Some(&credentials)).unwrap();
    let pod = all.deployment.spec.unwrap().template.spec.unwrap();
    let projections = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|volume| volume.name == "secrets")
        .unwrap()
        .projected
        .unwrap()
        .sources
        .unwrap();
    let creds = projections
        .iter()
        .filter_map(|projection| projection.secret.as_ref())
        .find(|secret| secret.name == "chat-nats-credentials")
        .unwrap();
    let item = &creds.items.as_ref().unwrap()[0];
    assert_eq!(
        (item.key.as_str(), item.path.as_str()),
        (CREDS_KEY, "nats/credentials.creds")
    );
}

/// A managed NATS cannot be built without its credentials (the controller
/// always passes them).
#[test]
fn managed_nats_needs_its_credentials() {
    let wsc = fixtures::wsc("chat").with_managed_nats(3);
    let result = children(&wsc, &Settings::default(), "key\n", None);
    assert!(matches!(result, Err(crate::Error::MissingNatsCredentials)));
}

/// Credentials survive the round trip through the Secret, so a reconcile
/// keeps them; a Secret missing a part yields none (new ones are made); the
/// debug output shows no secret.
#[test]
fn credentials_round_trip_through_the_secret() {
    let credentials = credentials();
    let data: std::collections::BTreeMap<String, Vec<u8>> = credentials
        .to_secret_data()
        .into_iter()
        .map(|(key, value)| (key, value.into_bytes()))
        .collect();
    assert_eq!(
        NatsCredentials::from_secret_data(&data),
        Some(credentials.clone())
    );
    let mut partial = data.clone();
    partial.remove(ROUTE_PASSWORD_KEY);
    assert_eq!(NatsCredentials::from_secret_data(&partial), None);
    let debug = format!("{credentials:?}");
    assert!(!debug.contains(&credentials.route_password));
    // The user's seed (the line of the .creds file that starts with `SU`) never
    // shows; public keys may contain "SU" anywhere by chance, so look for the seed.
    let seed = credentials
        .user_creds
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("SU"))
        .expect("the creds file holds a user seed");
    assert!(!debug.contains(seed), "{debug}");
    assert!(credentials.account.starts_with('A'));
    assert!(
        credentials
            .user_creds
            .contains("-----BEGIN NATS USER JWT-----")
    );
    let password = generate_password();
    assert_eq!(password.len(), 48);
    assert!(password.chars().all(|c| c.is_ascii_alphabetic()));
    assert_ne!(password, generate_password());
}
