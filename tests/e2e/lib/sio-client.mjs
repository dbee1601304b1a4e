// Socket.IO test clients: the official socket.io-client 4.x (Engine.IO 4) and 2.x (Engine.IO 3,
// installed as the npm alias socket.io-client-v2), each bound to a chosen source address.
//
// Source-address binding: the clients run in Node, where Engine.IO's long-polling requests go
// through the `xmlhttprequest-ssl` package, which calls http.request() with the `agent` option of
// the client (engine.io-client 6 and 3 both forward `agent`; nothing else reaches http.request).
// So every client gets its own http.Agent whose connections are created with `localAddress`.
// The WebSocket transport (npm `ws`) receives the same `agent` (and `localAddress`), so the upgrade
// request leaves from the same address too. The agent does not keep connections alive: every
// HTTP request is a new TCP connection, i.e. a new SYN the kernel steers on its own, which is the
// hard case for stickiness. It also counts the TCP connections it opened (`agent.connections`).
import http from 'node:http';
import https from 'node:https';
import { createRequire } from 'node:module';

import { io as ioV4 } from 'socket.io-client';

const require = createRequire(import.meta.url);
const ioV2 = require('socket.io-client-v2');

// `Base`: http.Agent, or https.Agent (its options may name a `ca` to trust).
const bound = (Base) => class extends Base {
  constructor(localAddress, options = {}) {
    super({ keepAlive: false, localAddress, ...options });
    this.localAddress = localAddress;
    this.connections = 0;   // TCP connections established
    this.requests = [];     // "METHOD path" of every request sent through this agent
    this.httpErrors = [];   // { status, request, body } of every answer >= 400
  }

  createConnection(options, cb) {
    const sock = super.createConnection({ ...options, localAddress: this.localAddress }, cb);
    sock.once('connect', () => this.connections++);
    return sock;
  }

  addRequest(req, options) {
    const what = `${req.method} ${req.path}`;
    this.requests.push(what);
    // Keep error answers: the clients drop their bodies when they abort the request.
    req.once('response', (res) => {
      if (res.statusCode < 400) return;
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => this.httpErrors.push({ status: res.statusCode, request: what, body }));
    });
    return super.addRequest(req, options);
  }
};
export const BoundAgent = bound(http.Agent);
export const BoundHttpsAgent = bound(https.Agent);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One Socket.IO client (one namespace). Events the server emits are queued in `inbox`
// ({event, args}) and taken with next().
export class SioClient {
  // Connects and waits for the namespace CONNECT (rejects on connect_error / timeout).
  //   version: 4 (socket.io-client 4) or 2 (socket.io-client 2, Engine.IO 3)
  //   transports: e.g. ['websocket'] for websocket-only; default polling then upgrade
  //   ca: PEM of a CA to trust: https:// and wss:// (the server speaks TLS)
  static async connect(port, { ip, nsp = '/', version = 4, transports, auth, extraHeaders,
                               timeoutMs = 10000, path = '/socket.io', ca } = {}) {
    const c = SioClient.create(port, { ip, nsp, version, transports, auth, extraHeaders,
                                       timeoutMs, path, ca });
    await c.connected(timeoutMs);
    return c;
  }

  // Creates the client without waiting (for tests that expect failures).
  static create(port, { ip, nsp = '/', version = 4, transports, auth, extraHeaders,
                        timeoutMs = 10000, path = '/socket.io', ca } = {}) {
    if (!ip) throw new Error('SioClient needs a source address (ip)');
    const agent = ca ? new BoundHttpsAgent(ip, { ca }) : new BoundAgent(ip);
    const url = `${ca ? 'https' : 'http'}://127.0.0.1:${port}${nsp === '/' ? '' : nsp}`;
    const opts = {
      agent, localAddress: ip, path, forceNew: true, reconnection: false, timeout: timeoutMs,
      ...(ca ? { ca } : {}),
      ...(transports ? { transports } : {}),
      ...(extraHeaders ? { extraHeaders } : {}),
    };
    let socket;
    if (version === 4) {
      socket = ioV4(url, { ...opts, ...(auth ? { auth } : {}) });
    } else if (version === 2) {
      socket = ioV2(url, opts);
    } else {
      throw new Error(`unknown socket.io-client version ${version}`);
    }
    return new SioClient(socket, agent, version, ip);
  }

  constructor(socket, agent, version, ip) {
    this.socket = socket;
    this.agent = agent;
    this.version = version;
    this.ip = ip;
    this.inbox = [];
    this.waiters = [];
    this.errors = [];
    this.disconnectReason = null;
    this.upgraded = false;
    this.engineErrors = [];
    // `onEvent(event, args)`, when set, sees every event first; returning true consumes it.
    this.onEvent = null;
    const record = (event, args) => {
      if (this.onEvent && this.onEvent(event, args)) return;
      this.inbox.push({ event, args });
      this.#wake();
    };
    if (version === 4) {
      socket.onAny((event, ...args) => record(event, args));
      socket.on('connect_error', (e) => {
        this.errors.push(e);
        this.#wake();
      });
    } else {
      // socket.io-client 2 has no onAny: wrap its event dispatch.
      const onevent = socket.onevent;
      socket.onevent = function (packet) {
        const args = packet.data || [];
        record(args[0], args.slice(1));
        return onevent.call(this, packet);
      };
      // v2 reports a refused namespace as an 'error' event with the message string.
      for (const ev of ['connect_error', 'error', 'connect_timeout']) {
        socket.on(ev, (e) => {
          this.errors.push(typeof e === 'string' ? new Error(e) : e ?? new Error(ev));
          this.#wake();
        });
      }
    }
    socket.on('disconnect', (reason) => {
      this.disconnectReason = reason;
      this.#wake();
    });
    this.#watchEngine();
  }

