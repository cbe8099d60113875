//! The reconciler: `WsCluster` → children, applied server-side, and status.
//!
//! Every child is built by [`crate::resources`] and applied with
//! server-side apply under [`FIELD_MANAGER`]. Before an apply, the desired
//! object is compared with what the reflector cache holds (a hash of the
//! desired object in an annotation, and every desired field present with
//! the same value): when nothing differs no request is made, so a resync of
//! an unchanged fleet writes nothing. The status is written only when it
//! changed. The WsCluster watch passes only generation changes, so the
//! operator's own status writes do not trigger reconciles.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{info, instrument, warn};
use wsgate_crds::WsCluster;

use crate::metrics::Metrics;
use crate::owned_secret::OwnedSecrets;
use crate::resources::{self, HTTPRoute, Settings};
use crate::{Error, FIELD_MANAGER, Result, status, validate};

/// Annotation on every applied child: SHA-256 of the desired object, so a
/// field removed from the desired state is noticed even though the cached
/// object still holds it.
pub const DESIRED_HASH_ANNOTATION: &str = "wsgate.io/desired-hash";

/// Label selector of the children the operator watches.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=wsgate-operator";

/// Periodic resync of a healthy WsCluster.
pub const RESYNC: Duration = Duration::from_secs(300);

/// How often the operator looks for the Gateway API while it is not
/// installed (see [`GatewayApi`]).
pub const GATEWAY_API_DISCOVERY: Duration = Duration::from_secs(60);

/// The HTTPRoute cache, and whether the Gateway API is installed. Found at
/// startup, or later by a discovery every [`GATEWAY_API_DISCOVERY`] (see
/// [`crate::runtime`]), which starts the HTTPRoute watch and reconciles
/// every WsCluster: installing the Gateway API needs no operator restart.
/// Until then a WsCluster with `httpRoute` reports `RouteNotApplied`.
#[derive(Clone)]
pub struct GatewayApi {
    /// HTTPRoutes; filled once the Gateway API is installed.
    pub routes: Store<HTTPRoute>,
    installed: Arc<AtomicBool>,
}

impl GatewayApi {
    /// An HTTPRoute cache with the Gateway API not (yet) found.
    pub fn new(routes: Store<HTTPRoute>) -> Self {
        Self {
            routes,
            installed: Arc::default(),
        }
    }

    /// Whether the Gateway API has been found.
    pub fn installed(&self) -> bool {
        self.installed.load(Ordering::Acquire)
    }

    /// Records that the Gateway API is installed (it stays so).
    pub fn mark_installed(&self) {
        self.installed.store(true, Ordering::Release);
    }
}

/// Whether the API server serves HTTPRoutes in `gateway.networking.k8s.io/v1`
/// (discovery needs no RBAC). Any error, 404 included, counts as not
/// installed: the next discovery tries again.
pub async fn gateway_api_installed(client: &Client) -> bool {
    match client
        .list_api_group_resources("gateway.networking.k8s.io/v1")
        .await
    {
        Ok(list) => list
            .resources
            .iter()
            .any(|resource| resource.name == "httproutes"),
        Err(error) => {
            tracing::debug!(%error, "gateway api discovery");
            false
        }
    }
}

/// Returns once the Gateway API is installed, looking every `interval`.
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub async fn wait_for_gateway_api(client: &Client, interval: Duration) {
    while !gateway_api_installed(client).await {
        tokio::time::sleep(interval).await;
    }
}

/// Reflector caches of the children, read to skip unchanged applies.
#[derive(Clone)]
pub struct Stores {
    /// ServiceAccounts.
    pub service_accounts: Store<ServiceAccount>,
    /// ConfigMaps.
    pub config_maps: Store<ConfigMap>,
    /// The values of the Secrets the operator owns, read on demand (every
    /// other Secret is known by [`Stores::secret_metadata`] only).
    pub secrets: OwnedSecrets,
    /// Deployments.
    pub deployments: Store<Deployment>,
    /// StatefulSets (managed NATS).
    pub statefulsets: Store<k8s_openapi::api::apps::v1::StatefulSet>,
    /// Services.
    pub services: Store<Service>,
    /// PodDisruptionBudgets.
    pub pod_disruption_budgets: Store<PodDisruptionBudget>,
    /// Ingresses.
    pub ingresses: Store<Ingress>,
    /// NetworkPolicies.
    pub network_policies: Store<NetworkPolicy>,
    /// HorizontalPodAutoscalers.
    pub horizontal_pod_autoscalers: Store<HorizontalPodAutoscaler>,
    /// HTTPRoutes, and whether the Gateway API is installed.
    pub http_routes: GatewayApi,
    /// Metadata of every Secret (never their values): which referenced
    /// Secrets exist.
    pub secret_metadata: Store<PartialObjectMeta<Secret>>,
}

