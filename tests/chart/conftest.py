"""Shared helpers of the chart tests: rendering, and strict validation of
built-in kinds (kubernetes-validate) and custom resources (their CRDs)."""

import copy
import os
import pathlib
import shutil
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "wsgate"
TESTDATA = pathlib.Path(__file__).resolve().parent / "testdata"
KUBE_VERSION = "1.34"

# CRDs of the custom kinds the chart and the operator write.
CRD_FILES = {
    ("wsgate.io", "WsCluster"): ROOT / "crds" / "wscluster.yaml",
    ("gateway.networking.k8s.io", "HTTPRoute"): TESTDATA / "httproute-crd.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): TESTDATA / "servicemonitor-crd.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): TESTDATA / "prometheusrule-crd.yaml",
}


def strict_schema(schema):
    """A CRD's structural schema as strict JSON Schema: unknown fields are
    errors (as kubectl's strict field validation reports them), `nullable`
    and `x-kubernetes-int-or-string` become their JSON Schema forms."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return node
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        if "properties" in node:
            node["properties"] = {k: walk(v) for k, v in node["properties"].items()}
            if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
                node["additionalProperties"] = False
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = walk(node["additionalProperties"])
        if isinstance(node.get("items"), dict):
            node["items"] = walk(node["items"])
        return node

    return walk(schema)


def crd_schema(group, kind, version):
    crd = yaml.safe_load(CRD_FILES[(group, kind)].read_text())
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            schema = strict_schema(served["schema"]["openAPIV3Schema"])
            schema.setdefault("properties", {})
            schema["properties"]["apiVersion"] = {"type": "string"}
            schema["properties"]["kind"] = {"type": "string"}
            schema["properties"]["metadata"] = {"type": "object"}
            schema["additionalProperties"] = False
            return schema
    raise AssertionError(f"{kind}: version {version} not served")


def validate(manifest):
    """Validates one manifest strictly; raises on any problem."""
    group, _, version = manifest["apiVersion"].rpartition("/")
    if (group, manifest["kind"]) in CRD_FILES:
        jsonschema.validate(manifest, crd_schema(group, manifest["kind"], version))
    else:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def documents(text):
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def operator_bin():
    """The `wsgate-operator` binary, built with cargo; tests needing it are
    skipped (with a reason) where cargo is absent."""
    explicit = os.environ.get("WSGATE_OPERATOR_BIN")
    if explicit:
        return explicit
    if shutil.which("cargo") is None:
        pytest.skip("cargo not found: cannot build wsgate-operator")
    subprocess.run(["cargo", "build", "-q", "-p", "wsgate-operator"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "wsgate-operator")


@pytest.fixture(scope="session")
def wsgate_bin():
    """The `wsgate` binary (WSGATE_BIN, as tests/run passes it), built with
    cargo otherwise; tests needing it are skipped (with a reason) where cargo
    is absent."""
    explicit = os.environ.get("WSGATE_BIN")
    if explicit:
        return explicit
    if shutil.which("cargo") is None:
        pytest.skip("cargo not found: cannot build wsgate")
    subprocess.run(["cargo", "build", "-q", "-p", "wsgate"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "wsgate")
