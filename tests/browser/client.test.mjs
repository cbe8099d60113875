// Unit tests of the reference client (gateway/assets/wsgate.js) against a
// scripted fake WebSocket: the protocol decisions that a real browser run
// cannot force (gaps, duplicates, refresh timing, backoff bounds).
// Run: node --test tests/browser/client.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";

import { WsgateClient, WsgateError, tokenExpiry } from "../../gateway/assets/wsgate.js";

/** A WebSocket whose server side the test plays. */
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    FakeSocket.all.push(this);
    setTimeout(() => this.onopen?.(), 0);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1005, reason = "") {
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
  // server side
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code, reason = "") {
    this.onclose?.({ code, reason });
  }
  last(op) {
    return [...this.sent].reverse().find((f) => f.op === op);
  }
}

const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(predicate, what, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}

function client(options = {}) {
  FakeSocket.all = [];
  return new WsgateClient({ url: "ws://a/ws", WebSocket: FakeSocket, requestTimeoutMs: 500, ...options });
}

function welcome(socket, extra = {}) {
  socket.push({ type: "welcome", conn: "c1", user: "u1", node: "a", heartbeat_ms: 25000, ...extra });
}

/** Answers the next command `op` with `reply` (adding its id). */
async function answer(socket, op, reply = { ok: true }) {
  await until(() => socket.last(op) && !socket.last(op).answered, `a ${op} command`);
  const command = socket.last(op);
  command.answered = true;
  socket.push({ id: command.id, ...reply });
  return command;
}

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256" })}.${b64(claims)}.sig`;
}

/// The token goes in the first frame, never the URL, and only the welcome answering it makes the client ready.
test("authenticates with the first frame and waits for the welcome that answers it", async () => {
  const c = client({ token: "t0k" });
  const ready = c.connect();
  await until(() => FakeSocket.all[0]?.sent.length, "auth frame");
  const socket = FakeSocket.all[0];
  assert.equal(socket.url, "ws://a/ws");
  assert.deepEqual(socket.protocols, ["wsgate.v1"]);
  assert.equal(socket.sent[0].op, "auth");
  assert.equal(socket.sent[0].token, "t0k");
  welcome(socket, { user: "anon:c1" }); // an anonymous welcome sent at once
  assert.equal(c.state, "connecting");
  welcome(socket, { id: socket.sent[0].id });
  assert.equal((await ready).user, "u1");
  assert.equal(c.state, "open");
  c.close();
});

/// Replies are matched by id; errors reject with the protocol's code; silence rejects with `timeout`.
test("matches replies by id, rejects errors with their code, and times out", async () => {
  const c = client();
  c.connect().catch(() => {});
  await until(() => FakeSocket.all[0], "socket");
  const socket = FakeSocket.all[0];
  welcome(socket);
  const one = c.publish("r", 1);
  const two = c.publish("r", 2);
  await until(() => socket.sent.length === 2, "two publishes");
  const [p1, p2] = socket.sent;
  socket.push({ id: p2.id, error: { code: "forbidden", message: "no" } });
  socket.push({ id: p1.id, ok: true });
  assert.deepEqual(await one, { id: p1.id, ok: true });
  await assert.rejects(two, (e) => e instanceof WsgateError && e.code === "forbidden");
  await assert.rejects(c.ping(), (e) => e.code === "timeout");
  c.close();
});

/// In a history room: duplicates dropped by seq; a gap seen from prev triggers a rejoin with since,
/// whose missed messages come before the live ones held meanwhile.
test("drops duplicates, and recovers a gap in order before live messages", async () => {
  const c = client();
  const seen = [];
  c.on("message", (m) => seen.push(m.seq));
  c.connect().catch(() => {});
  await until(() => FakeSocket.all[0], "socket");
  const socket = FakeSocket.all[0];
  welcome(socket);
  const joined = c.join("h:r");
  await answer(socket, "join", { ok: true, recovered: false, epoch: "E", seq: 4 });
  await joined;
  const msg = (seq, prev) => ({ type: "message", room: "h:r", data: seq, from: null, seq, prev, epoch: "E" });
  socket.push(msg(5, 4));
  socket.push(msg(5, 4)); // duplicate
  socket.push(msg(8, 7)); // 6 and 7 lost
  socket.push(msg(9, 8)); // held while recovering
  const rejoin = await answer(socket, "join", {
    ok: true,
    recovered: true,
    epoch: "E",
    seq: 8,
    missed: [msg(6, 5), msg(7, 6), msg(8, 7)],
  });
  assert.deepEqual(rejoin.since, { epoch: "E", seq: 5 });
  socket.push(msg(10, 9));
  assert.deepEqual(seen, [5, 6, 7, 8, 9, 10]);
  assert.deepEqual(c.rooms.get("h:r"), { epoch: "E", seq: 10 });
  c.close();
});

