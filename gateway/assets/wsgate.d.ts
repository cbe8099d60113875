// Type declarations for wsgate.js, the reference client of the wsgate protocol,
// version 1 (docs/client.md, docs/protocol.md). Served beside the client at
// /client/wsgate.d.ts and shipped with it in its npm package (package.json).
//
//   import { WsgateClient } from "wsgate-client";
//   const client = new WsgateClient({ url: "wss://chat.example.com/ws", getToken });
//   client.on("message", (m) => console.log(m.room, m.data));

/** Client states, in the order a connection goes through them. */
export declare const State: Readonly<{
  IDLE: "idle";
  CONNECTING: "connecting";
  OPEN: "open";
  RECONNECTING: "reconnecting";
  CLOSED: "closed";
}>;

/** One of the values of {@link State}. */
export type ClientState = (typeof State)[keyof typeof State];

/** Any JSON value: what `data` carries. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * The protocol's error codes (docs/protocol.md, "Errors"), and the client's own:
 * `timeout` (no reply in time), `disconnected` (the connection ended before the
 * reply), `closed` (the client was closed).
 */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "unknown_op"
  | "invalid_room"
  | "forbidden"
  | "not_member"
  | "not_supported"
  | "limit_exceeded"
  | "rate_limited"
  | "too_large"
  | "unavailable"
  | "internal"
  | "timeout"
  | "disconnected"
  | "closed"
  | (string & {});

/** A failed command, or an error that belongs to no promise (the `error` event). */
export declare class WsgateError extends Error {
  constructor(code: ErrorCode, message?: string, reply?: Reply);
  readonly name: "WsgateError";
  /** The protocol's error code or one of the client's own. */
  readonly code: ErrorCode;
  /** The error reply as received, when there was one. */
  readonly reply?: Reply;
}

/** The `exp` claim of a JWT in milliseconds, or null. The token is not verified. */
export declare function tokenExpiry(token: string): number | null;

