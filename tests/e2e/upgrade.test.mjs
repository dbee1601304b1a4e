// An upgrade without dropping a connection (issue 11): a 2-worker server with BPF steering holds
// 200 chat users (half native /ws clients over npm `ws`, half the official socket.io-client 4
// with reconnection on, each on its own source address) in 10 rooms with history, while 4 loops
// connect to GET /healthz as fast as they can from 40 source addresses. Then
// `steerchat ctl --port P upgrade` starts the binary (this same build: the new binary) with
// --takeover: it takes the listeners, the pinned maps and the chat state over, the old workers
// drain and the old master exits.
//
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/upgrade.test.mjs      (as root)
//   UPGRADE_USERS (200)
//
// Asserted:
// * the healthz loops saw no refused connection, no reset and no other failure (each request a
//   new TCP connection; every answer a 200), before, during and after the upgrade, and answers
//   came from the new workers afterwards;
// * `ctl upgrade` exits 0 naming the new master's pid; the old master exits 0; the new master
//   serves (its children answer /healthz), holds the instance lock (its pid in the lock file) and
//   the pins are there; after its own SIGTERM the pins are gone (it owns them now);
// * every user was disconnected by the old worker (native: close 1001) and came back by itself
//   (native: the test client reconnects at once; Socket.IO: the library's reconnection), logged
//   in under its own name without a single name_taken, and its room's history holds every
//   message sent before the upgrade;
// * no name is lost or duplicated: a new user's welcome list holds each of the 200 names exactly
//   once; a message sent after the upgrade reaches every member of its room on both workers and
//   both protocols (the new workers' shared-memory logs);
// * a second upgrade, from the master that took over, brings every user back once more.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { ChatClient, healthzFrom, getFrom } = await import('./lib/chat-client.mjs');
const { BoundAgent } = await import('./lib/sio-client.mjs');
const { io } = await import('socket.io-client');
const { Server, binaryPath } = await import('./lib/server.mjs');

const USERS = Number(process.env.UPGRADE_USERS ?? 200);
const ROOMS = 10;
const LOOPS = 4;
const LOOP_ADDRESSES = 40;
const OP_TIMEOUT_MS = 10000;
const root = process.getuid && process.getuid() === 0;
// The BPF filesystem is not per network namespace: pins of our own, apart from every other
// instance (a port free in this namespace may be in use in another).
const bpffsDir = `/sys/fs/bpf/steerchat-upgrade-test-${process.pid}`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ipOf = (i) => `127.7.${(i + 1) >> 8}.${(i + 1) & 255}`;
const loopIpOf = (i) => `127.8.0.${i + 1}`;

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise.finally(() => clearTimeout(t)),
    new Promise((_, reject) => (t = setTimeout(() => reject(new Error(`${what}: no answer ` +
                                                                      `within ${ms} ms`)), ms))),
  ]);
}

