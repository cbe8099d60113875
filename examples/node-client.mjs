#!/usr/bin/env node
// A Node client built on the reference client (gateway/assets/wsgate.js, the
// same module browsers load from /client/wsgate.js): joins a room, prints what
// arrives, optionally publishes, and survives drains and reconnects.
//
//   node examples/node-client.mjs --url ws://127.0.0.1:8080/ws --room chat:lobby \
//       [--publish TEXT] [--count N] [--token JWT | WSGATE_TOKEN=JWT]
//
// --url may be given several times (replicas to rotate through). --count N
// exits after N messages. Node 22+ has a global WebSocket; on Node 20 run with
// `node --experimental-websocket`. The token goes in the first frame (`auth`),
// never in the URL.
import { parseArgs } from "node:util";

import { WsgateClient } from "../gateway/assets/wsgate.js";

const { values } = parseArgs({
  options: {
    url: { type: "string", multiple: true, default: ["ws://127.0.0.1:8080/ws"] },
    room: { type: "string", default: "chat:lobby" },
    publish: { type: "string" },
    count: { type: "string" },
    token: { type: "string", default: process.env.WSGATE_TOKEN },
  },
});

if (typeof WebSocket === "undefined") {
  console.error("no global WebSocket: use Node 22+, or run with node --experimental-websocket");
  process.exit(2);
}

const client = new WsgateClient({
  url: values.url,
  // A real application fetches a fresh token from its backend here; the
  // client calls this on every connect and before the token expires.
  getToken: values.token ? async () => values.token : undefined,
});

let remaining = values.count ? Number(values.count) : Infinity;
client.on("state", ({ state }) => console.error(`[${state}]`));
client.on("welcome", (w) => console.error(`connected to node ${w.node} as ${w.user}`));
client.on("drain", ({ after_ms }) => console.error(`node draining, moving in ${after_ms} ms`));
client.on("rejoined", (r) => console.error(`rejoined ${r.room}: recovered=${r.recovered} missed=${r.missed}`));
client.on("error", (error) => console.error(`error: ${error.message}`));
client.on("direct", (d) => console.log(JSON.stringify({ direct: d.data, from: d.from })));
client.on("message", (m) => {
  console.log(JSON.stringify({ room: m.room, from: m.from, data: m.data, seq: m.seq }));
  if (--remaining <= 0) {
    client.close();
  }
});

try {
  await client.connect();
  const reply = await client.join(values.room);
  console.error(`joined ${values.room}: ${JSON.stringify(reply)}`);
  if (values.publish !== undefined) {
    const ack = await client.publish(values.room, { text: values.publish });
    console.error(`published: ${JSON.stringify(ack)}`);
  }
} catch (error) {
  if (error.code === "closed" && remaining <= 0) process.exit(0); // --count reached first
  console.error(`failed: ${error.message}`);
  client.close();
  process.exitCode = 1;
}
