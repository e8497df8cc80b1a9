"""The example web role: greets, counts visits in SQLite on its data volume."""

import json
import os
import socket
import sqlite3
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA = os.environ.get("DATA_DIR", "/var/lib/web")
GREETING = os.environ.get("GREETING", "hello")
VERSION = "1"


def count_visit() -> int:
    with sqlite3.connect(os.path.join(DATA, "visits.db"), timeout=10) as db:
        db.execute("CREATE TABLE IF NOT EXISTS visits (n INTEGER)")
        db.execute("INSERT INTO visits VALUES (1)")
        return db.execute("SELECT COUNT(*) FROM visits").fetchone()[0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self.reply(200, {"ok": True})
        elif self.path == "/":
            self.reply(200, {"greeting": GREETING, "visits": count_visit(),
                             "version": VERSION, "instance": socket.gethostname()})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        # A write: the benchmarks send POSTs beside GETs through the edge.
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/":
            self.reply(200, {"visits": count_visit(), "version": VERSION,
                             "instance": socket.gethostname()})
        else:
            self.reply(404, {"error": "not found"})

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
