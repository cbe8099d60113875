//! Reconcile against a mock API server: each request is asserted.

use std::time::Duration;

use http::Method;
use wsgate_crds::condition::{BROKER_READY, DEGRADED, PROGRESSING, READY, reason};

use super::*;
use crate::fixtures::{self, WsClusterExt, assert_owned};
use crate::resources::{Settings, children};
use crate::runtime::apply_crd;

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

/// A new WsCluster: every child is applied server-side under the operator's
/// field manager with an owner reference, an Event is published, and the
/// status carries observedGeneration and the three conditions.
#[tokio::test]
async fn new_wscluster_applies_owned_children_and_writes_status() {
    let (ctx, mut server, _caches) = Context::test();
    let wsc = Arc::new(fixtures::wsc("chat").with_ingress());
    let reconcile = tokio::spawn(reconcile(wsc.clone(), ctx));

    let expected = [
        "/api/v1/namespaces/prod/serviceaccounts/chat?",
        "/api/v1/namespaces/prod/configmaps/chat-config?",
        "/api/v1/namespaces/prod/secrets/chat-api-keys?",
        "/apis/apps/v1/namespaces/prod/deployments/chat?",
        "/api/v1/namespaces/prod/services/chat?",
        "/api/v1/namespaces/prod/services/chat-admin?",
        "/apis/policy/v1/namespaces/prod/poddisruptionbudgets/chat?",
        "/apis/networking.k8s.io/v1/namespaces/prod/ingresses/chat?",
    ];
    for path in expected {
        let seen = server.next().await;
        assert_eq!(seen.method, Method::PATCH, "{path}");
        assert!(seen.uri.starts_with(path), "{} is not {path}", seen.uri);
        assert!(
            seen.uri.contains("fieldManager=wsgate-operator"),
            "{}",
            seen.uri
        );
        assert!(seen.uri.contains("force=true"), "{}", seen.uri);
        assert_owned(&seen.body);
        assert!(seen.body["metadata"]["annotations"][DESIRED_HASH_ANNOTATION].is_string());
    }

    let event = server.next().await;
    assert_eq!(event.method, Method::POST);
    assert!(
        event
            .uri
            .starts_with("/apis/events.k8s.io/v1/namespaces/prod/events")
    );
    assert_eq!(event.body["reason"], "Applied");

    let status = server.next().await;
    assert_eq!(status.method, Method::PATCH);
    assert!(
        status
            .uri
            .starts_with("/apis/wsgate.io/v1alpha1/namespaces/prod/wsclusters/chat/status?")
    );
    let status = &status.body["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(condition(status, READY)["status"], "False");
    assert_eq!(condition(status, PROGRESSING)["status"], "True");
    assert_eq!(condition(status, DEGRADED)["status"], "False");
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/instance=chat,app.kubernetes.io/name=wsgate"
    );
    assert_eq!(status["endpoint"], "wss://chat.example.com/ws");

    let action = reconcile.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
}

/// When the cache holds every child as desired and the status is current,
/// a reconcile makes no request at all (it would hang on the mock).
#[tokio::test]
async fn unchanged_wscluster_makes_zero_requests() {
    let (ctx, server, mut caches) = Context::test();
    let mut wsc = fixtures::wsc("chat")
        .with_ingress()
        .with_cpu_autoscaling()
        .replicas(2);
    let desired = children(&wsc, &Settings::default(), "cached-key\n", None).unwrap();
    caches.hold(&desired, 2);
    let deployment = ctx.stores.deployments.state()[0].clone();
    wsc.status = Some(status::status(
        &wsc,
        &status::Observed {
            deployment: Some(&deployment),
            desired_replicas: 2,
            endpoint: status::endpoint(&wsc, true),
            selector: resources::selector_string("chat"),
            ..Default::default()
        },
    ));

    let outcome = tokio::time::timeout(
        Duration::from_secs(2),
        reconcile(Arc::new(wsc), ctx.clone()),
    )
    .await;
    let action = outcome
        .expect("reconcile made a request though nothing changed")
        .unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(ctx.metrics.applies.get(), 0);
    assert_eq!(
        ctx.metrics.applies_skipped.get(),
        9,
        "all nine children matched the cache"
    );
    drop(server);
}

/// A spec change re-applies only what changed: the ConfigMap and the
/// Deployment, whose pod template gets a new config checksum (pods roll);
/// the status moves to the new generation.
#[tokio::test]
async fn changed_spec_reapplies_config_and_rolls_pods() {
    let (ctx, mut server, mut caches) = Context::test();
    let old = fixtures::wsc("chat");
    let old_children = children(&old, &Settings::default(), "cached-key\n", None).unwrap();
    caches.hold(&old_children, 1);
    let mut new = old.clone();
    new.metadata.generation = Some(2);
    new.spec.limits.max_connections = 20_000;
    let reconcile = tokio::spawn(reconcile(Arc::new(new), ctx));

    let config = server.next().await;
    assert!(
        config
            .uri
            .starts_with("/api/v1/namespaces/prod/configmaps/chat-config?"),
        "{}",
        config.uri
    );
    assert!(
        config.body["data"]["wsgate.toml"]
            .as_str()
            .unwrap()
            .contains("max_connections = 20000")
    );

    let deployment = server.next().await;
    assert!(
        deployment
            .uri
            .starts_with("/apis/apps/v1/namespaces/prod/deployments/chat?"),
        "{}",
        deployment.uri
    );
    let old_checksum = old_children
        .deployment
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()[resources::CONFIG_CHECKSUM_ANNOTATION]
        .clone();
    let new_checksum = &deployment.body["spec"]["template"]["metadata"]["annotations"]
        [resources::CONFIG_CHECKSUM_ANNOTATION];
    assert_ne!(new_checksum, &Value::String(old_checksum));

    let event = server.next().await;
    assert_eq!(event.method, Method::POST);
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .contains("ConfigMap/chat-config")
    );

    let status = server.next().await;
    assert!(status.uri.contains("/wsclusters/chat/status"));
    assert_eq!(status.body["status"]["observedGeneration"], 2);
    reconcile.await.unwrap().unwrap();
}

