// Floods replayed against a worker (issue 9): many Engine.IO handshakes from one address over
// keep-alive connections, logged-in Socket.IO sessions that never poll, and the worker's memory.
import fs from 'node:fs';
import http from 'node:http';

import { healthzFrom } from './chat-client.mjs';

// The resident memory of the worker that serves `ip`, in KiB (and its pid).
export async function workerRss(port, ip) {
  const { pid } = await healthzFrom(port, ip);
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return { pid, kib: Number(m[1]) };
}

// `total` requests made by `make(i)` (each resolving to { status, body }) with `parallel` in
// flight; returns the count of each status and one body per status.
export async function runMany(total, parallel, make) {
  const counts = {};
  const bodies = {};
  let next = 0;
  const lane = async () => {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      let r;
      try {
        r = await make(i);
      } catch (e) {
        r = { status: 'error', body: e.message };
      }
      counts[r.status] = (counts[r.status] ?? 0) + 1;
      bodies[r.status] ??= r.body;
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
  return { counts, bodies };
}

// An HTTP request through `agent`; resolves to { status, body }.
export function agentRequest(agent, port, { method = 'GET', path, body, headers = {} }) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error(`${method} ${path} timed out`)));
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

// A keep-alive agent whose connections leave from `ip`.
export function keepAliveAgent(ip, maxSockets = 16) {
  return new http.Agent({ keepAlive: true, maxSockets, localAddress: ip });
}

// `count` Engine.IO 4 polling handshakes from `ip`, never polled. Returns runMany's result.
export async function handshakeFlood(port, ip, count, parallel = 16) {
  const agent = keepAliveAgent(ip, parallel);
  try {
    return await runMany(count, parallel, () =>
      agentRequest(agent, port, { path: '/socket.io/?EIO=4&transport=polling' }));
  } finally {
    agent.destroy();
  }
}

// Socket.IO sessions that log in and never poll: for each, a polling handshake, then one POST
// with the namespace CONNECT and `createsession` (name `${prefix}${i}`). The i-th session leaves
// from ips[i % ips.length]. Returns { sids, counts } (counts: HTTP status of the POSTs).
export async function unpolledLogins(port, ips, count, prefix, parallel = 16) {
  const agents = ips.map((ip) => keepAliveAgent(ip, Math.max(2, Math.ceil(parallel / ips.length))));
  const sids = [];
  try {
    const res = await runMany(count, parallel, async (i) => {
      const agent = agents[i % agents.length];
      const hs = await agentRequest(agent, port, { path: '/socket.io/?EIO=4&transport=polling' });
      if (hs.status !== 200) return hs;
      const sid = JSON.parse(hs.body.slice(1)).sid;
      sids.push(sid);
      const body = `40\x1e42${JSON.stringify(['createsession', { email: `${prefix}${i}` }])}`;
      return agentRequest(agent, port, {
        method: 'POST', path: `/socket.io/?EIO=4&transport=polling&sid=${sid}`, body,
        headers: { 'content-type': 'text/plain;charset=UTF-8' },
      });
    });
    return { sids, counts: res.counts, bodies: res.bodies };
  } finally {
    for (const a of agents) a.destroy();
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Whether the binary is built with AddressSanitizer: its allocator keeps freed memory in a
// quarantine (up to 256 MiB), so RSS says nothing about what the server holds.
export function sanitized(binary) {
  return fs.readFileSync(binary).includes('__asan_init');
}
