// One Socket.IO node for wsgate-bench --compare socketio: rooms shared across nodes through
// @socket.io/redis-adapter on redis-server, the setup most teams run today.
//
// Environment: PORT (listen on 127.0.0.1:PORT), REDIS_URL (redis://127.0.0.1:P).
// Events from clients, each acknowledged with `true`:
//   join(room), leave(room), publish(room, data) -> every member gets message(data).
// Prints "listening <port>" once ready.
"use strict";
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
  const port = Number(process.env.PORT || 3000);
  const url = process.env.REDIS_URL || "redis://127.0.0.1:6379";
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const server = http.createServer();
  const io = new Server(server, {
    transports: ["websocket"],
    perMessageDeflate: false,
    serveClient: false,
    adapter: createAdapter(pub, sub),
  });
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack(true);
    });
    socket.on("leave", (room, ack) => {
      socket.leave(room);
      if (typeof ack === "function") ack(true);
    });
    socket.on("publish", (room, data, ack) => {
      io.to(room).emit("message", data);
      if (typeof ack === "function") ack(true);
    });
  });
  server.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
