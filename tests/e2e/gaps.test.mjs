// No silent gaps and reconnects without repeats (issue 17), end to end over two workers
// (--steering bpf: client addresses the steering puts on worker A or worker B) with a ring log
// of 64 KiB (--ring-size 65536, the smallest), so a few dozen room messages of 3 KB fill it
// (--chat-rate 0: the publisher sends them at once):
// * worker B is stopped (SIGSTOP, ~3 s) while a user on worker A publishes into a room: A cuts
//   B loose. Every client of B (native and socket.io-client 4) gets the loss notice ("gap": the
//   room, the last id read, what is resent / missed) and then ends with every message exactly
//   once, in seq order; with more than the room's history holds it ends with every message
//   still kept plus an explicit notice of the seq range it missed. /metrics counts it.
// * worker B is killed (SIGKILL) while A keeps publishing: its users reconnect to the respawned
//   B, log in again and join with the last id they saw (native join {since}, Socket.IO auth
//   {since}): they get exactly the messages they missed, in order, none they already had.
// * a presence storm (one Socket.IO client logging in and out 3000 times on worker A) keeps
//   worker B busy fanning presence out to 40 members of a room that A publishes into: every
//   room message arrives once, in order; if B fell behind far enough to lose records (it does
//   not always here: queueing a frame is cheap, SIGSTOP above is the sure way), every one of
//   its clients got the notice.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/gaps.test.mjs
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
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let server;
const onA = [];
const onB = [];

async function addressesOnBothWorkers(n) {
  const anchor = (await healthzFrom(server.port, '127.17.1.1')).worker;
  for (let i = 1; i < 250 && (onA.length < n || onB.length < n); i++) {
    const ip = `127.17.${i}.1`;
    const side = (await healthzFrom(server.port, ip)).worker === anchor ? onA : onB;
    if (side.length < n) side.push(ip);
  }
  assert.ok(onA.length === n && onB.length === n, `addresses: ${onA.length}, ${onB.length}`);
}

async function nativeUser(ip, name) {
  const c = await ChatClient.connect(server.port, ip);
  const w = await c.request({ type: 'login', name }, ['welcome', 'error']);
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  return c;
}

async function nativeJoin(c, room, since) {
  const j = await c.request({ type: 'join', room, ...(since !== undefined ? { since } : {}) },
                            ['joined', 'error']);
  assert.equal(j.type, 'joined', JSON.stringify(j).slice(0, 300));
  return j;
}

async function sioUser(ip, name, auth) {
  const c = await SioClient.connect(server.port, { ip, transports: ['websocket'], auth });
  c.emit('createsession', { email: name });
  await c.next('accessgranted');
  return c;
}

const text = (i) => `${i}|${'x'.repeat(3000)}`;

// Publishes messages `from`..`to` from the native client `pub` and waits for its own copies.
async function publish(pub, room, from, to) {
  for (let i = from; i <= to; i++) pub.send({ type: 'say', room, text: text(i), cid: i });
  const last = await pub.next((m) => m.type === 'message' && m.cid === to, 20000,
                              `own copy of ${to}`);
  return [...pub.take((m) => m.type === 'message'), last];
}

// The room messages a native client holds once `want` arrived or `ms` passed without any.
async function nativeMessages(c, room, want, ms = 8000, settle = 300) {
  const got = [];
  while (got.length < want) {
    try {
      got.push(await c.next((m) => m.type === 'message' && m.room === room, ms, 'message'));
    } catch {
      break;
    }
  }
  await sleep(settle);
  got.push(...c.take((m) => m.type === 'message' && m.room === room));
  return got;
}

async function sioMessages(c, room, want, ms = 8000) {
  const got = [];
  while (got.length < want) {
    try {
      const [m] = await c.next('message', (a) => a.room === room, ms);
      got.push(m);
    } catch {
      break;
    }
  }
  await sleep(300);
  for (const [m] of c.take('message')) if (m.room === room) got.push(m);
  return got;
}

const seqs = (ms) => ms.map((m) => m.seq);
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, k) => a + k);

