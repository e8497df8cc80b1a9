"""Before a new edge container replaces the old one, every instance passes its check.

Issue 10: `corral edge replace` once marked every server down (its check used a path the
instances did not answer); now it checks each instance from outside first, and a failure
leaves the old edge serving.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from corral.deploy.observe import Instance
from corral.deploy.service import verify_edge_checks
from corral.errors import GateError
from tests.unit.builders import role_release


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _serving(port: int, path: str) -> list[tuple[Any, Instance, str]]:
    rr = role_release("web", public=8080, run={"port": port}, health={"http": path})
    instance = Instance("shop-web-r1-1", "web", 1, 1, "img-a", rr.config_hash, "running", "x")
    return [(rr, instance, "127.0.0.1")]


def test_instances_that_pass_their_check_let_the_edge_be_replaced(port: int) -> None:
    verify_edge_checks(_serving(port, "/healthz"))


def test_an_instance_failing_its_check_keeps_the_old_edge(port: int) -> None:
    with pytest.raises(
        GateError, match=r"old one keeps serving.*shop-web-r1-1: GET /nope: HTTP 404"
    ):
        verify_edge_checks(_serving(port, "/nope"))
