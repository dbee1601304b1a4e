// The web pages in a real browser (issue 14): Debian's chromium driven by playwright-core.
// Run by browser.sh inside a private network namespace in which 127.0.0.K is its own source
// address (see there): a page opened at http://127.0.0.K:PORT/ is a client at 127.0.0.K, so two
// browser contexts are two client addresses, steered by the BPF program like two hosts.
//
// Two users on two different workers log in, see each other, join a room (each sees the
// other's join and leave live, in the members list and as notices), exchange room messages, a
// typing indicator and a direct message; markup in a message stays text; one reloads
// and gets the room's history and the same worker; the status page shows every worker and its
// numbers move; the server restarts under both pages, which reconnect and chat on. No console
// errors (but the refused reconnects while the server is down). Screenshots go to BROWSER_OUTPUT.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';

import { chromium } from 'playwright-core';
import WebSocket from 'ws';

import { Server } from './lib/server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = process.env.BROWSER_OUTPUT || path.resolve('browser-output');
const WORKERS = 2;
const T = 10000;  // a step's timeout (ms)

function healthzAt(ip, port) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: ip, port, path: '/healthz', agent: false }, (res) => {
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

// Console errors and page errors of a page; `allow` (a regexp) tolerates expected ones.
function watch(page, label, errors, phase) {
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    if (phase.allow && phase.allow.test(text)) return;
    errors.push(`${label} console: ${text}`);
  });
  page.on('pageerror', (e) => errors.push(`${label} page error: ${e.message}`));
  page.on('dialog', (d) => {
    errors.push(`${label} dialog: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
}

async function login(page, name) {
  await page.locator('#name').fill(name);
  await page.locator('#name').press('Enter');  // by keyboard
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

test('the chat and status pages in chromium: two addresses, reload, restart', async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  fs.mkdirSync(OUT, { recursive: true });
  let server = await Server.start({ workers: WORKERS, bind: '0.0.0.0' });
  const port = server.port;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const errors = [];
  const phase = { allow: null };
  try {
    const [ipA, ipB] = await twoAddresses(port);
    const ctxA = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const ctxB = await browser.newContext({ viewport: { width: 390, height: 760 } });  // a phone
    const a = await ctxA.newPage();
    const b = await ctxB.newPage();
    watch(a, 'ada', errors, phase);
    watch(b, 'bob', errors, phase);
    await a.goto(`http://${ipA}:${port}/`);
    await b.goto(`http://${ipB}:${port}/`);

    // A bad name, then a name taken, are refused with their reason shown.
    await a.evaluate(() => document.getElementById('name').removeAttribute('maxlength'));
    await a.locator('#name').fill('x'.repeat(40));
    await a.locator('#name').press('Enter');
    await a.locator('#login-error', { hasText: 'bad_name' }).waitFor({ timeout: T });
    await login(a, 'ada');
    await b.locator('#name').fill('ada');
    await b.locator('#name').press('Enter');
    await b.locator('#login-error', { hasText: 'name_taken' }).waitFor({ timeout: T });
    await login(b, 'bob');

    // Each sees the other online, and the worker that serves it: two different ones.
    await a.locator('#users [data-user="bob"]').waitFor({ timeout: T });
    await b.locator('#users [data-user="ada"]').waitFor({ timeout: T });
    await a.locator('#worker[data-worker]').waitFor({ timeout: T });
    await b.locator('#worker[data-worker]').waitFor({ timeout: T });
    const workerA = await a.locator('#worker').getAttribute('data-worker');
    const workerB = await b.locator('#worker').getAttribute('data-worker');
    assert.notEqual(workerA, workerB, 'the two addresses are served by different workers');

    // A room: messages both ways, the typing indicator, markup shown as text.
    await join(a, 'kitchen');
    await join(b, 'kitchen');
    // The members list is live: bob's join reaches ada's page (another worker) before he says
    // anything, with a notice in the room.
    await logEntry(a, 'bob joined kitchen').waitFor({ timeout: T });
    await a.locator('#members', { hasText: 'members: ada, bob' }).waitFor({ timeout: T });
    await b.locator('#members', { hasText: 'members: ada, bob' }).waitFor({ timeout: T });
    await say(a, 'hello from ada');
    await logEntry(b, 'hello from ada').waitFor({ timeout: T });
    await b.locator('#text').pressSequentially('typing...', { delay: 20 });
    await a.locator('#typing', { hasText: 'bob is typing' }).waitFor({ timeout: T });
    const markup = '<img src=x onerror=alert(1)>';
    await say(b, markup);
    await logEntry(a, markup).waitFor({ timeout: T });
    assert.equal(await a.locator('#log img').count(), 0, 'markup in a message is not rendered');
    assert.equal(await logEntry(a, markup).locator('.text').textContent(), markup);

    // Joins and leaves of another member, live in the room's notices and members list.
    await join(b, 'attic');
    await b.locator('#members', { hasText: 'members: bob' }).waitFor({ timeout: T });
    await join(a, 'attic');
    await logEntry(b, 'ada joined attic').waitFor({ timeout: T });
    await b.locator('#members', { hasText: 'members: ada, bob' }).waitFor({ timeout: T });
    await a.locator('#leave').click();
    await logEntry(b, 'ada left attic').waitFor({ timeout: T });
    await b.locator('#members', { hasText: /^members: bob$/ }).waitFor({ timeout: T });

    // A direct message, with its unread count at the recipient.
    await a.locator('#users [data-user="bob"]').click();
    await a.locator('#conv-title', { hasText: '@bob' }).waitFor({ timeout: T });
    await say(a, 'psst, bob');
    await b.locator('#rooms [data-dm="ada"] .badge', { hasText: '1' }).waitFor({ timeout: T });
    await b.locator('#rooms [data-dm="ada"]').focus();  // by keyboard: the lists are buttons
    await b.keyboard.press('Enter');
    await logEntry(b, 'psst, bob').waitFor({ timeout: T });
    assert.equal(await b.evaluate(() => document.activeElement.id), 'text', 'focus moves to the input');

    // The status page: a tile per worker; its numbers move when messages flow.
    const s = await ctxA.newPage();
    watch(s, 'status', errors, phase);
    // Live by push: one WebSocket to /status/ws, no polling of /status.json.
    const statusSockets = [];
    let statusJsonRequests = 0;
    s.on('websocket', (w) => statusSockets.push(w.url()));
    s.on('request', (r) => { if (new URL(r.url()).pathname === '/status.json') statusJsonRequests++; });
    await s.goto(`http://${ipA}:${port}/status`);
    await s.locator('#tiles .tile[data-slot]').nth(WORKERS - 1).waitFor({ timeout: T });
    assert.equal(await s.locator('#tiles .tile[data-slot]').count(), WORKERS);
    await s.locator('#chart polyline').waitFor({ state: 'attached', timeout: T });
    const deliveries = async () =>
      Number((await s.locator('#host dt:text-is("deliveries") + dd').textContent()).replace(/,/g, ''));
    const before = await deliveries();
    await b.locator('#rooms [data-room="kitchen"]').click();
    for (let i = 0; i < 5; i++) await say(b, `flow ${i}`);
    const deadline = Date.now() + T;
    while ((await deliveries()) <= before && Date.now() < deadline) await s.waitForTimeout(200);
    assert.ok((await deliveries()) > before, 'the host deliveries counter moved');
    for (let i = 0; i < 8; i++) {  // more samples with traffic: the rates and the chart move
      await say(b, `more ${i}`);
      await s.waitForTimeout(300);
    }
    await s.screenshot({ path: path.join(OUT, 'status.png') });
    assert.deepEqual(statusSockets, [`ws://${ipA}:${port}/status/ws`], 'the status page uses one WebSocket');
    assert.equal(statusJsonRequests, 0, 'the status page does not poll /status.json');
    assert.equal(await s.locator('#conn').textContent(), 'live');

    // A reload: the same worker, the room's history back.
    await a.locator('#rooms [data-room="kitchen"]').click();
    await a.reload();
    await a.locator('#rooms [data-room="kitchen"]').waitFor({ timeout: T });
    await a.locator('#rooms [data-room="kitchen"]').click();
    await logEntry(a, 'hello from ada').waitFor({ timeout: T });
    await logEntry(a, 'flow 4').waitFor({ timeout: T });
    await a.locator('#worker[data-worker]').waitFor({ timeout: T });
    assert.equal(await a.locator('#worker').getAttribute('data-worker'), workerA,
                 'the same worker after a reload');
    await a.screenshot({ path: path.join(OUT, 'chat.png') });

    // The server restarts under both pages: they say so, come back, log in, rejoin, chat on.
    phase.allow = /WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|Failed to load resource/;
    await server.stop();
    await a.locator('#conn.offline').waitFor({ timeout: T });
    await b.locator('#conn.offline').waitFor({ timeout: T });
    await s.locator('#conn.offline').waitFor({ timeout: T });
    server = await Server.start({ workers: WORKERS, bind: '0.0.0.0', port });
    await s.locator('#conn.online').waitFor({ timeout: 20000 });  // the status feed reconnected
    assert.ok(statusSockets.length >= 2 && statusSockets.every((u) => u.endsWith('/status/ws')));
    await a.locator('#conn.online').waitFor({ timeout: 20000 });
    await b.locator('#conn.online').waitFor({ timeout: 20000 });
    await a.locator('#me', { hasText: 'ada' }).waitFor({ timeout: T });
    await a.locator('#users [data-user="bob"]').waitFor({ timeout: T });
    await b.locator('#users [data-user="ada"]').waitFor({ timeout: T });
    phase.allow = null;
    await say(a, 'after the restart');
    await logEntry(b, 'after the restart').waitFor({ timeout: T });
    await say(b, 'still here');
    await logEntry(a, 'still here').waitFor({ timeout: T });
    await logEntry(a, 'hello from ada').waitFor({ timeout: T });  // the page kept its history
    await a.screenshot({ path: path.join(OUT, 'chat-after-restart.png') });
    await b.screenshot({ path: path.join(OUT, 'chat-phone.png') });

    assert.deepEqual(errors, [], 'no console errors, page errors or dialogs');
  } finally {
    await browser.close();
    await server.stop();
  }
});

