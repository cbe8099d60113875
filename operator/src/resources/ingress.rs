//! The Ingress, when `spec.ingress` is set.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use wsgate_crds::WsCluster;

use super::{PUBLIC_PORT_NAME, child_meta, namespace_and_name};
use crate::Result;

/// ingress-nginx's annotation naming the failures after which it tries the
/// request on another pod.
pub const PROXY_NEXT_UPSTREAM: &str = "nginx.ingress.kubernetes.io/proxy-next-upstream";

/// Retry another pod on connection errors, timeouts and 503: a gateway that
/// drains or rebalances refuses upgrades with 503, and the client should land
/// on another pod at once instead of backing off (ingress-nginx's default is
/// `error timeout`).
pub const PROXY_NEXT_UPSTREAM_VALUE: &str = "error timeout http_503";

/// An Ingress routing `ingress.path` on `ingress.host` to the Service's
/// public port only: the admin port (backend API, metrics) is never exposed.
/// It asks ingress-nginx to retry another pod on 503 ([`PROXY_NEXT_UPSTREAM`]);
/// `ingress.annotations` may override that.
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
    let mut annotations = BTreeMap::from([(
        PROXY_NEXT_UPSTREAM.to_owned(),
        PROXY_NEXT_UPSTREAM_VALUE.to_owned(),
    )]);
    annotations.extend(spec.annotations.clone());
    metadata.annotations = Some(annotations);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, WsClusterExt};

    /// The Ingress asks ingress-nginx to retry another pod on 503, so a client
    /// refused by a draining or rebalancing pod lands on another at once; the
    /// spec's annotations are kept and may override it.
    #[test]
    fn the_ingress_retries_another_pod_on_503() {
        let mut wsc = fixtures::wsc("chat").with_ingress();
        let annotations = |wsc: &WsCluster| {
            ingress(wsc)
                .ok()
                .flatten()
                .and_then(|ingress| ingress.metadata.annotations)
                .unwrap_or_default()
        };
        assert_eq!(
            annotations(&wsc)
                .get("nginx.ingress.kubernetes.io/proxy-next-upstream")
                .map(String::as_str),
            Some("error timeout http_503")
        );
        if let Some(spec) = wsc.spec.ingress.as_mut() {
            spec.annotations
                .insert("example.com/team".into(), "chat".into());
            spec.annotations.insert(
                PROXY_NEXT_UPSTREAM.into(),
                "error timeout http_502 http_503".into(),
            );
        }
        let kept = annotations(&wsc);
        assert_eq!(
            kept.get("example.com/team").map(String::as_str),
            Some("chat")
        );
        assert_eq!(
            kept.get(PROXY_NEXT_UPSTREAM).map(String::as_str),
            Some("error timeout http_502 http_503")
        );
    }
}
