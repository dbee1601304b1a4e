// TLS in the worker (issue 12): a test CA and certificates made here with the openssl CLI;
// socket.io-client 4 (polling, then the upgrade) and native `ws` clients over https/wss from many
// client addresses to 4 BPF-steered workers (each client's connections all reach its worker,
// chat works across workers); TLS 1.2 and 1.3, ALPN http/1.1 and session resumption checked with
// `openssl s_client`; plain HTTP on the TLS port answered 400 and counted; the handshake timeout
// and the cap on handshakes in progress; bad configurations (exit 2, or a warning); random bytes
// on the TLS port never crash a worker.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/tls.test.mjs
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { SioClient, connectMany } = await import('./lib/sio-client.mjs');
const { request } = await import('./lib/sio-raw.mjs');
const { ChatClient, healthzFrom } = await import('./lib/chat-client.mjs');
const { Server, binaryPath, steeringMode } = await import('./lib/server.mjs');

const WORKERS = 4;
const SIO_CLIENTS = 100;
const WS_CLIENTS = 40;
const sticky = steeringMode() === 'bpf';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Certificates: a CA, a server certificate for 127.0.0.1/localhost (and a second one, with
// another subject, for the reload test), an expired one, keys that match none of them.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'steerchat-tls-'));
const f = (name) => path.join(dir, name);
const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

function makeCerts() {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
          '-subj', '/CN=steerchat test CA');
  fs.writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const [name, cn] of [['server', 'steerchat-a'], ['server2', 'steerchat-b']]) {
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key',
            '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', 'san.ext');
  }
  // Full chain: the server's certificate, then the CA (as an intermediate would be).
  fs.writeFileSync(f('chain.pem'), fs.readFileSync(f('server.pem')) + fs.readFileSync(f('ca.pem')));
  // Expired (2020) through `openssl ca`, which takes explicit dates.
  fs.writeFileSync(f('index.txt'), '');
  fs.writeFileSync(f('serial'), '1000\n');
  fs.writeFileSync(f('ca.cnf'), '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\n' +
                   'serial=serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n');
  openssl('req', ...ec, '-keyout', 'expired.key', '-out', 'expired.csr', '-subj', '/CN=expired');
  openssl('ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key',
          '-in', 'expired.csr', '-out', 'expired.pem', '-startdate', '20200101000000Z',
          '-enddate', '20200102000000Z', '-extfile', 'san.ext');
  // An encrypted key, and a file that is no PEM at all.
  openssl('pkey', '-in', 'server.key', '-out', 'encrypted.key', '-aes256', '-passout', 'pass:x');
  fs.writeFileSync(f('garbage.pem'), 'not a certificate\n');
}
makeCerts();
const ca = fs.readFileSync(f('ca.pem'));
const tlsArgs = (cert = 'chain.pem', key = 'server.key') => ['--tls-cert', f(cert), '--tls-key', f(key)];

const ipOf = (i) => `127.3.${(i + 1) >> 8}.${(i + 1) & 255}`;

// The /metrics of the worker serving `ip` (a scrape holds every worker's series: that worker's
// are kept, and the host's): 'name' -> the sum over its other labels, and 'name:value' -> the
// value of one reason="..." or result="..." label.
async function metrics(port, ip) {
  const { worker } = await healthzFrom(port, ip, ca);
  const r = await request(port, { path: '/metrics', localAddress: ip, ca });
  const out = {};
  for (const line of r.body.split('\n')) {
    const m = /^(\w+)(\{[^}]*\})? ([0-9.eE+-]+)$/.exec(line);
    if (!m) continue;
    const w = /worker="(\d+)"/.exec(m[2] ?? '');
    if (w && Number(w[1]) !== worker) continue;
    out[m[1]] = (out[m[1]] ?? 0) + Number(m[3]);
    const label = /(?:reason|result)="(\w+)"/.exec(m[2] ?? '');
    if (label) out[`${m[1]}:${label[1]}`] = Number(m[3]);
  }
  return out;
}

// `openssl s_client` against the server: its output (stdout and stderr).
function sClient(port, args, input = '') {
  const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', f('ca.pem'),
                                  '-servername', 'localhost', ...args],
                      { input, timeout: 10000, encoding: 'utf8' });
  return `${r.stdout}\n${r.stderr}`;
}
const GET_AND_CLOSE = 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n';

