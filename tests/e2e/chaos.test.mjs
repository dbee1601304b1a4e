// Chaos under load: 200 chat users (half native /ws clients over npm `ws`, half socket.io-client
// 4 with its default transports) on distinct source addresses over 4 workers (BPF steering), in
// 20 rooms (2 rooms each; every room has members on several workers and both protocols),
// exchanging room messages and direct messages (each user sends one every ~500 ms: 70 % to one
// of its rooms, 30 % a DM to a random user) for 60 s while a worker is killed with SIGKILL every
// 5 s. Clients whose worker died reconnect with backoff, log in again under the same name and
// rejoin their rooms.
//
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/chaos.test.mjs      (as root)
//   CHAOS_SECONDS (60), CHAOS_KILL_EVERY_MS (5000), CHAOS_INTERVAL_MS (500), CHAOS_USERS (200),
//   CHAOS_SLOW (multiplies every timeout and grace period; 1, or 3 when the binary has ASan),
//   CHAOS_SEED (random; in the report, replays the victim choice and the traffic pattern),
//   CHAOS_REPORT (a file to write the figures to, as JSON).
//
// Victims: every kill picks, among the slots whose current worker is up and answering, one of
// those killed least so far (never the previous victim), and only if its deaths within the
// restart window stay below --max-restarts - 1: the kills are spread out (12 kills over 4 slots
// in 60 s: 3 per slot, every ~20 s), so the server runs with its default --max-restarts 5
// --restart-window 60 (passed explicitly) and no slot may be drained.
//
// Definitions (all times are the test process's clock):
// * An incarnation is one connection of a user, from its connect attempt (tStart) until its
//   worker is killed (`end`: the SIGKILL of its slot sent while it was open or connecting, from
//   1 s before tStart since a dying worker may still accept, but never the kill that ended the
//   user's previous incarnation) or, if it closes without such a kill, until it closes (an
//   "unexpected disconnect": a failure).
// * A message m (text "<sender>|<seq>", seq increasing per sender over all its incarnations) is
//   ACCEPTED when its sender got it acknowledged: native room message: the sender's own copy
//   echoed with its cid; Socket.IO room message or DM: the ack {ok:true}; native DM (the native
//   protocol does not acknowledge a DM): the echo of a later room message of the same connection
//   arrived and no error came before it (a connection's requests are answered in order; a DM's
//   error carries no cid, so a native user sends a room message after each DM, which keeps at
//   most one DM unresolved). tAck is that moment.
// * The recipients that must get m: for a room message, every incarnation that had joined the
//   room (its `joined` reply / join ack arrived) before m was sent, the sender's own included;
//   for a DM, the incarnation of the addressee that had logged in before m was sent.
// * A triple (m, recipient incarnation R) is COVERED when m was accepted, and R received m or R
//   lived (was not killed) until tAck + GRACE (2 s x CHAOS_SLOW): a recipient whose worker died
//   before the message could reach it is not held to it; one that lived is, however late.
//   Covered triples split by the SENDER: its worker survived until tAck + GRACE (the issue's
//   "accepted by a worker that survived") or was killed within that window (the message was
//   already in the shared log; reported, and asserted too).
// Asserted:
// * every covered triple is delivered (R received m) by the end (the test waits up to 30 s x
//   CHAOS_SLOW after the last send for late deliveries);
// * exactly once: no user name receives a message twice, over all its incarnations;
// * per-sender order: each incarnation receives each sender's messages in increasing seq;
// * every message received is one that was sent, from its sender, to that room / that user;
// * no connection to a live worker is refused: a connect/login attempt may fail only if its slot
//   was killed during it (from 1 s before it started), and a fresh GET /healthz made every 100 ms
//   from an address of each slot only if it was under way at a kill of its slot (started at most
//   100 ms after it); no incarnation closes without a kill;
//   no re-login is answered name_taken (the master frees the names before the respawn);
// * every kill is respawned: /healthz from an address of that slot answers from a new pid, a
//   child of the master, within 10 s x CHAOS_SLOW; no slot is drained; the master lives on.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { ChatClient, healthzFrom, getFrom } = await import('./lib/chat-client.mjs');
const { SioClient } = await import('./lib/sio-client.mjs');
const { Server, steeringMode } = await import('./lib/server.mjs');

