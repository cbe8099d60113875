//! The Services in front of the gateways: a public one and an admin one.
//!
//! They are two objects so the admin listener (backend API, `/metrics`,
//! health) can never share the public Service's type: a `LoadBalancer` or
//! `NodePort` on `<name>` exposes only the WebSocket port, while
//! `<name>-admin` is always `ClusterIP`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wsgate_crds::{ServiceType, WsCluster};

use super::{ADMIN_PORT_NAME, PUBLIC_PORT_NAME, child_meta, namespace_and_name, selector_labels};
use crate::Result;

/// Name of the admin Service of the WsCluster `wsc_name`.
pub fn admin_service_name(wsc_name: &str) -> String {
    format!("{wsc_name}-admin")
}

/// The public Service `<name>`: only the WebSocket port (`ws`, what the
/// Ingress or HTTPRoute targets), with the spec's type and annotations.
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
    let type_ = match spec.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.to_owned()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![port(PUBLIC_PORT_NAME, spec.port)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The admin Service `<name>-admin`: only the admin port (`admin`: backend
/// API, health, metrics), always `ClusterIP` whatever `service.type` says,
/// and without `service.annotations` (they are meant for the public
/// Service's load balancer).
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn admin_service(wsc: &WsCluster) -> Result<Service> {
    let (_, name) = namespace_and_name(wsc)?;
    Ok(Service {
        metadata: child_meta(wsc, admin_service_name(&name))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![port(ADMIN_PORT_NAME, wsc.spec.service.admin_port)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// A TCP port named `name` targeting the pod port of the same name.
fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some("http".to_owned()),
        ..ServicePort::default()
    }
}
