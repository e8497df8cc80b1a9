"""The test fleet's app: answers its version; BROKEN makes a version that never gets healthy.

POST /count is the load tests' non-idempotent request (HAProxy never replays one that
reached a server): it reads the body, bumps this instance's counter and echoes both.
"""

import hashlib
import itertools
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = Path(__file__).with_name("VERSION").read_text().strip()
DATA = "/var/lib/app"
SICK = os.path.join(DATA, "sick-" + socket.gethostname())  # a test makes one instance sick
COUNTER = itertools.count(1)  # next() is atomic under the GIL: safe across handler threads


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/healthz" and VERSION.startswith("broken"):
            self.reply(500, {"ok": False})
        elif self.path == "/healthz" and os.path.exists(SICK):  # this instance, from now on
            self.reply(500, {"ok": False, "sick": True})
        elif self.path.startswith("/missing"):  # a health path that is not there
            self.reply(404, {"error": "not found"})
        elif self.path == "/token":  # proves the secret arrived without ever showing it
            token = os.environ.get("APP_TOKEN", "").encode()
            self.reply(200, {"sha256": hashlib.sha256(token).hexdigest()})
        elif self.path == "/write":
            with open(os.path.join(DATA, "note"), "a") as handle:
                handle.write(VERSION + "\n")
            self.reply(200, {"ok": True})
        else:
            self.reply(200, {"version": VERSION, "instance": socket.gethostname()})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/count":
            self.reply(404, {"error": "POST /count only"})
            return
        count = next(COUNTER)
        self.reply(200, {"version": VERSION, "count": count, "echo": body.decode(errors="replace")})

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up early (HAProxy's checks reset their connections) is no
    error worth a traceback: the log keeps what the app itself says."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


if __name__ == "__main__":
    if VERSION.startswith("crash"):
        sys.exit(3)
    if os.path.exists(os.path.join(DATA, "crash-on-start")):  # every new instance, one release
        print("crash-on-start found on the data volume", flush=True)
        sys.exit(3)
    time.sleep(float(os.environ.get("START_DELAY", "0")))
    server = QuietServer(("0.0.0.0", 8000), Handler)
    print(f"app {VERSION} listening on :8000", flush=True)  # what failures quote from its log
    server.serve_forever()
