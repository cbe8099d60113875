"""charts/wsgate: lint, render (defaults and every option on), validate."""

import jsonschema
import pytest
import yaml
import helm_python as helm

from conftest import CHART, ROOT, documents, validate

EVERYTHING = yaml.safe_load((ROOT / "tests" / "chart" / "values-everything.yaml").read_text())


def render(values=None):
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name="wsgate", namespace="wsgate-system", is_install=True)
    manifests = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests.extend(documents(text))
    return manifests


def by_kind(manifests, kind):
    return [m for m in manifests if m["kind"] == kind]


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["defaults", "everything"])
def test_chart_lints_clean(values):
    """`helm lint --strict` reports no errors or warnings."""
    report = helm.lint(str(CHART), values, strict=True, namespace="wsgate-system")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["defaults", "everything"])
def test_every_rendered_manifest_validates_strictly(values):
    """Every manifest validates against the Kubernetes schemas (strict), the
    ServiceMonitor against its CRD."""
    manifests = render(values)
    assert manifests
    for manifest in manifests:
        validate(manifest)


def test_everything_renders_every_optional_object():
    kinds = {m["kind"] for m in render(EVERYTHING)}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "Service", "ServiceMonitor", "ConfigMap", "PrometheusRule"} <= kinds


def test_values_schema_refuses_unknown_keys_and_bad_values():
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(EVERYTHING)
    for bad in ({"replicaCount": -1}, {"logFormat": "xml"}, {"typo": 1}, {"leaderElection": {"enable": True}}):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


def test_chart_ships_the_generated_crd():
    """charts/wsgate/crds/ holds exactly crds/wscluster.yaml."""
    assert (CHART / "crds" / "wscluster.yaml").read_bytes() == (ROOT / "crds" / "wscluster.yaml").read_bytes()
    crd = yaml.safe_load((CHART / "crds" / "wscluster.yaml").read_text())
    validate(crd)


def test_operator_image_matches_the_chart_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deployment = by_kind(render(), "Deployment")[0]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/wsgate/wsgate-operator:{chart['appVersion']}"
    cargo = (ROOT / "Cargo.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in cargo, "appVersion follows the workspace version"


def test_rbac_is_least_privilege():
    """No wildcards; Secrets are never deleted; leases only in the release
    namespace; the CRD only by name."""
    manifests = render()
    cluster_role = by_kind(manifests, "ClusterRole")[0]
    for rule in cluster_role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        if "secrets" in rule["resources"]:
            assert "delete" not in rule["verbs"]
        if "customresourcedefinitions" in rule["resources"]:
            assert rule["resourceNames"] == ["wsclusters.wsgate.io"]
        assert "leases" not in rule["resources"]
    role = by_kind(manifests, "Role")[0]
    assert role["metadata"]["namespace"] == "wsgate-system"
    assert role["rules"][0]["resources"] == ["leases"]


def verbs_on(cluster_role, group, resource):
    return {verb for rule in cluster_role["rules"] if group in rule["apiGroups"] and resource in rule["resources"] for verb in rule["verbs"]}


def test_rbac_grants_what_managed_nats_needs_and_no_more():
    """A managed NATS is a StatefulSet, Services, a ConfigMap, a Secret and a
    PodDisruptionBudget: the operator may apply StatefulSets (never delete
    them: spec.nats.managed cannot be removed in place, deleting the
    WsCluster garbage-collects them). PersistentVolumeClaims are created by
    the StatefulSet controller from volumeClaimTemplates, so the operator
    gets no access to them at all."""
    cluster_role = by_kind(render(), "ClusterRole")[0]
    apply_verbs = {"list", "watch", "create", "patch"}
    assert verbs_on(cluster_role, "apps", "statefulsets") == apply_verbs
    for resource in ("configmaps", "services"):
        assert verbs_on(cluster_role, "", resource) == apply_verbs, resource
    assert verbs_on(cluster_role, "", "secrets") == apply_verbs | {"get"}
    assert verbs_on(cluster_role, "policy", "poddisruptionbudgets") == apply_verbs
    assert verbs_on(cluster_role, "", "persistentvolumeclaims") == set()
    assert verbs_on(cluster_role, "", "pods") == set()


def test_rbac_lets_the_operator_apply_and_remove_network_policies():
    """`spec.networkPolicy.enabled` makes the operator apply a NetworkPolicy
    and delete it when disabled: it may do that, and nothing else in
    networking.k8s.io beside Ingresses."""
    cluster_role = by_kind(render(), "ClusterRole")[0]
    optional_verbs = {"list", "watch", "create", "patch", "delete"}
    assert verbs_on(cluster_role, "networking.k8s.io", "networkpolicies") == optional_verbs
    assert verbs_on(cluster_role, "networking.k8s.io", "ingresses") == optional_verbs
    assert verbs_on(cluster_role, "networking.k8s.io", "ingressclasses") == set()


def test_leader_election_off_drops_the_lease_role():
    manifests = render({"leaderElection": {"enabled": False}, "applyCrd": False})
    assert not by_kind(manifests, "Role")
    rules = by_kind(manifests, "ClusterRole")[0]["rules"]
    assert all("customresourcedefinitions" not in rule["resources"] for rule in rules)


def test_wscluster_validation_rejects_unknown_fields():
    """Strict validation of a WsCluster catches a typo."""
    example = yaml.safe_load((ROOT / "examples" / "wscluster.yaml").read_text())
    validate(example)
    example["spec"]["replica"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate(example)


def test_validation_catches_typos_in_built_in_kinds():
    """The strict validator is not a no-op: a misspelt Deployment field fails."""
    deployment = by_kind(render(), "Deployment")[0]
    deployment["spec"]["replica"] = 2
    with pytest.raises(Exception):
        validate(deployment)


def test_dockerfile_builds_the_images_the_chart_and_operator_name():
    """The Dockerfile's targets and documented tags match the chart's operator
    image and the operator's default gateway image."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert "AS gateway" in dockerfile and "AS operator" in dockerfile
    assert f"-t {values['image']['repository']}:{chart['appVersion']}" in dockerfile
    operator_source = (ROOT / "operator" / "src" / "resources" / "mod.rs").read_text()
    assert 'DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/wsgate/wsgate"' in operator_source
    assert f"-t ghcr.io/wsgate/wsgate:{chart['appVersion']}" in dockerfile
    assert "cargo build --release --locked -p wsgate -p wsgate-operator" in dockerfile
