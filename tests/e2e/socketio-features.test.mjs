// Socket.IO features with the official clients: websocket-only and polling-only transports,
// binary attachments and acknowledgements (the --protocol-test handlers: `message` ->
// `message-back`, `message-with-ack` acked with its arguments, the `/custom` namespace, `auth`
// echo), configured namespaces (--sio-namespace) and refused ones, the Engine.IO heartbeat and
// the Socket.IO connect timeout (raw clients that stop answering), and CORS (--cors-origin).
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/socketio-features.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { SioClient } = await import('./lib/sio-client.mjs');
const { QueueSocket, errorBody, pollingHandshake, request } = await import('./lib/sio-raw.mjs');
const { Server, steeringMode } = await import('./lib/server.mjs');

const WORKERS = steeringMode() === 'bpf' ? 2 : 1;
const ALLOWED = 'http://allowed.example';
const PING_INTERVAL = 300;
const PING_TIMEOUT = 300;
const CONNECT_TIMEOUT = 800;

let proto;   // --protocol-test
let chat;    // normal mode, small heartbeat, a configured namespace, CORS
const open = [];
before(async () => {
  proto = await Server.start({ workers: WORKERS, args: ['--protocol-test'] });
  chat = await Server.start({
    workers: WORKERS,
    args: ['--sio-namespace', '/team', '--cors-origin', ALLOWED,
           '--eio-ping-interval-ms', String(PING_INTERVAL),
           '--eio-ping-timeout-ms', String(PING_TIMEOUT),
           '--sio-connect-timeout-ms', String(CONNECT_TIMEOUT)],
  });
});
after(async () => {
  for (const c of open) c.close();
  if (proto) await proto.stop();
  if (chat) await chat.stop();
});

let nextIp = 1;
const ip = () => `127.1.70.${nextIp++}`;
const connect = async (server, opts) => {
  const c = SioClient.create(server.port, { ip: ip(), ...opts });
  open.push(c);
  await c.connected(opts?.timeoutMs ?? 10000);
  return c;
};
const bin = (...bytes) => Buffer.from(bytes);

