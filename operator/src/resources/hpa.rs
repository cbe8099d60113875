//! The HorizontalPodAutoscaler, for a CPU target.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use kube::Resource;
use wsgate_crds::WsCluster;

use super::{child_meta, namespace_and_name};
use crate::Result;

/// An HPA whose scale target is the WsCluster itself (through its `/scale`
/// subresource), so the HPA writes `spec.replicas` and the operator mirrors
/// it into the Deployment: the two never fight over the Deployment.
///
/// `None` unless `autoscaling.targetCpuUtilization` is set (a connections
/// target is handled by the operator, see [`crate::autoscale`]).
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn horizontal_pod_autoscaler(wsc: &WsCluster) -> Result<Option<HorizontalPodAutoscaler>> {
    let Some(autoscaling) = &wsc.spec.autoscaling else {
        return Ok(None);
    };
    let Some(cpu) = autoscaling.target_cpu_utilization else {
        return Ok(None);
    };
    let (_, name) = namespace_and_name(wsc)?;
    let stabilization =
        i32::try_from(autoscaling.scale_down_stabilization().as_secs()).unwrap_or(i32::MAX);
    Ok(Some(HorizontalPodAutoscaler {
        metadata: child_meta(wsc, name.clone())?,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(WsCluster::api_version(&()).into_owned()),
                kind: WsCluster::kind(&()).into_owned(),
                name,
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(cpu),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(stabilization),
                    ..HPAScalingRules::default()
                }),
                ..HorizontalPodAutoscalerBehavior::default()
            }),
        }),
        ..HorizontalPodAutoscaler::default()
    }))
}
