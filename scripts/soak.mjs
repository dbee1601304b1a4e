// The soak run behind scripts/soak (see there for the options): mixed load against a locally
// started steerchat for SOAK_SECONDS, worker RSS and open fds sampled every SOAK_SAMPLE_S into a
// CSV file, then every client leaves, a cool-down, a table and a verdict.
//
// Load (all from distinct 127.x.y.z source addresses, spread over the workers by the steering):
//   chat      SOAK_USERS native /ws users and as many Socket.IO users (socket.io-client 4: a
//             third long-polling only, the rest polling then WebSocket), in rooms of ~10, each
//             sending a room message or a DM every ~SOAK_INTERVAL_MS
//   churn     every second SOAK_CHURN clients (alternately native and Socket.IO) connect, log in,
//             join a room, say one thing and leave (half log out, half just drop the connection)
//   floods    (x SOAK_FLOOD; 0 turns them off), each from its own address:
//             - handshakes: 20/s Engine.IO polling handshakes never polled again (the session
//               waits for its ping timeout) and 20/s WebSocket upgrades to /ws dropped at once
//             - messages: one native user saying 200 messages/s into a room with 5 listeners
//             - connections: 200 WebSocket connections opened from one address, held 30 s,
//               closed, every 60 s
//
// Verdict "stable" when, for every worker: its pid never changed (no crash), its private RSS
// (RssAnon: heap and stacks; the shared-memory pages it maps are reported beside it, they grow
// until the other workers' logs have been read through once) at the end of the load is at most
// 1.2x its value at the warm-up sample (SOAK_WARMUP_S after the start; +2 MiB slack for small
// heaps), and its open fds after the cool-down are within 8 of its baseline before any load.
// Otherwise "UNSTABLE" with the reason; the exit status is 1.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const lib = path.join(here, '..', 'tests', 'e2e', 'lib');
const { Server, steeringMode } = await import(path.join(lib, 'server.mjs'));
const { ChatClient, getFrom } = await import(path.join(lib, 'chat-client.mjs'));
const { SioClient } = await import(path.join(lib, 'sio-client.mjs'));
const { pollingHandshake } = await import(path.join(lib, 'sio-raw.mjs'));

const env = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`soak: ${name}=${v}: expected a non-negative number`);
    process.exit(2);
  }
  return n;
};
const SECONDS = env('SOAK_SECONDS', 600);
const SAMPLE_S = env('SOAK_SAMPLE_S', 10);
const WARMUP_S = env('SOAK_WARMUP_S', Math.min(120, Math.floor(SECONDS / 5)));
const COOLDOWN_S = env('SOAK_COOLDOWN_S', 60);
const WORKERS = env('SOAK_WORKERS', 4);
const USERS = env('SOAK_USERS', 60);
const INTERVAL_MS = env('SOAK_INTERVAL_MS', 1000);
const CHURN = env('SOAK_CHURN', 4);
const FLOOD = env('SOAK_FLOOD', 1);
const OUT = process.env.SOAK_OUT ||
            path.join(process.env.BUILD_DIR || path.join(here, '..', 'build'),
                      `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.csv`);
const RSS_RATIO = 1.2;
const RSS_SLACK_KB = 2048;
const FD_SLACK = 8;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (s) => console.error(`soak: ${s}`);
const t0 = Date.now();
const elapsed = () => (Date.now() - t0) / 1000;
let phase = 'start';
let loadOn = true;

// Addresses: 127.<block>.y.z; each load component has its own block.
const addr = (block, i) => `127.${block}.${(i >> 8) & 255}.${i & 255 || 1}`;

const stats = {
  chatSent: 0, chatReceived: 0, chatReconnects: 0, churnDone: 0, churnFailed: 0,
  handshakes: 0, handshakeFailed: 0, wsDropped: 0, floodSent: 0, floodReceived: 0,
  held: 0, holdFailed: 0, errors: new Map(),
};
function countError(where, e) {
  const key = `${where}: ${String(e?.message ?? e).replace(/127\.\d+\.\d+\.\d+/g, 'ADDR')
    .replace(/\d{3,}/g, 'N').slice(0, 120)}`;
  stats.errors.set(key, (stats.errors.get(key) ?? 0) + 1);
}

