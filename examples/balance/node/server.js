// A Socket.IO 4 chat app as the seed blog post has it, run by `steerchat balance` instead of a
// Node master: every copy takes its listening socket from the parent (fd 3, systemd socket
// activation) and shares its rooms with the other copies through Redis (@socket.io/redis-adapter).
// The kernel keeps each client address on one copy, so the long-polling requests and the
// WebSocket upgrade of a client all reach the process that holds its session.
//
//   redis-server --port 6379 &
//   steerchat balance --port 3000 --workers 4 -- node examples/balance/node/server.js
//
// Without a parent (node server.js) it listens on $PORT (default 3000) itself.
//
// Events (client -> server, with an acknowledgement):
//   whoami            -> ack {pid, slot}: the process that holds this client's session
//   join ROOM         -> ack {room, pid}
//   leave ROOM        -> ack {room}
//   say {room, text}  -> ack {ok}; the room's members, on every process, get
//                        "message" {room, text, from, pid}
// On connect the server emits "welcome" {pid, slot, id}. Every HTTP answer and WebSocket upgrade
// carries the header "x-served-by: <pid>".
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

const pid = process.pid;
const slot = Number(process.env.STEERCHAT_SLOT ?? -1);

// sd_listen_fds(3): the socket is ours only if LISTEN_PID names this process.
function inheritedFd() {
  if (process.env.LISTEN_PID !== String(pid)) return null;
  if (process.env.LISTEN_FDS !== '1') throw new Error('expected exactly one socket (LISTEN_FDS=1)');
  return 3;
}

async function main() {
  const pub = createClient({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' });
  const sub = pub.duplicate();
  // A Redis that is down fails the start (and `steerchat balance` says so) rather than later.
  await Promise.all([pub.connect(), sub.connect()]);

  const httpServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': String(pid) });
    res.end(JSON.stringify({ pid, slot }) + '\n');
  });
  const io = new Server(httpServer, { adapter: createAdapter(pub, sub) });
  io.engine.on('headers', (headers) => {
    headers['x-served-by'] = String(pid);
  });

  io.on('connection', (socket) => {
    socket.emit('welcome', { pid, slot, id: socket.id });
    socket.on('whoami', (ack) => typeof ack === 'function' && ack({ pid, slot }));
    socket.on('join', async (room, ack) => {
      if (typeof room !== 'string' || !room) return;
      await socket.join(room);
      if (typeof ack === 'function') ack({ room, pid });
    });
    socket.on('leave', async (room, ack) => {
      await socket.leave(String(room));
      if (typeof ack === 'function') ack({ room });
    });
    socket.on('say', (msg, ack) => {
      if (!msg || typeof msg.room !== 'string' || typeof msg.text !== 'string') return;
      io.to(msg.room).emit('message', { room: msg.room, text: msg.text, from: socket.id, pid });
      if (typeof ack === 'function') ack({ ok: true });
    });
  });

  const fd = inheritedFd();
  await new Promise((resolve, reject) => {
    httpServer.once('error', reject);
    if (fd !== null) httpServer.listen({ fd }, resolve);
    else httpServer.listen(Number(process.env.PORT ?? 3000), resolve);
  });
  console.log(`pid ${pid} (slot ${slot}) serving ${fd !== null ? 'on fd 3' : `on port ${httpServer.address().port}`}`);

  const stop = async () => {
    io.close();  // closes the clients and the HTTP server
    await Promise.allSettled([pub.quit(), sub.quit()]);
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((e) => {
  console.error(`pid ${pid} (slot ${slot}): ${e.stack ?? e}`);
  process.exit(1);
});
