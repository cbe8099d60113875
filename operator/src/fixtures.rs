//! Test fixtures: WsCluster builders and a mock API server (controller-rs
//! `fixtures.rs`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use wsgate_crds::{
    AutoscalingSpec, HttpRouteSpec, IngressSpec, ParentRef, SecretKeyRef, WsCluster, WsClusterSpec,
};

/// The uid of fixture WsClusters.
pub const UID: &str = "5f0c9c53-1b4f-4a8e-9d1e-6c1f2a3b4c5d";

/// A WsCluster `prod/<name>`, generation 1, with an HS256 secret.
pub fn wsc(name: &str) -> WsCluster {
    let mut wsc = WsCluster::new(
        name,
        WsClusterSpec {
            auth: wsgate_crds::AuthSpec {
                jwt_secret: Some(SecretKeyRef {
                    name: format!("{name}-jwt"),
                    key: "secret".into(),
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    wsc.metadata.namespace = Some("prod".into());
    wsc.metadata.uid = Some(UID.into());
    wsc.metadata.generation = Some(1);
    wsc.metadata.resource_version = Some("1".into());
    wsc
}

/// Builder-style changes of a fixture WsCluster.
pub trait WsClusterExt: Sized {
    /// An Ingress on `chat.example.com` with TLS.
    fn with_ingress(self) -> Self;
    /// An HTTPRoute on Gateway `public`.
    fn with_http_route(self) -> Self;
    /// CPU autoscaling 2..10 at 70%, with a CPU request.
    fn with_cpu_autoscaling(self) -> Self;
    /// NATS by URL, 2 replicas, and the operator's connections autoscaler
    /// between 2 and 10 pods at `per_pod` connections each.
    fn with_connections_autoscaling(self, per_pod: i64) -> Self;
    /// `spec.replicas`.
    fn replicas(self, replicas: i32) -> Self;
    /// `nats.managed` with `servers` servers and defaults otherwise.
    fn with_managed_nats(self, servers: i32) -> Self;
    /// A room namespace `name` keeping 100 messages of history.
    fn with_history_namespace(self, name: &str) -> Self;
}

impl WsClusterExt for WsCluster {
    fn with_ingress(mut self) -> Self {
        self.spec.ingress = Some(IngressSpec {
            class_name: Some("nginx".into()),
            host: Some("chat.example.com".into()),
            path: "/".into(),
            tls_secret_name: Some("chat-tls".into()),
            annotations: BTreeMap::new(),
        });
        self
    }

    fn with_http_route(mut self) -> Self {
        self.spec.http_route = Some(HttpRouteSpec {
            parent_refs: vec![ParentRef {
                name: "public".into(),
                ..Default::default()
            }],
            hostnames: vec!["chat.example.com".into()],
            path: "/".into(),
            annotations: BTreeMap::new(),
        });
        self
    }

    fn with_cpu_autoscaling(mut self) -> Self {
        self.spec.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization: Some(70),
            target_connections_per_pod: None,
            scale_down_stabilization_seconds: 300,
            behavior: None,
        });
        self.spec.resources = Some(ResourceRequirements {
            requests: Some([("cpu".to_owned(), Quantity("250m".into()))].into()),
            ..Default::default()
        });
        self
    }

    fn replicas(mut self, replicas: i32) -> Self {
        self.spec.replicas = Some(replicas);
        self
    }

    fn with_connections_autoscaling(mut self, per_pod: i64) -> Self {
        self.spec.nats = Some(wsgate_crds::NatsSpec {
            url: Some("nats://nats:4222".into()),
            ..Default::default()
        });
        self.spec.replicas = Some(2);
        self.spec.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization: None,
            target_connections_per_pod: Some(per_pod),
            scale_down_stabilization_seconds: 300,
            behavior: None,
        });
        self
    }

    fn with_managed_nats(mut self, servers: i32) -> Self {
        self.spec.nats = Some(wsgate_crds::NatsSpec {
            managed: Some(wsgate_crds::ManagedNatsSpec {
                replicas: servers,
                ..Default::default()
            }),
            ping_interval_ms: 5000,
            ..Default::default()
        });
        self
    }

    fn with_history_namespace(mut self, name: &str) -> Self {
        self.spec.namespaces.insert(
            name.to_owned(),
            wsgate_crds::NamespaceSpec {
                history_size: 100,
                ..Default::default()
            },
        );
        self
    }
}

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::PartialObjectMeta;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::Serialize;

use serde_json::Value;

use crate::controller::{Context, DESIRED_HASH_ANNOTATION, GatewayApi, Stores, desired_hash};
use crate::metrics::Metrics;
use crate::owned_secret::{OwnedSecrets, SecretContents};
use crate::resources::{Children, HTTPRoute, Settings};

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The writers behind a test Context's caches: tests fill them with what
/// the API server would hold.
#[derive(Default)]
pub struct Caches {
    /// ServiceAccounts.
    pub service_accounts: Writer<ServiceAccount>,
    /// ConfigMaps.
    pub config_maps: Writer<ConfigMap>,
    /// Values of the operator's own Secrets, as read or applied.
    pub secrets: SecretContents,
    /// Deployments.
    pub deployments: Writer<Deployment>,
    /// StatefulSets.
    pub statefulsets: Writer<k8s_openapi::api::apps::v1::StatefulSet>,
    /// Services.
    pub services: Writer<Service>,
    /// PDBs.
    pub pod_disruption_budgets: Writer<PodDisruptionBudget>,
    /// Ingresses.
    pub ingresses: Writer<Ingress>,
    /// NetworkPolicies.
    pub network_policies: Writer<NetworkPolicy>,
    /// HPAs.
    pub horizontal_pod_autoscalers: Writer<HorizontalPodAutoscaler>,
    /// HTTPRoutes.
    pub http_routes: Writer<HTTPRoute>,
    /// Secrets' metadata.
    pub secret_metadata: Writer<PartialObjectMeta<Secret>>,
}

/// `object` as the server holds it after an apply by the operator: with the
/// desired-hash annotation and a server-set field the operator never sets.
pub fn as_applied<K: Resource + Serialize + Clone>(object: &K) -> K {
    let hash = desired_hash(object).unwrap();
    let mut applied = object.clone();
    let meta = applied.meta_mut();
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(DESIRED_HASH_ANNOTATION.into(), hash);
    meta.resource_version = Some("42".into());
    meta.uid = Some("child-uid".into());
    applied
}

fn put<K>(writer: &mut Writer<K>, object: &K)
where
    K: Resource<DynamicType = ()> + Serialize + Clone + kube::core::Resource,
{
    writer.apply_watcher_event(&watcher::Event::Apply(as_applied(object)));
}

impl Caches {
    /// Marks every cache as holding its initial (empty) list, as a watcher's
    /// `InitDone` does.
    pub fn init_done(&mut self) {
        self.service_accounts
            .apply_watcher_event(&watcher::Event::InitDone);
        self.config_maps
            .apply_watcher_event(&watcher::Event::InitDone);
        self.deployments
            .apply_watcher_event(&watcher::Event::InitDone);
        self.statefulsets
            .apply_watcher_event(&watcher::Event::InitDone);
        self.services.apply_watcher_event(&watcher::Event::InitDone);
        self.pod_disruption_budgets
            .apply_watcher_event(&watcher::Event::InitDone);
        self.ingresses
            .apply_watcher_event(&watcher::Event::InitDone);
        self.network_policies
            .apply_watcher_event(&watcher::Event::InitDone);
        self.horizontal_pod_autoscalers
            .apply_watcher_event(&watcher::Event::InitDone);
        self.http_routes
            .apply_watcher_event(&watcher::Event::InitDone);
        self.secret_metadata
            .apply_watcher_event(&watcher::Event::InitDone);
    }

    /// Holds one of the operator's Secrets as applied: its metadata in the
    /// metadata cache, its value as last read.
    pub fn put_secret(&mut self, secret: &Secret) {
        let applied = as_applied(secret);
        self.secrets.remember(&applied);
        self.secret_metadata
            .apply_watcher_event(&watcher::Event::Apply(PartialObjectMeta {
                types: None,
                metadata: applied.metadata,
                _phantom: std::marker::PhantomData,
            }));
    }

    /// Fills the caches with `children` as applied, the Deployment with a
    /// rolled-out, ready status for `ready` replicas.
    pub fn hold(&mut self, children: &Children, ready: i32) {
        put(&mut self.service_accounts, &children.service_account);
        put(&mut self.config_maps, &children.config_map);
        self.put_secret(&children.api_keys_secret);
        let mut deployment = children.deployment.clone();
        deployment.metadata.generation = Some(1);
        deployment.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(ready),
            ready_replicas: Some(ready),
            updated_replicas: Some(ready),
            available_replicas: Some(ready),
            ..Default::default()
        });
        let mut applied = as_applied(&children.deployment);
        applied.metadata.generation = Some(1);
        applied.status = deployment.status.clone();
        self.deployments
            .apply_watcher_event(&watcher::Event::Apply(applied));
        put(&mut self.services, &children.service);
        put(&mut self.services, &children.admin_service);
        put(
            &mut self.pod_disruption_budgets,
            &children.pod_disruption_budget,
        );
        if let Some(ingress) = &children.ingress {
            put(&mut self.ingresses, ingress);
        }
        if let Some(policy) = &children.network_policy {
            put(&mut self.network_policies, policy);
        }
        if let Some(hpa) = &children.horizontal_pod_autoscaler {
            put(&mut self.horizontal_pod_autoscalers, hpa);
        }
        if let Some(route) = &children.http_route {
            put(&mut self.http_routes, route);
        }
        if let Some(nats) = &children.nats {
            self.put_secret(&nats.secret);
            put(&mut self.config_maps, &nats.config_map);
            put(&mut self.services, &nats.headless_service);
            put(&mut self.services, &nats.service);
            put(
                &mut self.pod_disruption_budgets,
                &nats.pod_disruption_budget,
            );
            let mut applied = as_applied(&nats.statefulset);
            applied.status = Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
                replicas: nats
                    .statefulset
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(0),
                ready_replicas: nats.statefulset.spec.as_ref().and_then(|s| s.replicas),
                ..Default::default()
            });
            self.statefulsets
                .apply_watcher_event(&watcher::Event::Apply(applied));
        }
    }
}

