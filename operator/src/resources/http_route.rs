//! The Gateway API HTTPRoute, when `spec.httpRoute` is set.
//!
//! k8s-openapi has no Gateway API types, so this module declares the part of
//! `gateway.networking.k8s.io/v1` HTTPRoute the operator writes. Unknown
//! fields the API server returns are ignored on read; server-side apply
//! leaves fields of other managers alone.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use wsgate_crds::WsCluster;

use super::{child_meta, namespace_and_name};
use crate::Result;

/// The operator's view of an HTTPRoute's spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    /// Gateways the route attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host names matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Routing rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HTTPRouteRule>,
}

/// A parent Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Gateway name.
    pub name: String,
    /// Gateway namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// One rule: matches and backends.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    /// Request matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HTTPRouteMatch>,
    /// Backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HTTPBackendRef>,
}

/// A path match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HTTPRouteMatch {
    /// The path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathMatch>,
}

/// A path and how it matches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HTTPPathMatch {
    /// `PathPrefix`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The prefix.
    pub value: String,
}

/// A backend Service port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HTTPBackendRef {
    /// Service name.
    pub name: String,
    /// Service port.
    pub port: i32,
}

/// An HTTPRoute sending `httpRoute.path` to the Service's public port only.
///
/// `None` without `spec.httpRoute`.
///
/// # Errors
///
/// [`crate::Error::MissingMetadata`] without a namespace or name.
pub fn http_route(wsc: &WsCluster) -> Result<Option<HTTPRoute>> {
    let Some(spec) = &wsc.spec.http_route else {
        return Ok(None);
    };
    let (_, name) = namespace_and_name(wsc)?;
    let mut metadata = child_meta(wsc, name.clone())?;
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let mut route = HTTPRoute::new(
        &name,
        HTTPRouteSpec {
            parent_refs: spec
                .parent_refs
                .iter()
                .map(|parent| ParentReference {
                    name: parent.name.clone(),
                    namespace: parent.namespace.clone(),
                    section_name: parent.section_name.clone(),
                })
                .collect(),
            hostnames: spec.hostnames.clone(),
            rules: vec![HTTPRouteRule {
                matches: vec![HTTPRouteMatch {
                    path: Some(HTTPPathMatch {
                        type_: "PathPrefix".to_owned(),
                        value: spec.path.clone(),
                    }),
                }],
                backend_refs: vec![HTTPBackendRef {
                    name: name.clone(),
                    port: wsc.spec.service.port,
                }],
            }],
        },
    );
    route.metadata = metadata;
    Ok(Some(route))
}