const env = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v}: expected a number`);
  return n;
};
const SECONDS = env('CHAOS_SECONDS', 60);
const KILL_EVERY_MS = env('CHAOS_KILL_EVERY_MS', 5000);
const INTERVAL_MS = env('CHAOS_INTERVAL_MS', 500);
const USERS = env('CHAOS_USERS', 200);
// A sanitizer build (ASan's runtime linked in) is several times slower: scale the timeouts.
const sanitized = (() => {
  try {
    return fs.readFileSync(process.env.STEERCHAT_BINARY ?? '').includes('__asan_init');
  } catch {
    return false;
  }
})();
const SLOW = Math.max(1, env('CHAOS_SLOW', sanitized ? 3 : 1));
const SEED = env('CHAOS_SEED', Math.floor(Math.random() * 2 ** 31));
const WORKERS = 4;
const ROOMS = 20;
const MAX_RESTARTS = 5;
const RESTART_WINDOW_S = 60;
const GRACE_MS = 2000 * SLOW;
const DRAIN_MS = 30000 * SLOW;
const RESPAWN_LIMIT_MS = 10000 * SLOW;
const OP_TIMEOUT_MS = 10000 * SLOW;
const sticky = steeringMode() === 'bpf';

// mulberry32: a small seeded generator, so a failing run can be replayed (CHAOS_SEED).
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = rng(SEED);
const pick = (xs) => xs[Math.floor(random() * xs.length)];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

const ipOf = (i) => `127.2.${(i + 1) >> 8}.${(i + 1) & 255}`;
const probeIpOf = (i) => `127.3.${(i + 1) >> 8}.${(i + 1) & 255}`;

let server;
let stopping = false;
const users = [];         // see makeUser
const incarnations = [];  // every incarnation ever made
const msgs = new Map();   // text -> message record
const kills = [];         // { slot, pid, t, newPid, respawnMs, ppidOk }
const problems = {        // failures, each with a few examples
  duplicates: [], order: [], unknown: [], wrongContent: [], unexpectedDisconnects: [],
  refusedConnections: [], nameTaken: [], respawn: [], unexpectedErrors: [],
};
const counts = {
  sent: 0, sentRoom: 0, sentDm: 0, refused: {}, received: 0, connectFailuresExcused: 0,
  reconnects: 0, reconnectsWs: 0, reconnectsSio: 0, presence: 0, probes: 0,
  probesFailedExcused: 0,
};
const excusedProbes = [];  // why, and when relative to the kill
const reconnectMs = [];   // kill -> ready again, per reconnect of a killed incarnation
let chaosStart = 0;
let chaosEnd = 0;

function problem(kind, what) {
  problems[kind].push(what);
}

function makeUser(i, slot) {
  const r1 = i % ROOMS;
  let r2 = (i * 7 + 3) % ROOMS;
  if (r2 === r1) r2 = (r2 + 1) % ROOMS;
  return {
    i, name: `${i % 2 ? 'sio' : 'ws'}${i}`, ip: ipOf(i), slot, proto: i % 2 ? 'sio' : 'ws',
    rooms: [`room${r1}`, `room${r2}`], seq: 0, inc: null, nextSend: 0, reconnects: 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Receiving

function received(inc, from, text, room, to) {
  const at = now();
  counts.received++;
  const m = msgs.get(text);
  if (!m) return problem('unknown', { to: inc.user.name, from, text });
  if (m.from !== from || m.room !== room || m.to !== to) {
    problem('wrongContent', { at: inc.user.name, got: { from, text, room, to },
                              sent: { from: m.from, room: m.room, to: m.to } });
  }
  const name = inc.user.name;
  if (m.receivedBy.has(name)) {
    problem('duplicates', { text, to: name, inc: inc.id });
  } else {
    m.receivedBy.set(name, { inc, at });
  }
  const last = inc.lastSeq.get(from) ?? 0;
  if (m.seq <= last) problem('order', { to: name, inc: inc.id, from, seq: m.seq, after: last });
  else inc.lastSeq.set(from, m.seq);
}

function accept(m) {
  if (m.tAck === null && !m.refused) m.tAck = now();
}

function refuse(m, code) {
  if (m.tAck !== null || m.refused) return;
  m.refused = code;
  counts.refused[code] = (counts.refused[code] ?? 0) + 1;
}

function nativeHook(inc) {
  const u = inc.user;
  return (msg) => {
    switch (msg.type) {
      case 'welcome':
        inc.tWelcome = now();
        return false;
      case 'joined':
        inc.joinAt.set(msg.room, now());
        return false;
      case 'message': {
        if (msg.from === u.name && msg.cid !== undefined) {
          const m = msgs.get(msg.text);
          if (m) {
            accept(m);
            // The DMs sent before this message on this connection were handled before it.
            for (const d of inc.pendingDms) if (d.seq < m.seq) accept(d);
            inc.pendingDms = inc.pendingDms.filter((d) => d.seq > m.seq);
          }
        }
        received(inc, msg.from, msg.text, msg.room, undefined);
        return true;
      }
      case 'dm':
        received(inc, msg.from, msg.text, undefined, msg.to);
        return true;
      case 'online':
      case 'offline':
      case 'member_joined':
      case 'member_left':
        counts.presence++;
        return true;
      case 'error': {
        if (!inc.ready) return false;  // a reply to login/join: the caller takes it
        // A say's error carries its cid; a DM's does not (the protocol echoes cid for "say"
        // only), so a native user has at most one DM in flight before a say fences it.
        const m = msg.cid !== undefined ? msgs.get(`${u.name}|${String(msg.cid).slice(1)}`)
                                        : inc.pendingDms.length === 1 ? inc.pendingDms[0] : null;
        if (m) {
          refuse(m, msg.code);
          inc.pendingDms = inc.pendingDms.filter((d) => d !== m);
        } else {
          problem('unexpectedErrors', msg);
        }
        return true;
      }
      default:
        return false;
    }
  };
}

function sioHook(inc) {
  return (event, args) => {
    switch (event) {
      case 'accessgranted':
        inc.tWelcome = now();
        inc.onSession?.('ok');
        return true;
      case 'usernametaken':
        inc.onSession?.('taken');
        return true;
      case 'message': {
        const m = args[0] ?? {};
        received(inc, m.from, m.text, m.room, undefined);
        return true;
      }
      case 'newMessage': {
        const m = args[0] ?? {};
        received(inc, m.from, m.text, undefined, inc.user.name);
        return true;
      }
      case 'newClientOnline':
      case 'clientOffline':
      case 'memberJoined':
      case 'memberLeft':
        counts.presence++;
        return true;
      case 'chaterror':
        problem('unexpectedErrors', args);
        return true;
      default:
        return false;
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Connecting (and reconnecting)

function newIncarnation(u) {
  const inc = {
    id: incarnations.length, user: u, slot: u.slot, tStart: now(), tWelcome: null, tReady: null,
    joinAt: new Map(), end: Infinity, closedAt: null, lastSeq: new Map(), pendingDms: [],
    client: null, ready: false,
  };
  incarnations.push(inc);
  return inc;
}

// The latest kill of `inc`'s slot that can have ended it: from 1 s before its attempt started
// (a dying worker may still accept) until `until`, but never the kill that ended the user's
// previous incarnation (the user reconnects only once that connection has closed, when the
// old worker is gone). Null if none.
function killOf(inc, until) {
  let found = null;
  for (const k of kills) {
    if (k.slot === inc.slot && k.t >= inc.tStart - 1000 && k.t <= until && k !== inc.after) {
      found = k;
    }
  }
  return found;
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: no answer ` +
                                                                      `within ${ms} ms`)), ms))),
  ]);
}