/// A `reconnect` event: after after_ms the client moves to the next URL and rejoins with since.
test("honours reconnect.after_ms, rotates to the next URL and rejoins with since", async () => {
  const c = client({ url: ["ws://a/ws", "ws://b/ws"] });
  const events = [];
  c.on("rejoined", (e) => events.push(e));
  c.connect().catch(() => {});
  await until(() => FakeSocket.all[0], "socket");
  const first = FakeSocket.all[0];
  welcome(first);
  const joined = c.join("h:r");
  await answer(first, "join", { ok: true, recovered: false, epoch: "E", seq: 3 });
  await joined;
  const started = Date.now();
  first.push({ type: "reconnect", after_ms: 60 });
  await until(() => FakeSocket.all.length === 2, "a second socket");
  assert.ok(Date.now() - started >= 55, "waited for after_ms");
  const second = FakeSocket.all[1];
  assert.equal(second.url, "ws://b/ws");
  welcome(second, { node: "b", conn: "c2" });
  const rejoin = await answer(second, "join", {
    ok: true,
    recovered: true,
    epoch: "E",
    seq: 4,
    missed: [{ type: "message", room: "h:r", data: "x", from: null, seq: 4, prev: 3, epoch: "E" }],
  });
  assert.deepEqual(rejoin.since, { epoch: "E", seq: 3 });
  assert.deepEqual(events, [{ room: "h:r", recovered: true, missed: 1, reason: "reconnected" }]);
  c.close();
});

/// Unexpected closes back off with full jitter: the delay is random below an exponentially growing ceiling.
test("backs off with full jitter below an exponential ceiling", async () => {
  const random = Math.random;
  Math.random = () => 0.999;
  try {
    const c = client({ backoffInitialMs: 10, backoffMaxMs: 35 });
    const delays = [];
    c.on("reconnecting", (e) => delays.push(e.delayMs));
    c.connect().catch(() => {});
    for (let i = 0; i < 4; i++) {
      await until(() => FakeSocket.all.length === i + 1, `socket ${i + 1}`);
      FakeSocket.all[i].drop(1006);
    }
    assert.deepEqual(delays, [9, 19, 34, 34]);
    c.close();
  } finally {
    Math.random = random;
  }
});

/// A closed connection fails in-flight commands with `disconnected`; 4003 (kicked by the backend) is final.
test("fails in-flight commands on close and does not reconnect after 4003", async () => {
  const c = client();
  const closed = [];
  c.on("closed", (e) => closed.push(e));
  c.connect().catch(() => {});
  await until(() => FakeSocket.all[0], "socket");
  welcome(FakeSocket.all[0]);
  const pending = c.publish("r", 1);
  await until(() => FakeSocket.all[0].sent.length, "publish");
  FakeSocket.all[0].drop(4003, "disconnected by the backend");
  await assert.rejects(pending, (e) => e.code === "disconnected");
  assert.equal(c.state, "closed");
  assert.equal(closed[0].final, true);
  await tick(30);
  assert.equal(FakeSocket.all.length, 1);
});

/// The token is refreshed through the callback before it expires.
test("refreshes the token before it expires", async () => {
  let n = 0;
  const exp = () => Math.floor(Date.now() / 1000) + 2; // expires in 2 s
  const c = client({ getToken: async () => jwt({ sub: "u1", exp: exp(), n: n++ }), refreshMarginMs: 1500 });
  c.connect().catch(() => {});
  await until(() => FakeSocket.all[0]?.sent.length, "auth");
  const socket = FakeSocket.all[0];
  welcome(socket, { id: socket.sent[0].id });
  const refresh = await answer(socket, "refresh", { ok: true, exp: exp() });
  assert.notEqual(refresh.token, socket.sent[0].token);
  assert.ok(tokenExpiry(refresh.token) > Date.now());
  c.close();
});

/// A refused token ends the connection as an authentication failure: final without getToken.
test("a refused token is final without getToken", async () => {
  const c = client({ token: "bad" });
  const ready = c.connect();
  await until(() => FakeSocket.all[0]?.sent.length, "auth frame");
  const socket = FakeSocket.all[0];
  socket.push({ id: socket.sent[0].id, error: { code: "unauthorized", message: "bad signature" } });
  await assert.rejects(ready, (e) => e.code === "closed");
  assert.equal(c.state, "closed");
  await tick(30);
  assert.equal(FakeSocket.all.length, 1, "no reconnect with the same bad token");
});

/// A message from a new epoch (history recreated): the rejoin says recovered:false, and the live
/// messages of the new epoch held meanwhile are still delivered, in order, once.
test("delivers held messages of a new epoch after the rejoin", async () => {
  const c = client();
  const seen = [];
  const rejoined = [];
  c.on("message", (m) => seen.push(`${m.epoch}${m.seq}`));
  c.on("rejoined", (r) => rejoined.push(r));
  c.connect().catch(() => {});
  await until(() => FakeSocket.all[0], "socket");
  const socket = FakeSocket.all[0];
  welcome(socket);
  const joined = c.join("h:r");
  await answer(socket, "join", { ok: true, recovered: false, epoch: "E", seq: 7 });
  await joined;
  const msg = (epoch, seq, prev) => ({ type: "message", room: "h:r", data: seq, from: null, seq, prev, epoch });
  socket.push(msg("F", 1, 0));
  socket.push(msg("F", 2, 1));
  const rejoin = await answer(socket, "join", { ok: true, recovered: false, epoch: "F", seq: 2, missed: [] });
  assert.deepEqual(rejoin.since, { epoch: "E", seq: 7 });
  socket.push(msg("F", 3, 2));
  assert.deepEqual(seen, ["F1", "F2", "F3"]);
  assert.equal(rejoined[0].recovered, false);
  c.close();
});
