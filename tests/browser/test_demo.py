"""The demo page and the reference client in a real browser (Chromium).

Two pages, each in its own browser context, are connected to two different
wsgate replicas over one nats-server. They exchange messages; then the replica
of one page is drained (SIGTERM) and that page moves to the other replica.
Screenshots of both pages go to tests/artifacts/.
"""

from __future__ import annotations

import re
import time

import pytest

from conftest import wait_for

LOBBY = "chat:lobby"
HISTORY_ROOM = "hist:lobby"
TIMEOUT_MS = 15000

# A page that keeps being turned away tries the stopped replica too; the browser
# logs each refused handshake as a console error. Nothing else is tolerated.
FAILED_HANDSHAKE = re.compile(r"WebSocket connection to '.*' failed")


def texts(page, room: str) -> list[str]:
    """The texts of the messages of `room` the page shows, in order."""
    return page.eval_on_selector_all(
        "#messages li.message",
        """(items, room) => items
            .filter((li) => li.dataset.room === room)
            .map((li) => li.querySelector('.text').textContent)""",
        room,
    )


def wait_for_text(page, room: str, text: str) -> None:
    page.wait_for_function(
        """([room, text]) => [...document.querySelectorAll('#messages li.message')]
            .some((li) => li.dataset.room === room && li.querySelector('.text').textContent === text)""",
        arg=[room, text],
        timeout=TIMEOUT_MS,
    )


def publish(page, text: str) -> None:
    """Types `text` into the page's publish box and sends it to the selected room."""
    page.fill("#text", text)
    page.click("#send")


def wait_joined(page, room: str) -> str | None:
    """Waits until `room` is joined (None) or its join failed (the error code)."""
    handle = page.wait_for_selector(
        f'#room-list li[data-room="{room}"], #messages li.system[data-error]',
        timeout=TIMEOUT_MS,
    )
    return handle.get_attribute("data-error")


def node_of(page) -> str:
    return page.get_attribute("#node", "data-node")


def assert_no_console_errors(*pages) -> None:
    for demo in pages:
        unexpected = demo.unexpected_errors()
        assert not unexpected, f"console errors on page {demo.name}: {unexpected}"


def test_demo_page_loads_without_console_errors(cluster, open_demo):
    """The page loads, connects anonymously, shows its node and joins the room without a console error."""
    a = cluster.gateways[0]
    page = open_demo("single", a, [a.ws], LOBBY)
    assert wait_joined(page.page, LOBBY) is None
    assert node_of(page.page) == "a"
    assert page.page.text_content("#state") == "open"
    # Give late errors (a failed fetch, an unhandled rejection) a moment to show.
    page.page.wait_for_timeout(300)
    assert_no_console_errors(page)


def test_pages_on_two_replicas_exchange_messages_and_a_drained_page_moves(cluster, open_demo):
    """Pages on replicas a and b exchange messages; SIGTERM of b moves b's page to a, where it goes on."""
    a, b = cluster.gateways
    page_a = open_demo("a", a, [a.ws, b.ws], LOBBY)
    page_b = open_demo("b", b, [b.ws, a.ws], LOBBY)
    pa, pb = page_a.page, page_b.page
    assert wait_joined(pa, LOBBY) is None
    assert wait_joined(pb, LOBBY) is None
    assert node_of(pa) == "a" and node_of(pb) == "b"

    publish(pa, "hello from a")
    wait_for_text(pb, LOBBY, "hello from a")
    publish(pb, "hello from b")
    wait_for_text(pa, LOBBY, "hello from b")
    a.publish(LOBBY, {"text": "from the backend"})
    wait_for_text(pa, LOBBY, "from the backend")
    wait_for_text(pb, LOBBY, "from the backend")
    expected = ["hello from a", "hello from b", "from the backend"]
    assert texts(pa, LOBBY) == expected
    assert texts(pb, LOBBY) == expected

    page_a.screenshot("exchange")
    page_b.screenshot("exchange")

    # Drain b: its page is told to reconnect, and moves to a.
    b.sigterm()
    pb.wait_for_selector("#node[data-node=a]", timeout=TIMEOUT_MS)
    pb.wait_for_selector("#state[data-state=open]", timeout=TIMEOUT_MS)
    pb.wait_for_selector(f'#messages li.system[data-rejoined="{LOBBY}"]', timeout=TIMEOUT_MS)
    assert b.process.wait(timeout=30) == 0, "a drained gateway exits with status 0"
    assert pb.locator("#messages li.system.warn", has_text="is draining").count() == 1

    publish(pa, "after the drain, from a")
    wait_for_text(pb, LOBBY, "after the drain, from a")
    publish(pb, "after the drain, from b")
    wait_for_text(pa, LOBBY, "after the drain, from b")
    expected += ["after the drain, from a", "after the drain, from b"]
    assert texts(pa, LOBBY) == expected
    assert texts(pb, LOBBY) == expected, "nothing lost or duplicated on the moved page"
    assert node_of(pa) == "a"

    page_a.screenshot("drained")
    page_b.screenshot("drained")
    assert_no_console_errors(page_a, page_b)


