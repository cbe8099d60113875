"""The chart's monitoring (issue 19): the gateways' ServiceMonitor, the Grafana
dashboard ConfigMap and the PrometheusRule, behind values flags. Every
expression is parsed by the real PromQL parser (`promtool`, Debian's
`prometheus` package), the alerts are unit-tested with `promtool test rules`,
and every metric name the dashboard and the rules use is checked against the
names a real gateway and the operator export."""

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import ROOT
from test_chart import EVERYTHING, by_kind, render

ALERTS = {
    "WsgateFleetNotReady",
    "WsgateNatsUnavailable",
    "WsgateHistoryUnavailable",
    "WsgateSlowConsumerClosesRising",
    "WsgateCapacityRefusals",
    "WsgateFileDescriptorsNearLimit",
    "WsgateDrainNotFinishing",
}

# Grafana's variables, replaced by values PromQL accepts.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$namespace": ".*",
    "$wscluster": ".*",
    "$operator_namespace": ".*",
}

METRIC = re.compile(r"\b(?:wsgate|process)_[a-zA-Z0-9_]+")


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: tests/chart/run installs Debian's prometheus package")
    return path


def monitoring(values=EVERYTHING):
    manifests = render(values)
    dashboards = [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")]
    rules = by_kind(manifests, "PrometheusRule")
    monitors = {m["metadata"]["name"]: m for m in by_kind(manifests, "ServiceMonitor")}
    return dashboards, rules, monitors


def dashboard():
    dashboards, _, _ = monitoring()
    (config_map,) = dashboards
    (text,) = config_map["data"].values()
    return json.loads(text)


def dashboard_expressions(board):
    """Every PromQL expression of the dashboard: panel targets and variable
    queries (`label_values(metric, label)` queries yield their selector)."""
    expressions = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expressions.append(target["expr"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert match, query
            expressions.append(match.group(1))
    return expressions


def rule_expressions():
    _, (rule,), _ = monitoring()
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def substitute(expression):
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expression = expression.replace(variable, value)
    assert "$" not in expression, expression
    return expression


def test_monitoring_objects_are_off_by_default():
    dashboards, rules, monitors = monitoring(None)
    assert not dashboards and not rules and not monitors


def test_dashboard_configmap_is_in_the_form_the_grafana_sidecar_loads():
    """One ConfigMap labelled `grafana_dashboard: "1"`, in the namespace the
    values name, holding one dashboard JSON with a stable uid."""
    dashboards, _, _ = monitoring()
    (config_map,) = dashboards
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "wsgate"}
    (key,) = config_map["data"]
    assert key.endswith(".json")
    board = dashboard()
    assert board["uid"] == "wsgate-overview"
    assert all("expr" in target for panel in board["panels"] for target in panel.get("targets", []))


def test_dashboard_has_operator_panels_for_reconcile_rate_errors_and_duration():
    expressions = dashboard_expressions(dashboard())
    for metric in (
        "wsgate_operator_reconcile_total",
        "wsgate_operator_reconcile_errors_total",
        "wsgate_operator_reconcile_duration_seconds_bucket",
    ):
        assert any(metric in expression for expression in expressions), metric


def test_prometheus_rule_alerts_on_everything_the_issue_lists():
    _, (rule,), _ = monitoring()
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert alerts == ALERTS
    assert rule["metadata"]["labels"]["release"] == "prometheus"


def test_gateway_service_monitor_scrapes_the_admin_port_in_the_watched_namespaces():
    """The gateways' ServiceMonitor selects the operator's gateway Services
    (labels of `operator/src/resources`) at the `admin` port, which only the
    `<name>-admin` Service has, and labels series with their WsCluster."""
    _, _, monitors = monitoring()
    gateways = monitors["wsgate-gateways"]
    assert gateways["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert gateways["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "wsgate",
        "app.kubernetes.io/component": "gateway",
        "app.kubernetes.io/managed-by": "wsgate-operator",
    }
    (endpoint,) = gateways["spec"]["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert endpoint["relabelings"][0]["targetLabel"] == "wscluster"
    service = (ROOT / "operator" / "src" / "resources" / "service.rs").read_text()
    assert "ADMIN_PORT_NAME" in service
    resources = (ROOT / "operator" / "src" / "resources" / "mod.rs").read_text()
    assert 'pub const ADMIN_PORT_NAME: &str = "admin";' in resources
    everywhere = {**EVERYTHING, "watchNamespaces": []}
    _, _, monitors = monitoring(everywhere)
    assert monitors["wsgate-gateways"]["spec"]["namespaceSelector"] == {"any": True}


def test_every_expression_parses_with_promtool(tmp_path):
    """`promtool check rules` parses the PrometheusRule's groups as Prometheus
    loads them, and every dashboard expression as a recording rule."""
    _, (rule,), _ = monitoring()
    rules_file = tmp_path / "alerts.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    dashboard_file = tmp_path / "dashboard.yaml"
    dashboard_file.write_text(yaml.safe_dump({"groups": [{
        "name": "dashboard",
        "rules": [{"record": f"dashboard:expression_{i}", "expr": substitute(expression)}
                  for i, expression in enumerate(dashboard_expressions(dashboard()))],
    }]}))
    done = subprocess.run([promtool(), "check", "rules", str(rules_file), str(dashboard_file)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_fire_on_the_series_they_watch(tmp_path):
    """`promtool test rules` with the default thresholds: each alert fires on
    the series it is about, with the labels routing needs, and not on healthy
    series or before its `for`. (Annotations are prose, left out here.)"""
    _, (rule,), _ = monitoring({"prometheusRule": {"enabled": True}})
    groups = rule["spec"]["groups"]
    for group in groups:
        for r in group["rules"]:
            r.pop("annotations", None)
    rules_file = tmp_path / "alerts.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    gateway = 'namespace="prod",wscluster="chat",pod="chat-0"'
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'wsgate_operator_wscluster_ready{namespace="prod",wscluster="chat"}', "values": "0x30"},
                {"series": 'wsgate_operator_wscluster_ready{namespace="prod",wscluster="ok"}', "values": "1x30"},
                {"series": f"wsgate_broker_connected{{{gateway}}}", "values": "0x30"},
                {"series": f'wsgate_history_available{{{gateway},exported_namespace="hist"}}', "values": "0x30"},
                {"series": f"wsgate_slow_consumer_closes_total{{{gateway}}}", "values": "0+300x30"},
                {"series": f'wsgate_upgrades_refused_total{{{gateway},code="503",reason="capacity"}}',
                 "values": "0+10x30"},
                {"series": f'wsgate_upgrades_refused_total{{{gateway},code="503",reason="draining"}}',
                 "values": "0+10x30"},
                {"series": f"process_open_fds{{{gateway}}}", "values": "900x30"},
                {"series": f"process_max_fds{{{gateway}}}", "values": "1000x30"},
                {"series": f"wsgate_draining{{{gateway}}}", "values": "1x30"},
                {"series": f"wsgate_connections{{{gateway}}}", "values": "5x30"},
            ],
            "alert_rule_test": [
                {"eval_time": "25m", "alertname": "WsgateFleetNotReady",
                 "exp_alerts": [alert("critical", 'namespace="prod",wscluster="chat"')]},
                {"eval_time": "25m", "alertname": "WsgateNatsUnavailable",
                 "exp_alerts": [alert("critical", gateway)]},
                {"eval_time": "25m", "alertname": "WsgateHistoryUnavailable",
                 "exp_alerts": [alert("warning", gateway + ',exported_namespace="hist"')]},
                {"eval_time": "25m", "alertname": "WsgateSlowConsumerClosesRising",
                 "exp_alerts": [alert("warning", 'namespace="prod",wscluster="chat"')]},
                {"eval_time": "25m", "alertname": "WsgateCapacityRefusals",
                 "exp_alerts": [alert("warning", 'namespace="prod",wscluster="chat"')]},
                {"eval_time": "25m", "alertname": "WsgateFileDescriptorsNearLimit",
                 "exp_alerts": [alert("warning", gateway)]},
                {"eval_time": "25m", "alertname": "WsgateDrainNotFinishing",
                 "exp_alerts": [alert("warning", gateway)]},
                {"eval_time": "5m", "alertname": "WsgateDrainNotFinishing", "exp_alerts": []},
                {"eval_time": "1m", "alertname": "WsgateNatsUnavailable", "exp_alerts": []},
            ],
        }],
    }
    tests_file = tmp_path / "tests.yaml"
    tests_file.write_text(yaml.safe_dump(tests))
    done = subprocess.run([promtool(), "test", "rules", str(tests_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def alert(severity, labels):
    """An expected alert: the series' `labels` (a selector's body) and its severity."""
    expected = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    expected["severity"] = severity
    return {"exp_labels": expected}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read().decode()


def exported_names(exposition):
    """The series names Prometheus stores for an OpenMetrics exposition."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names |= {
                "counter": {f"{name}_total"},
                "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"},
                "info": {f"{name}_info"},
            }.get(kind, {name})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def exported(wsgate_bin, operator_bin, tmp_path_factory):
    """The metric names a real gateway serves at /metrics (started on
    loopback with a history namespace, stopped after the scrape) and the
    operator exports."""
    public, admin = free_port(), free_port()
    config = tmp_path_factory.mktemp("gateway") / "wsgate.toml"
    config.write_text("version = 1\n\n[namespaces.chat]\nhistory_size = 10\n")
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    gateway = subprocess.Popen(
        [wsgate_bin, "--config", str(config), "--listen", f"127.0.0.1:{public}",
         "--admin-listen", f"127.0.0.1:{admin}", "--allow-anonymous"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _ = get(f"http://127.0.0.1:{admin}/readyz")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not become ready: {gateway.stderr.read().decode()}")
            time.sleep(0.05)
        _, text = get(f"http://127.0.0.1:{admin}/metrics")
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()
    operator = subprocess.run([operator_bin, "metrics"], capture_output=True, text=True, check=True)
    return exported_names(text) | exported_names(operator.stdout)


def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(exported):
    used = {}
    for expression in dashboard_expressions(dashboard()):
        for name in METRIC.findall(expression):
            used.setdefault(name, "dashboard")
    for expression in rule_expressions():
        for name in METRIC.findall(expression):
            used.setdefault(name, "rules")
    assert len(used) > 20, used
    missing = {name: where for name, where in used.items() if name not in exported}
    assert not missing, f"used but not exported: {missing}"