describe('protocol-test handlers with socket.io-client', () => {
  for (const [label, opts] of [
    ['v4 websocket-only', { transports: ['websocket'] }],
    ['v4 polling-only', { transports: ['polling'] }],
    ['v4 default (polling, then upgrade)', {}],
    ['v2 (Engine.IO 3) default', { version: 2 }],
  ]) {
    test(`${label}: event echo with binary attachments, acks with binary`, async () => {
      const c = await connect(proto, opts);
      if (opts.transports) assert.equal(c.transport, opts.transports[0]);
      // The server emits `auth` with the handshake's auth payload on connect.
      await c.next('auth');
      c.emit('message', 1, '2', { 3: [true] }, bin(1, 2, 3), { nested: [bin(4, 5), 'x'] });
      const back = await c.next('message-back');
      assert.deepEqual(back, [1, '2', { 3: [true] }, bin(1, 2, 3), { nested: [bin(4, 5), 'x'] }]);
      const reply = await c.emitAck('message-with-ack', 'a', bin(9, 8, 7), { n: 1 });
      assert.deepEqual(reply, ['a', bin(9, 8, 7), { n: 1 }]);
      const reply2 = await c.emitAck('message-with-ack', 42);
      assert.deepEqual(reply2, [42]);
      // A bigger binary attachment (64 KiB) survives both directions.
      const big = Buffer.alloc(65536, 0xab);
      c.emit('message', big);
      const [echo] = await c.next('message-back');
      assert.ok(Buffer.isBuffer(echo) && echo.equals(big), '64 KiB attachment differs');
      if (!opts.transports && opts.version !== 2) await c.upgradedToWebSocket();
    });
  }

  test('auth payload: echoed on / and on /custom', async () => {
    const c = await connect(proto, { transports: ['websocket'], auth: { token: 'abc' } });
    assert.deepEqual(await c.next('auth'), [{ token: 'abc' }]);
    const d = await connect(proto, { nsp: '/custom', auth: { token: '123' } });
    assert.deepEqual(await d.next('auth'), [{ token: '123' }]);
    d.emit('message', 'on custom');
    assert.deepEqual(await d.next('message-back'), ['on custom']);
  });

  test('an unknown namespace: connect_error "Invalid namespace" (v4 and v2)', async () => {
    for (const version of [4, 2]) {
      const c = SioClient.create(proto.port, { ip: ip(), nsp: '/nope', version });
      open.push(c);
      await assert.rejects(c.connected(5000), /Invalid namespace/, `v${version}`);
    }
  });

  test('raw Engine.IO over WebSocket: 40 -> 40{"sid"}, 44 for an unknown namespace, ' +
       '41 keeps the connection', async () => {
    const ws = await QueueSocket.open(
      `ws://127.0.0.1:${proto.port}/socket.io/?EIO=4&transport=websocket`,
      { localAddress: ip() });
    open.push(ws);
    const openPacket = await ws.next();
    assert.equal(openPacket[0], '0');
    const o = JSON.parse(openPacket.slice(1));
    assert.deepEqual(Object.keys(o).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid',
                                             'upgrades']);
    assert.deepEqual(o.upgrades, []);
    ws.send('40');
    const connectReply = await ws.next();
    assert.match(connectReply, /^40\{/);
    const sioSid = JSON.parse(connectReply.slice(2)).sid;
    assert.equal(typeof sioSid, 'string');
    assert.notEqual(sioSid, o.sid, 'the Socket.IO sid must differ from the Engine.IO sid');
    assert.equal(await ws.next(), '42["auth",{}]');
    ws.send('40/random,');
    assert.equal(await ws.next(), '44/random,{"message":"Invalid namespace"}');
    ws.send('42["message","still here"]');
    assert.equal(await ws.next(), '42["message-back","still here"]');
    ws.send('41');
    ws.send('40/custom,');
    assert.match(await ws.next(), /^40\/custom,\{"sid":"[^"]+"\}$/);
    assert.equal(await ws.next(), '42/custom,["auth",{}]');
    ws.send('42/custom,1["message-with-ack","x"]');
    assert.equal(await ws.next(), '43/custom,1["x"]');
    assert.equal(ws.closed, false);
  });
});

describe('normal mode: configured namespaces serve the chat', () => {
  test('/team: login, presence and DMs; users of / and /team are one chat', async () => {
    const a = await connect(chat, { nsp: '/team' });
    const b = await connect(chat, { nsp: '/team', transports: ['websocket'] });
    a.emit('createsession', { email: 'ann@team', clientIP: a.ip });
    await a.next('accessgranted');
    b.emit('createsession', { email: 'ben@team', clientIP: b.ip });
    const [names] = await b.next('accessgranted');
    assert.ok(names.includes('ann@team') && names.includes('ben@team'), JSON.stringify(names));
    assert.deepEqual((await a.next('newClientOnline'))[0], { email: 'ben@team' });
    a.emit('newMessage', { to: 'ben@team', message: 'in team' });
    assert.deepEqual((await b.next('newMessage'))[0], { from: 'ann@team', text: 'in team' });
    const [r] = await a.emitAck('join', 'team-room');
    assert.equal(r.ok, true, JSON.stringify(r));

    // Every namespace serves the same chat: a user on / reaches a user on /team.
    const c = await connect(chat, {});
    c.emit('createsession', { email: 'cid@root', clientIP: c.ip });
    const [all] = await c.next('accessgranted');
    assert.ok(all.includes('ann@team'), JSON.stringify(all));
    c.emit('newMessage', { to: 'ann@team', message: 'from /' });
    assert.deepEqual((await a.next('newMessage'))[0], { from: 'cid@root', text: 'from /' });
  });

  test('an unconfigured namespace is refused', async () => {
    const c = SioClient.create(chat.port, { ip: ip(), nsp: '/other' });
    open.push(c);
    await assert.rejects(c.connected(5000), /Invalid namespace/);
  });
});

describe('heartbeat and timeouts', () => {
  const wsUrl = () => `ws://127.0.0.1:${chat.port}/socket.io/?EIO=4&transport=websocket`;

  test('the open packet carries the configured heartbeat', async () => {
    const { open: o } = await pollingHandshake(chat.port, ip());
    assert.equal(o.pingInterval, PING_INTERVAL);
    assert.equal(o.pingTimeout, PING_TIMEOUT);
    assert.equal(o.maxPayload, 1000000);
    assert.deepEqual(o.upgrades, ['websocket']);
  });

  test('a WebSocket client that stops answering pings is closed after interval + timeout',
       async () => {
    const ws = await QueueSocket.open(wsUrl(), { localAddress: ip() });
    open.push(ws);
    const start = Date.now();
    await ws.next();                                   // open packet
    ws.send('40');
    await ws.next();                                   // 40{"sid"}
    assert.equal(await ws.next(2000, { keepPings: true }), '2', 'the server pings first');
    await ws.waitClose(PING_INTERVAL + PING_TIMEOUT + 2000);
    const lived = ws.closedAt - start;
    assert.ok(lived >= PING_INTERVAL + PING_TIMEOUT - 50,
              `closed after ${lived} ms, before interval + timeout`);
    assert.ok(lived <= PING_INTERVAL + PING_TIMEOUT + 1000, `closed only after ${lived} ms`);
  });

  test('a client that answers pings stays connected', async () => {
    const ws = await QueueSocket.open(wsUrl(), { localAddress: ip() });
    open.push(ws);
    await ws.next();
    ws.send('40');
    await ws.next();
    const until = Date.now() + 4 * (PING_INTERVAL + PING_TIMEOUT);
    let pings = 0;
    while (Date.now() < until) {
      const m = await ws.next(PING_INTERVAL + PING_TIMEOUT + 500, { keepPings: true });
      if (m === '2') {
        pings++;
        ws.send('3');
      }
    }
    assert.ok(pings >= 3, `only ${pings} pings`);
    assert.equal(ws.closed, false);

    // The official client too.
    const c = await connect(chat, {});
    await new Promise((r) => setTimeout(r, 3 * (PING_INTERVAL + PING_TIMEOUT)));
    assert.equal(c.socket.connected, true, `disconnected: ${c.disconnectReason}`);
  });

  test('a polling session that stops polling is gone after interval + timeout (code 1)',
       async () => {
    const addr = ip();
    const { sid } = await pollingHandshake(chat.port, addr);
    await new Promise((r) => setTimeout(r, PING_INTERVAL + PING_TIMEOUT + 300));
    const r = await request(chat.port, {
      path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, localAddress: addr });
    assert.equal(r.status, 400, r.body);
    assert.deepEqual(errorBody(r), { code: 1, message: 'Session ID unknown' });
  });

  test('no Socket.IO CONNECT within --sio-connect-timeout-ms: the connection is closed',
       async () => {
    const ws = await QueueSocket.open(wsUrl(), { localAddress: ip() });
    open.push(ws);
    const start = Date.now();
    await ws.next();
    // Answer pings so that only the connect timeout can close it.
    const deadline = start + CONNECT_TIMEOUT + 2000;
    while (!ws.closed && Date.now() < deadline) {
      try {
        const m = await ws.next(200, { keepPings: true });
        if (m === '2') ws.send('3');
      } catch {
        // nothing within 200 ms, or closed
      }
    }
    assert.ok(ws.closed, `still open ${Date.now() - start} ms after the handshake`);
    const lived = ws.closedAt - start;
    assert.ok(lived >= CONNECT_TIMEOUT - 50, `closed after ${lived} ms`);
  });
});

describe('CORS (--cors-origin)', () => {
  test('an allowed Origin gets Access-Control-Allow-Origin; preflight answered', async () => {
    const addr = ip();
    const r = await request(chat.port, { path: '/socket.io/?EIO=4&transport=polling',
                                         headers: { Origin: ALLOWED }, localAddress: addr });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['access-control-allow-origin'], ALLOWED);
    const pre = await request(chat.port, {
      method: 'OPTIONS', path: '/socket.io/?EIO=4&transport=polling',
      headers: { Origin: ALLOWED, 'Access-Control-Request-Method': 'POST',
                 'Access-Control-Request-Headers': 'content-type' },
      localAddress: addr });
    assert.ok(pre.status === 204 || pre.status === 200, `preflight: ${pre.status} ${pre.body}`);
    assert.equal(pre.headers['access-control-allow-origin'], ALLOWED);
    assert.match(pre.headers['access-control-allow-methods'] ?? '', /POST/);
    // The official client with that Origin works end to end over polling.
    const c = await connect(chat, { transports: ['polling'],
                                    extraHeaders: { Origin: ALLOWED } });
    c.emit('createsession', { email: 'cors@example', clientIP: c.ip });
    await c.next('accessgranted');
  });

  test('another Origin is not granted', async () => {
    const r = await request(chat.port, { path: '/socket.io/?EIO=4&transport=polling',
                                         headers: { Origin: 'http://evil.example' },
                                         localAddress: ip() });
    const acao = r.headers['access-control-allow-origin'];
    assert.ok(acao === undefined || (acao !== 'http://evil.example' && acao !== '*'),
              `Access-Control-Allow-Origin: ${acao} (HTTP ${r.status})`);
  });
});
