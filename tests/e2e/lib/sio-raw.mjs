// Raw Engine.IO / Socket.IO helpers: HTTP requests built by hand (node:http, one connection per
// request, from a chosen source address), a WebSocket that queues what it receives (npm `ws`),
// and per-worker /metrics.
import http from 'node:http';
import https from 'node:https';

import WebSocket from 'ws';

// One HTTP request on its own TCP connection. Resolves to { status, headers, body } (body: utf8).
// `ca` (PEM): HTTPS, trusting that CA.
export function request(port, { method = 'GET', path, headers = {}, body, localAddress,
                                timeoutMs = 5000, ca } = {}) {
  return new Promise((resolve, reject) => {
    const req = (ca ? https : http).request({ host: '127.0.0.1', port, method, path, headers,
                                              localAddress, agent: false, ...(ca ? { ca } : {}) },
                                            (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
                                    body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path} timed out after ` +
                                                          `${timeoutMs} ms`)));
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

export const eioPath = (query, base = '/socket.io/') => `${base}?${query}`;

// GET handshake over polling; resolves to { sid, open, raw } (Engine.IO 4: the body is `0{...}`).
export async function pollingHandshake(port, localAddress, { eio = 4, base = '/socket.io/' } = {}) {
  const r = await request(port, { path: eioPath(`EIO=${eio}&transport=polling`, base),
                                  localAddress });
  if (r.status !== 200) {
    throw new Error(`handshake: HTTP ${r.status} ${r.body}`);
  }
  let text = r.body;
  if (eio === 3) text = text.slice(text.indexOf(':') + 1);
  if (text[0] !== '0') throw new Error(`handshake: not an open packet: ${r.body}`);
  const open = JSON.parse(text.slice(1, eio === 3 ? undefined : text.indexOf('\x1e') >= 0
    ? text.indexOf('\x1e') : undefined));
  return { sid: open.sid, open, raw: r.body };
}

// Parses an Engine.IO error answer: { code, message }.
export function errorBody(r) {
  try {
    return JSON.parse(r.body);
  } catch {
    throw new Error(`not a JSON error body (HTTP ${r.status}): ${JSON.stringify(r.body)}`);
  }
}

// The metrics of the worker that serves `localAddress` (steerchat_* name -> number). Every scrape
// has every worker's series: keep that worker's (and the host's). Without `worker` (its number)
// a /healthz from the address finds it first (one more request and connection on that worker).
export async function metricsFrom(port, localAddress, worker) {
  worker ??= JSON.parse((await request(port, { path: '/healthz', localAddress })).body).worker;
  const r = await request(port, { path: '/metrics', localAddress });
  const out = {};
  for (const line of r.body.split('\n')) {
    const w = /worker="(\d+)"/.exec(line);
    if (w && Number(w[1]) !== worker) continue;
    const m = /^(\w+)(\{[^}]*\})? ([0-9.eE+-]+)$/.exec(line);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[3]);
  }
  return out;
}

// A WebSocket that queues messages (text as strings, binary as Buffers) and remembers its close.
export class QueueSocket {
  static open(url, { localAddress, headers } = {}) {
    const ws = new WebSocket(url, { localAddress, headers });
    const q = new QueueSocket(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(q));
      ws.once('unexpected-response', (req, res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode} ` +
                                                           `${body}`),
                                                 { status: res.statusCode, body })));
      });
      ws.once('error', reject);
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.messages = [];
    this.waiters = [];
    this.closed = false;
    this.closeCode = null;
    this.closedAt = null;
    ws.on('message', (data, isBinary) => {
      this.messages.push(isBinary ? Buffer.from(data) : data.toString());
      this.#wake();
    });
    ws.on('close', (code) => {
      this.closed = true;
      this.closeCode = code;
      this.closedAt = Date.now();
      this.#wake();
    });
    ws.on('error', () => {});
  }

  #wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  async #until(cond, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = cond();
      if (v !== undefined && v !== false && v !== null) return v;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${what} not within ${timeoutMs} ms (closed=${this.closed}, queued: ` +
                        `${JSON.stringify(this.messages.slice(0, 5).map(String))})`);
      }
      let t;
      await Promise.race([new Promise((r) => this.waiters.push(r)),
                          new Promise((r) => (t = setTimeout(r, left)))]);
      clearTimeout(t);
    }
  }

  // The next message, skipping Engine.IO pings ("2") unless `keepPings`.
  next(timeoutMs = 3000, { keepPings = false } = {}) {
    return this.#until(() => {
      while (this.messages.length) {
        const m = this.messages.shift();
        if (!keepPings && m === '2') continue;
        return { m };
      }
      if (this.closed) throw new Error('the WebSocket closed while waiting for a message');
      return undefined;
    }, timeoutMs, 'a message').then((x) => x.m);
  }

  waitClose(timeoutMs = 3000) {
    return this.#until(() => (this.closed ? true : undefined), timeoutMs, 'the close');
  }

  send(data) {
    this.ws.send(data);
  }

  close() {
    this.ws.terminate();
  }
}