/// A spec the schema accepts but that cannot work (no key and no anonymous
/// access) is not applied: the status says Degraded with a clear message,
/// and a Warning Event is published.
#[tokio::test]
async fn invalid_spec_is_degraded_with_a_clear_message() {
    let (ctx, mut server, _caches) = Context::test();
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.auth.jwt_secret = None;
    let reconcile = tokio::spawn(reconcile(Arc::new(wsc), ctx));

    let status = server.next().await;
    assert!(
        status.uri.contains("/wsclusters/chat/status"),
        "{}",
        status.uri
    );
    let degraded = condition(&status.body["status"], DEGRADED);
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], reason::INVALID_SPEC);
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("set jwtSecret, jwtPublicKey or jwks, or allowAnonymous: true")
    );
    assert_eq!(condition(&status.body["status"], READY)["status"], "False");

    let event = server.next().await;
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "InvalidSpec");
    reconcile.await.unwrap().unwrap();
}

/// Removing the Ingress from the spec deletes the owned Ingress the cache
/// holds; nothing else is written but the Event.
#[tokio::test]
async fn removed_ingress_is_deleted() {
    let (ctx, mut server, mut caches) = Context::test();
    let with = fixtures::wsc("chat").with_ingress();
    caches.hold(
        &children(&with, &Settings::default(), "cached-key\n", None).unwrap(),
        1,
    );
    let mut without = fixtures::wsc("chat");
    without.status = None;
    // Status of the old spec, so only the endpoint changes.
    let reconcile = tokio::spawn(reconcile(Arc::new(without), ctx));

    let delete = server.next().await;
    assert_eq!(delete.method, Method::DELETE);
    assert!(
        delete
            .uri
            .starts_with("/apis/networking.k8s.io/v1/namespaces/prod/ingresses/chat"),
        "{}",
        delete.uri
    );
    let event = server.next().await;
    assert_eq!(event.method, Method::POST);
    let status = server.next().await;
    assert_eq!(
        status.body["status"]["endpoint"],
        "ws://chat.prod.svc:80/ws"
    );
    reconcile.await.unwrap().unwrap();
}

/// `networkPolicy.enabled` applies an owned NetworkPolicy after the other
/// children; turning it off deletes it again.
#[tokio::test]
async fn network_policy_is_applied_when_enabled_and_deleted_when_disabled() {
    let (ctx, mut server, mut caches) = Context::test();
    let plain = fixtures::wsc("chat");
    caches.hold(
        &children(&plain, &Settings::default(), "cached-key\n", None).unwrap(),
        1,
    );
    let mut enabled = plain.clone();
    enabled.metadata.generation = Some(2);
    enabled.spec.network_policy = Some(wsgate_crds::NetworkPolicySpec {
        enabled: true,
        admin_from: Vec::new(),
    });
    let reconcile_enabled = tokio::spawn(reconcile(Arc::new(enabled.clone()), ctx.clone()));
    let applied = server.next().await;
    assert_eq!(applied.method, Method::PATCH);
    assert!(
        applied
            .uri
            .starts_with("/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/chat?"),
        "{}",
        applied.uri
    );
    assert_owned(&applied.body);
    assert_eq!(applied.body["kind"], "NetworkPolicy");
    server.take(2).await; // Event, status
    reconcile_enabled.await.unwrap().unwrap();

    let with_policy = children(&enabled, &Settings::default(), "cached-key\n", None).unwrap();
    caches.hold(&with_policy, 1);
    let mut disabled = enabled;
    disabled.metadata.generation = Some(3);
    disabled.spec.network_policy = None;
    let reconcile_disabled = tokio::spawn(reconcile(Arc::new(disabled), ctx));
    let delete = server.next().await;
    assert_eq!(delete.method, Method::DELETE);
    assert!(
        delete
            .uri
            .starts_with("/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/chat"),
        "{}",
        delete.uri
    );
    server.take(2).await; // Event, status
    reconcile_disabled.await.unwrap().unwrap();
}

