// `steerchat balance` under test: starts the real binary over a real COMMAND (the examples in
// examples/balance/), reads the master's /healthz on its --admin-port, and a real redis-server.
// Fixed ports of the balance range (19100-19199): pins under /sys/fs/bpf/steerchat/<port> and the
// instance lock are host-wide, so every test file uses its own ports (and ctest runs the Release
// and sanitizer trees' copies one at a time: RESOURCE_LOCK).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { binaryPath, sanitizerReport } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const examples = path.resolve(here, '../../../examples/balance');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// GET http://HOST:PORT/PATH from source address `ip`; resolves {status, headers, body}.
export function getFrom(port, urlPath, { ip, host = '127.0.0.1', timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: urlPath, agent: false,
                           ...(ip ? { localAddress: ip } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${urlPath} timed out`)));
  });
}

export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// The process group of `pid` (field 5 of /proc/PID/stat, after the command's ")").
export function pgidOf(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

export async function waitFor(what, cond, timeoutMs = 10000, stepMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

export class Balance {
  // `command`: COMMAND and its arguments; `args`: options before '--'.
  constructor({ port, adminPort, workers, command, args = [], env = {}, steering = 'bpf' }) {
    this.port = port;
    this.adminPort = adminPort;
    this.runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'steerchat-balance-'));
    this.log = '';
    const argv = ['balance', '--port', String(port), '--workers', String(workers),
                  '--steering', steering, '--run-dir', this.runDir,
                  ...(adminPort ? ['--admin-port', String(adminPort)] : []), ...args, '--',
                  ...command];
    this.proc = spawn(binaryPath(), argv, { stdio: ['ignore', 'pipe', 'pipe'],
                                            env: { ...process.env, ...env } });
    this.proc.stdout.on('data', (d) => (this.log += d));
    this.proc.stderr.on('data', (d) => (this.log += d));
    this.exit = null;
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve((this.exit = { code, signal })));
    });
    this.closed = new Promise((resolve) => this.proc.on('close', resolve));
  }

  static async start(opts) {
    const b = new Balance(opts);
    await b.ready(opts.workers);
    return b;
  }

  async healthz() {
    const r = await getFrom(this.adminPort, '/healthz', { timeoutMs: 2000 });
    return { ...JSON.parse(r.body), http: r.status };
  }

  // Every slot's child has started (the master's /healthz on the admin port).
  async ready(workers, timeoutMs = 15000) {
    await waitFor(`balance on port ${this.port} ready`, async () => {
      if (this.exit) {
        throw new Error(`steerchat balance exited (${JSON.stringify(this.exit)}):\n${this.log}`);
      }
      try {
        const h = await this.healthz();
        return h.http === 200 && h.serving === workers;
      } catch {
        return false;
      }
    }, timeoutMs).catch((e) => {
      throw new Error(`${e.message}\n${this.log}`);
    });
  }

  // SIGTERM; resolves the exit status. Throws on a sanitizer report in the master's output.
  async stop(timeoutMs = 10000) {
    if (!this.exit) this.proc.kill('SIGTERM');
    let t;
    const res = await Promise.race([this.exited,
                                    new Promise((r) => (t = setTimeout(() => r('timeout'), timeoutMs)))]);
    clearTimeout(t);
    if (res === 'timeout') {
      this.proc.kill('SIGKILL');
      await this.exited;
      throw new Error(`steerchat balance did not stop within ${timeoutMs} ms:\n${this.log}`);
    }
    await Promise.race([this.closed, sleep(2000)]);
    fs.rmSync(this.runDir, { recursive: true, force: true });
    if (sanitizerReport(this.log)) throw new Error(`sanitizer report:\n${this.log}`);
    return res;
  }
}

// A real redis-server on `port` (in the test's network namespace), no persistence.
export async function startRedis(port) {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
                                      '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  proc.on('error', (e) => (log += String(e)));
  await waitFor(`redis-server on port ${port}`, () => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.end();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  }), 10000).catch((e) => {
    throw new Error(`${e.message} (is redis-server installed? scripts/test installs it):\n${log}`);
  });
  return { proc, stop: () => new Promise((r) => { proc.once('exit', r); proc.kill('SIGTERM'); }) };
}
