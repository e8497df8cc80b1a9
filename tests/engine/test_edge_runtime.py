"""A real HAProxy 2.6 on the host, driven through RuntimeAPI, swapping servers under load.

HAProxy runs from the rendered config with an empty backend; the "instances" are small Python
HTTP servers on 127.0.0.1. The swap test is the edge's promise in miniature: new servers come
in, old ones drain out, and a client hammering the frontend meanwhile sees no failure.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.edge.config import Frontend, render_haproxy_cfg
from corral.edge.runtime import RuntimeAPI
from corral.errors import EngineError, NotFoundError

HAPROXY = shutil.which("haproxy")
pytestmark = [pytest.mark.engine, pytest.mark.timeout(120)]

BACKEND = "web"
HEALTHY = 5.0  # seconds allowed for a new server's first passing check (inter is 500 ms)


class _Handler(BaseHTTPRequestHandler):
    """Answers its server's name; /slow takes 200 ms so drains have something to wait for.

    A server labelled ``hangup...`` reads each request and closes without answering, as an
    instance dying mid-request does: HAProxy may retry a GET elsewhere, never a POST.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, like real apps: idle connections to drain
    server: _Server

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        if self.server.label.startswith("hangup"):
            self.close_connection = True
            return
        if self.server.label.startswith("strict") and self.path not in ("/", "/ready;v=2"):
            self.send_response(404)  # an instance that answers its own check path only
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(0.2)
        body = f"{self.server.label}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, label: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.label = label

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # HAProxy's health checks close with a reset; that is not an error here


