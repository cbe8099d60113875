//! The API permissions the operator uses: one table, [`RULES`].
//!
//! The chart's ClusterRole and Roles are tested rule by rule against this
//! table (`wsgate-operator rbac` prints it as JSON for tests/chart), and the
//! controller's tests check every request the mock API server sees against
//! it ([`permits`]), so the chart can neither lack a permission the code
//! uses nor grant one it does not.
//!
//! Server-side apply needs `patch`, and `create` as well when the object
//! does not exist yet; a reflector cache needs `list` and `watch`; `delete`
//! is granted only for the kinds a spec can drop. Secrets are watched as
//! metadata, but Kubernetes has no metadata-only verb: `list` and `watch`
//! on Secrets would let a client read values, which this operator never
//! does (see [`crate::owned_secret`]). `watchNamespaces` bounds that grant
//! to the listed namespaces.

use serde::Serialize;

/// Where a rule is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Where WsClusters and their children live: in the ClusterRole, or
    /// with `watchNamespaces` in one Role per listed namespace.
    Watched,
    /// Cluster-scoped objects: always in the ClusterRole.
    Cluster,
    /// The operator's own namespace (the release's): a Role there.
    Operator,
}

/// One RBAC rule: verbs on resources of one API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The API group (`""` is the core group).
    pub api_group: &'static str,
    /// Resources, with subresources as `wsclusters/status`.
    pub resources: &'static [&'static str],
    /// The verbs the operator uses on them.
    pub verbs: &'static [&'static str],
    /// When not empty, the only object names the rule covers.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub resource_names: &'static [&'static str],
    /// Where the rule is granted.
    pub scope: Scope,
    /// The chart value that the rule depends on, for rules needed only by an
    /// optional feature (`applyCrd`, `leaderElection.enabled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<&'static str>,
    /// What the operator does with it.
    pub why: &'static str,
}

const APPLY: &[&str] = &["list", "watch", "create", "patch"];
const APPLY_DELETE: &[&str] = &["list", "watch", "create", "patch", "delete"];

/// Every permission the operator uses.
pub const RULES: &[Rule] = &[
    Rule {
        api_group: "wsgate.io",
        resources: &["wsclusters"],
        verbs: &["list", "watch"],
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "the WsCluster cache, and the startup check that the CRD is installed",
    },
    Rule {
        api_group: "wsgate.io",
        resources: &["wsclusters/status", "wsclusters/scale"],
        verbs: &["patch"],
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "status writes, and connection-aware autoscaling through /scale",
    },
    Rule {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get", "list", "watch", "create", "patch"],
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "a metadata watch of Secrets (referenced ones exist, owned ones drifted); \
              get reads the values of the operator's own Secrets only; never delete",
    },
    Rule {
        api_group: "",
        resources: &["configmaps", "serviceaccounts", "services"],
        verbs: APPLY,
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "children applied server-side and cached",
    },
    Rule {
        api_group: "apps",
        resources: &["deployments", "statefulsets"],
        verbs: APPLY,
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "the gateways, and a managed NATS (no PersistentVolumeClaims: \
              the StatefulSet controller makes them)",
    },
    Rule {
        api_group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: APPLY,
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "disruption budgets of the gateways and a managed NATS",
    },
    Rule {
        api_group: "networking.k8s.io",
        resources: &["ingresses", "networkpolicies"],
        verbs: APPLY_DELETE,
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "optional children, deleted when the spec drops them",
    },
    Rule {
        api_group: "autoscaling",
        resources: &["horizontalpodautoscalers"],
        verbs: APPLY_DELETE,
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "CPU autoscaling, deleted when the spec drops it",
    },
    Rule {
        api_group: "gateway.networking.k8s.io",
        resources: &["httproutes"],
        verbs: APPLY_DELETE,
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "an optional HTTPRoute, deleted when the spec drops it",
    },
    Rule {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
        resource_names: &[],
        scope: Scope::Watched,
        when: None,
        why: "Events on WsClusters (patch counts a repeated one)",
    },
    Rule {
        api_group: "apiextensions.k8s.io",
        resources: &["customresourcedefinitions"],
        verbs: &["patch"],
        resource_names: &["wsclusters.wsgate.io"],
        scope: Scope::Cluster,
        when: Some("applyCrd"),
        why: "--apply-crd upgrades the WsCluster CRD, and no other",
    },
    Rule {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "patch"],
        resource_names: &[],
        scope: Scope::Operator,
        when: Some("leaderElection.enabled"),
        why: "leader election on a Lease in the operator's namespace",
    },
];

