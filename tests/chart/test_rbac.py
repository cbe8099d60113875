"""The chart's RBAC against the operator's own table of permissions.

The table comes from the code: `wsgate-operator rbac` prints
operator/src/rbac.rs's RULES, the same table the controller's mock-API
tests check every request against. Each rendered ClusterRole and Role must
hold exactly the table's rules for its scope, rule by rule: nothing the
operator uses is missing, and nothing it does not use is granted."""

import json
import subprocess

import pytest

from conftest import validate
from test_chart import by_kind, render

RELEASE_NAMESPACE = "wsgate-system"


@pytest.fixture(scope="module")
def table(operator_bin):
    done = subprocess.run([operator_bin, "rbac"], capture_output=True, text=True, check=True)
    rules = json.loads(done.stdout)
    assert rules, "the operator printed no rules"
    return rules


def normalized(rule):
    """A rule as a comparable value: group, resources, verbs, names."""
    return (
        tuple(sorted(rule["apiGroups"])),
        tuple(sorted(rule["resources"])),
        tuple(sorted(rule["verbs"])),
        tuple(sorted(rule.get("resourceNames", []))),
    )


def expected(table, scope, values):
    """The table's rules of `scope` that `values` enable, as rendered rules."""
    def enabled(rule):
        flag = rule.get("when")
        if flag is None:
            return True
        node = values
        for part in flag.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node is True

    rules = []
    for rule in table:
        if rule["scope"] == scope and enabled(rule):
            rendered = {"apiGroups": [rule["apiGroup"]], "resources": rule["resources"], "verbs": rule["verbs"]}
            if rule.get("resourceNames"):
                rendered["resourceNames"] = rule["resourceNames"]
            rules.append(rendered)
    return sorted(normalized(rule) for rule in rules)


def rules_of(role):
    return sorted(normalized(rule) for rule in role["rules"])


def values_with(**changes):
    """The chart's defaults (as the tests need them) with `changes`."""
    values = {"applyCrd": True, "leaderElection": {"enabled": True}, "watchNamespaces": []}
    values.update(changes)
    return values


CASES = {
    "defaults": values_with(),
    "no-crd-no-leader": values_with(applyCrd=False, leaderElection={"enabled": False}),
    "namespaced": values_with(watchNamespaces=["team-a", "team-b"]),
    "namespaced-no-crd": values_with(watchNamespaces=["team-a"], applyCrd=False),
}


@pytest.mark.parametrize("name", CASES)
def test_rendered_rbac_is_the_operators_table_rule_by_rule(table, name):
    """Cluster-wide, the ClusterRole holds every rule where WsClusters live
    plus the cluster-scoped ones; with watchNamespaces, each listed
    namespace gets a Role with exactly the former and the ClusterRole keeps
    only the latter (none at all without applyCrd). The Lease Role in the
    release namespace holds the operator-namespace rules."""
    values = CASES[name]
    manifests = render(values)
    for manifest in manifests:
        validate(manifest)
    watched = expected(table, "watched", values)
    cluster = expected(table, "cluster", values)
    namespaces = values["watchNamespaces"]

    cluster_roles = by_kind(manifests, "ClusterRole")
    want_cluster = cluster if namespaces else sorted(watched + cluster)
    if want_cluster:
        assert len(cluster_roles) == 1
        assert rules_of(cluster_roles[0]) == want_cluster
        [binding] = by_kind(manifests, "ClusterRoleBinding")
        assert binding["roleRef"]["name"] == cluster_roles[0]["metadata"]["name"]
    else:
        assert not cluster_roles and not by_kind(manifests, "ClusterRoleBinding")

    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(manifests, "Role")}
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in by_kind(manifests, "RoleBinding")}
    assert roles.keys() == bindings.keys()
    for key, binding in bindings.items():
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": key[1]}
        assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE
    lease_roles = [r for r in roles.values() if r["metadata"]["name"].endswith("-leader-election")]
    watched_roles = [r for r in roles.values() if not r["metadata"]["name"].endswith("-leader-election")]
    assert sorted(r["metadata"]["namespace"] for r in watched_roles) == sorted(namespaces)
    for role in watched_roles:
        assert rules_of(role) == watched, role["metadata"]["namespace"]
    operator_rules = expected(table, "operator", values)
    if operator_rules:
        [lease_role] = lease_roles
        assert lease_role["metadata"]["namespace"] == RELEASE_NAMESPACE
        assert rules_of(lease_role) == operator_rules
    else:
        assert not lease_roles


def test_the_table_covers_every_kind_the_operator_writes(table):
    """Every child kind, StatefulSets, NetworkPolicies, PDBs and Leases
    included, has the verbs server-side apply and a cache need; Secrets are
    never deleted; nothing is a wildcard."""
    grants = {(rule["apiGroup"], resource): set(rule["verbs"]) for rule in table for resource in rule["resources"]}
    apply = {"list", "watch", "create", "patch"}
    for key in [("", "configmaps"), ("", "services"), ("", "serviceaccounts"), ("", "secrets"),
                ("apps", "deployments"), ("apps", "statefulsets"), ("policy", "poddisruptionbudgets"),
                ("networking.k8s.io", "ingresses"), ("networking.k8s.io", "networkpolicies"),
                ("autoscaling", "horizontalpodautoscalers"), ("gateway.networking.k8s.io", "httproutes")]:
        assert apply <= grants[key], key
    assert "delete" not in grants[("", "secrets")]
    assert {"get", "create", "patch"} <= grants[("coordination.k8s.io", "leases")]
    for rule in table:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]


def test_namespaced_mode_tells_the_operator_its_namespaces():
    """watchNamespaces reaches the operator as WSGATE_OPERATOR_WATCH_NAMESPACES
    (comma-separated); without it the variable is absent (every namespace)."""
    def env(values):
        deployment = by_kind(render(values), "Deployment")[0]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert env(values_with(watchNamespaces=["team-a", "team-b"]))["WSGATE_OPERATOR_WATCH_NAMESPACES"] == "team-a,team-b"
    assert "WSGATE_OPERATOR_WATCH_NAMESPACES" not in env(values_with())
