// Starts a real steerchat (the binary named by STEERCHAT_BINARY) on a free loopback port.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';

export function binaryPath() {
  const bin = process.env.STEERCHAT_BINARY;
  if (!bin) {
    throw new Error('STEERCHAT_BINARY is not set: point it at the built steerchat binary ' +
                    '(ctest sets it; by hand: STEERCHAT_BINARY=build/steerchat node --test ...)');
  }
  if (!fs.existsSync(bin)) throw new Error(`STEERCHAT_BINARY=${bin} does not exist (build first)`);
  return bin;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// `ca` (PEM): over HTTPS, trusting that CA.
export function get(port, path, ca) {
  return new Promise((resolve, reject) => {
    const req = (ca ? https : http).get({ host: '127.0.0.1', port, path, agent: false,
                                          ...(ca ? { ca } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(2000, () => req.destroy(new Error(`GET ${path} timed out`)));
  });
}

// Steering: root can load the BPF program; anyone else runs plain SO_REUSEPORT.
// STEERCHAT_STEERING overrides.
export function steeringMode() {
  if (process.env.STEERCHAT_STEERING) return process.env.STEERCHAT_STEERING;
  return process.getuid && process.getuid() === 0 ? 'bpf' : 'kernel';
}

// A report of AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer (a sanitizer build:
// -DSTEERCHAT_SANITIZE=address,undefined). A worker that dies of one is respawned by the master and
// the clients may never notice, so the server's own output is what tells.
const SANITIZER_REPORT = /ERROR: (?:Address|Leak)Sanitizer|: runtime error: |SUMMARY: \w+Sanitizer/;

export function sanitizerReport(log) {
  return SANITIZER_REPORT.test(log);
}

export class Server {
  // `steering`: 'bpf' or 'kernel' (default: steeringMode()). `wrap`: a command that runs the
  // binary (e.g. ['prlimit', '--nofile=4096:4096']). `ca` (PEM): the server speaks TLS (args
  // name its --tls-cert and --tls-key) with a certificate of this CA.
  // `bind`: the listen address; `port`: a fixed port (a restart on the same one), else a free one.
  static async start({ workers = 2, args = [], steering = steeringMode(), wrap = [], ca,
                       bind = '127.0.0.1', port: fixedPort } = {}) {
    const bin = binaryPath();
    let lastError;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = fixedPort ?? await freePort();
      const s = new Server(bin, port, wrap, [
        '--port', String(port), '--workers', String(workers), '--bind', bind,
        '--steering', steering, ...args,
      ]);
      s.ca = ca;
      try {
        await s.#ready();
        return s;
      } catch (e) {
        lastError = e;
        await s.stop();
      }
    }
    throw lastError;
  }

  constructor(bin, port, wrap, args) {
    this.port = port;
    this.log = '';
    this.proc = wrap.length ? spawn(wrap[0], [...wrap.slice(1), bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
                            : spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout.on('data', (d) => (this.log += d));
    this.proc.stderr.on('data', (d) => (this.log += d));
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve({ code, signal }));
    });
    // 'close': the output pipes are drained too (a report may still be in flight at 'exit').
    this.closed = new Promise((resolve) => this.proc.on('close', resolve));
  }

  async #ready() {
    const deadline = Date.now() + 10000;
    let exit = null;
    this.exited.then((e) => (exit = e));
    while (Date.now() < deadline) {
      if (exit) {
        throw new Error(`steerchat exited (code ${exit.code}, signal ${exit.signal}) before ` +
                        `serving:\n${this.log}`);
      }
      try {
        const r = await get(this.port, '/healthz', this.ca);
        if (r.status === 200) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`steerchat did not answer /healthz within 10 s:\n${this.log}`);
  }

  // SIGTERM; returns the exit status (SIGKILL after `timeoutMs`). Throws if the server (master or
  // any worker, over its whole life) wrote a sanitizer report, showing its output.
  async stop(timeoutMs = 8000) {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
      const res = await this.exited;
      await this.#checkSanitizers();
      return res;
    }
    this.proc.kill('SIGTERM');
    let t;
    const timeout = new Promise((r) => (t = setTimeout(() => r('timeout'), timeoutMs)));
    const res = await Promise.race([this.exited, timeout]);
    clearTimeout(t);
    if (res === 'timeout') {
      this.proc.kill('SIGKILL');
      await this.exited;
      throw new Error(`steerchat did not stop within ${timeoutMs} ms of SIGTERM:\n${this.log}`);
    }
    await this.#checkSanitizers();
    return res;
  }

  async #checkSanitizers() {
    let t;
    await Promise.race([this.closed, new Promise((r) => (t = setTimeout(r, 2000)))]);
    clearTimeout(t);
    if (sanitizerReport(this.log)) {
      throw new Error(`steerchat (pid ${this.proc.pid}) wrote a sanitizer report:\n${this.log}`);
    }
  }
}
