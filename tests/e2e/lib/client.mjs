// A raw WebSocket client for conformance tests: it builds every frame byte by byte (so it can
// send what a well-behaved library never would: reserved bits, bad opcodes, unmasked frames,
// invalid UTF-8) and parses the server's frames strictly.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';

export const OP = { cont: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function acceptKey(key) {
  return crypto.createHash('sha1').update(key + GUID).digest('base64');
}

// One frame. `rsv` is the 3-bit RSV field (4 = RSV1, 2 = RSV2, 1 = RSV3); `mask: false` makes
// the frame a client protocol violation.
export function frame({ opcode, payload = Buffer.alloc(0), fin = true, rsv = 0, mask = true }) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = data.length;
  let header;
  if (len < 126) {
    header = Buffer.alloc(2);
    header[1] = len;
  } else if (len <= 0xffff) {
    header = Buffer.alloc(4);
    header[1] = 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  header[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
  if (!mask) return Buffer.concat([header, data]);
  header[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const masked = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([header, key, masked]);
}

export function closePayload(code, reason = '') {
  const r = Buffer.isBuffer(reason) ? reason : Buffer.from(reason, 'utf8');
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

export function closeCodeOf(f) {
  return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
}

// Reads a whole HTTP response from a socket that stays open (Content-Length) or closes.
function readHttpResponse(sock, timeoutMs) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error('timed out waiting for an HTTP response')),
                             timeoutMs);
    const finish = (err, value) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onError);
      if (err) reject(err);
      else resolve(value);
    };
    const tryParse = (ended) => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (ended) finish(new Error(`connection closed mid-response: ${buf.toString('latin1')}`));
        return;
      }
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const m = /^HTTP\/1\.1 (\d{3}) ?(.*)$/.exec(lines[0]);
      if (!m) return finish(new Error(`not an HTTP/1.1 status line: ${lines[0]}`));
      const headers = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const status = Number(m[1]);
      let bodyLen = 0;
      if (status !== 101) {
        if (headers['content-length'] !== undefined) bodyLen = Number(headers['content-length']);
        else if (!ended) return;  // read to EOF
        else bodyLen = buf.length - end - 4;
      }
      if (buf.length < end + 4 + bodyLen) {
        if (ended) finish(new Error('connection closed mid-body'));
        return;
      }
      const body = buf.subarray(end + 4, end + 4 + bodyLen).toString('utf8');
      const rest = buf.subarray(end + 4 + bodyLen);
      finish(null, { status, headers, body, rest });
    };
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      tryParse(false);
    };
    const onEnd = () => tryParse(true);
    const onError = (e) => finish(e);
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', onError);
  });
}

function connectSocket(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.setNoDelay(true);
    sock.once('connect', () => {
      sock.off('error', reject);
      resolve(sock);
    });
    sock.once('error', reject);
  });
}

export function upgradeRequest(port, { path = '/echo', key, version = '13', origin, omit = [],
                                       extra = '' } = {}) {
  const headers = [
    ['Host', `127.0.0.1:${port}`],
    ['Upgrade', 'websocket'],
    ['Connection', 'Upgrade'],
    ['Sec-WebSocket-Key', key],
    ['Sec-WebSocket-Version', version],
  ];
  if (origin) headers.push(['Origin', origin]);
  let req = `GET ${path} HTTP/1.1\r\n`;
  for (const [k, v] of headers) if (!omit.includes(k)) req += `${k}: ${v}\r\n`;
  return req + extra + '\r\n';
}

// Sends a raw HTTP request and returns the response (for refused upgrades).
export async function httpExchange(port, request, timeoutMs = 3000) {
  const sock = await connectSocket(port);
  try {
    const pending = readHttpResponse(sock, timeoutMs);
    sock.write(request);
    return await pending;
  } finally {
    sock.destroy();
  }
}

