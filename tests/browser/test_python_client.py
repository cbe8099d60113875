"""examples/python_client.py stops on a refused token: it prints the server's
error and exits with status 1 instead of waiting forever for a welcome, for a
token the server cannot read and for one signed with another key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, launch, stop, wsgate_binary

SECRET = "an-hs256-secret-of-at-least-32-bytes!"

# HS256 over {"sub":"mallory","rooms":["**"]}, signed with another key.
FORGED = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJtYWxsb3J5Iiwicm9vbXMiOlsiKioiXX0."
    "c2lnbmVkLXdpdGgtYW5vdGhlci1rZXktYWx0b2dldGhlcg"
)


@pytest.fixture
def gateway():
    """A single node that takes only HS256 tokens signed with SECRET."""
    gateway = launch(
        wsgate_binary(),
        ["--listen", "127.0.0.1:0", "--node", "python-client", "--jwt-secret", SECRET],
        "python-client",
    )
    try:
        yield gateway
    finally:
        stop(gateway.process)


@pytest.mark.parametrize(
    "token, error",
    [
        ("not-a-token", "unauthorized: malformed token"),
        (FORGED, "unauthorized: bad token signature"),
    ],
)
def test_a_refused_token_ends_the_client_with_the_servers_error(gateway, token, error):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python_client.py"),
         "--url", f"ws://{gateway.public}/ws", "--room", "chat:lobby", "--token", token],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1, result.stderr
    assert "refused by the server: auth: " in result.stderr, result.stderr
    assert error in result.stderr, result.stderr
    assert "reconnecting" not in result.stderr, result.stderr