// The status page's feed without a browser: the /status.json document at once and then every
// second, the same-origin check, and --status-page off by a reload (open feeds closed with 1008,
// new ones refused with 403).
test('status feed over a WebSocket: push, origin check, turned off by a reload', async () => {
  const conf = path.join(OUT, `status-feed-${process.pid}.conf`);
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(conf, 'status-page = on\n');
  const server = await Server.start({ workers: 2, args: ['--config', conf] });
  const url = `ws://127.0.0.1:${server.port}/status/ws`;
  const refusal = (headers) => new Promise((resolve, reject) => {
    const w = new WebSocket(url, { headers });
    w.on('open', () => reject(new Error('the upgrade was accepted')));
    w.on('unexpected-response', (_req, res) => { resolve(res.statusCode); w.terminate(); });
    w.on('error', () => {});
  });
  try {
    const w = new WebSocket(url, { headers: { origin: `http://127.0.0.1:${server.port}` } });
    const docs = [];
    const closed = new Promise((resolve, reject) => {
      w.on('close', (code) => resolve(code));
      setTimeout(() => reject(new Error('the feed did not close within 10 s')), 10000);
    });
    closed.catch(() => {});
    await new Promise((resolve, reject) => {
      w.on('message', (data) => {
        docs.push({ at: Date.now(), doc: JSON.parse(data.toString()) });
        if (docs.length === 3) resolve();
      });
      w.on('error', reject);
      setTimeout(() => reject(new Error(`${docs.length} messages in 5 s`)), 5000);
    });
    for (const { doc } of docs) {
      assert.deepEqual(doc.slots.map((x) => x.slot).sort(), [0, 1], 'a slot per worker');
      assert.equal(typeof doc.total.deliveries, 'number');
    }
    const gap = docs[2].at - docs[1].at;
    assert.ok(gap > 700 && gap < 1500, `a message a second (${gap} ms apart)`);
    assert.ok(docs[2].doc.time_ms > docs[1].doc.time_ms);
    // Same-origin only, like the other WebSocket routes.
    assert.equal(await refusal({ origin: 'http://evil.example' }), 403);

    // Turned off by a reload: the open feed closes with 1008, a new one is refused.
    fs.writeFileSync(conf, 'status-page = off\n');
    server.proc.kill('SIGHUP');
    assert.equal(await closed, 1008);
    assert.equal(await refusal({}), 403);
  } finally {
    await server.stop();
    fs.rmSync(conf, { force: true });
  }
});

