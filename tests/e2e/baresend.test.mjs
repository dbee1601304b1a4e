// steerchat-baresend, the bare-sender floor of scripts/bench's broadcast (issue 16), is only a
// floor if it does the same work as steerchat: it must send the same bytes for a say (compared
// here with steerchat's own frames, ids and times aside, over the native protocol and Socket.IO)
// and deliver every frame to every member (steerchat-bench broadcast against it, over both
// protocols and its two threads, must find nothing missing).
//   STEERCHAT_BINARY=build/steerchat STEERCHAT_BARESEND=build/userspace/bench/steerchat-baresend \
//   STEERCHAT_BENCH=build/userspace/bench/steerchat-bench node --test tests/e2e/baresend.test.mjs
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'ws', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks ws: run tests/e2e/setup.sh (npm ci)`);
}
const { default: WebSocket } = await import('ws');
const { Server } = await import('./lib/server.mjs');

for (const v of ['STEERCHAT_BARESEND', 'STEERCHAT_BENCH']) {
  if (!process.env[v]) throw new Error(`${v} is not set (the path of the built binary)`);
}

// The bare sender on a free port; resolves once it prints where it listens.
function startBare() {
  const proc = spawn(process.env.STEERCHAT_BARESEND, ['--port', '0', '--threads', '2'],
                     { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => (log += d));
  const exited = new Promise((r) => proc.on('exit', (code, signal) => r({ code, signal })));
  const port = new Promise((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on [0-9.]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    exited.then((e) => reject(new Error(`steerchat-baresend exited (${JSON.stringify(e)}): ${log}`)));
  });
  return { proc, port, exited, log: () => log };
}

// A WebSocket that queues the text it receives, raw.
async function open(port, target) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${target}`);
  const inbox = [];
  const waiters = [];
  ws.on('message', (d) => {
    inbox.push(d.toString());
    waiters.splice(0).forEach((f) => f());
  });
  ws.on('error', () => {});
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const next = async (pred, what) => {
    const deadline = Date.now() + 5000;
    for (;;) {
      const i = inbox.findIndex(pred);
      if (i >= 0) return inbox.splice(i, 1)[0];
      assert.ok(Date.now() < deadline, `no ${what} within 5 s; got ${JSON.stringify(inbox)}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
  };
  return { ws, next };
}

// The frame a say to room "r1" by "alice" brings back over the native protocol.
async function nativeMessage(port) {
  const c = await open(port, '/ws');
  c.ws.send(JSON.stringify({ type: 'login', name: 'alice' }));
  await c.next((m) => m.startsWith('{"type":"welcome"'), 'welcome');
  c.ws.send(JSON.stringify({ type: 'join', room: 'r1' }));
  await c.next((m) => m.startsWith('{"type":"joined"'), 'joined');
  c.ws.send(JSON.stringify({ type: 'say', room: 'r1', text: 't=12 s=3 seq=4' }));
  const m = await c.next((x) => x.startsWith('{"type":"message"'), 'message');
  c.ws.terminate();
  return m;
}

// The same over Socket.IO (Engine.IO v4 on a WebSocket).
async function sioMessage(port) {
  const c = await open(port, '/socket.io/?EIO=4&transport=websocket');
  await c.next((m) => m.startsWith('0{'), 'Engine.IO open');
  c.ws.send('40');
  await c.next((m) => m.startsWith('40'), 'Socket.IO connect');
  c.ws.send('42["createsession",{"email":"alice"}]');
  await c.next((m) => m.startsWith('42["accessgranted"'), 'accessgranted');
  c.ws.send('421["join","r1"]');
  const ack = await c.next((m) => m.startsWith('431['), 'join ack');
  assert.match(ack, /"ok":true/);
  c.ws.send('42["say",{"room":"r1","text":"t=12 s=3 seq=4"}]');
  const m = await c.next((x) => x.startsWith('42["message"'), 'message');
  c.ws.terminate();
  return m;
}

// Ids, room sequence numbers and times differ between two servers; the rest must not.
const normalized = (m) => m.replace(/"(id|seq|ts)":\d+/g, '"$1":0');

function bench(port, protocol, pid, json) {
  return new Promise((resolve, reject) => {
    execFile(process.env.STEERCHAT_BENCH,
             ['broadcast', '--port', String(port), '--protocol', protocol, '--clients', '40',
              '--rooms', '2', '--rate', '20', '--duration', '1', '--server-pid', String(pid),
              '--name-prefix', `bare-${protocol}-`, '--json', json],
             { timeout: 60000 }, (err, stdout, stderr) => {
               if (err) reject(new Error(`steerchat-bench: ${err.message}\n${stdout}${stderr}`));
               else resolve(JSON.parse(fs.readFileSync(json, 'utf8')));
             });
  });
}

describe('steerchat-baresend', () => {
  let bare;
  let bport;
  let dir;
  before(async () => {
    bare = startBare();
    bport = await bare.port;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'baresend-'));
  });
  after(async () => {
    bare.proc.kill('SIGTERM');
    const e = await bare.exited;
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(e.code, 0, `steerchat-baresend exit: ${JSON.stringify(e)}; ${bare.log()}`);
  });

  test('sends the bytes steerchat sends for a say', async () => {
    const server = await Server.start({ workers: 1 });
    try {
      const ours = await nativeMessage(server.port);
      const floor = await nativeMessage(bport);
      assert.match(ours, /"id":\d+,"seq":\d+,"ts":\d+/);
      assert.equal(normalized(floor), normalized(ours));
      const oursSio = await sioMessage(server.port);
      const floorSio = await sioMessage(bport);
      assert.equal(normalized(floorSio), normalized(oursSio));
    } finally {
      await server.stop();
    }
  });

  for (const protocol of ['native', 'sio']) {
    test(`delivers every say to every member (${protocol}, 2 threads)`, async () => {
      const r = await bench(bport, protocol, bare.proc.pid, path.join(dir, `${protocol}.json`));
      assert.ok(r.expected_deliveries >= 1000, `expected ${r.expected_deliveries}`);
      assert.equal(r.received_deliveries, r.expected_deliveries);
      assert.equal(r.loss_ratio, 0);
      assert.equal(r.connections_lost, 0);
      assert.equal(r.error_frames, 0);
      assert.equal(r.foreign_messages, 0);
      assert.ok(r.server_cpu_s > 0 && r.deliveries_per_server_cpu_s > 0,
                `server CPU ${r.server_cpu_s}`);
    });
  }
});
