"""`wsgate-operator render` output and the examples, validated strictly."""

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
    kinds = [m["kind"] for m in manifests]
    assert kinds[:6] == ["ServiceAccount", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"]
    for manifest in manifests:
        validate(manifest)


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
