// Peer 2 of scripts/bench: the official answer, @socket.io/sticky + @socket.io/cluster-adapter.
// The primary's http server reads the first request of every connection, routes it by its
// Engine.IO sid when it has one and otherwise by the load-balancing method, and passes the socket
// to that worker; rooms span the workers through the cluster adapter (IPC via the primary).
// @socket.io/sticky offers "random", "round-robin" and "least-connection", nothing keyed by the
// client address: a WebSocket-only client has no sid on its one request, so it is balanced, not
// pinned to an IP. We use "least-connection" (the package's default and its README's example).
//   PORT=18701 WORKERS=2 node sticky.js        (listens on 127.0.0.1 only; HOST to change it)
"use strict";

const cluster = require("node:cluster");
const http = require("node:http");
const os = require("node:os");
const { setupMaster, setupWorker } = require("@socket.io/sticky");
const { createAdapter, setupPrimary } = require("@socket.io/cluster-adapter");
const { attachChat, serverOptions, intFrom } = require("./chat");

const port = intFrom("PORT", 18701);
const nworkers = intFrom("WORKERS", os.availableParallelism ? os.availableParallelism() : os.cpus().length);
const host = process.env.HOST || "127.0.0.1";

if (cluster.isPrimary) {
  let stopping = false;
  const httpServer = http.createServer();
  setupMaster(httpServer, { loadBalancingMethod: "least-connection" });
  setupPrimary();
  // A race in @socket.io/sticky 2.0.1 that loopback makes frequent (about 1 connection in 50
  // here): when the primary passes a socket to a worker, Node stops delivering that socket's data
  // in the primary (its handle's onread becomes a no-op) but keeps the descriptor polled until the
  // IPC send completes; bytes the client sends meanwhile (Socket.IO's CONNECT "40", answering the
  // worker's Engine.IO "open") are read by the primary and dropped, and that client hangs. Before
  // sticky hands over a request that has no body, we stop the primary's reads of the socket, so
  // only the worker reads it (what pauseOnConnect gives peer 1). Nothing else changes.
  httpServer.on("connection", (socket) => {
    socket.prependOnceListener("data", (chunk) => {
      const end = chunk.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = chunk.subarray(0, end).toString().toLowerCase();
      if (head.includes("content-length:") || head.includes("transfer-encoding:")) return;
      if (socket._handle && typeof socket._handle.readStop === "function") socket._handle.readStop();
    });
  });
  cluster.setupPrimary({ serialization: "advanced" }); // Buffers stay Buffers over IPC

  let ready = 0;
  for (let i = 0; i < nworkers; i++) {
    const w = cluster.fork();
    w.on("exit", (code, signal) => {
      if (stopping) return;
      console.error(`sticky: worker ${i} exited (${signal || code}); stopping`);
      process.exit(1);
    });
  }
  cluster.on("message", (w, msg) => {
    if (msg !== "ready" || ++ready !== nworkers) return;
    httpServer.listen({ port, host, backlog: 4096 }, () => {
      console.error(`sticky: listening on ${host}:${port}, ${nworkers} workers, pid ${process.pid}`);
    });
  });
  httpServer.on("error", (e) => {
    console.error(`sticky: ${e.message}`);
    process.exit(1);
  });

  const stop = () => {
    stopping = true;
    for (const id in cluster.workers) cluster.workers[id].process.kill("SIGTERM");
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  const { Server } = require("socket.io");
  const httpServer = http.createServer();
  const io = new Server(httpServer, serverOptions({ adapter: createAdapter() }));
  setupWorker(io);
  attachChat(io);
  process.on("SIGTERM", () => process.exit(0));
  process.send("ready");
}