export class RawClient {
  // Opens a WebSocket to `path` (checks the 101 and Sec-WebSocket-Accept). `early` bytes are sent
  // in the same write as the upgrade request, before the 101 arrives.
  static async connect(port, { path = '/echo', origin, early } = {}) {
    const sock = await connectSocket(port);
    const key = crypto.randomBytes(16).toString('base64');
    const pending = readHttpResponse(sock, 3000);
    const req = Buffer.from(upgradeRequest(port, { path, key, origin }), 'latin1');
    sock.write(early ? Buffer.concat([req, early]) : req);
    const res = await pending;
    if (res.status !== 101) {
      sock.destroy();
      throw new Error(`upgrade refused: ${res.status} ${res.body}`);
    }
    assert.equal(res.headers.upgrade?.toLowerCase(), 'websocket');
    assert.match(res.headers.connection ?? '', /upgrade/i);
    assert.equal(res.headers['sec-websocket-accept'], acceptKey(key));
    return new RawClient(sock, res.rest);
  }

  constructor(sock, initial) {
    this.sock = sock;
    this.buf = Buffer.from(initial);
    this.frames = [];
    this.waiters = [];
    this.ended = false;
    this.error = null;
    this.endWaiters = [];
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.#parse();
    });
    sock.on('end', () => {
      this.ended = true;
      this.#wake();
    });
    sock.on('close', () => {
      this.ended = true;
      this.#wake();
    });
    sock.on('error', (e) => {
      this.error = e;
      this.ended = true;
      this.#wake();
    });
    this.#parse();
  }

  #parse() {
    for (;;) {
      const b = this.buf;
      if (b.length < 2) break;
      assert.equal(b[1] & 0x80, 0, 'server frames must not be masked');
      assert.equal(b[0] & 0x70, 0, 'server frames must not set RSV bits');
      let len = b[1] & 0x7f;
      let pos = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        pos = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        pos = 10;
      }
      if (b.length < pos + len) break;
      this.frames.push({
        fin: (b[0] & 0x80) !== 0,
        opcode: b[0] & 0x0f,
        payload: Buffer.from(b.subarray(pos, pos + len)),
      });
      this.buf = b.subarray(pos + len);
    }
    this.#wake();
  }

  #wake() {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w();
  }

  #changed() {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  send(...frames) {
    this.sock.write(Buffer.concat(frames.map((f) => (Buffer.isBuffer(f) ? f : frame(f)))));
  }

  // The next frame from the server; fails on timeout or if the connection ends first.
  async frame(timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.frames.length) return this.frames.shift();
      if (this.ended) throw new Error('connection ended while waiting for a frame');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame from the server within ${timeoutMs} ms`);
      let t;
      await Promise.race([this.#changed(), new Promise((r) => (t = setTimeout(r, left)))]);
      clearTimeout(t);
    }
  }

  // Expects the next frame to be a Close with `code` (1005: empty payload), then the server to
  // close the TCP connection. Returns the Close frame.
  async expectClose(code, timeoutMs = 3000) {
    const f = await this.frame(timeoutMs);
    assert.equal(f.opcode, OP.close,
                 `expected a Close ${code}, got opcode ${f.opcode} (${f.payload.length} bytes)`);
    if (code === 1005) assert.equal(f.payload.length, 0, 'expected an empty Close payload');
    else assert.equal(closeCodeOf(f), code, `Close code (reason: "${f.payload.subarray(2)}")`);
    await this.expectEnd(timeoutMs);
    return f;
  }

  // Expects the server to close the TCP connection (after at most `timeoutMs`).
  async expectEnd(timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the server did not close the TCP connection in ${timeoutMs} ms`);
      let t;
      await Promise.race([this.#changed(), new Promise((r) => (t = setTimeout(r, left)))]);
      clearTimeout(t);
    }
    assert.equal(this.frames.length, 0, 'unexpected frames before the end');
  }

  // Expects no frame within `ms`.
  async expectSilence(ms) {
    await new Promise((r) => setTimeout(r, ms));
    assert.equal(this.frames.length, 0, 'unexpected frame from the server');
  }

  destroy() {
    this.sock.destroy();
  }
}
