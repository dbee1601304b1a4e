// Engine.IO limits (issue 9, items 3 and 7), replayed against the real binary with one worker:
// a flood of polling handshakes from one address (refused over --eio-max-sessions-per-ip with 429,
// another address still served, the worker's memory bounded, the unpolled sessions closed after
// --eio-first-poll-timeout-ms), logged-in sessions that never poll (every login queued to every
// other session: closed by the queue bounds and the first-poll deadline, memory bounded, a
// client on another address unharmed), the per-session queue bound, and a WebSocket for a
// session that is already upgraded or upgrading (accepted, then closed at once, as Node's
// engine.io does).
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/limits-eio.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { Server, binaryPath } = await import('./lib/server.mjs');
const { ChatClient } = await import('./lib/chat-client.mjs');
const { SioClient } = await import('./lib/sio-client.mjs');
const { request, pollingHandshake, errorBody, metricsFrom, QueueSocket } =
  await import('./lib/sio-raw.mjs');
const { workerRss, handshakeFlood, unpolledLogins, sleep, sanitized } =
  await import('./lib/floods.mjs');

const PER_IP = 1000;              // the default of --eio-max-sessions-per-ip
const FIRST_POLL_MS = 3000;
const MAX_QUEUED = 64 << 10;
const MAX_QUEUED_TOTAL = 4 << 20;

let server;
before(async () => {
  server = await Server.start({
    workers: 1,
    args: ['--eio-first-poll-timeout-ms', String(FIRST_POLL_MS), '--eio-max-queued',
           String(MAX_QUEUED), '--eio-max-queued-total', String(MAX_QUEUED_TOTAL)],
  });
});
after(async () => {
  if (server) await server.stop();
});

const metrics = () => metricsFrom(server.port, '127.9.0.1');
const mib = (kib) => (kib / 1024).toFixed(1);
// RSS bounds hold for a normal build; under ASan RSS is only reported.
const checkRss = !sanitized(binaryPath());

// The next message that is not a noop ("6" ends polling for a client that had no poll open).
async function nextPacket(ws) {
  for (;;) {
    const m = await ws.next();
    if (m !== '6') return m;
  }
}

// Waits until pred(metrics) holds; returns the metrics.
async function metricsUntil(pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = await metrics();
    if (pred(m)) return m;
    if (Date.now() > deadline) throw new Error(`${what} not within ${timeoutMs} ms: ` +
                                               JSON.stringify(m));
    await sleep(200);
  }
}

describe('Engine.IO sessions per address and the first poll', () => {
  test('10000 handshakes from one address: over 1000 refused 429, memory bounded, another ' +
       'address served, the unpolled sessions closed after the first-poll deadline', async () => {
    const ip = '127.9.1.1';
    const m0 = await metrics();
    const rss0 = await workerRss(server.port, ip);
    const { counts, bodies } = await handshakeFlood(server.port, ip, 10000, 32);
    const rss1 = await workerRss(server.port, ip);
    console.log(`# handshake flood: ${JSON.stringify(counts)}; worker RSS ${mib(rss0.kib)} -> ` +
                `${mib(rss1.kib)} MiB`);
    assert.equal(rss1.pid, rss0.pid, 'the worker was replaced');
    // Sessions time out during the flood, freeing room for more: at least 1000 get in, and at
    // most 1000 per deadline the flood lasted (plus the first 1000).
    assert.ok(counts[200] >= PER_IP && counts[429] > 0, JSON.stringify(counts));
    assert.equal(counts[200] + counts[429], 10000, JSON.stringify(counts));
    assert.deepEqual(JSON.parse(bodies[429]).code, 4);
    assert.match(JSON.parse(bodies[429]).message, /Too many sessions from this address/);
    // ~2 KiB per session kept: 10000 kept sessions would be ~20 MiB.
    assert.ok(!checkRss || rss1.kib - rss0.kib < 10 * 1024,
              `worker RSS grew ${mib(rss1.kib - rss0.kib)} MiB`);

    // Another address on the same (only) worker is served meanwhile.
    const other = await pollingHandshake(server.port, '127.9.1.2');
    assert.ok(other.sid);

    // No poll came: every session is closed at the first-poll deadline; the address may open
    // sessions again.
    const m = await metricsUntil((x) => x.steerchat_eio_sessions === 0, FIRST_POLL_MS + 3000,
                                 'every flood session closed');
    assert.equal(m.steerchat_eio_first_poll_timeouts_total - m0.steerchat_eio_first_poll_timeouts_total,
                 counts[200] + 1);
    assert.equal(m.steerchat_eio_refused_sessions_total - m0.steerchat_eio_refused_sessions_total,
                 counts[429]);
    const again = await pollingHandshake(server.port, ip);
    const r = await request(server.port, {
      path: `/socket.io/?EIO=4&transport=polling&sid=${other.sid}`, localAddress: '127.9.1.2' });
    assert.equal(r.status, 400);
    assert.equal(errorBody(r).code, 1, 'a session closed at the deadline is unknown');
    assert.ok(again.sid);
  });

  test('the official clients (socket.io-client 4 and 2, polling first) are not hurt by the ' +
       'first-poll deadline', async () => {
    for (const version of [4, 2]) {
      const c = await SioClient.connect(server.port, { ip: `127.9.2.${version}`, version });
      await sleep(FIRST_POLL_MS + 500);
      assert.ok(c.socket.connected, `socket.io-client ${version} was disconnected`);
      c.emit('createsession', { email: `deadline${version}` });
      await c.next('accessgranted');
      const [ack] = await c.emitAck('join', 'deadline-room');
      assert.equal(ack.ok, true);
      c.close();
    }
  });
});

