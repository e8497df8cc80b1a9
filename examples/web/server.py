"""The example web role: greets, counts visits and keeps records in SQLite on its data volume.

POST /records stores the request's body and answers its id only once it is committed (an
acknowledged record is on the volume); GET /records lists every id, GET /records/<id>
gives one record's body back.
"""

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


def _records() -> sqlite3.Connection:
    db = sqlite3.connect(os.path.join(DATA, "visits.db"), timeout=10)
    db.execute("CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, body TEXT)")
    return db


def add_record(body: str) -> int:
    with _records() as db:  # commits on leaving the block: the id is answered after
        row = db.execute("INSERT INTO records (body) VALUES (?)", (body,)).lastrowid
    return int(row or 0)


def record(number: int) -> str | None:
    with _records() as db:
        found = db.execute("SELECT body FROM records WHERE id = ?", (number,)).fetchone()
    return None if found is None else str(found[0])


def record_ids() -> list[int]:
    with _records() as db:
        return [n for (n,) in db.execute("SELECT id FROM records ORDER BY id")]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self.reply(200, {"ok": True})
        elif self.path == "/":
            self.reply(200, {"greeting": GREETING, "visits": count_visit(),
                             "version": VERSION, "instance": socket.gethostname()})
        elif self.path == "/records":
            self.reply(200, {"ids": record_ids()})
        elif self.path.startswith("/records/") and self.path[9:].isdigit():
            body = record(int(self.path[9:]))
            self.reply(200, {"body": body}) if body is not None else self.reply(404, {})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        # A write: the benchmarks send POSTs beside GETs through the edge.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/records":
            self.reply(200, {"id": add_record(body.decode(errors="replace"))})
        elif self.path == "/":
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
