// Raw TCP clients for the HTTP edge limit tests: a connection bound to a chosen source address
// (so the kernel's steering picks its worker) that records what the server sends and when it
// closes, and helpers to read one worker's /metrics.
import net from 'node:net';

import { getFrom, healthzFrom } from './chat-client.mjs';

export class RawConnection {
  static open(port, localAddress) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port, localAddress });
      const c = new RawConnection(sock);
      sock.once('connect', () => {
        c.connectedAt = Date.now();
        resolve(c);
      });
      sock.once('error', reject);
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.data = Buffer.alloc(0);
    this.firstDataAt = null;
    this.closedAt = null;
    this.error = null;
    this.closed = new Promise((resolve) => {
      sock.on('close', () => {
        this.closedAt = Date.now();
        resolve(this);
      });
    });
    sock.on('data', (d) => {
      if (this.firstDataAt === null) this.firstDataAt = Date.now();
      this.data = Buffer.concat([this.data, d]);
    });
    sock.on('error', (e) => (this.error = e));
  }

  write(s) {
    if (!this.sock.destroyed) this.sock.write(s);
  }

  text() {
    return this.data.toString('latin1');
  }

  // The status code of the first response received, or null.
  status() {
    const m = /^HTTP\/1\.1 (\d{3})/.exec(this.text());
    return m ? Number(m[1]) : null;
  }

  // Resolves when the server closed the connection, rejects after `timeoutMs`.
  async waitClosed(timeoutMs, what = 'the server to close the connection') {
    let t;
    const timeout = new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`no close within ${timeoutMs} ms waiting for ${what}; ` +
                                            `got ${JSON.stringify(this.text().slice(0, 200))}`)),
                     timeoutMs);
    });
    try {
      return await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(t);
    }
  }

  // Resolves when `pred(text)` holds (checked every 10 ms).
  async waitFor(pred, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (pred(this.text())) return;
      if (Date.now() > deadline || this.closedAt !== null) {
        throw new Error(`${what}: not seen within ${timeoutMs} ms (closed=${this.closedAt !== null}); ` +
                        `got ${JSON.stringify(this.text().slice(0, 200))}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  destroy() {
    this.sock.destroy();
  }
}

// One worker's /metrics (the worker that serves `localAddress`) as {name{labels}: value}: every
// worker's series are in every scrape, so keep those labelled with that worker (and the host's).
export async function metricsFrom(port, localAddress) {
  const { worker } = await healthzFrom(port, localAddress);
  const body = await getFrom(port, localAddress, '/metrics');
  const out = {};
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const w = /worker="(\d+)"/.exec(line);
    if (w && Number(w[1]) !== worker) continue;
    const i = line.lastIndexOf(' ');
    const key = line.slice(0, i).replace(/worker="\d+",?/, '').replace('{}', '');
    out[key] = Number(line.slice(i + 1));
  }
  return out;
}

// `count` source addresses 127.<net>.x.y that the steering puts on the same worker as `anchor`
// (found by asking /healthz from each candidate).
export async function addressesOnWorkerOf(port, anchor, net, count) {
  const target = (await healthzFrom(port, anchor)).worker;
  const found = [];
  for (let i = 1; i < 250 && found.length < count; i++) {
    const a = `127.${net}.${i}.1`;
    if ((await healthzFrom(port, a)).worker === target) found.push(a);
  }
  if (found.length < count) throw new Error(`found only ${found.length} addresses on worker ${target}`);
  return found;
}
