// WebSocket conformance of GET /echo against a real steerchat (2 workers), with clients that do
// not share code with the server: raw frames built here (lib/client.mjs) and the npm `ws`
// library. Cases follow the Autobahn testsuite's groups (1 framing, 2 ping/pong, 3 reserved bits,
// 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close, 9 limits) plus the opening handshake.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/run-conformance.mjs
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { OP, RawClient, closeCodeOf, closePayload, frame, httpExchange, upgradeRequest }
  from './lib/client.mjs';
import { Server, get } from './lib/server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'ws', 'package.json'))) {
  throw new Error(`${here}/node_modules is missing: run tests/e2e/setup.sh (npm ci) first`);
}
const { default: WebSocket } = await import('ws');

const MAX_MESSAGE = 1 << 20;  // ws::kDefaultMaxMessageSize, the worker's default limit

let server;
before(async () => {
  server = await Server.start({ workers: 2 });
});
after(async () => {
  if (server) await server.stop();
});

const connect = (opts) => RawClient.connect(server.port, opts);

// Sends `frames` on a fresh connection and expects a Close with `code`.
async function expectFailure(code, ...frames) {
  const c = await connect();
  try {
    c.send(...frames);
    await c.expectClose(code);
  } finally {
    c.destroy();
  }
}

async function echoRoundTrip(c, opcode, payload) {
  c.send({ opcode, payload });
  const f = await c.frame(5000);
  assert.equal(f.opcode, opcode);
  assert.equal(f.fin, true);
  assert.equal(f.payload.length, payload.length);
  assert.ok(f.payload.equals(Buffer.from(payload)), 'echoed payload differs');
}

async function closeCleanly(c) {
  c.send({ opcode: OP.close, payload: closePayload(1000) });
  await c.expectClose(1000);
  c.destroy();
}

describe('handshake', () => {
  test('101 with the right Sec-WebSocket-Accept', async () => {
    const c = await connect();
    await closeCleanly(c);
  });

  test('frames sent right behind the upgrade request are not lost', async () => {
    const early = Buffer.concat([frame({ opcode: OP.text, payload: 'early' }),
                                 frame({ opcode: OP.text, payload: 'bird' })]);
    const c = await connect({ early });
    assert.equal((await c.frame()).payload.toString(), 'early');
    assert.equal((await c.frame()).payload.toString(), 'bird');
    await closeCleanly(c);
  });

  test('wrong Sec-WebSocket-Version -> 426 naming version 13', async () => {
    const key = crypto.randomBytes(16).toString('base64');
    const r = await httpExchange(server.port, upgradeRequest(server.port, { key, version: '8' }));
    assert.equal(r.status, 426);
    assert.equal(r.headers['sec-websocket-version'], '13');
  });

  test('missing Sec-WebSocket-Key -> 400', async () => {
    const r = await httpExchange(server.port,
                                 upgradeRequest(server.port, { omit: ['Sec-WebSocket-Key'] }));
    assert.equal(r.status, 400);
    assert.match(r.body, /Sec-WebSocket-Key/);
  });

  test('malformed Sec-WebSocket-Key -> 400', async () => {
    const r = await httpExchange(server.port, upgradeRequest(server.port, { key: 'short' }));
    assert.equal(r.status, 400);
  });

  test('foreign Origin -> 403; own origin accepted', async () => {
    const key = crypto.randomBytes(16).toString('base64');
    const r = await httpExchange(
        server.port, upgradeRequest(server.port, { key, origin: 'http://evil.example' }));
    assert.equal(r.status, 403);
    assert.match(r.body, /origin/);
    const c = await connect({ origin: `http://127.0.0.1:${server.port}` });
    await closeCleanly(c);
  });

  test('GET /echo without upgrade headers -> 426 Upgrade Required', async () => {
    const r = await get(server.port, '/echo');
    assert.equal(r.status, 426);
    assert.equal(r.headers.upgrade, 'websocket');
    assert.equal(r.headers['sec-websocket-version'], '13');
  });

  test('upgrade on a path that is not a WebSocket route -> 404', async () => {
    const key = crypto.randomBytes(16).toString('base64');
    const r = await httpExchange(server.port,
                                 upgradeRequest(server.port, { key, path: '/nowhere' }));
    assert.equal(r.status, 404);
  });

  test('unmasked client frame -> 1002', async () => {
    await expectFailure(1002, frame({ opcode: OP.text, payload: 'naked', mask: false }));
  });
});

