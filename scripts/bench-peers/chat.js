// The chat workload every Socket.IO peer of scripts/bench serves (steerchat serves the same events):
//   createsession {email}  -> the sender gets accessgranted [names online on this worker];
//                             the others get newClientOnline {email} (through the adapter)
//   join room, ack         -> socket.join(room); ack({ok: true})
//   leave room, ack        -> socket.leave(room); ack({ok: true})
//   say {room, text}, ack? -> every member of the room, the sender included, on any worker, gets
//                             message {room, from, text, ts}; ack({ok: true}) when asked
// The names are kept per worker: the bench needs the events, not an exact roster across workers.
"use strict";

const PING = { pingInterval: 25000, pingTimeout: 20000 }; // socket.io's defaults, written out

function serverOptions(extra) {
  return Object.assign({ ...PING }, extra);
}

function attachChat(io) {
  const names = new Map(); // socket.id -> email, this worker's sessions only

  io.on("connection", (socket) => {
    socket.on("createsession", (msg, ack) => {
      const email = msg && typeof msg.email === "string" ? msg.email : "";
      if (!email) {
        if (typeof ack === "function") ack({ ok: false, error: "email required" });
        return;
      }
      names.set(socket.id, email);
      socket.emit("accessgranted", Array.from(new Set(names.values())));
      socket.broadcast.emit("newClientOnline", { email });
      if (typeof ack === "function") ack({ ok: true });
    });

    socket.on("join", (room, ack) => {
      if (typeof room === "string" && room) socket.join(room);
      if (typeof ack === "function") ack({ ok: typeof room === "string" && room !== "" });
    });

    socket.on("leave", (room, ack) => {
      if (typeof room === "string" && room) socket.leave(room);
      if (typeof ack === "function") ack({ ok: typeof room === "string" && room !== "" });
    });

    socket.on("say", (msg, ack) => {
      const room = msg && typeof msg.room === "string" ? msg.room : "";
      if (!room) {
        if (typeof ack === "function") ack({ ok: false, error: "room required" });
        return;
      }
      io.to(room).emit("message", {
        room,
        from: names.get(socket.id) || "",
        text: typeof msg.text === "string" ? msg.text : "",
        ts: Date.now(),
      });
      if (typeof ack === "function") ack({ ok: true });
    });

    socket.on("disconnect", () => {
      names.delete(socket.id);
    });
  });
}

// FNV-1a (32 bit) of a string: the node-cluster-redis master's choice of worker per client IP.
function fnv1a(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function intFrom(name, fallback) {
  const v = process.env[name];
  if (v === undefined || v === "") return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`${name}=${v}: a positive integer is required`);
    process.exit(2);
  }
  return n;
}

module.exports = { attachChat, serverOptions, fnv1a, intFrom };
