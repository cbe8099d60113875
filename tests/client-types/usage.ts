// Type-checks gateway/assets/wsgate.d.ts the way an application uses the
// client (docs/client.md), under `strict`. Compiled by tests/client-types/run
// with `tsc --noEmit`; nothing here runs.

import {
  State,
  WsgateClient,
  WsgateError,
  connect,
  tokenExpiry,
  type ClientState,
  type Message,
} from "../../gateway/assets/wsgate.js";

async function chat(): Promise<void> {
  const client = new WsgateClient({
    url: ["wss://a.example.com/ws", "wss://b.example.com/ws"],
    getToken: async () => "token",
    requestTimeoutMs: 5000,
  });
  const unsubscribe = client.on("message", (message: Message) => {
    const text: string = `${message.room} ${message.from}: ${JSON.stringify(message.data)}`;
    if (message.replayed) console.log("recovered", text, message.seq ?? "no history");
  });
  client.on("state", ({ state, previous }) => {
    const now: ClientState = state;
    if (now === State.RECONNECTING) console.log("was", previous);
  });
  client.on("closed", ({ code, final }) => console.log(code, final));
  client.on("error", (error) => console.log(error.code, error.reply?.id));
  client.on("rejoined", ({ room, recovered, missed }) => console.log(room, recovered, missed + 1));

  const welcome = await client.connect();
  console.log(welcome.user, welcome.heartbeat_ms + 1);
  const joined = await client.join("chat:lobby", { since: { epoch: "e", seq: 3 } });
  for (const message of joined.missed ?? []) console.log(message.data);
  const published = await client.publish("chat:lobby", { text: "hello", n: [1, null, true] });
  console.log(published.seq);
  const sent = await client.send({ user: "bob" }, "psst");
  console.log(sent.delivered + 1);
  await client.send("bob", 1);
  const page = await client.presence("chat:lobby", { limit: 10 });
  for (const member of page.members) console.log(member.user, member.conn, page.next);
  await client.leave("chat:lobby");
  await client.ping();
  console.log(client.rooms.get("chat:lobby")?.seq, client.url, tokenExpiry("a.b.c"));
  unsubscribe();
  client.close();

  const other = await connect({ token: "t", autoReconnect: false });
  try {
    await other.publish("chat:lobby", {});
  } catch (error) {
    if (error instanceof WsgateError && error.code === "rate_limited") console.log(error.message);
  }
}

void chat;

// What must not compile: each line is an error tsc must report.
// @ts-expect-error an unknown event
new WsgateClient().on("mesage", () => {});
// @ts-expect-error a room is a string
void new WsgateClient().join(42);
// @ts-expect-error data is JSON
void new WsgateClient().publish("r", () => 1);
// @ts-expect-error no such option
new WsgateClient({ urls: "x" });