/// The user's API keys are never read: naming `auth.apiKeysSecret`
/// re-applies only the config (a second key file) and the Deployment (which
/// mounts that Secret); the operator's own Secret and key stay as they are.
#[tokio::test]
async fn user_api_keys_are_mounted_not_read() {
    let (ctx, mut server, mut caches) = Context::test();
    let mut wsc = fixtures::wsc("chat");
    caches.hold(
        &children(&wsc, &Settings::default(), "cached-key\n", None).unwrap(),
        1,
    );
    wsc.spec.auth.api_keys_secret = Some(wsgate_crds::SecretKeyRef {
        name: "backend".into(),
        key: "keys".into(),
    });
    let reconcile = tokio::spawn(reconcile(Arc::new(wsc), ctx));

    let config = server.next().await;
    assert_eq!(config.method, Method::PATCH);
    assert!(
        config.uri.contains("/configmaps/chat-config?"),
        "{}",
        config.uri
    );
    assert!(
        config.body["data"]["wsgate.toml"]
            .as_str()
            .unwrap()
            .contains("api_keys_files = [\"/etc/wsgate/secrets/auth/user-api-keys\"]")
    );
    let deployment = server.next().await;
    assert!(
        deployment.uri.contains("/deployments/chat?"),
        "{}",
        deployment.uri
    );
    assert!(deployment.body.to_string().contains("\"backend\""));
    let event = server.next().await;
    assert_eq!(event.method, Method::POST);
    let status = server.next().await;
    assert!(status.uri.contains("/status"));
    reconcile.await.unwrap().unwrap();
}

/// A value only the gateway's strict parser refuses (a malformed room
/// pattern) is reported as Degraded instead of crash-looping pods.
#[tokio::test]
async fn config_the_gateway_would_refuse_is_degraded() {
    let (ctx, mut server, _caches) = Context::test();
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.auth.user_rooms = vec!["user:{sub}".into()];
    let reconcile = tokio::spawn(reconcile(Arc::new(wsc), ctx));
    let status = server.next().await;
    let degraded = condition(&status.body["status"], DEGRADED);
    assert_eq!(degraded["status"], "True");
    let message = degraded["message"].as_str().unwrap();
    assert!(message.contains("auth.userRooms"), "{message}");
    server.next().await;
    reconcile.await.unwrap().unwrap();
}