describe('polling sessions that log in and never poll', () => {
  test('1500 logins, never polled: closed by the queue bounds or the first-poll deadline, ' +
       'memory bounded, a user on another address unharmed', async () => {
    const watcherIp = '127.9.3.1';
    const native = await ChatClient.connect(server.port, watcherIp);
    assert.equal((await native.request({ type: 'login', name: 'watcher' }, ['welcome'])).type,
                 'welcome');
    const sio = await SioClient.connect(server.port, { ip: '127.9.3.2' });
    await sio.upgradedToWebSocket();
    sio.emit('createsession', { email: 'healthy@sio' });
    await sio.next('accessgranted');

    const m0 = await metrics();
    const rss0 = await workerRss(server.port, watcherIp);
    const N = 1500;
    const ips = ['127.9.4.1', '127.9.4.2', '127.9.4.3', '127.9.4.4'];
    const { counts } = await unpolledLogins(server.port, ips, N, 'flood', 32);
    const rss1 = await workerRss(server.port, watcherIp);
    const m1 = await metrics();
    console.log(`# unpolled logins: POSTs ${JSON.stringify(counts)}; worker RSS ` +
                `${mib(rss0.kib)} -> ${mib(rss1.kib)} MiB; queued ` +
                `${mib(m1.steerchat_eio_queued_bytes / 1024)} MiB`);
    assert.equal(counts[200], N, JSON.stringify(counts));
    // Unbounded, N^2/2 presence packets (~110 bytes each) would be ~120 MiB.
    assert.ok(!checkRss || rss1.kib - rss0.kib < 48 * 1024, `worker RSS grew ${mib(rss1.kib - rss0.kib)} MiB`);
    assert.ok(m1.steerchat_eio_queued_bytes <= MAX_QUEUED_TOTAL + (1 << 20),
              `queued ${m1.steerchat_eio_queued_bytes}`);

    // Every flood session ends, each closed once by one of the three rules.
    const m = await metricsUntil((x) => x.steerchat_eio_sessions === 1 &&
                                        x.steerchat_chat_sessions === 2,
                                 FIRST_POLL_MS + 5000, 'every flood session closed');
    const d = (k) => m[k] - m0[k];
    const closed = d('steerchat_eio_queue_overflows_total') +
                   d('steerchat_eio_queue_evictions_total') +
                   d('steerchat_eio_first_poll_timeouts_total');
    console.log(`# closed: ${d('steerchat_eio_queue_overflows_total')} over --eio-max-queued, ` +
                `${d('steerchat_eio_queue_evictions_total')} over --eio-max-queued-total, ` +
                `${d('steerchat_eio_first_poll_timeouts_total')} at the first-poll deadline`);
    assert.equal(closed, N);
    assert.ok(d('steerchat_eio_queue_evictions_total') > 0);
    assert.equal(m.steerchat_eio_queued_bytes, 0);

    // The users on other addresses are still served.
    sio.emit('newMessage', { to: 'watcher', message: 'still here' });
    const dm = await native.next((x) => x.type === 'dm', 5000, 'the dm');
    assert.equal(dm.text, 'still here');
    native.send({ type: 'dm', to: 'healthy@sio', text: 'me too' });
    const [got] = await sio.next('newMessage', (x) => x.text === 'me too');
    assert.equal(got.from, 'watcher');
    assert.ok(sio.socket.connected);
    native.close();
    sio.close();
  });

  test('a session that polled once, then no more, is closed over --eio-max-queued', async () => {
    const ip = '127.9.5.1';
    const { sid } = await pollingHandshake(server.port, ip);
    const url = `/socket.io/?EIO=4&transport=polling&sid=${sid}`;
    const login = `40\x1e42${JSON.stringify(['createsession', { email: 'sleeper' }])}`;
    assert.equal((await request(server.port, { method: 'POST', path: url, body: login,
                                               localAddress: ip })).body, 'ok');
    const first = await request(server.port, { path: url, localAddress: ip });
    assert.match(first.body, /accessgranted/);
    const before = await metrics();
    const sender = await ChatClient.connect(server.port, '127.9.5.2');
    await sender.request({ type: 'login', name: 'sender' }, ['welcome']);
    const text = 'x'.repeat(4000);
    for (let i = 0; i < 20; i++) sender.send({ type: 'dm', to: 'sleeper', text });
    const m = await metricsUntil((x) => x.steerchat_eio_queue_overflows_total >
                                        before.steerchat_eio_queue_overflows_total,
                                 5000, 'the overflow');
    assert.equal(m.steerchat_eio_queue_overflows_total - before.steerchat_eio_queue_overflows_total,
                 1);
    const r = await request(server.port, { path: url, localAddress: ip });
    assert.equal(r.status, 400);
    assert.equal(errorBody(r).code, 1);
    sender.close();
  });
});

