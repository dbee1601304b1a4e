// Socket.IO with the official socket.io-client 4 and its default options (HTTP long-polling
// first, then the upgrade to WebSocket): 200 clients on distinct source addresses over 4 workers
// with BPF steering. Every client connects and upgrades; every TCP connection a client opens
// (one per HTTP request and the upgrade) is accepted by the worker that /healthz names for its
// address, counted on both ends; and the chat works across workers (presence, DMs, rooms with
// acknowledgements).
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/socketio.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { SioClient, connectMany } = await import('./lib/sio-client.mjs');
const { metricsFrom } = await import('./lib/sio-raw.mjs');
const { healthzFrom } = await import('./lib/chat-client.mjs');
const { Server, steeringMode } = await import('./lib/server.mjs');

const WORKERS = 4;
const CLIENTS = 200;
const sticky = steeringMode() === 'bpf';

const ipOf = (i) => `127.1.${(i + 1) >> 8}.${(i + 1) & 255}`;
const nameOf = (i) => `sio${i}@example.org`;

let server;
const clients = [];  // { c, name, ip, worker }

before(async () => {
  if (!sticky) return;
  server = await Server.start({ workers: WORKERS });
});
after(async () => {
  for (const u of clients) u.c.close();
  if (server) await server.stop();
});

