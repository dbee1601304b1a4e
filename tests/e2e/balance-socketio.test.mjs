// The seed blog post's case: an ordinary Socket.IO 4 app (examples/balance/node/server.js,
// @socket.io/redis-adapter over a real redis-server) run as 4 processes by `steerchat balance`,
// against 200 official socket.io-client 4 clients with their default transports (long-polling,
// then the upgrade), each from its own source address.
//   --steering bpf: every client connects and upgrades; every HTTP answer and the upgrade of a
//     client come from one process (the x-served-by header the app sets on each, its `whoami`
//     and `welcome` agree); a room spans the processes through Redis.
//   --steering kernel (plain SO_REUSEPORT): the same clients fail as the blog post says (400
//     "Session ID unknown"), so the first half cannot pass by accident.
// Root only (BPF steering); in a private network namespace (in-netns.sh).
//   STEERCHAT_BINARY=build/steerchat tests/e2e/in-netns.sh node --test tests/e2e/balance-socketio.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Balance, examples, startRedis } from './lib/balance.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
for (const [dir, pkg] of [[here, 'socket.io-client'], [path.join(examples, 'node'), 'socket.io'],
                          [path.join(examples, 'node'), '@socket.io/redis-adapter']]) {
  if (!fs.existsSync(path.join(dir, 'node_modules', pkg, 'package.json'))) {
    throw new Error(`${dir}/node_modules lacks ${pkg}: run tests/e2e/setup.sh (npm ci)`);
  }
}
const { BoundAgent, SioClient, connectMany, describeError } = await import('./lib/sio-client.mjs');

// Every answer a client's agent receives, polling or the WebSocket upgrade, names the process.
const addRequest = BoundAgent.prototype.addRequest;
BoundAgent.prototype.addRequest = function (req, options) {
  this.servedBy ??= [];
  const note = (res) => this.servedBy.push(Number(res.headers['x-served-by']));
  req.once('response', note);
  req.once('upgrade', note);
  return addRequest.call(this, req, options);
};

const root = process.getuid && process.getuid() === 0;
const WORKERS = 4;
const CLIENTS = 200;
const REDIS_PORT = 19150;
const ipOf = (i) => `127.3.${(i + 1) >> 8}.${(i + 1) & 255}`;
const NODE_APP = [process.execPath, path.join(examples, 'node', 'server.js')];
const env = { REDIS_URL: `redis://127.0.0.1:${REDIS_PORT}` };

let redis;
before(async () => {
  if (root) redis = await startRedis(REDIS_PORT);
});
after(async () => {
  if (redis) await redis.stop();
});

