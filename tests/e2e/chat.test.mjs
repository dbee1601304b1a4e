// The native chat protocol on GET /ws, end to end with npm `ws` clients on distinct source
// addresses spread over 4 workers: presence, rooms (exactly once, per-sender order, history),
// direct messages, errors, and a worker killed with SIGKILL.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/chat.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'ws', 'package.json'))) {
  throw new Error(`${here}/node_modules is missing: run tests/e2e/setup.sh (npm ci) first`);
}
const { ChatClient, getFrom, healthzFrom } = await import('./lib/chat-client.mjs');
const { Server } = await import('./lib/server.mjs');

const WORKERS = 4;
const USERS = 40;
const ROOMS = 4;
const MESSAGES = 50;
const sticky = !process.env.STEERCHAT_STEERING && process.getuid && process.getuid() === 0;

const ipOf = (i) => `127.1.${(i + 1) >> 8}.${(i + 1) & 255}`;
const nameOf = (i) => `user${i}`;

let server;
const users = [];  // { c, name, ip, worker, pid }

before(async () => {
  server = await Server.start({ workers: WORKERS });
});
after(async () => {
  for (const u of users) u.c.close();
  if (server) await server.stop();
});

async function login(i, ipIndex = i) {
  const ip = ipOf(ipIndex);
  const c = await ChatClient.connect(server.port, ip);
  const welcome = await c.request({ type: 'login', name: nameOf(i) }, ['welcome', 'error']);
  assert.equal(welcome.type, 'welcome', JSON.stringify(welcome));
  assert.equal(welcome.name, nameOf(i));
  const h = await healthzFrom(server.port, ip);
  return { c, name: nameOf(i), ip, worker: h.worker, pid: h.pid, welcome };
}

