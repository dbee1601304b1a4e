// The HTTP edge's limits replayed against the real binary (issue 9, item 3): connections per
// client address (429) and per worker (503), the open-files limit reached anyway (spare
// descriptor: refused at once, no stall), slowloris headers and bodies (408 at an absolute
// deadline), connections that send nothing or idle between requests (closed), oversized headers
// (431). Every answer is counted in /metrics. Small limits and timeouts keep it quick.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/limits-http.test.mjs
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'ws', 'package.json'))) {
  throw new Error(`${here}/node_modules is missing: run tests/e2e/setup.sh (npm ci) first`);
}
const { default: WebSocket } = await import('ws');
const { getFrom, healthzFrom } = await import('./lib/chat-client.mjs');
const { RawConnection, addressesOnWorkerOf, metricsFrom } = await import('./lib/raw-http.mjs');
const { Server, binaryPath } = await import('./lib/server.mjs');
const { sanitized } = await import('./lib/floods.mjs');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Opens a WebSocket to /echo from `localAddress`; resolves to {ws} or {status} (refused with an
// HTTP answer) or {error}.
function openWs(port, localAddress) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`, { localAddress });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'] });
      req.destroy();
    });
    ws.once('error', (error) => resolve({ error }));
  });
}

// Until `pred()` holds (connections the server closes are released a moment later).
async function eventually(pred, what, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(20);
  }
}

describe('limits per connection (timeouts, header size)', () => {
  let server;
  before(async () => {
    server = await Server.start({
      workers: 2,
      args: ['--http-header-timeout-ms', '1500', '--http-body-timeout-ms', '1500',
             '--http-first-byte-timeout-ms', '1000', '--http-keepalive-timeout-ms', '1000',
             '--http-max-header-bytes', '4096'],
    });
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('slowloris: a header trickled a byte every 500 ms is cut with 408 at 1.5 s from its first byte',
       async () => {
    const ip = '127.8.0.1';
    const c = await RawConnection.open(server.port, ip);
    const req = `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ${'a'.repeat(200)}`;
    const start = Date.now();
    let i = 0;
    c.write(req[i++]);
    // Every byte arrives well within the timeout of the one before: a deadline renewed by each
    // read would never fire.
    const trickle = setInterval(() => c.write(req[i++ % req.length]), 500);
    try {
      await c.waitClosed(6000, 'the 408');
    } finally {
      clearInterval(trickle);
    }
    const elapsed = c.closedAt - start;
    assert.equal(c.status(), 408, c.text());
    assert.match(c.text(), /Connection: close/i);
    assert.ok(elapsed >= 1400 && elapsed < 4000, `cut after ${elapsed} ms`);
    const m = await metricsFrom(server.port, ip);
    assert.ok(m.steerchat_http_header_timeouts_total >= 1, JSON.stringify(m));
  });

  test('a body trickled after its header is cut with 408 at the body timeout', async () => {
    const ip = '127.8.0.2';
    const c = await RawConnection.open(server.port, ip);
    const start = Date.now();
    c.write('POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab');
    const trickle = setInterval(() => c.write('c'), 400);
    try {
      await c.waitClosed(6000, 'the 408');
    } finally {
      clearInterval(trickle);
    }
    assert.equal(c.status(), 408, c.text());
    const elapsed = c.closedAt - start;
    assert.ok(elapsed >= 1400 && elapsed < 4000, `cut after ${elapsed} ms`);
    const m = await metricsFrom(server.port, ip);
    assert.ok(m.steerchat_http_body_timeouts_total >= 1, JSON.stringify(m));
  });

  test('a connection that sends nothing is closed silently at the first-byte timeout', async () => {
    const ip = '127.8.0.3';
    const before = (await metricsFrom(server.port, ip)).steerchat_http_first_byte_timeouts_total;
    const c = await RawConnection.open(server.port, ip);
    await c.waitClosed(5000);
    const elapsed = c.closedAt - c.connectedAt;
    assert.equal(c.data.length, 0, c.text());
    assert.ok(elapsed >= 900 && elapsed < 3500, `closed after ${elapsed} ms`);
    const m = await metricsFrom(server.port, ip);
    assert.equal(m.steerchat_http_first_byte_timeouts_total, before + 1);
  });

  test('a kept-alive connection is served while it asks, closed when idle past the timeout',
       async () => {
    const ip = '127.8.0.4';
    const before = (await metricsFrom(server.port, ip)).steerchat_http_idle_timeouts_total;
    const c = await RawConnection.open(server.port, ip);
    const ask = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
    c.write(ask);
    await c.waitFor((t) => (t.match(/HTTP\/1\.1 200/g) || []).length === 1, 2000, 'response 1');
    await sleep(600);  // within the 1 s keep-alive timeout
    c.write(ask);
    await c.waitFor((t) => (t.match(/HTTP\/1\.1 200/g) || []).length === 2, 2000, 'response 2');
    const answered = Date.now();
    await c.waitClosed(5000);
    const idle = c.closedAt - answered;
    assert.ok(idle >= 800 && idle < 3500, `closed after ${idle} ms idle`);
    const m = await metricsFrom(server.port, ip);
    assert.equal(m.steerchat_http_idle_timeouts_total, before + 1);
  });

  test('a header over --http-max-header-bytes is answered 431', async () => {
    const ip = '127.8.0.5';
    const c = await RawConnection.open(server.port, ip);
    c.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(5000)}\r\n\r\n`);
    await c.waitClosed(3000);
    assert.equal(c.status(), 431, c.text());
    const m = await metricsFrom(server.port, ip);
    assert.ok(m.steerchat_http_header_too_large_total >= 1, JSON.stringify(m));
    // Within the limit: served.
    const ok = await getFrom(server.port, ip, '/healthz');
    assert.match(ok, /"status":"ok"/);
  });
});