impl Stores {
    /// Waits until every cache holds its initial list, so a reconcile
    /// right after startup compares with what exists instead of applying
    /// everything again (and minting a new operator key).
    ///
    /// # Errors
    ///
    /// [`Error::CacheNotReady`] when a cache is not filled within
    /// [`CACHE_SYNC_TIMEOUT`] (for example a watch refused by RBAC).
    pub async fn wait_until_ready(&self) -> Result<()> {
        let all = async {
            self.service_accounts.wait_until_ready().await?;
            self.config_maps.wait_until_ready().await?;
            self.deployments.wait_until_ready().await?;
            self.statefulsets.wait_until_ready().await?;
            self.services.wait_until_ready().await?;
            self.pod_disruption_budgets.wait_until_ready().await?;
            self.ingresses.wait_until_ready().await?;
            self.network_policies.wait_until_ready().await?;
            self.horizontal_pod_autoscalers.wait_until_ready().await?;
            if self.http_routes.installed() {
                self.http_routes.routes.wait_until_ready().await?;
            }
            self.secret_metadata.wait_until_ready().await
        };
        match tokio::time::timeout(CACHE_SYNC_TIMEOUT, all).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(dropped)) => Err(Error::CacheNotReady(dropped.to_string())),
            Err(_) => Err(Error::CacheNotReady(format!(
                "not filled within {CACHE_SYNC_TIMEOUT:?}; can the operator list and watch every child kind?"
            ))),
        }
    }
}

/// How long a reconcile waits for the caches after startup.
pub const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// What the reconciler shares (controller-rs `Context`).
#[derive(Clone)]
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events on WsClusters.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Builder settings (default gateway image).
    pub settings: Settings,
    /// Caches of the children.
    pub stores: Stores,
    /// Consecutive failed reconciles per WsCluster (`namespace/name`), for
    /// the error policy's backoff; cleared by a successful reconcile.
    pub failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl Context {
    fn key(wsc: &WsCluster) -> String {
        format!("{}/{}", wsc.namespace().unwrap_or_default(), wsc.name_any())
    }
}

/// First retry delay of a failing WsCluster; doubled per consecutive
/// failure up to [`RESYNC`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);

/// The retry delay after `failures` consecutive failures: 5 s, 10 s, 20 s,
/// … at most [`RESYNC`].
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BACKOFF_BASE.saturating_mul(factor).min(RESYNC)
}

