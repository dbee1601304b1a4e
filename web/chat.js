// steerchat's chat page: the native JSON protocol on /ws (userspace/native/native.hpp).
// Everything a user sent is put into the page as text (textContent), never as markup.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_NAME = 'steerchat.name';
  const KEY_ROOMS = 'steerchat.rooms';
  const TYPING_SHOW_MS = 3000;
  const TYPING_SEND_MS = 2000;
  const HISTORY_KEEP = 500;

  // What this page knows; the server is the truth, this is re-derived after every reconnect.
  const state = {
    name: sessionStorage.getItem(KEY_NAME) || '',
    loggedIn: false,
    online: new Set(),
    rooms: new Map(),   // room -> {members: Set, log: [], unread: 0, typing: Map(name -> until)}
    dms: new Map(),     // peer -> {log: [], unread: 0}
    current: null,      // {kind: 'room' | 'dm', id}
    wanted: JSON.parse(sessionStorage.getItem(KEY_ROOMS) || '[]'),  // rooms to (re)join
  };
  let ws = null;
  let attempt = 0;          // reconnect attempts since the last welcome
  let reconnectTimer = null;
  let lastTypingSent = 0;
  let autoLogin = Boolean(state.name);  // a stored name: log in again without asking

  function saveRooms() {
    sessionStorage.setItem(KEY_ROOMS, JSON.stringify([...state.rooms.keys()]));
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  function setConn(text, cls) {
    const c = $('conn');
    c.textContent = text;
    c.className = 'pill ' + cls;
  }

  // Which worker serves this browser: /healthz answers from the worker this client address is
  // steered to, the same one that holds the WebSocket.
  function showWorker() {
    fetch('/healthz', { cache: 'no-store' })
      .then((r) => r.json())
      .then((h) => {
        $('worker').textContent = `worker ${h.worker} of ${h.workers} (pid ${h.pid})`;
        $('worker').dataset.worker = String(h.worker);
      })
      .catch(() => {});
  }

  // ---- connection -------------------------------------------------------------------------

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    setConn(attempt ? `reconnecting (attempt ${attempt})` : 'connecting', 'offline');
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    const sock = new WebSocket(url);
    ws = sock;
    sock.onopen = () => {
      setConn('online', 'online');
      showWorker();
      if (autoLogin && state.name) send({ type: 'login', name: state.name });
    };
    sock.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      handle(msg);
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      const wasIn = state.loggedIn;
      state.loggedIn = false;
      if (wasIn) autoLogin = true;
      for (const r of state.rooms.values()) r.typing.clear();
      scheduleReconnect();
      render();
    };
  }

  // Exponential backoff with full jitter: 0.5-1 x min(10 s, 0.5 s x 2^attempt).
  function scheduleReconnect() {
    const base = Math.min(10000, 500 * 2 ** Math.min(attempt, 5));
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    attempt += 1;
    setConn(`offline: reconnecting in ${(delay / 1000).toFixed(1)} s`, 'offline');
    reconnectTimer = setTimeout(connect, delay);
  }

  window.addEventListener('online', () => {
    if (!ws) connect();
  });
  window.addEventListener('offline', () => {
    if (ws) ws.close();
  });

  // ---- protocol ---------------------------------------------------------------------------

  function room(name) {
    let r = state.rooms.get(name);
    if (!r) {
      // seq/lastId: the room's messages this page has without a hole (seq) and the id of the
      // last of them, which a rejoin gives as `since` (only the messages after it come back).
      r = { members: new Set(), log: [], unread: 0, typing: new Map(), seq: 0, lastId: 0 };
      state.rooms.set(name, r);
    }
    return r;
  }

  function dm(peer) {
    let d = state.dms.get(peer);
    if (!d) {
      d = { log: [], unread: 0 };
      state.dms.set(peer, d);
    }
    return d;
  }

  function isCurrent(kind, id) {
    return state.current && state.current.kind === kind && state.current.id === id;
  }

  function push(conv, kind, id, entry, counts) {
    conv.log.push(entry);
    if (conv.log.length > HISTORY_KEEP) conv.log.shift();
    if (counts && !(isCurrent(kind, id) && document.visibilityState === 'visible')) conv.unread += 1;
  }

  // A room message with its seq: extends the run of seqs this page has without a hole.
  function track(r, m) {
    if (typeof m.seq === 'number' && m.seq === r.seq + 1) {
      r.seq = m.seq;
      r.lastId = m.id;
    }
  }

  function notice(text) {
    return { notice: text, ts: Date.now() };
  }

  // A presence notice goes to the conversation on screen.
  function noticeCurrent(text) {
    if (!state.current) return;
    const c = state.current.kind === 'room' ? state.rooms.get(state.current.id)
                                            : state.dms.get(state.current.id);
    if (c) push(c, state.current.kind, state.current.id, notice(text), false);
  }

  function handle(m) {
    switch (m.type) {
      case 'welcome': {
        state.loggedIn = true;
        state.name = m.name;
        sessionStorage.setItem(KEY_NAME, m.name);
        attempt = 0;
        state.online = new Set(m.users);
        state.online.add(m.name);
        $('login-error').textContent = '';
        $('chat-error').textContent = '';
        // Rejoin the rooms this page was in (after a reconnect or a reload), else the lobby.
        const rooms = state.rooms.size ? [...state.rooms.keys()]
                                       : (state.wanted.length ? state.wanted : ['lobby']);
        for (const r of rooms) {
          const since = state.rooms.get(r)?.lastId;
          send({ type: 'join', room: r, ...(since ? { since } : {}) });
        }
        if (autoLogin) noticeCurrent('connected again');
        autoLogin = true;
        break;
      }
      case 'joined': {
        const r = room(m.room);
        const rejoin = r.log.length > 0;
        r.members = new Set(m.members);
        // The room's history; after a reconnect, the part this page has not shown yet (a
        // restarted server may have less than the page: the page keeps its own).
        const key = (e) => `${e.ts}\u0000${e.from}\u0000${e.text}`;
        const shown = new Set(r.log.filter((e) => e.notice === undefined).map(key));
        for (const h of m.history) {
          const e = { from: h.from, text: h.text, ts: h.ts };
          if (!shown.has(key(e))) r.log.push(e);
        }
        // The history is a run of seqs: carry on from its newest (a restarted server counts anew).
        const newest = m.history[m.history.length - 1];
        if (newest) {
          r.seq = newest.seq;
          r.lastId = newest.id;
        } else if (typeof m.seq === 'number' && m.seq !== r.seq) {
          if (m.seq < r.seq) r.lastId = 0;  // a restarted server: its ids are not ours
          r.seq = m.seq;
        }
        if (m.complete === false) r.log.push(notice(`older messages of ${m.room} are no longer kept`));
        r.log.push(notice(rejoin ? `rejoined ${m.room}` : `you joined ${m.room}`));
        saveRooms();
        if (!state.current || (state.pendingSelect === m.room)) {
          state.current = { kind: 'room', id: m.room };
          state.pendingSelect = null;
        }
        break;
      }
      case 'left': {
        state.rooms.delete(m.room);
        saveRooms();
        if (isCurrent('room', m.room)) {
          const next = state.rooms.keys().next();
          state.current = next.done ? null : { kind: 'room', id: next.value };
          if (state.current) noticeCurrent(`you left ${m.room}`);
        }
        break;
      }
      case 'message': {
        const r = room(m.room);
        r.typing.delete(m.from);
        push(r, 'room', m.room, { from: m.from, text: m.text, ts: m.ts }, m.from !== state.name);
        track(r, m);
        break;
      }
      // This page's worker fell behind: what it resends follows; what it could not is named.
      case 'gap':
        for (const g of m.rooms) {
          const r = state.rooms.get(g.room);
          if (!r || !g.missed) continue;
          push(r, 'room', g.room, notice(`${g.missed} message(s) of ${g.room} were lost ` +
                                         '(the server fell behind)'), false);
          r.seq = Math.max(r.seq, g.missed_to);  // accepted as missed: the run goes on
        }
        noticeCurrent('the server fell behind: direct messages and presence may be incomplete');
        break;
      case 'dm': {
        const peer = m.from === state.name ? m.to : m.from;
        push(dm(peer), 'dm', peer, { from: m.from, text: m.text, ts: m.ts }, m.from !== state.name);
        break;
      }
      // Another member joined or left one of this page's rooms (the server sends them to the
      // members who joined before; the join's member list holds the older ones). Going offline
      // sends no member_left: 'offline' below means leaving every room.
      case 'member_joined': {
        const r = state.rooms.get(m.room);
        if (r && !r.members.has(m.name)) {
          r.members.add(m.name);
          push(r, 'room', m.room, notice(`${m.name} joined ${m.room}`), false);
        }
        break;
      }
      case 'member_left': {
        const r = state.rooms.get(m.room);
        if (r && r.members.delete(m.name)) {
          push(r, 'room', m.room, notice(`${m.name} left ${m.room}`), false);
        }
        if (r) r.typing.delete(m.name);
        break;
      }
      case 'online':
        state.online.add(m.name);
        noticeCurrent(`${m.name} is online`);
        break;
      case 'offline':
        state.online.delete(m.name);
        for (const [name, r] of state.rooms) {
          if (r.members.delete(m.name)) push(r, 'room', name, notice(`${m.name} left (offline)`), false);
          r.typing.delete(m.name);
        }
        if (!state.current || state.current.kind !== 'room') noticeCurrent(`${m.name} is offline`);
        break;
      case 'typing': {
        const r = state.rooms.get(m.room);
        if (r) {
          r.typing.set(m.from, Date.now() + TYPING_SHOW_MS);
          setTimeout(render, TYPING_SHOW_MS + 50);
        }
        break;
      }
      case 'error':
        onError(m);
        break;
      default:
        break;
    }
    render();
  }

  function onError(m) {
    if (!state.loggedIn) {
      // A reconnect's login may find the old session still holding the name for a moment.
      if (autoLogin && m.code === 'name_taken') {
        $('login-error').textContent = '';
        setConn('name still held by the old connection: retrying', 'offline');
        setTimeout(() => send({ type: 'login', name: state.name }), 500 + Math.random() * 500);
        return;
      }
      autoLogin = false;
      state.name = '';
      sessionStorage.removeItem(KEY_NAME);
      $('login-error').textContent = `${m.message} (${m.code})`;
      $('name').focus();
      return;
    }
    $('chat-error').textContent = `${m.message} (${m.code})`;
  }

  // ---- rendering --------------------------------------------------------------------------

  function time(ts) {
    const d = new Date(ts);
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function entryNode(e) {
    const li = el('li');
    if (e.notice !== undefined) {
      li.className = 'notice';
      li.textContent = e.notice;
      return li;
    }
    li.append(el('span', 'time', time(e.ts)), el('span', 'from', e.from), el('span', 'text', e.text));
    return li;
  }

  function listButton(label, unread, current, onClick, data) {
    const li = el('li');
    const b = el('button');
    b.type = 'button';
    b.append(el('span', 'label', label), el('span', 'badge', unread ? String(unread) : ''));
    if (unread) b.setAttribute('aria-label', `${label}, ${unread} unread`);
    if (current) b.setAttribute('aria-current', 'true');
    for (const [k, v] of Object.entries(data)) b.dataset[k] = v;
    b.addEventListener('click', onClick);
    li.append(b);
    return li;
  }

  function select(kind, id) {
    state.current = { kind, id };
    const c = kind === 'room' ? state.rooms.get(id) : dm(id);
    if (c) c.unread = 0;
    $('chat-error').textContent = '';
    render();
    $('text').focus();
  }

  function render() {
    const logged = state.loggedIn || (state.name && autoLogin && state.rooms.size > 0);
    $('login-view').hidden = Boolean(logged);
    $('chat-view').hidden = !logged;
    $('me').hidden = !state.name || !logged;
    $('me').textContent = state.name ? `you: ${state.name}` : '';

    const rooms = $('rooms');
    rooms.replaceChildren();
    for (const [name, r] of state.rooms) {
      rooms.append(listButton(`#${name}`, r.unread, isCurrent('room', name),
                              () => select('room', name), { room: name }));
    }
    for (const [peer, d] of state.dms) {
      rooms.append(listButton(`@${peer}`, d.unread, isCurrent('dm', peer),
                              () => select('dm', peer), { dm: peer }));
    }

    const users = $('users');
    users.replaceChildren();
    const names = [...state.online].sort();
    $('online-count').textContent = `(${names.length})`;
    for (const n of names) {
      const mine = n === state.name;
      const li = listButton(mine ? `${n} (you)` : n, 0, isCurrent('dm', n),
                            () => { if (!mine) select('dm', n); }, { user: n });
      if (mine) li.firstChild.disabled = true;
      users.append(li);
    }

    const cur = state.current;
    const conv = cur ? (cur.kind === 'room' ? state.rooms.get(cur.id) : state.dms.get(cur.id) || dm(cur.id))
                     : null;
    if (conv && document.visibilityState === 'visible') conv.unread = 0;
    $('conv-title').textContent = !cur ? 'No conversation' : (cur.kind === 'room' ? `#${cur.id}` : `@${cur.id}`);
    $('leave').hidden = !cur || cur.kind !== 'room';
    $('members').textContent = cur && cur.kind === 'room' && conv
      ? `members: ${[...conv.members].sort().join(', ')}`
      : (cur ? `direct messages with ${cur.id}${state.online.has(cur.id) ? '' : ' (offline)'}` : '');
    const log = $('log');
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.replaceChildren(...(conv ? conv.log.map(entryNode) : []));
    if (atBottom) log.scrollTop = log.scrollHeight;

    let typing = '';
    if (cur && cur.kind === 'room' && conv) {
      const now = Date.now();
      const who = [...conv.typing].filter(([n, until]) => until > now && n !== state.name).map(([n]) => n);
      if (who.length) typing = `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…`;
    }
    $('typing').textContent = typing;
    const canSend = state.loggedIn && Boolean(cur);
    $('text').disabled = !canSend;
    $('send').disabled = !canSend;
    document.title = totalUnread() ? `(${totalUnread()}) steerchat` : 'steerchat';
  }

  function totalUnread() {
    let n = 0;
    for (const r of state.rooms.values()) n += r.unread;
    for (const d of state.dms.values()) n += d.unread;
    return n;
  }

  // ---- user actions -----------------------------------------------------------------------

  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('name').value.trim();
    if (!name) return;
    state.name = name;
    autoLogin = false;
    $('login-error').textContent = '';
    if (!send({ type: 'login', name })) $('login-error').textContent = 'not connected yet: try again in a moment';
  });

  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const r = $('room-name').value.trim();
    if (!r) return;
    if (state.rooms.has(r)) {
      select('room', r);
    } else {
      state.pendingSelect = r;
      send({ type: 'join', room: r });
    }
    $('room-name').value = '';
  });

  $('leave').addEventListener('click', () => {
    if (state.current && state.current.kind === 'room') send({ type: 'leave', room: state.current.id });
  });

  $('send-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('text').value;
    const cur = state.current;
    if (!text || !cur) return;
    let ok;
    if (cur.kind === 'room') {
      ok = send({ type: 'say', room: cur.id, text });
    } else {
      ok = send({ type: 'dm', to: cur.id, text });
      // The server sends a DM to its recipient only: keep the sender's copy here.
      if (ok) push(dm(cur.id), 'dm', cur.id, { from: state.name, text, ts: Date.now() }, false);
    }
    if (ok) {
      $('text').value = '';
      lastTypingSent = 0;
      render();
    } else {
      $('chat-error').textContent = 'offline: the message was not sent';
    }
  });

  $('text').addEventListener('input', () => {
    const cur = state.current;
    if (!cur || cur.kind !== 'room' || !$('text').value) return;
    const now = Date.now();
    if (now - lastTypingSent < TYPING_SEND_MS) return;
    lastTypingSent = now;
    send({ type: 'typing', room: cur.id });
  });

  document.addEventListener('visibilitychange', render);

  render();
  connect();
})();
