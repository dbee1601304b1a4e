// Room member events (issue 14) end to end across two workers (--steering bpf, client addresses
// the steering puts on different workers): native clients get {"type":"member_joined"|
// "member_left","room","name"} and socket.io-client 4 gets memberJoined / memberLeft {room, name}
// when another member joins or leaves, on either worker; the mover and non-members get none; a
// user who disconnects sends "offline" only (it means: left every room).
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/members.test.mjs
// Ordering, not timing, tells that something did not arrive: one log per worker, one loop per
// worker, so once a client has a later event from the same worker it has the earlier ones.
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

let server;
const onA = [];  // source addresses the steering puts on one worker
const onB = [];  // and on the other

// Source addresses 127.14.x.1 sorted by the worker that serves them, `n` on each.
async function addressesOnBothWorkers(n) {
  const anchor = (await healthzFrom(server.port, '127.14.1.1')).worker;
  for (let i = 1; i < 250 && (onA.length < n || onB.length < n); i++) {
    const ip = `127.14.${i}.1`;
    const side = (await healthzFrom(server.port, ip)).worker === anchor ? onA : onB;
    if (side.length < n) side.push(ip);
  }
  assert.ok(onA.length === n && onB.length === n,
            `addresses on both workers: ${onA.length} and ${onB.length} of ${n}`);
}

async function nativeUser(ip, name) {
  const c = await ChatClient.connect(server.port, ip);
  const w = await c.request({ type: 'login', name }, ['welcome', 'error']);
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  return c;
}

async function nativeJoin(c, room) {
  const j = await c.request({ type: 'join', room }, ['joined', 'error']);
  assert.equal(j.type, 'joined', JSON.stringify(j));
  return j.members;
}

async function sioUser(ip, name) {
  const c = await SioClient.connect(server.port, { ip });
  c.emit('createsession', { email: name });
  await c.next('accessgranted');
  return c;
}

const isMember = (m) => m.type === 'member_joined' || m.type === 'member_left';
const joinedMsg = (room, name) => ({ type: 'member_joined', room, name });
const leftMsg = (room, name) => ({ type: 'member_left', room, name });

describe('room members across workers', { skip: !bpf && 'needs --steering bpf (root)' }, () => {
  const clients = [];
  before(async () => {
    server = await Server.start({ workers: 2, steering: 'bpf' });
    await addressesOnBothWorkers(3);
  });
  after(async () => {
    for (const c of clients) c.close();
    if (server) await server.stop();
  });
  const keep = (c) => {
    clients.push(c);
    return c;
  };

  test('joins and leaves reach the other members on both workers and both protocols, ' +
       'a disconnect sends offline only', async () => {
    const a = keep(await nativeUser(onA[0], 'amy'));          // worker A
    const b = keep(await nativeUser(onB[0], 'bob'));          // worker B
    const c = keep(await sioUser(onB[1], 'cat'));             // worker B, Socket.IO
    const d = keep(await sioUser(onA[1], 'dan'));             // worker A, Socket.IO
    const outsider = keep(await nativeUser(onB[2], 'out'));  // worker B, another room
    assert.deepEqual(await nativeJoin(outsider, 'elsewhere'), ['out']);
    const room = 'members1';

    assert.deepEqual(await nativeJoin(a, room), ['amy']);
    assert.deepEqual(await nativeJoin(b, room), ['amy', 'bob']);
    assert.deepEqual(await a.next(isMember, 5000, 'member_joined bob'), joinedMsg(room, 'bob'));

    const [cj] = await c.emitAck('join', room);
    assert.deepEqual(cj.members, ['amy', 'bob', 'cat']);
    assert.deepEqual(await a.next(isMember, 5000, 'member_joined cat'), joinedMsg(room, 'cat'));
    assert.deepEqual(await b.next(isMember, 5000, 'member_joined cat'), joinedMsg(room, 'cat'));

    const [dj] = await d.emitAck('join', { room });
    assert.deepEqual(dj.members, ['amy', 'bob', 'cat', 'dan']);
    assert.deepEqual(await c.next('memberJoined'), [{ room, name: 'dan' }]);
    assert.deepEqual(await a.next(isMember, 5000, 'member_joined dan'), joinedMsg(room, 'dan'));
    assert.deepEqual(await b.next(isMember, 5000, 'member_joined dan'), joinedMsg(room, 'dan'));

    // bob leaves: everyone else in the room hears it once; bob hears nothing of his own.
    assert.deepEqual(await b.request({ type: 'leave', room }, ['left', 'error']),
                     { type: 'left', room });
    assert.deepEqual(await a.next(isMember, 5000, 'member_left bob'), leftMsg(room, 'bob'));
    assert.deepEqual(await c.next('memberLeft'), [{ room, name: 'bob' }]);
    assert.deepEqual(await d.next('memberLeft'), [{ room, name: 'bob' }]);

    // cat goes away (the connection drops): offline only, no memberLeft.
    c.close();
    await a.next((m) => m.type === 'offline' && m.name === 'cat', 5000, 'offline cat');
    const [off] = await d.next('clientOffline', (n) => n === 'cat');
    assert.equal(off, 'cat');

    // Fences: a message of amy's (worker A) and a DM from bob (worker B) come after every
    // member event of either worker that could still be on its way.
    await a.request({ type: 'say', room, text: 'fence' }, ['message']);
    await d.next('message', (m) => m.text === 'fence');
    for (const to of ['amy', 'dan', 'out']) {
      b.send({ type: 'dm', to, text: 'fence' });  // no answer to the sender
    }
    await a.next((m) => m.type === 'dm' && m.text === 'fence', 5000, 'dm fence');
    await d.next('newMessage', (m) => m.text === 'fence');
    await outsider.next((m) => m.type === 'dm' && m.text === 'fence', 5000, 'dm fence');
    // And a Socket.IO DM from dan (worker A) to the outsider: worker A's log is drained too.
    d.emit('newMessage', { to: 'out', message: 'fence2' });
    await outsider.next((m) => m.type === 'dm' && m.text === 'fence2', 5000, 'dm fence2');

    assert.deepEqual(a.take(isMember), [], 'amy: each change once, no memberLeft for cat');
    assert.deepEqual(b.take(isMember), [], 'bob: nothing after he left, none of his own');
    assert.deepEqual(d.take('memberJoined'), [], 'dan: none of his own join');
    assert.deepEqual(d.take('memberLeft'), [], 'dan: no memberLeft for cat');
    assert.deepEqual(outsider.take(isMember), [], 'not to a non-member');

    // Counted as every event is; stale ones (none here) have their own counter.
    const m = await metricsFrom(server.port, onA[0]);
    assert.ok(m.steerchat_chat_events_total > 0);
    assert.equal(m.steerchat_chat_stale_records_total, 0);

    // The registry agrees with what the members derived.
    assert.deepEqual(await nativeJoin(outsider, room), ['amy', 'dan', 'out']);
    assert.deepEqual(await a.next(isMember, 5000, 'member_joined out'), joinedMsg(room, 'out'));
  });
});