/// Reconciles one WsCluster: validate, build, apply what differs, delete
/// what the spec no longer wants, write the status if it changed. A
/// WsCluster being deleted is left alone: re-applying its children would
/// race the garbage collector that removes them.
///
/// # Errors
///
/// A failed apply, delete or status write; [`error_policy`] requeues.
#[instrument(skip(wsc, ctx), fields(wscluster = %wsc.name_any()))]
pub async fn reconcile(wsc: Arc<WsCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    if wsc.metadata.deletion_timestamp.is_some() {
        info!("being deleted: nothing applied");
        return Ok(Action::await_change());
    }
    ctx.stores.wait_until_ready().await?;
    let (namespace, name) = resources::namespace_and_name(&wsc)?;
    let wscs: Api<WsCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let routes_installed = ctx.stores.http_routes.installed();

    let mut observed = status::Observed {
        desired_replicas: resources::desired_replicas(&wsc),
        broker_replicas: resources::nats::managed_spec(&wsc).map(|managed| managed.replicas),
        endpoint: status::endpoint(&wsc, routes_installed),
        selector: resources::selector_string(&name),
        route_not_applied: wsc.spec.http_route.is_some() && !routes_installed,
        ..status::Observed::default()
    };

    let problems = validate::problems(&wsc);
    if !problems.is_empty() {
        warn!(problems = ?problems, "invalid spec, not applied");
        observed.invalid = problems;
        let cached = ctx
            .stores
            .deployments
            .get(&ObjectRef::new(&name).within(&namespace));
        observed.deployment = cached.as_deref();
        if write_status(&wscs, &wsc, &observed).await? {
            publish(
                &ctx,
                &wsc,
                EventType::Warning,
                "InvalidSpec",
                observed.invalid.join("; "),
            )
            .await;
        }
        return Ok(Action::requeue(RESYNC));
    }

    let api_keys = api_keys(&ctx, &wsc, &namespace, &name).await?;
    let nats_credentials = nats_credentials(&ctx, &wsc, &namespace, &name).await?;
    let children = resources::children(&wsc, &ctx.settings, &api_keys, nats_credentials.as_ref())?;
    let mut applied = Vec::new();
    let (deployment, statefulset) =
        match apply_children(&ctx, &wsc, &children, &namespace, &name, &mut applied).await {
            Ok(applied) => applied,
            Err(error) => {
                // Say why in the status (best effort) before the error policy retries.
                observed.apply_error = Some(status::ApplyError::from(&error));
                let cached = ctx
                    .stores
                    .deployments
                    .get(&ObjectRef::new(&name).within(&namespace));
                observed.deployment = cached.as_deref();
                if let Ok(true) = write_status(&wscs, &wsc, &observed).await {
                    publish(
                        &ctx,
                        &wsc,
                        EventType::Warning,
                        error.condition_reason(),
                        error.to_string(),
                    )
                    .await;
                }
                return Err(error);
            }
        };

    if !applied.is_empty() {
        info!(children = ?applied, "applied");
        publish(
            &ctx,
            &wsc,
            EventType::Normal,
            "Applied",
            format!("applied {}", applied.join(", ")),
        )
        .await;
    }

    observed.deployment = Some(&deployment);
    observed.statefulset = statefulset.as_ref();
    observed.missing_secrets = validate::referenced_secrets(&wsc)
        .into_iter()
        .filter(|secret| {
            ctx.stores
                .secret_metadata
                .get(&ObjectRef::new(secret).within(&namespace))
                .is_none()
        })
        .collect();
    if write_status(&wscs, &wsc, &observed).await? {
        if !observed.missing_secrets.is_empty() {
            let note = format!("Secret {} not found", observed.missing_secrets.join(", "));
            publish(&ctx, &wsc, EventType::Warning, "SecretNotFound", note).await;
        } else if let Some((reason, message)) = status::deployment_failure(&deployment) {
            publish(&ctx, &wsc, EventType::Warning, &reason, message).await;
        } else if observed.route_not_applied {
            let note = status::ROUTE_NOT_APPLIED_MESSAGE.to_owned();
            let reason = wsgate_crds::condition::reason::ROUTE_NOT_APPLIED;
            publish(&ctx, &wsc, EventType::Warning, reason, note).await;
        }
    }
    ctx.failures.lock().remove(&Context::key(&wsc));
    Ok(Action::requeue(RESYNC))
}

/// Applies every child in dependency order (config before the pods that
/// mount it, the managed NATS before the gateways that use it) and deletes
/// optional children the spec dropped; returns the Deployment and the
/// managed NATS StatefulSet as the server (or the cache) holds them.
async fn apply_children(
    ctx: &Context,
    wsc: &WsCluster,
    children: &resources::Children,
    namespace: &str,
    name: &str,
    applied: &mut Vec<String>,
) -> Result<(Deployment, Option<k8s_openapi::api::apps::v1::StatefulSet>)> {
    let stores = &ctx.stores;
    let ns = namespace;
    apply(
        ctx,
        ns,
        &children.service_account,
        &stores.service_accounts,
        applied,
    )
    .await?;
    let statefulset = match &children.nats {
        Some(nats) => Some(apply_managed_nats(ctx, ns, wsc, nats, applied).await?),
        None => None,
    };
    apply(ctx, ns, &children.config_map, &stores.config_maps, applied).await?;
    apply_secret(ctx, ns, wsc, &children.api_keys_secret, applied).await?;
    let deployment = apply(ctx, ns, &children.deployment, &stores.deployments, applied).await?;
    apply(ctx, ns, &children.service, &stores.services, applied).await?;
    apply(ctx, ns, &children.admin_service, &stores.services, applied).await?;
    apply(
        ctx,
        ns,
        &children.pod_disruption_budget,
        &stores.pod_disruption_budgets,
        applied,
    )
    .await?;
    apply_optional(
        ctx,
        ns,
        name,
        children.ingress.as_ref(),
        &stores.ingresses,
        wsc,
        applied,
    )
    .await?;
    apply_optional(
        ctx,
        ns,
        name,
        children.network_policy.as_ref(),
        &stores.network_policies,
        wsc,
        applied,
    )
    .await?;
    apply_optional(
        ctx,
        ns,
        name,
        children.horizontal_pod_autoscaler.as_ref(),
        &stores.horizontal_pod_autoscalers,
        wsc,
        applied,
    )
    .await?;
    if stores.http_routes.installed() {
        apply_optional(
            ctx,
            ns,
            name,
            children.http_route.as_ref(),
            &stores.http_routes.routes,
            wsc,
            applied,
        )
        .await?;
    }

    Ok((deployment, statefulset))
}

