//! The Ingress, when `spec.ingress` is set.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use wsgate_crds::WsCluster;

use super::{PUBLIC_PORT_NAME, child_meta, namespace_and_name};
use crate::Result;

/// An Ingress routing `ingress.path` on `ingress.host` to the Service's
/// public port only: the admin port (backend API, metrics) is never exposed.
///
/// `None` without `spec.ingress`.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn ingress(wsc: &WsCluster) -> Result<Option<Ingress>> {
    let Some(spec) = &wsc.spec.ingress else {
        return Ok(None);
    };
    let (_, name) = namespace_and_name(wsc)?;
    let mut metadata = child_meta(wsc, name.clone())?;
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let rule = IngressRule {
        host: spec.host.clone(),
        http: Some(HTTPIngressRuleValue {
            paths: vec![HTTPIngressPath {
                path: Some(spec.path.clone()),
                path_type: "Prefix".to_owned(),
                backend: IngressBackend {
                    service: Some(IngressServiceBackend {
                        name,
                        port: Some(ServiceBackendPort {
                            name: Some(PUBLIC_PORT_NAME.to_owned()),
                            number: None,
                        }),
                    }),
                    resource: None,
                },
            }],
        }),
    };
    let tls = spec.tls_secret_name.as_ref().map(|secret| {
        vec![IngressTLS {
            hosts: spec.host.clone().map(|host| vec![host]),
            secret_name: Some(secret.clone()),
        }]
    });
    Ok(Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![rule]),
            tls,
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }))
}