/** A WebSocket implementation, for runtimes without a global one. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

/** The options of {@link WsgateClient}; every one is optional. */
export interface ClientOptions {
  /** A WebSocket URL or a list of them (replicas, tried in turn); default `/ws` on the page's host. */
  url?: string | string[];
  /** A JWT, sent in the first frame; neither this nor `getToken`: anonymous. */
  token?: string;
  /** Returns a token; called on every connect and before the token expires. Wins over `token`. */
  getToken?: () => string | Promise<string>;
  /** How long a command waits for its reply, including the wait for a connection (10000). */
  requestTimeoutMs?: number;
  /** First reconnect delay bound, full jitter (500). */
  backoffInitialMs?: number;
  /** Largest reconnect delay bound (30000). */
  backoffMaxMs?: number;
  /** Refresh this long before `exp`, at most half the token's remaining lifetime (60000). */
  refreshMarginMs?: number;
  /** `false`: any close is final (true). */
  autoReconnect?: boolean;
  /** WebSocket subprotocols offered (["wsgate.v1"]). */
  protocols?: string[];
  /** A WebSocket implementation (globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
}

/** The welcome frame: the client is connected and authenticated. */
export interface Welcome {
  type: "welcome";
  id?: number;
  conn: string;
  user: string;
  node: string;
  heartbeat_ms: number;
  [field: string]: unknown;
}

/** A command's reply: `ok: true` and the command's fields (docs/protocol.md). */
export interface Reply {
  id: number;
  ok?: true;
  error?: { code: ErrorCode; message: string };
  [field: string]: unknown;
}

/** A position in a room's history. */
export interface Since {
  epoch: string;
  seq: number;
}

/** The reply to `join`. */
export interface JoinReply extends Reply {
  /** The room's history epoch, in rooms with history. */
  epoch?: string;
  /** The last `seq` of the room's history. */
  seq?: number;
  /** Whether every message after `since` was recovered. */
  recovered?: boolean;
  /** The messages after `since`, delivered as `message` events before live ones. */
  missed?: Message[];
}

/** The reply to `publish`. */
export interface PublishReply extends Reply {
  /** The message's position, in rooms with history. */
  seq?: number;
}

/** The reply to `send`. */
export interface SendReply extends Reply {
  delivered: number;
}

/** One member of a room, as `presence` lists it. */
export interface Member {
  user: string;
  conn: string;
  node: string;
  [field: string]: unknown;
}

/** The reply to `presence`: one page of members. */
export interface PresenceReply extends Reply {
  members: Member[];
  /** The cursor of the next page, when there is one. */
  next?: string;
  /** Set when some nodes did not answer in time. */
  partial?: boolean;
}

/** A `message` event. */
export interface Message {
  type: "message";
  room: string;
  from: string;
  data: Json;
  /** Position in the room's history, in rooms with history. */
  seq?: number;
  /** The previous message's `seq`: a different one means a lost message. */
  prev?: number;
  epoch?: string;
  /** Set by the client on messages recovered from a join's `missed`. */
  replayed?: true;
  [field: string]: unknown;
}

/** A `direct` event: data sent to this user or connection. */
export interface Direct {
  type: "direct";
  /** The sender; null for a message a backend sent. */
  from: string | null;
  data: Json;
  [field: string]: unknown;
}

/** A `joined` or `left` event, as the server sends it. */
export interface MemberEvent {
  type: "joined" | "left";
  room: string;
  user: string;
  conn: string;
  /** Why a member left (`left` only). */
  reason?: string;
  [field: string]: unknown;
}

/** Every event and its detail (docs/client.md, "Events"). */
export interface ClientEvents {
  state: { state: ClientState; previous: ClientState; code?: number; reason?: string };
  connecting: { url: string; attempt: number };
  open: { url: string };
  welcome: Welcome;
  reconnecting: { delayMs: number; attempt: number; reason: string; url: string };
  closed: { code: number; reason: string; final: boolean };
  drain: { after_ms: number };
  message: Message;
  direct: Direct;
  joined: MemberEvent;
  left: MemberEvent;
  rejoined: { room: string; recovered: boolean; missed: number; reason: string };
  gap: { room: string; expected: number | null; prev: number | null };
  refreshed: { exp: number | null };
  error: WsgateError;
}

/** Who `send` addresses: a user, a connection, or a user id given directly. */
export type SendTarget = { user: string } | { conn: string } | string;

/** One logical connection to a wsgate cluster, kept alive across reconnects. */
export declare class WsgateClient {
  constructor(options?: ClientOptions);
  /** The current state. */
  readonly state: ClientState;
  /** The last welcome frame, or null before the first. */
  readonly welcome: Welcome | null;
  /** Rooms to be in, with the position of the last message seen. */
  readonly rooms: Map<string, { epoch: string | null; seq: number | null }>;
  /** The URL currently used (or about to be). */
  readonly url: string;

  /** Calls `fn(detail)` on each `name` event; returns a function that unsubscribes. */
  on<E extends keyof ClientEvents>(name: E, fn: (detail: ClientEvents[E]) => void): () => void;
  /** Stops calling `fn` on `name` events. */
  off<E extends keyof ClientEvents>(name: E, fn: (detail: ClientEvents[E]) => void): void;

  /** Connects (once); resolves with the welcome frame when the client is ready. */
  connect(): Promise<Welcome>;
  /** Closes for good: no reconnect; pending commands fail with `closed`. */
  close(): void;

  /** Joins `room`; `missed` messages are delivered as `message` events first. */
  join(room: string, options?: { since?: Since }): Promise<JoinReply>;
  /** Leaves `room`; it is no longer rejoined. */
  leave(room: string): Promise<Reply>;
  /** Publishes `data` to `room`. */
  publish(room: string, data: Json): Promise<PublishReply>;
  /** Sends `data` to a user or a connection. */
  send(to: SendTarget, data: Json): Promise<SendReply>;
  /** One page of a room's members. */
  presence(room: string, options?: { cursor?: string; limit?: number }): Promise<PresenceReply>;
  /** A round trip to the gateway. */
  ping(): Promise<Reply>;
}

/** Creates a client and connects it; resolves once it is ready. */
export declare function connect(options?: ClientOptions): Promise<WsgateClient>;
