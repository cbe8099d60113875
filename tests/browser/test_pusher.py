"""A browser page with pusher-js (npm, its web build) against a real wsgate serving a
`[pusher]` app (docs/pusher.md), in Chromium.

The page is served by a small HTTP server of the test on loopback, which also
serves pusher-js's `dist/web/pusher.min.js` from tests/pusher/node_modules (npm ci
by tests/run, or by tests/browser/run when missing) and the channel authorization
endpoint pusher-js's `channelAuthorization` calls: it signs with the PyPI `pusher`
SDK's `authenticate`, as an application's auth endpoint does. Events are triggered
through wsgate's Pusher HTTP API on the admin listener with the same SDK, which
signs the requests as Pusher specifies.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pusher
import pytest

from conftest import ARTIFACTS, ROOT, Gateway, launch, stop, wsgate_binary

PUSHER_JS = ROOT / "tests" / "pusher" / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"
APP_ID = "4242"
APP_KEY = "browser-app-key"
APP_SECRET = "browser-app-secret"
TIMEOUT_MS = 15000

# One app; client events are off, since the page sends none.
GATEWAY_CONFIG = """\
version = 1

[pusher]
[[pusher.apps]]
id = "{id}"
key = "{key}"
secret_file = "{secret_file}"
enable_client_messages = false
"""

# The page connects to the gateway named in its query (`ws=host:port`), subscribes to
# the channels named in `channels`, and records what it sees on `window.seen`.
PAGE = """\
<!doctype html>
<html>
<head><meta charset="utf-8"><title>pusher-js on wsgate</title><link rel="icon" href="data:,"></head>
<body>
<ul id="events"></ul>
<script src="/pusher.min.js"></script>
<script>
  const params = new URLSearchParams(location.search);
  const [wsHost, wsPort] = params.get('ws').split(':');
  window.seen = { states: [], subscribed: [], errors: [], events: [] };
  const client = new Pusher(params.get('key'), {
    cluster: 'unused',
    wsHost,
    wsPort: Number(wsPort),
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax' },
  });
  client.connection.bind('state_change', (change) => window.seen.states.push(change.current));
  for (const name of params.get('channels').split(',')) {
    const channel = client.subscribe(name);
    channel.bind('pusher:subscription_succeeded', () => window.seen.subscribed.push(name));
    channel.bind('pusher:subscription_error', (error) =>
      window.seen.errors.push({ channel: name, error: JSON.stringify(error) }));
    channel.bind('greeting', (data) => {
      window.seen.events.push({ channel: name, data });
      const item = document.createElement('li');
      item.textContent = name + ': ' + JSON.stringify(data);
      document.getElementById('events').append(item);
    });
  }
  window.socketId = () => client.connection.socket_id;
</script>
</body>
</html>
"""


def sdk(gateway: Gateway) -> pusher.Pusher:
    """The PyPI SDK pointed at the gateway's admin listener, where wsgate serves Pusher's HTTP API."""
    host, port = gateway.admin.rsplit(":", 1)
    return pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=host, port=int(port), ssl=False
    )


@dataclass
class Site:
    """The page's HTTP server: the page, pusher-js, and the channel authorization endpoint."""

    server: http.server.ThreadingHTTPServer
    # Channels the auth endpoint signed, in order.
    authorized: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"


def serve_site(signer: pusher.Pusher) -> Site:
    """Starts the page's server on a free loopback port; the caller shuts it down."""
    script = PUSHER_JS.read_bytes()
    site: Site

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass

        def reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/":
                self.reply(200, "text/html; charset=utf-8", PAGE.encode())
            elif path == "/pusher.min.js":
                self.reply(200, "text/javascript", script)
            else:
                self.reply(404, "text/plain", b"not found")

        def do_POST(self):
            if urllib.parse.urlsplit(self.path).path != "/pusher/auth":
                self.reply(404, "text/plain", b"not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            channel = form.get("channel_name", [""])[0]
            socket_id = form.get("socket_id", [""])[0]
            # An application checks the user may use the channel here; the test allows
            # the private channel it opens and nothing else.
            if channel != "private-browser":
                self.reply(403, "application/json", b'{"error":"forbidden"}')
                return
            site.authorized.append(channel)
            body = json.dumps(signer.authenticate(channel=channel, socket_id=socket_id))
            self.reply(200, "application/json", body.encode())

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site = Site(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return site


@pytest.fixture
def pusher_gateway(tmp_path):
    """One wsgate serving the test's Pusher app (in-process broker, no NATS)."""
    binary = wsgate_binary()
    if not binary.exists():
        pytest.fail(f"{binary} does not exist: run `cargo build -p wsgate` (tests/browser/run does)")
    secret_file = tmp_path / "pusher-secret"
    secret_file.write_text(APP_SECRET)
    config = tmp_path / "wsgate.toml"
    config.write_text(GATEWAY_CONFIG.format(id=APP_ID, key=APP_KEY, secret_file=secret_file))
    gateway = launch(
        binary,
        ["--config", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        "pusher",
    )
    try:
        yield gateway
    finally:
        stop(gateway.process)


@pytest.fixture
def site(pusher_gateway):
    """The page's server, signing with the app's secret; shut down after the test."""
    if not PUSHER_JS.exists():
        pytest.fail(
            f"{PUSHER_JS} is missing: `npm ci --prefix tests/pusher` (tests/run and tests/browser/run do)"
        )
    site = serve_site(sdk(pusher_gateway))
    try:
        yield site
    finally:
        site.server.shutdown()
        site.server.server_close()


def test_pusher_js_in_a_browser_receives_public_and_private_events_triggered_through_the_http_api(
    pusher_gateway, site, browser
):
    """pusher-js in Chromium connects to /app/{key}, subscribes to a public channel and, through
    the page's auth endpoint, to a private one; events the SDK triggers on each reach the page,
    and a trigger excluding the page's socket id does not."""
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        query = urllib.parse.urlencode(
            {"ws": pusher_gateway.public, "key": APP_KEY, "channels": "browser-news,private-browser"}
        )
        page.goto(f"{site.origin}/?{query}")
        page.wait_for_function(
            "() => window.seen.subscribed.length === 2 || window.seen.errors.length > 0",
            timeout=TIMEOUT_MS,
        )
        seen = page.evaluate("window.seen")
        assert seen["errors"] == [], seen
        assert sorted(seen["subscribed"]) == ["browser-news", "private-browser"]
        assert "connected" in seen["states"]
        assert site.authorized == ["private-browser"]

        server = sdk(pusher_gateway)
        socket_id = page.evaluate("window.socketId()")
        # Excluded by socket id: the page must not see it, and the next event shows it was
        # not merely late (events of one publisher arrive in order).
        server.trigger(["browser-news"], "greeting", {"n": 0}, socket_id=socket_id)
        server.trigger(["browser-news"], "greeting", {"n": 1, "text": "hello, public"})
        server.trigger(["private-browser"], "greeting", {"n": 2, "text": "hello, private"})
        page.wait_for_function("() => window.seen.events.length >= 2", timeout=TIMEOUT_MS)
        events = sorted(page.evaluate("window.seen.events"), key=lambda event: event["data"]["n"])
        assert events == [
            {"channel": "browser-news", "data": {"n": 1, "text": "hello, public"}},
            {"channel": "private-browser", "data": {"n": 2, "text": "hello, private"}},
        ]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(ARTIFACTS) / "pusher-js-page.png"), full_page=True)
        assert errors == [], f"console errors: {errors}"
    finally:
        context.close()