// The pages' HTTP side, without a browser: ETag and 304, gzip by Accept-Encoding, the security
// headers, HEAD, and --status-page off.
function request(port, p, headers = {}, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, headers, method, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('static files: caching, compression, security headers, --status-page off', async () => {
  const server = await Server.start({ workers: 1, args: ['--status-page', 'off'] });
  try {
    const page = await request(server.port, '/');
    assert.equal(page.status, 200);
    assert.match(page.headers['content-type'], /^text\/html/);
    assert.match(page.body.toString(), /<script src="\/chat.js" defer><\/script>/);
    assert.match(page.headers['content-security-policy'], /default-src 'none'; script-src 'self'/);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.equal(page.headers['cache-control'], 'no-cache');
    const etag = page.headers.etag;
    assert.match(etag, /^"[0-9a-f]{20}"$/);
    assert.equal((await request(server.port, '/', { 'if-none-match': etag })).status, 304);
    assert.equal((await request(server.port, '/', { 'if-none-match': '"other"' })).status, 200);

    const gz = await request(server.port, '/chat.js', { 'accept-encoding': 'br, gzip;q=0.8' });
    assert.equal(gz.headers['content-encoding'], 'gzip');
    assert.equal(gz.headers.vary, 'Accept-Encoding');
    const { gunzipSync } = await import('node:zlib');
    const js = await request(server.port, '/chat.js');
    assert.equal(js.headers['content-encoding'], undefined);
    assert.ok(gz.body.length < js.body.length / 2, 'gzip pays for the script');
    assert.deepEqual(gunzipSync(gz.body), js.body);
    assert.notEqual(gz.headers.etag, js.headers.etag);
    assert.equal((await request(server.port, '/chat.js', { 'accept-encoding': 'gzip;q=0' }))
      .headers['content-encoding'], undefined);
    assert.equal((await request(server.port, '/chat.js', { 'accept-encoding': 'gzip', 'if-none-match': gz.headers.etag })).status, 304);

    const head = await request(server.port, '/style.css', {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.ok(Number(head.headers['content-length']) > 0);
    assert.equal((await request(server.port, '/', {}, 'POST')).status, 405);

    // --status-page off: the chat stays, the status page and its data are gone.
    assert.equal((await request(server.port, '/status')).status, 404);
    assert.equal((await request(server.port, '/status.json')).status, 404);
    assert.equal((await request(server.port, '/status.js')).status, 404);
    assert.equal((await request(server.port, '/favicon.svg')).status, 200);

    // Counted in /metrics by result.
    const metrics = (await request(server.port, '/metrics')).body.toString();
    const count = (result) => Number(metrics.match(
      new RegExp(`^steerchat_web_responses_total\\{[^}]*result="${result}"[^}]*\\} (\\d+)$`, 'm'))?.[1]);
    assert.equal(count('not_modified'), 2);
    assert.equal(count('gzip'), 1);
    assert.equal(count('refused'), 3);  // POST /, /status, /status.js (/status.json: the app's)
    assert.equal(count('ok'), 6);
  } finally {
    await server.stop();
  }
});
