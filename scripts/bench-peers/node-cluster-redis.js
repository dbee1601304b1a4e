// Peer 1 of scripts/bench: the pattern of the usual blog post, written for the benchmark.
// Node's cluster: the primary accepts every TCP connection itself (pauseOnConnect) and hands the
// paused socket to worker fnv1a(remoteAddress) % N, so one client IP always reaches the same
// worker; each worker runs socket.io on an http server that never listens and is given the
// connection; rooms span the workers through @socket.io/redis-adapter and a real redis-server.
//   PORT=18700 WORKERS=2 REDIS_SOCKET=/tmp/x/redis.sock node node-cluster-redis.js
// (or REDIS_URL=redis://127.0.0.1:6379). Listens on 127.0.0.1 only (HOST to change it).
// With TLS_CERT=FILE TLS_KEY=FILE (PEM) every worker serves https/wss instead (an https server
// given the raw TCP socket: the handshake happens in the worker, the primary only routes by IP;
// Node's defaults otherwise: TLS 1.2/1.3, session tickets with per-worker keys, so a client
// resumes on the worker its address hashes to).
"use strict";

const cluster = require("node:cluster");
const fs = require("node:fs");
const http = require("node:http");
const https = require("node:https");
const net = require("node:net");
const os = require("node:os");
const { attachChat, serverOptions, fnv1a, intFrom } = require("./chat");

const port = intFrom("PORT", 18700);
const nworkers = intFrom("WORKERS", os.availableParallelism ? os.availableParallelism() : os.cpus().length);
const host = process.env.HOST || "127.0.0.1";

if (cluster.isPrimary) {
  const workers = [];
  let stopping = false;
  const fork = (i) => {
    const w = cluster.fork({ WORKER_INDEX: String(i) });
    workers[i] = w;
    w.on("exit", (code, signal) => {
      if (stopping) return;
      console.error(`node-cluster-redis: worker ${i} exited (${signal || code}); stopping`);
      process.exit(1);
    });
    return w;
  };
  for (let i = 0; i < nworkers; i++) fork(i);

  let ready = 0;
  cluster.on("message", (w, msg) => {
    if (msg === "ready" && ++ready === nworkers) {
      const server = net.createServer({ pauseOnConnect: true }, (socket) => {
        const addr = socket.remoteAddress || "";
        const w = workers[fnv1a(addr) % nworkers];
        w.send("sticky:connection", socket, { keepOpen: false }, (err) => {
          if (err) socket.destroy();
        });
      });
      server.listen({ port, host, backlog: 4096 }, () => {
        console.error(`node-cluster-redis: listening on ${host}:${port}, ${nworkers} workers, pid ${process.pid}`);
      });
      server.on("error", (e) => {
        console.error(`node-cluster-redis: ${e.message}`);
        process.exit(1);
      });
    }
  });

  const stop = () => {
    stopping = true;
    for (const w of workers) if (w) w.process.kill("SIGTERM");
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  const { createClient } = require("redis");
  const { createAdapter } = require("@socket.io/redis-adapter");
  const { Server } = require("socket.io");

  (async () => {
    const redisOpts = process.env.REDIS_SOCKET
      ? { socket: { path: process.env.REDIS_SOCKET } }
      : { url: process.env.REDIS_URL || "redis://127.0.0.1:6379" };
    const pub = createClient(redisOpts);
    const sub = pub.duplicate();
    for (const c of [pub, sub]) c.on("error", (e) => console.error(`redis: ${e.message}`));
    await Promise.all([pub.connect(), sub.connect()]);

    const notFound = (req, res) => {
      res.writeHead(404).end();
    };
    const httpServer =
      process.env.TLS_CERT && process.env.TLS_KEY
        ? https.createServer(
            { cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY), ALPNProtocols: ["http/1.1"] },
            notFound,
          )
        : http.createServer(notFound);
    const io = new Server(httpServer, serverOptions({ adapter: createAdapter(pub, sub) }));
    attachChat(io);

    process.on("message", (msg, socket) => {
      if (msg !== "sticky:connection" || !socket) return;
      httpServer.emit("connection", socket);
      socket.resume();
    });
    process.on("SIGTERM", () => process.exit(0));
    process.send("ready");
  })().catch((e) => {
    console.error(`node-cluster-redis worker: ${e.stack || e}`);
    process.exit(1);
  });
}
