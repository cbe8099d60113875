//! The PodDisruptionBudget.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wsgate_crds::WsCluster;

use super::{child_meta, namespace_and_name, selector_labels};
use crate::Result;

/// `maxUnavailable: 1`: node drains take one gateway at a time, so clients
/// reconnect to the others instead of all at once.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn pod_disruption_budget(wsc: &WsCluster) -> Result<PodDisruptionBudget> {
    let (_, name) = namespace_and_name(wsc)?;
    Ok(PodDisruptionBudget {
        metadata: child_meta(wsc, name.clone())?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
