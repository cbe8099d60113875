//! The HorizontalPodAutoscaler, for a CPU target.

/// The period of the HPA's scale-down policies: at most one step of
/// `max(1 pod, maxPercent)` per minute.
const SCALE_DOWN_PERIOD_SECONDS: i32 = 60;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
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
/// `autoscaling.behavior.scaleDown` applies to it as to the operator's own
/// autoscaler: the stabilization window, and a scale-down that removes at
/// most the larger of one pod and `maxPercent` per minute (two policies
/// with `selectPolicy: Max`), since every removed pod drains its clients
/// onto the others.
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
                    select_policy: Some("Max".to_owned()),
                    policies: Some(vec![
                        HPAScalingPolicy {
                            type_: "Pods".to_owned(),
                            value: 1,
                            period_seconds: SCALE_DOWN_PERIOD_SECONDS,
                        },
                        HPAScalingPolicy {
                            type_: "Percent".to_owned(),
                            value: i32::try_from(autoscaling.scale_down_max_percent())
                                .unwrap_or(100),
                            period_seconds: SCALE_DOWN_PERIOD_SECONDS,
                        },
                    ]),
                    ..HPAScalingRules::default()
                }),
                ..HorizontalPodAutoscalerBehavior::default()
            }),
        }),
        ..HorizontalPodAutoscaler::default()
    }))
}
