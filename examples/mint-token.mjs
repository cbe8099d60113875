#!/usr/bin/env node
// Mints a wsgate JWT with Node's built-in crypto (no packages).
//
//   node examples/mint-token.mjs hs256 SECRET  SUB [ROOMS] [TTL_SECONDS]
//   node examples/mint-token.mjs rs256 KEY.pem SUB [ROOMS] [TTL_SECONDS]
//
// ROOMS: comma-separated room patterns for the `rooms` claim (default "chat:*");
// TTL: seconds until `exp` (default 3600). EXTRA_CLAIMS='{"send":true}' merges
// more claims; KID sets the header's `kid`. A backend mints tokens like this
// for its users; the browser gets one through its own authenticated API and
// hands it to the client's getToken callback (docs/client.md).
import { createHmac, createSign } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

export function mintToken({ alg, key, sub, rooms = ["chat:*"], ttlSeconds = 3600, kid, extra = {} }) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: alg.toUpperCase(), typ: "JWT", ...(kid ? { kid } : {}) };
  const claims = { sub, iat: now, exp: now + ttlSeconds, rooms, ...extra };
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const input = `${b64(header)}.${b64(claims)}`;
  let signature;
  if (header.alg === "HS256") {
    signature = createHmac("sha256", key).update(input).digest("base64url");
  } else if (header.alg === "RS256") {
    signature = createSign("RSA-SHA256").update(input).sign(key, "base64url");
  } else {
    throw new Error(`unsupported algorithm ${alg}: hs256 or rs256`);
  }
  return `${input}.${signature}`;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [alg, keyArg, sub, rooms = "chat:*", ttl = "3600"] = process.argv.slice(2);
  if (!alg || !keyArg || !sub) {
    console.error("usage: node examples/mint-token.mjs hs256|rs256 SECRET|KEY.pem SUB [ROOMS] [TTL_SECONDS]");
    process.exit(2);
  }
  const key = alg.toLowerCase() === "rs256" ? readFileSync(keyArg, "utf8") : keyArg;
  console.log(
    mintToken({
      alg,
      key,
      sub,
      rooms: rooms.split(",").filter(Boolean),
      ttlSeconds: Number(ttl),
      kid: process.env.KID,
      extra: process.env.EXTRA_CLAIMS ? JSON.parse(process.env.EXTRA_CLAIMS) : {},
    }),
  );
}