/// Applies the children of a managed NATS: credentials and config before
/// the StatefulSet that mounts them.
async fn apply_managed_nats(
    ctx: &Context,
    ns: &str,
    wsc: &WsCluster,
    nats: &resources::nats::ManagedNats,
    applied: &mut Vec<String>,
) -> Result<k8s_openapi::api::apps::v1::StatefulSet> {
    let stores = &ctx.stores;
    apply_secret(ctx, ns, wsc, &nats.secret, applied).await?;
    apply(ctx, ns, &nats.config_map, &stores.config_maps, applied).await?;
    apply(ctx, ns, &nats.headless_service, &stores.services, applied).await?;
    apply(ctx, ns, &nats.service, &stores.services, applied).await?;
    let statefulset = apply(ctx, ns, &nats.statefulset, &stores.statefulsets, applied).await?;
    apply(
        ctx,
        ns,
        &nats.pod_disruption_budget,
        &stores.pod_disruption_budgets,
        applied,
    )
    .await?;
    Ok(statefulset)
}

/// The credentials of the managed NATS of `wsc`: those its Secret holds
/// (read only when that Secret is this WsCluster's own), else new ones (the
/// first reconcile); `None` without `nats.managed`. Kept, so a resync
/// renders the same config.
///
/// # Errors
///
/// [`Error::NatsCredentials`] if new ones cannot be made;
/// [`Error::ReadSecret`] if the Secret cannot be read.
async fn nats_credentials(
    ctx: &Context,
    wsc: &WsCluster,
    namespace: &str,
    name: &str,
) -> Result<Option<resources::nats::NatsCredentials>> {
    if resources::nats::managed_spec(wsc).is_none() {
        return Ok(None);
    }
    let own = resources::nats::nats_secret_name(name);
    let secret = ctx
        .stores
        .secrets
        .get(namespace, &own, wsc.metadata.uid.as_deref())
        .await?;
    let existing = secret.and_then(|secret| {
        let data = secret
            .data
            .as_ref()?
            .iter()
            .map(|(key, value)| (key.clone(), value.0.clone()))
            .collect();
        resources::nats::NatsCredentials::from_secret_data(&data)
    });
    match existing {
        Some(credentials) => Ok(Some(credentials)),
        None => Ok(Some(resources::nats::NatsCredentials::generate()?)),
    }
}