async function stopWhile(pid, ms, fn) {
  process.kill(pid, 'SIGSTOP');
  try {
    await fn();
    await sleep(ms);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

describe('gaps and reconnects across workers', { skip: !bpf && 'needs --steering bpf (root)' },
         () => {
  const clients = [];
  const keep = (c) => {
    clients.push(c);
    return c;
  };
  before(async () => {
    // History of 256 KiB per room (the default is 64 KiB): the stall's 60 messages of 3 KB all
    // stay in it, so they can all be resent.
    server = await Server.start({ workers: 2, steering: 'bpf',
                                  args: ['--ring-size', '65536', '--chat-rate', '0',
                                         '--chat-history-bytes', '262144',
                                         '--chat-join-history-bytes', '0'] });
    await addressesOnBothWorkers(6);
  });
  after(async () => {
    for (const c of clients) c.close();
    if (server) await server.stop();
  });

  test('a stopped worker cut loose tells its clients and resends: every message once, in order',
       async () => {
    const room = 'stall';
    const pub = keep(await nativeUser(onA[0], 'pub'));
    const sub = keep(await nativeUser(onB[0], 'sub'));
    const sio = keep(await sioUser(onB[1], 'sio'));
    const idle = keep(await nativeUser(onB[2], 'idle'));  // in no room: told all the same
    await nativeJoin(pub, room);
    await nativeJoin(sub, room);
    const [sj] = await sio.emitAck('join', { room });
    assert.equal(sj.ok, true);
    const pidB = (await healthzFrom(server.port, onB[0])).pid;
    const before = await metricsFrom(server.port, onB[0]);

    const first = await publish(pub, room, 0, 0);
    const m0 = await sub.next((m) => m.type === 'message', 5000, 'message 0');
    assert.equal(m0.seq, 1);
    await sio.next('message');
    const N = 60;  // 180 KB into a 64 KiB log
    await stopWhile(pidB, 3000, () => publish(pub, room, 1, N));

    const gap = await sub.next((m) => m.type === 'gap', 10000, 'gap');
    assert.equal(gap.last_id, first[0].id, JSON.stringify(gap));
    assert.ok(gap.lost > 0);
    assert.equal(gap.rooms.length, 1);
    assert.equal(gap.rooms[0].room, room);
    assert.equal(gap.rooms[0].seq, N + 1);
    assert.equal(gap.rooms[0].missed, 0);
    assert.ok(gap.rooms[0].resent > 0);
    const [sgap] = await sio.next('gap', () => true, 10000);
    assert.deepEqual(sgap.rooms, gap.rooms);
    const igap = await idle.next((m) => m.type === 'gap', 10000, 'gap (idle)');
    assert.deepEqual(igap.rooms, []);

    const got = await nativeMessages(sub, room, N);
    assert.deepEqual(seqs(got), range(2, N + 1), 'every message once, in seq order');
    assert.deepEqual(got.map((m) => m.text), range(1, N).map(text));
    const sgot = await sioMessages(sio, room, N);
    assert.deepEqual(seqs(sgot), range(2, N + 1));
    // Live again: the next message arrives once.
    await publish(pub, room, N + 1, N + 1);
    assert.deepEqual(seqs(await nativeMessages(sub, room, 1, 3000)), [N + 2]);
    assert.deepEqual(seqs(await sioMessages(sio, room, 1, 3000)), [N + 2]);

    const after = await metricsFrom(server.port, onB[0]);
    const delta = (k) => (after[k] ?? 0) - (before[k] ?? 0);
    assert.ok(delta('steerchat_ring_lost_records_total') > 0);
    assert.ok(delta('steerchat_chat_gap_notices_total') >= 3, JSON.stringify(after));
    assert.equal(delta('steerchat_chat_resent_total'), gap.rooms[0].resent);
    assert.equal(delta('steerchat_chat_missed_total'), 0);
    console.log(`stall: worker B lost ${delta('steerchat_ring_lost_records_total')} records, ` +
                `told ${delta('steerchat_chat_gap_notices_total')} clients, resent ` +
                `${delta('steerchat_chat_resent_total')} messages, skipped ` +
                `${delta('steerchat_chat_repeats_skipped_total')} repeats`);
  });

  test('more than the history holds: an explicit notice of the seqs missed, the rest resent',
       async () => {
    const room = 'flood';
    const pub = keep(await nativeUser(onA[1], 'pub2'));
    const sub = keep(await nativeUser(onB[3], 'sub2'));
    await nativeJoin(pub, room);
    await nativeJoin(sub, room);
    const pidB = (await healthzFrom(server.port, onB[3])).pid;
    const N = 150;  // 450 KB: more than a room's history keeps (100 messages, 256 KiB)
    await stopWhile(pidB, 2000, () => publish(pub, room, 1, N));
    const gap = await sub.next((m) => m.type === 'gap', 10000, 'gap');
    const r = gap.rooms.find((x) => x.room === room);
    assert.ok(r && r.missed > 0, JSON.stringify(gap));
    const got = await nativeMessages(sub, room, N - r.missed);
    const have = new Set(seqs(got));
    assert.equal(have.size, got.length, 'no repeats');
    for (let s = 1; s <= N; s++) {
      const announced = s >= r.missed_from && s <= r.missed_to;
      assert.ok(have.has(s) !== announced, `seq ${s}: received or announced, not both/neither`);
    }
    assert.equal(got.length + r.missed, N);
    assert.equal(r.resent, N - r.missed_to);
  });

  test('a presence storm keeps a worker busy: every room message once; any loss is announced',
       async () => {
    // Worker A: one Socket.IO client logs in and out as fast as it can (each an online and an
    // offline record); worker B: members who each get every presence change (their worker's
    // loop is busy fanning them out) and a room into which A's `pub` publishes meanwhile.
    const room = 'storm';
    const pub = keep(await nativeUser(onA[3], 'pub4'));
    await nativeJoin(pub, room);
    const members = [];
    for (let i = 0; i < 40; i++) {
      const c = keep(await nativeUser(onB[i % 6], `m4-${i}`));
      await nativeJoin(c, room);
      members.push(c);
    }
    for (const c of members) c.take(() => true);
    const before = await metricsFrom(server.port, onB[0]);
    const storm = keep(await SioClient.connect(server.port, { ip: onA[4],
                                                            transports: ['websocket'] }));
    const PAIRS = 3000;
    for (let i = 0; i < PAIRS; i++) {
      storm.emit('createsession', { email: `storm-${i}` });
      storm.emit('logout');
      if (i % 100 === 0) pub.send({ type: 'say', room, text: text(i / 100), cid: i / 100 });
    }
    const N = PAIRS / 100;
    await pub.next((m) => m.type === 'message' && m.cid === N - 1, 30000, 'own copy');
    await storm.next('loggedOut', () => true, 30000);
    await sleep(300);
    for (const c of members) {
      const got = await nativeMessages(c, room, N, 15000, 0);
      assert.deepEqual(got.map((m) => m.text), range(0, N - 1).map(text),
                       'every room message once, in order');
    }
    // Worker B has read everything there is (its backlog is gone): its losses are final.
    let after;
    for (let t = 0; ; t++) {
      after = await metricsFrom(server.port, onB[0]);
      if ((after.steerchat_ring_lag_bytes ?? 0) === 0) break;
      assert.ok(t < 100, 'worker B catches up');
      await sleep(100);
    }
    const lost = (after.steerchat_ring_lost_records_total ?? 0) -
                 (before.steerchat_ring_lost_records_total ?? 0);
    // Whenever the busy worker lost records, every one of its clients was told.
    const notices = [];
    for (const c of members) {
      if (lost > 0) await c.next((m) => m.type === 'gap', 10000, 'gap');
      notices.push(1 + c.take((m) => m.type === 'gap').length);
    }
    if (lost === 0) assert.deepEqual(members.flatMap((c) => c.take((m) => m.type === 'gap')), []);
    console.log(`presence storm: worker B lost ${lost} records; notices per client: ` +
                `${lost > 0 ? notices.join(',') : 'none'}`);
  });

  test('users of a killed worker reconnect with since: only what they missed, no repeats',
       async () => {
    const room = 'again';
    const pub = keep(await nativeUser(onA[2], 'pub3'));
    let nat = keep(await nativeUser(onB[4], 'nat'));
    let sio = keep(await sioUser(onB[5], 'sio3'));
    await nativeJoin(pub, room);
    await nativeJoin(nat, room);
    await sio.emitAck('join', room);
    await publish(pub, room, 1, 10);
    const natSeen = await nativeMessages(nat, room, 10);
    const sioSeen = await sioMessages(sio, room, 10);
    assert.equal(natSeen.length, 10);
    assert.equal(sioSeen.length, 10);
    const pidB = (await healthzFrom(server.port, onB[4])).pid;
    process.kill(pidB, 'SIGKILL');
    await publish(pub, room, 11, 20);  // while they are away
    // Back on the respawned worker (same addresses), same names once the master freed them.
    for (let t = 0; ; t++) {
      const h = await healthzFrom(server.port, onB[4]).catch(() => null);
      if (h && h.pid !== pidB) break;
      assert.ok(t < 100, 'worker B respawned');
      await sleep(100);
    }
    const lastNat = natSeen.at(-1).id;
    const lastSio = sioSeen.at(-1).id;
    for (let t = 0; ; t++) {
      try {
        nat = keep(await nativeUser(onB[4], 'nat'));
        break;
      } catch (e) {
        assert.ok(t < 50, String(e));
        await sleep(100);
      }
    }
    const j = await nativeJoin(nat, room, lastNat);
    assert.equal(j.complete, true);
    assert.deepEqual(j.history.map((m) => m.text), range(11, 20).map(text));
    assert.deepEqual(seqs(j.history), range(11, 20));
    sio = keep(await sioUser(onB[5], 'sio3', { since: lastSio }));
    const [sj] = await sio.emitAck('join', room);
    assert.equal(sj.complete, true);
    assert.deepEqual(sj.history.map((m) => m.text), range(11, 20).map(text));
    // And live from there on, once.
    await publish(pub, room, 21, 21);
    assert.deepEqual(seqs(await nativeMessages(nat, room, 1, 3000)), [21]);
    assert.deepEqual(seqs(await sioMessages(sio, room, 1, 3000)), [21]);
    // Without since, the seed behaviour: the whole history (repeats included).
    const [full] = await sio.emitAck('join', { room, since: 0 });
    assert.equal(full.history.length, 21);
  });
});
