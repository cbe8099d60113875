//! The optional NetworkPolicy of the gateway pods (`spec.networkPolicy`).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wsgate_crds::WsCluster;

use super::{
    ADMIN_PORT_NAME, PUBLIC_PORT_NAME, Settings, child_meta, namespace_and_name, selector_labels,
};
use crate::Result;

/// Label that admits a pod in the WsCluster's namespace to the admin port.
pub const BACKEND_LABEL: &str = "wsgate.io/backend";

/// Label every namespace carries with its own name (Kubernetes 1.22+).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The NetworkPolicy `<name>` with `networkPolicy.enabled`, else `None`.
///
/// It selects the gateway pods and governs their ingress only: the public
/// port (`ws`) from anywhere; the admin port (`admin`: backend API, health,
/// metrics) from the operator's namespace (the stats poller), from pods of
/// the WsCluster's namespace labelled `wsgate.io/backend: "true"`, and from
/// `networkPolicy.adminFrom`. The kubelet's probes are not subject to it.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn network_policy(wsc: &WsCluster, settings: &Settings) -> Result<Option<NetworkPolicy>> {
    let Some(spec) = wsc.spec.network_policy.as_ref().filter(|spec| spec.enabled) else {
        return Ok(None);
    };
    let (_, name) = namespace_and_name(wsc)?;
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    };
    let match_labels = |key: &str, value: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..LabelSelector::default()
    };
    let mut admin_from = vec![
        NetworkPolicyPeer {
            namespace_selector: Some(match_labels(
                NAMESPACE_NAME_LABEL,
                &settings.operator_namespace,
            )),
            ..NetworkPolicyPeer::default()
        },
        NetworkPolicyPeer {
            pod_selector: Some(match_labels(BACKEND_LABEL, "true")),
            ..NetworkPolicyPeer::default()
        },
    ];
    admin_from.extend(spec.admin_from.iter().cloned());
    Ok(Some(NetworkPolicy {
        metadata: child_meta(wsc, name.clone())?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(PUBLIC_PORT_NAME)]),
                    from: None,
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(ADMIN_PORT_NAME)]),
                    from: Some(admin_from),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }))
}
