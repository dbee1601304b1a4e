// steerchat's status page: a WebSocket to /status/ws pushes the /status.json document (composed by
// the worker this browser reaches, from the host's shared metrics) at once and then every second;
// the page turns counters into rates and draws the tiles and the chart with its own code (SVG).
// When the socket closes it reconnects with exponential backoff and jitter.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const WINDOW_S = 300;
  let prev = null;          // the previous document
  const history = [];       // {t, rate}: host deliveries per second

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(n, digits = 0) {
    return Number(n).toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }

  function bytes(n) {
    if (n >= 1 << 20) return `${fmt(n / (1 << 20), 1)} MiB`;
    if (n >= 1 << 10) return `${fmt(n / (1 << 10), 1)} KiB`;
    return `${fmt(n)} B`;
  }

  // Per second, from the previous sample of the same slot (and the same pid: a respawned worker
  // starts its counters again).
  function rate(cur, old, field, dt) {
    if (!old || dt <= 0 || old.pid !== cur.pid) return 0;
    return Math.max(0, (cur[field] - old[field]) / dt);
  }

  function tile(title, cls, rows, extra) {
    const t = el('article', 'tile' + (cls ? ' ' + cls : ''));
    const h = el('h3');
    h.append(el('span', '', title));
    if (extra) h.append(extra);
    t.append(h);
    const dl = el('dl');
    for (const [k, v] of rows) dl.append(el('dt', '', k), el('dd', '', v));
    t.append(dl);
    return t;
  }

  function render(doc) {
    const dt = prev ? (doc.time_ms - prev.time_ms) / 1000 : 0;
    const oldSlots = new Map(prev ? prev.slots.map((s) => [s.slot, s]) : []);
    const bucketSum = doc.slots.reduce((a, s) => a + s.buckets, 0);
    $('served').textContent = `served by worker ${doc.worker}`;
    $('steering').textContent = `steering: ${doc.steering}`;
    const tiles = [];
    let hostDeliveries = 0;
    let hostRequests = 0;
    for (const s of doc.slots) {
      const old = oldSlots.get(s.slot);
      const req = rate(s, old, 'requests', dt);
      const del = rate(s, old, 'deliveries', dt);
      const cpu = old && old.pid === s.pid && dt > 0 ? (s.cpu_ns - old.cpu_ns) / 1e7 / dt : 0;
      hostDeliveries += del;
      hostRequests += req;
      const state = el('span', s.state === 'serving' ? 'state-serving' : 'state-other', s.state);
      const c = s.connections;
      const t = tile(`worker ${s.slot}`, '', [
        ['pid', String(s.pid)],
        ['connections', `${c.native} native, ${c.socketio} socket.io, ${c.http} http`],
        ['users', fmt(s.sessions)],
        ['messages/s', fmt(req, 1)],
        ['deliveries/s', fmt(del, 1)],
        ['ring lag', bytes(s.ring_lag_bytes)],
        ['steering share', doc.steering === 'bpf' && bucketSum ? `${fmt(100 * s.buckets / bucketSum, 1)} %` : 'n/a'],
        ['CPU', `${fmt(cpu, 1)} %`],
        ['memory', bytes(s.rss_bytes)],
        ['restarts', fmt(s.restarts)],
      ], state);
      t.dataset.slot = String(s.slot);
      if (s.slot === doc.worker) t.classList.add('me');
      tiles.push(t);
    }
    const T = doc.total;
    const total = tile('host', 'total', [
      ['workers serving', fmt(T.serving)],
      ['connections', `${T.connections.native} native, ${T.connections.socketio} socket.io, ${T.connections.http} http`],
      ['users', fmt(T.sessions)],
      ['messages/s', fmt(hostRequests, 1)],
      ['deliveries/s', fmt(hostDeliveries, 1)],
      ['deliveries', fmt(T.deliveries)],
      ['ring lag', bytes(T.ring_lag_bytes)],
      ['memory', bytes(T.rss_bytes)],
    ]);
    total.id = 'host';
    $('tiles').replaceChildren(total, ...tiles);
    if (prev) {
      history.push({ t: doc.time_ms, rate: hostDeliveries });
      while (history.length && history[0].t < doc.time_ms - WINDOW_S * 1000) history.shift();
      chart(doc.time_ms);
    }
    prev = doc;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function chart(now) {
    const W = 600, H = 160, L = 40, B = 18;
    // The window grows with the page's age from one minute up to WINDOW_S.
    const span = Math.min(WINDOW_S * 1000, Math.max(60000, now - history[0].t));
    const max = Math.max(1, ...history.map((p) => p.rate));
    const x = (t) => L + (W - L) * (1 - (now - t) / span);
    const y = (v) => (H - B) - (H - B - 6) * (v / max);
    const pts = history.map((p) => `${x(p.t).toFixed(1)},${y(p.rate).toFixed(1)}`).join(' ');
    $('chart').replaceChildren(
      svg('line', { x1: L, y1: H - B, x2: W, y2: H - B, class: 'axis' }),
      svg('line', { x1: L, y1: 6, x2: L, y2: H - B, class: 'axis' }),
      svg('text', { x: 2, y: 14 }, fmt(max, max < 10 ? 1 : 0)),
      svg('text', { x: 2, y: H - B }, '0'),
      svg('text', { x: L, y: H - 4 }, `-${Math.round(span / 1000)} s`),
      svg('text', { x: W - 30, y: H - 4 }, 'now'),
      svg('polyline', { points: pts, class: 'line' }),
    );
  }

  let attempt = 0;

  function offline(why) {
    $('conn').textContent = `offline (${why}): reconnecting`;
    $('conn').className = 'pill offline';
  }

  function connect() {
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/status/ws`);
    ws.onmessage = (ev) => {
      attempt = 0;
      try {
        render(JSON.parse(ev.data));
      } catch (e) {
        offline(e.message);
        return;
      }
      $('conn').textContent = 'live';
      $('conn').className = 'pill online';
    };
    ws.onclose = (ev) => {
      offline(ev.code === 1006 ? 'connection lost' : `closed ${ev.code}${ev.reason ? ': ' + ev.reason : ''}`);
      // 0.5 s, 1 s, 2 s ... up to 15 s, each with up to 50 % jitter.
      const base = Math.min(15000, 500 * 2 ** attempt++);
      setTimeout(connect, base * (0.5 + Math.random() * 0.5));
    };
  }

  connect();
})();