// ---------------------------------------------------------------------------------------------
// Processes

function workersOf(masterPid) {
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) !== masterPid) continue;
      const comm = fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim();
      const m = /^steerchat-w(\d+)$/.exec(comm);
      if (m) out.push({ slot: Number(m[1]), pid: Number(d) });
    } catch {
      // gone meanwhile
    }
  }
  return out.sort((a, b) => a.slot - b.slot);
}

// VmRSS and its parts: RssAnon (the process's own heap and stacks: where a leak shows) and
// RssShmem (the pages of the shared-memory logs and chat tables it touched: grows until every
// page of the other workers' logs has been read once, bounded by their size).
function usage(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field) => Number((new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status) ?? [])[1]);
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    return { rss: kb('VmRSS'), anon: kb('RssAnon'), shmem: kb('RssShmem'), fds };
  } catch {
    return { rss: NaN, anon: NaN, shmem: NaN, fds: NaN };
  }
}

// ---------------------------------------------------------------------------------------------
// Load

const live = new Set();  // every open client, closed at the end
const track = (c) => (live.add(c), c);
const untrack = (c) => {
  live.delete(c);
  try {
    c.close();
  } catch {
    // already closed
  }
};

async function chatUser(port, i, proto, transports) {
  const name = `${proto}${i}`;
  const ip = addr(10, i + 1);
  const room = `room${i % Math.max(1, Math.round(USERS / 5))}`;
  let failures = 0;
  while (loadOn) {
    let c;
    try {
      if (proto === 'ws') {
        c = track(await ChatClient.connect(port, ip, { handshakeTimeout: 10000 }));
        c.onMessage = (m) => {
          if (m.type === 'message' || m.type === 'dm') stats.chatReceived++;
          return m.type !== 'welcome' && m.type !== 'joined' && m.type !== 'error';
        };
        const w = await c.request({ type: 'login', name }, ['welcome', 'error'], 10000);
        if (w.type !== 'welcome') throw new Error(`login: ${w.code}`);
        await c.request({ type: 'join', room }, ['joined'], 10000);
      } else {
        c = track(SioClient.create(port, { ip, timeoutMs: 10000, transports }));
        c.onEvent = (event) => {
          if (event === 'message' || event === 'newMessage') stats.chatReceived++;
          return event !== 'accessgranted' && event !== 'usernametaken';
        };
        await c.connected(10000);
        c.emit('createsession', { email: name, clientIP: ip });
        await c.next('accessgranted', () => true, 10000);
        const [r] = await c.emitAck('join', room);
        if (!r?.ok) throw new Error(`join: ${JSON.stringify(r)}`);
      }
      failures = 0;
      let seq = 0;
      const isOpen = () => (proto === 'ws' ? !c.closed : c.socket.connected);
      while (loadOn && isOpen()) {
        const text = `${name} ${++seq} ${'x'.repeat(40)}`;
        const dm = Math.random() < 0.2;
        const to = `${Math.random() < 0.5 ? 'ws' : 'sio'}${Math.floor(Math.random() * USERS)}`;
        if (proto === 'ws') {
          c.send(dm ? { type: 'dm', to, text } : { type: 'say', room, text });
          c.take(() => true);  // errors (no_such_user) are not kept
        } else {
          if (dm) c.emit('newMessage', { to, message: text });
          else c.emit('say', { room, text });
          c.take('clientNotFound');
          c.take('chaterror');
        }
        stats.chatSent++;
        await sleep(INTERVAL_MS * (0.5 + Math.random()));
      }
    } catch (e) {
      countError(`chat ${proto}`, e);
      failures++;
    }
    if (c) untrack(c);
    if (!loadOn) return;
    stats.chatReconnects++;
    await sleep(Math.min(5000, 200 * 2 ** failures));
  }
}