/// A child the API server refuses: the status says ApplyFailed with the
/// server's message, a Warning Event is published, and the error reaches the
/// error policy, which backs off exponentially per WsCluster.
#[tokio::test]
async fn refused_apply_is_degraded_and_backs_off() {
    let (ctx, mut server, mut caches) = Context::test();
    let wsc = fixtures::wsc("chat");
    let mut held = children(&wsc, &Settings::default(), "cached-key\n", None).unwrap();
    held.deployment.metadata.labels = None; // the Deployment differs from the cache
    caches.hold(&held, 1);
    let wsc = Arc::new(wsc);
    let reconcile = tokio::spawn(reconcile(wsc.clone(), ctx.clone()));

    let refused = server
        .fail(
            422,
            "Deployment.apps \"chat\" is invalid: spec.template: quota exceeded",
        )
        .await;
    assert!(
        refused
            .uri
            .starts_with("/apis/apps/v1/namespaces/prod/deployments/chat?"),
        "{}",
        refused.uri
    );
    let status = server.next().await;
    let degraded = condition(&status.body["status"], DEGRADED);
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], reason::APPLY_FAILED);
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("quota exceeded")
    );
    assert!(
        status.body["status"].get("connections").is_none(),
        "stats fields are the poller's"
    );
    let event = server.next().await;
    assert_eq!(event.body["reason"], "ApplyFailed");

    let error = reconcile.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, Error::Apply { kind, .. } if kind == "Deployment"),
        "{error}"
    );
    let delays: Vec<_> = (0..4)
        .map(|_| error_policy(wsc.clone(), &error, ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [5, 10, 20, 40].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    assert_eq!(backoff(30), RESYNC);
}

/// WsCluster `foo-admin`'s public Service would be named like WsCluster
/// `foo`'s admin Service: the operator never writes it (no request), says
/// `NameConflict` on the conditions with both names and an Event, and the
/// error policy retries; `foo`'s Service is left as it was.
#[tokio::test]
async fn service_name_clash_is_reported_and_never_adopted() {
    let (ctx, mut server, mut caches) = Context::test();
    let foo = fixtures::wsc("foo");
    let foo_children = children(&foo, &Settings::default(), "cached-key\n", None).unwrap();
    caches.hold(&foo_children, 1);
    let mut clashing = fixtures::wsc("foo-admin");
    clashing.metadata.uid = Some("0b7f7a8e-0000-4000-8000-000000000001".into());
    let clashing = Arc::new(clashing);
    let reconcile = tokio::spawn(reconcile(clashing.clone(), ctx.clone()));

    for path in [
        "/api/v1/namespaces/prod/serviceaccounts/foo-admin?",
        "/api/v1/namespaces/prod/configmaps/foo-admin-config?",
        "/api/v1/namespaces/prod/secrets/foo-admin-api-keys?",
        "/apis/apps/v1/namespaces/prod/deployments/foo-admin?",
    ] {
        let seen = server.next().await;
        assert!(seen.uri.starts_with(path), "{} is not {path}", seen.uri);
    }
    // No PATCH of services/foo-admin: the next request is the status.
    let status = server.next().await;
    assert!(
        status
            .uri
            .starts_with("/apis/wsgate.io/v1alpha1/namespaces/prod/wsclusters/foo-admin/status?"),
        "{}",
        status.uri
    );
    for type_ in [READY, DEGRADED] {
        let reported = condition(&status.body["status"], type_);
        assert_eq!(reported["reason"], reason::NAME_CONFLICT, "{type_}");
        let message = reported["message"].as_str().unwrap();
        assert!(
            message.contains("Service foo-admin") && message.contains("WsCluster/foo"),
            "{message}"
        );
    }
    assert_eq!(
        condition(&status.body["status"], DEGRADED)["status"],
        "True"
    );
    let event = server.next().await;
    assert_eq!(event.body["reason"], reason::NAME_CONFLICT);
    assert_eq!(event.body["type"], "Warning");

    let error = reconcile.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, Error::NameConflict { kind, name, .. } if kind == "Service" && name == "foo-admin"),
        "{error}"
    );
    assert_eq!(
        error_policy(clashing, &error, ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
    let held = ctx
        .stores
        .services
        .get(&ObjectRef::new("foo-admin").within("prod"))
        .unwrap();
    assert_eq!(held.spec, foo_children.admin_service.spec);
}

/// Ownership decides whether an existing object may be applied over: the
/// same controller uid is ours, another WsCluster or no controller is not.
#[test]
fn only_objects_controlled_by_the_same_wscluster_are_applied_over() {
    let foo = children(&fixtures::wsc("foo"), &Settings::default(), "k\n", None).unwrap();
    let mut bar_wsc = fixtures::wsc("foo-admin");
    bar_wsc.metadata.uid = Some("other".into());
    let bar = children(&bar_wsc, &Settings::default(), "k\n", None).unwrap();
    assert_eq!(
        foreign_controller(&foo.admin_service, &foo.admin_service),
        None
    );
    assert_eq!(
        foreign_controller(&bar.service, &foo.admin_service).as_deref(),
        Some("WsCluster/foo")
    );
    assert_eq!(
        foreign_controller(&foo.admin_service, &bar.service).as_deref(),
        Some("WsCluster/foo-admin")
    );
    let mut unowned = foo.admin_service.clone();
    unowned.metadata.owner_references = None;
    assert_eq!(
        foreign_controller(&foo.admin_service, &unowned).as_deref(),
        Some("no controller")
    );
}

/// A change of a Secret maps to exactly the WsClusters in its namespace
/// that reference it.
#[test]
fn api_keys_secret_changes_map_to_referencing_wsclusters() {
    let reference = |wsc: WsCluster, secret: &str| {
        let mut wsc = wsc;
        wsc.spec.auth.api_keys_secret = Some(wsgate_crds::SecretKeyRef {
            name: secret.into(),
            key: "keys".into(),
        });
        Arc::new(wsc)
    };
    let mut elsewhere = fixtures::wsc("other");
    elsewhere.metadata.namespace = Some("staging".into());
    let wscs = vec![
        reference(fixtures::wsc("chat"), "backend"),
        reference(fixtures::wsc("games"), "games-keys"),
        reference(elsewhere, "backend"),
        Arc::new(fixtures::wsc("plain")),
    ];
    let names: Vec<_> = referencing_secret(&wscs, Some("prod"), "backend")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["chat"]);
    let names: Vec<_> = referencing_secret(&wscs, Some("prod"), "chat-jwt")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["chat"]);
    assert!(referencing_secret(&wscs, Some("prod"), "unrelated").is_empty());
}

/// A referenced Secret that does not exist: the fleet is still applied, and
/// the status says which Secret is missing (Degraded, SecretNotFound) with a
/// Warning Event.
#[tokio::test]
async fn missing_secret_is_reported_without_blocking_the_apply() {
    let (ctx, mut server, mut caches) = Context::test();
    let mut wsc = fixtures::wsc("chat");
    caches.hold(
        &children(&wsc, &Settings::default(), "cached-key\n", None).unwrap(),
        1,
    );
    wsc.spec.auth.jwt_secret = Some(wsgate_crds::SecretKeyRef {
        name: "typo-jwt".into(),
        key: "secret".into(),
    });
    let reconcile = tokio::spawn(reconcile(Arc::new(wsc), ctx));

    // The config names a fixed path; only the Deployment's projection changes.
    let deployment = server.next().await;
    assert!(deployment.body.to_string().contains("typo-jwt"));
    assert!(
        deployment.uri.contains("/deployments/chat?"),
        "{}",
        deployment.uri
    );
    let applied = server.next().await;
    assert_eq!(applied.body["reason"], "Applied");
    let status = server.next().await;
    let degraded = condition(&status.body["status"], DEGRADED);
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], reason::SECRET_NOT_FOUND);
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("Secret typo-jwt not found in namespace prod")
    );
    let warning = server.next().await;
    assert_eq!(warning.body["reason"], "SecretNotFound");
    reconcile.await.unwrap().unwrap();
}