/// What one API request needs: a verb on a resource of a group, in a
/// namespace (none for cluster-scoped objects and cluster-wide lists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `patch`, `update` or `delete`.
    pub verb: &'static str,
    /// The API group.
    pub api_group: String,
    /// The resource, with a subresource as `wsclusters/status`.
    pub resource: String,
    /// The namespace, if any.
    pub namespace: Option<String>,
    /// The object's name, for requests on one object.
    pub name: Option<String>,
}

/// The access an API request (`method` on the path of `uri`) needs; `None`
/// for a path that is not a resource path (discovery, `/version`).
pub fn access(method: &http::Method, uri: &str) -> Option<Access> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some((*namespace).to_owned()), rest)
        }
        rest => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => ((*resource).to_owned(), None),
        [resource, name] => ((*resource).to_owned(), Some((*name).to_owned())),
        [resource, name, subresource] => (
            format!("{resource}/{subresource}"),
            Some((*name).to_owned()),
        ),
        _ => return None,
    };
    let watch = query.split('&').any(|pair| pair == "watch=true");
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if name.is_none() => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PATCH => "patch",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => return None,
    };
    Some(Access {
        verb,
        api_group,
        resource,
        namespace,
        name,
    })
}

/// Whether [`RULES`] grant `access` (any scope: the scopes decide where the
/// chart grants a rule, not whether the operator uses it).
pub fn permits(access: &Access) -> bool {
    RULES.iter().any(|rule| {
        rule.api_group == access.api_group
            && rule.resources.contains(&access.resource.as_str())
            && rule.verbs.contains(&access.verb)
            && (rule.resource_names.is_empty()
                || access
                    .name
                    .as_deref()
                    .is_some_and(|name| rule.resource_names.contains(&name)))
    })
}

/// [`RULES`] as JSON, for `wsgate-operator rbac`.
///
/// # Errors
///
/// [`crate::Error::Serialize`] (not expected: the table is static).
pub fn rules_json() -> crate::Result<String> {
    Ok(serde_json::to_string_pretty(RULES)?)
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    /// Paths map to the verb, group, resource and subresource RBAC checks.
    #[test]
    fn requests_map_to_the_access_rbac_checks() {
        let seen = |method, uri| access(&method, uri).unwrap();
        let status = seen(
            Method::PATCH,
            "/apis/wsgate.io/v1alpha1/namespaces/prod/wsclusters/chat/status?fieldManager=x",
        );
        assert_eq!(
            (
                status.verb,
                status.api_group.as_str(),
                status.resource.as_str()
            ),
            ("patch", "wsgate.io", "wsclusters/status")
        );
        assert_eq!(status.namespace.as_deref(), Some("prod"));
        let list = seen(Method::GET, "/api/v1/secrets?labelSelector=a");
        assert_eq!((list.verb, list.resource.as_str()), ("list", "secrets"));
        assert_eq!(list.namespace, None);
        let watch = seen(
            Method::GET,
            "/api/v1/namespaces/prod/secrets?watch=true&resourceVersion=1",
        );
        assert_eq!(watch.verb, "watch");
        let get = seen(Method::GET, "/api/v1/namespaces/prod/secrets/chat-api-keys");
        assert_eq!(
            (get.verb, get.name.as_deref()),
            ("get", Some("chat-api-keys"))
        );
        let namespace = seen(Method::GET, "/api/v1/namespaces/prod");
        assert_eq!(
            (namespace.resource.as_str(), namespace.name.as_deref()),
            ("namespaces", Some("prod"))
        );
        assert!(access(&Method::GET, "/version").is_none());
    }

    /// The table grants what it lists and nothing beside: no deleting
    /// Secrets, no CRD but the operator's own, nothing on pods.
    #[test]
    fn the_table_grants_exactly_what_it_lists() {
        let can = |method, uri: &str| permits(&access(&method, uri).unwrap());
        assert!(can(Method::GET, "/api/v1/namespaces/prod/secrets/x"));
        assert!(!can(Method::DELETE, "/api/v1/namespaces/prod/secrets/x"));
        assert!(can(
            Method::DELETE,
            "/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies/x"
        ));
        assert!(can(
            Method::PATCH,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/wsclusters.wsgate.io"
        ));
        assert!(!can(
            Method::PATCH,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/other.example.com"
        ));
        assert!(!can(Method::GET, "/api/v1/namespaces/prod/pods"));
        assert!(!can(Method::GET, "/api/v1/namespaces/prod/configmaps/x"));
        for rule in RULES {
            for verb in rule.verbs {
                assert!(
                    ["get", "list", "watch", "create", "patch", "delete"].contains(verb),
                    "{verb}"
                );
            }
            assert!(!rule.resources.contains(&"*") && !rule.verbs.contains(&"*"));
        }
    }
}
