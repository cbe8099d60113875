//! Wiring: the operator process around the reconciler.
//!
//! [`main`] sets up telemetry, the HTTP server, the optional CRD apply and
//! leader election; [`run`] builds the caches and watches, the controller
//! and the stats poller, and runs them until a signal (axum's
//! `shutdown_signal`, turned into a `CancellationToken`).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wsgate_crds::WsCluster;

use crate::args::RunArgs;
use crate::controller::{
    Context, GATEWAY_API_DISCOVERY, GatewayApi, MANAGED_SELECTOR, Stores, error_policy,
    gateway_api_installed, reconcile, secret_triggers, wait_for_gateway_api,
};
use crate::metrics::Metrics;
use crate::owned_secret::{OwnedSecrets, SecretContents};
use crate::resources::HTTPRoute;
use crate::watch::{self, Namespaces, Watched};
use crate::{Error, FIELD_MANAGER, Result};

/// Runs the operator: telemetry, HTTP server, optional CRD apply, leader
/// election, then the controller and the stats poller until a signal.
///
/// # Errors
///
/// When the client cannot be built, the CRD is missing, or the server
/// cannot bind.
pub async fn main(args: RunArgs) -> anyhow::Result<()> {
    crate::telemetry::init(args.log_format);
    let client = Client::try_default().await?;
    let metrics = Metrics::default();
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));
    let server = tokio::spawn(crate::server::serve(
        args.listen,
        metrics.clone(),
        shutdown.clone(),
    ));

    if args.apply_crd {
        apply_crd(&client).await?;
    }
    let namespaces = Namespaces::from_list(args.watched_namespaces());
    for wscs in namespaces.apis::<WsCluster>(&client) {
        if let Err(error) = wscs.list(&ListParams::default().limit(1)).await {
            anyhow::bail!(
                "cannot list WsClusters ({error}); is the CRD installed? \
                 `wsgate-operator crd | kubectl apply -f -`, or run with --apply-crd; \
                 with --watch-namespaces, does each listed namespace grant the operator its Role?"
            );
        }
    }

    let leader = if args.leader_election {
        Some(crate::leader::acquire(client.clone(), &args, shutdown.clone()).await?)
    } else {
        None
    };

    run(client, args, metrics, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(leader) = leader {
        leader.release().await;
    }
    server.await??;
    Ok(())
}

/// Applies the operator's own CRD (server-side, forced): Helm installs a
/// chart's `crds/` once and never upgrades it.
///
/// # Errors
///
/// [`Error::Apply`] when the API server refuses it (RBAC, or a CRD change it
/// cannot accept).
pub async fn apply_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = wsgate_crds::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: "CustomResourceDefinition".to_owned(),
        name,
        source,
    })?;
    info!("applied the WsCluster CRD");
    Ok(())
}

/// Ctrl-C or SIGTERM cancels `token`.
async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    token.cancel();
}

/// Clears `metadata.managedFields` before an object reaches a cache: the
/// operator never reads them, and on objects applied by several managers
/// they are often the largest part of the object (kube-rs `.modify()`).
pub fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// A cached watch of the children of one kind (those labelled as the
/// operator's) in the watched namespaces, without their managed fields.
fn owned_watcher<K>(
    client: &Client,
    namespaces: &Namespaces,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + use<K>,
)
where
    K: Watched + Resource<DynamicType = ()>,
{
    debug_assert_rbac::<K>();
    let (reader, writer) = reflector::store();
    (reader, owned_stream(client, namespaces, writer))
}

