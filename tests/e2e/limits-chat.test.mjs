// Chat limits (issue 9, item 3) against the real binary: requests per second per connection and
// per user (a token bucket: rate_limited errors, then close 1008 / a server disconnect after
// --chat-rate-close-after refusals in a row) for the native protocol and Socket.IO (the official
// socket.io-client 4), while other users' messages keep flowing; rooms per user (too_many_rooms).
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/limits-chat.test.mjs
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
const { SioClient, sleep } = await import('./lib/sio-client.mjs');
const { metricsFrom } = await import('./lib/sio-raw.mjs');

// One token a second: a test's burst is never refilled by more than a token or two.
const RATE = 1;
const BURST = 20;
const CLOSE_AFTER = 30;
const MAX_ROOMS = 5;

let server;
before(async () => {
  server = await Server.start({
    workers: 2,
    args: ['--chat-rate', String(RATE), '--chat-burst', String(BURST), '--chat-rate-close-after',
           String(CLOSE_AFTER), '--chat-max-rooms-per-user', String(MAX_ROOMS)],
  });
});
after(async () => {
  if (server) await server.stop();
});

async function nativeUser(ip, name) {
  const c = await ChatClient.connect(server.port, ip);
  const w = await c.request({ type: 'login', name }, ['welcome', 'error']);
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  return c;
}

// Waits until `c` has received `n` messages matching `pred` (and a moment for any extra).
async function settle(c, pred, n) {
  const deadline = Date.now() + 5000;
  while (c.inbox.filter(pred).length < n && Date.now() < deadline) await sleep(20);
  await sleep(200);
  return c.take(pred);
}

describe('messages per second (native protocol)', () => {
  test('a burst over --chat-burst is refused rate_limited, the connection stays usable; a ' +
       'sustained flood closes it 1008; another user\'s messages keep flowing', async () => {
    const flooder = await nativeUser('127.8.1.1', 'flooder');
    const bystander = await nativeUser('127.8.1.2', 'bystander');
    for (const c of [flooder, bystander]) {
      assert.equal((await c.request({ type: 'join', room: 'busy' }, ['joined'])).type, 'joined');
    }
    const m0 = await metricsFrom(server.port, '127.8.1.1');
    // 2 of BURST tokens are spent (login, join): 25 says -> 18 accepted (19 or 20 if a token or
    // two came back meanwhile on a slow machine), the rest rate_limited.
    for (let i = 0; i < 25; i++) flooder.send({ type: 'say', room: 'busy', text: `m${i}` });
    const errors = await settle(flooder, (m) => m.type === 'error', 5);
    const echoed = flooder.take((m) => m.type === 'message');
    assert.ok(errors.length >= 5 && errors.length <= 7, JSON.stringify(errors));
    for (const e of errors) assert.equal(e.code, 'rate_limited');
    assert.equal(echoed.length + errors.length, 25);
    assert.equal(flooder.closed, false);
    // The bystander got exactly the accepted ones, in order.
    const seen = await settle(bystander, (m) => m.type === 'message', echoed.length);
    assert.deepEqual(seen.map((m) => m.text), echoed.map((m) => m.text));

    // A sustained flood: CLOSE_AFTER refusals in a row close the connection (1008).
    for (let i = 0; i < CLOSE_AFTER + 10; i++) flooder.send({ type: 'say', room: 'busy', text: 'x' });
    const deadline = Date.now() + 5000;
    while (!flooder.closed && Date.now() < deadline) await sleep(20);
    assert.equal(flooder.closeCode, 1008);

    // The bystander still chats: its own message comes back at once.
    const mine = await bystander.request({ type: 'say', room: 'busy', text: 'still fine' },
                                         ['message', 'error']);
    assert.equal(mine.text, 'still fine');
    const m1 = await metricsFrom(server.port, '127.8.1.1');
    // The refusals in a row include the last of the first burst.
    assert.ok(m1.steerchat_chat_rate_limited_total - m0.steerchat_chat_rate_limited_total >=
              CLOSE_AFTER);
    assert.ok(m1.steerchat_chat_rate_limit_closes_total -
              m0.steerchat_chat_rate_limit_closes_total >= 1);
    bystander.close();
  });

  test('the bucket belongs to the user: logging out and in again does not refill it',
       async () => {
    const ip = '127.8.2.1';
    const a = await nativeUser(ip, 'sameuser');
    let refused = null;
    for (let i = 0; i < BURST + 2 && !refused; i++) {
      const r = await a.request({ type: 'join', room: 'r' }, ['joined', 'error']);
      if (r.type === 'error') refused = r;
    }
    assert.equal(refused?.code, 'rate_limited');
    // (A logout request would be refused too: every request counts.) The connection goes away;
    // a new one (with a fresh connection bucket) logs in as the same name once the server has
    // seen the close: the name's bucket is still empty. Another name is served.
    a.close();
    let b;
    for (let attempt = 0; !b; attempt++) {
      const c = await ChatClient.connect(server.port, ip);
      const w = await c.request({ type: 'login', name: 'sameuser' }, ['welcome', 'error']);
      if (w.type === 'welcome') {
        b = c;
      } else {
        assert.equal(w.code, 'name_taken');
        assert.ok(attempt < 20, 'the old connection\'s login was never released');
        c.close();
        await sleep(20);
      }
    }
    // The old connection's bucket ran dry first (it also paid for the login): the name's bucket
    // holds at most one token.
    const answers = async (c) => {
      const out = [];
      for (let i = 0; i < 3; i++) {
        const r = await c.request({ type: 'join', room: 'r' }, ['joined', 'error']);
        out.push(r.type === 'error' ? r.code : r.type);
      }
      return out;
    };
    const again = await answers(b);
    assert.ok(again.filter((x) => x === 'rate_limited').length >= 2, JSON.stringify(again));
    const other = await nativeUser(ip, 'otheruser');
    assert.deepEqual(await answers(other), ['joined', 'joined', 'joined']);
    b.close();
    other.close();
  });
});

