// A flood from one source address, run as its own process so its CPU is not the measuring
// client's: `concurrency` connections at a time, each sending a request as soon as it is
// connected and (mode "requests") another as soon as the answer is in, forever; a connection the
// server refuses or closes is replaced at once.
//   node flood.mjs PORT ADDRESS CONCURRENCY MODE    MODE: connections | requests
// stdin: "start" / "stop" (stop closes every connection); stdout: one JSON line of counters per
// "report".
import net from 'node:net';
import readline from 'node:readline';

const [port, address, concurrencyArg, mode = 'requests'] = process.argv.slice(2);
const concurrency = Number(concurrencyArg);
const request = `GET /healthz HTTP/1.1\r\nHost: flood\r\n\r\n`;
const stats = { connects: 0, refused: 0, responses: 0, errors: 0, open: 0 };
let running = false;
const live = new Set();

function one() {
  if (!running) return;
  const sock = net.connect({ host: '127.0.0.1', port: Number(port), localAddress: address });
  live.add(sock);
  let buf = '';
  sock.setNoDelay(true);
  sock.on('connect', () => {
    sock.wasOpen = true;
    ++stats.connects;
    ++stats.open;
    sock.write(request);
  });
  sock.on('data', (d) => {
    buf += d.toString('latin1');
    // Count complete answers (each ends with its one-line JSON or text body).
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const m = /Content-Length: (\d+)/i.exec(buf.slice(0, end));
      const total = end + 4 + (m ? Number(m[1]) : 0);
      if (buf.length < total) return;
      const status = buf.slice(9, 12);
      buf = buf.slice(total);
      if (status === '429' || status === '503') {
        ++stats.refused;
        sock.destroy();  // replaced at once (on 'close')
        return;
      }
      ++stats.responses;
      if (mode === 'requests') sock.write(request);
      else sock.end();
    }
  });
  sock.on('error', () => ++stats.errors);
  sock.on('close', () => {
    if (sock.wasOpen) --stats.open;
    live.delete(sock);
    if (running) setImmediate(one);
  });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line === 'start' && !running) {
    running = true;
    // In chunks, so the loop keeps answering (reports) and connecting while it ramps up.
    let started = 0;
    const ramp = () => {
      for (let i = 0; i < 100 && started < concurrency && running; i++, started++) one();
      if (started < concurrency && running) setImmediate(ramp);
    };
    ramp();
  } else if (line === 'stop') {
    running = false;
    for (const s of live) s.destroy();
    live.clear();
  } else if (line === 'report') {
    process.stdout.write(`${JSON.stringify(stats)}\n`);
  }
});
rl.on('close', () => process.exit(0));