// Connects, logs in, joins the rooms; resolves to { closed }: a promise of the connection's end.
async function openNative(u, inc) {
  const c = await ChatClient.connect(server.port, u.ip, { handshakeTimeout: OP_TIMEOUT_MS });
  inc.client = c;
  c.onMessage = nativeHook(inc);
  const closed = new Promise((resolve) => {
    c.onClose = resolve;
    if (c.closed) resolve();
  });
  const w = await c.request({ type: 'login', name: u.name }, ['welcome', 'error'], OP_TIMEOUT_MS);
  if (w.type !== 'welcome') {
    if (w.code === 'name_taken') problem('nameTaken', { name: u.name, inc: inc.id });
    throw new Error(`login ${u.name}: ${JSON.stringify(w)}`);
  }
  for (const room of u.rooms) {
    const j = await c.request({ type: 'join', room }, ['joined', 'error'], OP_TIMEOUT_MS);
    if (j.type !== 'joined') throw new Error(`join ${room}: ${JSON.stringify(j)}`);
  }
  return { closed };
}

function sioAck(c, event, arg) {
  return withTimeout(new Promise((resolve) => c.socket.emit(event, arg, (r) => resolve(r))),
                     OP_TIMEOUT_MS, `${c.ip} ${event}`);
}

async function openSio(u, inc) {
  const c = SioClient.create(server.port, { ip: u.ip, timeoutMs: OP_TIMEOUT_MS });
  inc.client = c;
  c.onEvent = sioHook(inc);
  const closed = new Promise((resolve) => {
    c.socket.on('disconnect', resolve);
    c.socket.on('connect_error', resolve);
  });
  await c.connected(OP_TIMEOUT_MS);
  c.emit('createsession', { email: u.name, clientIP: u.ip });
  const session = new Promise((resolve) => (inc.onSession = resolve));
  const got = await withTimeout(session, OP_TIMEOUT_MS, `${u.ip} createsession`);
  if (got !== 'ok') {
    problem('nameTaken', { name: u.name, inc: inc.id });
    throw new Error(`createsession ${u.name}: usernametaken`);
  }
  for (const room of u.rooms) {
    const r = await sioAck(c, 'join', room);
    if (!r?.ok) throw new Error(`join ${room}: ${JSON.stringify(r)}`);
    inc.joinAt.set(room, now());
  }
  return { closed };
}