describe('steerchat balance --steering bpf: 200 socket.io-client 4 clients over 4 Node processes',
         { skip: root ? false : 'needs root' }, () => {
  let b;
  const clients = [];  // { c, i, pid }
  before(async () => {
    b = await Balance.start({ port: 19110, adminPort: 19111, workers: WORKERS, command: NODE_APP,
                              env });
  });
  after(async () => {
    for (const u of clients) u.c.close();
    if (b) {
      const res = await b.stop();
      assert.deepEqual(res, { code: 0, signal: null }, b.log);
    }
  });

  test('every client connects and upgrades; all its connections reach one process', async () => {
    const pids = new Set((await b.healthz()).slots.map((s) => s.pid));
    assert.equal(pids.size, WORKERS);
    const results = await connectMany(CLIENTS, async (i) => {
      const c = SioClient.create(b.port, { ip: ipOf(i) });
      try {
        await c.connected(20000);
        await c.upgradedToWebSocket(20000);
        const [welcome] = await c.next('welcome', () => true, 5000);
        const [me] = await c.emitAck('whoami');
        return { c, i, welcome, me };
      } catch (e) {
        c.close();
        e.message += ` (HTTP errors: ${JSON.stringify(c.agent.httpErrors)})`;
        throw e;
      }
    }, 25);
    const failed = results.map((r, i) => [i, r.error]).filter(([, e]) => e);
    for (const r of results) if (r.client) clients.push({ ...r.client, pid: r.client.me.pid });
    assert.equal(failed.length, 0, `${failed.length} of ${CLIENTS} clients failed, e.g. ` +
                 failed.slice(0, 3).map(([i, e]) => `#${i}: ${e.message}`).join('; '));
    const perPid = new Map();
    for (const u of clients) {
      assert.equal(u.c.transport, 'websocket');
      assert.equal(u.welcome.pid, u.pid, `${ipOf(u.i)}: welcome and whoami disagree`);
      assert.ok(pids.has(u.pid), `${ipOf(u.i)}: pid ${u.pid} is no child of the master`);
      const served = u.c.agent.servedBy;
      // The handshake, at least one poll, the upgrade: each its own TCP connection.
      assert.ok(served.length >= 3 && u.c.agent.connections >= 3,
                `${ipOf(u.i)}: ${served.length} answers over ${u.c.agent.connections} connections`);
      assert.deepEqual(new Set(served), new Set([u.pid]),
                       `${ipOf(u.i)}: answered by ${[...new Set(served)]}, its session is on ${u.pid}`);
      perPid.set(u.pid, (perPid.get(u.pid) ?? 0) + 1);
    }
    console.log(`clients per process: ${JSON.stringify(Object.fromEntries(perPid))}`);
    assert.equal(perPid.size, WORKERS, 'every process should hold some clients');
  });

  test('a room spans the processes through Redis', async () => {
    // Two members on each process, one outsider.
    const members = [];
    for (const pid of new Set(clients.map((u) => u.pid))) {
      members.push(...clients.filter((u) => u.pid === pid).slice(0, 2));
    }
    const outsider = clients.find((u) => !members.includes(u));
    for (const u of members) assert.equal((await u.c.emitAck('join', 'blog'))[0].room, 'blog');
    const [sender] = members;
    const [ack] = await sender.c.emitAck('say', { room: 'blog', text: 'one room, four processes' });
    assert.deepEqual(ack, { ok: true });
    for (const u of members) {
      const [m] = await u.c.next('message', (x) => x.room === 'blog', 5000);
      assert.equal(m.text, 'one room, four processes');
      assert.equal(m.pid, sender.pid);
    }
    assert.equal(new Set(members.map((u) => u.pid)).size, WORKERS);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(outsider.c.take('message').length, 0, 'a non-member got the room\'s message');
  });
});

describe('steerchat balance --steering kernel: the same app fails as the blog post says (100 clients)',
         { skip: root ? false : 'needs root' }, () => {
  let b;
  const open = [];
  before(async () => {
    b = await Balance.start({ port: 19112, adminPort: 19113, workers: WORKERS, command: NODE_APP,
                              env, steering: 'kernel' });
  });
  after(async () => {
    for (const c of open) c.close();
    if (b) await b.stop();
  });

  test('most clients fail: 400 "Session ID unknown", no upgrade', async () => {
    // Half the clients suffice to show it (a failure takes up to the clients' timeouts).
    const CLIENTS = 100;
    const outcomes = await connectMany(CLIENTS, async (i) => {
      const c = SioClient.create(b.port, { ip: ipOf(i), timeoutMs: 5000 });
      open.push(c);
      const answers = () => c.agent.httpErrors.map((h) => `${h.status} ${h.body}`).join('; ');
      try {
        await c.connected(5000);
        await c.upgradedToWebSocket(4000);
        await c.emitAck('whoami');
      } catch (e) {
        return { ok: false, why: `${describeError(e.cause ?? e)}: ${answers()}`,
                 servedBy: new Set(c.agent.servedBy ?? []).size };
      }
      return { ok: true, servedBy: new Set(c.agent.servedBy ?? []).size };
    }, 50);
    const results = outcomes.map((o) => o.client ?? { ok: false, why: o.error?.message });
    const failed = results.filter((r) => !r.ok);
    const unknownSid = failed.filter((r) => /Session ID unknown/.test(r.why ?? '')).length;
    const spread = results.filter((r) => r.servedBy > 1).length;
    console.log(`--steering kernel: ${failed.length} of ${CLIENTS} clients failed, ` +
                `${unknownSid} answered "Session ID unknown"; ${spread} clients were answered by ` +
                'more than one process');
    for (const r of failed.slice(0, 2)) console.log(`  e.g. ${r.why}`);
    assert.ok(failed.length >= CLIENTS / 2,
              `only ${failed.length} of ${CLIENTS} failed: this test would not notice lost ` +
              'stickiness');
    assert.ok(unknownSid > 0, 'expected 400 "Session ID unknown" answers');
  });
});