describe('1 framing', () => {
  for (const len of [0, 125, 126, 127, 65535, 65536]) {
    test(`text and binary of ${len} bytes are echoed`, async () => {
      const c = await connect();
      await echoRoundTrip(c, OP.text, Buffer.alloc(len, 'x'));
      await echoRoundTrip(c, OP.binary, crypto.randomBytes(len));
      await closeCleanly(c);
    });
  }

  test('a frame written one byte at a time is echoed', async () => {
    const c = await connect();
    const bytes = frame({ opcode: OP.binary, payload: crypto.randomBytes(300) });
    for (const b of bytes) {
      c.sock.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    const f = await c.frame();
    assert.equal(f.opcode, OP.binary);
    assert.ok(f.payload.equals(bytes.subarray(8).map((x, i) => x ^ bytes[4 + (i & 3)])));
    await closeCleanly(c);
  });

  test('100 frames in one write are echoed in order', async () => {
    const c = await connect();
    const frames = [];
    for (let i = 0; i < 100; i++) frames.push({ opcode: OP.text, payload: `message ${i}` });
    c.send(...frames);
    for (let i = 0; i < 100; i++) assert.equal((await c.frame()).payload.toString(), `message ${i}`);
    await closeCleanly(c);
  });

  test('the npm ws client: text, binary, ping and a clean close', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/echo`);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const next = () => new Promise((r) => ws.once('message', (data, isBinary) => r({ data, isBinary })));
    let m = next();
    ws.send('héllo wörld');
    assert.deepEqual(await m, { data: Buffer.from('héllo wörld'), isBinary: false });
    const bin = crypto.randomBytes(70000);
    m = next();
    ws.send(bin);
    const got = await m;
    assert.equal(got.isBinary, true);
    assert.ok(got.data.equals(bin));
    const pong = new Promise((r) => ws.once('pong', r));
    ws.ping(Buffer.from('ping!'));
    assert.equal((await pong).toString(), 'ping!');
    const closed = new Promise((r) => ws.once('close', (code, reason) => r({ code, reason })));
    ws.close(1000, 'done');
    assert.equal((await closed).code, 1000);
  });
});

describe('2 ping/pong', () => {
  test('ping with a 125-byte payload gets an identical pong', async () => {
    const c = await connect();
    const payload = crypto.randomBytes(125);
    c.send({ opcode: OP.ping, payload });
    const f = await c.frame();
    assert.equal(f.opcode, OP.pong);
    assert.ok(f.payload.equals(payload));
    await closeCleanly(c);
  });

  test('empty ping gets an empty pong; 10 pings get 10 pongs in order', async () => {
    const c = await connect();
    c.send({ opcode: OP.ping });
    const f = await c.frame();
    assert.equal(f.opcode, OP.pong);
    assert.equal(f.payload.length, 0);
    const pings = [];
    for (let i = 0; i < 10; i++) pings.push({ opcode: OP.ping, payload: `p${i}` });
    c.send(...pings);
    for (let i = 0; i < 10; i++) {
      const p = await c.frame();
      assert.equal(p.opcode, OP.pong);
      assert.equal(p.payload.toString(), `p${i}`);
    }
    await closeCleanly(c);
  });

  test('unsolicited pong is ignored', async () => {
    const c = await connect();
    c.send({ opcode: OP.pong, payload: 'unasked' });
    await c.expectSilence(100);
    await echoRoundTrip(c, OP.text, Buffer.from('after pong'));
    await closeCleanly(c);
  });

  test('ping with a 126-byte payload -> 1002', async () => {
    await expectFailure(1002, frame({ opcode: OP.ping, payload: Buffer.alloc(126, 1) }));
  });
});

describe('3 reserved bits', () => {
  for (const rsv of [4, 2, 1, 7]) {
    test(`RSV=${rsv} on a text frame -> 1002 (after echoing the valid frame before it)`,
         async () => {
           const c = await connect();
           c.send({ opcode: OP.text, payload: 'valid' },
                  { opcode: OP.text, payload: 'reserved', rsv },
                  { opcode: OP.ping, payload: 'never answered' });
           assert.equal((await c.frame()).payload.toString(), 'valid');
           await c.expectClose(1002);
           c.destroy();
         });
  }
  test('RSV on a ping -> 1002', async () => {
    await expectFailure(1002, frame({ opcode: OP.ping, payload: 'x', rsv: 4 }));
  });
});

describe('4 opcodes', () => {
  for (const opcode of [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]) {
    test(`opcode ${opcode} -> 1002`, async () => {
      await expectFailure(1002, frame({ opcode, payload: 'reserved' }));
    });
  }
});

describe('5 fragmentation', () => {
  test('text in three fragments (one empty) with pings between is one message', async () => {
    const c = await connect();
    c.send({ opcode: OP.text, payload: 'frag', fin: false },
           { opcode: OP.ping, payload: 'between' },
           { opcode: OP.cont, payload: '', fin: false },
           { opcode: OP.ping, payload: 'again' },
           { opcode: OP.cont, payload: 'mented' });
    const p1 = await c.frame();
    assert.equal(p1.opcode, OP.pong);
    assert.equal(p1.payload.toString(), 'between');
    assert.equal((await c.frame()).payload.toString(), 'again');
    const m = await c.frame();
    assert.equal(m.opcode, OP.text);
    assert.equal(m.payload.toString(), 'fragmented');
    await closeCleanly(c);
  });

  test('binary fragmented into 1-byte pieces is one message', async () => {
    const c = await connect();
    const data = crypto.randomBytes(64);
    const frames = [...data].map((b, i) => ({
      opcode: i === 0 ? OP.binary : OP.cont, payload: Buffer.from([b]), fin: i === data.length - 1,
    }));
    c.send(...frames);
    const m = await c.frame();
    assert.equal(m.opcode, OP.binary);
    assert.ok(m.payload.equals(data));
    await closeCleanly(c);
  });

  test('continuation without a start -> 1002', async () => {
    await expectFailure(1002, frame({ opcode: OP.cont, payload: 'orphan' }));
  });

  test('fragmented ping -> 1002', async () => {
    await expectFailure(1002, frame({ opcode: OP.ping, payload: 'a', fin: false }),
                        frame({ opcode: OP.cont, payload: 'b' }));
  });

  test('new text frame inside a fragmented message -> 1002', async () => {
    await expectFailure(1002, frame({ opcode: OP.text, payload: 'one', fin: false }),
                        frame({ opcode: OP.text, payload: 'two' }));
  });
});

describe('6 UTF-8', () => {
  const valid = ['κόσμε', 'Hello-µ@ßöäüàá-UTF-8!!', '\u{1F600} \u{10FFFF} \u{FFFF} \u{0800}'];
  for (const s of valid) {
    test(`valid text is echoed: ${s}`, async () => {
      const c = await connect();
      await echoRoundTrip(c, OP.text, Buffer.from(s, 'utf8'));
      await closeCleanly(c);
    });
  }

  test('valid text split inside code points across fragments is echoed', async () => {
    const c = await connect();
    const bytes = Buffer.from('κόσμε \u{1F600}', 'utf8');
    const frames = [...bytes].map((b, i) => ({
      opcode: i === 0 ? OP.text : OP.cont, payload: Buffer.from([b]), fin: i === bytes.length - 1,
    }));
    c.send(...frames);
    const m = await c.frame();
    assert.equal(m.payload.toString('utf8'), 'κόσμε \u{1F600}');
    await closeCleanly(c);
  });

  const invalid = {
    'surrogate U+D800': Buffer.from('cebae1bdb9cf83cebcceb5eda080656469746564', 'hex'),
    'overlong /': Buffer.from('c0af', 'hex'),
    'above U+10FFFF': Buffer.from('f4908080', 'hex'),
    'byte FF': Buffer.from('41ff42', 'hex'),
    'truncated at the end': Buffer.from('41ce', 'hex'),
  };
  for (const [name, payload] of Object.entries(invalid)) {
    test(`invalid text (${name}) -> 1007`, async () => {
      await expectFailure(1007, frame({ opcode: OP.text, payload }));
    });
  }

  test('invalid sequence in a middle fragment -> 1007 before the message ends', async () => {
    const c = await connect();
    c.send({ opcode: OP.text, payload: 'κόσμε', fin: false },
           { opcode: OP.cont, payload: Buffer.from('f4908080', 'hex'), fin: false });
    // The final fragment is never sent: the server must fail fast.
    await c.expectClose(1007);
    c.destroy();
  });
});

describe('7 close handling', () => {
  test('close 1000 with a reason is answered with 1000, then TCP close', async () => {
    const c = await connect();
    c.send({ opcode: OP.close, payload: closePayload(1000, 'goodbye') });
    await c.expectClose(1000);
    c.destroy();
  });

  test('empty close is answered with an empty close', async () => {
    const c = await connect();
    c.send({ opcode: OP.close });
    await c.expectClose(1005);
    c.destroy();
  });

  test('close with a 123-byte reason is answered', async () => {
    const c = await connect();
    c.send({ opcode: OP.close, payload: closePayload(1000, 'r'.repeat(123)) });
    await c.expectClose(1000);
    c.destroy();
  });

  for (const code of [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000,
                      4999]) {
    test(`valid close code ${code} is echoed`, async () => {
      const c = await connect();
      c.send({ opcode: OP.close, payload: closePayload(code) });
      await c.expectClose(code);
      c.destroy();
    });
  }

  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]) {
    test(`invalid close code ${code} -> 1002`, async () => {
      await expectFailure(1002, frame({ opcode: OP.close, payload: closePayload(code) }));
    });
  }

  test('1-byte close payload -> 1002', async () => {
    await expectFailure(1002, frame({ opcode: OP.close, payload: Buffer.from([0x03]) }));
  });

  test('close payload of 126 bytes -> 1002', async () => {
    await expectFailure(1002, frame({ opcode: OP.close, payload: closePayload(1000, 'x'.repeat(124)) }));
  });

  test('close reason that is not UTF-8 -> 1007', async () => {
    await expectFailure(1007, frame({ opcode: OP.close,
                                      payload: closePayload(1000, Buffer.from('c0af', 'hex')) }));
  });

  test('data after the close is ignored', async () => {
    const c = await connect();
    c.send({ opcode: OP.close, payload: closePayload(1000) },
           { opcode: OP.text, payload: 'after close' },
           { opcode: OP.ping, payload: 'after close' });
    const f = await c.expectClose(1000);  // also asserts nothing else arrived
    assert.equal(closeCodeOf(f), 1000);
    c.destroy();
  });

  test('a message in progress is dropped by the close', async () => {
    const c = await connect();
    c.send({ opcode: OP.text, payload: 'never', fin: false },
           { opcode: OP.close, payload: closePayload(1000) });
    await c.expectClose(1000);
    c.destroy();
  });
});

describe('9 limits', () => {
  test(`a ${MAX_MESSAGE}-byte binary message (the limit) is echoed`, async () => {
    const c = await connect();
    await echoRoundTrip(c, OP.binary, crypto.randomBytes(MAX_MESSAGE));
    await closeCleanly(c);
  });

  test('a 1 MiB-ish text message in 64 KiB fragments is echoed', async () => {
    const c = await connect();
    const text = Buffer.alloc(MAX_MESSAGE - 1000, 'é').subarray(0, MAX_MESSAGE - 1000);
    const chunks = [];
    for (let off = 0; off < text.length; off += 65536) {
      chunks.push({ opcode: off === 0 ? OP.text : OP.cont, payload: text.subarray(off, off + 65536),
                    fin: off + 65536 >= text.length });
    }
    c.send(...chunks);
    const m = await c.frame(10000);
    assert.equal(m.opcode, OP.text);
    assert.ok(m.payload.equals(text));
    await closeCleanly(c);
  });

  test('a message one byte over the limit -> 1009', async () => {
    await expectFailure(1009, frame({ opcode: OP.binary, payload: Buffer.alloc(MAX_MESSAGE + 1) }));
  });

  test('fragments adding up to more than the limit -> 1009', async () => {
    const half = Buffer.alloc(MAX_MESSAGE / 2 + 1, 'a');
    await expectFailure(1009, frame({ opcode: OP.text, payload: half, fin: false }),
                        frame({ opcode: OP.cont, payload: half }));
  });

  test('the npm ws client: 1 MiB round trip', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/echo`, { maxPayload: 2 * MAX_MESSAGE });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const data = crypto.randomBytes(MAX_MESSAGE);
    const got = new Promise((r) => ws.once('message', r));
    ws.send(data);
    assert.ok((await got).equals(data));
    const closed = new Promise((r) => ws.once('close', r));
    ws.close(1000);
    assert.equal(await closed, 1000);
  });
});

