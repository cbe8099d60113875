"""wsgate on a real cluster: install, create, Ready, connect, scale, repair, delete;
then managed NATS: up, messages across pods, a rolling change with recovery,
`kubectl scale wsc`, deletion cascading.

Run through tests/k8s-e2e/run (which skips without KUBECONFIG)."""

import base64
import hashlib
import hmac
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RELEASE = "wsgate-e2e"
OPERATOR_NS = "wsgate-e2e-system"
NS = "wsgate-e2e"
SECRET = "e2e-secret-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:16]
GROUP, VERSION, PLURAL = "wsgate.io", "v1alpha1", "wsclusters"

if not os.environ.get("KUBECONFIG"):
    pytest.skip("KUBECONFIG is not set", allow_module_level=True)

import helm_python as helm  # noqa: E402
from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from kubernetes.stream import portforward  # noqa: E402


def wait_for(what, predicate, timeout=300, interval=2):
    """Polls `predicate` until it returns a truthy value or the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except ApiException as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def jwt(sub):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 600}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


@pytest.fixture(scope="module")
def cluster():
    config.load_kube_config()
    core, apps, custom = client.CoreV1Api(), client.AppsV1Api(), client.CustomObjectsApi()
    values = {}
    if image := os.environ.get("WSGATE_E2E_OPERATOR_IMAGE"):
        repository, _, tag = image.rpartition(":")
        values["image"] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}
    if image := os.environ.get("WSGATE_E2E_GATEWAY_IMAGE"):
        values["gatewayImage"] = image
    helm_config = helm.Config(namespace=OPERATOR_NS)
    helm_config.install(str(ROOT / "charts" / "wsgate"), RELEASE, values, namespace=OPERATOR_NS,
                        create_namespace=True, wait="watcher", timeout=300)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    except ApiException as error:
        if error.status != 409:
            raise
    core.create_namespaced_secret(NS, client.V1Secret(
        metadata=client.V1ObjectMeta(name="chat-jwt"), string_data={"secret": SECRET}))
    yield core, apps, custom
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "chat")
    except ApiException:
        pass
    core.delete_namespace(NS)
    helm_config.uninstall(RELEASE, ignore_not_found=True, wait="watcher", timeout=300)


def wsc(custom):
    return custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "chat")


def condition(obj, type_):
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


def test_wscluster_becomes_ready_with_owned_children(cluster):
    core, apps, custom = cluster
    manifest = yaml.safe_load((ROOT / "examples" / "wscluster.yaml").read_text())
    if nats := os.environ.get("WSGATE_E2E_NATS_URL"):
        manifest["spec"]["nats"] = {"url": nats}
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, manifest)
    ready = wait_for("Ready", lambda: condition(wsc(custom), "Ready").get("status") == "True" and wsc(custom))
    assert ready["status"]["observedGeneration"] == ready["metadata"]["generation"]
    assert condition(ready, "Degraded")["status"] == "False"
    deployment = apps.read_namespaced_deployment("chat", NS)
    assert deployment.metadata.owner_references[0].kind == "WsCluster"
    assert ready["status"]["endpoint"] == "ws://chat.wsgate-e2e.svc:80/ws"


def test_client_with_a_signed_token_connects_to_a_gateway(cluster):
    """A WebSocket upgrade with an HS256 token signed with the WsCluster's
    Secret succeeds on a gateway pod (port-forward: the Python client cannot
    forward to a Service)."""
    core, _, _ = cluster
    pods = core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/instance=chat")
    pod = next(p for p in pods.items if p.status.phase == "Running")
    forward = portforward(core.connect_get_namespaced_pod_portforward, pod.metadata.name, NS, ports="8080")
    sock = forward.socket(8080)
    sock.setblocking(True)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?token={jwt('e2e-user')} HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    answer = sock.recv(4096).decode(errors="replace")
    sock.close()
    assert answer.startswith("HTTP/1.1 101"), answer


def test_scale_through_the_scale_subresource(cluster):
    _, apps, custom = cluster
    target = 3 if os.environ.get("WSGATE_E2E_NATS_URL") else 0
    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, NS, PLURAL, "chat", {"spec": {"replicas": target}})
    wait_for(f"{target} replicas", lambda: apps.read_namespaced_deployment("chat", NS).spec.replicas == target)
    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, NS, PLURAL, "chat", {"spec": {"replicas": 1}})
    wait_for("1 ready replica", lambda: wsc(custom).get("status", {}).get("readyReplicas") == 1)


def test_deleted_child_is_repaired(cluster):
    core, _, _ = cluster
    core.delete_namespaced_service("chat", NS)
    wait_for("the Service to come back", lambda: core.read_namespaced_service("chat", NS))


def test_delete_removes_the_fleet(cluster):
    _, apps, custom = cluster
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "chat")

    def gone():
        try:
            apps.read_namespaced_deployment("chat", NS)
            return False
        except ApiException as error:
            return error.status == 404

    wait_for("the Deployment to be garbage-collected", gone)


# Managed NATS: examples/wscluster-managed-nats.yaml comes up (StatefulSet ready,
# BrokerReady), a message crosses gateway pods, a spec change rolls the gateways
# while a client recovers what it missed, `kubectl scale wsc` scales, and deleting
# the WsCluster cascades. These run after the tests above, on the same install.

NAME = "chat"


def fleet(custom):
    return custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)


def gateway_pods(core):
    pods = core.list_namespaced_pod(NS, label_selector=f"app.kubernetes.io/name=wsgate,app.kubernetes.io/instance={NAME}")
    return [p for p in pods.items if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


class PortForward:
    """`kubectl port-forward pod/<pod> <port>:8080`, stopped on exit."""

    def __init__(self, pod, port):
        self.process = subprocess.Popen(["kubectl", "-n", NS, "port-forward", f"pod/{pod}", f"{port}:8080"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        assert "Forwarding" in line, line

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=10)


def quickstart(*args):
    """The quickstart's client steps (tests/k8s-e2e/quickstart.py)."""
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "k8s-e2e" / "quickstart.py"), *args,
                           "--secret", SECRET], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def managed(cluster):
    """The managed NATS example in the suite's namespace, Ready."""
    core, apps, custom = cluster
    # The first WsCluster of the same name was deleted above: wait until its
    # children are collected, so the new one does not meet its leftovers.
    def collected():
        try:
            core.read_namespaced_service(NAME, NS)
            return False
        except ApiException as error:
            return error.status == 404

    wait_for("the first WsCluster's children to be collected", collected)
    manifest = yaml.safe_load((ROOT / "examples" / "wscluster-managed-nats.yaml").read_text())
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, manifest)
    wait_for("BrokerReady", lambda: condition(fleet(custom), "BrokerReady").get("status") == "True", timeout=600)
    wait_for("Ready", lambda: condition(fleet(custom), "Ready").get("status") == "True", timeout=600)
    return core, apps, custom