function closeClient(inc) {
  try {
    inc.client?.close();
  } catch {
    // already closed
  }
}

// One user's life: connect, chat until the connection ends, reconnect with backoff.
async function runUser(u) {
  let failures = 0;
  let killed = null;  // the kill that ended the previous incarnation
  while (!stopping) {
    const inc = newIncarnation(u);
    inc.after = killed;
    let closed;
    try {
      ({ closed } = await (u.proto === 'ws' ? openNative(u, inc) : openSio(u, inc)));
    } catch (e) {
      const at = now();
      closeClient(inc);
      inc.closedAt = at;
      if (stopping) return;
      // A failure is excused if the slot's worker was killed during the attempt (or just before
      // it: a dying worker may still accept).
      const k = killOf(inc, at);
      if (k) {
        killed = k;
        counts.connectFailuresExcused++;
        if (inc.end === Infinity) inc.end = k.t;
      } else {
        problem('refusedConnections', { user: u.name, inc: inc.id, error: e.message,
                                        at: Math.round(at - chaosStart) });
        inc.end = at;
      }
      failures++;
      await sleep(Math.min(2000, 100 * 2 ** failures) * (0.5 + random()));
      continue;
    }
    failures = 0;
    inc.tReady = now();
    inc.ready = true;
    if (killed !== null) reconnectMs.push(inc.tReady - killed.t);
    u.inc = inc;
    await closed;
    inc.ready = false;
    inc.closedAt = now();
    if (u.inc === inc) u.inc = null;
    closeClient(inc);
    if (stopping) return;
    const k = killOf(inc, inc.closedAt);
    if (!k) {
      problem('unexpectedDisconnects', { user: u.name, inc: inc.id,
                                         at: Math.round(inc.closedAt - chaosStart) });
      inc.end = Math.min(inc.end, inc.closedAt);
    }
    killed = k;
    u.reconnects++;
    counts.reconnects++;
    if (u.proto === 'ws') counts.reconnectsWs++;
    else counts.reconnectsSio++;
    await sleep(100 * (0.5 + random()));
  }
}

// ---------------------------------------------------------------------------------------------
// Sending