  // The Engine.IO socket exists once the manager opens; watch it for upgrades and errors.
  #watchEngine() {
    const mgr = this.socket.io;
    const attach = () => {
      const engine = mgr.engine;
      if (!engine || engine.__sioWatched) return;
      engine.__sioWatched = true;
      if (engine.transport?.name === 'websocket') this.upgraded = true;
      engine.on('upgrade', () => {
        this.upgraded = true;
        this.#wake();
      });
      engine.on('error', (e) => {
        this.engineErrors.push(e);
        this.#wake();
      });
      engine.on('close', () => this.#wake());
    };
    attach();
    mgr.on('open', attach);
    if (typeof mgr.once === 'function') mgr.once('connect_error', () => this.#wake());
  }

  get transport() {
    return this.socket.io.engine?.transport?.name;
  }

  get id() {
    return this.socket.id;
  }

  #wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  async #waitUntil(cond, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = cond();
      if (v) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.ip}: ${what} not within ${timeoutMs} ms`);
      let t;
      await Promise.race([new Promise((r) => this.waiters.push(r)),
                          new Promise((r) => (t = setTimeout(r, Math.min(left, 100))))]);
      clearTimeout(t);
    }
  }

  // Resolves on the namespace CONNECT; rejects with the first connect error.
  async connected(timeoutMs = 10000) {
    await this.#waitUntil(() => this.socket.connected || this.errors.length > 0, timeoutMs,
                          'connect');
    if (!this.socket.connected) {
      const e = this.errors[0];
      const err = new Error(`${this.ip}: connect failed: ${e?.message ?? e} ` +
                            `(${describeError(e)})`);
      err.cause = e;
      throw err;
    }
  }

  // Resolves once Engine.IO runs on the WebSocket transport.
  async upgradedToWebSocket(timeoutMs = 10000) {
    await this.#waitUntil(() => this.upgraded || this.transport === 'websocket', timeoutMs,
                          `upgrade (transport still ${this.transport})`);
  }

  // Removes and returns the first queued event named `event` whose args satisfy `pred`.
  async next(event, pred = () => true, timeoutMs = 5000) {
    try {
      const hit = await this.#waitUntil(() => {
        const i = this.inbox.findIndex((m) => m.event === event && pred(...m.args));
        return i >= 0 ? this.inbox.splice(i, 1)[0] : null;
      }, timeoutMs, `event "${event}"`);
      return hit.args;
    } catch (e) {
      e.message += `; connected=${this.socket.connected} inbox: ` +
                   JSON.stringify(this.inbox.slice(0, 5).map((m) => [m.event, ...m.args]));
      throw e;
    }
  }

  // Removes every queued event named `event` and returns their args lists.
  take(event) {
    const out = this.inbox.filter((m) => m.event === event).map((m) => m.args);
    this.inbox = this.inbox.filter((m) => m.event !== event);
    return out;
  }

  emit(event, ...args) {
    this.socket.emit(event, ...args);
  }

  // Emits with an acknowledgement callback; resolves to the ack's argument list.
  emitAck(event, ...args) {
    const timeoutMs = 5000;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.ip}: no ack for "${event}" within ` +
                                                  `${timeoutMs} ms`)), timeoutMs);
      this.socket.emit(event, ...args, (...reply) => {
        clearTimeout(t);
        resolve(reply);
      });
    });
  }

  // Waits until the server disconnects this socket; returns the reason.
  async disconnected(timeoutMs = 5000) {
    await this.#waitUntil(() => this.disconnectReason !== null, timeoutMs, 'disconnect');
    return this.disconnectReason;
  }

  close() {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
    try {
      this.socket.io.engine?.close();
    } catch {
      // already closed
    }
    this.agent.destroy();
  }
}

export function describeError(e) {
  if (!e) return 'no error';
  const parts = [];
  if (e.type) parts.push(`type=${e.type}`);
  if (e.description !== undefined) {
    const d = e.description;
    parts.push(`description=${typeof d === 'object' ? (d?.message ?? JSON.stringify(d)) : d}`);
  }
  if (e.context?.status) parts.push(`status=${e.context.status}`);
  if (e.context?.responseText) parts.push(`body=${e.context.responseText}`);
  if (e.data) parts.push(`data=${JSON.stringify(e.data)}`);
  if (!parts.length && !(e instanceof Error)) return JSON.stringify(e);
  return parts.join(' ') || String(e);
}

// Connects many clients with at most `parallel` handshakes in flight; returns the results in
// order: { client } or { error }.
export async function connectMany(n, make, parallel = 32) {
  const results = new Array(n);
  let nextIndex = 0;
  const worker = async () => {
    for (;;) {
      const i = nextIndex++;
      if (i >= n) return;
      try {
        results[i] = { client: await make(i) };
      } catch (error) {
        results[i] = { error };
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return results;
}

export { sleep };
