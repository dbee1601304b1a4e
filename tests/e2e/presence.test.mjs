// Presence at scale (issue 16) end to end across two workers (--steering bpf, client addresses
// the steering puts on different workers), with --chat-presence-max-users 4:
//   - up to 4 users online presence is host-wide as before: every welcome (and Socket.IO's
//     accessgranted) lists everyone and has no count, every login is announced to every user,
//     every logout to every user who knew it;
//   - past 4 a login's welcome lists 4 names, the count and partial:true, and the login is
//     announced to no one; a member of a room it joins learns of it from the room
//     (member_joined) and gets its offline, who shares no room with it does not;
//   - `who` (native and Socket.IO) pages through every user on both workers;
//   - DMs reach every user by name; the trims are counted in /metrics.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/presence.test.mjs
// Ordering, not timing, tells that something did not arrive: one log per worker, one loop per
// worker, so once a client has a later event from a worker it has the earlier ones from it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { Server, steeringMode } = await import('./lib/server.mjs');
const { ChatClient, healthzFrom } = await import('./lib/chat-client.mjs');
const { SioClient } = await import('./lib/sio-client.mjs');
const { metricsFrom } = await import('./lib/sio-raw.mjs');

const bpf = steeringMode() === 'bpf';
const MAX = 4;

let server;
const onA = [];  // source addresses the steering puts on one worker
const onB = [];  // and on the other

async function addressesOnBothWorkers(n) {
  const anchor = (await healthzFrom(server.port, '127.16.1.1')).worker;
  for (let i = 1; i < 250 && (onA.length < n || onB.length < n); i++) {
    const ip = `127.16.${i}.1`;
    const side = (await healthzFrom(server.port, ip)).worker === anchor ? onA : onB;
    if (side.length < n) side.push(ip);
  }
  assert.ok(onA.length === n && onB.length === n,
            `addresses on both workers: ${onA.length} and ${onB.length} of ${n}`);
}

const sorted = (a) => [...a].sort();
const isPresence = (name) => (m) => (m.type === 'online' || m.type === 'offline') && m.name === name;

