#!/usr/bin/env python3
"""Writes the seed corpora of native_protocol_fuzz and worker_http_fuzz (tests/fuzz/corpus/).

    tests/fuzz/make_seeds.py        (rewrites corpus/native_protocol and corpus/worker_http)

The seeds are committed; this script documents how they were made and remakes them after a
change of an input layout (see the comment at the top of each fuzz target). Files of other
names in those directories (inputs the fuzzers found and were added by hand) are kept.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- native_protocol: lines "<command><payload>", command '0'-'3' text to session 0-3,
# '4'-'7' binary, '8'-';' disconnect, '<' pump only. Sessions 0, 2 on worker 0; 1, 3 on 1
# (tight chat limits on worker 1).

def native(name, lines):
    out = []
    for cmd, msg in lines:
        payload = msg if isinstance(msg, str) else json.dumps(msg, separators=(",", ":"))
        out.append(cmd + payload)
    write("native_protocol", name, "\n".join(out).encode())


def login(s, n):
    return (str(s), {"type": "login", "name": n})


def join(s, r):
    return (str(s), {"type": "join", "room": r})


def say(s, r, t, **kw):
    return (str(s), dict({"type": "say", "room": r, "text": t}, **kw))


def seeds_native():
    native("login_join_say", [
        login(0, "alice"), login(1, "bob"), join(0, "lobby"), join(1, "lobby"),
        say(0, "lobby", "hi all", cid=1), say(1, "lobby", "yo"), say(3, "lobby", "not logged in"),
        (str(1), {"type": "leave", "room": "lobby"}), say(1, "lobby", "gone", cid="k"),
    ])
    native("dm_across_workers", [
        login(0, "a"), login(1, "b"), login(2, "c"),
        ("0", {"type": "dm", "to": "b", "text": "psst"}),
        ("1", {"type": "dm", "to": "a", "text": "back"}),
        ("2", {"type": "dm", "to": "a", "text": "same worker"}),
        ("0", {"type": "dm", "to": "a", "text": "to myself"}),
        ("0", {"type": "dm", "to": "nobody", "text": "x"}),
        ("0", {"type": "dm", "to": "", "text": "x"}),
    ])
    native("name_errors", [
        login(0, ""), login(0, "a\u0007b"), login(0, "x" * 33), login(0, "caf\u00e9 \U0001F600"),
        login(1, "caf\u00e9 \U0001F600"), login(0, "again"), login(1, "b\"ob"),
        ("2", '{"type":"login","name":"\\ud800"}'), ("3", '{"type":"login","name":"\x7f"}'),
    ])
    native("cids", [
        say(0, "r", "before login", cid="k"), login(0, "a"), join(0, "r"),
        ("0", '{"type":"say","room":"nosuchroom","text":"x","cid":1e400}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":-1e400}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":[1e400]}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":{"x":1e999}}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":"' + "c" * 300 + '"}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":null}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":18446744073709551615}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":-9223372036854775808}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":[1,{"n":2.5}]}'),
        ("0", '{"type":"say","room":"r","text":"x","cid":1e300}'),
        ("0", '{"type":"say","room":"r","cid":5}'),
    ])
    native("odd_types", [
        ("0", "{not json"), ("0", "[1,2]"), ("0", '"str"'), ("0", "123"), ("0", "null"),
        ("0", ""), ("0", '{"type":7}'), ("0", '{"type":"dance"}'), ("0", '{"type":null}'),
        ("0", '{"type":"login","name":5}'), ("0", '{"type":"login","name":["a"]}'),
        login(0, "t"), ("0", '{"type":"say","room":["x"],"text":{}}'),
        ("0", '{"type":"join","room":1e400}'), ("0", '{"type":"dm","to":null,"text":1}'),
        ("0", '{"type":"join","room":"r","type":"say"}'),
        ("0", "[" * 40 + "]" * 40), ("0", '{"type":"leave"}'), ("0", '{"type":"nope"}'),
        ("0", '{"type":"join","room":"\\u0000"}'), ("4", ""), ("5", "binary"),
    ])
    native("logout_and_reuse", [
        login(0, "a"), login(1, "b"), join(0, "r"), join(1, "r"), ("0", {"type": "logout"}),
        login(2, "a"), ("3", {"type": "logout"}), join(2, "r"), say(2, "r", "back"),
        ("9", ""), say(1, "r", "still here"), ("8", ""), login(0, "a"),
    ])
    native("server_full", [
        login(0, "u0"), login(1, "u1"), login(2, "u2"), login(3, "u3"),
    ] + [join(s, "room%d" % r) for s in range(4) for r in range(5)] + [
        say(0, "room0", "full?"),
    ])
    native("history_and_too_long", [
        login(0, "w"), join(0, "h"),
    ] + [say(0, "h", "m%d" % i) for i in range(6)] + [
        login(1, "late"), join(1, "h"), say(1, "h", "x" * 257),
        ("1", {"type": "dm", "to": "w", "text": "y" * 257}), say(1, "h", "x" * 256),
        say(0, "h", "z" * 250), say(0, "h", "z" * 250), say(0, "h", "z" * 250),
        ("2", {"type": "login", "name": "later"}), ("2", {"type": "join", "room": "h"}),
    ])
    native("rate_and_room_limits", [  # worker 1: burst 6, 2 rooms, closed after 3 refusals
        login(1, "busy"), join(1, "a"), join(1, "b"), join(1, "c"), say(1, "a", "1"),
        say(1, "b", "2"), say(1, "a", "3", cid=3), say(1, "a", "4"), say(1, "a", "5"),
        ("5", ""), login(1, "busy"), login(3, "other"), join(3, "a"),
    ])
    native("typing", [  # worker 1: typing over its rate (burst 2) is dropped silently
        login(0, "t0"), login(1, "t1"), login(2, "t2"), join(0, "r"), join(1, "r"),
        ("0", {"type": "typing", "room": "r"}), ("1", {"type": "typing", "room": "r"}),
        ("1", {"type": "typing", "room": "r"}), ("1", {"type": "typing", "room": "r"}),
        ("2", {"type": "typing", "room": "r"}), ("2", {"type": "typing"}),
        ("3", {"type": "typing", "room": "r"}), ("0", {"type": "typing", "room": 5}),
        join(2, "r"), say(0, "r", "done"),
    ])
    native("rooms_unicode", [
        login(0, "r"), join(0, "\u00fcber"), join(0, "\U0001F3E0" * 64), join(0, "a" * 65),
        join(0, "tab\there"), join(0, "del\u007f"), join(0, "c1\u0085"),
        ("1", '{"type":"join","room":"x"}'), ("<", ""),
    ])


# --- worker_http: flags byte, then chunks "<command><data>" separated by b"\xfe\xfd".
# command bits 0-1 connection, bits 2-3: 0 write, 1 write + shut down writing, 2 close,
# 3 write byte by byte. "$SID" stands for the last Engine.IO session id handed out.

MARK = b"\xfe\xfd"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def cmd(conn, action=0):
    """action 0-3 as in the layout; 4 (command bit 4): write, then let 10 ms of timers run."""
    return bytes([conn | (action << 2)])


def http(name, flags, chunks):
    body = MARK.join(cmd(c, a) + d for c, a, d in chunks)
    write("worker_http", name, bytes([flags]) + body)


def req(method, target, headers=(), body=b"", version="1.1"):
    lines = ["%s %s HTTP/%s" % (method, target, version), "Host: localhost"]
    lines += list(headers)
    if body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def upgrade(target, extra=()):
    return req("GET", target, ["Upgrade: websocket", "Connection: Upgrade",
                               "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13"] +
               list(extra))


def frame(payload, opcode=1, fin=True):
    """A client frame, masked with the key 0 (the payload reads as is)."""
    if isinstance(payload, str):
        payload = payload.encode()
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload


def close_frame(code=1000):
    return frame(struct.pack(">H", code), opcode=8)


def sio_poll(query="", method="GET", body=b"", eio=4, extra=()):
    target = "/socket.io/?EIO=%d&transport=polling%s" % (eio, query)
    headers = list(extra)
    if method == "POST":
        headers.append("Content-Type: text/plain;charset=UTF-8")
    return req(method, target, headers, body)


def seeds_http():
    http("healthz_metrics_404", 0, [
        (0, 0, req("GET", "/healthz")),
        (0, 0, req("GET", "/metrics")),
        (0, 0, req("GET", "/nowhere?x=1")),
        (0, 0, req("HEAD", "/healthz")),
        (1, 0, req("POST", "/healthz", body=b"ignored") + req("GET", "/healthz")),
        (2, 0, req("GET", "/healthz", version="1.0")),
        (3, 1, req("GET", "/metrics", ["Connection: close"])),
    ])
    http("bad_requests", 0, [
        (0, 0, b"GARBAGE\r\n\r\n"),
        (1, 0, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"),
        (2, 0, b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n"),
        (3, 1, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),
        (0, 0, b"GET /healthz HTTP/9.9\r\n\r\n"),
        (1, 0, b"POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
    ])
    http("byte_by_byte", 0, [
        (0, 3, req("GET", "/healthz")),
        (1, 3, upgrade("/echo") + frame("hi")),
    ])
    http("echo_websocket", 0, [
        (0, 0, upgrade("/echo")),
        (0, 0, frame("hello") + frame(b"\x00\x01\xff", opcode=2)),
        (0, 0, frame("frag", fin=False) + frame("ping", opcode=9) + frame("ment", opcode=0)),
        (0, 0, frame("x" * 300)),
        (0, 0, close_frame()),
        (1, 0, upgrade("/echo") + frame("\xff bad utf8".encode("latin-1"))),
        (2, 0, upgrade("/echo") + b"\x81\x05hello"),  # unmasked
    ])
    http("upgrade_refusals", 8, [
        (0, 0, req("GET", "/ws")),
        (1, 0, req("GET", "/ws", ["Upgrade: websocket", "Connection: Upgrade",
                                  "Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13"])),
        (2, 0, req("GET", "/ws", ["Upgrade: websocket", "Connection: Upgrade",
                                  "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 8"])),
        (3, 0, upgrade("/ws", ["Origin: https://evil.example"])),
        (0, 0, upgrade("/ws", ["Origin: https://ok.example"]) + close_frame(1001)),
        (1, 0, req("POST", "/echo", ["Upgrade: websocket", "Connection: Upgrade",
                                     "Sec-WebSocket-Key: " + KEY, "Sec-WebSocket-Version: 13"])),
    ])
    j = lambda o: json.dumps(o, separators=(",", ":"))
    http("native_chat", 0, [
        (0, 0, upgrade("/ws") + frame(j({"type": "login", "name": "alice"}))),
        (1, 0, upgrade("/ws") + frame(j({"type": "login", "name": "bob"}))),
        (0, 0, frame(j({"type": "join", "room": "lobby"}))),
        (1, 0, frame(j({"type": "join", "room": "lobby"}))),
        (0, 0, frame(j({"type": "say", "room": "lobby", "text": "hi", "cid": 1}))),
        (1, 0, frame(j({"type": "dm", "to": "alice", "text": "psst"}))),
        (0, 0, frame('{"type":"say","room":"nosuchroom","text":"x","cid":1e400}')),
        (1, 0, frame(b"\x01\x02", opcode=2) + frame("{bad")),
        (1, 0, frame(j({"type": "logout"}))),
        (0, 2, b""),
    ])
    http("eio_polling_chat", 0, [
        (0, 0, sio_poll()),
        (0, 0, sio_poll("&sid=$SID", "POST", b"40")),
        (0, 0, sio_poll("&sid=$SID")),
        (0, 0, sio_poll("&sid=$SID", "POST",
                        b'42["createsession",{"email":"pat","clientIP":"1.2.3.4"}]\x1e'
                        b'420["join","lobby"]\x1e421["say",{"room":"lobby","text":"hi","cid":"c"}]')),
        (0, 0, sio_poll("&sid=$SID")),
        (1, 0, sio_poll("&sid=$SID")),
        (2, 0, sio_poll("&sid=$SID", "POST", b'42["newMessage",{"to":"pat","message":"m"}]')),
        (0, 0, sio_poll("&sid=$SID", "POST", b"1")),
        (0, 0, sio_poll("&sid=$SID")),
    ])
    http("eio_websocket_chat", 0, [
        (0, 0, upgrade("/socket.io/?EIO=4&transport=websocket")),
        (0, 0, frame("40") + frame('42["createsession",{"email":"w"}]')),
        (0, 0, frame('420["join",{"room":"r"}]') + frame('421["say",{"room":"r","text":"t"}]')),
        (0, 0, frame('422["leave","r"]') + frame('42["logout"]') + frame("3") + frame("2")),
        (0, 0, frame("40/admin,") + frame('42/admin,["createsession",{"email":"adm"}]')),
        (0, 0, frame("40/nope,") + frame('451-["x",{"_placeholder":true,"num":0}]') +
         frame(b"\x01\x02", opcode=2)),
        (0, 0, frame("41") + frame("1")),
    ])
    http("typing_both_protocols", 0, [
        (0, 0, upgrade("/ws") + frame(j({"type": "login", "name": "ty"}))),
        (1, 0, upgrade("/socket.io/?EIO=4&transport=websocket")),
        (1, 0, frame("40") + frame('42["createsession",{"email":"sy"}]')),
        (0, 0, frame(j({"type": "join", "room": "r"}))),
        (1, 0, frame('420["join","r"]') + frame('42["typing","r"]')),
        (0, 0, frame(j({"type": "typing", "room": "r"})) + frame(j({"type": "typing"}))),
        (1, 0, frame('421["typing",{"room":"r"}]') + frame('42["typing","elsewhere"]') +
         frame('422["typing",7]')),
    ])
    http("eio_upgrade", 0, [
        (0, 0, sio_poll()),
        (1, 0, upgrade("/socket.io/?EIO=4&transport=websocket&sid=$SID")),
        (1, 0, frame("2probe")),
        (0, 0, sio_poll("&sid=$SID")),
        (1, 0, frame("5") + frame("40") + frame('42["createsession",{"email":"up"}]')),
        (2, 0, upgrade("/socket.io/?EIO=4&transport=websocket&sid=$SID")),
        (0, 0, sio_poll("&sid=$SID")),
    ])
    http("eio3_and_errors", 2, [
        (0, 0, sio_poll(eio=3, extra=["Origin: https://a.example"])),
        (0, 0, sio_poll("&sid=$SID", "POST", b"2:40", eio=3)),
        (0, 0, sio_poll("&sid=$SID&b64=1", eio=3)),
        (1, 0, req("OPTIONS", "/socket.io/?EIO=4&transport=polling",
                   ["Origin: https://a.example", "Access-Control-Request-Method: POST"])),
        (1, 0, req("GET", "/socket.io/?EIO=4&transport=carrier-pigeon")),
        (2, 0, req("GET", "/socket.io/?EIO=4&transport=polling&sid=unknown")),
        (2, 0, req("GET", "/socket.io/?EIO=5&transport=polling")),
        (3, 0, req("PUT", "/socket.io/?EIO=4&transport=polling")),
        (3, 0, sio_poll("&sid=$SID", "POST", b"x" * 5000)),
        (0, 0, sio_poll("&sid=$SID", "POST", b"4\x1e" + b"\xff")),
    ])
    http("short_timers", 16, [
        (0, 0, sio_poll()),
        (1, 0, sio_poll("&sid=$SID")),
        (2, 0, upgrade("/socket.io/?EIO=4&transport=websocket")),
        (2, 4, frame("40")),
        (3, 4, upgrade("/ws")),
        (3, 4, upgrade("/socket.io/?EIO=4&transport=websocket&sid=$SID") + frame("2probe")),
        (0, 4, sio_poll("&sid=$SID")),
    ])
    http("protocol_test_mode", 1, [
        (0, 0, req("GET", "/engine.io/?EIO=4&transport=polling")),
        (0, 0, req("POST", "/engine.io/?EIO=4&transport=polling&sid=$SID", [], b"4hello\x1ebAQID")),
        (0, 0, req("GET", "/engine.io/?EIO=4&transport=polling&sid=$SID")),
        (1, 0, upgrade("/socket.io/?EIO=4&transport=websocket")),
        (1, 0, frame('40{"token":"t"}') + frame('42["message",1,"two",{"3":4}]') +
         frame('421["message-with-ack",1]') + frame("40/custom,")),
        (1, 0, frame('451-["message",{"_placeholder":true,"num":0}]') +
         frame(b"\x01\x02\x03", opcode=2)),
    ])


if __name__ == "__main__":
    seeds_native()
    seeds_http()