// A raw TCP connection from `ip`: sends `bytes`, resolves with what came back and how it ended
// ('end': FIN, 'reset', 'timeout') and after how many ms.
function raw(port, ip, bytes, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const chunks = [];
    const s = net.connect({ host: '127.0.0.1', port, localAddress: ip });
    const done = (how) => {
      clearTimeout(timer);
      s.destroy();
      resolve({ how, ms: Date.now() - t0, data: Buffer.concat(chunks) });
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    s.on('connect', () => { if (bytes.length) s.write(bytes); });
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => done('end'));
    s.on('error', () => done('reset'));
  });
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

function freePort() {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const p = probe.address().port;
      probe.close(() => resolve(p));
    });
  });
}

// ---------------------------------------------------------------------------------------------

describe('bad TLS configuration: exit 2 with the fix, or a warning', () => {
  const run = (args) => spawnSync(binaryPath(), ['--port', '1', '--workers', '1', ...args],
                                  { encoding: 'utf8', timeout: 10000 });
  const cases = [
    ['a missing certificate file', tlsArgs('nonexistent.pem'), /--tls-cert .*nonexistent\.pem: cannot open it: No such file/],
    ['a certificate without its key', ['--tls-cert', f('chain.pem')], /TLS needs both --tls-cert .* and --tls-key/],
    ['a key without its certificate', ['--tls-key', f('server.key')], /TLS needs both/],
    ['a directory for a file', tlsArgs('chain.pem', '.'), /--tls-key .*: not a regular file/],
    ['a certificate file without a certificate', tlsArgs('garbage.pem'), /holds no PEM certificate/],
    ['a key that does not belong to the certificate', tlsArgs('chain.pem', 'server2.key'),
     /the private key in --tls-key .*server2\.key does not belong to the certificate in --tls-cert/],
    ['an encrypted key', tlsArgs('chain.pem', 'encrypted.key'), /no usable PEM private key \(an unencrypted key is needed/],
    ['a handshake timeout out of range', [...tlsArgs(), '--tls-handshake-timeout-ms', '5'], /--tls-handshake-timeout-ms 5 is out of range/],
    ['no handshakes allowed', [...tlsArgs(), '--tls-max-handshakes', '0'], /--tls-max-handshakes must be at least 1/],
    ['no handshakes allowed per address', [...tlsArgs(), '--tls-max-handshakes-per-ip', '0'], /--tls-max-handshakes-per-ip must be at least 1/],
    ['a TLS port without a certificate', ['--tls-port', '8443'], /--tls-port needs --tls-cert and --tls-key/],
  ];
  for (const [what, args, message] of cases) {
    test(what, () => {
      const r = run(args);
      assert.equal(r.status, 2, `exit ${r.status}; stderr: ${r.stderr}`);
      assert.match(r.stderr, message);
    });
  }

  test('an expired certificate: a warning, and the server runs', async () => {
    // Clients refuse the expired certificate: the log tells that the server serves.
    const port = await freePort();
    const proc = spawn(binaryPath(), ['--port', String(port), '--workers', '1', '--bind', '127.0.0.1',
                                      '--steering', 'kernel', ...tlsArgs('expired.pem', 'expired.key')],
                       { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    proc.stdout.on('data', (d) => (log += d));
    proc.stderr.on('data', (d) => (log += d));
    const deadline = Date.now() + 8000;
    while (!/serving/.test(log) && Date.now() < deadline && proc.exitCode === null) await sleep(50);
    proc.kill('SIGTERM');
    await new Promise((r) => proc.on('exit', r));
    assert.match(log, /the TLS certificate \(CN = expired\) expired on Jan  2 00:00:00 2020 GMT/);
    assert.match(log, /serving/, log);
  });
});

describe(`TLS on the steered port: ${WORKERS} workers`, () => {
  let server;
  const sio = [];  // { c, name, ip, worker }
  const natives = [];

  before(async () => {
    server = await Server.start({ workers: WORKERS, args: tlsArgs(), ca });
  });
  after(async () => {
    for (const u of sio) u.c.close();
    for (const c of natives) c.close();
    if (server) await server.stop();
  });

  test('openssl s_client: TLS 1.3 and 1.2, ALPN http/1.1, the chain verifies; TLS 1.1 and an ' +
       'ALPN without http/1.1 are refused', () => {
    const t13 = sClient(server.port, ['-tls1_3', '-alpn', 'http/1.1', '-ign_eof'], GET_AND_CLOSE);
    assert.match(t13, /^New, TLSv1\.3, Cipher is TLS_AES_(128|256)_GCM_SHA(256|384)/m);
    assert.match(t13, /ALPN protocol: http\/1\.1/);
    assert.match(t13, /Verify return code: 0 \(ok\)/);
    assert.match(t13, /HTTP\/1\.1 200 OK/);
    const t12 = sClient(server.port, ['-tls1_2', '-alpn', 'http/1.1', '-ign_eof'], GET_AND_CLOSE);
    // The client's pick among Mozilla's list (the server honours the client's order).
    assert.match(t12, /^New, TLSv1\.2, Cipher is ECDHE-ECDSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)/m);
    assert.match(t12, /ALPN protocol: http\/1\.1/);
    assert.match(t12, /HTTP\/1\.1 200 OK/);
    const t11 = sClient(server.port, ['-tls1_1', '-ign_eof'], GET_AND_CLOSE);
    assert.doesNotMatch(t11, /HTTP\/1\.1 200 OK/);
    assert.match(t11, /alert|no protocols available|wrong version|handshake failure/i);
    const h2 = sClient(server.port, ['-alpn', 'h2', '-ign_eof'], GET_AND_CLOSE);
    assert.doesNotMatch(h2, /HTTP\/1\.1 200 OK/);
    assert.match(h2, /no application protocol/i);
  });

  test('session resumption (the session cache of the client address\'s worker), TLS 1.2 and ' +
       '1.3', async () => {
    const m0 = await metrics(server.port, '127.0.0.1');
    for (const v of ['-tls1_2', '-tls1_3']) {
      const sess = f(`session${v}`);
      const first = sClient(server.port, [v, '-sess_out', sess, '-ign_eof'], GET_AND_CLOSE);
      assert.match(first, /^New, TLSv1\.[23]/m, first);
      const again = sClient(server.port, [v, '-sess_in', sess, '-ign_eof'], GET_AND_CLOSE);
      assert.match(again, /^Reused, TLSv1\.[23]/m, again);
      assert.match(again, /HTTP\/1\.1 200 OK/);
    }
    const m1 = await metrics(server.port, '127.0.0.1');
    assert.ok(m1.steerchat_tls_resumed_total - m0.steerchat_tls_resumed_total >= 2,
              `resumed grew by ${m1.steerchat_tls_resumed_total - m0.steerchat_tls_resumed_total}`);
  });

  test(`socket.io-client 4 over https/wss from ${SIO_CLIENTS} addresses: polling, then the ` +
       'upgrade; every connection of a client reaches its worker',
       { skip: sticky ? false : 'needs root for --steering bpf' }, async () => {
    const workerOf = [];
    for (let i = 0; i < SIO_CLIENTS; i++) workerOf.push((await healthzFrom(server.port, ipOf(i), ca)).worker);
    const probe = new Map();
    workerOf.forEach((w, i) => probe.has(w) || probe.set(w, ipOf(i)));
    assert.equal(probe.size, WORKERS, `${SIO_CLIENTS} addresses should cover every worker`);
    const before = new Map();
    for (const [w, ip] of probe) before.set(w, await metrics(server.port, ip));

    const results = await connectMany(SIO_CLIENTS, async (i) => {
      const c = SioClient.create(server.port, { ip: ipOf(i), ca });
      try {
        await c.connected(15000);
        await c.upgradedToWebSocket(15000);
        return c;
      } catch (e) {
        c.close();
        throw e;
      }
    }, 25);
    const failed = results.map((r, i) => [i, r.error]).filter(([, e]) => e);
    for (const [i, r] of results.entries()) {
      if (r.client) sio.push({ c: r.client, name: `tls${i}@example.org`, ip: ipOf(i), worker: workerOf[i] });
    }
    assert.equal(failed.length, 0, `${failed.length} clients failed, e.g. ` +
                 failed.slice(0, 3).map(([i, e]) => `#${i}: ${e.message}`).join('; '));
    for (const u of sio) {
      assert.equal(u.c.transport, 'websocket');
      assert.ok(u.c.agent.connections >= 2, `${u.ip}: ${u.c.agent.requests.join(', ')}`);
    }
    await sleep(200);
    for (const [w, ip] of probe) {
      const mine = sio.filter((u) => u.worker === w);
      const expected = mine.reduce((n, u) => n + u.c.agent.connections, 0);
      const now = await metrics(server.port, ip);
      const was = before.get(w);
      // +2: the /healthz and /metrics requests that read it.
      const accepted = now.steerchat_connections_accepted_total - was.steerchat_connections_accepted_total - 2;
      const handshakes = now.steerchat_tls_handshakes_total - was.steerchat_tls_handshakes_total - 2;
      assert.equal(accepted, expected, `worker ${w}: accepted ${accepted}, its clients opened ${expected}`);
      assert.equal(handshakes, expected, `worker ${w}: ${handshakes} TLS handshakes for ${expected} connections`);
      assert.equal(now.steerchat_eio_sessions_total - (was.steerchat_eio_sessions_total ?? 0), mine.length);
      assert.equal(now.steerchat_eio_upgrades_total - (was.steerchat_eio_upgrades_total ?? 0), mine.length);
    }

    // Chat across workers: a DM from every client to one 37 places on.
    for (const u of sio) u.c.emit('createsession', { email: u.name, clientIP: u.ip });
    await Promise.all(sio.map((u) => u.c.next('accessgranted', () => true, 10000)));
    const n = sio.length;
    let cross = 0;
    for (const [i, u] of sio.entries()) {
      const to = sio[(i + 37) % n];
      if (to.worker !== u.worker) cross++;
      u.c.emit('newMessage', { to: to.name, message: `dm ${i}` });
    }
    assert.ok(cross > n / 2, `only ${cross} pairs span two workers`);
    await Promise.all(sio.map(async (u, j) => {
      const i = (j - 37 + n) % n;
      const [m] = await u.c.next('newMessage', () => true, 10000);
      assert.deepEqual(m, { from: sio[i].name, text: `dm ${i}` });
    }));
  });

  test(`native chat over wss:// from ${WS_CLIENTS} addresses: a room spanning every worker`,
       async () => {
    for (let i = 0; i < WS_CLIENTS; i++) {
      const c = await ChatClient.connect(server.port, ipOf(200 + i), { ca });
      natives.push(c);
      const w = await c.request({ type: 'login', name: `wss${i}` }, ['welcome', 'error']);
      assert.equal(w.type, 'welcome', JSON.stringify(w));
      const j = await c.request({ type: 'join', room: 'tls' }, ['joined', 'error']);
      assert.equal(j.type, 'joined', JSON.stringify(j));
    }
    if (sticky) {
      const workers = new Set();
      for (let i = 0; i < WS_CLIENTS; i++) workers.add((await healthzFrom(server.port, ipOf(200 + i), ca)).worker);
      assert.equal(workers.size, WORKERS);
    }
    // Every member says 5 lines at once (several frames per loop turn: coalesced records).
    for (const [i, c] of natives.entries()) {
      for (let k = 0; k < 5; k++) c.send({ type: 'say', room: 'tls', text: `${i}:${k}` });
    }
    await Promise.all(natives.map(async (c) => {
      const got = new Set();
      while (got.size < WS_CLIENTS * 5) {
        const m = await c.next((x) => x.type === 'message', 10000, 'a room message');
        assert.ok(!got.has(m.text), `${m.text} twice`);
        got.add(m.text);
      }
    }));
  });

  test('plain HTTP on the TLS port: answered 400 in plain text, closed, counted', async () => {
    const ip = '127.3.100.1';
    const m0 = await metrics(server.port, ip);
    const r = await raw(server.port, ip, Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.equal(r.how, 'end', `the connection ended by ${r.how}`);
    assert.ok(r.ms < 1000, `closed after ${r.ms} ms`);
    assert.match(r.data.toString(), /^HTTP\/1\.1 400 Bad Request\r\n[^]*this port speaks TLS: use https:\/\/ or wss:\/\//);
    const m1 = await metrics(server.port, ip);
    assert.equal(m1['steerchat_tls_handshake_failures_total:plaintext'] -
                 m0['steerchat_tls_handshake_failures_total:plaintext'], 1);
  });

  test('random bytes on the TLS port (500 connections from 50 addresses) crash no worker',
       async () => {
    const pids = new Map();
    for (let i = 0; i < 50; i++) pids.set(i, (await healthzFrom(server.port, ipOf(300 + i), ca)).pid);
    const rnd = (n) => crypto.randomBytes(n);
    const shapes = [
      () => rnd(1 + crypto.randomInt(2000)),
      // A TLS record header (handshake, TLS 1.0-1.3 record versions) with random contents.
      () => Buffer.concat([Buffer.from([0x16, 0x03, crypto.randomInt(5)]), rnd(2 + crypto.randomInt(600))]),
      // A client hello's start, then garbage.
      () => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
                           rnd(crypto.randomInt(800))]),
      // An alert, a change cipher spec, application data before any handshake.
      () => Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]),
      () => Buffer.concat([Buffer.from([0x17, 0x03, 0x03, 0x01, 0x00]), rnd(256)]),
    ];
    const jobs = [];
    for (let k = 0; k < 500; k++) {
      // Not waiting for the server to close (a partial hello waits out the handshake timeout).
      jobs.push(raw(server.port, ipOf(300 + (k % 50)), shapes[k % shapes.length](), 400));
      if (jobs.length % 50 === 0) await Promise.all(jobs.splice(0));
    }
    await Promise.all(jobs);
    for (let i = 0; i < 50; i++) {
      const h = await healthzFrom(server.port, ipOf(300 + i), ca);
      assert.equal(h.pid, pids.get(i), `the worker of ${ipOf(300 + i)} changed (crashed?)`);
    }
    assert.doesNotMatch(server.log, /respawning|signal 11|signal 6/);
  });
});