/// Answers the requests of one reconcile, asserting each one.
pub struct ApiServerVerifier(ApiServerHandle);

impl Context {
    /// A Context whose client talks to a mock API server, with empty caches.
    pub fn test() -> (Arc<Context>, ApiServerVerifier, Caches) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let mut caches = Caches::default();
        caches.init_done();
        // The fixtures' referenced Secrets exist.
        for name in ["chat-jwt", "backend"] {
            let mut meta = PartialObjectMeta::<Secret>::default();
            meta.metadata.name = Some(name.into());
            meta.metadata.namespace = Some("prod".into());
            caches
                .secret_metadata
                .apply_watcher_event(&watcher::Event::Apply(meta));
        }
        let secrets = OwnedSecrets::new(
            client.clone(),
            caches.secret_metadata.as_reader(),
            caches.secrets.clone(),
        );
        let ctx = Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "wsgate-operator".into(),
                    instance: None,
                },
            ),
            client,
            metrics: Metrics::default(),
            settings: Settings::default(),
            stores: Stores {
                service_accounts: caches.service_accounts.as_reader(),
                config_maps: caches.config_maps.as_reader(),
                secrets,
                deployments: caches.deployments.as_reader(),
                statefulsets: caches.statefulsets.as_reader(),
                services: caches.services.as_reader(),
                pod_disruption_budgets: caches.pod_disruption_budgets.as_reader(),
                ingresses: caches.ingresses.as_reader(),
                network_policies: caches.network_policies.as_reader(),
                horizontal_pod_autoscalers: caches.horizontal_pod_autoscalers.as_reader(),
                http_routes: {
                    let routes = GatewayApi::new(caches.http_routes.as_reader());
                    routes.mark_installed();
                    routes
                },
                secret_metadata: caches.secret_metadata.as_reader(),
            },
            failures: Arc::default(),
        };
        (Arc::new(ctx), ApiServerVerifier(handle), caches)
    }
}

