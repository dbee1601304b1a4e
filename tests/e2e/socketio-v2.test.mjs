// socket.io-client 2.x (Engine.IO 3: length-prefixed polling payloads, client-sent pings, the
// server's unprompted CONNECT) against steerchat: it connects over long-polling, upgrades, logs in
// with the seed application's events and exchanges direct messages with a socket.io-client 4 user
// and a native /ws user, whichever workers they are on. With --no-eio3 it is refused.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/socketio-v2.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client-v2', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client-v2: run tests/e2e/setup.sh`);
}
const { SioClient } = await import('./lib/sio-client.mjs');
const { errorBody, pollingHandshake, request } = await import('./lib/sio-raw.mjs');
const { ChatClient, healthzFrom } = await import('./lib/chat-client.mjs');
const { Server, steeringMode } = await import('./lib/server.mjs');

// Long-polling needs sticky steering across workers; without root, one worker.
const sticky = steeringMode() === 'bpf';
const WORKERS = sticky ? 4 : 1;

let server;
const open = [];
before(async () => {
  server = await Server.start({ workers: WORKERS });
});
after(async () => {
  for (const c of open) c.close();
  if (server) await server.stop();
});

// Picks `n` addresses from 127.1.60.x on pairwise different workers (when there are enough).
async function addressesOnDistinctWorkers(n) {
  const picked = [];
  const workers = new Set();
  for (let i = 1; i < 250 && picked.length < n; i++) {
    const ip = `127.1.60.${i}`;
    const { worker } = await healthzFrom(server.port, ip);
    if (workers.has(worker) && workers.size < WORKERS) continue;
    workers.add(worker);
    picked.push(ip);
  }
  for (let i = 250; picked.length < n; i--) picked.push(`127.1.60.${i}`);
  return picked;
}