describe('connections per client address', () => {
  let server;
  before(async () => {
    server = await Server.start({ workers: 2, args: ['--max-conns-per-ip', '20'] });
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('an address over --max-conns-per-ip (WebSockets and a held long poll) gets 429 at once; ' +
       'another address on the same worker is served', async () => {
    const [attacker, victim] = await addressesOnWorkerOf(server.port, '127.6.1.1', 6, 2);
    // An Engine.IO long poll held by the server counts as a connection of its address.
    const hs = await getFrom(server.port, attacker, '/socket.io/?EIO=4&transport=polling');
    const sid = JSON.parse(hs.slice(1)).sid;
    // Only the asking connection itself is left: the probes and the handshake have closed.
    await eventually(async () => (await metricsFrom(server.port, victim))
                                     .steerchat_client_addresses === 1, 'handshakes closed');
    const poll = await RawConnection.open(server.port, attacker);
    poll.write(`GET /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const sockets = [];
    for (let i = 0; i < 19; i++) {
      const r = await openWs(server.port, attacker);
      assert.ok(r.ws, `WebSocket ${i}: ${JSON.stringify(r.status ?? String(r.error))}`);
      sockets.push(r.ws);
    }
    await sleep(100);
    assert.equal(poll.closedAt, null, 'the long poll is held');
    const before = (await metricsFrom(server.port, victim))['steerchat_connections_refused_total{reason="per_ip"}'];

    // Over the limit: a WebSocket and a plain connection, both answered at once.
    const t0 = Date.now();
    const refusedWs = await openWs(server.port, attacker);
    assert.equal(refusedWs.status, 429, String(refusedWs.error));
    assert.equal(refusedWs.retryAfter, '1');
    const raw = await RawConnection.open(server.port, attacker);
    await raw.waitClosed(2000);
    assert.equal(raw.status(), 429, raw.text());
    assert.ok(Date.now() - t0 < 1500, `refusals took ${Date.now() - t0} ms`);

    // Another address on the same worker: served, and it sees the refusals counted.
    const h = await healthzFrom(server.port, victim);
    assert.equal(h.status, 'ok');
    const m = await metricsFrom(server.port, victim);
    assert.equal(m['steerchat_connections_refused_total{reason="per_ip"}'], before + 2);
    assert.equal(m.steerchat_connections_per_ip_max, 20);

    // A WebSocket that finishes gives its slot back; so does the poll.
    sockets.pop().terminate();
    await eventually(async () => (await openWs(server.port, attacker).then((r) => {
      if (r.ws) sockets.push(r.ws);
      return Boolean(r.ws);
    })), 'a slot freed by a closed WebSocket');
    poll.destroy();
    await eventually(async () => (await openWs(server.port, attacker).then((r) => {
      if (r.ws) sockets.push(r.ws);
      return Boolean(r.ws);
    })), 'a slot freed by a closed long poll');
    const again = await openWs(server.port, attacker);
    assert.equal(again.status, 429);
    for (const ws of sockets) ws.terminate();
  });
});

describe('connections per worker', () => {
  let server;
  before(async () => {
    server = await Server.start({
      workers: 2, args: ['--max-conns-per-worker', '10', '--max-conns-per-ip', '0'],
    });
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('a full worker answers 503 at once; the other worker is not affected', async () => {
    const [a, b] = await addressesOnWorkerOf(server.port, '127.9.1.1', 9, 2);
    await sleep(200);  // the probes' connections are gone
    const sockets = [];
    for (let i = 0; i < 10; i++) {
      const r = await openWs(server.port, i % 2 ? a : b);
      assert.ok(r.ws, `WebSocket ${i}: ${JSON.stringify(r.status ?? String(r.error))}`);
      sockets.push(r.ws);
    }
    const t0 = Date.now();
    const refused = await openWs(server.port, a);
    assert.equal(refused.status, 503, String(refused.error));
    const raw = await RawConnection.open(server.port, b);
    await raw.waitClosed(2000);
    assert.equal(raw.status(), 503, raw.text());
    assert.match(raw.text(), /Retry-After: 1/);
    assert.ok(Date.now() - t0 < 1500, `refusals took ${Date.now() - t0} ms`);
    // The other worker serves as ever.
    // A health check of the full worker is refused the same way, at once: the worker is full.
    const full = await getFrom(server.port, a, '/healthz');
    assert.match(full, /connection limit/);
    let other = null;
    for (let i = 1; i < 50 && !other; i++) {
      const h = await getFrom(server.port, `127.9.200.${i}`, '/healthz');
      if (/"status":"ok"/.test(h)) other = h;
    }
    assert.ok(other, 'the other worker answers');
    sockets.pop().terminate();
    await eventually(async () => /"status":"ok"/.test(await getFrom(server.port, a, '/healthz')),
                     'room again after a close');
    const m = await metricsFrom(server.port, a);
    assert.ok(m['steerchat_connections_refused_total{reason="per_worker"}'] >= 3, JSON.stringify(m));
    assert.equal(m.steerchat_connections_max, 10);
    for (const ws of sockets) ws.terminate();
  });
});

describe('the open-files limit reached anyway', () => {
  let server;
  before(async () => {
    // Under the seccomp allowlist: refusing with the spare descriptor opens no file.
    server = await Server.start({ workers: 2, args: ['--seccomp'] });
  });
  after(async () => {
    if (server) await server.stop();
  });

  // Not on a sanitized binary: with its descriptors exhausted, UBSan's vptr check cannot probe
  // memory (the sanitizer runtime needs a pipe for that) and reports a false "invalid vptr"
  // inside Boost.System; under --seccomp the same probe is a forbidden call (SIGSYS).
  const skip = sanitized(binaryPath()) &&
    'the sanitizer runtime itself needs file descriptors (and calls outside the allowlist)';
  test('accept out of descriptors refuses at once (spare descriptor), no stall, worker lives',
       { skip }, async () => {
    const ip = '127.10.1.1';
    const { pid } = await healthzFrom(server.port, ip);
    await sleep(100);
    // An operator lowers a running worker's limit below its connection limit (prlimit): to
    // leave exactly 4 descriptor numbers free below it (the fds the worker inherited and closed
    // leave holes, so the limit is the 5th unused number, not the count of open fds plus 4).
    const used = new Set(fs.readdirSync(`/proc/${pid}/fd`).map(Number));
    let limit = 0;
    for (let free = 0; free < 5; limit++) if (!used.has(limit)) free++;
    limit--;
    // As the worker's own user: workers run unprivileged (--user), and changing another
    // user's limits takes CAP_SYS_RESOURCE, which even root may not have in a container.
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const uid = /^Uid:\s+(\d+)/m.exec(status)[1];
    const gid = /^Gid:\s+(\d+)/m.exec(status)[1];
    const asWorker = process.getuid() === Number(uid) ? []
      : ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups'];
    const cmd = [...asWorker, 'prlimit', '--pid', String(pid), `--nofile=${limit}:${limit}`];
    execFileSync(cmd[0], cmd.slice(1));
    const sockets = [];
    const refusals = [];
    const t0 = Date.now();
    for (let i = 0; i < 30; i++) {
      const r = await openWs(server.port, ip);
      if (r.ws) sockets.push(r.ws);
      else refusals.push(r.status ?? String(r.error));
    }
    const took = Date.now() - t0;
    assert.ok(sockets.length >= 2 && sockets.length <= 4, `${sockets.length} opened`);
    // Answered 503 (the odd one may see the reset of its request arriving after the close).
    assert.ok(refusals.filter((s) => s === 503).length >= refusals.length - 2,
              JSON.stringify(refusals));
    // Without the spare descriptor each failed accept paused the worker for 50 ms (and the
    // listen queue filled): 26 refusals would take over 1.3 s.
    assert.ok(took < 1300, `30 attempts took ${took} ms`);
    for (const ws of sockets) ws.terminate();
    await eventually(async () => /"status":"ok"/.test(await getFrom(server.port, ip, '/healthz')
                                                          .catch(() => '')),
                     'served again once descriptors are free');
    const m = await metricsFrom(server.port, ip);
    assert.ok(m['steerchat_connections_refused_total{reason="open_files"}'] >= 20, JSON.stringify(m));
    assert.equal((await healthzFrom(server.port, ip)).pid, pid, 'the same worker process');
    assert.doesNotMatch(server.log, /retrying in 50 ms/);
  });
});