describe('socket.io-client 4, default options, 200 clients over 4 workers (BPF steering)',
         { skip: sticky ? false : 'needs root for --steering bpf' }, () => {
  test('every client connects and upgrades; each client\'s connections all reach its worker',
       async () => {
    // The worker of each address, and one probe address per worker for its /metrics.
    const workerOf = [];
    for (let i = 0; i < CLIENTS; i++) workerOf.push((await healthzFrom(server.port, ipOf(i))).worker);
    const probe = new Map();
    workerOf.forEach((w, i) => probe.has(w) || probe.set(w, ipOf(i)));
    assert.equal(probe.size, WORKERS, '200 addresses should cover every worker');
    const metrics = (w) => metricsFrom(server.port, probe.get(w), w);
    const before = new Map();
    for (const w of probe.keys()) before.set(w, await metrics(w));

    const results = await connectMany(CLIENTS, async (i) => {
      const c = SioClient.create(server.port, { ip: ipOf(i) });
      try {
        await c.connected(15000);
        await c.upgradedToWebSocket(15000);
        return c;
      } catch (e) {
        c.close();
        e.message += ` (HTTP errors: ${JSON.stringify(c.agent.httpErrors)})`;
        throw e;
      }
    }, 50);
    const failed = results.map((r, i) => [i, r.error]).filter(([, e]) => e);
    for (const [i, r] of results.entries()) {
      if (r.client) clients.push({ c: r.client, name: nameOf(i), ip: ipOf(i), worker: workerOf[i] });
    }
    assert.equal(failed.length, 0,
                 `${failed.length} of ${CLIENTS} clients failed, e.g. ` +
                 failed.slice(0, 5).map(([i, e]) => `#${i}: ${e.message}`).join('; '));
    for (const u of clients) {
      assert.equal(u.c.transport, 'websocket', `${u.ip} runs on ${u.c.transport}`);
      assert.ok(u.c.agent.connections >= 2,
                `${u.ip}: expected polling requests before the upgrade, saw ` +
                `${u.c.agent.requests.join(', ')}`);
    }

    // Every TCP connection of every client was accepted by its address's worker: per worker,
    // the accepted-connections counter grew by exactly the clients' connections (+1: the
    // /metrics request that reads it).
    // The Engine.IO counters agree: each worker created and upgraded exactly its clients'
    // sessions and answered no request with an error (no "Session ID unknown").
    await new Promise((r) => setTimeout(r, 200));
    for (const w of probe.keys()) {
      const mine = clients.filter((u) => u.worker === w);
      const expected = mine.reduce((n, u) => n + u.c.agent.connections, 0);
      const now = await metrics(w);
      const was = before.get(w);
      const grew = now.steerchat_connections_accepted_total -
                   was.steerchat_connections_accepted_total - 1;
      assert.equal(grew, expected,
                   `worker ${w}: accepted ${grew} connections, its ${mine.length} clients opened ` +
                   `${expected}`);
      const delta = (name) => (name in now ? now[name] - (was[name] ?? 0) : undefined);
      for (const [name, want] of [['steerchat_eio_sessions_total', mine.length],
                                  ['steerchat_eio_upgrades_total', mine.length],
                                  ['steerchat_eio_errors_total', 0]]) {
        const d = delta(name);
        if (d !== undefined) assert.equal(d, want, `worker ${w}: ${name} grew by ${d}`);
      }
      if ('steerchat_eio_sessions' in now) {
        assert.equal(now.steerchat_eio_sessions, mine.length,
                     `worker ${w}: ${now.steerchat_eio_sessions} open sessions`);
      }
    }
  });

  test('login: accessgranted lists everyone; newClientOnline reaches the others; names are ' +
       'unique across workers', async () => {
    assert.equal(clients.length, CLIENTS);
    // The first user logs in alone, then everyone else at once.
    const [first, ...rest] = clients;
    first.c.emit('createsession', { email: first.name, clientIP: first.ip });
    const [granted0] = await first.c.next('accessgranted');
    assert.ok(Array.isArray(granted0) && granted0.includes(first.name), JSON.stringify(granted0));
    for (const u of rest) u.c.emit('createsession', { email: u.name, clientIP: u.ip });
    await Promise.all(rest.map(async (u) => {
      const [names] = await u.c.next('accessgranted', () => true, 10000);
      assert.ok(Array.isArray(names), JSON.stringify(names));
      assert.ok(names.includes(u.name), `${u.name} not in its own accessgranted list`);
      assert.ok(names.includes(first.name), `${u.name}: ${first.name} missing from the list`);
    }));
    // The first user saw all the others come online, each once.
    const seen = new Set();
    while (seen.size < rest.length) {
      const [m] = await first.c.next('newClientOnline', () => true, 10000);
      assert.ok(!seen.has(m.email), `newClientOnline ${m.email} twice`);
      seen.add(m.email);
    }
    assert.deepEqual([...seen].sort(), rest.map((u) => u.name).sort());
    for (const u of clients) u.c.take('newClientOnline');

    // A taken name is refused, whichever worker holds it.
    const other = clients.find((u) => u.worker !== clients[1].worker) ?? clients[2];
    const dup = await SioClient.connect(server.port, { ip: '127.1.250.1' });
    try {
      dup.emit('createsession', { email: clients[1].name, clientIP: '127.1.250.1' });
      const [taken] = await dup.next('usernametaken');
      assert.equal(typeof taken.err, 'string', JSON.stringify(taken));
      assert.ok('address' in taken, JSON.stringify(taken));
      dup.emit('createsession', { email: other.name, clientIP: '127.1.250.1' });
      await dup.next('usernametaken');
    } finally {
      dup.close();
    }
  });

  test('direct messages between every client and one on (usually) another worker', async () => {
    const n = clients.length;
    const peerOf = (i) => (i + 37) % n;
    let crossWorker = 0;
    for (const [i, u] of clients.entries()) {
      const to = clients[peerOf(i)];
      if (to.worker !== u.worker) crossWorker++;
      u.c.emit('newMessage', { to: to.name, message: `dm ${i} -> ${peerOf(i)}` });
    }
    if (WORKERS > 1) assert.ok(crossWorker > n / 2, `only ${crossWorker} pairs span two workers`);
    await Promise.all(clients.map(async (u, j) => {
      const i = (j - 37 + n) % n;
      const [m] = await u.c.next('newMessage', () => true, 10000);
      assert.deepEqual(m, { from: clients[i].name, text: `dm ${i} -> ${j}` });
    }));
    await new Promise((r) => setTimeout(r, 200));
    for (const u of clients) assert.equal(u.c.take('newMessage').length, 0, `${u.name}: extra DMs`);

    // An unknown recipient is reported to the sender.
    clients[0].c.emit('newMessage', { to: 'nobody@example.org', message: 'x' });
    await clients[0].c.next('clientNotFound');
  });

  test('rooms: join/say/leave acknowledgements; every member on every worker gets each ' +
       'message once', async () => {
    const byWorker = new Map();
    for (const u of clients) {
      if (!byWorker.has(u.worker)) byWorker.set(u.worker, []);
      byWorker.get(u.worker).push(u);
    }
    const members = [...byWorker.values()].flatMap((us) => us.slice(0, 10));
    assert.equal(new Set(members.map((u) => u.worker)).size, WORKERS);
    for (const u of members) {
      const [r] = await u.c.emitAck('join', 'lobby');
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.ok(r.members.includes(u.name), JSON.stringify(r));
      assert.ok(Array.isArray(r.history), JSON.stringify(r));
    }
    // One sender per worker.
    const senders = [...byWorker.values()].map((us) => us[0]);
    const acks = [];
    for (const s of senders) {
      const [r] = await s.c.emitAck('say', { room: 'lobby', text: `hello from ${s.name}` });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(typeof r.id, 'number', JSON.stringify(r));
      assert.equal(typeof r.ts, 'number', JSON.stringify(r));
      assert.equal(typeof r.seq, 'number', JSON.stringify(r));
      acks.push({ from: s.name, ...r });
    }
    await Promise.all(members.map(async (u) => {
      const got = [];
      while (got.length < senders.length) {
        const [m] = await u.c.next('message', () => true, 10000);
        got.push(m);
      }
      for (const a of acks) {
        const m = got.find((x) => x.id === a.id);
        assert.ok(m, `${u.name} missed message ${a.id} from ${a.from}`);
        assert.deepEqual(m, { room: 'lobby', from: a.from, text: `hello from ${a.from}`,
                              id: a.id, seq: a.seq, ts: a.ts });
      }
    }));
    await new Promise((r) => setTimeout(r, 200));
    for (const u of members) assert.equal(u.c.take('message').length, 0, `${u.name}: extra`);

    // A latecomer on any worker gets the history; a member who left gets nothing more.
    const late = clients.find((u) => !members.includes(u));
    const [j] = await late.c.emitAck('join', 'lobby');
    assert.equal(j.ok, true, JSON.stringify(j));
    assert.deepEqual(j.history.map((m) => m.id).slice(-acks.length), acks.map((a) => a.id));
    const leaver = members[members.length - 1];
    const [l] = await leaver.c.emitAck('leave', 'lobby');
    assert.equal(l.ok, true, JSON.stringify(l));
    const [r2] = await senders[0].c.emitAck('say', { room: 'lobby', text: 'after leave' });
    assert.equal(r2.ok, true);
    const [m2] = await late.c.next('message', (m) => m.id === r2.id, 5000);
    assert.equal(m2.text, 'after leave');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(leaver.c.take('message').length, 0, 'a member who left still gets messages');

    // Joining before logging in is refused with an error code.
    const anon = await SioClient.connect(server.port, { ip: '127.1.250.2' });
    try {
      const [r] = await anon.emitAck('join', 'lobby');
      assert.equal(r.ok, false, JSON.stringify(r));
      assert.equal(typeof r.error, 'string', JSON.stringify(r));
    } finally {
      anon.close();
    }
  });

  test('logout and disconnect: clientOffline (the name) reaches users on other workers',
       async () => {
    const watcher = clients[0];
    const leaving = clients.find((u) => u.worker !== watcher.worker) ?? clients[1];
    watcher.c.take('clientOffline');
    leaving.c.emit('logout');
    assert.deepEqual(await leaving.c.next('loggedOut'), [], 'loggedOut carries no arguments');
    const [name] = await watcher.c.next('clientOffline', (n) => n === leaving.name, 5000);
    assert.equal(name, leaving.name);

    const dropped = clients.find((u) => u.worker !== watcher.worker && u !== leaving) ?? clients[2];
    dropped.c.close();
    await watcher.c.next('clientOffline', (n) => n === dropped.name, 5000);
  });
});
