// `steerchat balance` supervising a plain program (examples/balance/python/server.py, stdlib
// only): what each copy inherits, stickiness per client address, a copy that dies is respawned
// into its slot and answers the connection made meanwhile, a copy that keeps dying is drained,
// SIGTERM stops every copy (SIGKILL for one that ignores it) and removes the pins, and a COMMAND
// that is missing or dies at once ends the master with an error instead of a restart loop.
// Root only (BPF steering, pins); run in a private network namespace (in-netns.sh).
//   STEERCHAT_BINARY=build/steerchat tests/e2e/in-netns.sh node --test tests/e2e/balance-supervise.test.mjs
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { binaryPath } from './lib/server.mjs';

import { Balance, alive, examples, getFrom, pgidOf, waitFor } from './lib/balance.mjs';

const root = process.getuid && process.getuid() === 0;
const PY = ['/usr/bin/python3', path.join(examples, 'python', 'server.py')];
const PORT = 19120;
const ADMIN = 19121;
const WORKERS = 3;
const ipOf = (i) => `127.2.${(i + 1) >> 8}.${(i + 1) & 255}`;
const ADDRESSES = 40;

const who = async (i, urlPath = '/') => JSON.parse((await getFrom(PORT, urlPath, { ip: ipOf(i) })).body);

