// Reload (SIGHUP) seen by the official socket.io-client 4: a session opened before a reload that
// changes the Engine.IO heartbeat keeps the heartbeat its open packet announced (the client
// would drop a session whose pings come later than it was told), while a session opened after
// the reload is told the new values; the chat works on both.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/reload.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { Server, get } = await import('./lib/server.mjs');
const { SioClient } = await import('./lib/sio-client.mjs');

const conf = path.join(os.tmpdir(), `steerchat-reload-e2e-${process.pid}.conf`);
let server;

function count(text, needle) {
  return text.split(needle).length - 1;
}

async function waitFor(cond, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what} not within ${timeoutMs} ms:\n${server.log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function login(c, name) {
  c.emit('createsession', { email: name });
  const granted = await c.next('accessgranted');
  assert.ok(granted, `${name} logged in`);
}

before(async () => {
  fs.writeFileSync(conf, 'eio-ping-interval-ms = 400\neio-ping-timeout-ms = 1000\n');
  server = await Server.start({ workers: 2, args: ['--config', conf] });
});

after(async () => {
  await server?.stop();
  fs.rmSync(conf, { force: true });
});

test('a reload changes the heartbeat of new Engine.IO sessions only', async () => {
  const old = await SioClient.connect(server.port, { ip: '127.13.0.1' });
  await old.upgradedToWebSocket();
  // engine.io-client 6 (pinned by package-lock.json) keeps the announced interval here.
  assert.equal(old.socket.io.engine._pingInterval, 400);
  await login(old, 'before-reload');

  fs.writeFileSync(conf, 'eio-ping-interval-ms = 5000\neio-ping-timeout-ms = 1000\n');
  server.proc.kill('SIGHUP');
  await waitFor(() => count(server.log, 'applied the reloaded configuration (reload 1)') === 2,
                'both workers applying the reload');
  assert.match(server.log, /reloaded .*: changed eio-ping-interval-ms; kept \(need a restart\): nothing/);

  // Told 400 + 1000 ms: a session moved to the new 5000 ms heartbeat would be dropped by its
  // client ("ping timeout") 1.4 s after its last ping. Wait 3 s (a slow server still pings
  // every 400 ms, well inside the 1.4 s).
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal(old.disconnectReason, null, `the session from before the reload was dropped:\n${server.log}`);
  assert.ok(old.socket.connected);

  const fresh = await SioClient.connect(server.port, { ip: '127.13.0.2' });
  assert.equal(fresh.socket.io.engine._pingInterval, 5000);
  const open = await get(server.port, '/socket.io/?EIO=4&transport=polling');
  assert.match(open.body, /"pingInterval":5000,"pingTimeout":1000/);
  await login(fresh, 'after-reload');
  // The old session still reaches the chat (a message to nobody is answered clientNotFound).
  old.emit('newMessage', { to: 'nobody-here', message: 'hi' });
  assert.deepEqual(await old.next('clientNotFound'), ['nobody-here']);
  old.close();
  fresh.close();
});
