// Hostile input replayed against the real binary (issue 9): what once killed a worker must now be
// answered with an error while the worker (same pid) and the connection go on.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/hardening.test.mjs
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'ws', 'package.json'))) {
  throw new Error(`${here}/node_modules is missing: run tests/e2e/setup.sh (npm ci) first`);
}
const { ChatClient, healthzFrom } = await import('./lib/chat-client.mjs');
const { Server } = await import('./lib/server.mjs');

let server;
before(async () => {
  server = await Server.start({ workers: 2 });
});
after(async () => {
  if (server) await server.stop();
});

describe('a crafted message does not kill a worker', () => {
  test('"cid": 1e400 on a say to an unknown room is a bad_request, the worker lives', async () => {
    const ip = '127.2.0.1';
    const before = await healthzFrom(server.port, ip);
    const c = await ChatClient.connect(server.port, ip);
    const w = await c.request({ type: 'login', name: 'mallory' }, ['welcome', 'error']);
    assert.equal(w.type, 'welcome');
    for (let i = 0; i < 5; i++) {
      c.send('{"type":"say","room":"nosuchroom","text":"x","cid":1e400}');
      const e = await c.next((m) => m.type === 'error', 3000, 'the error reply');
      assert.equal(e.code, 'bad_request', JSON.stringify(e));
    }
    // The connection is still usable and the same worker process serves the address.
    const j = await c.request({ type: 'join', room: 'lobby' }, ['joined', 'error']);
    assert.equal(j.type, 'joined');
    const now = await healthzFrom(server.port, ip);
    assert.equal(now.pid, before.pid, 'the worker was replaced: it died');
    assert.equal(c.closed, false);
    c.close();
    assert.doesNotMatch(server.log, /fatal|respawning/);
  });
});