describe('steerchat balance over a Python server (3 copies)', { skip: root ? false : 'needs root' }, () => {
  let b;
  const slotOf = [];  // address index -> slot
  before(async () => {
    b = await Balance.start({ port: PORT, adminPort: ADMIN, workers: WORKERS, command: PY,
                              args: ['--max-restarts', '3', '--restart-window', '60'] });
  });
  after(async () => {
    if (b && !b.exit) await b.stop();
  });

  test('each copy inherits only its listener as fd 3, the activation variables, a process group ' +
       'of its own; output comes prefixed with the slot', async () => {
    const h = await b.healthz();
    assert.equal(h.slots.length, WORKERS);
    const pids = new Set(h.slots.map((s) => s.pid));
    const seen = new Map();  // pid -> answer
    for (let i = 0; i < ADDRESSES; i++) {
      const a = await who(i);
      slotOf.push(a.slot);
      seen.set(a.pid, a);
      // The same address again: the same copy (a new TCP connection, steered again).
      assert.equal((await who(i)).pid, a.pid, `${ipOf(i)} moved`);
    }
    assert.deepEqual(new Set(seen.keys()), pids, `${ADDRESSES} addresses should reach every copy`);
    for (const [pid, a] of seen) {
      assert.deepEqual(a.inherited_fds, [0, 1, 2, 3], `pid ${pid} inherited ${a.inherited_fds}`);
      assert.equal(a.workers, WORKERS);
      assert.equal(h.slots.find((s) => s.pid === pid).slot, a.slot, 'STEERCHAT_SLOT is its slot');
      assert.equal(pgidOf(pid), pid, `pid ${pid} leads its own process group`);
      // LISTEN_PID named this very process: otherwise server.py would not use fd 3 (and nothing
      // would answer on the port).
      assert.match(b.log, new RegExp(`\\[slot ${a.slot}\\] pid ${pid} serving on`));
    }
    // The workers run unprivileged.
    const status = fs.readFileSync(`/proc/${[...pids][0]}/status`, 'utf8');
    assert.match(status, /^Uid:\s+(\d+)/m);
    assert.notEqual(Number(status.match(/^Uid:\s+(\d+)/m)[1]), 0, 'a copy runs as root');
    assert.match(status, /^CapEff:\s+0+$/m);
  });

  test('a copy that dies is respawned into its slot; the connection made meanwhile is answered ' +
       'by the new copy', async () => {
    const i = slotOf.findIndex((s) => s === 1);
    const old = await who(i);
    process.kill(old.pid, 'SIGKILL');
    // At once, while the slot has no process (respawn after 100 ms): it waits in the listener.
    const t0 = Date.now();
    const now = await who(i);
    assert.notEqual(now.pid, old.pid);
    assert.equal(now.slot, old.slot);
    console.log(`slot ${old.slot}: pid ${old.pid} killed, pid ${now.pid} answered ` +
                `after ${Date.now() - t0} ms`);
    // Every address of that slot is still on it.
    for (let k = 0; k < ADDRESSES; k++) {
      if (slotOf[k] === old.slot) assert.equal((await who(k)).pid, now.pid, `${ipOf(k)} moved`);
    }
    const h = await b.healthz();
    assert.equal(h.slots.find((s) => s.slot === old.slot).restarts, 1);
  });

  test('steerchat ctl workers N resizes the pool live; the copies are told their pool size',
       async () => {
    const ctl = (...words) => spawnSync(binaryPath(), ['ctl', '--port', String(PORT), '--run-dir',
                                                       b.runDir, ...words], { encoding: 'utf8' });
    let r = ctl('workers', '4');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /workers 3 -> 4; started slot\(s\) 3/);
    await b.ready(4);
    const added = (await b.healthz()).slots.find((s) => s.slot === 3);
    let moved = 0;
    for (let k = 0; k < ADDRESSES; k++) {
      const a = await who(k);
      if (a.slot === 3) {
        moved++;
        assert.equal(a.pid, added.pid);
        assert.equal(a.workers, 4, 'STEERCHAT_WORKERS of the new copy');
      } else {
        assert.equal(a.slot, slotOf[k], `${ipOf(k)} moved between the old slots`);
      }
    }
    assert.ok(moved > 0 && moved < ADDRESSES / 2, `${moved} of ${ADDRESSES} addresses moved`);
    r = ctl('workers', '3');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    await waitFor(`slot 3's copy (pid ${added.pid}) stopped`, () => !alive(added.pid));
    for (let k = 0; k < ADDRESSES; k++) assert.equal((await who(k)).slot, slotOf[k], `${ipOf(k)}`);
    // What balance cannot do, it says.
    r = ctl('reload');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /nothing to reload/);
  });

  test('a copy that keeps dying is drained: its clients move to the other copies', async () => {
    const i = slotOf.findIndex((s) => s === 2);
    const pids = [];
    // --max-restarts 3: the third death within the window drains the slot.
    for (let death = 0; death < 3; death++) {
      const a = await who(i, '/exit');
      assert.equal(a.slot, 2);
      pids.push(a.pid);
      await waitFor(`pid ${a.pid} gone`, () => !alive(a.pid));
    }
    assert.equal(new Set(pids).size, 3, `expected three successive copies in slot 2: ${pids}`);
    await waitFor('slot 2 drained', async () => (await b.healthz()).drained === 1);
    const h = await b.healthz();
    assert.deepEqual(h.slots.map((s) => s.slot).sort(), [0, 1]);
    assert.match(b.log, /draining slot 2/);
    // Its addresses are served by the others now; the others' addresses did not move.
    const after = await who(i);
    assert.notEqual(after.slot, 2);
    for (let k = 0; k < ADDRESSES; k++) {
      if (slotOf[k] !== 2) assert.equal((await who(k)).slot, slotOf[k], `${ipOf(k)} moved`);
    }
    // /metrics on the admin port has the steering and the slot's state.
    const m = (await getFrom(ADMIN, '/metrics')).body;
    assert.match(m, /steerchat_worker_state\{worker="2",state="drained"\} 1/);
    const selected = m.match(/^steerchat_steer_connections_total\{outcome="selected"\} (\d+)$/m);
    assert.ok(selected && Number(selected[1]) >= ADDRESSES, `steering counters: ${selected}`);
    assert.match(m, /^steerchat_steer_buckets\{worker="2"\} 0$/m);
    assert.match(m, /^steerchat_admin_requests_total [1-9]\d*$/m);
  });

  test('the admin port: 404 elsewhere, a silent client is closed after 2 s and counted', async () => {
    assert.equal((await getFrom(ADMIN, '/nothing')).status, 404);
    const t0 = Date.now();
    await new Promise((resolve, reject) => {
      const s = net.connect(ADMIN, '127.0.0.1');
      s.on('error', reject);
      s.on('close', resolve);
      s.resume();
    });
    const took = Date.now() - t0;
    assert.ok(took >= 1500 && took < 5000, `closed after ${took} ms`);
    const m = (await getFrom(ADMIN, '/metrics')).body;
    assert.match(m, /^steerchat_admin_connections_closed_total\{reason="timeout"\} 1$/m);
  });

  test('SIGTERM stops every copy and removes the pins', async () => {
    const pids = (await b.healthz()).slots.map((s) => s.pid);
    assert.ok(fs.existsSync(`/sys/fs/bpf/steerchat/${PORT}`));
    const res = await b.stop();
    assert.deepEqual(res, { code: 0, signal: null }, b.log);
    for (const pid of pids) assert.ok(!alive(pid), `pid ${pid} outlived the master`);
    assert.ok(!fs.existsSync(`/sys/fs/bpf/steerchat/${PORT}`), 'pins left behind');
  });
});