/// How the mock API server answers one request.
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// Answers with `status` and `body` as JSON.
fn respond(send: Responder, status: u16, body: &impl Serialize) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

/// A discovery request (`/api`, `/apis`, `/apis/<group>/<version>`), which
/// every authenticated user may make (`system:discovery`), so no rule grants it.
fn is_discovery(uri: &str) -> bool {
    let path = uri.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segments.as_slice(),
        ["api"] | ["apis"] | ["api", _] | ["apis", _, _]
    )
}

/// Every request the operator makes must be one [`crate::rbac::RULES`]
/// grant, so the chart (tested against that table) lets it through.
fn assert_permitted(method: &Method, uri: &str) {
    let Some(access) = crate::rbac::access(method, uri) else {
        assert!(
            is_discovery(uri),
            "{method} {uri} is neither a resource request nor discovery"
        );
        return;
    };
    assert!(
        crate::rbac::permits(&access),
        "{method} {uri} needs {access:?}, which rbac::RULES do not grant"
    );
}

/// One request the verifier saw.
#[derive(Debug)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// JSON body (`Null` when empty).
    pub body: Value,
}

impl ApiServerVerifier {
    /// Answers the next request with its own body (an apply or patch echo)
    /// or `{}` and returns what was seen.
    pub async fn next(&mut self) -> Seen {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("timed out waiting for a request")
            .expect("service not called");
        assert_permitted(request.method(), &request.uri().to_string());
        let method = request.method().clone();
        let uri = request.uri().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let reply = if uri.contains("/scale") {
            serde_json::json!({
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {"name": "chat", "namespace": "prod"},
                "spec": body["spec"],
            })
        } else if uri.contains("/wsclusters/") {
            // A status write answers with the whole WsCluster.
            serde_json::json!({
                "apiVersion": "wsgate.io/v1alpha1",
                "kind": "WsCluster",
                "metadata": {"name": "chat", "namespace": "prod", "uid": UID},
                "spec": {},
                "status": body["status"],
            })
        } else if body.is_null() {
            serde_json::json!({})
        } else {
            body.clone()
        };
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
        Seen { method, uri, body }
    }