def test_presence_lists_both_pages(cluster, open_demo):
    """Both users appear in the presence panel of each page (skipped where presence is not supported)."""
    a, b = cluster.gateways
    page_a = open_demo("presence-a", a, [a.ws], LOBBY)
    page_b = open_demo("presence-b", b, [b.ws], LOBBY)
    for demo in (page_a, page_b):
        assert wait_joined(demo.page, LOBBY) is None
    pa = page_a.page
    pa.wait_for_selector("#presence[data-supported]", timeout=TIMEOUT_MS)
    if pa.get_attribute("#presence", "data-supported") != "true":
        print("SKIP presence: the gateway answers not_supported for presence")
        pytest.skip("presence: the gateway answers not_supported")
    users = [pa.text_content("#user"), page_b.page.text_content("#user")]

    def listed():
        # The page refreshes its list on joined/left events and when the room is selected.
        pa.click(f'#room-list li[data-room="{LOBBY}"]')
        shown = pa.text_content("#presence")
        return all(user in shown for user in users)

    wait_for(listed, 10, "both users in page a's presence list", interval=0.3)
    assert_no_console_errors(page_a, page_b)


def test_history_recovery_of_messages_published_while_a_page_moves(cluster, open_demo):
    """A page whose replica drains rejoins with `since` and shows, in order and once, what it missed.

    The check `history_recovery` needs history (seq/prev/epoch) in the gateway;
    it is skipped, saying so, while a join in a history namespace is answered
    `not_supported`.
    """
    a, b = cluster.gateways
    page_a = open_demo("history-a", a, [a.ws, b.ws], HISTORY_ROOM)
    page_b = open_demo("history-b", b, [b.ws, a.ws], HISTORY_ROOM)
    pa, pb = page_a.page, page_b.page
    error = wait_joined(pa, HISTORY_ROOM)
    if error == "not_supported":
        reason = (
            f"history_recovery: the gateway answers not_supported to a join of {HISTORY_ROOM} "
            "(namespace with history_size > 0); recovery is not implemented there yet"
        )
        print(f"SKIP {reason}")
        pytest.skip(reason)
    assert error is None, f"join of {HISTORY_ROOM} failed: {error}"
    assert wait_joined(pb, HISTORY_ROOM) is None

    publish(pa, "live 1")
    publish(pa, "live 2")
    wait_for_text(pb, HISTORY_ROOM, "live 2")

    # Page b may not reach a for now: when b drains, page b leaves it as told
    # but gets turned away at a (Playwright answers its handshakes and closes
    # them), so what is published meanwhile can reach it only through recovery.
    blocked = True

    def gate(route):
        if blocked:
            route.close(code=1013, reason="turned away by the test")
        else:
            route.connect_to_server()

    pb.route_web_socket(re.compile(re.escape(a.ws)), gate)
    page_b.tolerated.append(FAILED_HANDSHAKE)
    b.sigterm()
    pb.wait_for_selector("#messages li.system.warn >> text=is draining", timeout=TIMEOUT_MS)
    pb.wait_for_selector("#messages li.system.warn >> text=closed with 1013", timeout=TIMEOUT_MS)
    missed = ["missed 1", "missed 2", "missed 3"]
    for text in missed:
        publish(pa, text)
        wait_for_text(pa, HISTORY_ROOM, text)
    a.publish(HISTORY_ROOM, {"text": "missed 4, from the backend"})
    missed.append("missed 4, from the backend")
    wait_for_text(pa, HISTORY_ROOM, missed[-1])
    time.sleep(0.2)
    assert not any(t.startswith("missed") for t in texts(pb, HISTORY_ROOM))
    blocked = False

    pb.wait_for_selector("#node[data-node=a]", timeout=30000)
    rejoined = pb.wait_for_selector(
        f'#messages li.system[data-rejoined="{HISTORY_ROOM}"]', timeout=TIMEOUT_MS
    )
    assert rejoined.get_attribute("data-recovered") == "true", rejoined.text_content()
    wait_for_text(pb, HISTORY_ROOM, missed[-1])
    publish(pa, "live 3")
    wait_for_text(pb, HISTORY_ROOM, "live 3")

    expected = ["live 1", "live 2", *missed, "live 3"]
    assert texts(pa, HISTORY_ROOM) == expected
    assert texts(pb, HISTORY_ROOM) == expected, "recovered in order, once, before live ones"
    replayed = pb.eval_on_selector_all(
        "#messages li.message.replayed .text", "items => items.map((li) => li.textContent)"
    )
    assert replayed == missed
    seqs = pb.eval_on_selector_all(
        f'#messages li.message[data-room="{HISTORY_ROOM}"]',
        "items => items.map((li) => Number(li.dataset.seq))",
    )
    assert seqs == sorted(set(seqs)), f"seq strictly increases: {seqs}"

    page_a.screenshot("recovered")
    page_b.screenshot("recovered")
    assert_no_console_errors(page_a, page_b)