async function churnOne(port, n) {
  const ip = addr(20, (n % 4000) + 1);
  const name = `churn${n}`;
  let c;
  try {
    if (n % 2 === 0) {
      c = track(await ChatClient.connect(port, ip, { handshakeTimeout: 10000 }));
      const w = await c.request({ type: 'login', name }, ['welcome', 'error'], 10000);
      if (w.type !== 'welcome') throw new Error(`login: ${w.code}`);
      await c.request({ type: 'join', room: 'churn' }, ['joined'], 10000);
      c.send({ type: 'say', room: 'churn', text: 'hello and goodbye' });
      if (n % 4 === 0) c.send({ type: 'logout' });
      await sleep(200);
    } else {
      c = track(SioClient.create(port, { ip, timeoutMs: 10000 }));
      await c.connected(10000);
      c.emit('createsession', { email: name, clientIP: ip });
      await c.next('accessgranted', () => true, 10000);
      await c.emitAck('join', 'churn');
      await c.emitAck('say', { room: 'churn', text: 'hello and goodbye' });
      if (n % 4 === 1) c.emit('logout');
      await sleep(200);
    }
    stats.churnDone++;
  } catch (e) {
    if (loadOn) {  // (not a session cut short by the end of the load)
      countError('churn', e);
      stats.churnFailed++;
    }
  }
  if (c) untrack(c);
}

async function churn(port) {
  let n = 0;
  while (loadOn) {
    for (let k = 0; k < CHURN; k++) churnOne(port, n++);
    await sleep(1000);
  }
}

// Engine.IO handshakes never polled again, and WebSocket upgrades dropped at once.
async function handshakeFlood(port) {
  const perSecond = Math.round(20 * FLOOD);
  const ip = addr(30, 1);
  while (loadOn) {
    const start = Date.now();
    const jobs = [];
    for (let k = 0; k < perSecond; k++) {
      jobs.push(pollingHandshake(port, ip).then(() => stats.handshakes++, (e) => {
        stats.handshakeFailed++;
        countError('handshake flood', e);
      }));
      jobs.push(ChatClient.connect(port, ip, { handshakeTimeout: 5000 }).then((c) => {
        c.close();
        stats.wsDropped++;
      }, (e) => countError('ws drop flood', e)));
    }
    await Promise.all(jobs);
    await sleep(Math.max(0, 1000 - (Date.now() - start)));
  }
}

// One user saying 200 messages/s into a room that 5 others listen to.
async function messageFlood(port) {
  const perSecond = Math.round(200 * FLOOD);
  const listeners = [];
  let c;
  try {
    for (let k = 0; k < 5; k++) {
      const l = track(await ChatClient.connect(port, addr(31, k + 2)));
      l.onMessage = (m) => (m.type === 'message' && stats.floodReceived++, true);
      l.send({ type: 'login', name: `listener${k}` });
      l.send({ type: 'join', room: 'flood' });
      listeners.push(l);
    }
    c = track(await ChatClient.connect(port, addr(31, 1)));
    c.onMessage = () => true;
    c.send({ type: 'login', name: 'flooder' });
    c.send({ type: 'join', room: 'flood' });
    await sleep(200);
    while (loadOn && !c.closed) {
      const start = Date.now();
      // Paced in 10 bursts a second; not more than 1 MiB buffered in the client.
      for (let b = 0; b < 10 && loadOn; b++) {
        if (c.ws.bufferedAmount < (1 << 20)) {
          for (let k = 0; k < perSecond / 10; k++) {
            c.send({ type: 'say', room: 'flood', text: `flood ${stats.floodSent++}` });
          }
        }
        await sleep(100);
      }
      await sleep(Math.max(0, 1000 - (Date.now() - start)));
    }
  } catch (e) {
    countError('message flood', e);
  }
  for (const l of listeners) untrack(l);
  if (c) untrack(c);
}

// Many connections from one address: open, hold 30 s, close; every 60 s.
async function connectionFlood(port) {
  const count = Math.round(200 * FLOOD);
  const ip = addr(32, 1);
  while (loadOn) {
    const start = Date.now();
    const held = [];
    const opened = await Promise.allSettled(
      Array.from({ length: count },
                 () => ChatClient.connect(port, ip, { handshakeTimeout: 10000 })));
    for (const r of opened) {
      if (r.status === 'fulfilled') {
        held.push(track(r.value));
        stats.held++;
      } else {
        stats.holdFailed++;
        countError('connection flood', r.reason);
      }
    }
    while (loadOn && Date.now() - start < 30000) await sleep(250);
    for (const c of held) untrack(c);
    while (loadOn && Date.now() - start < 60000) await sleep(250);
  }
}