describe('steerchat balance: stopping, and bad COMMANDs', { skip: root ? false : 'needs root' }, () => {
  test('a copy that ignores SIGTERM is killed after --shutdown-timeout-ms', async () => {
    // An ignored signal stays ignored across exec: python3 never sees the SIGTERM.
    const b = await Balance.start({
      port: PORT + 2, adminPort: ADMIN + 2, workers: 2,
      args: ['--shutdown-timeout-ms', '600'],
      command: ['/bin/sh', '-c', `trap '' TERM; exec ${PY.join(' ')}`] });
    const pids = (await b.healthz()).slots.map((s) => s.pid);
    const t0 = Date.now();
    const res = await b.stop();
    const took = Date.now() - t0;
    assert.deepEqual(res, { code: 0, signal: null }, b.log);
    assert.ok(took >= 500, `stopped after ${took} ms: the copies did not ignore SIGTERM?`);
    assert.match(b.log, /did not stop in time; killing it/);
    for (const pid of pids) assert.ok(!alive(pid), `pid ${pid} outlived the master`);
  });

  const run = (args, timeoutMs = 20000) => {
    const t0 = Date.now();
    const r = spawnSync(binaryPath(), ['balance', '--port', String(PORT + 4), '--workers', '3',
                                       '--run-dir', fs.mkdtempSync('/tmp/steerchat-balance-'),
                                       ...args], { encoding: 'utf8', timeout: timeoutMs });
    return { ...r, ms: Date.now() - t0, out: r.stdout + r.stderr };
  };

  test('a COMMAND that does not exist: exit 2 naming it, nothing started', () => {
    const r = run(['--', 'no-such-program-here', 'x']);
    assert.equal(r.status, 2, r.out);
    assert.match(r.out, /command 'no-such-program-here' not found on PATH/);
    const plain = path.join(fs.mkdtempSync('/tmp/steerchat-balance-'), 'not-executable');
    fs.writeFileSync(plain, '#!/bin/sh\n', { mode: 0o644 });
    const r2 = run(['--', plain]);
    assert.equal(r2.status, 2, r2.out);
    assert.match(r2.out, /cannot run '.*not-executable': Permission denied/);
    assert.ok(!fs.existsSync(`/sys/fs/bpf/steerchat/${PORT + 4}`));
  });

  test('a COMMAND that exits at once: exit 1 with its status and output, no restart loop', () => {
    const r = run(['--', '/bin/sh', '-c', 'echo "config missing" >&2; exit 7']);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /\[slot \d\] config missing/);
    assert.match(r.out, /exited with status 7 within --start-grace-ms/);
    assert.doesNotMatch(r.out, /respawning/);
    assert.ok(r.ms < 5000, `took ${r.ms} ms`);
    const r2 = run(['--', '/usr/bin/python3', '/nonexistent/app.py']);
    assert.equal(r2.status, 1, r2.out);
    assert.match(r2.out, /can't open file/);
    assert.ok(!fs.existsSync(`/sys/fs/bpf/steerchat/${PORT + 4}`), 'pins left behind');
  });

  test('a COMMAND only root may run: the unprivileged copies cannot exec it, exit 1 naming why',
       () => {
    const dir = fs.mkdtempSync('/tmp/steerchat-balance-');  // 0700, root's
    const script = path.join(dir, 'server.sh');
    fs.writeFileSync(script, '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
    const r = run(['--', script]);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /cannot run .*server\.sh as slot \d: Permission denied \(the children run as \S+; they need to read and execute it\)/);
    assert.doesNotMatch(r.out, /respawning/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('no COMMAND, or a setting of the built-in workers: exit 2 naming the fix', () => {
    let r = run([]);
    assert.equal(r.status, 2, r.out);
    assert.match(r.out, /no COMMAND/);
    r = run(['node', 'server.js']);
    assert.equal(r.status, 2, r.out);
    assert.match(r.out, /the command goes after '--'/);
    r = run(['--eio-ping-interval-ms', '100', '--', '/bin/true']);
    assert.equal(r.status, 2, r.out);
    assert.match(r.out, /setting of steerchat's own chat workers/);
  });
});