describe('presence at scale', { skip: !bpf && 'needs --steering bpf (root)' }, () => {
  const clients = [];
  const keep = (c) => {
    clients.push(c);
    return c;
  };
  async function login(ip, name) {
    const c = keep(await ChatClient.connect(server.port, ip));
    const w = await c.request({ type: 'login', name }, ['welcome', 'error']);
    assert.equal(w.type, 'welcome', JSON.stringify(w));
    return { c, w };
  }
  // Every name `who` lists, page by page (`limit` per page), and the pages' counts.
  async function whoAll(c, limit) {
    const names = [];
    let pages = 0, after, count;
    for (;;) {
      const req = { type: 'who', ...(limit ? { limit } : {}), ...(after ? { after } : {}) };
      const p = await c.request(req, ['who', 'error']);
      assert.equal(p.type, 'who', JSON.stringify(p));
      assert.ok(p.users.length <= (limit ?? MAX), JSON.stringify(p));
      names.push(...p.users);
      count = p.count;
      ++pages;
      if (p.next === null) break;
      after = p.next;
    }
    return { names, pages, count };
  }

  before(async () => {
    server = await Server.start({
      workers: 2, steering: 'bpf',
      args: ['--chat-presence-max-users', String(MAX), '--chat-rate', '0'],
    });
    await addressesOnBothWorkers(4);
  });
  after(async () => {
    for (const c of clients) c.close();
    if (server) await server.stop();
  });

  let a1, c1, d1, s1;
  test('up to the limit: presence is host-wide, welcomes list everyone, as before', async () => {
    let w;
    ({ c: a1, w } = await login(onA[0], 'a1'));
    assert.deepEqual(w, { type: 'welcome', name: 'a1', users: ['a1'] });
    let b1;
    ({ c: b1, w } = await login(onB[0], 'b1'));
    assert.deepEqual(Object.keys(w).sort(), ['name', 'type', 'users']);
    assert.deepEqual(sorted(w.users), ['a1', 'b1']);
    assert.deepEqual(await a1.next(isPresence('b1')), { type: 'online', name: 'b1' });

    s1 = keep(await SioClient.connect(server.port, { ip: onA[1] }));
    const [ack] = await s1.emitAck('createsession', { email: 's1' });
    assert.deepEqual(ack, { ok: true, name: 's1' });
    const [names] = await s1.next('accessgranted');
    assert.deepEqual(sorted(names), ['a1', 'b1', 's1']);
    assert.deepEqual(await a1.next(isPresence('s1')), { type: 'online', name: 's1' });
    assert.deepEqual(await b1.next(isPresence('s1')), { type: 'online', name: 's1' });

    b1.close();
    assert.deepEqual(await a1.next(isPresence('b1')), { type: 'offline', name: 'b1' });
    assert.deepEqual(await s1.next('clientOffline'), ['b1']);

    // 4 online: still host-wide.
    ({ c: c1, w } = await login(onB[1], 'c1'));
    ({ c: d1, w } = await login(onA[2], 'd1'));
    assert.equal(w.partial, undefined);
    assert.deepEqual(sorted(w.users), ['a1', 'c1', 'd1', 's1']);
    for (const n of ['c1', 'd1'])
      assert.deepEqual(await a1.next(isPresence(n)), { type: 'online', name: n });
    assert.deepEqual(await s1.next('newClientOnline', (o) => o.email === 'd1'), [{ email: 'd1' }]);
  });

  let e1, f1, s2;
  test('past the limit: a bounded welcome with the count, a login announced to no one', async () => {
    let w;
    ({ c: e1, w } = await login(onB[2], 'e1'));
    assert.equal(w.partial, true);
    assert.equal(w.count, MAX + 1);
    assert.equal(w.users.length, MAX);
    // e1's DMs follow its login in its worker's log: when they arrive, an online would have.
    e1.send({ type: 'dm', to: 'a1', text: 'sync' });
    e1.send({ type: 'dm', to: 'c1', text: 'sync' });
    e1.send({ type: 'dm', to: 's1', text: 'sync' });
    for (const c of [a1, c1]) {
      await c.next((m) => m.type === 'dm' && m.from === 'e1');
      assert.deepEqual(c.take(isPresence('e1')), []);
    }
    await s1.next('newMessage', (m) => m.from === 'e1');
    assert.deepEqual(s1.take('newClientOnline').filter(([o]) => o.email === 'e1'), []);

    // A member of a room e1 joins learns of it from the room.
    assert.equal((await a1.request({ type: 'join', room: 'lobby' }, ['joined'])).type, 'joined');
    const j = await e1.request({ type: 'join', room: 'lobby' }, ['joined', 'error']);
    assert.deepEqual(sorted(j.members), ['a1', 'e1']);
    assert.deepEqual(await a1.next((m) => m.type === 'member_joined'),
                     { type: 'member_joined', room: 'lobby', name: 'e1' });

    // Socket.IO past the limit: accessgranted lists MAX names, the ack has the count.
    s2 = keep(await SioClient.connect(server.port, { ip: onA[1] }));
    const [ack] = await s2.emitAck('createsession', { email: 's2' });
    assert.deepEqual(ack, { ok: true, name: 's2', count: MAX + 2, partial: true });
    assert.equal((await s2.next('accessgranted'))[0].length, MAX);

    ({ c: f1, w } = await login(onA[3], 'f1'));
    assert.equal(w.count, MAX + 3);
  });

  test('past the limit: an offline reaches who shares a room, not who knew nothing of it', async () => {
    e1.close();
    assert.deepEqual(await a1.next(isPresence('e1')), { type: 'offline', name: 'e1' });
    // Later events of e1's worker (a user on its address): c1 (logged in before e1, full
    // welcome, no room with it), f1 (partial welcome) and s1 get no offline of e1.
    const { c: y } = await login(onB[2], 'y1');
    for (const to of ['c1', 'f1', 's1']) y.send({ type: 'dm', to, text: 'sync' });
    for (const c of [c1, f1]) {
      await c.next((m) => m.type === 'dm' && m.from === 'y1');
      assert.deepEqual(c.take(isPresence('e1')), []);
    }
    await s1.next('newMessage', (m) => m.from === 'y1');
    assert.deepEqual(s1.take('clientOffline').filter(([n]) => n === 'e1'), []);
  });

  test('who pages through every user on both workers (native and Socket.IO)', async () => {
    const online = ['a1', 'c1', 'd1', 'f1', 's1', 's2', 'y1'];
    for (const limit of [undefined, 2, 100]) {
      const { names, pages, count } = await whoAll(f1, limit);
      assert.equal(count, online.length);
      assert.deepEqual(sorted(names), online, `limit ${limit}`);
      assert.ok(pages >= Math.ceil(online.length / Math.min(limit ?? MAX, MAX)), `${pages} pages`);
    }
    const [first] = await s1.emitAck('who', { limit: 3 });
    assert.equal(first.ok, true);
    assert.equal(first.users.length, 3);
    assert.equal(first.count, online.length);
    const names = [...first.users];
    for (let next = first.next; next !== null;) {
      const [p] = await s1.emitAck('who', { after: next });
      names.push(...p.users);
      next = p.next;
    }
    assert.deepEqual(sorted(names), online);
    const bad = await f1.request({ type: 'who', after: -1 }, ['who', 'error']);
    assert.equal(bad.code, 'bad_request');
  });

  test('DMs reach every user by name, and the trims are counted', async () => {
    for (const [c, to] of [[a1, 'f1'], [f1, 'd1'], [d1, 'y1'], [c1, 'a1'], [f1, 's2']])
      c.send({ type: 'dm', to, text: `to ${to}` });
    for (const [c, to] of [[f1, 'f1'], [d1, 'd1'], [a1, 'a1']])
      await c.next((m) => m.type === 'dm' && m.to === to && m.text === `to ${to}`);
    assert.deepEqual(await s2.next('newMessage', (m) => m.from === 'f1'),
                     [{ from: 'f1', text: 'to s2' }]);
    s1.emit('newMessage', { to: 'f1', message: 'from s1' });
    await f1.next((m) => m.type === 'dm' && m.from === 's1');
    let local = 0, pages = 0;
    for (const ip of [onA[0], onB[0]]) {
      const m = await metricsFrom(server.port, ip);
      local += m.steerchat_chat_presence_local_total ?? 0;
      pages += m.steerchat_chat_who_pages_total ?? 0;
    }
    assert.equal(local, 4, 'e1, s2, f1, y1 were past the limit');
    assert.ok(pages >= 8, `${pages} who pages counted`);
  });
});
