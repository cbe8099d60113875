"""`wsgate-operator render` output and the examples, validated strictly."""

import base64
import subprocess

import pytest
import yaml

from conftest import ROOT, documents, validate

EXAMPLES = sorted((ROOT / "examples").glob("wscluster*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_generated_crd(example):
    for manifest in documents(example.read_text()):
        validate(manifest)


def render(operator_bin, text):
    done = subprocess.run([operator_bin, "render", "-f", "-"], input=text, capture_output=True, text=True, check=True)
    return documents(done.stdout)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_rendered_children_validate_strictly(operator_bin, example):
    manifests = render(operator_bin, example.read_text())
    gateway = [m for m in manifests if m["metadata"]["labels"]["app.kubernetes.io/name"] == "wsgate"]
    kinds = [m["kind"] for m in gateway]
    assert kinds[:7] == ["ServiceAccount", "ConfigMap", "Secret", "Deployment", "Service", "Service",
                         "PodDisruptionBudget"]
    for manifest in manifests:
        validate(manifest)


def test_render_shows_a_public_service_and_a_cluster_ip_admin_service(operator_bin):
    """With `service.type: LoadBalancer`, `render` yields `<name>` with only
    the WebSocket port and that type, and `<name>-admin` with only the admin
    port, ClusterIP; both strictly valid."""
    wsc = yaml.safe_load((ROOT / "examples" / "wscluster-full.yaml").read_text())
    wsc["spec"]["service"] = {"type": "LoadBalancer", "port": 443, "adminPort": 9191,
                              "annotations": {"lb.example.com/scheme": "internet-facing"}}
    validate(wsc)
    name = wsc["metadata"]["name"]
    services = {m["metadata"]["name"]: m for m in render(operator_bin, yaml.safe_dump(wsc))
                if m["kind"] == "Service" and m["metadata"]["labels"]["app.kubernetes.io/name"] == "wsgate"}
    assert sorted(services) == [name, f"{name}-admin"]
    public, admin = services[name], services[f"{name}-admin"]
    assert public["spec"]["type"] == "LoadBalancer"
    assert [(p["name"], p["port"]) for p in public["spec"]["ports"]] == [("ws", 443)]
    assert admin["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in admin["spec"]["ports"]] == [("admin", 9191)]
    assert "annotations" not in admin["metadata"]
    assert admin["spec"]["selector"] == public["spec"]["selector"]
    for service in services.values():
        validate(service)


def test_managed_nats_example_renders_every_broker_child_strictly_valid(operator_bin):
    """The managed NATS example yields the credentials Secret, the config,
    both Services, the StatefulSet and its PodDisruptionBudget, valid against
    the Kubernetes 1.34 schemas; no secret value is in a ConfigMap."""
    manifests = render(operator_bin, (ROOT / "examples" / "wscluster-managed-nats.yaml").read_text())
    broker = [m for m in manifests if m["metadata"]["labels"]["app.kubernetes.io/name"] == "nats"]
    kinds = sorted(m["kind"] for m in broker)
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Secret", "Service", "Service", "StatefulSet"]
    for manifest in broker:
        validate(manifest)
    secret = next(m for m in broker if m["kind"] == "Secret")
    secrets = {key: base64.b64decode(secret["data"][key]).decode() for key in ("route-password", "wsgate.creds")}
    seed = next(line for line in secrets["wsgate.creds"].splitlines() if line.startswith("SU"))
    for config_map in (m for m in manifests if m["kind"] == "ConfigMap"):
        for text in config_map["data"].values():
            assert secrets["route-password"] not in text, config_map["metadata"]["name"]
            assert seed not in text, config_map["metadata"]["name"]
    statefulset = next(m for m in broker if m["kind"] == "StatefulSet")
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_http_route_variant_validates_against_the_gateway_api_crd(operator_bin):
    wsc = yaml.safe_load((ROOT / "examples" / "wscluster-full.yaml").read_text())
    del wsc["spec"]["ingress"]
    wsc["spec"]["httpRoute"] = {
        "parentRefs": [{"name": "public", "namespace": "gateway-system", "sectionName": "https"}],
        "hostnames": ["chat.example.com"],
        "path": "/",
    }
    validate(wsc)
    manifests = render(operator_bin, yaml.safe_dump(wsc))
    routes = [m for m in manifests if m["kind"] == "HTTPRoute"]
    assert len(routes) == 1 and not [m for m in manifests if m["kind"] == "Ingress"]
    for manifest in manifests:
        validate(manifest)


def test_cpu_autoscaling_variant_renders_a_valid_hpa(operator_bin):
    wsc = yaml.safe_load((ROOT / "examples" / "wscluster-full.yaml").read_text())
    wsc["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 8, "targetCpuUtilization": 70}
    validate(wsc)
    manifests = render(operator_bin, yaml.safe_dump(wsc))
    hpa = [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]
    assert hpa and hpa[0]["spec"]["scaleTargetRef"]["kind"] == "WsCluster"
    for manifest in manifests:
        validate(manifest)


def test_network_policy_variant_renders_a_strictly_valid_policy(operator_bin):
    """`networkPolicy.enabled` with an `adminFrom` peer renders a NetworkPolicy
    valid against the Kubernetes 1.34 schemas: ws from anyone, admin only
    from the operator's namespace, labelled backends and the listed peer."""
    wsc = yaml.safe_load((ROOT / "examples" / "wscluster-full.yaml").read_text())
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    wsc["spec"]["networkPolicy"] = {"enabled": True, "adminFrom": [monitoring]}
    validate(wsc)
    manifests = render(operator_bin, yaml.safe_dump(wsc))
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    assert len(policies) == 1
    validate(policies[0])
    public, admin = policies[0]["spec"]["ingress"]
    assert public == {"ports": [{"port": "ws", "protocol": "TCP"}]}
    assert admin["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert admin["from"][0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "wsgate-system"}}}
    assert admin["from"][1] == {"podSelector": {"matchLabels": {"wsgate.io/backend": "true"}}}
    assert admin["from"][2] == monitoring
