// wsgate.js: the reference client of the wsgate protocol, version 1.
//
// A dependency-free ES module for browsers (and Node 22+, or Node 20 with
// --experimental-websocket). It authenticates with the first-frame `auth` op, so
// tokens never appear in URLs; matches replies to commands by `id`; reconnects
// with exponential backoff and full jitter, rotating through a list of URLs and
// honouring the server's `reconnect.after_ms`; rejoins rooms with `since` so
// messages missed while away are delivered, in order, before live ones;
// drops duplicates by `seq`; detects lost messages from `prev`; and refreshes
// the token before it expires. See docs/client.md.
//
//   import { WsgateClient } from "/client/wsgate.js";
//   const client = new WsgateClient({ url: "wss://chat.example.com/ws", getToken });
//   client.on("message", (m) => console.log(m.room, m.data));
//   await client.join("chat:lobby");
//   await client.publish("chat:lobby", { text: "hello" });

/** Client states, in the order a connection goes through them. */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/**
 * A failed command. `code` is the protocol's error code (`forbidden`,
 * `not_supported`, ...) or one of the client's own: `timeout` (no reply in
 * time), `disconnected` (the connection ended before the reply), `closed` (the
 * client was closed).
 */
export class WsgateError extends Error {
  constructor(code, message, reply) {
    super(message ? `${code}: ${message}` : code);
    this.name = "WsgateError";
    this.code = code;
    this.reply = reply;
  }
}

const DEFAULTS = {
  protocols: ["wsgate.v1"],
  requestTimeoutMs: 10000,
  backoffInitialMs: 500,
  backoffMaxMs: 30000,
  refreshMarginMs: 60000,
  autoReconnect: true,
};

/** Close codes after which reconnecting cannot help (docs/protocol.md, "Close codes"). */
const CLOSE_FINAL = new Set([4003]);
const CLOSE_AUTH = 4001;

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !/^https?:$/.test(loc.protocol)) {
    throw new Error("wsgate: no url given and no page location to derive one from");
  }
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

/** The `exp` claim of a JWT in milliseconds, or null. The token is not verified. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * One logical connection to a wsgate cluster, kept alive across reconnects.
 *
 * Options:
 * - `url`: a WebSocket URL or a list of them (replicas, tried in turn); default
 *   `/ws` on the page's host.
 * - `token`: a JWT, or `getToken`: an async function returning one; it is called
 *   on every connect and before the token expires (refresh). Neither: anonymous.
 * - `requestTimeoutMs` (10000): how long a command waits for its reply,
 *   including the wait for a connection.
 * - `backoffInitialMs` (500), `backoffMaxMs` (30000): reconnect delays, full jitter.
 * - `refreshMarginMs` (60000): refresh this long before `exp` (at most half the
 *   token's remaining lifetime).
 * - `autoReconnect` (true), `protocols` (["wsgate.v1"]), `WebSocket` (an
 *   implementation, for runtimes without a global one).
 *
 * Events (`on(name, fn)`): `state` ({state, previous}), `connecting` ({url,
 * attempt}), `open` ({url}), `welcome` (the welcome frame), `reconnecting`
 * ({delayMs, attempt, reason}), `closed` ({code, reason, final}), `message`
 * (a message event; `replayed: true` when it came from a join's `missed`),
 * `direct`, `joined`, `left` (server events as received), `rejoined` ({room,
 * recovered, missed}), `gap` ({room, expected, prev}), `drain` ({after_ms}),
 * `error` (a WsgateError not tied to a promise, e.g. a failed rejoin).
 */