    /// The next request, which [`crate::rbac::RULES`] must permit, as seen
    /// (without its body), and the handle to answer it.
    async fn receive(&mut self) -> (Seen, Responder) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("timed out waiting for a request")
            .expect("service not called");
        assert_permitted(request.method(), &request.uri().to_string());
        let seen = Seen {
            method: request.method().clone(),
            uri: request.uri().to_string(),
            body: Value::Null,
        };
        (seen, send)
    }

    /// Answers the next request with an API error of `code`.
    pub async fn fail(&mut self, code: u16, message: &str) -> Seen {
        let (seen, send) = self.receive().await;
        let status = serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": message, "reason": "Invalid", "code": code,
        });
        respond(send, code, &status);
        seen
    }

    /// Answers `n` requests, returning them in order.
    pub async fn take(&mut self, n: usize) -> Vec<Seen> {
        let mut seen = Vec::new();
        for _ in 0..n {
            seen.push(self.next().await);
        }
        seen
    }

    /// Answers the next request with `object` and returns what was seen.
    pub async fn answer<T: Serialize>(&mut self, object: T) -> Seen {
        let (seen, send) = self.receive().await;
        respond(send, 200, &object);
        seen
    }

    /// Answers a GET of a Secret with `data` (base64 done here).
    pub async fn secret(&mut self, name: &str, key: &str, value: &str) -> Seen {
        let (seen, send) = self.receive().await;
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.data = Some(
            [(
                key.to_owned(),
                k8s_openapi::ByteString(value.as_bytes().to_vec()),
            )]
            .into(),
        );
        respond(send, 200, &secret);
        seen
    }
}

/// The owner reference of a fixture child points at the fixture WsCluster.
pub fn assert_owned(body: &Value) {
    let owners = body["metadata"]["ownerReferences"]
        .as_array()
        .expect("ownerReferences");
    assert_eq!(owners[0]["uid"], UID);
    assert_eq!(owners[0]["kind"], "WsCluster");
    assert_eq!(owners[0]["controller"], true);
}
