// One chat across three hosts through a real redis-server (issue 13): three steerchat instances
// on this machine (own ports, pin and run directories, --host-id 1..3), each with its bridge,
// native and Socket.IO clients on all three.
//   STEERCHAT_BINARY=build/steerchat node --test tests/e2e/redis.test.mjs
// Checks: presence and member events cross hosts; every room message reaches every member on
// every host exactly once and in per-sender order; DMs cross hosts exactly once; a late joiner
// gets the same history (same ids, same order) on every host; message ids are unique.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!fs.existsSync(path.join(here, 'node_modules', 'socket.io-client', 'package.json'))) {
  throw new Error(`${here}/node_modules lacks socket.io-client: run tests/e2e/setup.sh (npm ci)`);
}
const { ChatClient } = await import('./lib/chat-client.mjs');
const { SioClient } = await import('./lib/sio-client.mjs');
const { RedisServer, Relay, startHost, killHost, metric, until } = await import('./lib/redis.mjs');

const LEASE = 1500;

async function native(host, ip, name) {
  const c = await ChatClient.connect(host.port, ip);
  const w = await c.request({ type: 'login', name }, ['welcome', 'error']);
  assert.equal(w.type, 'welcome', JSON.stringify(w));
  c.name = name;
  c.users = w.users;
  return c;
}

async function sio(host, ip, name) {
  const c = await SioClient.connect(host.port, { ip });
  c.emit('createsession', { email: name });
  await c.next('accessgranted');
  c.name = name;
  return c;
}