def test_managed_nats_comes_up_owned_and_ready(managed):
    core, apps, custom = managed
    statefulset = apps.read_namespaced_stateful_set(f"{NAME}-nats", NS)
    assert statefulset.metadata.owner_references[0].kind == "WsCluster"
    assert statefulset.status.ready_replicas == 3
    assert condition(fleet(custom), "BrokerReady")["message"] == "3/3 NATS servers ready"
    claims = core.list_namespaced_persistent_volume_claim(NS, label_selector="app.kubernetes.io/name=nats")
    assert len(claims.items) == 3


def test_messages_cross_pods_and_a_client_recovers_through_a_rolling_change(managed, tmp_path):
    core, apps, custom = managed
    pods = gateway_pods(core)
    assert len(pods) >= 2
    state = str(tmp_path / "state.json")
    with PortForward(pods[0].metadata.name, 28080), PortForward(pods[1].metadata.name, 28081):
        out = quickstart("cross", "--a", "ws://127.0.0.1:28080/ws", "--b", "ws://127.0.0.1:28081/ws", "--state", state)
        assert "across pods" in out
    before = apps.read_namespaced_deployment(NAME, NS).spec.template.metadata.annotations["wsgate.io/config-checksum"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME, {"spec": {"limits": {"maxConnections": 20000}}})

    def rolled():
        deployment = apps.read_namespaced_deployment(NAME, NS)
        changed = deployment.spec.template.metadata.annotations["wsgate.io/config-checksum"] != before
        return changed and condition(fleet(custom), "Ready").get("status") == "True" and fleet(custom)["status"]["observedGeneration"] == fleet(custom)["metadata"]["generation"]

    wait_for("the gateways rolled and Ready", rolled, timeout=600)
    pods = gateway_pods(core)
    with PortForward(pods[0].metadata.name, 28082):
        out = quickstart("recover", "--b", "ws://127.0.0.1:28082/ws", "--state", state)
        assert "recovered=True" in out


def test_kubectl_scale_wsc_scales_the_gateways(managed):
    _, apps, custom = managed
    subprocess.run(["kubectl", "-n", NS, "scale", f"wsc/{NAME}", "--replicas=2"], check=True)
    wait_for("2 replicas", lambda: apps.read_namespaced_deployment(NAME, NS).spec.replicas == 2)
    wait_for("2 ready", lambda: fleet(custom).get("status", {}).get("readyReplicas") == 2)


def test_deleting_the_wscluster_cascades_to_nats(managed):
    _, apps, custom = managed
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)

    def gone(read, name):
        try:
            read(name, NS)
            return False
        except ApiException as error:
            return error.status == 404

    wait_for("the Deployment to go", lambda: gone(apps.read_namespaced_deployment, NAME))
    wait_for("the StatefulSet to go", lambda: gone(apps.read_namespaced_stateful_set, f"{NAME}-nats"))