describe('socket.io-client 2 (Engine.IO 3)', () => {
  let v2;
  let v4;
  let native;
  let ips;

  test('connects over long-polling, upgrades to WebSocket and logs in', async () => {
    ips = await addressesOnDistinctWorkers(3);
    v2 = await SioClient.connect(server.port, { ip: ips[0], version: 2 });
    open.push(v2);
    assert.ok(v2.agent.requests[0].includes('EIO=3') &&
              v2.agent.requests[0].includes('transport=polling'),
              `first request: ${v2.agent.requests[0]}`);
    await v2.upgradedToWebSocket(10000);
    assert.equal(v2.transport, 'websocket');
    v2.emit('createsession', { email: 'ada@v2', clientIP: ips[0] });
    const [names] = await v2.next('accessgranted');
    assert.ok(names.includes('ada@v2'), JSON.stringify(names));
  });

  test('a v4 client and a native /ws user see the v2 user online, and the reverse', async () => {
    v4 = await SioClient.connect(server.port, { ip: ips[1] });
    open.push(v4);
    v4.emit('createsession', { email: 'bob@v4', clientIP: ips[1] });
    const [names] = await v4.next('accessgranted');
    assert.ok(names.includes('ada@v2') && names.includes('bob@v4'), JSON.stringify(names));
    const [online] = await v2.next('newClientOnline');
    assert.deepEqual(online, { email: 'bob@v4' });

    native = await ChatClient.connect(server.port, ips[2]);
    open.push({ close: () => native.close() });
    const welcome = await native.request({ type: 'login', name: 'carol' }, ['welcome', 'error']);
    assert.equal(welcome.type, 'welcome', JSON.stringify(welcome));
    assert.ok(welcome.users.includes('ada@v2') && welcome.users.includes('bob@v4'),
              JSON.stringify(welcome.users));
    for (const c of [v2, v4]) {
      const [m] = await c.next('newClientOnline', (x) => x.email === 'carol');
      assert.deepEqual(m, { email: 'carol' });
    }
  });

  test('direct messages: v2 <-> v4 <-> native', async () => {
    v2.emit('newMessage', { to: 'bob@v4', message: 'hi bob, from v2' });
    assert.deepEqual((await v4.next('newMessage'))[0], { from: 'ada@v2', text: 'hi bob, from v2' });
    v4.emit('newMessage', { to: 'ada@v2', message: 'hi ada, from v4' });
    assert.deepEqual((await v2.next('newMessage'))[0], { from: 'bob@v4', text: 'hi ada, from v4' });

    native.send({ type: 'dm', to: 'ada@v2', text: 'hi ada, from /ws' });
    assert.deepEqual((await v2.next('newMessage'))[0], { from: 'carol', text: 'hi ada, from /ws' });
    v2.emit('newMessage', { to: 'carol', message: 'hi carol, from v2' });
    const dm = await native.next((m) => m.type === 'dm', 5000, 'dm');
    assert.equal(dm.from, 'ada@v2');
    assert.equal(dm.text, 'hi carol, from v2');

    v2.emit('newMessage', { to: 'nobody', message: 'x' });
    await v2.next('clientNotFound');
  });

  test('rooms with acknowledgements from a v2 client; messages reach v4 and native members',
       async () => {
    const [j] = await v2.emitAck('join', 'mixed');
    assert.equal(j.ok, true, JSON.stringify(j));
    const [j4] = await v4.emitAck('join', 'mixed');
    assert.equal(j4.ok, true, JSON.stringify(j4));
    const jn = await native.request({ type: 'join', room: 'mixed' }, ['joined', 'error']);
    assert.equal(jn.type, 'joined', JSON.stringify(jn));
    const [s] = await v2.emitAck('say', { room: 'mixed', text: 'to everyone' });
    assert.equal(s.ok, true, JSON.stringify(s));
    assert.equal(s.seq, 1, `the room's first message: ${JSON.stringify(s)}`);
    for (const c of [v2, v4]) {
      const [m] = await c.next('message');
      assert.deepEqual(m, { room: 'mixed', from: 'ada@v2', text: 'to everyone', id: s.id,
                            seq: s.seq, ts: s.ts });
    }
    const nm = await native.next((m) => m.type === 'message', 5000, 'message');
    assert.equal(nm.from, 'ada@v2');
    assert.equal(nm.id, s.id);
  });

  test('heartbeat: a v2 client that pings stays connected over several ping intervals',
       async () => {
    // Engine.IO 3 pings come from the client; this server's interval is the default 25 s, so
    // just check the session is alive after a while and answers.
    await new Promise((r) => setTimeout(r, 1000));
    v4.emit('newMessage', { to: 'ada@v2', message: 'still there?' });
    assert.deepEqual((await v2.next('newMessage'))[0], { from: 'bob@v4', text: 'still there?' });
  });

  test('websocket-only v2 client', async () => {
    const ws = await SioClient.connect(server.port, { ip: '127.1.61.1', version: 2,
                                                      transports: ['websocket'] });
    open.push(ws);
    assert.equal(ws.transport, 'websocket');
    assert.equal(ws.agent.requests.length, 1, ws.agent.requests.join(', '));
    ws.emit('createsession', { email: 'dave@v2ws', clientIP: '127.1.61.1' });
    await ws.next('accessgranted');
    ws.emit('newMessage', { to: 'bob@v4', message: 'ws only' });
    assert.deepEqual((await v4.next('newMessage'))[0], { from: 'dave@v2ws', text: 'ws only' });
  });

  test('logout of the v2 user: clientOffline for v4, offline for native', async () => {
    v2.emit('logout');
    await v2.next('loggedOut');
    const [name] = await v4.next('clientOffline', (n) => n === 'ada@v2');
    assert.equal(name, 'ada@v2');
    await native.next((m) => m.type === 'offline' && m.name === 'ada@v2', 5000, 'offline ada');
  });
});

describe('--no-eio3', () => {
  test('Engine.IO 3 handshakes are refused with code 5; Engine.IO 4 still works', async () => {
    const s = await Server.start({ workers: 1, args: ['--no-eio3'] });
    try {
      const r = await request(s.port, { path: '/socket.io/?EIO=3&transport=polling',
                                        localAddress: '127.1.62.1' });
      assert.equal(r.status, 400, r.body);
      assert.deepEqual(errorBody(r), { code: 5, message: 'Unsupported protocol version' });
      const c = SioClient.create(s.port, { ip: '127.1.62.2', version: 2, timeoutMs: 3000 });
      open.push(c);
      await assert.rejects(c.connected(4000));
      const { open: o } = await pollingHandshake(s.port, '127.1.62.3');
      assert.equal(typeof o.sid, 'string');
      const c4 = await SioClient.connect(s.port, { ip: '127.1.62.4' });
      open.push(c4);
    } finally {
      await s.stop();
    }
  });
});
