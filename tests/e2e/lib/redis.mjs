// A real redis-server for the tests between hosts (issue 13), and several steerchat "hosts" on
// this machine linked through it: each its own port, pin directory, run directory and --host-id.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { Server, get } from './server.mjs';

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// One RESP command over a fresh connection; resolves to the raw reply text.
export function redisCommand(port, ...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    sock.setTimeout(2000, () => sock.destroy(new Error('redis command timed out')));
    sock.on('error', reject);
    sock.on('data', (d) => {
      data += d;
      if (data.endsWith('\r\n')) {
        sock.end();
        resolve(data);
      }
    });
    sock.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join(''));
  });
}

export class RedisServer {
  // `persist`: an append-only file (fsync always) in a directory of its own, so a restart keeps
  // the streams, as a production Redis would.
  static async start({ port, persist = false } = {}) {
    const r = new RedisServer(port ?? await freePort(), persist);
    await r.start();
    return r;
  }

  constructor(port, persist) {
    this.port = port;
    this.log = '';
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'steerchat-redis-'));
    this.persist = persist;
  }

  async start() {
    this.proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1',
                                        '--dir', this.dir, '--save', '',
                                        '--appendonly', this.persist ? 'yes' : 'no',
                                        '--appendfsync', 'always'],
                      { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout.on('data', (d) => (this.log += d));
    this.proc.stderr.on('data', (d) => (this.log += d));
    this.exited = new Promise((r) => this.proc.on('exit', r));
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        if ((await redisCommand(this.port, 'PING')).startsWith('+PONG')) return;
      } catch {
        // not yet
      }
      if (Date.now() > deadline) throw new Error(`redis-server did not start:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(signal = 'SIGKILL') {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    await this.exited;
  }

  // A clean restart on the same port (SIGTERM: Redis finishes its append-only file).
  async restart() {
    await this.stop('SIGTERM');
    await this.start();
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }
}

// A TCP relay (the link between a host and Redis) the test can cut and heal.
export class Relay {
  static async start(targetPort) {
    const r = new Relay(targetPort);
    r.port = await freePort();
    await r.heal();
    return r;
  }

  constructor(targetPort) {
    this.target = targetPort;
    this.socks = new Set();
  }

  heal() {
    return new Promise((resolve, reject) => {
      this.server = net.createServer((c) => {
        const up = net.connect(this.target, '127.0.0.1');
        this.socks.add(c);
        this.socks.add(up);
        c.pipe(up);
        up.pipe(c);
        const end = () => {
          c.destroy();
          up.destroy();
          this.socks.delete(c);
          this.socks.delete(up);
        };
        c.on('error', end);
        up.on('error', end);
        c.on('close', end);
        up.on('close', end);
      });
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', resolve);
    });
  }

  // Stops listening and drops every connection (both ways).
  cut() {
    for (const s of this.socks) s.destroy();
    this.socks.clear();
    return new Promise((r) => this.server.close(r));
  }
}

// Starts steerchat host `id` linked to `url`, with its own run and pin directories.
export async function startHost(id, url, { workers = 2, lease = 1500, args = [], port } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `steerchat-host${id}-`));
  const s = await Server.start({
    workers,
    port,
    args: ['--redis', url, '--host-id', String(id), '--host-lease', String(lease),
           '--run-dir', path.join(dir, 'run'), '--bpffs-dir', `/sys/fs/bpf/steerchat-e2e-h${id}-${process.pid}`,
           ...args],
  });
  s.hostId = id;
  s.dir = dir;
  return s;
}

// kill -9 of a whole host: its master and every process it started (workers, bridge).
export async function killHost(server) {
  const pids = [server.proc.pid];
  try {
    pids.push(...execFileSync('pgrep', ['-P', String(server.proc.pid)]).toString().trim()
      .split('\n').filter(Boolean).map(Number));
  } catch {
    // no children
  }
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  await server.exited;
  return pids.length;
}

// The value of a sample of /metrics (the first line starting with `prefix`), or null.
export async function metric(port, prefix) {
  const r = await get(port, '/metrics');
  for (const line of r.body.split('\n'))
    if (line.startsWith(prefix)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  return null;
}

// Polls `f` until it returns a truthy value (or throws after `timeoutMs`).
export async function until(f, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