// steerchat_chat_state_generation (a host-level gauge) as the worker that answers `ip` sees it.
async function stateGeneration(port, ip) {
  const text = await getFrom(port, ip, '/metrics');
  const m = /^steerchat_chat_state_generation (\d+)$/m.exec(text);
  if (!m) throw new Error(`no steerchat_chat_state_generation in /metrics:\n${text.slice(0, 300)}`);
  return Number(m[1]);
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function ppidOf(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

// One GET /healthz on a new TCP connection from `ip`: 'ok' (a 200), 'refused', 'reset' or
// 'other' (anything else: a timeout, an empty answer, another status), with the worker's pid.
function probe(port, ip) {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const finish = (result, err) => {
      if (done) return;
      done = true;
      sock.destroy();
      let pid = null;
      if (result === 'ok') {
        try {
          pid = JSON.parse(data.slice(data.indexOf('\r\n\r\n') + 4)).pid;
        } catch {
          result = 'other';
        }
      }
      resolve({ result, pid, err });
    };
    const sock = net.connect({ host: '127.0.0.1', port, localAddress: ip });
    sock.setTimeout(5000, () => finish('other', 'timeout'));
    sock.on('connect', () =>
      sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'));
    sock.on('data', (d) => (data += d));
    sock.on('end', () => finish(data.startsWith('HTTP/1.1 200') ? 'ok' : 'other',
                                `answer: ${JSON.stringify(data.slice(0, 80))}`));
    sock.on('error', (e) => {
      if (e.code === 'ECONNREFUSED') finish('refused', e.code);
      else if (e.code === 'ECONNRESET' || e.code === 'EPIPE') finish('reset', e.code);
      else finish('other', e.code ?? String(e));
    });
  });
}

describe('upgrade without dropping a connection', { skip: !root && 'needs root (BPF steering)' },
         () => {
  let server;
  let runDir;
  let newPid = null;
  let stopping = false;
  const users = [];
  const loops = { ok: 0, refused: 0, reset: 0, other: 0, examples: [], pids: new Set() };

  before(async () => {
    runDir = fs.mkdtempSync('/tmp/steerchat-upgrade-');
    server = await Server.start({
      workers: 2, steering: 'bpf',
      args: ['--run-dir', runDir, '--bpffs-dir', bpffsDir, '--drain-timeout-ms', '1500'],
    });
  });

  after(async () => {
    stopping = true;
    for (const u of users) {
      if (u.client) u.client.close();
      if (u.socket) u.socket.disconnect();
    }
    if (newPid && alive(newPid)) {
      process.kill(newPid, 'SIGTERM');
      for (let i = 0; i < 100 && alive(newPid); i++) await sleep(100);
      if (alive(newPid)) process.kill(newPid, 'SIGKILL');
    }
    if (server) await server.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
    fs.rmSync(bpffsDir, { recursive: true, force: true });
  });

  // ---- native users: the test client reconnects at once when its connection closes ----
  async function nativeSession(u) {
    for (let attempt = 0; ; attempt++) {
      try {
        const c = await ChatClient.connect(server.port, u.ip, { handshakeTimeout: OP_TIMEOUT_MS });
        const w = await c.request({ type: 'login', name: u.name }, ['welcome', 'error'],
                                  OP_TIMEOUT_MS);
        if (w.type !== 'welcome') {
          if (w.code === 'name_taken') u.nameTaken++;
          c.close();
          throw new Error(`login ${u.name}: ${JSON.stringify(w)}`);
        }
        const j = await c.request({ type: 'join', room: u.room }, ['joined', 'error'],
                                  OP_TIMEOUT_MS);
        if (j.type !== 'joined') throw new Error(`join ${u.room}: ${JSON.stringify(j)}`);
        u.history = j.history.map((m) => m.text);
        u.sessions++;
        u.client = c;
        // Room messages of others, presence: recorded or dropped, not queued.
        c.onMessage = (m) => {
          if (m.type === 'message' && !m.cid) u.received.push(m.text);
          return m.type === 'online' || m.type === 'offline' || (m.type === 'message' && !m.cid);
        };
        const onClose = (code) => {
          u.closeCodes.push(code);
          if (!stopping) u.ready = nativeSession(u);
        };
        if (c.closed) onClose(c.closeCode);
        else c.onClose = onClose;
        return;
      } catch (e) {
        u.errors.push(String(e.message ?? e));
        if (attempt >= 50 || stopping) throw e;
        await sleep(100);
      }
    }
  }

  // ---- Socket.IO users: socket.io-client reconnects by itself; each (re)connect logs in ----
  function sioSession(u) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const login = () => {
        u.socket.emit('createsession', { email: u.name, clientIP: u.ip });
      };
      u.socket.on('accessgranted', () => {
        u.socket.emit('join', { room: u.room }, (ack) => {
          if (!ack || !ack.ok) {
            u.errors.push(`join: ${JSON.stringify(ack)}`);
            return;
          }
          u.history = ack.history.map((m) => m.text);
          u.sessions++;
          if (!settled) {
            settled = true;
            resolve();
          }
        });
      });
      u.socket.on('usernametaken', () => {
        u.nameTaken++;
        setTimeout(login, 100);
      });
      u.socket.on('connect', login);
      u.socket.on('disconnect', (reason) => u.disconnects.push(reason));
      u.socket.on('message', (m) => {
        if (!m.cid) u.received.push(m.text);
      });
      setTimeout(() => {
        if (!settled) reject(new Error(`${u.name}: no session within ${OP_TIMEOUT_MS} ms`));
      }, OP_TIMEOUT_MS);
    });
  }

  function makeSio(u) {
    u.agent = new BoundAgent(u.ip);
    u.socket = io(`http://127.0.0.1:${server.port}`, {
      agent: u.agent, localAddress: u.ip, forceNew: true, timeout: OP_TIMEOUT_MS,
      reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500,
      randomizationFactor: 0.5,
    });
    return sioSession(u);
  }

  async function say(u, text) {
    if (u.proto === 'native') {
      u.client.send({ type: 'say', room: u.room, text, cid: text });
      const r = await u.client.next((m) => (m.type === 'message' && m.cid === text) ||
                                           m.type === 'error', OP_TIMEOUT_MS, 'say');
      if (r.type !== 'message' || r.cid !== text) throw new Error(`say: ${JSON.stringify(r)}`);
    } else {
      const ack = await withTimeout(new Promise((r) => u.socket.emit('say', { room: u.room, text },
                                                                       r)),
                                    OP_TIMEOUT_MS, `${u.name} say`);
      if (!ack || !ack.ok) throw new Error(`say: ${JSON.stringify(ack)}`);
    }
  }

  async function healthzLoop(k, until) {
    let n = 0;
    while (!until()) {
      const ip = loopIpOf((k + LOOPS * n++) % LOOP_ADDRESSES);
      const r = await probe(server.port, ip);
      loops[r.result]++;
      if (r.result === 'ok') loops.pids.add(r.pid);
      else if (loops.examples.length < 10) loops.examples.push({ ip, ...r, t: Date.now() });
    }
  }

  test('200 users and a connect loop live through `steerchat ctl upgrade`', async () => {
    const t0 = Date.now();
    for (let i = 0; i < USERS; i++) {
      users.push({
        i, name: `user${i}`, ip: ipOf(i), room: `room${(i >> 1) % ROOMS}`,
        proto: i % 2 === 0 ? 'native' : 'sio', sessions: 0, nameTaken: 0, history: [],
        received: [], closeCodes: [], disconnects: [], errors: [], client: null, socket: null,
      });
    }
    // Log in and join, 25 at a time.
    for (let i = 0; i < USERS; i += 25) {
      await Promise.all(users.slice(i, i + 25).map((u) => {
        u.ready = u.proto === 'native' ? nativeSession(u) : makeSio(u);
        return u.ready;
      }));
    }
    // History: every user says one message in its room before the upgrade.
    for (let i = 0; i < USERS; i += 50)
      await Promise.all(users.slice(i, i + 50).map((u) => say(u, `before:${u.name}`)));
    const before = new Map();  // room -> texts said before the upgrade
    for (const u of users) {
      if (!before.has(u.room)) before.set(u.room, []);
      before.get(u.room).push(`before:${u.name}`);
    }
    const oldWorkerPids = new Set();
    for (let k = 0; k < LOOP_ADDRESSES; k++)
      oldWorkerPids.add((await healthzFrom(server.port, loopIpOf(k))).pid);
    assert.equal(oldWorkerPids.size, 2, 'the loop addresses reach both workers');
    assert.equal(await stateGeneration(server.port, loopIpOf(0)), 0);
    console.log(`setup: ${USERS} users in ${ROOMS} rooms in ${Date.now() - t0} ms`);

    // The connect loops run through the whole upgrade.
    let loopsDone = false;
    const loopRuns = Array.from({ length: LOOPS }, (_, k) => healthzLoop(k, () => loopsDone));
    await sleep(1000);
    const okBefore = loops.ok;

    const tUpgrade = Date.now();
    const ctl = await new Promise((resolve) => {
      execFile(binaryPath(),
               ['ctl', '--port', String(server.port), '--run-dir', runDir, '--timeout-ms', '30000',
                'upgrade'],
               (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }));
    });
    console.log(`ctl upgrade (${Date.now() - tUpgrade} ms): exit ${ctl.code}: ` +
                `${ctl.stdout.trim()}${ctl.stderr.trim()}`);
    assert.equal(ctl.code, 0, `ctl upgrade failed: ${ctl.stderr}\n${server.log}`);
    const m = /upgraded: pid (\d+) serves port/.exec(ctl.stdout);
    assert.ok(m, `ctl upgrade's answer names the new master: ${ctl.stdout}`);
    newPid = Number(m[1]);

    const oldExit = await withTimeout(server.exited, 15000, 'the old master exiting');
    console.log(`old master exited ${JSON.stringify(oldExit)} ${Date.now() - tUpgrade} ms ` +
                'after the upgrade began');
    assert.deepEqual(oldExit, { code: 0, signal: null }, 'the old master exits 0');

    // Every user comes back by itself.
    const deadline = Date.now() + 30000;
    while (users.some((u) => u.sessions < 2) && Date.now() < deadline) await sleep(100);
    const back = users.filter((u) => u.sessions >= 2).length;
    console.log(`users back: ${back} of ${USERS}, ${Date.now() - tUpgrade} ms after the upgrade ` +
                'began');
    await sleep(1000);
    loopsDone = true;
    await Promise.all(loopRuns);
    const newWorkerPids = [...loops.pids].filter((p) => !oldWorkerPids.has(p));
    console.log(`connect loops: ${JSON.stringify({ ...loops, pids: undefined })}, ` +
                `${okBefore} before the upgrade; answered by the new workers: ${newWorkerPids}`);

    // The connect loops: nothing refused, reset or failed.
    assert.equal(loops.refused, 0, `refused: ${JSON.stringify(loops.examples)}`);
    assert.equal(loops.reset, 0, `reset: ${JSON.stringify(loops.examples)}`);
    assert.equal(loops.other, 0, `failed: ${JSON.stringify(loops.examples)}`);
    assert.ok(loops.ok > okBefore + 50, 'the loops ran through the upgrade');
    assert.equal(newWorkerPids.length, 2, 'both new workers answered the loops');

    // The new master serves, holds the lock and the pins.
    assert.ok(alive(newPid), 'the new master runs');
    for (const pid of newWorkerPids) assert.equal(ppidOf(pid), newPid, 'a new worker is its child');
    assert.equal(fs.readFileSync(path.join(runDir, `${server.port}.lock`), 'utf8').trim(),
                 String(newPid), 'the lock file holds the new master');
    const pinDir = `${bpffsDir}/${server.port}`;
    const pins = fs.readdirSync(pinDir);
    for (const name of ['sockets', 'buckets', 'config', 'stats', 'steer'])
      assert.ok(pins.includes(name), `pin ${name} in ${pins}`);
    for (let k = 0; k < 4; k++)  // both workers: the state was taken over once
      assert.equal(await stateGeneration(server.port, loopIpOf(k)), 1);

    // Every user is back under its own name, with its room's history.
    const missing = users.filter((u) => u.sessions < 2);
    assert.equal(missing.length, 0,
                 `users not back: ${missing.slice(0, 5).map((u) => `${u.name} ${u.errors}`)}`);
    const taken = users.filter((u) => u.nameTaken > 0);
    assert.equal(taken.length, 0, `name_taken at re-login: ${taken.map((u) => u.name)}`);
    for (const u of users.filter((x) => x.proto === 'native'))
      assert.ok(u.closeCodes.includes(1001), `${u.name} closed with ${u.closeCodes}, not 1001`);
    for (const u of users) {
      for (const text of before.get(u.room))
        assert.ok(u.history.includes(text), `${u.name}: ${text} missing from ${u.room}'s history`);
    }

    // No name lost or duplicated: a newcomer sees each exactly once.
    const observer = await ChatClient.connect(server.port, '127.9.0.1');
    const w = await observer.request({ type: 'login', name: 'observer' }, ['welcome', 'error']);
    assert.equal(w.type, 'welcome');
    const names = w.users.filter((n) => n !== 'observer').sort();
    assert.deepEqual(names, users.map((u) => u.name).sort(), 'every name once');
    observer.close();

    // The new workers' logs carry a message to every member of the room, on both workers.
    const room0 = users.filter((u) => u.room === 'room0');
    assert.deepEqual(new Set(room0.map((u) => u.proto)), new Set(['native', 'sio']));
    for (const u of room0) u.received = [];
    const senders = [room0.find((u) => u.proto === 'native'), room0.find((u) => u.proto === 'sio')];
    for (const u of senders) await say(u, `after the upgrade from ${u.name}`);
    const waitUntil = Date.now() + 5000;
    // Everyone gets the others' messages (a sender's own copy is its acknowledgement).
    const got = (u) => senders.every((s) => s === u ||
                                            u.received.includes(`after the upgrade from ${s.name}`));
    while (room0.some((u) => !got(u)) && Date.now() < waitUntil) await sleep(50);
    const deaf = room0.filter((u) => !got(u));
    assert.equal(deaf.length, 0, `not delivered to ${deaf.map((u) => u.name)}`);
    const slots = new Set();
    for (const u of room0) slots.add((await healthzFrom(server.port, u.ip)).worker);
    assert.equal(slots.size, 2, 'room0 has members on both workers');

    // A second upgrade, from the master that took over (its command line has --takeover): the
    // users come back once more, each name still once.
    const ctl2 = await new Promise((resolve) => {
      execFile(binaryPath(),
               ['ctl', '--port', String(server.port), '--run-dir', runDir, '--timeout-ms', '30000',
                'upgrade'],
               (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }));
    });
    assert.equal(ctl2.code, 0, `second ctl upgrade failed: ${ctl2.stderr}\n${server.log}`);
    const secondPid = Number(/upgraded: pid (\d+) serves port/.exec(ctl2.stdout)[1]);
    for (let i = 0; i < 100 && alive(newPid); i++) await sleep(100);
    assert.ok(!alive(newPid), 'the first new master exited after handing over');
    newPid = secondPid;
    const deadline2 = Date.now() + 30000;
    while (users.some((u) => u.sessions < 3) && Date.now() < deadline2) await sleep(100);
    assert.equal(users.filter((u) => u.sessions < 3).length, 0, 'every user back after the second');
    assert.equal(users.filter((u) => u.nameTaken > 0).length, 0);
    assert.equal(await stateGeneration(server.port, loopIpOf(1)), 2);
    const observer2 = await ChatClient.connect(server.port, '127.9.0.2');
    const w2 = await observer2.request({ type: 'login', name: 'observer2' }, ['welcome', 'error']);
    assert.deepEqual(w2.users.filter((n) => n !== 'observer2').sort(),
                     users.map((u) => u.name).sort(), 'every name once after the second upgrade');
    observer2.close();

    // The new master owns the pins now: its own stop removes them.
    stopping = true;
    process.kill(newPid, 'SIGTERM');
    for (let i = 0; i < 100 && alive(newPid); i++) await sleep(100);
    assert.ok(!alive(newPid), 'the new master stops on SIGTERM');
    assert.ok(!fs.existsSync(pinDir), 'the new master removed the pins it took over');
    console.log(`whole test ${Date.now() - t0} ms`);
  });
});