describe('native chat across workers', () => {
  test('login, presence and the online list span every worker', async () => {
    for (let i = 0; i < USERS; i++) users.push(await login(i));
    const workers = new Set(users.map((u) => u.worker));
    if (sticky) assert.equal(workers.size, WORKERS, 'the 40 addresses should cover all workers');
    // The last user's welcome lists everyone; the first one saw everyone else come online.
    assert.deepEqual([...users[USERS - 1].welcome.users].sort(),
                     users.map((u) => u.name).sort());
    for (let i = 1; i < USERS; i++) {
      await users[0].c.next((m) => m.type === 'online' && m.name === nameOf(i), 5000,
                            `online ${nameOf(i)}`);
    }
  });

  test('a taken name is refused on any worker, bad names and bad requests are answered', async () => {
    const c = await ChatClient.connect(server.port, ipOf(200));
    try {
      let r = await c.request({ type: 'join', room: 'r0' }, ['error']);
      assert.equal(r.code, 'not_logged_in');
      for (const name of users.slice(0, 8).map((u) => u.name)) {
        r = await c.request({ type: 'login', name }, ['welcome', 'error']);
        assert.equal(r.code, 'name_taken', `duplicate ${name}`);
      }
      for (const name of ['', 'x'.repeat(33), 'a\u0001b']) {
        r = await c.request({ type: 'login', name }, ['welcome', 'error']);
        assert.equal(r.type, 'error');
        assert.equal(r.code, 'bad_name', `name ${JSON.stringify(name)}`);
      }
      for (const bad of ['{not json', '[]', '"login"', JSON.stringify({ type: 'fly' }),
                         JSON.stringify({ name: 'x' }), JSON.stringify({ type: 'login', name: 42 })]) {
        r = await c.request(bad, ['error']);
        assert.equal(r.code, 'bad_request', bad);
      }
      // Still usable after all that.
      r = await c.request({ type: 'login', name: 'latecomer' }, ['welcome', 'error']);
      assert.equal(r.type, 'welcome');
      await users[0].c.next((m) => m.type === 'online' && m.name === 'latecomer', 5000,
                            'online latecomer');
      c.send({ type: 'logout' });
      await users[0].c.next((m) => m.type === 'offline' && m.name === 'latecomer', 5000,
                            'offline latecomer');
      // The name is free again, for a client on another address.
      const again = await ChatClient.connect(server.port, ipOf(201));
      r = await again.request({ type: 'login', name: 'latecomer' }, ['welcome', 'error']);
      assert.equal(r.type, 'welcome', JSON.stringify(r));
      again.close();
    } finally {
      c.close();
    }
  });

  test('rooms: every member gets every message exactly once, in each sender\'s order', async () => {
    for (const [i, u] of users.entries()) {
      const j = await u.c.request({ type: 'join', room: `room${i % ROOMS}` }, ['joined', 'error']);
      assert.equal(j.type, 'joined', JSON.stringify(j));
      assert.equal(j.room, `room${i % ROOMS}`);
      assert.ok(j.members.includes(u.name));
    }
    for (const u of users) u.c.take(() => true);  // presence noise so far

    for (let seq = 0; seq < MESSAGES; seq++) {
      for (const [i, u] of users.entries()) {
        u.c.send({ type: 'say', room: `room${i % ROOMS}`, text: `${u.name}:${seq}`,
                   cid: `${u.name}-${seq}` });
      }
    }
    const perRoom = (USERS / ROOMS) * MESSAGES;
    await Promise.all(users.map(async (u, i) => {
      const room = `room${i % ROOMS}`;
      const got = [];
      while (got.length < perRoom) {
        got.push(await u.c.next((m) => m.type === 'message', 10000, `message ${got.length}`));
      }
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(u.c.take((m) => m.type === 'message').length, 0, `${u.name}: extra messages`);
      const next = new Map();
      const ids = new Set();
      for (const m of got) {
        assert.equal(m.room, room);
        const [from, seq] = m.text.split(':');
        assert.equal(m.from, from);
        assert.equal(Number(seq), next.get(from) ?? 0, `${u.name}: ${from} out of order`);
        next.set(from, Number(seq) + 1);
        assert.ok(!ids.has(m.id), 'duplicate id');
        ids.add(m.id);
        assert.equal(typeof m.ts, 'number');
        if (from === u.name) assert.equal(m.cid, `${u.name}-${seq}`);
        else assert.equal(m.cid, undefined, 'cid only on the sender\'s copy');
      }
      assert.equal(next.size, USERS / ROOMS);
      for (const n of next.values()) assert.equal(n, MESSAGES);
    }));
  });

  test('history on join: the last 100 messages, the same whichever worker asks', async () => {
    const histories = [];
    for (const ipIndex of [300, 301, 302, 303, 304, 305]) {
      const c = await ChatClient.connect(server.port, ipOf(ipIndex));
      await c.request({ type: 'login', name: `reader${ipIndex}` }, ['welcome']);
      const j = await c.request({ type: 'join', room: 'room1' }, ['joined']);
      histories.push({ worker: (await healthzFrom(server.port, ipOf(ipIndex))).worker, j });
      c.close();
    }
    for (const { j } of histories) {
      assert.equal(j.history.length, 100);
      assert.deepEqual(j.history.map((m) => m.id), histories[0].j.history.map((m) => m.id));
      const ids = j.history.map((m) => m.id);
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'history in id order');
    }
    if (sticky) assert.ok(new Set(histories.map((h) => h.worker)).size > 1);
  });

  test('/metrics shows the chat and ring counters of the worker', async () => {
    // Every worker's series are in the scrape: read those of the worker users[0] is on.
    const { worker } = await healthzFrom(server.port, users[0].ip);
    const body = await getFrom(server.port, users[0].ip, '/metrics');
    const value = (name) =>
      Number((body.match(new RegExp(`^${name}\\{worker="${worker}"[^}]*\\} (\\d+)$`, 'm')) ?? [])[1]);
    assert.ok(value('steerchat_chat_sessions') >= 1, body);
    assert.ok(value('steerchat_chat_deliveries_total') >= (USERS / ROOMS) * MESSAGES, body);
    assert.ok(value('steerchat_chat_events_total') > 0, body);
    assert.ok(value('steerchat_ring_records_in_total') > 0, body);
    assert.equal(value('steerchat_ring_lost_records_total'), 0, body);
    // The protocol adapters' counters, one metric each, labelled by protocol.
    const adapter = (name, protocol) =>
      Number((body.match(new RegExp(`^${name}\\{worker="${worker}",protocol="${protocol}"\\} (\\d+)$`, 'm')) ??
              [])[1]);
    assert.ok(adapter('steerchat_chat_requests_total', 'native') > 0, body);
    assert.equal(adapter('steerchat_chat_requests_total', 'socketio'), 0, body);
    const encodings = adapter('steerchat_chat_encodings_total', 'native');
    assert.ok(encodings > 0, body);
    assert.ok(encodings <= value('steerchat_chat_deliveries_total'), 'at most one encoding per delivery');
    assert.ok(adapter('steerchat_chat_shared_sends_total', 'native') >= 0, body);
    assert.equal(adapter('steerchat_chat_errors_total', 'socketio'), 0, body);
    // Deliveries timed from the chat core to the socket, and the connections by transport.
    const count = value('steerchat_delivery_latency_seconds_count');
    assert.ok(count > 0, body);
    assert.equal(Number((body.match(new RegExp(
      `^steerchat_delivery_latency_seconds_bucket\\{worker="${worker}",le="\\+Inf"\\} (\\d+)$`, 'm')) ?? [])[1]),
                 count, 'the +Inf bucket counts every delivery');
    const open = Number((body.match(new RegExp(
      `^steerchat_open_connections\\{worker="${worker}",protocol="native",transport="websocket"\\} (\\d+)$`,
      'm')) ?? [])[1]);
    assert.ok(open >= 1, body);
  });

  test('direct messages reach users on other workers; unknown users are reported', async () => {
    const a = users[0];
    const b = users.find((u) => u.worker !== a.worker) ?? users[1];
    a.c.send({ type: 'dm', to: b.name, text: 'hello from afar' });
    const got = await b.c.next((m) => m.type === 'dm', 5000, 'dm');
    assert.equal(got.from, a.name);
    assert.equal(got.text, 'hello from afar');
    assert.equal(typeof got.id, 'number');
    const r = await a.c.request({ type: 'dm', to: 'nobody-here', text: 'x' }, ['error']);
    assert.equal(r.code, 'no_such_user');
  });

  test('kill -9 of a worker: its users go offline for everyone, the rest keep chatting', async () => {
    const victim = users[5];
    const dead = users.filter((u) => u.pid === victim.pid);
    const alive = users.filter((u) => u.pid !== victim.pid);
    for (const u of users) u.c.take(() => true);
    process.kill(victim.pid, 'SIGKILL');

    const watcher = alive[0];
    for (const d of dead) {
      await watcher.c.next((m) => m.type === 'offline' && m.name === d.name, 10000,
                           `offline ${d.name}`);
    }
    // A room whose members are all alive keeps working, exactly once.
    const room = 'after-crash';
    for (const u of alive.slice(0, 6)) await u.c.request({ type: 'join', room }, ['joined']);
    for (const u of alive.slice(0, 6)) u.c.send({ type: 'say', room, text: `still:${u.name}` });
    for (const u of alive.slice(0, 6)) {
      const seen = [];
      while (seen.length < 6) {
        seen.push(await u.c.next((m) => m.type === 'message' && m.room === room, 5000));
      }
      assert.equal(new Set(seen.map((m) => m.from)).size, 6);
    }
    // The dead users' names are free again (the respawned worker or another one takes them).
    const again = await login(Number(victim.name.slice(4)), 400);
    assert.equal(again.welcome.name, victim.name);
    users.push(again);
  });
});
