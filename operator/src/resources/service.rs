//! The Service in front of the gateways.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wsgate_crds::{ServiceType, WsCluster};

use super::{ADMIN_PORT_NAME, PUBLIC_PORT_NAME, child_meta, namespace_and_name, selector_labels};
use crate::Result;

/// The Service: the public port (`ws`, what the Ingress or HTTPRoute
/// targets) and the admin port (`admin`: backend API, health, metrics;
/// reachable inside the cluster only, never routed by the operator).
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn service(wsc: &WsCluster) -> Result<Service> {
    let (_, name) = namespace_and_name(wsc)?;
    let spec = &wsc.spec.service;
    let mut metadata = child_meta(wsc, name.clone())?;
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some("http".to_owned()),
        ..ServicePort::default()
    };
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(
                match spec.type_ {
                    ServiceType::ClusterIP => "ClusterIP",
                    ServiceType::NodePort => "NodePort",
                    ServiceType::LoadBalancer => "LoadBalancer",
                }
                .to_owned(),
            ),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![
                port(PUBLIC_PORT_NAME, spec.port),
                port(ADMIN_PORT_NAME, spec.admin_port),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}