describe('handshake limits', () => {
  let server;
  before(async () => {
    server = await Server.start({
      workers: 1, ca, steering: 'kernel',
      args: [...tlsArgs(), '--tls-handshake-timeout-ms', '1500', '--tls-max-handshakes', '3',
             '--tls-max-handshakes-per-ip', '2'],
    });
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('a client that never finishes its handshake is closed after --tls-handshake-timeout-ms',
       async () => {
    const m0 = await metrics(server.port, '127.0.0.1');
    const r = await raw(server.port, '127.0.0.1', Buffer.from([0x16, 0x03, 0x01]), 5000);
    assert.equal(r.how === 'end' || r.how === 'reset', true, `ended by ${r.how}`);
    assert.ok(r.ms >= 1400 && r.ms < 4000, `closed after ${r.ms} ms`);
    const m1 = await metrics(server.port, '127.0.0.1');
    assert.equal(m1['steerchat_tls_handshake_failures_total:timeout'] -
                 m0['steerchat_tls_handshake_failures_total:timeout'], 1);
  });

  test('over --tls-max-handshakes in progress, new connections are closed at once; ' +
       'established ones are served meanwhile', async () => {
    const established = await ChatClient.connect(server.port, '127.0.0.2', { ca });
    const m0 = await metrics(server.port, '127.0.0.1');
    // Three silent connections fill the handshake slots (until the 1500 ms timeout).
    const stalled = [1, 2, 3].map((k) => raw(server.port, `127.0.1.${k}`, Buffer.alloc(0), 5000));
    await sleep(100);
    // Closed at once, not at the handshake timeout (generous bounds: a loaded test host).
    const refused = await raw(server.port, '127.0.2.1', Buffer.from([0x16, 0x03, 0x01]), 5000);
    assert.ok(refused.how !== 'timeout' && refused.ms < 1000,
              `a connection over the cap ended by ${refused.how} after ${refused.ms} ms`);
    // The established client is served while the slots are full.
    const t0 = Date.now();
    const w = await established.request({ type: 'login', name: 'steady' }, ['welcome', 'error']);
    assert.equal(w.type, 'welcome');
    assert.ok(Date.now() - t0 < 1000, `established client waited ${Date.now() - t0} ms`);
    await Promise.all(stalled);
    const m1 = await metrics(server.port, '127.0.0.1');
    assert.ok(m1['steerchat_tls_handshake_failures_total:refused'] -
              m0['steerchat_tls_handshake_failures_total:refused'] >= 1);
    assert.equal(m1.steerchat_tls_handshakes_in_progress, 0);
    established.close();
  });

  test('over --tls-max-handshakes-per-ip from one address, its next connection is closed at ' +
       'once; another address still gets its handshake', async () => {
    const m0 = await metrics(server.port, '127.0.0.1');
    const stalled = [1, 2].map(() => raw(server.port, '127.0.3.1', Buffer.alloc(0), 5000));
    await sleep(100);
    const over = await raw(server.port, '127.0.3.1', Buffer.from([0x16, 0x03, 0x01]), 5000);
    assert.ok(over.how !== 'timeout' && over.ms < 1000, `ended by ${over.how} after ${over.ms} ms`);
    const other = await ChatClient.connect(server.port, '127.0.3.2', { ca });
    other.close();
    await Promise.all(stalled);
    const m1 = await metrics(server.port, '127.0.0.1');
    assert.equal(m1['steerchat_tls_handshake_failures_total:refused_per_ip'] -
                 m0['steerchat_tls_handshake_failures_total:refused_per_ip'], 1);
    assert.equal(m1['steerchat_tls_handshake_failures_total:refused'] -
                 m0['steerchat_tls_handshake_failures_total:refused'], 0);
  });
});

describe('--tls-port: plain HTTP on --port and TLS on --tls-port, side by side, steered alike',
         { skip: sticky ? false : 'needs root for --steering bpf' }, () => {
  let server;
  let tlsPort;
  let newPid = null;  // the master after `ctl upgrade`
  // A run directory and pins of our own (the BPF filesystem is not per network namespace).
  const runDir = fs.mkdtempSync('/tmp/steerchat-tls-run-');
  const bpffsDir = `/sys/fs/bpf/steerchat-tls-test-${process.pid}`;
  const ctl = (...words) => spawnSync(binaryPath(), ['ctl', '--port', String(server.port), '--run-dir', runDir,
                                                     '--timeout-ms', '30000', ...words],
                                      { encoding: 'utf8', timeout: 40000 });
  before(async () => {
    tlsPort = await freePort();
    server = await Server.start({
      workers: WORKERS,
      args: ['--tls-port', String(tlsPort), ...tlsArgs(), '--run-dir', runDir, '--bpffs-dir', bpffsDir,
             '--drain-timeout-ms', '1500'],
    });
  });
  after(async () => {
    if (newPid && alive(newPid)) {
      process.kill(newPid, 'SIGKILL');
      for (let i = 0; i < 50 && alive(newPid); i++) await sleep(100);
    }
    if (server) await server.stop();
    fs.rmSync(runDir, { recursive: true, force: true });
    fs.rmSync(bpffsDir, { recursive: true, force: true });
  });

  // Every address's worker on both ports; returns the workers seen.
  async function sameWorkerOnBothPorts(count, base) {
    const workers = new Set();
    for (let i = 0; i < count; i++) {
      const ip = ipOf(base + i);
      const plain = await healthzFrom(server.port, ip);
      const secure = await healthzFrom(tlsPort, ip, ca);
      assert.equal(secure.worker, plain.worker,
                   `${ip}: worker ${plain.worker} on port ${server.port}, ${secure.worker} on ${tlsPort}`);
      assert.equal(secure.pid, plain.pid);
      workers.add(plain.worker);
    }
    return workers;
  }

  test('200 client addresses: each reaches the same worker on both ports; chat between the ports',
       async () => {
    const workers = await sameWorkerOnBothPorts(200, 400);
    assert.equal(workers.size, WORKERS);
    // The plain port speaks no TLS, the TLS port no plain HTTP.
    const r = await raw(tlsPort, ipOf(400), Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.match(r.data.toString(), /^HTTP\/1\.1 400 Bad Request/);
    const plainAnswer = await raw(server.port, ipOf(400), Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]));
    assert.match(plainAnswer.data.toString(), /^HTTP\/1\.1 400/);
    // A native client on each port, on different workers, talk.
    const a = await ChatClient.connect(server.port, ipOf(400));
    let b;
    for (let i = 1; i < 200 && !b; i++) {
      if ((await healthzFrom(server.port, ipOf(400 + i))).worker !== (await healthzFrom(server.port, ipOf(400))).worker) {
        b = await ChatClient.connect(tlsPort, ipOf(400 + i), { ca });
      }
    }
    try {
      assert.equal((await a.request({ type: 'login', name: 'plain' }, ['welcome', 'error'])).type, 'welcome');
      assert.equal((await b.request({ type: 'login', name: 'secure' }, ['welcome', 'error'])).type, 'welcome');
      a.send({ type: 'dm', to: 'secure', text: 'over two ports' });
      const m = await b.next((x) => x.type === 'dm' || x.text === 'over two ports', 5000, 'the DM');
      assert.equal(m.text, 'over two ports');
    } finally {
      a.close();
      b?.close();
    }
  });

  test('resize (steerchat ctl workers 3, then 4): both ports keep agreeing', async () => {
    let r = ctl('workers', '3');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    await sleep(300);
    assert.equal((await sameWorkerOnBothPorts(60, 700)).size, 3);
    r = ctl('workers', '4');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && !/serving[^\n]*\n[^]*3\s+serving/.test(ctl('status').stdout)) await sleep(100);
    assert.equal((await sameWorkerOnBothPorts(60, 700)).size, WORKERS);
  });

  // Each address's worker slot on both ports (asserting they agree).
  async function slotsOf(count, base) {
    const out = new Map();
    for (let i = 0; i < count; i++) {
      const ip = ipOf(base + i);
      const plain = await healthzFrom(server.port, ip);
      const secure = await healthzFrom(tlsPort, ip, ca);
      assert.equal(secure.worker, plain.worker, `${ip}: worker ${plain.worker} on port ${server.port}, ` +
                   `${secure.worker} on ${tlsPort}`);
      out.set(ip, plain.worker);
    }
    return out;
  }

  test('ctl upgrade hands over both ports: connect loops on each see nothing refused or reset, ' +
       'every address keeps its worker slot on both, the pins of both ports move, stop removes them',
       async () => {
    const before = await slotsOf(60, 900);
    assert.equal(new Set(before.values()).size, WORKERS);
    // Connect loops on both ports (a new TCP connection, and on the TLS port a new handshake,
    // per GET /healthz) through the whole upgrade.
    const counts = {};
    const examples = [];
    let done = false;
    const loop = async (port, k, useCa) => {
      const c = (counts[`${port}`] ??= { ok: 0, refused: 0, reset: 0, other: 0 });
      for (let n = 0; !done; n++) {
        try {
          await healthzFrom(port, ipOf(1000 + k * 16 + (n % 16)), useCa ? ca : undefined);
          c.ok++;
        } catch (e) {
          const kind = e.code === 'ECONNREFUSED' ? 'refused'
            : e.code === 'ECONNRESET' || e.code === 'EPIPE' ? 'reset' : 'other';
          c[kind]++;
          if (examples.length < 5) examples.push(`${port}: ${e.code ?? e.message}`);
        }
      }
    };
    const loops = [loop(server.port, 0, false), loop(server.port, 1, false), loop(tlsPort, 2, true),
                   loop(tlsPort, 3, true)];
    await sleep(500);
    const okBefore = { plain: counts[server.port].ok, tls: counts[tlsPort].ok };
    const r = ctl('upgrade');
    console.log(`ctl upgrade: exit ${r.status}: ${r.stdout}${r.stderr}`);
    try {
      assert.equal(r.status, 0, `${r.stdout}${r.stderr}\n${server.log}`);
      const m = /upgraded: pid (\d+) serves port/.exec(r.stdout);
      assert.ok(m, r.stdout);
      newPid = Number(m[1]);
      const oldExit = await Promise.race([server.exited, sleep(15000).then(() => 'timeout')]);
      assert.deepEqual(oldExit, { code: 0, signal: null }, 'the old master exits 0');
      await sleep(500);
    } finally {
      done = true;
      await Promise.all(loops);
    }
    console.log(`connect loops: ${JSON.stringify(counts)}; ${JSON.stringify(examples)}`);
    for (const port of [server.port, tlsPort]) {
      const c = counts[port];
      assert.equal(c.refused + c.reset + c.other, 0, `port ${port}: ${JSON.stringify(c)} ${JSON.stringify(examples)}`);
    }
    assert.ok(counts[server.port].ok > okBefore.plain + 10, 'the plain loops ran through the upgrade');
    assert.ok(counts[tlsPort].ok > okBefore.tls + 10, 'the TLS loops ran through the upgrade');
    assert.match(server.log, /handed the listeners of 4 slot\(s\) on ports \d+ and \d+/);

    // The same slot for every address, on both ports, served by the new master's workers.
    const after = await slotsOf(60, 900);
    assert.deepEqual([...after], [...before]);
    const { pid } = await healthzFrom(tlsPort, ipOf(900), ca);
    assert.equal(ppidOf(pid), newPid, 'the TLS port is served by a new worker');
    // The new master holds both locks and both ports' pins.
    for (const port of [server.port, tlsPort]) {
      assert.equal(fs.readFileSync(path.join(runDir, `${port}.lock`), 'utf8').trim(), String(newPid));
      const pins = fs.readdirSync(path.join(bpffsDir, String(port)));
      for (const name of ['sockets', 'buckets', 'config', 'steer']) assert.ok(pins.includes(name), `${port}: ${pins}`);
    }
    // Removed on stop.
    process.kill(newPid, 'SIGTERM');
    for (let i = 0; i < 100 && alive(newPid); i++) await sleep(100);
    assert.ok(!alive(newPid), 'the new master stops on SIGTERM');
    for (const port of [server.port, tlsPort]) {
      const d = path.join(bpffsDir, String(port));
      assert.ok(!fs.existsSync(d) || fs.readdirSync(d).length === 0, `pins left at ${d}: ${fs.existsSync(d) && fs.readdirSync(d)}`);
    }
  });
});