function send(u, fence = false) {
  const inc = u.inc;
  if (!inc || !inc.ready) return;
  const seq = ++u.seq;
  const text = `${u.name}|${seq}`;
  // A native user sends a room message after each DM (see the 'error' case of nativeHook).
  const toRoom = fence || random() < 0.7 || (u.proto === 'ws' && inc.pendingDms.length > 0);
  const m = {
    from: u.name, seq, text, room: undefined, to: undefined, tSend: now(), tAck: null,
    refused: null, inc, receivedBy: new Map(),
  };
  if (toRoom) {
    m.room = pick(u.rooms);
  } else {
    let j;
    do j = Math.floor(random() * users.length); while (j === u.i);
    m.to = users[j].name;
  }
  msgs.set(text, m);
  counts.sent++;
  if (toRoom) counts.sentRoom++;
  else counts.sentDm++;
  const c = inc.client;
  if (u.proto === 'ws') {
    if (toRoom) {
      c.send({ type: 'say', room: m.room, text, cid: `s${seq}` });
    } else {
      c.send({ type: 'dm', to: m.to, text, cid: `d${seq}` });
      inc.pendingDms.push(m);
    }
  } else {
    const ack = (r) => (r?.ok ? accept(m) : refuse(m, r?.error ?? 'bad_ack'));
    if (toRoom) c.socket.emit('say', { room: m.room, text, cid: `s${seq}` }, ack);
    else c.socket.emit('newMessage', { to: m.to, message: text }, ack);
  }
}

// ---------------------------------------------------------------------------------------------
// Killing

const probes = new Map();  // slot -> an address steered to it (not a chat user's)
const slotState = new Map();  // slot -> { pid, up, kills: [t...] }

async function killOne(lastVictim) {
  const t = now();
  const candidates = [...slotState.entries()].filter(([slot, s]) =>
    s.up && slot !== lastVictim &&
    s.kills.filter((k) => t - k < RESTART_WINDOW_S * 1000).length < MAX_RESTARTS - 1);
  if (candidates.length === 0) return null;
  const least = Math.min(...candidates.map(([, s]) => s.kills.length));
  const [slot, s] = pick(candidates.filter(([, x]) => x.kills.length === least));
  const h = await healthzFrom(server.port, probes.get(slot));
  assert.equal(h.worker, slot, `probe ${probes.get(slot)} left slot ${slot}`);
  const k = { slot, pid: h.pid, t: now(), newPid: null, respawnMs: null, ppidOk: null };
  s.up = false;
  kills.push(k);
  s.kills.push(k.t);
  for (const inc of incarnations) {
    if (inc.slot === slot && inc.end === Infinity && inc.closedAt === null) inc.end = k.t;
  }
  process.kill(h.pid, 'SIGKILL');
  // The respawned worker: /healthz from the slot's address answers from another pid.
  (async () => {
    while (now() - k.t < RESPAWN_LIMIT_MS) {
      try {
        const r = await healthzFrom(server.port, probes.get(slot));
        if (r.worker === slot && r.pid !== h.pid) {
          k.respawnMs = now() - k.t;
          k.newPid = r.pid;
          const stat = fs.readFileSync(`/proc/${r.pid}/stat`, 'utf8');
          const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
          k.ppidOk = ppid === server.proc.pid;
          s.pid = r.pid;
          s.up = true;
          return;
        }
      } catch {
        // the old worker died mid-request, or the new one is not up yet
      }
      await sleep(20);
    }
    problem('respawn', { slot, pid: h.pid, what: `no new worker within ${RESPAWN_LIMIT_MS} ms` });
  })();
  return slot;
}

// Fresh connections all along: every 100 ms a GET /healthz from each slot's probe address. One
// may fail only if its slot was killed while it was under way (it started at most 100 ms after
// the kill: a connection the dying worker had accepted is reset; one made after the kill waits
// in the listener's queue for the respawned worker and must succeed).
async function probeLoop(slot) {
  while (!stopping && chaosEnd === 0) {
    const t = now();
    try {
      const h = await healthzFrom(server.port, probes.get(slot));
      counts.probes++;
      if (h.worker !== slot) problem('refusedConnections', { probe: slot, worker: h.worker });
    } catch (e) {
      const at = now();
      const k = kills.find((x) => x.slot === slot && x.t >= t - 100 && x.t <= at);
      if (k) {
        counts.probesFailedExcused++;
        excusedProbes.push(`${e.code ?? e.message} ${Math.round(t - k.t)} ms after the kill`);
      } else {
        problem('refusedConnections', { probe: slot, error: e.message,
                                        at: Math.round(at - chaosStart) });
      }
    }
    await sleep(Math.max(0, 100 - (now() - t)));
  }
}

// ---------------------------------------------------------------------------------------------
// Coverage

