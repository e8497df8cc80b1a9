"""The stack's app: rows in PostgreSQL, through the edge.

GET /rows counts the rows, POST /rows inserts one and answers its id, GET /healthz says
the app itself is up (not the database: a database restart must not take every app
instance out of the edge at once). The database is found by its role name, ``db``,
which is a DNS name on the fleet's network.

Each request opens its own connection. While the database is being replaced (it is
stopped before its successor starts), opening one is retried for up to DB_WAIT seconds,
so a short database restart slows requests down instead of failing them. The address of
``db`` is looked up once and kept until a connection to it fails (a new db instance has
another address). A POST whose connection broke mid-way (the database stopped under it)
is tried again on a new connection: each POST carries a key of its own, unique in the
table, so a retry after an insert that did commit finds that row instead of adding a
second one.

On SIGTERM (``podman stop``, after the edge has drained the instance) the requests still
being answered are finished before the process exits, so a slow one is not cut off.
"""

import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

DB = {
    "host": os.environ.get("DB_HOST", "db"),
    "dbname": os.environ.get("DB_NAME", "postgres"),
    "user": os.environ.get("DB_USER", "postgres"),
    "password": os.environ.get("DB_PASSWORD", ""),
    "connect_timeout": 2,
}
DB_WAIT = float(os.environ.get("DB_WAIT", "25"))  # under the edge's 30 s server timeout
GREETING = os.environ.get("GREETING", "hello")
VERSION = "1"
STOP_WAIT = 8.0  # seconds to finish requests after SIGTERM; podman kills at 10
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rows (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
    # The key of the POST that wrote the row: a retried POST finds its row (see insert_row).
    "ALTER TABLE rows ADD COLUMN IF NOT EXISTS request TEXT UNIQUE",
)


class Unavailable(Exception):
    """The database could not be reached in time."""


class Address:
    """The database's address, looked up once and kept until a connection to it fails
    (a new db instance has another address): lookups stay off the request path, where
    aardvark-dns 1.4 would stall them for seconds while containers come and go."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ip: str | None = None

    def get(self) -> str:
        with self.lock:
            if self.ip is None:
                found = socket.getaddrinfo(DB["host"], 5432, type=socket.SOCK_STREAM)
                self.ip = str(found[0][4][0])
            return self.ip

    def forget(self) -> None:
        with self.lock:
            self.ip = None


DB_ADDRESS = Address()


def connect(wait: float = DB_WAIT) -> "psycopg2.extensions.connection":
    deadline = time.monotonic() + wait
    while True:
        try:
            # host names the server (for libpq's checks), hostaddr is where it is.
            return psycopg2.connect(**DB, hostaddr=DB_ADDRESS.get())
        except (psycopg2.OperationalError, OSError) as exc:  # OSError: the lookup failed
            DB_ADDRESS.forget()
            if time.monotonic() >= deadline:
                raise Unavailable(str(exc).strip()) from exc
            time.sleep(0.05)


def count_rows() -> int:
    conn = connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM rows")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def insert_row(body: str) -> int:
    """Insert one row, exactly once, trying again on a new connection while the database
    is away (up to DB_WAIT seconds): the row's key tells a retry whether it committed."""
    key = uuid.uuid4().hex
    deadline = time.monotonic() + DB_WAIT
    while True:
        try:
            return _insert_once(body, key, wait=max(0.0, deadline - time.monotonic()))
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            DB_ADDRESS.forget()
            if time.monotonic() >= deadline:
                raise Unavailable(str(exc).strip()) from exc
            time.sleep(0.05)


def _insert_once(body: str, key: str, wait: float) -> int:
    conn = connect(wait)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO rows (body, request) VALUES (%s, %s)"
                " ON CONFLICT (request) DO NOTHING RETURNING id",
                (body, key),
            )
            row = cur.fetchone()
            if row is None:  # an earlier try committed it: the same row, not a new one
                cur.execute("SELECT id FROM rows WHERE request = %s", (key,))
                row = cur.fetchone()
            return int(row[0])
    finally:
        conn.close()


def db_ready() -> bool:
    """One attempt, no waiting: for measuring how long the database is away."""
    try:
        connect(wait=0).close()
    except Unavailable:
        return False
    return True


class InFlight:
    """How many requests are being answered, so that a stop can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.count += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.count -= 1


IN_FLIGHT = InFlight()


def stop_when_idle() -> None:
    deadline = time.monotonic() + STOP_WAIT
    while IN_FLIGHT.count and time.monotonic() < deadline:
        time.sleep(0.02)
    os._exit(0)  # idle kept-alive connections need no goodbye: the edge sends nothing more


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        with IN_FLIGHT:
            self.get()

    def do_POST(self) -> None:
        with IN_FLIGHT:
            self.post()

    def get(self) -> None:
        if self.path == "/healthz":
            self.reply(200, {"ok": True})
        elif self.path == "/":
            self.reply(
                200, {"greeting": GREETING, "version": VERSION, "instance": socket.gethostname()}
            )
        elif self.path == "/rows":
            self.with_db(lambda: {"count": count_rows(), "version": VERSION})
        elif self.path == "/db":
            ready = db_ready()
            self.reply(200 if ready else 503, {"ready": ready})
        else:
            self.reply(404, {"error": "not found"})

    def post(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/rows":
            text = body.decode("utf-8", "replace") or "row"
            self.with_db(lambda: {"id": insert_row(text), "version": VERSION})
        else:
            self.reply(404, {"error": "not found"})

    def with_db(self, work) -> None:
        try:
            self.reply(200, work())
        except (Unavailable, psycopg2.Error) as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            self.reply(503, {"error": "database unavailable", "detail": first_line})

    def reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def create_schema() -> None:
    conn = connect(wait=120)  # the first start of db runs initdb
    try:
        with conn, conn.cursor() as cur:
            # Instances start side by side: two CREATE TABLE IF NOT EXISTS at once can both
            # see no table, and one fails. A lock held until the commit serialises them.
            cur.execute("SELECT pg_advisory_xact_lock(4242)")
            for statement in SCHEMA:
                cur.execute(statement)
    finally:
        conn.close()


class QuietServer(ThreadingHTTPServer):
    """HAProxy's health checks hang up as soon as they have the answer: a reset
    connection is no error worth a traceback, which would push what the app itself says
    out of the log lines corral shows when something fails."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop_when_idle).start())
    create_schema()
    server = QuietServer(("0.0.0.0", 8000), Handler)
    print(f"app {VERSION}: listening on port 8000 ({GREETING})", file=sys.stderr, flush=True)
    server.serve_forever()
