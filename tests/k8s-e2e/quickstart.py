#!/usr/bin/env python3
"""The client half of tests/k8s-e2e/kind-up: two clients on two different
gateway pods show a message crossing pods, then a recovery after one pod is
deleted. Needs `pip install websockets`.

    quickstart.py cross   --a URL --b URL --secret S --state FILE
    quickstart.py recover --b URL --secret S --state FILE

`cross`: client A (on pod A) and client B (on pod B) join `chat:lobby`; B
publishes and A receives it; A's position (epoch, seq) is saved to FILE.
`recover` (after pod A was deleted): B publishes three messages; A comes back
through pod B with `since` and must recover exactly those three.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import sys
import time

import websockets

ROOM = "chat:lobby"
IDS = itertools.count(1)


def token(secret: str, sub: str) -> str:
    """An HS256 token that may join and publish in `chat:*`."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub, "rooms": ["chat:*"], "exp": int(time.time()) + 600}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


class Client:
    """One connection: commands answered in order, messages kept aside."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: list[dict] = []

    @classmethod
    async def connect(cls, url: str, secret: str, sub: str) -> tuple["Client", dict]:
        ws = await websockets.connect(url, subprotocols=["wsgate.v1"])
        client = cls(ws)
        await ws.send(json.dumps({"op": "auth", "id": 0, "token": token(secret, sub)}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
            if frame.get("id") == 0 and "error" in frame:
                raise SystemExit(f"auth refused: {frame['error']}")
            if frame.get("type") == "welcome" and frame.get("id") == 0:
                return client, frame

    async def call(self, **command) -> dict:
        command_id = next(IDS)
        await self.ws.send(json.dumps({**command, "id": command_id}))
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout=10))
            if frame.get("type") == "message":
                self.messages.append(frame)
            elif frame.get("id") == command_id:
                if "error" in frame:
                    raise SystemExit(f"{command['op']} failed: {frame['error']}")
                return frame

    async def message(self) -> dict:
        if self.messages:
            return self.messages.pop(0)
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout=10))
            if frame.get("type") == "message":
                return frame


async def cross(args) -> None:
    a, welcome_a = await Client.connect(args.a, args.secret, "alice")
    b, welcome_b = await Client.connect(args.b, args.secret, "bob")
    print(f"alice is on pod {welcome_a['node']}, bob on pod {welcome_b['node']}")
    if welcome_a["node"] == welcome_b["node"]:
        raise SystemExit("both clients landed on the same pod")
    joined = await a.call(op="join", room=ROOM)
    await b.call(op="join", room=ROOM)
    sent = await b.call(op="publish", room=ROOM, data={"text": "hello from bob"})
    got = await a.message()
    print(f"alice received {got['data']} (seq {got['seq']}) from {got['from']} across pods")
    if got["seq"] != sent["seq"]:
        raise SystemExit(f"alice got seq {got['seq']}, bob published {sent['seq']}")
    with open(args.state, "w") as state:
        json.dump({"epoch": joined["epoch"], "seq": got["seq"]}, state)
    await a.ws.close()
    await b.ws.close()


async def recover(args) -> None:
    with open(args.state) as state:
        since = json.load(state)
    b, _ = await Client.connect(args.b, args.secret, "bob")
    published = []
    for i in range(3):
        reply = await b.call(op="publish", room=ROOM, data={"text": f"while alice was away {i}"})
        published.append(reply["seq"])
    a, welcome = await Client.connect(args.b, args.secret, "alice")
    reply = await a.call(op="join", room=ROOM, since=since)
    missed = [m["seq"] for m in reply.get("missed", [])]
    print(f"alice is back on pod {welcome['node']}: recovered={reply.get('recovered')} missed seqs {missed}")
    if not reply.get("recovered") or missed != published:
        raise SystemExit(f"expected to recover {published}, got {reply}")
    await a.ws.close()
    await b.ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["cross", "recover"])
    parser.add_argument("--a")
    parser.add_argument("--b", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--state", required=True)
    args = parser.parse_args()
    if args.step == "cross" and not args.a:
        parser.error("cross needs --a")
    asyncio.run(cross(args) if args.step == "cross" else recover(args))


if __name__ == "__main__":
    sys.exit(main())
