// The chat page in chromium over https and wss (issue 12): TLS only on --port, with a
// certificate of a test CA made here with the openssl CLI (as tls.test.mjs does). Run by
// browser.sh inside its private network namespace (127.0.0.K is its own source address; see
// there), so two browser contexts are two client addresses on two workers.
//
// How chromium trusts the certificate: `--ignore-certificate-errors-spki-list=<base64 SHA-256 of
// the server certificate's SubjectPublicKeyInfo>` with `ignoreHTTPSErrors: false`. Chromium then
// accepts exactly that key (any other certificate still fails), needs no extra package (an NSS
// database would need certutil from libnss3-tools, not installed here) and writes nothing under
// HOME. The flag is honoured only with --user-data-dir, which playwright always passes.
//
// Two users on different workers log in over wss, see each other, join a room and exchange
// messages both ways; no console errors; screenshots go to BROWSER_OUTPUT.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { chromium } from 'playwright-core';

import { Server } from './lib/server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = process.env.BROWSER_OUTPUT || path.resolve('browser-output');
const WORKERS = 2;
const T = 10000;  // a step's timeout (ms)

// A CA and a server certificate for 127.0.0.1-40 (the namespace's client addresses) and localhost.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'steerchat-browser-tls-'));
const f = (name) => path.join(dir, name);
const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
        '-subj', '/CN=steerchat browser test CA');
const ips = Array.from({ length: 40 }, (_, i) => `IP:127.0.0.${i + 1}`).join(',');
fs.writeFileSync(f('san.ext'), `subjectAltName=${ips},DNS:localhost\n`);
openssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=steerchat-browser');
openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
        '-out', 'server.pem', '-days', '1', '-extfile', 'san.ext');
const ca = fs.readFileSync(f('ca.pem'));
const spki = crypto.createHash('sha256')
  .update(new crypto.X509Certificate(fs.readFileSync(f('server.pem'))).publicKey
    .export({ type: 'spki', format: 'der' }))
  .digest('base64');

function healthzAt(ip, port) {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: ip, port, path: '/healthz', agent: false, ca }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(JSON.parse(body)));
    });
    req.on('error', reject);
    req.setTimeout(2000, () => req.destroy(new Error('timeout')));
  });
}

// Two addresses of 127.0.0.2..40 that the steering sends to different workers.
async function twoAddresses(port) {
  const seen = new Map();
  for (let k = 2; k <= 40; k++) {
    const ip = `127.0.0.${k}`;
    const h = await healthzAt(ip, port);
    if (!seen.has(h.worker)) seen.set(h.worker, ip);
    if (seen.size === 2) return [...seen.values()];
  }
  throw new Error('127.0.0.2-40 all reach one worker: is the BPF steering on?');
}

function watch(page, label, errors, sockets) {
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`${label} console: ${m.text()}`);
  });
  page.on('pageerror', (e) => errors.push(`${label} page error: ${e.message}`));
  page.on('websocket', (ws) => sockets.push(ws.url()));
}

async function login(page, name) {
  await page.locator('#name').fill(name);
  await page.locator('#name').press('Enter');
  await page.locator('#chat-view').waitFor({ state: 'visible', timeout: T });
}

async function join(page, room) {
  await page.locator('#room-name').fill(room);
  await page.locator('#room-name').press('Enter');
  await page.locator('#conv-title', { hasText: `#${room}` }).waitFor({ timeout: T });
}

async function say(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
}

const logEntry = (page, text) => page.locator('#log li', { hasText: text });

test('the chat page over https and wss in chromium: two users on two workers', async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  fs.mkdirSync(OUT, { recursive: true });
  const server = await Server.start({
    workers: WORKERS, bind: '0.0.0.0', ca,
    args: ['--tls-cert', f('server.pem'), '--tls-key', f('server.key')],
  });
  const port = server.port;
  const launch = (extra) => chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', ...extra],
  });
  const browser = await launch([`--ignore-certificate-errors-spki-list=${spki}`]);
  const errors = [];
  const sockets = [];
  try {
    const [ipA, ipB] = await twoAddresses(port);
    const ctxA = await browser.newContext({ ignoreHTTPSErrors: false, viewport: { width: 1000, height: 640 } });
    const ctxB = await browser.newContext({ ignoreHTTPSErrors: false, viewport: { width: 1000, height: 640 } });
    const a = await ctxA.newPage();
    const b = await ctxB.newPage();
    watch(a, 'ada', errors, sockets);
    watch(b, 'bob', errors, sockets);
    await a.goto(`https://${ipA}:${port}/`);
    await b.goto(`https://${ipB}:${port}/`);
    assert.equal(await a.evaluate(() => location.protocol), 'https:');
    assert.equal(await a.evaluate(() => window.isSecureContext), true);

    await login(a, 'ada');
    await login(b, 'bob');
    await a.locator('#users [data-user="bob"]').waitFor({ timeout: T });
    await b.locator('#users [data-user="ada"]').waitFor({ timeout: T });
    await a.locator('#worker[data-worker]').waitFor({ timeout: T });
    await b.locator('#worker[data-worker]').waitFor({ timeout: T });
    assert.notEqual(await a.locator('#worker').getAttribute('data-worker'),
                    await b.locator('#worker').getAttribute('data-worker'),
                    'the two addresses are served by different workers');

    await join(a, 'secure');
    await join(b, 'secure');
    await say(a, 'hello over wss');
    await logEntry(b, 'hello over wss').waitFor({ timeout: T });
    await say(b, 'and back');
    await logEntry(a, 'and back').waitFor({ timeout: T });
    await a.screenshot({ path: path.join(OUT, 'chat-tls.png') });

    // The status page's live feed over wss.
    const st = await ctxA.newPage();
    watch(st, 'status', errors, sockets);
    await st.goto(`https://${ipA}:${port}/status`);
    await st.locator('#tiles .tile[data-slot]').nth(WORKERS - 1).waitFor({ timeout: T });
    await st.locator('#conn.online').waitFor({ timeout: T });
    assert.ok(sockets.includes(`wss://${ipA}:${port}/status/ws`), `WebSockets opened: ${sockets}`);

    assert.ok(sockets.length >= 3, `WebSockets opened: ${sockets}`);
    for (const url of sockets) assert.match(url, /^wss:\/\//);
    assert.deepEqual(errors, [], 'no console errors or page errors');
  } finally {
    await browser.close();
    await server.stop();
  }

  // The pin is what makes chromium trust the server: without it the page does not load.
  const server2 = await Server.start({
    workers: 1, bind: '0.0.0.0', ca,
    args: ['--tls-cert', f('server.pem'), '--tls-key', f('server.key')],
  });
  const plain = await launch([]);
  try {
    const p = await (await plain.newContext({ ignoreHTTPSErrors: false })).newPage();
    await assert.rejects(p.goto(`https://127.0.0.2:${server2.port}/`), /ERR_CERT_AUTHORITY_INVALID/);
  } finally {
    await plain.close();
    await server2.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
