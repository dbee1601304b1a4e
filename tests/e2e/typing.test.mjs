// The typing event (issue 10) end to end across two workers (--steering bpf, client addresses the
// steering puts on different workers): a native client and a socket.io-client 4 on the other
// worker both receive a member's typing; the typist gets none back; a later join replays none;
// only members may send it (not_in_room, as for say); over --chat-typing-rate the excess is
// dropped silently and counted in /metrics.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/typing.test.mjs
// Ordering, not timing, tells that something did not arrive: a member's typing and its next
// message travel in order (one log per worker, one loop per worker), so once a client has the
// message it would already have the typing before it.
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

// One token a second, three at once: a test's burst is refilled by a token or two at most.
const TYPING_RATE = 1;
const TYPING_BURST = 3;
const bpf = steeringMode() === 'bpf';

let server;
const onA = [];  // source addresses the steering puts on one worker
const onB = [];  // and on the other

// Source addresses 127.12.x.1 sorted by the worker that serves them, `n` on each.
async function addressesOnBothWorkers(n) {
  const anchor = (await healthzFrom(server.port, '127.12.1.1')).worker;
  for (let i = 1; i < 250 && (onA.length < n || onB.length < n); i++) {
    const ip = `127.12.${i}.1`;
    const side = (await healthzFrom(server.port, ip)).worker === anchor ? onA : onB;
    if (side.length < n) side.push(ip);
  }
  assert.ok(onA.length === n && onB.length === n,
            `addresses on both workers: ${onA.length} and ${onB.length} of ${n}`);
}

async function nativeUser(ip, name, room) {
  const c = await ChatClient.connect(server.port, ip);
  const w = await c.request({ type: 'login', name }, ['welcome', 'error']);
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  if (room) {
    const j = await c.request({ type: 'join', room }, ['joined', 'error']);
    assert.equal(j.type, 'joined', JSON.stringify(j));
  }
  return c;
}

async function sioUser(ip, name, room) {
  const c = await SioClient.connect(server.port, { ip });
  c.emit('createsession', { email: name });
  await c.next('accessgranted');
  if (room) {
    const [j] = await c.emitAck('join', room);
    assert.equal(j.ok, true, JSON.stringify(j));
  }
  return c;
}

const isTyping = (m) => m.type === 'typing';
const said = (text) => (m) => m.type === 'message' && m.text === text;