describe('a WebSocket for a session already on WebSocket, or moving to it', () => {
  const wsUrl = (sid) =>
    `ws://127.0.0.1:${server.port}/socket.io/?EIO=4&transport=websocket&sid=${sid}`;

  test('after the upgrade: accepted (101), then closed at once without a status', async () => {
    const ip = '127.9.6.1';
    const before = await metrics();
    const { sid } = await pollingHandshake(server.port, ip);
    const ws = await QueueSocket.open(wsUrl(sid), { localAddress: ip });
    ws.send('2probe');
    assert.equal(await ws.next(), '3probe');
    ws.send('5');
    ws.send('40');
    assert.match(await nextPacket(ws), /^40\{"sid":/);

    const second = await QueueSocket.open(wsUrl(sid), { localAddress: ip });  // not refused
    await second.waitClose(2000);
    assert.equal(second.closeCode, 1005, 'a Close frame without a status code, as Node sends');
    // The upgraded session goes on.
    ws.send(`42${JSON.stringify(['createsession', { email: 'upgraded' }])}`);
    assert.match(await nextPacket(ws), /accessgranted/);
    assert.equal(ws.closed, false);
    const m = await metrics();
    assert.equal(m.steerchat_eio_websockets_refused_total -
                 before.steerchat_eio_websockets_refused_total, 1);
    ws.close();
  });

  test('during the upgrade (probe open): the second WebSocket is accepted, then closed',
       async () => {
    const ip = '127.9.6.2';
    const { sid } = await pollingHandshake(server.port, ip);
    const probe = await QueueSocket.open(wsUrl(sid), { localAddress: ip });
    probe.send('2probe');
    assert.equal(await probe.next(), '3probe');
    const second = await QueueSocket.open(wsUrl(sid), { localAddress: ip });
    await second.waitClose(2000);
    assert.equal(second.closeCode, 1005);
    // The probe still completes the upgrade.
    probe.send('5');
    probe.send('40');
    assert.match(await nextPacket(probe), /^40\{"sid":/);
    probe.close();
  });

  test('an unknown sid is still answered 400 (code 1), as Node does', async () => {
    await assert.rejects(QueueSocket.open(wsUrl('nosuchsession'), { localAddress: '127.9.6.3' }),
                         (e) => e.status === 400 && JSON.parse(e.body).code === 1);
  });
});
