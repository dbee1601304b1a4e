// Replays one Engine.IO flood against a fresh one-worker steerchat and prints the worker's RSS
// before and after, with the limit counters (the figures of docs/reliability.md). Not a test.
//   node tests/e2e/flood-replay.mjs BINARY handshake|logins COUNT [server options...]
//     handshake  COUNT polling handshakes from one address, never polled
//     logins     COUNT Socket.IO sessions (500 per address) that log in and never poll
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [bin, kind, countArg, ...extra] = process.argv.slice(2);
if (!bin || !['handshake', 'logins'].includes(kind) || !(Number(countArg) > 0)) {
  console.error('usage: node flood-replay.mjs BINARY handshake|logins COUNT [server options...]');
  process.exit(2);
}
process.env.STEERCHAT_BINARY = path.resolve(bin);
const lib = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lib');
const { Server } = await import(path.join(lib, 'server.mjs'));
const { workerRss, handshakeFlood, unpolledLogins } = await import(path.join(lib, 'floods.mjs'));
const { metricsFrom } = await import(path.join(lib, 'sio-raw.mjs'));

const count = Number(countArg);
const server = await Server.start({ workers: 1, args: extra });
const ip = '127.5.0.1';
try {
  const before = await workerRss(server.port, ip);
  const t0 = Date.now();
  let result;
  if (kind === 'handshake') {
    result = await handshakeFlood(server.port, ip, count, 32);
  } else {
    const ips = Array.from({ length: Math.ceil(count / 500) }, (_, i) => `127.5.1.${i + 1}`);
    const { counts } = await unpolledLogins(server.port, ips, count, 'flood', 32);
    result = { counts };
  }
  const seconds = (Date.now() - t0) / 1000;
  const after = await workerRss(server.port, ip);
  const m = await metricsFrom(server.port, ip);
  const limits = Object.fromEntries(Object.entries(m).filter(([k]) =>
    /eio_(sessions|refused|first_poll|queue|queued)|chat_sessions/.test(k)));
  console.log(JSON.stringify({
    kind, count, seconds, http: result.counts,
    rss_mib: { before: +(before.kib / 1024).toFixed(1), after: +(after.kib / 1024).toFixed(1) },
    metrics: limits,
  }, null, 1));
} finally {
  await server.stop();
}