/// Logs, counts and requeues a failed reconcile with an exponential
/// backoff per WsCluster (see [`backoff`]).
pub fn error_policy(wsc: Arc<WsCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failure(error);
    let failures = {
        let mut failures = ctx.failures.lock();
        let count = failures.entry(Context::key(&wsc)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(failures);
    warn!(%error, wscluster = %wsc.name_any(), failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The operator's API keys file: its key as its own Secret holds it, else a
/// new one. The user's keys (`auth.apiKeysSecret`) are not read: the pods
/// mount them as a second file. Keys an older operator copied into its own
/// Secret stay until the pods mount that file (see
/// [`resources::keeps_copied_user_keys`]).
///
/// # Errors
///
/// [`Error::ReadSecret`] if the operator's Secret cannot be read.
async fn api_keys(ctx: &Context, wsc: &WsCluster, namespace: &str, name: &str) -> Result<String> {
    let own = resources::api_keys_secret_name(name);
    let secret = ctx
        .stores
        .secrets
        .get(namespace, &own, wsc.metadata.uid.as_deref())
        .await?;
    let previous = secret
        .and_then(|secret| {
            let data = secret.data?.remove(resources::API_KEYS_KEY)?;
            String::from_utf8(data.0).ok()
        })
        .unwrap_or_default();
    let Some(operator_key) = resources::operator_key(&previous) else {
        return Ok(resources::api_keys_file(&resources::generate_api_key()));
    };
    let deployment = ctx
        .stores
        .deployments
        .get(&ObjectRef::new(name).within(namespace));
    let keep_copied = resources::keeps_copied_user_keys(wsc, deployment.as_deref());
    Ok(resources::api_keys_file_keeping(
        operator_key,
        &previous,
        keep_copied,
    ))
}

/// Applies one of the operator's own Secrets, comparing it with the value
/// [`OwnedSecrets`] holds (there is no cache of Secret values), and
/// remembers what the server returned.
async fn apply_secret(
    ctx: &Context,
    namespace: &str,
    wsc: &WsCluster,
    desired: &Secret,
    applied: &mut Vec<String>,
) -> Result<Secret> {
    let cached = ctx
        .stores
        .secrets
        .get(namespace, &desired.name_any(), wsc.metadata.uid.as_deref())
        .await?;
    let secret = apply_over(ctx, namespace, desired, cached, applied).await?;
    ctx.stores.secrets.remember(&secret);
    Ok(secret)
}

/// A namespaced child kind the controller applies by server-side apply.
trait Child:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// Applies `desired` unless the cache already holds it; returns the object
/// as the API server (or the cache) has it.
async fn apply<K>(
    ctx: &Context,
    namespace: &str,
    desired: &K,
    store: &Store<K>,
    applied: &mut Vec<String>,
) -> Result<K>
where
    K: Child,
{
    let cached = store
        .get(&ObjectRef::new(&desired.name_any()).within(namespace))
        .map(|cached| (*cached).clone());
    apply_over(ctx, namespace, desired, cached, applied).await
}

/// Applies `desired` unless `cached` (what the server holds) already is it.
async fn apply_over<K>(
    ctx: &Context,
    namespace: &str,
    desired: &K,
    cached: Option<K>,
    applied: &mut Vec<String>,
) -> Result<K>
where
    K: Child,
{
    let name = desired.name_any();
    let kind = K::kind(&()).into_owned();
    let hash = desired_hash(desired)?;
    let mut desired = desired.clone();
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(DESIRED_HASH_ANNOTATION.to_owned(), hash);

    if let Some(cached) = cached {
        if let Some(owner) = foreign_controller(&desired, &cached) {
            return Err(Error::NameConflict { kind, name, owner });
        }
        if is_applied(&desired, &cached)? {
            ctx.metrics.applies_skipped.inc();
            return Ok(cached);
        }
    }

    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let mut body = serde_json::to_value(&desired)?;
    if let Value::Object(map) = &mut body {
        map.insert(
            "apiVersion".to_owned(),
            Value::String(K::api_version(&()).into_owned()),
        );
        map.insert("kind".to_owned(), Value::String(kind.clone()));
        map.remove("status");
    }
    let result = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
    ctx.metrics.applies.inc();
    applied.push(format!("{kind}/{name}"));
    Ok(result)
}

/// Who controls `existing` when it is not the controller `desired` names
/// (its WsCluster): `Kind/name` of that controller, or `no controller`.
/// `None` when `existing` is ours and may be applied over.
///
/// The caches hold only objects labelled as the operator's, so this catches
/// clashes between WsClusters (`foo-admin`'s Service against `foo`'s admin
/// Service) before any write; an unlabelled object of the user's is
/// protected by the API server, which refuses a second controller reference.
pub fn foreign_controller<K: Resource>(desired: &K, existing: &K) -> Option<String> {
    let controller = |object: &K| {
        object
            .owner_references()
            .iter()
            .find(|owner| owner.controller == Some(true))
            .cloned()
    };
    let ours = controller(desired).map(|owner| owner.uid);
    match controller(existing) {
        Some(owner) if Some(&owner.uid) == ours.as_ref() => None,
        Some(owner) => Some(format!("{}/{}", owner.kind, owner.name)),
        None => Some("no controller".to_owned()),
    }
}

/// Applies `desired` when present; when absent, deletes the object of that
/// name if the cache holds one controlled by `wsc`.
async fn apply_optional<K>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    desired: Option<&K>,
    store: &Store<K>,
    wsc: &WsCluster,
    applied: &mut Vec<String>,
) -> Result<()>
where
    K: Child,
{
    if let Some(desired) = desired {
        apply(ctx, namespace, desired, store, applied).await?;
        return Ok(());
    }
    let Some(cached) = store.get(&ObjectRef::new(name).within(namespace)) else {
        return Ok(());
    };
    let owned = cached.owner_references().iter().any(|owner| {
        owner.controller == Some(true) && Some(&owner.uid) == wsc.metadata.uid.as_ref()
    });
    if !owned {
        return Ok(());
    }
    let kind = K::kind(&()).into_owned();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => {
            return Err(Error::Delete {
                kind: kind.clone(),
                name: name.to_owned(),
                source,
            });
        }
    }
    applied.push(format!("deleted {kind}/{name}"));
    Ok(())
}

/// SHA-256 of the desired object's JSON.
///
/// # Errors
///
/// [`Error::Serialize`].
pub fn desired_hash<K: Serialize>(desired: &K) -> Result<String> {
    Ok(resources::sha256_hex(
        serde_json::to_string(desired)?.as_bytes(),
    ))
}

/// Whether `cached` already is `desired` (with its hash annotation): every
/// field of `desired` is present in `cached` with the same value. Fields the
/// API server defaults, and fields of other managers, are ignored.
///
/// # Errors
///
/// [`Error::Serialize`].
pub fn is_applied<K: Serialize>(desired: &K, cached: &K) -> Result<bool> {
    Ok(is_subset(
        &serde_json::to_value(desired)?,
        &serde_json::to_value(cached)?,
    ))
}

fn is_subset(desired: &Value, actual: &Value) -> bool {
    match (desired, actual) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|actual| is_subset(value, actual))),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (want, have) => want == have,
    }
}