/// `--apply-crd` applies the generated CRD server-side under the operator's
/// field manager.
#[tokio::test]
async fn apply_crd_applies_the_generated_crd() {
    let (ctx, mut server, _caches) = Context::test();
    let client = ctx.client.clone();
    let task = tokio::spawn(async move { apply_crd(&client).await });
    let seen = server.next().await;
    assert_eq!(seen.method, Method::PATCH);
    assert!(
        seen.uri.starts_with(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/wsclusters.wsgate.io?"
        ),
        "{}",
        seen.uri
    );
    assert!(seen.uri.contains("fieldManager=wsgate-operator") && seen.uri.contains("force=true"));
    assert_eq!(seen.body, serde_json::to_value(wsgate_crds::crd()).unwrap());
    task.await.unwrap().unwrap();
}

/// A new WsCluster with managed NATS: the NATS children are applied (the
/// credentials Secret and config before the StatefulSet) before the
/// gateways that use them, all owned; the status says `BrokerReady: False`
/// while no server is ready.
#[tokio::test]
async fn managed_nats_is_applied_before_the_gateways_and_reported_not_ready() {
    let (ctx, mut server, _caches) = Context::test();
    let wsc = Arc::new(fixtures::wsc("chat").with_managed_nats(3).replicas(3));
    let reconcile = tokio::spawn(reconcile(wsc, ctx));

    let expected = [
        "/api/v1/namespaces/prod/serviceaccounts/chat?",
        "/api/v1/namespaces/prod/secrets/chat-nats-credentials?",
        "/api/v1/namespaces/prod/configmaps/chat-nats-config?",
        "/api/v1/namespaces/prod/services/chat-nats-headless?",
        "/api/v1/namespaces/prod/services/chat-nats?",
        "/apis/apps/v1/namespaces/prod/statefulsets/chat-nats?",
        "/apis/policy/v1/namespaces/prod/poddisruptionbudgets/chat-nats?",
        "/api/v1/namespaces/prod/configmaps/chat-config?",
        "/api/v1/namespaces/prod/secrets/chat-api-keys?",
        "/apis/apps/v1/namespaces/prod/deployments/chat?",
        "/api/v1/namespaces/prod/services/chat?",
        "/api/v1/namespaces/prod/services/chat-admin?",
        "/apis/policy/v1/namespaces/prod/poddisruptionbudgets/chat?",
    ];
    let mut route_password = String::new();
    for path in expected {
        let seen = server.next().await;
        assert_eq!(seen.method, Method::PATCH, "{path}");
        assert!(seen.uri.starts_with(path), "{} is not {path}", seen.uri);
        assert!(seen.uri.contains("fieldManager=wsgate-operator"));
        assert_owned(&seen.body);
        if path.contains("chat-nats-credentials") {
            let encoded = seen.body["data"]["route-password"].as_str().unwrap();
            route_password = String::from_utf8(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
                    .unwrap(),
            )
            .unwrap();
        }
        if path.contains("configmaps") {
            let text = seen.body["data"].to_string();
            assert!(!route_password.is_empty() && !text.contains(&route_password));
        }
    }
    let event = server.next().await;
    assert_eq!(event.method, Method::POST);
    let status = server.next().await;
    let broker = condition(&status.body["status"], BROKER_READY);
    assert_eq!(broker["status"], "False");
    assert_eq!(broker["message"], "0/3 NATS servers ready");
    reconcile.await.unwrap().unwrap();
}

/// With the managed NATS in the cache as applied and its servers ready, a
/// reconcile keeps the credentials it finds in the Secret, so every child
/// (NATS ones included) matches and nothing is written; the status it
/// would write says `BrokerReady: True`.
#[tokio::test]
async fn unchanged_managed_nats_keeps_its_credentials_and_makes_zero_requests() {
    let (ctx, server, mut caches) = Context::test();
    let mut wsc = fixtures::wsc("chat").with_managed_nats(3).replicas(3);
    let credentials = resources::nats::NatsCredentials::generate().unwrap();
    let desired = children(
        &wsc,
        &Settings::default(),
        "cached-key\n",
        Some(&credentials),
    )
    .unwrap();
    caches.hold(&desired, 3);
    let deployment = ctx.stores.deployments.state()[0].clone();
    let statefulset = ctx.stores.statefulsets.state()[0].clone();
    let observed = status::Observed {
        deployment: Some(&deployment),
        statefulset: Some(&statefulset),
        broker_replicas: Some(3),
        desired_replicas: 3,
        endpoint: status::endpoint(&wsc, true),
        selector: resources::selector_string("chat"),
        ..Default::default()
    };
    let broker = status::broker_condition(&observed, Some(1)).unwrap();
    assert_eq!(
        (broker.status.as_str(), broker.message.as_str()),
        ("True", "3/3 NATS servers ready")
    );
    wsc.status = Some(status::status(&wsc, &observed));

    let outcome = tokio::time::timeout(
        Duration::from_secs(2),
        reconcile(Arc::new(wsc), ctx.clone()),
    )
    .await;
    outcome
        .expect("reconcile made a request though nothing changed")
        .unwrap();
    assert_eq!(ctx.metrics.applies.get(), 0);
    assert_eq!(
        ctx.metrics.applies_skipped.get(),
        13,
        "six NATS children and seven gateway children matched the cache"
    );
    drop(server);
}

