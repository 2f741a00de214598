// The relay the report's monolith does, on socket.io 4 (the peer of `kiln gateway` in
// bench/run_peers.sh): kiln.v1's collaboration traffic as socket.io events, the same
// fan-out, so that `kiln-bench collab --protocol socketio` drives both with one workload.
//
//   join  (room, ack)        joins the room; ack({ok: true})
//   op    ({room, id, ops}, ack)
//                            "ops" with the same body to the room's other members, then
//                            ack({id}) to the author (no journal: Kiln's ack waits for one,
//                            so the comparison favours this peer)
//   eph   ({room, kind, data})
//                            the latest data per (socket, kind) kept; every TICK_MS (50, as
//                            gateway.tick_ms) each room gets one "eph" {room, batch} per
//                            member, without the member's own entries
//
// With REDIS_URL the rooms span every node through @socket.io/redis-adapter (what the
// monolith scales out with): each node batches its own senders and broadcasts through Redis.
//
//   PORT=0 [REDIS_URL=redis://127.0.0.1:26500] node bench/peers/socketio-relay.js
// Prints "listening on PORT" once it accepts connections.
"use strict";
const http = require("node:http");
const { Server } = require("socket.io");

const tickMs = Number(process.env.TICK_MS || 50);

async function main() {
  const server = http.createServer();
  const io = new Server(server, {
    transports: ["websocket"],  // the generator speaks WebSocket only, as Kiln's clients do
    perMessageDeflate: false,   // Kiln compresses nothing either
    serveClient: false,
    // Engine.IO heartbeats every 25 s by default; a benchmark run is shorter, and Kiln's
    // idle pings (60 s) do not fire in one either.
    pingInterval: 600000,
    pingTimeout: 60000,
    maxHttpBufferSize: 1 << 20,  // gateway.max_frame_bytes
  });
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: process.env.REDIS_URL });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }

  // room -> Map(socket id -> Map(kind -> {user, session, kind, data})): this node's senders.
  const pending = new Map();

  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      if (typeof room !== "string" || room.length === 0 || room.length > 200) return;
      socket.join(room);
      if (typeof ack === "function") ack({ ok: true });
    });
    socket.on("op", (msg, ack) => {
      if (!msg || typeof msg.room !== "string" || !socket.rooms.has(msg.room)) return;
      socket.to(msg.room).emit("ops", msg);
      if (typeof ack === "function") ack({ id: msg.id });
    });
    socket.on("eph", (msg) => {
      if (!msg || typeof msg.room !== "string" || !socket.rooms.has(msg.room)) return;
      let senders = pending.get(msg.room);
      if (!senders) pending.set(msg.room, (senders = new Map()));
      let kinds = senders.get(socket.id);
      if (!kinds) senders.set(socket.id, (kinds = new Map()));
      kinds.set(msg.kind, { session: socket.id, kind: msg.kind, data: msg.data });
    });
    socket.on("disconnect", () => {
      for (const senders of pending.values()) senders.delete(socket.id);
    });
  });

  setInterval(() => {
    for (const [room, senders] of pending) {
      if (senders.size === 0) continue;
      const entries = [];
      for (const kinds of senders.values()) entries.push(...kinds.values());
      const ids = [...senders.keys()];
      // Everyone but this node's senders: the whole batch, one encoding for the room.
      io.to(room).except(ids).emit("eph", { room, batch: entries });
      // Each sender: the others' entries only (a sender never receives its own).
      if (ids.length > 1) {
        for (const id of ids) {
          const others = entries.filter((e) => e.session !== id);
          io.sockets.sockets.get(id)?.emit("eph", { room, batch: others });  // local: no Redis
        }
      }
      senders.clear();
    }
  }, tickMs);

  server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
    console.log(`listening on ${server.address().port}`);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