describe('certificate reload (SIGHUP), workers under --seccomp', () => {
  let server;
  const live = path.join(dir, 'live');
  const install = (cert, key) => {
    fs.copyFileSync(f(cert), path.join(live, 'cert.pem'));
    fs.copyFileSync(f(key), path.join(live, 'key.pem'));
  };
  // The subject CN of the certificate a new connection from `ip` gets.
  const peerCn = (ip) => new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: server.port, localAddress: ip, ca, servername: 'localhost' }, () => {
      const cn = s.getPeerCertificate().subject.CN;
      s.end();
      resolve(cn);
    });
    s.on('error', reject);
  });
  const waitFor = async (what, pred) => {
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if (await pred()) return;
      await sleep(50);
    }
    assert.fail(`${what} within 5 s:\n${server.log.slice(-2000)}`);
  };

  before(async () => {
    fs.mkdirSync(live, { recursive: true });
    install('chain.pem', 'server.key');
    server = await Server.start({
      workers: 2, ca, args: ['--tls-cert', path.join(live, 'cert.pem'), '--tls-key', path.join(live, 'key.pem'), '--seccomp'],
    });
  });
  after(async () => {
    if (server) await server.stop();
  });

  test('new connections get the new certificate; a connected client goes on; a bad pair is ' +
       'refused and the running one kept', async () => {
    const ips = ['127.4.0.1', '127.4.0.2', '127.4.0.3', '127.4.0.4', '127.4.0.5', '127.4.0.6'];
    for (const ip of ips) assert.equal(await peerCn(ip), 'steerchat-a');
    const stay = await ChatClient.connect(server.port, ips[0], { ca });
    assert.equal((await stay.request({ type: 'login', name: 'stayer' }, ['welcome', 'error'])).type, 'welcome');

    // Renewed in place (same file names, new contents), then SIGHUP.
    install('server2.pem', 'server2.key');
    server.proc.kill('SIGHUP');
    await waitFor('every worker serving the new certificate', async () => {
      for (const ip of ips) if ((await peerCn(ip)) !== 'steerchat-b') return false;
      return true;
    });
    assert.match(server.log, /reload: new TLS connections get the TLS certificate CN = steerchat-b/);
    // The client connected before the reload is still served, over its old session.
    const j = await stay.request({ type: 'join', room: 'after-reload' }, ['joined', 'error']);
    assert.equal(j.type, 'joined', JSON.stringify(j));
    assert.equal(stay.closed, false);

    // A key that is not the certificate's: the reload fails, the new certificate stays.
    fs.copyFileSync(f('server.key'), path.join(live, 'key.pem'));
    const failedBefore = (await metrics(server.port, ips[1]))['steerchat_config_reloads_total:failed'];
    server.proc.kill('SIGHUP');
    await waitFor('the failed reload counted', async () =>
      (await metrics(server.port, ips[1]))['steerchat_config_reloads_total:failed'] === failedBefore + 1);
    assert.match(server.log, /does not belong to the certificate/);
    for (const ip of ips) assert.equal(await peerCn(ip), 'steerchat-b');
    const again = await stay.request({ type: 'join', room: 'still' }, ['joined', 'error']);
    assert.equal(again.type, 'joined');
    stay.close();
    assert.doesNotMatch(server.log, /respawning/);
  });
});