/// A WsCluster with a deletion timestamp is not re-applied (that would
/// race the garbage collector removing its children): no request at all,
/// and no requeue until it changes.
#[tokio::test]
async fn wscluster_being_deleted_is_not_reapplied() {
    let (ctx, server, _caches) = Context::test();
    let mut wsc = fixtures::wsc("chat");
    wsc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let outcome = tokio::time::timeout(
        Duration::from_secs(2),
        reconcile(Arc::new(wsc), ctx.clone()),
    )
    .await;
    let action = outcome
        .expect("reconcile made a request for a WsCluster being deleted")
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(ctx.metrics.applies.get(), 0);
    drop(server);
}

/// A Deployment the Deployment controller gave up on (`ReplicaFailure`,
/// here a quota) makes the WsCluster Degraded and not Ready with the
/// Deployment's reason and message, with a Warning Event; once the
/// Deployment recovers, Degraded goes back to False.
#[tokio::test]
async fn failing_deployment_is_degraded_with_its_reason_until_it_recovers() {
    use k8s_openapi::api::apps::v1::DeploymentCondition;
    use kube::runtime::watcher;

    let (ctx, mut server, mut caches) = Context::test();
    let wsc = fixtures::wsc("chat").replicas(1);
    let desired = children(&wsc, &Settings::default(), "cached-key\n", None).unwrap();
    caches.hold(&desired, 0);
    let mut failing = (*ctx.stores.deployments.state()[0]).clone();
    if let Some(status) = failing.status.as_mut() {
        status.conditions = Some(vec![DeploymentCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some("pods \"chat-7d9\" is forbidden: exceeded quota: compute".into()),
            ..Default::default()
        }]);
    }
    caches
        .deployments
        .apply_watcher_event(&watcher::Event::Apply(failing));

    let task = tokio::spawn(reconcile(Arc::new(wsc.clone()), ctx.clone()));
    let written = server.next().await;
    assert!(
        written.uri.contains("/wsclusters/chat/status"),
        "{}",
        written.uri
    );
    let status = &written.body["status"];
    for type_ in [DEGRADED, READY] {
        let reported = condition(status, type_);
        assert_eq!(reported["reason"], "FailedCreate", "{type_}");
        let message = reported["message"].as_str().unwrap();
        assert!(
            message.contains("Deployment chat: pods \"chat-7d9\" is forbidden: exceeded quota"),
            "{message}"
        );
    }
    assert_eq!(condition(status, DEGRADED)["status"], "True");
    assert_eq!(condition(status, READY)["status"], "False");
    let event = server.next().await;
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "FailedCreate");
    task.await.unwrap().unwrap();

    // The quota is raised: the Deployment's pods are ready, no failure left.
    caches.hold(&desired, 1);
    let mut recovered = wsc;
    recovered.status = Some(serde_json::from_value(status.clone()).unwrap());
    let task = tokio::spawn(reconcile(Arc::new(recovered), ctx));
    let written = server.next().await;
    let status = &written.body["status"];
    assert_eq!(condition(status, DEGRADED)["status"], "False");
    assert_eq!(condition(status, DEGRADED)["reason"], reason::AS_EXPECTED);
    assert_eq!(condition(status, READY)["status"], "True");
    task.await.unwrap().unwrap();
}

/// `httpRoute` without the Gateway API: nothing is sent to an API that
/// does not exist, the status says `RouteNotApplied` (with a Warning Event)
/// and names the Service as the endpoint. Once discovery finds the Gateway
/// API, the next reconcile applies the route and clears it, without a
/// restart.
#[tokio::test]
async fn http_route_without_gateway_api_is_reported_then_applied_once_installed() {
    let (ctx, mut server, mut caches) = Context::test();
    let mut without_api = (*ctx).clone();
    without_api.stores.http_routes = GatewayApi::new(caches.http_routes.as_reader());
    let ctx = Arc::new(without_api);
    let wsc = fixtures::wsc("chat").with_http_route();
    let mut desired = children(&wsc, &Settings::default(), "cached-key\n", None).unwrap();
    desired.http_route = None; // the cluster holds no route
    caches.hold(&desired, 1);

    let task = tokio::spawn(reconcile(Arc::new(wsc.clone()), ctx.clone()));
    let written = server.next().await;
    assert!(
        written.uri.contains("/wsclusters/chat/status"),
        "{}",
        written.uri
    );
    let status = written.body["status"].clone();
    let degraded = condition(&status, DEGRADED);
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], reason::ROUTE_NOT_APPLIED);
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("Gateway API is not installed")
    );
    assert_eq!(status["endpoint"], "ws://chat.prod.svc:80/ws");
    let event = server.next().await;
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], reason::ROUTE_NOT_APPLIED);
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(RESYNC));

    ctx.stores.http_routes.mark_installed();
    let mut later = wsc;
    later.status = Some(serde_json::from_value(status).unwrap());
    let task = tokio::spawn(reconcile(Arc::new(later), ctx));
    let route = server.next().await;
    assert_eq!(route.method, Method::PATCH);
    assert!(
        route
            .uri
            .starts_with("/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/chat?"),
        "{}",
        route.uri
    );
    assert_owned(&route.body);
    let applied = server.next().await;
    assert_eq!(applied.body["reason"], "Applied");
    let written = server.next().await;
    let status = &written.body["status"];
    assert_eq!(condition(status, DEGRADED)["status"], "False");
    assert_eq!(status["endpoint"], "wss://chat.example.com/ws");
    task.await.unwrap().unwrap();
}

