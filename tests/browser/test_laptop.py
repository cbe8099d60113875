"""The demo as a newcomer first meets it: `wsgate --allow-anonymous --demo` (the
`laptop` fixture: one node, no NATS, no configuration file) and the page at `/`
opened without parameters, in Chromium.

Under `--demo` the single node gives the namespace `demo` in-memory history,
presence and join/leave events (docs/config.md, "The demo namespace"), and the
page opens `demo:lobby`. These tests show the three things its first minute
should show: the presence list, live; join/leave events; and recovery, after a
reload, of what was published meanwhile.
"""

from __future__ import annotations

import json

from websockets.sync.client import connect

ROOM = "demo:lobby"
TIMEOUT_MS = 15000


def texts(page) -> list[str]:
    """The texts of the messages of ROOM the page shows, in order."""
    return page.eval_on_selector_all(
        "#messages li.message",
        """(items, room) => items
            .filter((li) => li.dataset.room === room)
            .map((li) => li.querySelector('.text').textContent)""",
        ROOM,
    )


def wait_for_text(page, text: str) -> None:
    page.wait_for_function(
        """([room, text]) => [...document.querySelectorAll('#messages li.message')]
            .some((li) => li.dataset.room === room && li.querySelector('.text').textContent === text)""",
        arg=[ROOM, text],
        timeout=TIMEOUT_MS,
    )


def wait_for_presence(page, users: list[str]) -> None:
    """Waits, without any click, until the presence list shows exactly `users`."""
    page.wait_for_function(
        """(users) => {
            const shown = [...document.querySelectorAll('#presence li[data-user]')].map((li) => li.dataset.user);
            return shown.length === users.length && users.every((u) => shown.includes(u));
        }""",
        arg=users,
        timeout=TIMEOUT_MS,
    )


def user_of(page) -> str:
    page.wait_for_function("() => document.querySelector('#user').textContent.includes(':')")
    return page.text_content("#user")


def wait_joined(page) -> None:
    page.wait_for_selector(f'#room-list li[data-room="{ROOM}"]', timeout=TIMEOUT_MS)


def assert_no_console_errors(*pages) -> None:
    for demo in pages:
        unexpected = demo.unexpected_errors()
        assert not unexpected, f"console errors on page {demo.name}: {unexpected}"


def test_a_fresh_page_joins_demo_lobby_with_history_and_presence(laptop, open_demo):
    """Opened without parameters, the page joins demo:lobby, says history is on, and lists itself as present."""
    demo = open_demo("fresh", laptop)
    page = demo.page
    wait_joined(page)
    assert page.input_value("#room") == ROOM
    page.wait_for_selector(f"#messages li.system >> text=joined {ROOM} (history on", timeout=TIMEOUT_MS)
    assert page.locator("#messages", has_text="not recovered").count() == 0
    me = user_of(page)
    wait_for_presence(page, [me])
    assert page.get_attribute("#presence", "data-supported") == "true"
    assert "(you)" in page.text_content("#presence")
    page.wait_for_timeout(300)  # late errors (a failed fetch, an unhandled rejection)
    demo.screenshot("laptop-fresh")
    assert_no_console_errors(demo)


def test_two_pages_see_each_other_in_presence_and_the_list_follows_joins_and_leaves(laptop, open_demo):
    """A second page appears in the first page's presence list with a `joined` line, and
    leaves it with a `left` line when it closes; a raw WebSocket client is listed as well."""
    first = open_demo("presence-first", laptop)
    wait_joined(first.page)
    first_user = user_of(first.page)
    wait_for_presence(first.page, [first_user])

    second = open_demo("presence-second", laptop)
    wait_joined(second.page)
    second_user = user_of(second.page)
    assert second_user != first_user
    wait_for_presence(first.page, [first_user, second_user])
    wait_for_presence(second.page, [first_user, second_user])
    first.page.wait_for_selector(
        f'#messages li.member[data-event=joined][data-user="{second_user}"]', timeout=TIMEOUT_MS
    )

    with connect(laptop.ws) as raw:
        welcome = json.loads(raw.recv(timeout=10))
        raw.send(json.dumps({"op": "join", "id": 1, "room": ROOM}))
        wait_for_presence(first.page, [first_user, second_user, welcome["user"]])
    wait_for_presence(first.page, [first_user, second_user])

    first.screenshot("laptop-presence")
    second.page.close()
    wait_for_presence(first.page, [first_user])
    left = first.page.wait_for_selector(
        f'#messages li.member[data-event=left][data-user="{second_user}"]', timeout=TIMEOUT_MS
    )
    assert "left demo:lobby" in left.text_content()
    # Its own join is the page's own line, not a `joined` event line.
    assert first.page.locator(f'#messages li.member[data-user="{first_user}"]').count() == 0
    first.screenshot("laptop-left")
    assert_no_console_errors(first)


def test_a_reloaded_page_recovers_what_was_published_while_it_reloaded(laptop, open_demo):
    """Messages published by a backend and by another client after the page unloaded and
    before its script runs again are shown after the reload, once each, in order, marked
    recovered, before live ones."""
    demo = open_demo("reload", laptop)
    page = demo.page
    wait_joined(page)
    laptop.publish(ROOM, {"text": "before 1"})
    page.fill("#text", "before 2")
    page.click("#send")
    wait_for_text(page, "before 2")
    assert texts(page) == ["before 1", "before 2"]

    missed = ["missed 1, from the backend", "missed 2, from a client", "missed 3, from the backend"]
    published = []

    def publish_while_reloading(route):
        # The new document asks for its script: the old one is gone, its socket closed,
        # and the page's code has not run yet.
        if not published:
            laptop.publish(ROOM, {"text": missed[0]})
            with connect(laptop.ws) as other:
                other.recv(timeout=10)  # welcome
                other.send(json.dumps({"op": "publish", "id": 1, "room": ROOM, "data": {"text": missed[1]}}))
                reply = json.loads(other.recv(timeout=10))
                assert reply.get("ok") is True, reply
            laptop.publish(ROOM, {"text": missed[2]})
            published.extend(missed)
        route.continue_()

    page.route("**/demo/app.js", publish_while_reloading)
    page.reload()
    page.wait_for_selector("#state[data-state=open]", timeout=TIMEOUT_MS)
    assert published == missed, "the messages were published during the reload"
    resumed = page.wait_for_selector(
        f'#messages li.system[data-rejoined="{ROOM}"][data-reason=reload]', timeout=TIMEOUT_MS
    )
    assert resumed.get_attribute("data-recovered") == "true", resumed.text_content()
    assert "recovered 3 missed messages" in resumed.text_content()
    wait_for_text(page, missed[-1])

    laptop.publish(ROOM, {"text": "live after the reload"})
    wait_for_text(page, "live after the reload")
    assert texts(page) == [*missed, "live after the reload"], "recovered once each, in order, before live ones"
    replayed = page.eval_on_selector_all(
        "#messages li.message.replayed .text", "items => items.map((li) => li.textContent)"
    )
    assert replayed == missed
    seqs = page.eval_on_selector_all(
        f'#messages li.message[data-room="{ROOM}"]', "items => items.map((li) => Number(li.dataset.seq))"
    )
    assert seqs == [3, 4, 5, 6], f"seq continues after the two messages seen before the reload: {seqs}"

    # Only the reloaded page's new connection is present; the old one has left.
    me = user_of(page)
    wait_for_presence(page, [me])
    assert page.locator("#messages li.system", has_text=f"joined {ROOM} (").count() == 0, "a rejoin, not a fresh join"
    demo.screenshot("laptop-reloaded")
    assert_no_console_errors(demo)
