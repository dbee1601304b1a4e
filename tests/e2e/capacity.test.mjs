// Fair shares and bounded answers (issue 17) against the real binary, 2 workers: names per client
// address (too_many_names, native and Socket.IO, counted), server_full only when the host's
// user table is full (counted), a message's limit on its escaped size (4 KiB of control
// characters is too_long), and a join's history cut to --chat-join-history-bytes (counted).
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/capacity.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { Server } = await import('./lib/server.mjs');
const { ChatClient } = await import('./lib/chat-client.mjs');
const { SioClient } = await import('./lib/sio-client.mjs');
const { metricsFrom } = await import('./lib/sio-raw.mjs');

const NAMES_PER_IP = 2;
const MAX_USERS = 8;
const JOIN_HISTORY = 20000;

let server;
before(async () => {
  server = await Server.start({
    workers: 2,
    args: ['--chat-max-names-per-ip', String(NAMES_PER_IP), '--chat-max-users', String(MAX_USERS),
           '--chat-join-history-bytes', String(JOIN_HISTORY), '--chat-rate', '0'],
  });
});
after(async () => {
  if (server) await server.stop();
});

const open = [];
async function login(ip, name) {
  const c = await ChatClient.connect(server.port, ip);
  open.push(c);
  return [c, await c.request({ type: 'login', name }, ['welcome', 'error'])];
}
after(() => {
  for (const c of open) c.close();
});

describe('names per address', () => {
  test(`native: a login over --chat-max-names-per-ip is too_many_names; another address is fine; ` +
       `Socket.IO gets the same answer`, async () => {
    const [, a] = await login('127.9.1.1', 'addr-a');
    const [b, bw] = await login('127.9.1.1', 'addr-b');
    assert.equal(a.type, 'welcome');
    assert.equal(bw.type, 'welcome');
    const [, c] = await login('127.9.1.1', 'addr-c');
    assert.equal(c.type, 'error');
    assert.equal(c.code, 'too_many_names');
    const [, d] = await login('127.9.1.2', 'addr-d');
    assert.equal(d.type, 'welcome', JSON.stringify(d));

    const s = await SioClient.connect(server.port, { ip: '127.9.1.1' });
    const [ack] = await s.emitAck('createsession', { email: 'addr-sio' });
    assert.equal(ack.ok, false, JSON.stringify(ack));
    assert.equal(ack.error, 'too_many_names');
    s.close();

    const m = await metricsFrom(server.port, '127.9.1.1');
    assert.ok(m.steerchat_chat_names_limit_total >= 2, JSON.stringify(m));
    assert.equal(m.steerchat_chat_server_full_total ?? 0, 0);
    // A logout frees a place.
    b.send({ type: 'logout' });
    let again;
    for (let i = 0; i < 50; i++) {
      [, again] = await login('127.9.1.1', `addr-e${i}`);
      if (again.type === 'welcome') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(again.type, 'welcome', JSON.stringify(again));
  });
});

describe('bounded answers', () => {
  test('4 KiB of control characters is too_long (its escaped size counts); a join returns at ' +
       `most --chat-join-history-bytes ${JOIN_HISTORY} of history, the newest`, async () => {
    const [s, sw] = await login('127.9.2.1', 'sender');
    assert.equal(sw.type, 'welcome');
    assert.equal((await s.request({ type: 'join', room: 'ctl' }, ['joined'])).type, 'joined');
    const controls = '\u0001'.repeat(4096);
    const r = await s.request({ type: 'say', room: 'ctl', text: controls }, ['message', 'error']);
    assert.equal(r.type, 'error');
    assert.equal(r.code, 'too_long');
    const most = '\u0001'.repeat(Math.floor(4096 / 6));
    for (let i = 0; i < 30; i++) {
      const m = await s.request({ type: 'say', room: 'ctl', text: most }, ['message', 'error']);
      assert.equal(m.type, 'message', JSON.stringify(m).slice(0, 200));
    }
    const [late] = await login('127.9.2.2', 'late');
    const j = await late.request({ type: 'join', room: 'ctl' }, ['joined']);
    const size = JSON.stringify(j.history).length;
    assert.ok(size <= JOIN_HISTORY, `history of ${size} bytes`);
    assert.ok(j.history.length >= 3 && j.history.length < 30, String(j.history.length));
    assert.ok(j.history.every((m) => m.text === most));
    // With `since` (whose answer carries `complete`), a cut history says it is not all.
    const [again] = await login('127.9.2.3', 'later');
    const js = await again.request({ type: 'join', room: 'ctl', since: 1 }, ['joined']);
    assert.equal(js.history.length, j.history.length);
    assert.equal(js.complete, false);
    const m = await metricsFrom(server.port, '127.9.2.2');
    assert.ok(m.steerchat_chat_history_trimmed_total >= 1, JSON.stringify(m));
    assert.ok(m.steerchat_chat_history_bytes_total >= size - 2000);
  });
});

describe('a full host', () => {
  test('server_full only when --chat-max-users names are held, counted', async () => {
    const held = [];
    let refused;
    for (let i = 0; i <= MAX_USERS && !refused; i++) {
      const ip = `127.9.3.${i + 1}`;
      const [, w] = await login(ip, `filler${i}`);
      if (w.type === 'welcome') held.push(ip);
      else refused = { ip, w };
    }
    assert.ok(refused, 'never refused');
    assert.equal(refused.w.code, 'server_full', JSON.stringify(refused.w));
    const m = await metricsFrom(server.port, refused.ip);
    assert.ok(m.steerchat_chat_server_full_total >= 1, JSON.stringify(m));
  });
});