describe('three hosts through Redis', () => {
  let redis;
  let relay;  // host 3's link to Redis, from the second test on
  const hosts = [];
  const clients = [];
  const keep = (c) => (clients.push(c), c);
  const by = (name) => clients.find((c) => c.name === name && !c.closed);
  // Until `host`'s shared state lists `name` in `room` (a probe user joins and leaves).
  let probes = 0;
  const waitMember = async (host, name, room = 'across') => {
    const probe = keep(await native(host, `127.0.13.${90 + host.hostId}`, `probe${++probes}`));
    for (let i = 0; i < 100; i++) {
      const r = await probe.request({ type: 'join', room }, ['joined', 'error']);
      await probe.request({ type: 'leave', room }, ['left', 'error']);
      if (r.members.includes(name)) {
        probe.close();
        return;
      }
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(`${name} never a member of ${room} on host ${host.hostId}`);
  };
  // `senders` each send `n` messages to `room`, one every `gapMs`; `during()` runs meanwhile.
  // Then every client of `readers` must get every message once, in per-sender order.
  const storm = async (room, senders, readers, n, gapMs, during) => {
    const sending = (async () => {
      for (let i = 0; i < n; i++) {
        for (const c of senders) c.send({ type: 'say', room, text: `${c.name} ${room} ${i}` });
        await new Promise((r) => setTimeout(r, gapMs));
      }
    })();
    await during();
    await sending;
    const total = n * senders.length;
    for (const c of readers) {
      const got = [];
      while (got.length < total)
        got.push((await c.next((m) => m.type === 'message' && m.room === room, 15000,
                               `${room} message ${got.length + 1}/${total} for ${c.name}`)).text);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(c.take((m) => m.type === 'message' && m.room === room).length, 0,
                   `${c.name}: no duplicates`);
      for (const s of senders)
        assert.deepEqual(got.filter((t) => t.startsWith(`${s.name} `)),
                         Array.from({ length: n }, (_, i) => `${s.name} ${room} ${i}`),
                         `${c.name}: ${s.name}'s messages once each, in order`);
    }
  };

  before(async () => {
    redis = await RedisServer.start({ persist: true });
    for (const id of [1, 2, 3]) hosts.push(await startHost(id, redis.url, { lease: LEASE }));
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const h of hosts) await h.stop();
    if (relay) await relay.cut();
    if (redis) await redis.stop();
  });

  test('presence, members, room messages, DMs and history across hosts', async () => {
    // Users: amy (native, host 1), bob (Socket.IO, host 2), cat (native, host 3),
    // dan (native, host 2).
    const amy = keep(await native(hosts[0], '127.0.13.1', 'amy'));
    const bob = keep(await sio(hosts[1], '127.0.13.2', 'bob'));
    const cat = keep(await native(hosts[2], '127.0.13.3', 'cat'));
    const dan = keep(await native(hosts[1], '127.0.13.4', 'dan'));

    // Presence crosses hosts: amy hears of bob, cat and dan (each once).
    for (const n of ['bob', 'cat', 'dan'])
      await amy.next((m) => m.type === 'online' && m.name === n, 5000, `online ${n} on host 1`);
    await cat.next((m) => m.type === 'online' && m.name === 'dan', 5000, 'online dan on host 3');
    // A name held on one host is known on the others (a DM to it is accepted).
    const room = 'across';
    let j = await amy.request({ type: 'join', room }, ['joined', 'error']);
    assert.deepEqual(j.members, ['amy']);
    // Members cross hosts: cat (host 3) joins once amy's join reached host 3.
    await waitMember(hosts[2], 'amy');
    j = await cat.request({ type: 'join', room }, ['joined', 'error']);
    assert.ok(j.members.includes('amy') && j.members.includes('cat'), JSON.stringify(j.members));
    await amy.next((m) => m.type === 'member_joined' && m.name === 'cat', 5000,
                   'member_joined cat on host 1');
    const [bj] = await bob.emitAck('join', room);
    assert.ok(bj.members.includes('bob'), JSON.stringify(bj));
    j = await dan.request({ type: 'join', room }, ['joined', 'error']);
    for (const [c, others] of [[amy, ['bob', 'dan']], [cat, ['bob', 'dan']]])
      for (const n of others)
        await c.next((m) => m.type === 'member_joined' && m.name === n, 5000,
                     `member_joined ${n} on ${c.name}'s host`);
    // Everybody is in the room on every host before anyone talks.
    for (const h of hosts) for (const n of ['amy', 'bob', 'cat', 'dan']) await waitMember(h, n);

    // Concurrent room messages from three hosts, both protocols.
    const N = 20;
    const sends = [];
    for (let i = 0; i < N; i++) {
      amy.send({ type: 'say', room, text: `amy ${i}` });
      sends.push(bob.emitAck('say', { room, text: `bob ${i}` }));
      cat.send({ type: 'say', room, text: `cat ${i}` });
    }
    await Promise.all(sends);
    const total = 3 * N;
    // Native recipients: every message of the room once (their own too, as the sender's copy).
    const collect = async (c) => {
      const got = [];
      while (got.length < total)
        got.push(await c.next((m) => m.type === 'message' && m.room === room, 10000,
                              `message ${got.length + 1}/${total} for ${c.name}`));
      return got;
    };
    const collectSio = async (c) => {
      const got = [];
      while (got.length < total) {
        const [m] = await c.next('message', (x) => x.room === room, 10000);
        got.push(m);
      }
      return got;
    };
    const views = { amy: await collect(amy), cat: await collect(cat), dan: await collect(dan),
                    bob: await collectSio(bob) };
    await new Promise((r) => setTimeout(r, 300));  // anything extra would be here by now
    assert.equal(amy.take((m) => m.type === 'message').length, 0, 'amy: no duplicates');
    assert.equal(cat.take((m) => m.type === 'message').length, 0, 'cat: no duplicates');
    assert.equal(dan.take((m) => m.type === 'message').length, 0, 'dan: no duplicates');
    assert.equal(bob.take('message').length, 0, 'bob: no duplicates');
    const ids = new Map();  // text -> id, the same on every host
    for (const [who, got] of Object.entries(views)) {
      const texts = got.map((m) => m.text);
      assert.equal(new Set(texts).size, total, `${who}: each message once`);
      for (const sender of ['amy', 'bob', 'cat']) {
        const mine = texts.filter((t) => t.startsWith(`${sender} `));
        assert.deepEqual(mine, Array.from({ length: N }, (_, i) => `${sender} ${i}`),
                         `${who}: ${sender}'s messages in order`);
      }
      for (const m of got) {
        if (ids.has(m.text)) assert.equal(ids.get(m.text), m.id, `${who}: id of "${m.text}"`);
        else ids.set(m.text, m.id);
      }
    }
    assert.equal(new Set(ids.values()).size, total, 'message ids are unique across hosts');

    // DMs across hosts, both protocols, exactly once.
    amy.send({ type: 'dm', to: 'bob', text: 'amy to bob' });
    bob.emit('newMessage', { to: 'cat', message: 'bob to cat' });
    cat.send({ type: 'dm', to: 'amy', text: 'cat to amy' });
    dan.send({ type: 'dm', to: 'cat', text: 'dan to cat' });
    const [bd] = await bob.next('newMessage', (m) => m.text === 'amy to bob', 5000);
    assert.equal(bd.from, 'amy');
    const cd = await cat.next((m) => m.type === 'dm' && m.text === 'bob to cat', 5000, 'dm bob->cat');
    assert.equal(cd.from, 'bob');
    await cat.next((m) => m.type === 'dm' && m.text === 'dan to cat', 5000, 'dm dan->cat');
    const ad = await amy.next((m) => m.type === 'dm' && m.text === 'cat to amy', 5000, 'dm cat->amy');
    assert.equal(ad.from, 'cat');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(amy.take((m) => m.type === 'dm').length, 0, 'amy: one DM');
    assert.equal(cat.take((m) => m.type === 'dm').length, 0, 'cat: two DMs, once each');
    assert.equal(bob.take('newMessage').length, 0, 'bob: one DM');
    assert.equal(dan.take((m) => m.type === 'dm').length, 0, 'dan: none');

    // History: a late joiner on each host sees the same messages with the same ids, in the
    // same order.
    const histories = [];
    for (const h of hosts) {
      const late = keep(await native(h, `127.0.13.${20 + h.hostId}`, `late${h.hostId}`));
      const r = await late.request({ type: 'join', room }, ['joined', 'error']);
      histories.push(r.history.map((m) => `${m.id} ${m.from} ${m.text}`));
    }
    assert.equal(histories[0].length, total, 'history holds every message');
    assert.deepEqual(histories[1], histories[0], 'host 2 history = host 1 history');
    assert.deepEqual(histories[2], histories[0], 'host 3 history = host 1 history');

    // Room seqs are per host: every message of the room, local or remote, took the next seq of
    // the host that delivered it, so each native member saw 1..total, each once.
    for (const who of ['amy', 'cat', 'dan']) {
      const seqs = views[who].map((m) => m.seq).sort((a, b) => a - b);
      assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1),
                       `${who}: the room's seqs 1..${total} on its host`);
    }

    // A reconnect on another host: eva follows the room on host 1 up to a message of host 3,
    // goes away, misses messages of all three hosts, then logs in on host 3 and joins with
    // since = the last id she saw: exactly the messages she missed, with host 3's seqs.
    const eva = keep(await native(hosts[0], '127.0.13.7', 'eva'));
    const ej = await eva.request({ type: 'join', room }, ['joined', 'error']);
    assert.equal(ej.history.length, total);
    await waitMember(hosts[2], 'eva');
    // (One after the other: a message that reached host 3 only after "seen 1" would come back
    // too, as something that arrived there after it; a client drops such repeats by id.)
    amy.send({ type: 'say', room, text: 'seen 0' });
    await cat.next((m) => m.type === 'message' && m.text === 'seen 0', 5000, 'cat: seen 0');
    cat.send({ type: 'say', room, text: 'seen 1' });
    let last;
    for (const t of ['seen 0', 'seen 1'])
      last = await eva.next((m) => m.type === 'message' && m.text === t, 5000, `eva: ${t}`);
    assert.ok(last.seq > total, `a remote message carries this host's seq: ${JSON.stringify(last)}`);
    // Every host saw what eva saw before anything is posted that eva misses.
    for (const c of [amy, cat, dan])
      for (const t of c === cat ? ['seen 1'] : ['seen 0', 'seen 1'])
        await c.next((m) => m.type === 'message' && m.text === t, 5000, `${c.name}: ${t}`);
    eva.close();
    await cat.next((m) => m.type === 'offline' && m.name === 'eva', 5000, 'offline eva on host 3');
    const missed = ['amy', 'bob', 'cat'].flatMap((n) => [0, 1].map((i) => `missed ${n} ${i}`));
    for (const i of [0, 1]) {
      amy.send({ type: 'say', room, text: `missed amy ${i}` });
      await bob.emitAck('say', { room, text: `missed bob ${i}` });
      cat.send({ type: 'say', room, text: `missed cat ${i}` });
    }
    const seqOnHost3 = new Map();
    for (const t of missed) {
      const m = await cat.next((x) => x.type === 'message' && x.text === t, 5000, `cat: ${t}`);
      seqOnHost3.set(t, m.seq);
    }
    const eva3 = keep(await native(hosts[2], '127.0.13.8', 'eva'));
    const back = await eva3.request({ type: 'join', room, since: last.id }, ['joined', 'error']);
    assert.equal(back.type, 'joined', JSON.stringify(back));
    assert.deepEqual(back.history.map((m) => m.text).sort(), [...missed].sort(),
                     'only the missed messages, none seen before');
    assert.equal(back.complete, true);
    for (const m of back.history) {
      assert.ok(m.id > last.id, `${m.text}: id ${m.id} after ${last.id}`);
      assert.equal(m.seq, seqOnHost3.get(m.text), `${m.text}: host 3's seq`);
    }
    eva3.close();
    await new Promise((r) => setTimeout(r, 300));
    amy.take((m) => m.type === 'message');
    dan.take((m) => m.type === 'message');
    bob.take('message');

    // Offline crosses hosts too; the name is free again everywhere.
    cat.close();
    await amy.next((m) => m.type === 'offline' && m.name === 'cat', 5000, 'offline cat on host 1');
    await dan.next((m) => m.type === 'offline' && m.name === 'cat', 5000, 'offline cat on host 2');

    // The link is up on every host, nothing was dropped; each host sent and received.
    for (const h of hosts) {
      assert.equal(await metric(h.port, 'steerchat_redis_link_up'), 1, `host ${h.hostId} link`);
      assert.equal(await metric(h.port, 'steerchat_redis_dropped_events_total'), 0);
      assert.ok(await metric(h.port, 'steerchat_redis_received_events_total') > 0);
    }
  });

  test('kill -9 of a whole host: its users offline elsewhere within the lease, names free; ' +
       'it rejoins with a new lease', async () => {
    const amy = clients.find((c) => c.name === 'amy');
    const dan = clients.find((c) => c.name === 'dan');
    const eve = keep(await native(hosts[2], '127.0.13.5', 'eve'));
    await amy.next((m) => m.type === 'online' && m.name === 'eve', 5000, 'online eve on host 1');
    const epochsBefore = await metric(hosts[1].port, 'steerchat_redis_hosts_lost_total');
    const killedAt = Date.now();
    assert.ok(await killHost(hosts[2]) >= 4, 'master, 2 workers and the bridge');
    await amy.next((m) => m.type === 'offline' && m.name === 'eve', LEASE + 2000,
                   'offline eve on host 1 after host 3 died');
    const took = Date.now() - killedAt;
    assert.ok(took <= LEASE + 1000, `offline within the lease (+ a check period): ${took} ms`);
    await dan.next((m) => m.type === 'offline' && m.name === 'eve', 2000, 'offline eve on host 2');
    assert.equal(await metric(hosts[1].port, 'steerchat_redis_hosts_lost_total'), epochsBefore + 1);
    // eve's name is free: she logs in on host 2.
    const eve2 = keep(await native(hosts[1], '127.0.13.6', 'eve'));
    await amy.next((m) => m.type === 'online' && m.name === 'eve', 5000, 'eve online again (host 2)');
    eve.close();

    // Host 3 comes back (same id and port): a new epoch; users of both sides see each other.
    // Its link goes through a relay the third test cuts.
    relay = await Relay.start(redis.port);
    hosts[2] = await startHost(3, `redis://127.0.0.1:${relay.port}`,
                               { lease: LEASE, port: hosts[2].port });
    const fay = keep(await native(hosts[2], '127.0.13.7', 'fay'));
    await amy.next((m) => m.type === 'online' && m.name === 'fay', 5000, 'online fay (new host 3)');
    for (let i = 0; ; i++) {
      const w = await fay.request({ type: 'dm', to: 'eve', text: 'welcome back' }, ['error'], 300)
        .catch(() => null);
      if (w === null) break;  // no error: accepted (eve is known on the new host 3)
      assert.ok(i < 30, `eve never known on the new host 3: ${JSON.stringify(w)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const d = await eve2.next((m) => m.type === 'dm' && m.from === 'fay', 5000, 'dm fay->eve');
    assert.equal(d.text, 'welcome back');
  });

  test('Redis restarts in the middle of traffic: nothing lost, nothing twice', async () => {
    const amy = by('amy');
    const dan = by('dan');
    const fay = by('fay');
    const room = 'restart';
    for (const c of [amy, dan, fay]) await c.request({ type: 'join', room }, ['joined', 'error']);
    for (const h of hosts) for (const n of ['amy', 'dan', 'fay']) await waitMember(h, n, room);
    await storm(room, [amy, fay], [amy, dan, fay], 60, 15, async () => {
      await new Promise((r) => setTimeout(r, 300));
      await redis.restart();
    });
    for (const h of hosts) {
      assert.equal(await metric(h.port, 'steerchat_redis_link_up'), 1, `host ${h.hostId} relinked`);
      assert.ok(await metric(h.port, 'steerchat_redis_links_total') >= 2, 'a reconnect happened');
      assert.equal(await metric(h.port, 'steerchat_redis_dropped_events_total'), 0);
    }
  });

  test('a host cut off from Redis (shorter than its lease) and healed: nothing lost, nothing ' +
       'twice; its link state shows', async () => {
    const amy = by('amy');
    const dan = by('dan');
    const fay = by('fay');
    const room = 'cut';
    for (const c of [amy, dan, fay]) await c.request({ type: 'join', room }, ['joined', 'error']);
    for (const h of hosts) for (const n of ['amy', 'dan', 'fay']) await waitMember(h, n, room);
    let buffered = 0;
    await storm(room, [amy, fay], [amy, dan, fay], 60, 15, async () => {
      await new Promise((r) => setTimeout(r, 200));
      await relay.cut();
      await until(async () => (await metric(hosts[2].port, 'steerchat_redis_link_up')) === 0,
                  3000, 'host 3 reports its link down');
      buffered = await until(async () => metric(hosts[2].port, 'steerchat_redis_buffered_events'),
                             3000, 'host 3 buffers events');
      await new Promise((r) => setTimeout(r, 300));
      await relay.heal();
    });
    assert.ok(buffered > 0, 'events were buffered during the cut');
    assert.equal(await metric(hosts[2].port, 'steerchat_redis_link_up'), 1);
    assert.equal(await metric(hosts[2].port, 'steerchat_redis_buffered_events'), 0);
    // Nobody went offline: the cut was shorter than the lease.
    assert.equal(amy.take((m) => m.type === 'offline' && m.name === 'fay').length, 0);
  });

  test('names are unique across hosts: a second login elsewhere gets name_taken, a name raced ' +
       'from two hosts has exactly one winner', async () => {
    const fay = by('fay');  // host 3
    const again = await ChatClient.connect(hosts[1].port, '127.0.13.30');
    clients.push(again);
    const r = await again.request({ type: 'login', name: 'amy' }, ['welcome', 'error']);
    assert.equal(r.code, 'name_taken', `amy is on host 1: ${JSON.stringify(r)}`);
    for (let k = 0; k < 5; k++) {
      const name = `zed${k}`;
      const a = keep(await ChatClient.connect(hosts[0].port, `127.0.13.${40 + k}`));
      const b = keep(await ChatClient.connect(hosts[1].port, `127.0.13.${50 + k}`));
      a.send({ type: 'login', name });
      b.send({ type: 'login', name });
      const first = await Promise.all([a, b].map((c) =>
        c.next((m) => m.type === 'welcome' || m.type === 'error', 5000, 'login answer')));
      // Give a revocation time to arrive (a lease check period plus the stream's delay).
      await new Promise((res) => setTimeout(res, 800));
      const holds = [a, b].map((c, i) => first[i].type === 'welcome' &&
        c.take((m) => m.type === 'error' && m.code === 'name_taken').length === 0);
      assert.equal(holds.filter(Boolean).length, 1,
                   `${name}: exactly one login holds it (${JSON.stringify(first)}, ${holds})`);
      const winner = holds[0] ? a : b;
      const loser = holds[0] ? b : a;
      // The loser is logged out (asking for anything says so); the winner gets DMs from host 3.
      const e = await loser.request({ type: 'join', room: 'x' }, ['error', 'joined']);
      assert.equal(e.code, 'not_logged_in', JSON.stringify(e));
      fay.send({ type: 'dm', to: name, text: `to ${name}` });
      const d = await winner.next((m) => m.type === 'dm', 5000, `dm to ${name}`);
      assert.equal(d.text, `to ${name}`);
      assert.equal(loser.take((m) => m.type === 'dm').length, 0);
    }
  });
});

describe('past --redis-buffer', () => {
  let redis;
  let relay;
  const hosts = [];
  const clients = [];
  before(async () => {
    redis = await RedisServer.start();
    relay = await Relay.start(redis.port);
    hosts.push(await startHost(1, redis.url, { lease: 10000 }));
    hosts.push(await startHost(2, `redis://127.0.0.1:${relay.port}`,
                               { lease: 10000, args: ['--redis-buffer', '10'] }));
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const h of hosts) await h.stop();
    if (relay) await relay.cut();
    if (redis) await redis.stop();
  });

  test('events over the bound are dropped, counted and logged; the rest arrive in order',
       async () => {
    const ann = await native(hosts[0], '127.0.14.1', 'ann');
    clients.push(ann);
    const ben = await native(hosts[1], '127.0.14.2', 'ben');
    clients.push(ben);
    await ann.next((m) => m.type === 'online' && m.name === 'ben', 5000, 'online ben');
    await relay.cut();
    await until(async () => (await metric(hosts[1].port, 'steerchat_redis_link_up')) === 0,
                3000, 'host 2 reports its link down');
    for (let i = 0; i < 30; i++) ben.send({ type: 'dm', to: 'ann', text: `dm ${i}` });
    await until(async () => (await metric(hosts[1].port,
                                          'steerchat_redis_dropped_events_total')) === 20,
                3000, '20 of 30 DMs dropped past --redis-buffer 10');
    assert.equal(await metric(hosts[1].port, 'steerchat_redis_buffered_events'), 10);
    await relay.heal();
    const got = [];
    for (let i = 0; i < 10; i++)
      got.push((await ann.next((m) => m.type === 'dm', 5000, `dm ${i}`)).text);
    assert.deepEqual(got, Array.from({ length: 10 }, (_, i) => `dm ${i}`));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(ann.take((m) => m.type === 'dm').length, 0, 'the dropped ones never come');
    assert.match(hosts[1].log, /dropping new ones/);
  });
});