class Instance:
    """One fake instance: an HTTP server thread on a free port."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.httpd = _Server(label)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Edge:
    api: RuntimeAPI
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def instances() -> Iterator[dict[str, Instance]]:
    made = {label: Instance(label) for label in ("old1", "old2", "new1", "new2", "hangup")}
    yield made
    for inst in made.values():
        with contextlib.suppress(OSError):
            inst.stop()


@pytest.fixture
def edge() -> Iterator[Edge]:
    if HAPROXY is None:  # a missing tool fails the test, never skips it
        pytest.fail("haproxy is not installed: apt-get install haproxy (or run scripts/setup)")
    # A short directory of our own: Unix socket paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="corral-edge-") as tmp:
        sock = str(Path(tmp) / "admin.sock")
        port = _free_port()
        cfg = Path(tmp) / "haproxy.cfg"
        check_map = Path(tmp) / "checks.map"
        check_map.write_text("")
        cfg.write_text(
            render_haproxy_cfg(
                [Frontend("web", port, BACKEND, True)],
                sock,
                check_map=str(check_map),
                state_file=str(Path(tmp) / "servers.state"),
            )
        )
        log = Path(tmp) / "haproxy.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([HAPROXY, "-f", str(cfg)], stdout=out, stderr=out)
        try:
            api = RuntimeAPI(sock, timeout=2.0, check_map=str(check_map))
            _wait_for_socket(api, proc, log)
            yield Edge(api=api, url=f"http://127.0.0.1:{port}", log=log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_socket(api: RuntimeAPI, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"haproxy exited {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(EngineError):
            if api.command("show info").startswith("Name: HAProxy"):
                return
        time.sleep(0.05)
    pytest.fail(f"haproxy's admin socket never answered: {log.read_text()}")


def _bring_up(edge: Edge, *insts: Instance) -> None:
    for inst in insts:
        edge.api.bring_up(BACKEND, inst.label, "127.0.0.1", inst.port, HEALTHY, "/healthz")


@dataclass
class Load:
    """Clients requesting through the edge in a loop until stopped, tallying answers."""

    url: str
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # labels answering after ``mark()``: proves who serves once the swap is over
    late: Counter[str] = field(default_factory=Counter)
    marked: bool = False

    def run(self, path: str, deadline: float, method: str = "GET") -> None:
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self._one(client, path, method)

    def _one(self, client: httpx.Client, path: str, method: str) -> None:
        try:
            resp = client.request(method, path, content=b"x" if method == "POST" else None)
        except httpx.HTTPError as exc:
            outcome, ok = f"{type(exc).__name__}: {exc}", False
        else:
            outcome, ok = resp.text.strip(), resp.status_code == 200
            if not ok:
                outcome = f"{resp.status_code} {outcome}"
        with self.lock:
            if not ok:
                self.failures.append(outcome)
                return
            self.answers[outcome] += 1
            if self.marked:
                self.late[outcome] += 1

    def mark(self) -> None:
        with self.lock:
            self.marked = True


def test_empty_backend_answers_a_clean_503(edge: Edge) -> None:
    resp = httpx.get(edge.url + "/")
    assert resp.status_code == 503
    assert resp.text == "no server available\n"
    assert resp.headers["retry-after"] == "1"
    assert edge.api.servers(BACKEND) == []


def test_verified_answers_and_states(edge: Edge, instances: dict[str, Instance]) -> None:
    api, inst = edge.api, instances["old1"]
    api.add_server(BACKEND, "s1", "127.0.0.1", inst.port, check=True)
    (srv,) = api.servers(BACKEND)
    assert (srv.admin, srv.operational, srv.checks_enabled) == ("maint", "down", False)
    with pytest.raises(EngineError, match="Already exists"):
        api.add_server(BACKEND, "s1", "127.0.0.1", inst.port, check=True)
    api.set_check_path("s1", "/healthz")
    api.enable_health(BACKEND, "s1")
    api.set_state(BACKEND, "s1", "drain")
    assert api.wait_healthy(BACKEND, "s1", HEALTHY)
    srv = api.server(BACKEND, "s1")
    assert (srv.admin, srv.check_status, srv.status, srv.weight) == ("drain", "L7OK", "DRAIN", 1)
    with pytest.raises(EngineError, match="Only servers in maintenance"):
        api.del_server(BACKEND, "s1")
    api.set_state(BACKEND, "s1", "ready")
    assert httpx.get(edge.url + "/").text == "old1\n"
    api.set_state(BACKEND, "s1", "maint")
    api.del_server(BACKEND, "s1")
    with pytest.raises(NotFoundError):
        api.del_server(BACKEND, "s1")
    with pytest.raises(NotFoundError):
        api.servers("no-such-backend")


def test_each_server_is_checked_on_its_own_path(edge: Edge) -> None:
    """Two releases' instances side by side, each on the path its release's health names
    (issue 10): a new path is checked on the new instance only, and a server that answers
    404 on its path never takes traffic while the other keeps serving."""
    ready, wrong = Instance("strict-ready"), Instance("strict-wrong")
    try:
        edge.api.bring_up(BACKEND, "new", "127.0.0.1", ready.port, HEALTHY, "/ready;v=2")
        edge.api.prepare(BACKEND, "broken", "127.0.0.1", wrong.port, check_path="/healthz")
        assert not edge.api.wait_healthy(BACKEND, "broken", 1.5)
        broken = edge.api.server(BACKEND, "broken")
        assert broken.check_status == "L7STS" and not broken.healthy
        assert edge.api.server(BACKEND, "new").healthy
        with httpx.Client(base_url=edge.url, timeout=5.0) as client:
            assert Counter(client.get("/").text for _ in range(6)) == {"strict-ready\n": 6}
        assert "new /ready;v=2" in edge.api.command(f"show map {edge.api.check_map}")
        assert edge.api.drain_and_remove(BACKEND, "new", drain_timeout=2.0)
        assert "new " not in edge.api.command(f"show map {edge.api.check_map}")
    finally:
        ready.stop()
        wrong.stop()


def test_leaving_maintenance_is_up_before_any_check(edge: Edge) -> None:
    """The pitfall bring_up avoids: READY on a dead port is reported UP at first."""
    api, dead = edge.api, _free_port()
    api.add_server(BACKEND, "dead", "127.0.0.1", dead, check=True)
    api.enable_health(BACKEND, "dead")
    api.set_state(BACKEND, "dead", "ready")
    srv = api.server(BACKEND, "dead")
    assert srv.operational == "up" or srv.check_status.startswith("L4")  # raced the 1st check
    assert not srv.healthy
    assert not api.wait_healthy(BACKEND, "dead", 1.5)
    assert api.server(BACKEND, "dead").operational == "down"


def test_bring_up_refuses_a_dead_server_and_leaves_nothing(edge: Edge) -> None:
    with pytest.raises(EngineError, match="not healthy"):
        edge.api.bring_up(
            BACKEND, "dead", "127.0.0.1", _free_port(), health_timeout=1.5, check_path="/healthz"
        )
    assert edge.api.servers(BACKEND) == []


def test_traffic_is_balanced_over_healthy_servers(
    edge: Edge, instances: dict[str, Instance]
) -> None:
    _bring_up(edge, instances["old1"], instances["old2"])
    with httpx.Client(base_url=edge.url) as client:
        seen = Counter(client.get("/").text.strip() for _ in range(20))
    assert seen == {"old1": 10, "old2": 10}


def test_swap_under_load_fails_no_request(edge: Edge, instances: dict[str, Instance]) -> None:
    old = [instances["old1"], instances["old2"]]
    new = [instances["new1"], instances["new2"]]
    _bring_up(edge, *old)

    load = Load(edge.url)
    deadline = time.monotonic() + 30  # bound the load even if the swap hangs
    clients = [threading.Thread(target=load.run, args=("/", deadline)) for _ in range(4)]
    clients += [threading.Thread(target=load.run, args=("/slow", deadline)) for _ in range(2)]
    clients += [threading.Thread(target=load.run, args=("/", deadline, "POST")) for _ in range(2)]
    before = _failure_counters(edge.api)
    for t in clients:
        t.start()
    try:
        time.sleep(0.5)
        _bring_up(edge, *new)
        drained = [edge.api.drain_and_remove(BACKEND, i.label, drain_timeout=10) for i in old]
        for inst in old:  # the old instances are gone for good: nothing may still need them
            inst.stop()
        load.mark()
        time.sleep(1.0)
    finally:
        load.stop.set()
        for t in clients:
            t.join(timeout=10)

    assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]}"
    # No request needed a retry: the swap itself lost nothing, the retries did not hide it
    assert _failure_counters(edge.api) == before == {}
    assert drained == [True, True]
    assert {s.name for s in edge.api.servers(BACKEND)} == {"new1", "new2"}
    assert load.answers["old1"] > 0 and load.answers["old2"] > 0
    assert set(load.late) == {"new1", "new2"}, load.late
    assert sum(load.answers.values()) > 100


def test_sixty_four_servers_come_and_go_at_once(edge: Edge) -> None:
    """The scale a 100-replica role meets: 64 servers brought up and drained concurrently.

    Before one connection and one watcher served every thread, this overflowed the admin
    socket ("[Errno 11] Resource temporarily unavailable") from about 60 servers on.
    """
    count = 64
    made = [Instance(f"s{i}") for i in range(count)]
    try:
        errors: list[BaseException] = []

        def run(job: Any, inst: Instance) -> None:
            try:
                job(inst)
            except BaseException as exc:
                errors.append(exc)

        def up(inst: Instance) -> None:
            edge.api.bring_up(BACKEND, inst.label, "127.0.0.1", inst.port, 20.0, "/healthz")

        def down(inst: Instance) -> None:
            assert edge.api.drain_and_remove(BACKEND, inst.label, drain_timeout=5.0)

        for job in (up, down):
            started = time.monotonic()
            threads = [threading.Thread(target=run, args=(job, inst)) for inst in made]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == [], errors[:3]
            if job is up:
                servers = edge.api.servers(BACKEND)
                assert len(servers) == count
                assert all(s.admin == "ready" and s.healthy for s in servers)
                assert time.monotonic() - started < 15
        assert edge.api.servers(BACKEND) == []
        assert edge.api.channel.opened == 1  # every call of every thread: one connection
    finally:
        for inst in made:
            inst.stop()


def _failure_counters(api: RuntimeAPI) -> dict[tuple[str, str], dict[str, int]]:
    """The backend and frontend rows whose failure counters are not zero (they persist)."""
    return {
        row.key: row.failures for row in api.counters() if row.failures and row.kind != "server"
    }


def test_counters_see_what_retries_hide(edge: Edge, instances: dict[str, Instance]) -> None:
    """The reason the zero-failure tests read the edge's counters and send POSTs."""
    _bring_up(edge, instances["old1"])
    # A server that takes requests and hangs up, kept in rotation (no checks to notice).
    hangup = instances["hangup"]
    edge.api.add_server(BACKEND, "hangup", "127.0.0.1", hangup.port, check=False)
    edge.api.set_state(BACKEND, "hangup", "ready")
    with httpx.Client(base_url=edge.url, timeout=5.0) as client:
        gets = Counter(_status(client, "GET") for _ in range(10))
    assert gets == {"200": 10}  # a client sees nothing wrong: each was retried on old1...
    counters = {row.name: row for row in edge.api.counters() if row.proxy == BACKEND}
    assert counters["hangup"].response_errors + counters["hangup"].retries > 0
    assert counters["BACKEND"].retries + counters["BACKEND"].redispatches > 0  # ...these see it
    # A POST that reached the hanging-up server is not replayed (edge.config's
    # REPLAYABLE_METHODS): it fails for the client. Without that rule HAProxy 2.6 replays
    # some of them on old1, which then runs them a second time.
    with httpx.Client(base_url=edge.url, timeout=5.0) as client:
        posts = Counter(_status(client, "POST") for _ in range(20))
    assert posts["200"] == 10, posts  # the 10 that went to old1


def _status(client: httpx.Client, method: str) -> str:
    try:
        return str(
            client.request(method, "/", content=b"x" if method == "POST" else None).status_code
        )
    except httpx.HTTPError as exc:
        return type(exc).__name__