/// The watch behind [`owned_watcher`], filling `writer`.
fn owned_stream<K>(
    client: &Client,
    namespaces: &Namespaces,
    writer: Writer<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + use<K>
where
    K: Watched + Resource<DynamicType = ()>,
{
    let events = watch::watch(
        client,
        namespaces,
        &watcher::Config::default().labels(MANAGED_SELECTOR),
        drop_managed_fields,
    );
    reflector(writer, events)
        .default_backoff()
        .touched_objects()
}

/// A watched kind the RBAC table does not let the operator list and watch
/// is a bug, caught in debug builds and tests before a chart ships.
fn debug_assert_rbac<K: Resource<DynamicType = ()>>() {
    for verb in ["list", "watch"] {
        debug_assert!(
            crate::rbac::permits(&crate::rbac::Access {
                verb,
                api_group: K::group(&()).into_owned(),
                resource: K::plural(&()).into_owned(),
                namespace: None,
                name: None,
            }),
            "rbac::RULES lack {verb} on {}",
            K::plural(&())
        );
    }
}

/// Wires the controller: the WsCluster watch (generation changes only) and
/// a cached watch per child kind, then runs until `shutdown`.
pub async fn run(client: Client, args: RunArgs, metrics: Metrics, shutdown: CancellationToken) {
    let namespaces = Namespaces::from_list(args.watched_namespaces());
    if let Namespaces::Listed(listed) = &namespaces {
        info!(namespaces = ?listed, "watching only the listed namespaces");
    }
    let ns = &namespaces;
    let (service_accounts, sa_stream) = owned_watcher::<ServiceAccount>(&client, ns);
    let (config_maps, cm_stream) = owned_watcher::<ConfigMap>(&client, ns);
    let (deployments, deploy_stream) = owned_watcher::<Deployment>(&client, ns);
    let (statefulsets, sts_stream) = owned_watcher::<StatefulSet>(&client, ns);
    let (services, svc_stream) = owned_watcher::<Service>(&client, ns);
    let (pdbs, pdb_stream) = owned_watcher::<PodDisruptionBudget>(&client, ns);
    let (ingresses, ingress_stream) = owned_watcher::<Ingress>(&client, ns);
    let (network_policies, netpol_stream) = owned_watcher::<NetworkPolicy>(&client, ns);
    let (hpas, hpa_stream) = owned_watcher::<HorizontalPodAutoscaler>(&client, ns);

    // The HTTPRoute watch starts once the Gateway API is found: now, or by
    // a later discovery, which then reconciles every WsCluster.
    let (route_store, route_writer) = reflector::store::<HTTPRoute>();
    let gateway_api = GatewayApi::new(route_store);
    if gateway_api_installed(&client).await {
        gateway_api.mark_installed();
    } else {
        info!(
            every = ?GATEWAY_API_DISCOVERY,
            "gateway api not installed: httpRoute specs are not applied until it is"
        );
    }
    let (found_tx, found_rx) = tokio::sync::oneshot::channel::<()>();
    let route_stream = {
        let client = client.clone();
        let gateway_api = gateway_api.clone();
        let namespaces = namespaces.clone();
        futures::stream::once(async move {
            if !gateway_api.installed() {
                wait_for_gateway_api(&client, GATEWAY_API_DISCOVERY).await;
                info!("gateway api installed: applying httpRoute specs");
                gateway_api.mark_installed();
                let _ = found_tx.send(());
            }
            owned_stream(&client, &namespaces, route_writer)
        })
        .flatten()
    };
    let found = futures::stream::once(found_rx).filter_map(|sent| async move { sent.ok() });

    let (wsc_store, wsc_writer) = reflector::store();
    metrics.observe(wsc_store.clone());
    let wsc_stream = reflector(
        wsc_writer,
        watch::watch::<WsCluster>(
            &client,
            ns,
            &watcher::Config::default(),
            drop_managed_fields,
        ),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(predicates::generation, Default::default());

    // Secrets' metadata only, on the wire and in the cache (an
    // `Api<PartialObjectMeta<_>>` asks for `PartialObjectMetadata`): a
    // referenced Secret that appears clears `SecretNotFound`, and drift of
    // the operator's own Secrets is re-applied. Values are read only of the
    // Secrets the operator owns (`OwnedSecrets`).
    let referenced = wsc_store.clone();
    let (secret_metadata, secret_metadata_writer) = reflector::store();
    let secret_changes = reflector(
        secret_metadata_writer,
        watch::watch::<PartialObjectMeta<Secret>>(
            &client,
            ns,
            &watcher::Config::default(),
            drop_managed_fields,
        ),
    )
    .default_backoff()
    .touched_objects();

    let controller = Controller::for_stream(wsc_stream, wsc_store.clone())
        .watches_stream(secret_changes, move |secret| {
            secret_triggers(&referenced.state(), &secret)
        })
        .owns_stream(sa_stream)
        .owns_stream(cm_stream)
        .owns_stream(deploy_stream)
        .owns_stream(sts_stream)
        .owns_stream(svc_stream)
        .owns_stream(pdb_stream)
        .owns_stream(ingress_stream)
        .owns_stream(netpol_stream)
        .owns_stream(hpa_stream)
        .owns_stream(route_stream)
        .reconcile_all_on(found);

    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: args.identity.clone(),
    };
    let secrets = OwnedSecrets::new(
        client.clone(),
        secret_metadata.clone(),
        SecretContents::default(),
    );
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        metrics: metrics.clone(),
        settings: args.settings(),
        stores: Stores {
            service_accounts,
            config_maps,
            secrets: secrets.clone(),
            deployments,
            statefulsets,
            services,
            pod_disruption_budgets: pdbs,
            ingresses,
            network_policies,
            horizontal_pod_autoscalers: hpas,
            http_routes: gateway_api,
            secret_metadata,
        },
        failures: Arc::default(),
    });

    let poller = tokio::spawn(crate::stats::poll(
        client.clone(),
        wsc_store,
        secrets,
        metrics,
        args.stats_interval(),
        shutdown.clone(),
    ));

    let stop = shutdown.clone();
    controller
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "controller");
            }
        })
        .await;
    shutdown.cancel();
    let _ = poller.await;
}