// ---------------------------------------------------------------------------------------------

const server = await Server.start({ workers: WORKERS });
const master = server.proc.pid;
log(`steerchat (pid ${master}) on port ${server.port}, ${WORKERS} workers, steering ` +
    `${steeringMode()}; ${SECONDS} s of load, samples every ${SAMPLE_S} s into ${OUT}`);
fs.mkdirSync(path.dirname(OUT), { recursive: true });
const csv = fs.createWriteStream(OUT);
csv.write('t_s,phase,slot,pid,rss_kb,anon_kb,shmem_kb,fds,master_rss_kb,master_fds\n');

const samples = [];  // { t, phase, slot, pid, rss, fds }
const firstPids = new Map(workersOf(master).map((w) => [w.slot, w.pid]));
function sample() {
  const t = Math.round(elapsed());
  const m = usage(master);
  for (const w of workersOf(master)) {
    const u = usage(w.pid);
    samples.push({ t, phase, slot: w.slot, pid: w.pid, ...u });
    csv.write(`${t},${phase},${w.slot},${w.pid},${u.rss},${u.anon},${u.shmem},${u.fds},` +
              `${m.rss},${m.fds}\n`);
  }
}
phase = 'baseline';
sample();
const sampler = setInterval(sample, SAMPLE_S * 1000);

phase = 'load';
const port = server.port;
const jobs = [];
for (let i = 0; i < USERS; i++) jobs.push(chatUser(port, i, 'ws'));
for (let i = 0; i < USERS; i++) {
  jobs.push(chatUser(port, USERS + i, 'sio', i % 3 === 0 ? ['polling'] : undefined));
}
if (CHURN > 0) jobs.push(churn(port));
if (FLOOD > 0) jobs.push(handshakeFlood(port), messageFlood(port), connectionFlood(port));
const progress = setInterval(() => {
  log(`${Math.round(elapsed())} s: chat sent ${stats.chatSent} received ${stats.chatReceived}, ` +
      `churn ${stats.churnDone} (${stats.churnFailed} failed), handshakes ${stats.handshakes}, ` +
      `flood ${stats.floodSent}/${stats.floodReceived}, held ${stats.held}`);
}, 60000);
await sleep(SECONDS * 1000);
const loadEnd = Math.round(elapsed());
phase = 'cooldown';
loadOn = false;
sample();
for (const c of [...live]) untrack(c);
await Promise.race([Promise.all(jobs), sleep(15000)]);
for (const c of [...live]) untrack(c);
log(`load stopped; every client closed; cooling down for ${COOLDOWN_S} s ` +
    '(abandoned Engine.IO sessions end at their ping timeout)');
await sleep(COOLDOWN_S * 1000);
clearInterval(progress);
clearInterval(sampler);
phase = 'end';
sample();
// One /metrics holds every worker's series (worker="N"), whichever worker answers.
const metrics = [];
let scrape = '';
for (let i = 1; i < 40 && !scrape; i++) {
  try {
    scrape = await getFrom(port, addr(40, i), '/metrics');
  } catch {
    // try another address
  }
}
for (const w of workersOf(master)) metrics.push({ slot: w.slot, body: scrape });
await server.stop();
csv.end();

// ---------------------------------------------------------------------------------------------
// Table and verdict

