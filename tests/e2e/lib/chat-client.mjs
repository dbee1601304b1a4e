// A native-protocol chat client over the npm `ws` library, bound to a chosen source address so
// the kernel's steering puts it on the worker of that address.
import http from 'node:http';
import https from 'node:https';

import WebSocket from 'ws';

export class ChatClient {
  // `ca` (PEM): wss://, trusting that CA.
  static async connect(port, localAddress, { handshakeTimeout, ca } = {}) {
    const ws = new WebSocket(`${ca ? 'wss' : 'ws'}://127.0.0.1:${port}/ws`,
                             { localAddress, ...(handshakeTimeout ? { handshakeTimeout } : {}),
                               ...(ca ? { ca } : {}) });
    const c = new ChatClient(ws, localAddress);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    return c;
  }

  constructor(ws, localAddress) {
    this.ws = ws;
    this.localAddress = localAddress;
    this.inbox = [];
    this.waiters = [];
    this.closed = false;
    // `onMessage(m)`, when set, sees every message first; returning true consumes it (for
    // clients that handle a stream themselves instead of queueing it).
    this.onMessage = null;
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (this.onMessage && this.onMessage(m)) return;
      this.inbox.push(m);
      this.#wake();
    });
    this.onClose = null;  // called once with the close code
    ws.on('close', (code) => {
      this.closed = true;
      this.closeCode = code;
      this.#wake();
      if (this.onClose) this.onClose(code);
    });
    ws.on('error', () => {});
  }

  #wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  // Removes and returns the first message matching `pred`, waiting up to `timeoutMs`.
  async next(pred = () => true, timeoutMs = 5000, what = 'a message') {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) {
        throw new Error(`${this.localAddress}: no ${what} within ${timeoutMs} ms ` +
                        `(closed=${this.closed}); inbox: ${JSON.stringify(this.inbox.slice(0, 5))}`);
      }
      let t;
      await Promise.race([new Promise((r) => this.waiters.push(r)),
                          new Promise((r) => (t = setTimeout(r, left)))]);
      clearTimeout(t);
    }
  }

  // Sends `req` and returns the first reply of one of `types`.
  async request(req, types, timeoutMs = 5000) {
    this.send(req);
    return this.next((m) => types.includes(m.type), timeoutMs, types.join('|'));
  }

  // Removes every queued message matching `pred` and returns them.
  take(pred) {
    const out = this.inbox.filter(pred);
    this.inbox = this.inbox.filter((m) => !pred(m));
    return out;
  }

  close() {
    this.ws.terminate();
  }
}

// GET `path` from `localAddress`; resolves to the body text.
export function getFrom(port, localAddress, path) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, localAddress, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error(`GET ${path} timed out`)));
  });
}

// Which worker (slot, pid) serves connections from `localAddress`.
export function healthzFrom(port, localAddress, ca) {
  return new Promise((resolve, reject) => {
    const req = (ca ? https : http).get({ host: '127.0.0.1', port, path: '/healthz', localAddress,
                                          agent: false, ...(ca ? { ca } : {}) },
                         (res) => {
                           let body = '';
                           res.on('data', (d) => (body += d));
                           res.on('end', () => resolve(JSON.parse(body)));
                         });
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error('healthz timed out')));
  });
}