describe('messages per second (Socket.IO)', () => {
  test('acks carry rate_limited, events without an ack get chaterror, a sustained flood is ' +
       'disconnected by the server; a native user in the room sees only what was accepted',
       async () => {
    const native = await nativeUser('127.8.3.1', 'listener');
    await native.request({ type: 'join', room: 'sio-busy' }, ['joined']);
    const c = await SioClient.connect(server.port, { ip: '127.8.3.2' });
    c.emit('createsession', { email: 'sioflood' });
    await c.next('accessgranted');
    const [joined] = await c.emitAck('join', 'sio-busy');
    assert.equal(joined.ok, true);
    // 2 tokens spent: 22 says with acks -> 18 (19 or 20 on a slow machine) ok, the rest
    // rate_limited.
    const acks = await Promise.all(Array.from({ length: 22 }, (_, i) =>
      c.emitAck('say', { room: 'sio-busy', text: `s${i}` }).then(([a]) => a)));
    const ok = acks.filter((a) => a.ok);
    const refused = acks.filter((a) => !a.ok);
    assert.ok(refused.length >= 2 && refused.length <= 4, JSON.stringify(acks));
    for (const a of refused) assert.equal(a.error, 'rate_limited');
    const seen = await settle(native, (m) => m.type === 'message' && m.from === 'sioflood',
                              ok.length);
    assert.equal(seen.length, ok.length);

    // Without an ack: chaterror events; CLOSE_AFTER refusals in a row: a server disconnect.
    for (let i = 0; i < CLOSE_AFTER + 10; i++) c.emit('say', { room: 'sio-busy', text: 'x' });
    const reason = await c.disconnected(5000);
    assert.equal(reason, 'io server disconnect');
    const errs = c.take('chaterror');
    assert.ok(errs.length >= CLOSE_AFTER - 5, `${errs.length} chaterror events`);
    assert.equal(errs[0][0].error, 'rate_limited');
    assert.equal(errs[0][0].event, 'say');

    // The native user is unaffected.
    const mine = await native.request({ type: 'say', room: 'sio-busy', text: 'ok' },
                                      ['message', 'error']);
    assert.equal(mine.text, 'ok');
    c.close();
    native.close();
  });
});

describe('rooms per user', () => {
  test('native: a join over --chat-max-rooms-per-user is too_many_rooms; rejoining or after a ' +
       'leave is fine', async () => {
    const c = await nativeUser('127.8.4.1', 'roomy');
    for (let i = 1; i <= MAX_ROOMS; i++) {
      assert.equal((await c.request({ type: 'join', room: `room${i}` }, ['joined', 'error'])).type,
                   'joined');
    }
    const over = await c.request({ type: 'join', room: 'one-too-many' }, ['joined', 'error']);
    assert.equal(over.type, 'error');
    assert.equal(over.code, 'too_many_rooms');
    assert.equal((await c.request({ type: 'join', room: 'room1' }, ['joined', 'error'])).type,
                 'joined');
    assert.equal((await c.request({ type: 'leave', room: 'room1' }, ['left', 'error'])).type,
                 'left');
    assert.equal((await c.request({ type: 'join', room: 'one-too-many' }, ['joined', 'error'])).type,
                 'joined');
    c.close();
  });

  test('Socket.IO: the ack says too_many_rooms', async () => {
    const c = await SioClient.connect(server.port, { ip: '127.8.4.2' });
    c.emit('createsession', { email: 'sioroomy' });
    await c.next('accessgranted');
    for (let i = 1; i <= MAX_ROOMS; i++) {
      const [a] = await c.emitAck('join', `sroom${i}`);
      assert.equal(a.ok, true, JSON.stringify(a));
    }
    const [over] = await c.emitAck('join', { room: 'sroom-over' });
    assert.equal(over.ok, false);
    assert.equal(over.error, 'too_many_rooms');
    const m = await metricsFrom(server.port, '127.8.4.2');
    assert.ok(m.steerchat_chat_room_limit_total >= 1);
    c.close();
  });
});