/// Discovery looks again after a 404 and after a group without HTTPRoute,
/// and returns once the API server serves `httproutes`.
#[tokio::test]
async fn gateway_api_installed_later_is_found_by_a_later_discovery() {
    let (ctx, mut server, _caches) = Context::test();
    let client = ctx.client.clone();
    let task =
        tokio::spawn(async move { wait_for_gateway_api(&client, Duration::from_millis(10)).await });
    let resource = |name: &str, kind: &str| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": ["get", "list", "watch"]});
    let list = |resources: Vec<Value>| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "gateway.networking.k8s.io/v1", "resources": resources});

    let absent = server
        .fail(404, "the server could not find the requested resource")
        .await;
    assert_eq!(absent.method, Method::GET);
    assert!(
        absent.uri.starts_with("/apis/gateway.networking.k8s.io/v1"),
        "{}",
        absent.uri
    );
    server
        .answer(list(vec![resource("gateways", "Gateway")]))
        .await;
    assert!(
        !task.is_finished(),
        "a group without HTTPRoute is not enough"
    );
    server
        .answer(list(vec![
            resource("gateways", "Gateway"),
            resource("httproutes", "HTTPRoute"),
        ]))
        .await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("discovery did not return once HTTPRoute was served")
        .unwrap();
}

/// A WsCluster whose `auth.apiKeysSecret` does not exist: nothing is read
/// and the reconcile is not aborted. Every child is applied, the status
/// says `SecretNotFound` naming the Secret, a Warning Event says it too,
/// and the reconcile requeues (the Secret's appearance, seen by the
/// metadata watch, reconciles again at once).
#[tokio::test]
async fn missing_api_keys_secret_is_reported_and_everything_else_applied() {
    let (ctx, mut server, _caches) = Context::test();
    let mut wsc = fixtures::wsc("chat");
    wsc.spec.auth.api_keys_secret = Some(wsgate_crds::SecretKeyRef {
        name: "absent-keys".into(),
        key: "keys".into(),
    });
    let reconcile = tokio::spawn(reconcile(Arc::new(wsc), ctx));

    let expected = [
        "/api/v1/namespaces/prod/serviceaccounts/chat?",
        "/api/v1/namespaces/prod/configmaps/chat-config?",
        "/api/v1/namespaces/prod/secrets/chat-api-keys?",
        "/apis/apps/v1/namespaces/prod/deployments/chat?",
        "/api/v1/namespaces/prod/services/chat?",
        "/api/v1/namespaces/prod/services/chat-admin?",
        "/apis/policy/v1/namespaces/prod/poddisruptionbudgets/chat?",
    ];
    for path in expected {
        let seen = server.next().await;
        assert_eq!(seen.method, Method::PATCH, "{path}: nothing is read");
        assert!(seen.uri.starts_with(path), "{} is not {path}", seen.uri);
    }
    let applied = server.next().await;
    assert_eq!(applied.body["reason"], "Applied");
    let status = server.next().await;
    let degraded = condition(&status.body["status"], DEGRADED);
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], reason::SECRET_NOT_FOUND);
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("absent-keys"),
        "{degraded}"
    );
    let warning = server.next().await;
    assert_eq!(warning.method, Method::POST);
    assert_eq!(warning.body["reason"], "SecretNotFound");
    assert!(
        warning.body["note"]
            .as_str()
            .unwrap()
            .contains("absent-keys")
    );
    assert_eq!(reconcile.await.unwrap().unwrap(), Action::requeue(RESYNC));
}

/// The status a reconcile of `wsc` with the cached Deployment would write,
/// so that a reconcile which changes nothing writes nothing.
fn current_status(wsc: &mut WsCluster, ctx: &Context) {
    let deployment = ctx.stores.deployments.state()[0].clone();
    wsc.status = Some(status::status(
        wsc,
        &status::Observed {
            deployment: Some(&deployment),
            desired_replicas: resources::desired_replicas(wsc),
            endpoint: status::endpoint(wsc, ctx.stores.http_routes.installed()),
            selector: resources::selector_string("chat"),
            ..Default::default()
        },
    ));
}

/// The operator's own Secret, known by its metadata only (as after a
/// restart), is read with one GET and its key kept: nothing is re-applied,
/// and the next reconcile reads nothing (the value is remembered for that
/// resourceVersion).
#[tokio::test]
async fn owned_secret_is_read_once_and_its_key_kept() {
    let (ctx, mut server, mut caches) = Context::test();
    let mut wsc = fixtures::wsc("chat");
    let desired = children(&wsc, &Settings::default(), "cached-key\n", None).unwrap();
    caches.hold(&desired, 1);
    caches.secrets.clear();
    current_status(&mut wsc, &ctx);
    let wsc = Arc::new(wsc);

    let first = tokio::spawn(reconcile(wsc.clone(), ctx.clone()));
    let get = server
        .answer(&fixtures::as_applied(&desired.api_keys_secret))
        .await;
    assert_eq!(get.method, Method::GET);
    assert!(
        get.uri
            .starts_with("/api/v1/namespaces/prod/secrets/chat-api-keys"),
        "{}",
        get.uri
    );
    first.await.unwrap().unwrap();
    assert_eq!(ctx.metrics.applies.get(), 0, "the key was kept");

    tokio::time::timeout(Duration::from_secs(2), reconcile(wsc, ctx.clone()))
        .await
        .expect("the second reconcile made a request")
        .unwrap();
    assert_eq!(ctx.metrics.applies.get(), 0);
}