export class WsgateClient {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    const url = this.options.url ?? defaultUrl();
    this.urls = Array.isArray(url) ? url.slice() : [url];
    if (this.urls.length === 0) throw new Error("wsgate: url list is empty");
    this.state = State.IDLE;
    /** The last welcome frame: {conn, user, node, heartbeat_ms}. */
    this.welcome = null;
    /** Rooms to be in, with the position of the last message seen: room -> {epoch, seq}. */
    this.rooms = new Map();
    this._listeners = new Map();
    this._socket = null;
    this._urlIndex = 0;
    this._attempt = 0;
    this._nextId = 1;
    this._pending = new Map(); // id -> {resolve, reject, timer, op}
    this._waiting = []; // commands queued until the connection is ready
    this._ready = false;
    this._authId = null;
    this._token = this.options.token || null;
    this._timers = new Set();
    this._refreshTimer = null;
    this._drainTimer = null;
    this._reconnectAt = null; // set by a `reconnect` event: earliest time to reconnect
    this._lastFrameAt = 0;
    this._heartbeatTimer = null;
    this._recovering = new Map(); // room -> buffered live messages during a rejoin
    this._closedByUser = false;
  }

  // ---- events ------------------------------------------------------------

  /** Calls `fn(detail)` on each `name` event; returns a function that unsubscribes. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
  }

  _emit(name, detail) {
    for (const fn of this._listeners.get(name) ?? []) {
      try {
        fn(detail);
      } catch (error) {
        // A listener's bug must not break the connection; report it asynchronously.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  _setState(state, detail = {}) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, ...detail });
  }

  // ---- lifecycle ---------------------------------------------------------

  /** Connects (once); resolves with the welcome frame when the client is ready. */
  connect() {
    if (this.state === State.IDLE || this.state === State.CLOSED) {
      this._closedByUser = false;
      this._attempt = 0;
      this._open();
    }
    if (this._ready) return Promise.resolve(this.welcome);
    return new Promise((resolve, reject) => {
      const done = () => {
        offWelcome();
        offClosed();
      };
      const offWelcome = this.on("welcome", (w) => {
        if (this._ready) {
          done();
          resolve(w);
        }
      });
      const offClosed = this.on("closed", (c) => {
        if (c.final) {
          done();
          reject(new WsgateError("closed", c.reason || `closed with ${c.code}`));
        }
      });
    });
  }

  /** Closes for good: no reconnect; pending commands fail with `closed`. */
  close() {
    this._closedByUser = true;
    this._clearTimers();
    const socket = this._socket;
    this._socket = null;
    this._ready = false;
    if (socket) {
      socket.onclose = socket.onmessage = socket.onerror = socket.onopen = null;
      try {
        socket.close(1000, "client closed");
      } catch {
        // already closed
      }
    }
    this._failAll("closed", "the client was closed");
    const wasClosed = this.state === State.CLOSED;
    this._setState(State.CLOSED);
    if (!wasClosed) this._emit("closed", { code: 1000, reason: "client closed", final: true });
  }

  /** The URL currently used (or about to be). */
  get url() {
    return this.urls[this._urlIndex % this.urls.length];
  }

  _open() {
    this._clearConnectionTimers();
    const url = this.url;
    this._setState(this._attempt === 0 ? State.CONNECTING : State.RECONNECTING);
    this._emit("connecting", { url, attempt: this._attempt });
    const Impl = this.options.WebSocket ?? globalThis.WebSocket;
    if (!Impl) throw new Error("wsgate: no WebSocket implementation (pass options.WebSocket)");
    let socket;
    try {
      socket = new Impl(url, this.options.protocols);
    } catch (error) {
      this._scheduleReconnect(`cannot connect: ${error.message}`);
      return;
    }
    this._socket = socket;
    this._ready = false;
    this._authId = null;
    socket.onopen = () => this._onOpen(socket, url);
    socket.onmessage = (event) => this._onFrame(socket, event.data);
    socket.onerror = () => {}; // the close event follows and says more
    socket.onclose = (event) => this._onClose(socket, event.code, event.reason);
  }

  async _onOpen(socket, url) {
    if (socket !== this._socket) return;
    this._lastFrameAt = Date.now();
    this._emit("open", { url });
    if (this.options.getToken) {
      try {
        this._token = await this.options.getToken();
      } catch (error) {
        this._emit("error", new WsgateError("unauthorized", `getToken failed: ${error.message}`));
        socket.close(1000, "no token");
        return;
      }
      if (socket !== this._socket) return;
    }
    if (this._token) {
      // First frame: authenticate. The welcome that answers carries this id.
      this._authId = this._nextId++;
      this._sendRaw({ op: "auth", id: this._authId, token: this._token });
    }
  }

  _onClose(socket, code, reason) {
    if (socket !== this._socket) return;
    this._socket = null;
    this._ready = false;
    this._clearConnectionTimers();
    this._failInFlight("disconnected", `connection closed (${code}${reason ? ` ${reason}` : ""})`);
    this._recovering.clear();
    if (this._closedByUser) return;
    const authFailed = code === CLOSE_AUTH;
    const final =
      !this.options.autoReconnect ||
      CLOSE_FINAL.has(code) ||
      (authFailed && !this.options.getToken);
    this._emit("closed", { code, reason, final });
    if (final) {
      this._failAll("closed", `connection closed (${code})`);
      this._setState(State.CLOSED, { code, reason });
      return;
    }
    this._scheduleReconnect(`closed with ${code}${reason ? ` (${reason})` : ""}`);
  }

  /** Reconnects after the server's `after_ms`, or after a full-jitter backoff delay. */
  _scheduleReconnect(reason) {
    this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    let delayMs;
    if (this._reconnectAt !== null) {
      // The server asked for this reconnect: go as soon as its delay has passed.
      delayMs = Math.max(0, this._reconnectAt - Date.now());
      this._reconnectAt = null;
    } else {
      const ceiling = Math.min(
        this.options.backoffMaxMs,
        this.options.backoffInitialMs * 2 ** Math.min(this._attempt, 16),
      );
      delayMs = Math.floor(Math.random() * ceiling);
    }
    this._attempt += 1;
    this._setState(State.RECONNECTING, { reason });
    this._emit("reconnecting", { delayMs, attempt: this._attempt, reason, url: this.url });
    this._timer(() => this._open(), delayMs);
  }

  _timer(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  _clearConnectionTimers() {
    for (const t of [this._refreshTimer, this._drainTimer]) if (t) clearTimeout(t);
    if (this._heartbeatTimer) clearInterval(this._heartbeatTimer);
    this._refreshTimer = this._drainTimer = this._heartbeatTimer = null;
  }

  _clearTimers() {
    this._clearConnectionTimers();
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
  }

  // ---- frames in ---------------------------------------------------------

  _onFrame(socket, data) {
    if (socket !== this._socket) return;
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // the server sends only JSON text; ignore anything else
    }
    if (frame.type === "welcome") return this._onWelcome(frame);
    if (frame.type === undefined && frame.id !== undefined && frame.id !== null) {
      return this._onReply(frame);
    }
    switch (frame.type) {
      case "message":
        return this._onMessage(frame);
      case "direct":
        return this._emit("direct", frame);
      case "joined":
        return this._emit("joined", frame);
      case "left":
        if (this.welcome && frame.conn === this.welcome.conn) {
          // The server removed this connection from the room: do not rejoin it.
          this.rooms.delete(frame.room);
          this._recovering.delete(frame.room);
        }
        return this._emit("left", frame);
      case "reconnect":
        return this._onDrain(frame);
      default:
        if (frame.error) {
          // An id-less command failed (publish/leave without id).
          this._emit("error", new WsgateError(frame.error.code, frame.error.message, frame));
        }
    }
  }

  _onWelcome(frame) {
    this.welcome = frame;
    // With a token, only the welcome that answers our `auth` makes us ready; the
    // anonymous welcome a server allowing anonymous users sends at once is not.
    const authenticating = this._token !== null || Boolean(this.options.getToken);
    if (authenticating && (this._authId === null || frame.id !== this._authId)) return;
    this._ready = true;
    this._attempt = 0;
    this._setState(State.OPEN);
    this._emit("welcome", frame);
    this._startHeartbeat(frame.heartbeat_ms);
    this._scheduleRefresh();
    this._rejoinAll();
    const waiting = this._waiting.splice(0);
    for (const command of waiting) this._dispatch(command);
  }

  _onReply(frame) {
    if (frame.id === this._authId && frame.error) {
      // A bad token: the server closes with 4001, or keeps the connection
      // anonymous where that is allowed; either way it is an authentication
      // failure (final unless getToken can supply another token).
      this._emit("error", new WsgateError(frame.error.code, frame.error.message, frame));
      if (this._socket) this._abandon(this._socket, CLOSE_AUTH, frame.error.message);
      return;
    }
    const pending = this._pending.get(frame.id);
    if (!pending) return;
    this._pending.delete(frame.id);
    clearTimeout(pending.timer);
    if (frame.error) {
      pending.reject(new WsgateError(frame.error.code, frame.error.message, frame));
    } else {
      pending.resolve(frame);
    }
  }

  _onDrain(frame) {
    const afterMs = Math.max(0, Number(frame.after_ms) || 0);
    this._reconnectAt = Date.now() + afterMs;
    this._emit("drain", { after_ms: afterMs });
    // Keep receiving until then; the server closes with 1012 at about that time,
    // and whichever comes first moves us to the next replica.
    if (this._drainTimer) clearTimeout(this._drainTimer);
    const socket = this._socket;
    this._drainTimer = setTimeout(() => {
      if (socket && socket === this._socket) this._abandon(socket, 1012, "reconnect requested");
    }, afterMs);
  }

  /** Stops listening to `socket`, closes it, and handles the close at once. */
  _abandon(socket, code, reason) {
    socket.onclose = socket.onmessage = socket.onerror = socket.onopen = null;
    try {
      socket.close(1000, "reconnecting");
    } catch {
      // already closing
    }
    this._onClose(socket, code, reason);
  }

  // ---- rooms: recovery, dedup, gaps -------------------------------------

  _onMessage(message) {
    const room = this.rooms.get(message.room);
    const buffer = this._recovering.get(message.room);
    if (buffer) {
      buffer.push(message); // delivered after the rejoin's `missed`
      return;
    }
    if (room && typeof message.seq === "number") {
      if (room.epoch !== null && message.epoch !== room.epoch) {
        this._recover(message.room, message, "epoch changed");
        return;
      }
      if (room.seq !== null && message.seq <= room.seq) return; // duplicate
      if (room.seq !== null && message.prev !== room.seq) {
        this._emit("gap", { room: message.room, expected: room.seq, prev: message.prev });
        this._recover(message.room, message, "gap");
        return;
      }
      room.epoch = message.epoch;
      room.seq = message.seq;
    }
    this._emit("message", message);
  }

  /** Rejoins `room` with `since` and buffers its live messages until the reply. */
  _recover(roomName, firstMessage, reason) {
    if (this._recovering.has(roomName)) return;
    this._recovering.set(roomName, firstMessage ? [firstMessage] : []);
    this._rejoin(roomName, reason);
  }

  _rejoinAll() {
    for (const roomName of this.rooms.keys()) {
      this._recovering.set(roomName, []);
      this._rejoin(roomName, "reconnected");
    }
  }

  _rejoin(roomName, reason) {
    const room = this.rooms.get(roomName);
    const since =
      room && room.epoch !== null && room.seq !== null ? { epoch: room.epoch, seq: room.seq } : undefined;
    this._request({ op: "join", room: roomName, ...(since ? { since } : {}) }, false)
      .then((reply) => {
        const missed = this._applyJoin(roomName, reply, since);
        this._emit("rejoined", { room: roomName, recovered: reply.recovered === true, missed, reason });
      })
      .catch((error) => {
        const buffered = this._recovering.get(roomName) ?? [];
        this._recovering.delete(roomName);
        if (error.code === "disconnected" || error.code === "closed") return; // retried on reconnect
        if (error.code === "forbidden" || error.code === "invalid_room" || error.code === "not_supported") {
          this.rooms.delete(roomName);
        }
        this._emit("error", error);
        for (const m of buffered) this._onMessage(m);
      });
  }

  /**
   * Records a successful join's position and delivers `missed`, then what was
   * held during the join. Returns how many messages `missed` had.
   */
  _applyJoin(roomName, reply, since) {
    let room = this.rooms.get(roomName);
    if (!room) {
      room = { epoch: null, seq: null };
      this.rooms.set(roomName, room);
    }
    let buffered = this._recovering.get(roomName) ?? [];
    this._recovering.delete(roomName);
    buffered.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
    const missed = Array.isArray(reply.missed) ? reply.missed : [];
    if (typeof reply.epoch === "string") {
      if (room.epoch !== reply.epoch) {
        room.epoch = reply.epoch;
        room.seq = since && since.epoch === reply.epoch ? since.seq : null;
      }
      for (const message of missed) {
        if (room.seq === null || message.seq > room.seq) {
          room.seq = message.seq;
          message.replayed = true;
          this._emit("message", message);
        }
      }
      if (room.seq === null) {
        // A new history (the epoch changed): `missed` is empty, so the live
        // messages held during the join are delivered before moving on to the
        // reply's position, which already counts them.
        for (const message of buffered) if (message.epoch === reply.epoch) this._onMessage(message);
        buffered = [];
      }
      if (typeof reply.seq === "number") room.seq = Math.max(room.seq ?? 0, reply.seq);
    }
    for (const message of buffered) this._onMessage(message);
    return missed.length;
  }

  // ---- heartbeat and token refresh ---------------------------------------

  _startHeartbeat(heartbeatMs) {
    const interval = Math.max(1000, Number(heartbeatMs) || 25000);
    const socket = this._socket;
    this._heartbeatTimer = setInterval(() => {
      if (socket !== this._socket) return;
      if (Date.now() - this._lastFrameAt < interval) return;
      // Browsers answer the server's pings without telling us; a silent
      // connection is checked with an application-level ping.
      this._request({ op: "ping" }, false).catch((error) => {
        // A dead connection may take minutes to report its close: drop it now.
        if (error.code === "timeout" && socket === this._socket) this._abandon(socket, 4000, "ping timeout");
      });
    }, interval);
  }

  _scheduleRefresh() {
    if (!this.options.getToken || !this._token) return;
    const exp = tokenExpiry(this._token);
    if (exp === null) return;
    const remaining = exp - Date.now();
    const delay = Math.max(1000, remaining - Math.min(this.options.refreshMarginMs, remaining / 2));
    const socket = this._socket;
    this._refreshTimer = setTimeout(() => this._refresh(socket), delay);
  }

  async _refresh(socket) {
    if (socket !== this._socket) return;
    try {
      const token = await this.options.getToken();
      if (socket !== this._socket) return;
      await this._request({ op: "refresh", token }, false);
      this._token = token;
      this._emit("refreshed", { exp: tokenExpiry(token) });
      this._scheduleRefresh();
    } catch (error) {
      this._emit("error", error instanceof WsgateError ? error : new WsgateError("unauthorized", error.message));
      if (socket === this._socket) this._refreshTimer = setTimeout(() => this._refresh(socket), 5000);
    }
  }

  // ---- commands out ------------------------------------------------------

  _sendRaw(frame) {
    this._socket.send(JSON.stringify(frame));
  }

  /**
   * Sends a command and resolves with its reply. With `queue`, a command made
   * while disconnected waits for the next connection (within the timeout).
   */
  _request(fields, queue = true) {
    return new Promise((resolve, reject) => {
      if (this.state === State.CLOSED || this._closedByUser) {
        reject(new WsgateError("closed", "the client is closed"));
        return;
      }
      if (this.state === State.IDLE) this._open(); // the first command connects
      const command = { fields, resolve, reject, timer: null };
      command.timer = setTimeout(() => {
        const index = this._waiting.indexOf(command);
        if (index >= 0) this._waiting.splice(index, 1);
        if (command.id !== undefined) this._pending.delete(command.id);
        reject(new WsgateError("timeout", `no reply to ${fields.op} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      if (this._ready) this._dispatch(command);
      else if (queue) this._waiting.push(command);
      else {
        clearTimeout(command.timer);
        reject(new WsgateError("disconnected", "not connected"));
      }
    });
  }

  _dispatch(command) {
    command.id = this._nextId++;
    this._pending.set(command.id, command);
    try {
      this._sendRaw({ ...command.fields, id: command.id });
    } catch (error) {
      this._pending.delete(command.id);
      clearTimeout(command.timer);
      command.reject(new WsgateError("disconnected", error.message));
    }
  }

  _failInFlight(code, message) {
    for (const [id, command] of this._pending) {
      clearTimeout(command.timer);
      command.reject(new WsgateError(code, message));
      this._pending.delete(id);
    }
  }

  _failAll(code, message) {
    this._failInFlight(code, message);
    for (const command of this._waiting.splice(0)) {
      clearTimeout(command.timer);
      command.reject(new WsgateError(code, message));
    }
  }

  /**
   * Joins `room` and keeps it joined across reconnects. Resolves with the reply
   * ({recovered, epoch?, seq?, missed?}); `missed` messages are also delivered
   * as `message` events first. `since` ({epoch, seq}) asks for recovery; by
   * default the position of the last message seen in the room is used.
   */
  async join(room, { since } = {}) {
    const known = this.rooms.get(room);
    const position =
      since ?? (known && known.epoch !== null && known.seq !== null ? { epoch: known.epoch, seq: known.seq } : undefined);
    this._recovering.set(room, this._recovering.get(room) ?? []);
    let reply;
    try {
      reply = await this._request({ op: "join", room, ...(position ? { since: position } : {}) });
    } catch (error) {
      const buffered = this._recovering.get(room) ?? [];
      this._recovering.delete(room);
      for (const m of buffered) this._onMessage(m);
      throw error;
    }
    if (position && !known) this.rooms.set(room, { epoch: position.epoch, seq: position.seq });
    this._applyJoin(room, reply, position);
    return reply;
  }

  /** Leaves `room` and stops rejoining it. */
  async leave(room) {
    this.rooms.delete(room);
    this._recovering.delete(room);
    return this._request({ op: "leave", room });
  }

  /** Publishes `data` (any JSON value) to `room`; resolves with the reply (`seq` in rooms with history). */
  publish(room, data) {
    return this._request({ op: "publish", room, data });
  }

  /** Sends a direct message to `{user}` or `{conn}`; resolves with `{delivered}`. */
  send(to, data) {
    const target = typeof to === "string" ? { user: to } : to;
    return this._request({ op: "send", ...target, data });
  }

  /** One page of the room's members: resolves with `{members, next?}`. */
  presence(room, { cursor, limit } = {}) {
    return this._request({
      op: "presence",
      room,
      ...(cursor !== undefined ? { cursor } : {}),
      ...(limit !== undefined ? { limit } : {}),
    });
  }

  /** Application-level liveness check. */
  ping() {
    return this._request({ op: "ping" });
  }
}

/** Creates a client and connects it; resolves with the client once it is ready. */
export async function connect(options) {
  const client = new WsgateClient(options);
  await client.connect();
  return client;
}
