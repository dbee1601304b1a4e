// Peers "balance" and "nginx-node" of scripts/bench: the same socket.io 4 app as
// node-cluster-redis.js's workers (chat.js, rooms across processes through
// @socket.io/redis-adapter and a redis-server), as N independent processes.
//   balance: run by `steerchat balance`, each takes its listening socket from its parent as fd 3
//     (LISTEN_FDS=1, LISTEN_PID=<its pid>) and the kernel's BPF steering keeps every client
//     address on one process; no process sits between the clients and the workers.
//       steerchat balance --port 18705 --workers 2 -- node balance-worker.js
//   nginx-node: started N times by hand, each on its own PORT, behind nginx (hash $remote_addr).
//       PORT=18710 node balance-worker.js
// Redis: REDIS_SOCKET (a Unix socket) or REDIS_URL (default redis://127.0.0.1:6379).
"use strict";

const http = require("node:http");
const { attachChat, serverOptions } = require("./chat");

(async () => {
  const inherited = process.env.LISTEN_PID === String(process.pid) && process.env.LISTEN_FDS === "1";
  if (!inherited && !process.env.PORT) {
    throw new Error("run me under steerchat balance (fd 3), or give PORT");
  }
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const { Server } = require("socket.io");
  const pub = createClient(process.env.REDIS_SOCKET
    ? { socket: { path: process.env.REDIS_SOCKET } }
    : { url: process.env.REDIS_URL || "redis://127.0.0.1:6379" });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on("error", (e) => console.error(`redis: ${e.message}`));
  await Promise.all([pub.connect(), sub.connect()]);

  const httpServer = http.createServer((req, res) => {
    res.writeHead(404).end();
  });
  const io = new Server(httpServer, serverOptions({ adapter: createAdapter(pub, sub) }));
  attachChat(io);
  if (inherited) httpServer.listen({ fd: 3 });
  else httpServer.listen({ port: Number(process.env.PORT), host: "127.0.0.1", backlog: 4096 });
  process.on("SIGTERM", () => process.exit(0));
})().catch((e) => {
  console.error(`balance worker: ${e.stack || e}`);
  process.exit(1);
});