/// A Secret named like an operator's child but controlled by something
/// else is never read (no GET) and never overwritten: the reconcile stops
/// with `NameConflict` on the status and a Warning Event.
#[tokio::test]
async fn foreign_secret_of_a_child_name_is_never_read() {
    let (ctx, mut server, mut caches) = Context::test();
    let wsc = fixtures::wsc("chat");
    let mut desired = children(&wsc, &Settings::default(), "cached-key\n", None).unwrap();
    caches.hold(&desired, 1);
    caches.secrets.clear();
    if let Some(owner) = desired
        .api_keys_secret
        .metadata
        .owner_references
        .as_mut()
        .and_then(|owners| owners.first_mut())
    {
        owner.uid = "someone-else".into();
        owner.name = "other".into();
    }
    caches.put_secret(&desired.api_keys_secret);
    caches.secrets.clear();

    let reconcile = tokio::spawn(reconcile(Arc::new(wsc), ctx));
    let status = server.next().await;
    assert_eq!(status.method, Method::PATCH, "{}", status.uri);
    assert!(
        status.uri.contains("/wsclusters/chat/status"),
        "{}",
        status.uri
    );
    assert_eq!(
        condition(&status.body["status"], DEGRADED)["reason"],
        reason::NAME_CONFLICT
    );
    let warning = server.next().await;
    assert_eq!(warning.body["reason"], reason::NAME_CONFLICT);
    let error = reconcile.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::NameConflict { .. }), "{error}");
}

/// A change of a Secret's metadata reconciles the WsCluster that controls
/// it (drift of the operator's own Secrets) and those that reference it;
/// a Secret controlled by anything else reconciles nothing.
#[test]
fn secret_changes_map_to_their_controller_and_referencing_wsclusters() {
    let wscs = vec![Arc::new(fixtures::wsc("chat"))];
    let meta = |name: &str, owner: Option<(&str, &str)>| {
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some("prod".into());
        secret.metadata.owner_references = owner.map(|(kind, name)| {
            vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: if kind == "WsCluster" {
                        "wsgate.io/v1alpha1".into()
                    } else {
                        "apps/v1".into()
                    },
                    kind: kind.into(),
                    name: name.into(),
                    uid: "u".into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]
        });
        secret
    };
    let names = |secret| {
        secret_triggers(&wscs, &secret)
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(meta("games-api-keys", Some(("WsCluster", "games")))),
        ["prod/games"]
    );
    assert_eq!(names(meta("chat-jwt", None)), ["prod/chat"]);
    assert!(names(meta("x", Some(("Deployment", "chat")))).is_empty());
    assert!(names(meta("unrelated", None)).is_empty());
}

/// Upgrading from an operator that copied the user's API keys after its
/// own: the copied keys stay in `<name>-api-keys` (no Secret write) while
/// the pods roll to the template that mounts `auth.apiKeysSecret`, so pods
/// of the old template keep accepting them; once every pod runs the new
/// template, the operator's file is cut to its own key.
#[tokio::test]
async fn copied_user_keys_stay_until_every_pod_mounts_the_secret() {
    let (ctx, mut server, mut caches) = Context::test();
    let old = fixtures::wsc("chat");
    let copied = "cached-key\nold-user-key\n";
    caches.hold(
        &children(&old, &Settings::default(), copied, None).unwrap(),
        1,
    );
    let mut wsc = old;
    wsc.spec.auth.api_keys_secret = Some(wsgate_crds::SecretKeyRef {
        name: "backend".into(),
        key: "keys".into(),
    });
    let wsc = Arc::new(wsc);

    let rolling = tokio::spawn(reconcile(wsc.clone(), ctx.clone()));
    let written: Vec<String> = server
        .take(4)
        .await
        .into_iter()
        .map(|seen| seen.uri)
        .collect();
    assert!(
        written[0].contains("/configmaps/chat-config?"),
        "{written:?}"
    );
    assert!(written[1].contains("/deployments/chat?"), "{written:?}");
    assert!(written[2].contains("/events"), "{written:?}");
    assert!(written[3].contains("/status"), "{written:?}");
    rolling.await.unwrap().unwrap();

    // Every pod now runs the template that mounts `backend`.
    caches.hold(
        &children(&wsc, &Settings::default(), copied, None).unwrap(),
        1,
    );
    let rolled = tokio::spawn(reconcile(wsc, ctx));
    let secret = server.next().await;
    assert!(
        secret.uri.contains("/secrets/chat-api-keys?"),
        "{}",
        secret.uri
    );
    let data = secret.body["data"]["api-keys"].as_str().unwrap().to_owned();
    let decoded: k8s_openapi::ByteString = serde_json::from_value(Value::String(data)).unwrap();
    assert_eq!(decoded.0, b"cached-key\n");
    server.take(2).await; // Event, status
    rolled.await.unwrap().unwrap();
}