function covered() {
  const incsOf = new Map();  // name -> incarnations
  for (const inc of incarnations) {
    if (!incsOf.has(inc.user.name)) incsOf.set(inc.user.name, []);
    incsOf.get(inc.user.name).push(inc);
  }
  const members = new Map();  // room -> incarnations that joined it
  for (const inc of incarnations) {
    for (const room of inc.joinAt.keys()) {
      if (!members.has(room)) members.set(room, []);
      members.get(room).push(inc);
    }
  }
  const out = {
    accepted: 0, acceptedRoom: 0, acceptedDm: 0, unaccepted: 0,
    survived: { covered: 0, delivered: 0, missing: [] },
    senderKilled: { covered: 0, delivered: 0, missing: [] },
    excluded: 0,  // recipient killed before the message reached it
  };
  for (const m of msgs.values()) {
    if (m.tAck === null) {
      out.unaccepted++;
      continue;
    }
    out.accepted++;
    if (m.room) out.acceptedRoom++;
    else out.acceptedDm++;
    const bucket = m.inc.end > m.tAck + GRACE_MS ? out.survived : out.senderKilled;
    const recipients = m.room
      ? (members.get(m.room) ?? []).filter((r) => r.joinAt.get(m.room) < m.tSend)
      : (incsOf.get(m.to) ?? []).filter((r) => r.tWelcome !== null && r.tWelcome < m.tSend);
    for (const r of recipients) {
      const got = m.receivedBy.get(r.user.name);
      const gotHere = got && got.inc === r;
      if (!gotHere && r.end <= m.tSend) continue;  // killed before the send: not a recipient
      if (!gotHere && r.end <= m.tAck + GRACE_MS) {
        out.excluded++;
        continue;
      }
      bucket.covered++;
      if (gotHere) bucket.delivered++;
      else bucket.missing.push({ text: m.text, room: m.room, to: r.user.name, inc: r.id });
    }
  }
  return out;
}

const pct = (xs, p) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]);
};

// ---------------------------------------------------------------------------------------------

before(async () => {
  if (!sticky) return;
  server = await Server.start({
    workers: WORKERS,
    args: ['--max-restarts', String(MAX_RESTARTS), '--restart-window', String(RESTART_WINDOW_S)],
  });
});
after(async () => {
  stopping = true;
  for (const inc of incarnations) closeClient(inc);
  if (server) await server.stop();
});