describe('configured limits', () => {
  test('--ws-max-message 4096: 4096 bytes echoed, 4097 -> 1009', async () => {
    const small = await Server.start({ workers: 1, args: ['--ws-max-message', '4096'] });
    try {
      const c = await RawClient.connect(small.port);
      await echoRoundTrip(c, OP.binary, Buffer.alloc(4096, 7));
      c.send({ opcode: OP.binary, payload: Buffer.alloc(4097, 7) });
      await c.expectClose(1009);
      c.destroy();
    } finally {
      await small.stop();
    }
  });

  test('--ws-ping-interval-ms/--ws-ping-timeout-ms: a silent client is pinged, then dropped',
       async () => {
    const quick = await Server.start({
      workers: 1, args: ['--ws-ping-interval-ms', '200', '--ws-ping-timeout-ms', '200'] });
    try {
      const c = await RawClient.connect(quick.port);
      const ping = await c.frame(3000);
      assert.equal(ping.opcode, OP.ping);
      await c.expectEnd(3000);
      c.destroy();
    } finally {
      await quick.stop();
    }
  });
});

describe('metrics and shutdown', () => {
  test('/metrics reports the WebSocket counters', async () => {
    const r = await get(server.port, '/metrics');
    assert.equal(r.status, 200);
    for (const name of ['steerchat_ws_connections_open', 'steerchat_ws_messages_in_total',
                        'steerchat_ws_queue_overflows_total', 'steerchat_ws_protocol_errors_total']) {
      assert.match(r.body, new RegExp(`^${name}\\{worker="\\d+"\\} \\d+$`, 'm'), name);
    }
    // Every worker's series, whichever worker answered: together they served the connections.
    const opened = [...r.body.matchAll(/^steerchat_ws_connections_total\{worker="\d+"\} (\d+)$/gm)];
    assert.equal(opened.length, 2, 'both workers in one scrape');
    assert.ok(opened.reduce((n, m) => n + Number(m[1]), 0) > 0, 'WebSocket connections served');
  });

  test('SIGTERM closes open WebSocket connections with 1001, then exits 0', async () => {
    const clients = [];
    for (let i = 0; i < 4; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/echo`);
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      clients.push(new Promise((r) => ws.once('close', (code) => r(code))));
    }
    const exit = server.stop();
    const codes = await Promise.all(clients);
    assert.deepEqual(codes, [1001, 1001, 1001, 1001]);
    assert.deepEqual(await exit, { code: 0, signal: null }, server.log);
  });
});