const bySlot = new Map();
for (const s of samples) {
  if (!bySlot.has(s.slot)) bySlot.set(s.slot, []);
  bySlot.get(s.slot).push(s);
}
const at = (xs, t) => xs.reduce((best, s) => (Math.abs(s.t - t) < Math.abs(best.t - t) ? s : best));
const rows = [];
const reasons = [];
for (const [slot, xs] of [...bySlot].sort((a, b) => a[0] - b[0])) {
  const base = xs[0];
  const warm = at(xs.filter((s) => s.phase === 'load'), WARMUP_S);
  const endLoad = xs.filter((s) => s.phase === 'cooldown')[0] ?? xs[xs.length - 1];
  const last = xs[xs.length - 1];
  const peak = xs.reduce((m, s) => Math.max(m, s.fds), 0);
  const peakRss = xs.reduce((m, s) => Math.max(m, s.rss), 0);
  const peakAnon = xs.reduce((m, s) => Math.max(m, s.anon), 0);
  const pids = new Set(xs.map((s) => s.pid));
  rows.push({ slot, base, warm, endLoad, last, peak, peakRss, peakAnon, restarts: pids.size - 1 });
  if (pids.size > 1 || last.pid !== firstPids.get(slot)) {
    reasons.push(`worker ${slot} was restarted (pids ${[...pids].join(', ')})`);
  }
  if (endLoad.anon > warm.anon * RSS_RATIO + RSS_SLACK_KB) {
    reasons.push(`worker ${slot}: private RSS ${endLoad.anon} kB at the end of the load > ` +
                 `${RSS_RATIO}x its ${warm.anon} kB at ${warm.t} s (+${RSS_SLACK_KB} kB)`);
  }
  if (last.fds > base.fds + FD_SLACK) {
    reasons.push(`worker ${slot}: ${last.fds} fds after the cool-down, ${base.fds} before ` +
                 'the load');
  }
}
const pad = (s, n) => String(s).padStart(n);
const lines = [];
lines.push(`soak: ${SECONDS} s of load, ${COOLDOWN_S} s cool-down, ${WORKERS} workers, ` +
           `${USERS} native + ${USERS} Socket.IO chat users, churn ${CHURN}/s, flood x${FLOOD}`);
lines.push(`samples: ${OUT}`);
lines.push('');
lines.push('Private RSS (RssAnon, kB; the verdict) and in brackets the whole RSS (VmRSS, which ' +
           'includes the shared-memory pages touched so far):');
lines.push('');
lines.push('| worker | before load | at warm-up | end of load | peak | after cool-down | ' +
           'fds before | fds peak | fds end of load | fds after cool-down | restarts |');
lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
const kbs = (s) => `${s.anon} (${s.rss})`;
for (const r of rows) {
  lines.push(`| ${r.slot} | ${kbs(r.base)} | ${kbs(r.warm)} at ${r.warm.t} s | ` +
             `${kbs(r.endLoad)} | ${r.peakAnon} (${r.peakRss}) | ${kbs(r.last)} | ` +
             `${r.base.fds} | ${r.peak} | ${r.endLoad.fds} | ${r.last.fds} | ${r.restarts} |`);
}
lines.push('');
lines.push(`chat: ${stats.chatSent} sent, ${stats.chatReceived} received, ` +
           `${stats.chatReconnects} reconnects; churn: ${stats.churnDone} sessions ` +
           `(${stats.churnFailed} failed); ` +
           `floods: ${stats.handshakes} abandoned Engine.IO handshakes (${stats.handshakeFailed} ` +
           `failed), ${stats.wsDropped} dropped /ws upgrades, ${stats.floodSent} flood messages ` +
           `(${stats.floodReceived} received by the 5 listeners), ${stats.held} connections held ` +
           `(${stats.holdFailed} failed)`);
if (stats.errors.size) {
  lines.push('client-side errors:');
  for (const [k, v] of [...stats.errors].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
    lines.push(`  ${pad(v, 6)}  ${k}`);
  }
}
for (const { slot, body } of metrics) {
  const pick = (name) =>
    (new RegExp(`^${name}\\{worker="${slot}"\\} (\\d+)$`, 'm').exec(body) ?? [])[1];
  lines.push(`worker ${slot} /metrics after the cool-down: ` + [
    'steerchat_connections_accepted_total', 'steerchat_eio_sessions_total',
    'steerchat_eio_sessions', 'steerchat_chat_sessions', 'steerchat_ring_lost_records_total',
  ].map((n) => `${n.replace('steerchat_', '')}=${pick(n) ?? '-'}`).join(' '));
}
lines.push('');
lines.push(reasons.length === 0
  ? `verdict: stable (per worker: private RSS at the end of the load <= ${RSS_RATIO}x at warm-up ` +
    `+ ${RSS_SLACK_KB} kB, fds after the cool-down <= baseline + ${FD_SLACK}, no restart)`
  : `verdict: UNSTABLE: ${reasons.join('; ')}`);
console.log(lines.join('\n'));
process.exit(reasons.length === 0 ? 0 : 1);