describe('chaos: 200 users on 4 workers, a worker SIGKILLed every 5 s (BPF steering)',
         { skip: sticky ? false : 'needs root for --steering bpf' }, () => {
  test('survivors get every accepted message exactly once, in order; every kill is respawned',
       { timeout: SECONDS * 1000 + DRAIN_MS + 60000 * SLOW }, async (t) => {
    const t0 = now();
    // Which slot serves each address (BPF steering keeps it for the whole run: no drain).
    for (let i = 0; i < USERS; i++) {
      users.push(makeUser(i, (await healthzFrom(server.port, ipOf(i))).worker));
    }
    for (let i = 0; probes.size < WORKERS && i < 1000; i++) {
      const h = await healthzFrom(server.port, probeIpOf(i));
      if (!probes.has(h.worker)) {
        probes.set(h.worker, probeIpOf(i));
        slotState.set(h.worker, { pid: h.pid, up: true, kills: [] });
      }
    }
    assert.equal(probes.size, WORKERS, 'probe addresses should reach every worker');
    for (const room of USERS >= 100 ? new Set(users.flatMap((u) => u.rooms)) : []) {
      const ms = users.filter((u) => u.rooms.includes(room));
      assert.ok(new Set(ms.map((u) => u.slot)).size > 1, `${room}: members on one worker`);
      assert.equal(new Set(ms.map((u) => u.proto)).size, 2, `${room}: one protocol only`);
    }

    // Everyone connects (20 at a time), then chaos.
    const lives = [];
    for (let i = 0; i < users.length; i += 20) {
      const batch = users.slice(i, i + 20);
      for (const u of batch) lives.push(runUser(u));
      const deadline = now() + OP_TIMEOUT_MS * 3;
      while (batch.some((u) => !u.inc?.ready) && now() < deadline) await sleep(20);
    }
    const notReady = users.filter((u) => !u.inc?.ready).map((u) => u.name);
    assert.deepEqual(notReady, [], 'every user connects, logs in and joins before the chaos; ' +
                     `failures: ${JSON.stringify(problems.refusedConnections.slice(0, 5))}`);
    const setupMs = now() - t0;

    chaosStart = now();
    for (const u of users) u.nextSend = chaosStart + random() * INTERVAL_MS;
    const sender = setInterval(() => {
      const tt = now();
      for (const u of users) {
        if (tt >= u.nextSend) {
          send(u);
          u.nextSend = tt + INTERVAL_MS * (0.5 + random());
        }
      }
    }, 20);
    const probing = [...probes.keys()].map((slot) => probeLoop(slot));
    let lastVictim = null;
    let skipped = 0;
    for (let k = 1; ; k++) {
      const at = chaosStart + (k - 0.5) * KILL_EVERY_MS;
      if (at >= chaosStart + SECONDS * 1000) break;
      await sleep(Math.max(0, at - now()));
      const v = await killOne(lastVictim);
      if (v === null) skipped++;
      else lastVictim = v;
    }
    await sleep(Math.max(0, chaosStart + SECONDS * 1000 - now()));
    clearInterval(sender);
    chaosEnd = now();
    await Promise.all(probing);
    // A native DM is accepted by the echo of a later say: fence the last ones.
    for (const u of users) if (u.proto === 'ws' && u.inc?.pendingDms.length) send(u, true);

    // Late acks and deliveries: wait until every covered triple is delivered (or DRAIN_MS).
    let cov = covered();
    const drainStart = now();
    while (now() - drainStart < DRAIN_MS) {
      const pendingAcks = [...msgs.values()].filter(
        (m) => m.tAck === null && !m.refused && m.inc.ready).length;
      cov = covered();
      const respawning = kills.some((k) => k.newPid === null) &&
                         !problems.respawn.length;
      if (!pendingAcks && !respawning && cov.survived.missing.length === 0 &&
          cov.senderKilled.missing.length === 0) {
        break;
      }
      await sleep(250);
    }
    await sleep(500 * SLOW);  // anything extra (duplicates) arrives now
    cov = covered();
    const drainMs = now() - drainStart;

    // The master and all 4 slots are alive; no slot drained.
    const finalPids = new Map();
    for (const [slot, ip] of probes) {
      const h = await healthzFrom(server.port, ip);
      assert.equal(h.worker, slot, `slot ${slot}: its address now reaches worker ${h.worker}`);
      finalPids.set(slot, h.pid);
    }
    const lost = [];
    for (const [slot, ip] of probes) {
      const body = await getFrom(server.port, ip, '/metrics');
      const v = Number((body.match(new RegExp(
        `^steerchat_ring_lost_records_total\\{worker="${slot}"\\} (\\d+)$`, 'm')) ?? [])[1]);
      lost.push({ slot, lost: v });
    }
    stopping = true;
    const readyAtEnd = users.filter((u) => u.inc?.ready).length;
    for (const inc of incarnations) closeClient(inc);
    let livesLeft = lives.length;
    for (const l of lives) l.then(() => livesLeft--);
    const tClose = now();
    while (livesLeft > 0 && now() - tClose < 5000) await sleep(50);

    const respawns = kills.map((k) => k.respawnMs).filter((x) => x !== null);
    const report = {
      seed: SEED, users: USERS, ws: users.filter((u) => u.proto === 'ws').length,
      sio: users.filter((u) => u.proto === 'sio').length, workers: WORKERS, rooms: ROOMS,
      chaosSeconds: SECONDS, intervalMs: INTERVAL_MS, killEveryMs: KILL_EVERY_MS, slow: SLOW,
      sanitized,
      setupMs: Math.round(setupMs), chaosMs: Math.round(chaosEnd - chaosStart),
      drainMs: Math.round(drainMs), totalMs: Math.round(now() - t0),
      sent: counts.sent, sentRoom: counts.sentRoom, sentDm: counts.sentDm,
      accepted: cov.accepted, acceptedRoom: cov.acceptedRoom, acceptedDm: cov.acceptedDm,
      refused: counts.refused, unaccepted: cov.unaccepted - Object.values(counts.refused)
        .reduce((a, b) => a + b, 0),
      received: counts.received,
      coveredSurvivingSender: cov.survived.covered,
      deliveredSurvivingSender: cov.survived.delivered,
      coveredKilledSender: cov.senderKilled.covered,
      deliveredKilledSender: cov.senderKilled.delivered,
      excludedRecipientKilled: cov.excluded,
      kills: kills.length, killsSkipped: skipped,
      killsPerSlot: Object.fromEntries([...slotState].map(([s, x]) => [s, x.kills.length])),
      respawnMs: { min: pct(respawns, 0), median: pct(respawns, 50), max: pct(respawns, 100) },
      reconnects: counts.reconnects, reconnectsWs: counts.reconnectsWs,
      reconnectsSio: counts.reconnectsSio,
      reconnectMs: { median: pct(reconnectMs, 50), p90: pct(reconnectMs, 90),
                     max: pct(reconnectMs, 100) },
      connectFailuresExcused: counts.connectFailuresExcused, readyAtEnd, livesLeft,
      healthProbes: counts.probes, healthProbesFailedExcused: excusedProbes,
      ringLostRecords: lost,
      problems: Object.fromEntries(Object.entries(problems).map(([k, v]) => [k, v.length])),
    };
    t.diagnostic(JSON.stringify(report));
    if (process.env.CHAOS_REPORT) {
      fs.writeFileSync(process.env.CHAOS_REPORT, JSON.stringify(report, null, 2));
    }
    const first = (xs) => JSON.stringify(xs.slice(0, 5));

    assert.ok(counts.sent > USERS * (SECONDS * 1000 / INTERVAL_MS) * 0.5,
              `only ${counts.sent} messages were sent`);
    assert.ok(kills.length >= Math.floor(SECONDS * 1000 / KILL_EVERY_MS) - 1,
              `only ${kills.length} kills (${skipped} ticks found no victim)`);
    assert.equal(problems.respawn.length, 0, `respawn: ${first(problems.respawn)}`);
    for (const k of kills) {
      assert.ok(k.newPid !== null && k.newPid !== k.pid, `slot ${k.slot} not respawned`);
      assert.equal(k.ppidOk, true, `slot ${k.slot}: pid ${k.newPid} is not the master's child`);
    }
    assert.ok(!/draining slot/.test(server.log), `a slot was drained:\n${server.log}`);
    const sanitizer = /^.*(ERROR: \w+Sanitizer|runtime error:).*$/m.exec(server.log);
    assert.equal(sanitizer, null, `a sanitizer report in the server's output: ${sanitizer?.[0]}`);
    assert.equal(server.proc.exitCode, null, 'the master exited');
    assert.equal(problems.refusedConnections.length, 0,
                 `connections refused by live workers: ${first(problems.refusedConnections)}`);
    assert.equal(problems.unexpectedDisconnects.length, 0,
                 `connections closed without a kill: ${first(problems.unexpectedDisconnects)}`);
    assert.equal(problems.nameTaken.length, 0, `re-login name_taken: ${first(problems.nameTaken)}`);
    assert.equal(problems.unknown.length, 0, `unknown messages: ${first(problems.unknown)}`);
    assert.equal(problems.wrongContent.length, 0, `wrong content: ${first(problems.wrongContent)}`);
    assert.equal(problems.unexpectedErrors.length, 0,
                 `unexpected errors: ${first(problems.unexpectedErrors)}`);
    assert.equal(problems.duplicates.length, 0, `duplicates: ${first(problems.duplicates)}`);
    assert.equal(problems.order.length, 0, `out of order: ${first(problems.order)}`);
    assert.equal(cov.survived.missing.length, 0,
                 `${cov.survived.missing.length} of ${cov.survived.covered} covered deliveries ` +
                 `(sender's worker survived) missing, e.g. ${first(cov.survived.missing)}`);
    assert.equal(cov.senderKilled.missing.length, 0,
                 `${cov.senderKilled.missing.length} of ${cov.senderKilled.covered} covered ` +
                 `deliveries (sender's worker killed after the ack) missing, e.g. ` +
                 `${first(cov.senderKilled.missing)}`);
    assert.ok(cov.survived.covered > 0 && cov.accepted > counts.sent * 0.5,
              `only ${cov.accepted} of ${counts.sent} messages accepted`);
    for (const { slot, lost: n } of lost) assert.equal(n, 0, `worker ${slot} lost ring records`);
  });
});
