#!/usr/bin/env python3
"""A Python wsgate client: join a room, print its messages, publish, and
survive drains, reconnecting with `since` so messages published meanwhile in
rooms with history are recovered. Needs `pip install websockets`.

    python3 examples/python_client.py --url ws://127.0.0.1:8080/ws --room chat:lobby \\
        [--publish TEXT] [--count N] [--token JWT | WSGATE_TOKEN=JWT]

--url may be repeated (replicas to rotate through); --count N exits after N
messages. The token is sent in the first frame (`auth`), never in the URL.

A refused token (an `unauthorized` reply to `auth`, a close with 4001, or an
upgrade answered 401/403) is not retried: the client prints the server's error
and exits with status 1. Other failures reconnect with backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys

import websockets


class Refused(Exception):
    """The server refused the client's credentials: retrying cannot help."""


# Close code of a failed authentication (docs/protocol.md, "Close codes").
AUTH_FAILED = 4001


class Room:
    """The position of the last message seen, for `since` on rejoin."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.seq: int | None = None


class Client:
    def __init__(self, urls: list[str], token: str | None, room: str) -> None:
        self.urls = itertools.cycle(urls)
        self.token = token
        self.room_name = room
        self.room = Room()
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.reconnect_after: float | None = None
        self.done = asyncio.Event()
        self.remaining = sys.maxsize

    async def request(self, ws, **fields) -> dict:
        """Sends a command and waits for the reply with its id."""
        command_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        await ws.send(json.dumps({**fields, "id": command_id}))
        reply = await asyncio.wait_for(future, timeout=10)
        if "error" in reply:
            raise RuntimeError(f"{fields['op']}: {reply['error']['code']}: {reply['error']['message']}")
        return reply

    def deliver(self, message: dict) -> bool:
        """Prints a message unless it is a duplicate; False when a gap is seen."""
        seq = message.get("seq")
        if seq is not None:
            if self.room.epoch == message.get("epoch") and self.room.seq is not None:
                if seq <= self.room.seq:
                    return True  # already seen
                if message.get("prev") != self.room.seq:
                    return False  # lost something: rejoin with since
            self.room.epoch, self.room.seq = message.get("epoch"), seq
        print(json.dumps({"room": message["room"], "from": message["from"], "data": message["data"], "seq": seq}),
              flush=True)
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()
        return True

    async def session(self, url: str, publish: str | None) -> None:
        async with websockets.connect(url, subprotocols=["wsgate.v1"]) as ws:
            reader = asyncio.create_task(self.read(ws))
            done = asyncio.create_task(self.done.wait())
            try:
                if self.token:
                    await ws.send(json.dumps({"op": "auth", "id": 0, "token": self.token}))
                # The welcome, unless the reader ends first: a refused token or a closed connection.
                await asyncio.wait([reader, self.welcome], return_when=asyncio.FIRST_COMPLETED)
                if not self.welcome.done():
                    reader.result()  # raises what ended the connection
                    raise ConnectionError("the connection closed before the welcome")
                welcome = self.welcome.result()
                log(f"connected to node {welcome['node']} as {welcome['user']}")
                await self.join(ws)
                if publish is not None:
                    reply = await self.request(ws, op="publish", room=self.room_name, data={"text": publish})
                    log(f"published: {reply}")
                # Until the connection ends or enough messages have arrived.
                await asyncio.wait([reader, done], return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    reader.result()  # raises what ended the connection
            finally:
                reader.cancel()
                done.cancel()

    async def join(self, ws) -> None:
        since = None
        if self.room.epoch is not None and self.room.seq is not None:
            since = {"epoch": self.room.epoch, "seq": self.room.seq}
        fields = {"op": "join", "room": self.room_name}
        if since:
            fields["since"] = since
        reply = await self.request(ws, **fields)
        if "epoch" in reply and reply["epoch"] != self.room.epoch:
            self.room.epoch, self.room.seq = reply["epoch"], since["seq"] if since else None
        for message in reply.get("missed", []):
            self.deliver(message)
        if "seq" in reply:
            self.room.seq = max(self.room.seq or 0, reply["seq"])
        log(f"joined {self.room_name}: recovered={reply.get('recovered')} missed={len(reply.get('missed', []))}")

    async def read(self, ws) -> None:
        try:
            await self.read_frames(ws)
        except websockets.ConnectionClosed as closed:
            received = closed.rcvd
            if received is not None and received.code == AUTH_FAILED:
                raise Refused(f"closed {AUTH_FAILED}: {received.reason or 'authentication failed'}") from None
            raise

    async def read_frames(self, ws) -> None:
        async for text in ws:
            frame = json.loads(text)
            kind = frame.get("type")
            if kind == "welcome":
                # With a token, the welcome answering `auth` (id 0) is the one that counts.
                if not self.token or frame.get("id") == 0:
                    self.welcome.set_result(frame)
            elif kind is None and frame.get("id") in self.pending:
                self.pending.pop(frame["id"]).set_result(frame)
            elif kind is None and frame.get("id") == 0 and "error" in frame:
                raise Refused(f"auth: {frame['error']['code']}: {frame['error']['message']}")
            elif kind == "message":
                if not self.deliver(frame):
                    asyncio.create_task(self.join(ws))  # gap: recover with since
            elif kind == "direct":
                print(json.dumps({"direct": frame["data"], "from": frame["from"]}), flush=True)
            elif kind == "reconnect":
                self.reconnect_after = frame["after_ms"] / 1000
                log(f"node draining, moving in {frame['after_ms']} ms")

    async def run(self, publish: str | None, count: int) -> None:
        self.remaining = count
        attempt = 0
        while not self.done.is_set():
            self.welcome = asyncio.get_running_loop().create_future()
            url = next(self.urls)
            try:
                await self.session(url, publish)
                attempt = 0
            except websockets.InvalidStatus as error:
                status = error.response.status_code
                if status in (401, 403):
                    raise Refused(f"upgrade refused with {status}: {error.response.body.decode(errors='replace')}")
                log(f"connection to {url} ended: {error}")
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError) as error:
                log(f"connection to {url} ended: {error}")
            publish = None  # publish once, not on every reconnect
            for future in self.pending.values():
                future.cancel()
            self.pending.clear()
            if self.done.is_set():
                break
            if self.reconnect_after is not None:
                delay, self.reconnect_after = 0.0, None  # the server already spread us out
            else:
                delay = random.uniform(0, min(30.0, 0.5 * 2**attempt))  # full jitter
                attempt += 1
            log(f"reconnecting in {delay:.2f} s")
            await asyncio.sleep(delay)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", help="WebSocket URL; repeat for replicas")
    parser.add_argument("--room", default="chat:lobby")
    parser.add_argument("--publish", help="publish {text: PUBLISH} once joined")
    parser.add_argument("--count", type=int, default=sys.maxsize, help="exit after this many messages")
    parser.add_argument("--token", default=os.environ.get("WSGATE_TOKEN"))
    args = parser.parse_args()
    client = Client(args.url or ["ws://127.0.0.1:8080/ws"], args.token, args.room)
    try:
        asyncio.run(client.run(args.publish, args.count))
    except Refused as refused:
        log(f"refused by the server: {refused}")
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