/// Writes the status computed from `observed` if it differs from the
/// current one; returns whether it wrote.
async fn write_status(
    wscs: &Api<WsCluster>,
    wsc: &WsCluster,
    observed: &status::Observed<'_>,
) -> Result<bool> {
    let new = status::status(wsc, observed);
    if !status::differs(wsc.status.as_ref(), &new) {
        return Ok(false);
    }
    wscs.patch_status(
        &wsc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": new })),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(true)
}

/// Publishes an Event on `wsc`; a failure is logged, never fatal.
async fn publish(ctx: &Context, wsc: &WsCluster, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &wsc.object_ref(&())).await {
        warn!(%error, "publish event failed");
    }
}

/// The WsClusters a change of `secret` (its metadata) concerns: the one that
/// controls it (the operator's own Secrets: drift is re-applied) and those
/// that reference it (a referenced Secret that appears clears
/// `SecretNotFound`).
pub fn secret_triggers(
    wscs: &[Arc<WsCluster>],
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<WsCluster>> {
    let namespace = secret.namespace();
    let mut triggers = referencing_secret(wscs, namespace.as_deref(), &secret.name_any());
    let group = WsCluster::api_version(&());
    triggers.extend(
        secret
            .owner_references()
            .iter()
            .filter(|owner| {
                owner.controller == Some(true)
                    && owner.kind == WsCluster::kind(&())
                    && owner.api_version == group
            })
            .filter_map(|owner| {
                let namespace = namespace.as_deref()?;
                Some(ObjectRef::new(&owner.name).within(namespace))
            }),
    );
    triggers
}

/// The WsClusters that reference the Secret `namespace/name`.
pub fn referencing_secret(
    wscs: &[Arc<WsCluster>],
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<WsCluster>> {
    wscs.iter()
        .filter(|wsc| wsc.namespace().as_deref() == namespace)
        .filter(|wsc| {
            validate::referenced_secrets(wsc)
                .iter()
                .any(|secret| secret == name)
        })
        .map(|wsc| ObjectRef::from_obj(wsc.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests;