// A takeover that cannot read the running server's chat state (another layout version, made
// here by writing another version number into the running master's state, through
// /proc/PID/fd) is refused with both versions and the way out named, and leaves the old server
// serving, untouched: its workers, its users' connections, its lock and pins, no connection of a
// connect loop refused. --takeover --discard-state then takes over with an empty state.
describe('a takeover refused for another state layout', { skip: !root && 'needs root' }, () => {
  let server;
  let runDir;
  let newPid = null;

  before(async () => {
    runDir = fs.mkdtempSync('/tmp/steerchat-upgrade-');
    server = await Server.start({ workers: 2, steering: 'bpf',
                                  args: ['--run-dir', runDir, '--bpffs-dir', bpffsDir,
                                         '--drain-timeout-ms', '1000'] });
  });

  after(async () => {
    if (newPid && alive(newPid)) {
      process.kill(newPid, 'SIGTERM');
      for (let i = 0; i < 100 && alive(newPid); i++) await sleep(100);
    }
    if (server) await server.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
    fs.rmSync(bpffsDir, { recursive: true, force: true });
  });

  // The running master's chat state: its memfd, opened again through /proc (root).
  function stateFile() {
    const dir = `/proc/${server.proc.pid}/fd`;
    for (const fd of fs.readdirSync(dir)) {
      let target = '';
      try {
        target = fs.readlinkSync(`${dir}/${fd}`);
      } catch {
        continue;
      }
      if (target.startsWith('/memfd:steerchat-chat')) return `${dir}/${fd}`;
    }
    throw new Error(`no chat state memfd among ${dir}`);
  }

  function run(args) {
    return new Promise((resolve) => {
      execFile(binaryPath(), args, { timeout: 30000 },
               (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stdout,
                                                  stderr }));
    });
  }

  test('is refused naming both versions and leaves the old server serving', async () => {
    const c = await ChatClient.connect(server.port, '127.7.1.1');
    const w = await c.request({ type: 'login', name: 'stays' }, ['welcome', 'error']);
    assert.equal(w.type, 'welcome');
    await c.request({ type: 'join', room: 'kept' }, ['joined']);
    const pidsBefore = new Set();
    for (let k = 0; k < 8; k++) pidsBefore.add((await healthzFrom(server.port, loopIpOf(k))).pid);

    const file = stateFile();
    const fd = fs.openSync(file, 'r+');
    const version = Buffer.alloc(4);
    fs.readSync(fd, version, 0, 4, 8);
    const ours = version.readUInt32LE(0);
    const other = Buffer.alloc(4);
    other.writeUInt32LE(ours + 1000);
    fs.writeSync(fd, other, 0, 4, 8);

    let loopsDone = false;
    const loops = { ok: 0, refused: 0, reset: 0, other: 0, examples: [], pids: new Set() };
    const loop = (async () => {
      for (let n = 0; !loopsDone; n++) {
        const r = await probe(server.port, loopIpOf(n % 8));
        loops[r.result]++;
        if (r.result === 'ok') loops.pids.add(r.pid);
        else if (loops.examples.length < 5) loops.examples.push(r);
      }
    })();

    try {
      // `ctl upgrade` reports the new binary's refusal; the binary run by hand says it too.
      const ctl = await run(['ctl', '--port', String(server.port), '--run-dir', runDir,
                             '--timeout-ms', '30000', 'upgrade']);
      console.log(`ctl upgrade: exit ${ctl.code}: ${ctl.stdout}${ctl.stderr}`);
      assert.equal(ctl.code, 1);
      assert.match(ctl.stderr, new RegExp(`the upgrade failed: .*layout version ${ours + 1000}, ` +
                                          `this binary uses version ${ours}.*--discard-state.*` +
                                          'serves on, unchanged'));
      const direct = await run(['--port', String(server.port), '--workers', '2', '--bind',
                                '127.0.0.1', '--run-dir', runDir, '--bpffs-dir', bpffsDir,
                                '--takeover']);
      const refusal = direct.stderr;
      console.log(`--takeover: exit ${direct.code}: ${refusal}`);
      assert.equal(direct.code, 1);
      assert.match(refusal, new RegExp(`layout version ${ours + 1000}, this binary uses version ` +
                                       `${ours}`));
      assert.match(refusal, /--discard-state/);
      assert.match(server.log, /takeover by pid \d+ failed: .*layout version.*serves on, unchanged/);

      await sleep(300);
    } finally {
      loopsDone = true;
      await loop;
    }
    // The old server: the same workers, the user still connected and chatting, lock and pins.
    console.log(`connect loop: ${JSON.stringify({ ...loops, pids: [...loops.pids] })}`);
    assert.equal(loops.refused + loops.reset + loops.other, 0, JSON.stringify(loops.examples));
    assert.deepEqual(new Set(loops.pids), pidsBefore, 'the same workers answer');
    assert.equal(server.proc.exitCode, null, 'the old master runs');
    assert.equal(fs.readFileSync(path.join(runDir, `${server.port}.lock`), 'utf8').trim(),
                 String(server.proc.pid));
    assert.ok(fs.readdirSync(`${bpffsDir}/${server.port}`).includes('sockets'));
    c.send({ type: 'say', room: 'kept', text: 'still here', cid: 'k' });
    const said = await c.next((m) => m.type === 'message' && m.cid === 'k');
    assert.equal(said.text, 'still here');
    assert.ok(!c.closed);

    // --discard-state: the takeover goes ahead with an empty chat state.
    const { spawn } = await import('node:child_process');
    const proc = spawn(binaryPath(), ['--port', String(server.port), '--workers', '2', '--bind',
                                      '127.0.0.1', '--run-dir', runDir, '--bpffs-dir', bpffsDir,
                                      '--takeover', '--discard-state'],
                       { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    proc.stdout.on('data', (d) => (log += d));
    proc.stderr.on('data', (d) => (log += d));
    newPid = proc.pid;
    const oldExit = await withTimeout(server.exited, 15000, 'the old master exiting');
    assert.deepEqual(oldExit, { code: 0, signal: null });
    assert.match(log, /--discard-state: starting with an empty chat state/);
    // The user was closed with 1001 and finds its name free, its room without history.
    for (let i = 0; i < 50 && !c.closed; i++) await sleep(100);
    assert.equal(c.closeCode, 1001);
    const c2 = await ChatClient.connect(server.port, '127.7.1.1');
    const w2 = await c2.request({ type: 'login', name: 'stays' }, ['welcome', 'error']);
    assert.equal(w2.type, 'welcome', JSON.stringify(w2));
    assert.deepEqual(w2.users, ['stays']);
    const j2 = await c2.request({ type: 'join', room: 'kept' }, ['joined']);
    assert.deepEqual(j2.history, []);
    c2.close();
  });
});

// The chat state's sizes are fixed for its life (issue 17): a takeover whose command line asks
// for other sizes is refused naming both and the way out, and the old server serves on.
describe('a takeover refused for other chat state sizes', { skip: !root && 'needs root' }, () => {
  let server;
  let runDir;

  before(async () => {
    runDir = fs.mkdtempSync('/tmp/steerchat-upgrade-');
    server = await Server.start({ workers: 2, steering: 'bpf',
                                  args: ['--run-dir', runDir, '--bpffs-dir', bpffsDir,
                                         '--chat-max-users', '1000', '--chat-max-rooms', '100'] });
  });

  after(async () => {
    if (server) await server.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
    fs.rmSync(bpffsDir, { recursive: true, force: true });
  });

  test('is refused naming both sizes; the old server serves on', async () => {
    const c = await ChatClient.connect(server.port, '127.7.2.1');
    assert.equal((await c.request({ type: 'login', name: 'sized' }, ['welcome'])).type, 'welcome');
    const direct = await new Promise((resolve) => {
      execFile(binaryPath(), ['--port', String(server.port), '--workers', '2', '--bind',
                              '127.0.0.1', '--run-dir', runDir, '--bpffs-dir', bpffsDir,
                              '--chat-max-users', '2000', '--chat-max-rooms', '100', '--takeover'],
               { timeout: 30000 },
               (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stderr }));
    });
    console.log(`--takeover with other sizes: exit ${direct.code}: ${direct.stderr}`);
    assert.equal(direct.code, 1);
    assert.match(direct.stderr, /chat state has 1000 users, 100 rooms.*asks for 2000, 100/);
    assert.match(direct.stderr, /--discard-state/);
    assert.equal(server.proc.exitCode, null, 'the old master runs');
    c.send({ type: 'say', room: 'x', text: 'n/a' });  // not in a room: an error, still answered
    assert.equal((await c.next((m) => m.type === 'error')).code, 'not_in_room');
    assert.ok(!c.closed);
    c.close();
  });
});
