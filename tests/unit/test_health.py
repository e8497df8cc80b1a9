"""Health probes against real sockets on loopback: a status code, a refusal, a hang."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corral.deploy.health import probe_once, wait_healthy
from corral.spec.model import HttpHealth, TcpHealth
from tests.unit.serving import serving


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ok": 200, "/moved": 302, "/sick": 503}.get(self.path, 404)
        body = b"no such page:\n\x1b[31m /body\n" if self.path == "/body" else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Handler)) as httpd:
        yield int(httpd.server_address[1])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ok", None),
        ("/moved", None),
        ("/sick", "GET /sick: HTTP 503 Service Unavailable"),
        ("/x", "GET /x: HTTP 404 Not Found"),
        # the first bytes of the answer, on one line, without control characters
        ("/body", 'GET /body: HTTP 404 Not Found: "no such page: ?[31m /body"'),
    ],
)
def test_http_probe_reads_the_status(server: int, path: str, expected: str | None) -> None:
    assert probe_once("127.0.0.1", server, HttpHealth(http=path)) == expected


def test_http_probe_of_a_closed_port_says_refused() -> None:
    problem = probe_once("127.0.0.1", _closed_port(), HttpHealth(http="/ok"))
    assert problem == "GET /ok: connection refused (nothing listens on the port)"


def test_http_probe_times_out_on_a_silent_listener() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        problem = probe_once("127.0.0.1", port, HttpHealth(http="/ok", timeout=0.2))
    assert problem == "GET /ok: timed out (no answer within 0.2s)"


def test_tcp_probe(server: int) -> None:
    assert probe_once("127.0.0.1", server, TcpHealth(tcp=True)) is None
    assert probe_once("127.0.0.1", _closed_port(), TcpHealth(tcp=True)) is not None


def test_wait_healthy_gives_up_after_retries_times_interval() -> None:
    health = HttpHealth(http="/ok", interval=0.1, retries=3)
    result = wait_healthy("127.0.0.1", _closed_port(), health)
    assert not result.healthy
    assert "still failing after 0.3s" in result.detail
    assert result.attempts >= 3


def test_wait_healthy_stops_soon_after_the_instance_exits() -> None:
    asked = []

    def still_running() -> bool:
        asked.append(time.monotonic())
        return False

    started = time.monotonic()
    result = wait_healthy("127.0.0.1", _closed_port(), HttpHealth(http="/ok"), still_running)
    assert not result.healthy
    assert result.detail.startswith("the instance exited")
    assert len(asked) == 1  # the engine is asked once, not after every probe
    assert asked[0] - started < 1.0  # long before retries x interval (30 s)
    assert result.attempts > 1  # probes kept coming meanwhile


def test_wait_healthy_asks_whether_it_runs_at_most_every_interval() -> None:
    asked = []
    health = HttpHealth(http="/ok", interval=0.2, retries=10)  # 2 s in all
    result = wait_healthy(
        "127.0.0.1", _closed_port(), health, lambda: asked.append(time.monotonic()) is None
    )
    assert not result.healthy and "still failing after 2s" in result.detail
    gaps = [b - a for a, b in itertools.pairwise(asked)]
    assert 2 <= len(asked) <= 4 and all(g >= 0.5 for g in gaps), asked
