#!/usr/bin/env python3
"""A minimal HTTP server for `steerchat balance`, standard library only.

It serves on the listening socket its parent hands it as fd 3 (systemd socket activation:
LISTEN_FDS=1, LISTEN_PID=<this process>), so any number of copies share one port and the
kernel keeps each client address on one copy:

    steerchat balance --port 8000 --workers 4 -- python3 examples/balance/python/server.py
    curl -s localhost:8000/        # {"pid": 1234, "slot": 2, "workers": 4, "client": ...}

Run by hand without a parent it listens on $PORT (default 8000) itself.
Paths: / answers who served the request; /exit makes this copy exit (status 3) after the
answer, to watch the master respawn it into its slot.
"""
import http.server
import json
import os
import socket
import sys

SD_LISTEN_FDS_START = 3


def open_fds():
    """The descriptors open now (listdir's own, closed by the time it returns, left out)."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")
            fds.append(int(name))
        except OSError:
            pass
    return sorted(fds)


# The descriptors this process started with: what its parent let it inherit.
INHERITED = open_fds()


def inherited_listener():
    """The socket of systemd's protocol, or None (sd_listen_fds(3))."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0")) != 1:
        sys.exit("expected exactly one socket (LISTEN_FDS=1)")
    # fileno= adopts the descriptor itself (no dup) and detects its family and type.
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    sock.setblocking(True)
    return sock


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({
            "pid": os.getpid(),
            "slot": int(os.environ.get("STEERCHAT_SLOT", "-1")),
            "workers": int(os.environ.get("STEERCHAT_WORKERS", "0")),
            "client": self.client_address[0],
            "inherited_fds": INHERITED,
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path == "/exit":
            print(f"pid {os.getpid()}: asked to exit", flush=True)
            os._exit(3)

    def log_message(self, fmt, *args):
        pass  # one line per request would drown the master's log


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main():
    sock = inherited_listener()
    if sock is None:
        server = Server(("", int(os.environ.get("PORT", "8000"))), Handler)
    else:
        # Take the inherited socket instead of binding one.
        server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
    print(f"pid {os.getpid()} serving on {server.socket.getsockname()[:2]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