describe('typing across workers', { skip: !bpf && 'needs --steering bpf (root)' }, () => {
  const clients = [];
  before(async () => {
    server = await Server.start({
      workers: 2,
      steering: 'bpf',
      args: ['--chat-typing-rate', String(TYPING_RATE), '--chat-typing-burst',
             String(TYPING_BURST)],
    });
    await addressesOnBothWorkers(7);
  });
  after(async () => {
    for (const c of clients) c.close();
    if (server) await server.stop();
  });
  const keep = (c) => {
    clients.push(c);
    return c;
  };

  test('a native and a Socket.IO member on the other worker get it, the typist does not, a ' +
       'later join replays none', async () => {
    const typist = keep(await nativeUser(onA[0], 'typist', 'room1'));
    const nearby = keep(await nativeUser(onA[1], 'nearby', 'room1'));  // the typist's worker
    const native = keep(await nativeUser(onB[0], 'native-b', 'room1'));
    const sio = keep(await sioUser(onB[1], 'sio-b', 'room1'));
    const outsider = keep(await nativeUser(onB[2], 'outsider', 'elsewhere'));

    typist.send({ type: 'typing', room: 'room1' });
    const want = { type: 'typing', room: 'room1', from: 'typist' };
    assert.deepEqual(await native.next(isTyping, 5000, 'typing'), want);
    assert.deepEqual(await nearby.next(isTyping, 5000, 'typing'), want);
    assert.deepEqual(await sio.next('typing'), [{ room: 'room1', from: 'typist' }]);

    // The typist's next message comes after its typing everywhere: once each has the message,
    // nothing more is on its way.
    const own = await typist.request({ type: 'say', room: 'room1', text: 'mark1' },
                                     ['message', 'error']);
    assert.equal(own.text, 'mark1');
    await native.next(said('mark1'), 5000, 'mark1');
    await nearby.next(said('mark1'), 5000, 'mark1');
    await sio.next('message', (m) => m.text === 'mark1');
    assert.deepEqual(typist.take(isTyping), [], 'not echoed to the typist');
    assert.deepEqual(outsider.take(isTyping), [], 'not sent outside the room');
    assert.deepEqual([native, nearby].map((c) => c.take(isTyping)), [[], []], 'once');
    assert.deepEqual(sio.take('typing'), [], 'once');

    // Socket.IO typing (the room as a string or {room}, like join), to the native members.
    const [ack] = await sio.emitAck('typing', { room: 'room1' });
    assert.deepEqual(ack, { ok: true, room: 'room1' });
    const fromSio = { type: 'typing', room: 'room1', from: 'sio-b' };
    assert.deepEqual(await typist.next(isTyping, 5000, 'typing'), fromSio);
    assert.deepEqual(await native.next(isTyping, 5000, 'typing'), fromSio);
    assert.deepEqual(await nearby.next(isTyping, 5000, 'typing'), fromSio);
    const [sayAck] = await sio.emitAck('say', { room: 'room1', text: 'mark2' });
    assert.equal(sayAck.ok, true);
    await sio.next('message', (m) => m.text === 'mark2');
    assert.deepEqual(sio.take('typing'), [], 'not echoed to the Socket.IO typist');

    // Not stored: a later member's history holds the messages only, and it gets no typing.
    const late = keep(await ChatClient.connect(server.port, onB[3]));
    await late.request({ type: 'login', name: 'late' }, ['welcome']);
    const joined = await late.request({ type: 'join', room: 'room1' }, ['joined']);
    assert.deepEqual(joined.history.map((m) => [m.type, m.text]),
                     [['message', 'mark1'], ['message', 'mark2']]);
    const lateSio = keep(await sioUser(onA[2], 'late-sio'));
    const [lateJoin] = await lateSio.emitAck('join', 'room1');
    assert.deepEqual(lateJoin.history.map((m) => m.text), ['mark1', 'mark2']);
    await typist.request({ type: 'say', room: 'room1', text: 'mark3' }, ['message']);
    await late.next(said('mark3'), 5000, 'mark3');
    await lateSio.next('message', (m) => m.text === 'mark3');
    assert.deepEqual(late.take(isTyping), []);
    assert.deepEqual(lateSio.take('typing'), []);
  });

  test('only members may send it: not_in_room, as for say', async () => {
    const member = keep(await nativeUser(onA[3], 'member', 'room2'));
    const native = keep(await nativeUser(onB[4], 'stranger', 'other'));
    const typed = await native.request({ type: 'typing', room: 'room2' }, ['error']);
    const spoke = await native.request({ type: 'say', room: 'room2', text: 'x' }, ['error']);
    assert.equal(typed.code, 'not_in_room');
    assert.deepEqual(typed, spoke);
    assert.equal((await native.request({ type: 'typing' }, ['error'])).code, 'bad_request');

    const sio = keep(await sioUser(onA[4], 'sio-stranger'));
    const [ack] = await sio.emitAck('typing', 'room2');
    assert.equal(ack.ok, false);
    assert.equal(ack.error, 'not_in_room');
    sio.emit('typing', 'room2');  // without an ack: a chaterror event
    const [err] = await sio.next('chaterror');
    assert.equal(err.event, 'typing');
    assert.equal(err.error, 'not_in_room');

    // Nothing reached the member: its own next message arrives with no typing before it.
    await member.request({ type: 'say', room: 'room2', text: 'alone' }, ['message']);
    assert.deepEqual(member.take(isTyping), []);
  });

  test('over --chat-typing-rate the excess is dropped silently and counted', async () => {
    const typist = keep(await nativeUser(onA[5], 'fast-typist'));
    const reader = keep(await nativeUser(onB[5], 'reader', 'room3'));
    assert.equal((await typist.request({ type: 'join', room: 'room3' }, ['joined'])).type,
                 'joined');
    const workerOfTypist = (await healthzFrom(server.port, typist.localAddress)).worker;
    const workerOfReader = (await healthzFrom(server.port, reader.localAddress)).worker;
    assert.notEqual(workerOfTypist, workerOfReader, 'the two are on different workers');
    const before = await metricsFrom(server.port, typist.localAddress);

    const SENT = 12;
    for (let i = 0; i < SENT; i++) typist.send({ type: 'typing', room: 'room3' });
    const own = await typist.request({ type: 'say', room: 'room3', text: 'done' },
                                     ['message', 'error']);
    assert.equal(own.text, 'done');
    await reader.next(said('done'), 5000, 'done');
    const got = reader.take(isTyping);
    // The burst, and at most a token or two that came back meanwhile on a slow machine.
    assert.ok(got.length >= TYPING_BURST && got.length <= TYPING_BURST + 2,
              `${got.length} of ${SENT} delivered`);
    assert.deepEqual(typist.take((m) => m.type === 'typing' || m.type === 'error'), [],
                     'no answer to dropped typing, no echo');
    const afterM = await metricsFrom(server.port, typist.localAddress);
    assert.equal(afterM.steerchat_chat_typing_dropped_total -
                 before.steerchat_chat_typing_dropped_total, SENT - got.length);
    assert.equal(afterM.steerchat_chat_rate_limited_total,
                 before.steerchat_chat_rate_limited_total, 'not refused as requests');
    assert.equal(typist.closed, false);

    // Socket.IO: dropped typing is still acknowledged ok (a hint has nothing to refuse).
    const sio = keep(await sioUser(onA[6], 'sio-fast', 'room3'));
    const acks = await Promise.all(Array.from({ length: 6 }, () =>
      sio.emitAck('typing', 'room3').then(([a]) => a)));
    for (const a of acks) assert.deepEqual(a, { ok: true, room: 'room3' });
    const [sayAck] = await sio.emitAck('say', { room: 'room3', text: 'sio-done' });
    assert.equal(sayAck.ok, true);
    await reader.next(said('sio-done'), 5000, 'sio-done');
    const fromSio = reader.take(isTyping);
    assert.ok(fromSio.length >= TYPING_BURST && fromSio.length <= TYPING_BURST + 2,
              `${fromSio.length} of 6 delivered`);
    for (const m of fromSio) {
      assert.deepEqual(m, { type: 'typing', room: 'room3', from: 'sio-fast' });
    }
  });
});
